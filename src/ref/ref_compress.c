/*
 * ref_compress.c: float64 reference of key compression (SPEC B §4, A.4).
 * c1[j] = mean of k[s1*j .. s1*j + l1), c2[j] = mean of k[s2*j .. s2*j + l2), per sequence,
 * complete windows only. The mean is taken in double over the dtype-loaded keys, then stored
 * as float rounded to the storage dtype.
 */
#include "dtype.h"
#include "internal.h"

/* One level: n windows of (size, stride) of sequence s, written from row c0 of dst. */
static void ref_mean_level(const infllm_attn_params *ap, const infllm_seq *s, const void *k, /* [total_k, Hkv, D] */
                           int32_t size, int32_t stride, int32_t n, int64_t c0,
                           void *dst /* [total_n, Hkv, D] */) {
    for (int32_t j = 0; j < n; j++) {
        for (int32_t g = 0; g < ap->Hkv; g++) {
            for (int32_t d = 0; d < ap->D; d++) {
                double sum = 0.0;
                for (int32_t u = 0; u < size; u++) {
                    int64_t row = s->k0 + (int64_t)stride * j + u;
                    sum += (double)infllm_load_f32(k, ap->dtype, row * ap->kv_tok + g * ap->kv_head + d);
                }
                double mean = sum / (double)size;
                infllm_store_f32(dst, ap->dtype, (c0 + j) * ap->kv_tok + g * ap->kv_head + d, (float)mean);
            }
        }
    }
}

infllm_status ref_compress(const infllm_attn_params *ap, const void *k, void *c1, void *c2) {
    for (int32_t b = 0; b < ap->num_seqs; b++) {
        const infllm_seq *s = &ap->seqs[b];
        if (c1) ref_mean_level(ap, s, k, ap->l1, ap->s1, s->n1, s->c1_0, c1);
        if (c2) ref_mean_level(ap, s, k, ap->l2, ap->s2, s->n2, s->c2_0, c2);
    }
    return INFLLM_OK;
}
