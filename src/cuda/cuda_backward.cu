/*
 * cuda_backward.cu: the backward of stage 2 (block-sparse attention) and of dense causal attention on
 * NVIDIA GPUs. (Stub: being written.)
 */
#include "cuda_common.cuh"
#include "cuda_internal.cuh"

extern "C" infllm_status cuda_attn_backward(const infllm_attn_params *ap, const void *q, const void *k,
                                            const void *v, const int32_t *topk_idx, int32_t topk_cols,
                                            const void *dout, void *dq, void *dk, void *dv) {
    (void)ap, (void)q, (void)k, (void)v, (void)topk_idx, (void)topk_cols, (void)dout, (void)dq, (void)dk, (void)dv;
    return infllm_set_error(INFLLM_ERR_UNSUPPORTED, "CUDA backward: not built yet");
}

extern "C" infllm_status cuda_attn_backward_workspace_size(const infllm_attn_params *ap, int32_t topk_cols,
                                                           size_t *bytes) {
    (void)ap, (void)topk_cols;
    *bytes = 0;
    return INFLLM_OK;
}
