/*
 * api.c: the public boundary. Every public op validates its arguments here, once, fills one
 * infllm_attn_params and hands it unchanged to the chosen backend (ref_*, cpu_*, cuda_*).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "internal.h"

#include "infllm_commit.h" /* generated at every build: INFLLM_COMMIT */

void infllm_params_default(infllm_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->block_size = 64;
    p->kernel_size = 32;
    p->kernel_stride = 16;
    p->init_blocks = 1;
    p->local_blocks = 32;
    p->topk = 64;
    p->dense_len = 8192;
    p->exact_lse = 0;
    p->softmax_scale = 0.0f;
    p->mode = INFLLM_MODE_AUTO;
    p->backend = INFLLM_BACKEND_CPU;
    p->num_threads = 0;
}

int32_t infllm_params_topk_total(const infllm_params *p) {
    if (!p) return 0;
    const int64_t t = (int64_t)p->topk + p->local_blocks; /* saturated: the fields may be anything */
    return t > INT32_MAX ? INT32_MAX : t < INT32_MIN ? INT32_MIN : (int32_t)t;
}

const char *infllm_version(void) { return INFLLM_VERSION_STRING; }
const char *infllm_build_commit(void) { return INFLLM_COMMIT; }
const char *infllm_cpu_simd_level(void) { return cpu_simd_level_name(); }
int infllm_cpu_bf16_dot(void) { return cpu_bf16_dot_on(); }
int infllm_cpu_num_threads(void) { return cpu_default_threads(); }
int infllm_cuda_built(void) {
#ifdef INFLLM_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}
/* Why the CUDA backend cannot run here (written to why, returns 1), or 0 when it can: the one rule behind
 * infllm_cuda_available, infllm_cuda_device_info's answer and check_params' refusals. */
static int cuda_unusable(char *why, size_t n) {
#ifdef INFLLM_HAVE_CUDA
    if (!cuda_device_available()) {
        snprintf(why, n, "CUDA backend: no CUDA device available");
        return 1;
    }
    /* the kernels use bf16 mma.sync and cp.async (sm_80); a cc 7.x device has no image of them, and every
     * launch would fail with "no kernel image" instead of this */
    const int cc = cuda_device_cc();
    if (cc < 80) {
        snprintf(why, n,
                 "CUDA backend: the device has compute capability %d.%d; infllm's CUDA kernels need 8.0 (Ampere) or "
                 "newer (use the CPU backend)",
                 cc / 10, cc % 10);
        return 1;
    }
    if (cuda_device_code_arch() < 0) {
        snprintf(why, n,
                 "CUDA backend: this build of infllm holds no code for the device (compute capability %d.%d); "
                 "rebuild with it in -DINFLLM_CUDA_ARCHS (default 80;90)",
                 cc / 10, cc % 10);
        return 1;
    }
    return 0;
#else
    snprintf(why, n, "CUDA backend: infllm was built without CUDA");
    return 1;
#endif
}

int infllm_cuda_available(void) {
    char why[256];
    return !cuda_unusable(why, sizeof why);
}
int infllm_cuda_device_info(char *buf, size_t size) {
    if (!buf || !size) return 0;
#ifdef INFLLM_HAVE_CUDA
    cuda_device_describe(buf, size);
#else
    snprintf(buf, size, "built without CUDA");
#endif
    return infllm_cuda_available();
}

/* ------------------------------------------------------------ validation ---- */

static int head_dim_supported(int32_t d) { return d >= 16 && d <= 256 && d % 16 == 0; }

/* compresses: the op compresses keys (or reads compressed keys laid out by kernel_stride), so block_size must be a
 * multiple of kernel_stride (SPEC: a block's kernels start on its boundary). Stage 2 alone (sparse / dense attention
 * on given blocks, and their backward) never uses the kernels: any block_size / kernel_stride pair is taken. */
static infllm_status check_params(const infllm_params *p, int compresses) {
    if (!p) return infllm_set_error(INFLLM_ERR_NULL_ARG, "params is NULL");
    if (p->block_size <= 0)
        return infllm_set_error(INFLLM_ERR_PARAM, "block_size must be > 0 (got %d)", p->block_size);
    if (p->kernel_size <= 0)
        return infllm_set_error(INFLLM_ERR_PARAM, "kernel_size must be > 0 (got %d)", p->kernel_size);
    if (p->kernel_stride <= 0)
        return infllm_set_error(INFLLM_ERR_PARAM, "kernel_stride must be > 0 (got %d)", p->kernel_stride);
    if (p->kernel_size > (1 << 28) / 4 || p->kernel_stride > (1 << 28) / 4 || p->block_size > (1 << 28))
        return infllm_set_error(INFLLM_ERR_PARAM, "block/kernel sizes too large");
    if (compresses && p->block_size % p->kernel_stride != 0)
        return infllm_set_error(INFLLM_ERR_PARAM,
                                "block_size (%d) must be a multiple of kernel_stride (%d)",
                                p->block_size, p->kernel_stride);
    if (p->init_blocks < 0)
        return infllm_set_error(INFLLM_ERR_PARAM, "init_blocks must be >= 0 (got %d)", p->init_blocks);
    if (p->local_blocks < 0)
        return infllm_set_error(INFLLM_ERR_PARAM, "local_blocks must be >= 0 (got %d)", p->local_blocks);
    if (p->topk < 0) return infllm_set_error(INFLLM_ERR_PARAM, "topk must be >= 0 (got %d)", p->topk);
    if ((int64_t)p->topk + p->local_blocks < 1 || (int64_t)p->topk + p->local_blocks > (1 << 24))
        return infllm_set_error(INFLLM_ERR_PARAM,
                                "topk + local_blocks must be in 1..16777216 (got %d + %d)", p->topk,
                                p->local_blocks);
    if (p->dense_len < -1)
        return infllm_set_error(INFLLM_ERR_PARAM, "dense_len must be >= 0 or -1 (got %d)", p->dense_len);
    if (p->exact_lse != 0 && p->exact_lse != 1)
        return infllm_set_error(INFLLM_ERR_PARAM, "exact_lse must be 0 or 1 (got %d)", p->exact_lse);
    if (p->window < 0)
        return infllm_set_error(INFLLM_ERR_PARAM, "window must be >= 0 (0: no sliding window; got %d)", p->window);
    if (!(p->softmax_scale >= 0.0f) || isinf(p->softmax_scale))
        return infllm_set_error(INFLLM_ERR_PARAM,
                                "softmax_scale must be finite and >= 0 (0 = 1/sqrt(head_dim))");
    /* the CPU and CUDA kernels work in base 2 on the float32 factor scale * log2(e): past FLT_MAX / log2(e)
     * (~2.36e38) it is inf and every output and lse NaN (0 x inf, inf - inf), where REF's float64 gave numbers */
    const float scale_log2 = p->softmax_scale * (float)M_LOG2E;
    if (isinf(scale_log2))
        return infllm_set_error(INFLLM_ERR_PARAM,
                                "softmax_scale %g is too large: scale * log2(e) overflows float32 (at most ~2.36e38)",
                                (double)p->softmax_scale);
    if (p->mode != INFLLM_MODE_AUTO && p->mode != INFLLM_MODE_DENSE && p->mode != INFLLM_MODE_SPARSE)
        return infllm_set_error(INFLLM_ERR_PARAM, "invalid mode %d", (int)p->mode);
    if (p->backend != INFLLM_BACKEND_CPU && p->backend != INFLLM_BACKEND_REF &&
        p->backend != INFLLM_BACKEND_CUDA)
        return infllm_set_error(INFLLM_ERR_PARAM, "invalid backend %d", (int)p->backend);
    /* an upper bound too: OpenMP's runtime exits the process when it cannot allocate or start a team
     * (num_threads INT32_MAX: "libgomp: Out of memory allocating 481036338272 bytes") */
    if (p->num_threads < 0 || p->num_threads > INFLLM_MAX_THREADS)
        return infllm_set_error(INFLLM_ERR_PARAM, "num_threads must be in 0..%d (got %d)", INFLLM_MAX_THREADS,
                                p->num_threads);
    char why[256];
    if (p->backend == INFLLM_BACKEND_CUDA && cuda_unusable(why, sizeof why))
        return infllm_set_error(INFLLM_ERR_UNSUPPORTED, "%s", why);
    return INFLLM_OK;
}

static void fill_param_fields(infllm_attn_params *ap, const infllm_params *p, int32_t head_dim) {
    ap->B = p->block_size;
    ap->l1 = p->kernel_size;
    ap->s1 = p->kernel_stride;
    ap->l2 = 4 * p->kernel_size;
    ap->s2 = 4 * p->kernel_stride;
    ap->init_blocks = p->init_blocks;
    ap->local_blocks = p->local_blocks;
    ap->topk_total = p->topk + p->local_blocks;
    ap->dense_len = p->dense_len;
    ap->exact_lse = p->exact_lse;
    ap->window = p->window;
    ap->mode = p->mode;
    ap->scale = p->softmax_scale > 0.0f ? p->softmax_scale : (float)(1.0 / sqrt((double)head_dim));
    ap->num_threads = cpu_call_threads(p->num_threads); /* 1 in a process forked after a parallel call */
    ap->cuda_stream = p->cuda_stream;
    ap->workspace = p->workspace;
    ap->workspace_bytes = p->workspace_bytes;
}

static int seq_is_sparse(const infllm_attn_params *ap, int32_t lk) {
    switch (ap->mode) {
    case INFLLM_MODE_DENSE: return 0;
    case INFLLM_MODE_SPARSE: return 1;
    default: return ap->dense_len < 0 || lk >= ap->dense_len;
    }
}

/* Whether n0 x n1 x n2 elements (each >= 0) of es bytes fit in PTRDIFF_MAX bytes: past that no buffer can
 * hold the tensor, and the element offsets into it would overflow int64 / size_t */
static int tensor_fits(int64_t n0, int64_t n1, int64_t n2, size_t es) {
    if (n0 == 0 || n1 == 0 || n2 == 0) return 1;
    const uint64_t lim = (uint64_t)PTRDIFF_MAX / es;
    if ((uint64_t)n0 > lim / (uint64_t)n1) return 0;
    return (uint64_t)n0 * (uint64_t)n1 <= lim / (uint64_t)n2;
}

/* The layout's tensors must be addressable: q / out, k / v, and the float32 stage-1 / block scores
 * [Hkv, total_q, max_n1 / nblocks_out] that the stage ops take and the reference builds */
static infllm_status check_tensor_sizes(const infllm_attn_params *ap) {
    const size_t es = infllm_dtype_size(ap->dtype);
    const int64_t cols = ap->max_n1 > ap->nblocks_out ? ap->max_n1 : ap->nblocks_out;
    if (!tensor_fits(ap->total_q, ap->Hq, ap->D, es) || !tensor_fits(ap->total_k, ap->Hkv, ap->D, es) ||
        !tensor_fits(ap->Hkv, ap->total_q, cols, sizeof(float)))
        return infllm_set_error(INFLLM_ERR_SHAPE,
                                "tensors too large for the address space (total_q %lld x Hq %d, total_k %lld x "
                                "Hkv %d, head_dim %d, %lld score columns)",
                                (long long)ap->total_q, ap->Hq, (long long)ap->total_k, ap->Hkv, ap->D,
                                (long long)cols);
    return INFLLM_OK;
}

/* topk_idx [Hkv, total_q, topk_cols] of the stage-2 ops. 0 columns only without a query row: that is the
 * topk_out infllm_get_sizes gives a batch without keys (every sequence empty), and no entry is read */
static infllm_status check_topk_cols(const infllm_attn_params *ap, int32_t topk_cols) {
    if (topk_cols < 0 || (topk_cols == 0 && ap->total_q > 0))
        return infllm_set_error(INFLLM_ERR_SHAPE, "topk_cols must be >= 1 (0 only when total_q is 0; got %d)",
                                topk_cols);
    if (!tensor_fits(ap->Hkv, ap->total_q, topk_cols, sizeof(int32_t)))
        return infllm_set_error(INFLLM_ERR_SHAPE,
                                "topk_idx of Hkv %d x total_q %lld x topk_cols %d is too large for the address space",
                                ap->Hkv, (long long)ap->total_q, topk_cols);
    return INFLLM_OK;
}

/* Fills ap from (p, l). On host backends also builds *seqs_out (caller frees). compresses: check_params'. */
static infllm_status build_params(const infllm_params *p, const infllm_layout *l, infllm_attn_params *ap,
                                  infllm_seq **seqs_out, int compresses) {
    *seqs_out = NULL;
    infllm_status st = check_params(p, compresses);
    if (st) return st;
    if (!l) return infllm_set_error(INFLLM_ERR_NULL_ARG, "layout is NULL");
    if (infllm_dtype_size(l->dtype) == 0)
        return infllm_set_error(INFLLM_ERR_DTYPE, "unsupported dtype %d (use f32, f16 or bf16)", (int)l->dtype);
    if (l->num_q_heads <= 0 || l->num_kv_heads <= 0)
        return infllm_set_error(INFLLM_ERR_GQA, "head counts must be > 0 (Hq=%d, Hkv=%d)", l->num_q_heads,
                                l->num_kv_heads);
    if (l->num_q_heads % l->num_kv_heads != 0)
        return infllm_set_error(INFLLM_ERR_GQA, "Hq (%d) is not a multiple of Hkv (%d)", l->num_q_heads,
                                l->num_kv_heads);
    if (!head_dim_supported(l->head_dim))
        return infllm_set_error(INFLLM_ERR_HEAD_DIM,
                                "head_dim %d unsupported (multiples of 16 from 16 to 256)", l->head_dim);
    if (l->num_seqs < 1)
        return infllm_set_error(INFLLM_ERR_SHAPE, "num_seqs must be >= 1 (got %d)", l->num_seqs);
    if (l->total_q < 0 || l->total_k < 0 || l->total_q > INT32_MAX || l->total_k > INT32_MAX)
        return infllm_set_error(INFLLM_ERR_SHAPE, "total_q (%lld) and total_k (%lld) must be in 0..2^31-1",
                                (long long)l->total_q, (long long)l->total_k);
    if (l->num_seqs > 1 && (!l->cu_seqlens_q || !l->cu_seqlens_k))
        return infllm_set_error(INFLLM_ERR_NULL_ARG, "cu_seqlens_q and cu_seqlens_k are required when num_seqs > 1");
    if ((l->cu_seqlens_q == NULL) != (l->cu_seqlens_k == NULL))
        return infllm_set_error(INFLLM_ERR_NULL_ARG, "give both cu_seqlens_q and cu_seqlens_k, or neither");

    memset(ap, 0, sizeof *ap);
    ap->dtype = l->dtype;
    ap->Hq = l->num_q_heads;
    ap->Hkv = l->num_kv_heads;
    ap->G = l->num_q_heads / l->num_kv_heads;
    ap->D = l->head_dim;
    ap->total_q = l->total_q;
    ap->total_k = l->total_k;
    ap->num_seqs = l->num_seqs;
    ap->cu_q = l->cu_seqlens_q;
    ap->cu_k = l->cu_seqlens_k;
    ap->q_tok = (int64_t)ap->Hq * ap->D;
    ap->q_head = ap->D;
    ap->kv_tok = (int64_t)ap->Hkv * ap->D;
    ap->kv_head = ap->D;
    ap->o_tok = ap->q_tok;
    ap->o_head = ap->D;
    fill_param_fields(ap, p, l->head_dim);

    if (p->backend == INFLLM_BACKEND_CUDA && l->cu_seqlens_q) {
        /* device arrays: trust the caller's maxima (the kernels bound-check against them) */
        /* 0 is the true maximum of a batch without queries (or keys), and nothing then reads past it */
        if (l->max_seqlen_q < 0 || l->max_seqlen_k < 0 || (l->max_seqlen_q == 0 && l->total_q > 0) ||
            (l->max_seqlen_k == 0 && l->total_k > 0))
            return infllm_set_error(INFLLM_ERR_SHAPE,
                                    "CUDA backend with cu_seqlens needs max_seqlen_q and max_seqlen_k > 0 (0 only "
                                    "when total_q / total_k is 0)");
        if (l->max_seqlen_q > l->total_q || l->max_seqlen_k > l->total_k)
            return infllm_set_error(INFLLM_ERR_SHAPE, "max_seqlen_q/k exceed total_q/k");
        ap->max_lq = l->max_seqlen_q;
        ap->max_lk = l->max_seqlen_k;
        ap->max_n1 = infllm_windows(ap->max_lk, ap->l1, ap->s1);
        ap->nblocks_out = (int32_t)(((int64_t)ap->max_lk + ap->B - 1) / ap->B);
        ap->total_n1 = 0; /* computed on device by cuda_compress */
        ap->total_n2 = 0;
        ap->topk_out = ap->topk_total < ap->nblocks_out ? ap->topk_total : ap->nblocks_out;
        return check_tensor_sizes(ap);
    }

    infllm_seq *seqs = calloc((size_t)l->num_seqs, sizeof *seqs);
    if (!seqs) return infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (%d sequences)", l->num_seqs);
    int32_t cq0 = 0, ck0 = 0;
    if (l->cu_seqlens_q) {
        cq0 = l->cu_seqlens_q[0];
        ck0 = l->cu_seqlens_k[0];
        if (cq0 != 0 || ck0 != 0) {
            free(seqs);
            return infllm_set_error(INFLLM_ERR_SHAPE, "cu_seqlens must start at 0 (q: %d, k: %d)", cq0, ck0);
        }
    }
    int64_t n1_acc = 0, n2_acc = 0;
    for (int32_t b = 0; b < l->num_seqs; b++) {
        int64_t q0, q1, k0, k1;
        if (l->cu_seqlens_q) {
            q0 = l->cu_seqlens_q[b];
            q1 = l->cu_seqlens_q[b + 1];
            k0 = l->cu_seqlens_k[b];
            k1 = l->cu_seqlens_k[b + 1];
        } else {
            q0 = 0;
            q1 = l->total_q;
            k0 = 0;
            k1 = l->total_k;
        }
        if (q1 < q0 || k1 < k0) {
            free(seqs);
            return infllm_set_error(INFLLM_ERR_SHAPE, "cu_seqlens must be non-decreasing (sequence %d)", b);
        }
        if (q1 > l->total_q || k1 > l->total_k) {
            free(seqs);
            return infllm_set_error(INFLLM_ERR_SHAPE,
                                    "cu_seqlens exceed the tensors (sequence %d ends at q row %lld, k row %lld; "
                                    "total_q %lld, total_k %lld)",
                                    b, (long long)q1, (long long)k1, (long long)l->total_q, (long long)l->total_k);
        }
        infllm_seq *s = &seqs[b];
        s->q0 = q0;
        s->k0 = k0;
        s->lq = (int32_t)(q1 - q0);
        s->lk = (int32_t)(k1 - k0);
        if (s->lq > s->lk) {
            int32_t lq_bad = s->lq, lk_bad = s->lk;
            free(seqs);
            return infllm_set_error(INFLLM_ERR_SHAPE,
                                    "sequence %d has more queries (%d) than keys (%d): queries are the last "
                                    "positions of their sequence",
                                    b, lq_bad, lk_bad);
        }
        s->n1 = infllm_windows(s->lk, ap->l1, ap->s1);
        s->n2 = infllm_windows(s->lk, ap->l2, ap->s2);
        s->nblocks = (int32_t)(((int64_t)s->lk + ap->B - 1) / ap->B);
        s->c1_0 = n1_acc;
        s->c2_0 = n2_acc;
        n1_acc += s->n1;
        n2_acc += s->n2;
        s->sparse = seq_is_sparse(ap, s->lk);
        if (s->lq > ap->max_lq) ap->max_lq = s->lq;
        if (s->lk > ap->max_lk) ap->max_lk = s->lk;
        if (s->n1 > ap->max_n1) ap->max_n1 = s->n1;
        if (s->nblocks > ap->nblocks_out) ap->nblocks_out = s->nblocks;
    }
    int64_t qend = l->cu_seqlens_q ? l->cu_seqlens_q[l->num_seqs] : l->total_q;
    int64_t kend = l->cu_seqlens_k ? l->cu_seqlens_k[l->num_seqs] : l->total_k;
    if (qend != l->total_q || kend != l->total_k) {
        free(seqs);
        return infllm_set_error(INFLLM_ERR_SHAPE,
                                "cu_seqlens end at q %lld / k %lld but total_q is %lld and total_k %lld",
                                (long long)qend, (long long)kend, (long long)l->total_q, (long long)l->total_k);
    }
    /* max_seqlen_* are optional here (0: computed), but a given one must bound the sequences as the CUDA backend,
     * which cannot read device offsets, trusts it to: a layout wrong for the GPU fails on the host too */
    if (l->max_seqlen_q < 0 || l->max_seqlen_k < 0 || (l->max_seqlen_q > 0 && l->max_seqlen_q < ap->max_lq) ||
        (l->max_seqlen_k > 0 && l->max_seqlen_k < ap->max_lk)) {
        free(seqs);
        return infllm_set_error(INFLLM_ERR_SHAPE,
                                "max_seqlen_q %d / max_seqlen_k %d: when given (> 0) they must be at least the longest "
                                "sequence's %d queries / %d keys",
                                l->max_seqlen_q, l->max_seqlen_k, ap->max_lq, ap->max_lk);
    }
    ap->total_n1 = n1_acc;
    ap->total_n2 = n2_acc;
    ap->topk_out = ap->topk_total < ap->nblocks_out ? ap->topk_total : ap->nblocks_out;
    if ((st = check_tensor_sizes(ap))) {
        free(seqs);
        return st;
    }
    ap->seqs = seqs;
    *seqs_out = seqs;
    return INFLLM_OK;
}

infllm_status infllm_get_sizes(const infllm_params *p, const infllm_layout *l, infllm_sizes *out) {
    if (!out) return infllm_set_error(INFLLM_ERR_NULL_ARG, "sizes output is NULL");
    infllm_attn_params ap;
    infllm_seq *seqs;
    infllm_params hp;
    if (p) { /* sizes never depend on the backend; read the arrays on the host */
        hp = *p;
        hp.backend = INFLLM_BACKEND_CPU;
        p = &hp;
    }
    infllm_status st = build_params(p, l, &ap, &seqs, 1);
    if (st) return st;
    out->total_n1 = ap.total_n1;
    out->total_n2 = ap.total_n2;
    out->max_n1 = ap.max_n1;
    out->nblocks_out = ap.nblocks_out;
    out->topk_out = ap.topk_out;
    free(seqs);
    return INFLLM_OK;
}

/* ------------------------------------------------------------- helpers ---- */

static infllm_status need(const void *ptr, const char *name) {
    return ptr ? INFLLM_OK : infllm_set_error(INFLLM_ERR_NULL_ARG, "%s is NULL", name);
}

/* Checks caller-given c1/c2 offsets against the ones the layout implies. */
static infllm_status check_cu_c(const infllm_attn_params *ap, const int32_t *cu, int level, const char *name) {
    if (!cu) return INFLLM_OK;
    for (int32_t b = 0; b <= ap->num_seqs; b++) {
        int64_t want;
        if (b < ap->num_seqs)
            want = level == 1 ? ap->seqs[b].c1_0 : ap->seqs[b].c2_0;
        else
            want = level == 1 ? ap->total_n1 : ap->total_n2;
        if (cu[b] != want)
            return infllm_set_error(INFLLM_ERR_SHAPE, "%s[%d] is %d but the layout implies %lld", name, b, cu[b],
                                    (long long)want);
    }
    return INFLLM_OK;
}

/* Converts the reference's double results to the output dtype / float lse. */
static void store_ref_out(const infllm_attn_params *ap, const double *out64, const double *lse64, void *out,
                          float *lse, const infllm_seq *only_seq) {
    int64_t r0 = 0, r1 = ap->total_q;
    if (only_seq) {
        r0 = only_seq->q0;
        r1 = only_seq->q0 + only_seq->lq;
    }
    for (int64_t i = r0 * ap->o_tok; i < r1 * ap->o_tok; i++) infllm_store_f64(out, ap->dtype, i, out64[i]);
    if (lse)
        for (int64_t i = r0 * ap->Hq; i < r1 * ap->Hq; i++) lse[i] = (float)lse64[i];
}

/* BEGIN_OP: an op that compresses or selects; BEGIN_STAGE2_OP: stage 2 alone (check_params' compresses = 0) */
#define BEGIN_OP_CHECKED(p, l, compresses)                               \
    infllm_attn_params ap;                                               \
    infllm_seq *seqs = NULL;                                             \
    infllm_status st = build_params((p), (l), &ap, &seqs, (compresses)); \
    if (st) return st;
#define BEGIN_OP(p, l) BEGIN_OP_CHECKED(p, l, 1)
#define BEGIN_STAGE2_OP(p, l) BEGIN_OP_CHECKED(p, l, 0)

#define END_OP()  \
    done:         \
    free(seqs);   \
    return st;

/* ------------------------------------------------------------ the ops ---- */

infllm_status infllm_compress_keys(const infllm_params *p, const infllm_layout *l, const void *k, void *c1,
                                   void *c2, int32_t *cu_seqlens_c1, int32_t *cu_seqlens_c2) {
    BEGIN_OP(p, l)
    if ((st = need(k, "k")) || (st = need(c1, "c1")) || (st = need(c2, "c2"))) goto done;
    switch (p->backend) {
    case INFLLM_BACKEND_REF: st = ref_compress(&ap, k, c1, c2); break;
    case INFLLM_BACKEND_CPU: st = cpu_compress(&ap, k, c1, c2); break;
    case INFLLM_BACKEND_CUDA:
#ifdef INFLLM_HAVE_CUDA
        st = cuda_compress(&ap, k, c1, c2, cu_seqlens_c1, cu_seqlens_c2);
        goto done;
#else
        st = infllm_set_error(INFLLM_ERR_UNSUPPORTED, "built without CUDA");
        goto done;
#endif
    }
    if (st == INFLLM_OK) {
        for (int32_t b = 0; b < ap.num_seqs; b++) {
            if (cu_seqlens_c1) cu_seqlens_c1[b] = (int32_t)ap.seqs[b].c1_0;
            if (cu_seqlens_c2) cu_seqlens_c2[b] = (int32_t)ap.seqs[b].c2_0;
        }
        if (cu_seqlens_c1) cu_seqlens_c1[ap.num_seqs] = (int32_t)ap.total_n1;
        if (cu_seqlens_c2) cu_seqlens_c2[ap.num_seqs] = (int32_t)ap.total_n2;
    }
    END_OP()
}

infllm_status infllm_stage1_scores(const infllm_params *p, const infllm_layout *l, const void *q, const void *c1,
                                   const void *c2, const int32_t *cu_seqlens_c1, const int32_t *cu_seqlens_c2,
                                   float *scores) {
    BEGIN_OP(p, l)
    if ((st = need(q, "q")) || (st = need(c1, "c1")) || (st = need(scores, "scores"))) goto done;
    if (!p->exact_lse && (st = need(c2, "c2 (required unless exact_lse)"))) goto done;
    if (p->backend != INFLLM_BACKEND_CUDA) {
        if ((st = check_cu_c(&ap, cu_seqlens_c1, 1, "cu_seqlens_c1"))) goto done;
        if (!p->exact_lse && (st = check_cu_c(&ap, cu_seqlens_c2, 2, "cu_seqlens_c2"))) goto done;
    }
    switch (p->backend) {
    case INFLLM_BACKEND_REF: st = ref_stage1(&ap, q, c1, c2, scores); break;
    case INFLLM_BACKEND_CPU: st = cpu_stage1(&ap, q, c1, c2, scores); break;
    case INFLLM_BACKEND_CUDA:
#ifdef INFLLM_HAVE_CUDA
        st = cuda_stage1(&ap, q, c1, c2, cu_seqlens_c1, cu_seqlens_c2, scores);
#else
        st = infllm_set_error(INFLLM_ERR_UNSUPPORTED, "built without CUDA");
#endif
        break;
    }
    END_OP()
}

infllm_status infllm_block_scores(const infllm_params *p, const infllm_layout *l, const float *scores,
                                  float *block_scores) {
    BEGIN_OP(p, l)
    if ((st = need(scores, "scores")) || (st = need(block_scores, "block_scores"))) goto done;
    switch (p->backend) {
    case INFLLM_BACKEND_REF: st = ref_block_scores(&ap, scores, block_scores); break;
    case INFLLM_BACKEND_CPU: st = cpu_block_scores(&ap, scores, block_scores); break;
    case INFLLM_BACKEND_CUDA:
#ifdef INFLLM_HAVE_CUDA
        st = cuda_block_scores(&ap, scores, NULL, block_scores);
#else
        st = infllm_set_error(INFLLM_ERR_UNSUPPORTED, "built without CUDA");
#endif
        break;
    }
    END_OP()
}

infllm_status infllm_topk_select(const infllm_params *p, const infllm_layout *l, const float *block_scores,
                                 int32_t *topk_idx) {
    BEGIN_OP(p, l)
    if ((st = need(block_scores, "block_scores")) || (st = need(topk_idx, "topk_idx"))) goto done;
    switch (p->backend) {
    case INFLLM_BACKEND_REF: st = ref_topk(&ap, block_scores, topk_idx); break;
    case INFLLM_BACKEND_CPU: st = cpu_topk(&ap, block_scores, topk_idx); break;
    case INFLLM_BACKEND_CUDA:
#ifdef INFLLM_HAVE_CUDA
        st = cuda_topk(&ap, block_scores, topk_idx);
#else
        st = infllm_set_error(INFLLM_ERR_UNSUPPORTED, "built without CUDA");
#endif
        break;
    }
    END_OP()
}

/* Runs a reference attention op into double buffers, then stores them. */
static infllm_status ref_attn_to_out(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                     const int32_t *topk_idx, int32_t topk_cols, void *out, float *lse) {
    size_t n_out = (size_t)(ap->total_q * ap->o_tok);
    double *out64 = malloc((n_out ? n_out : 1) * sizeof *out64);
    double *lse64 = malloc((size_t)(ap->total_q * ap->Hq + 1) * sizeof *lse64);
    infllm_status st;
    if (!out64 || !lse64) {
        st = infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (reference output)");
    } else {
        st = topk_idx ? ref_sparse_attn(ap, q, k, v, topk_idx, topk_cols, out64, lse64)
                      : ref_dense_attn(ap, q, k, v, out64, lse64);
        if (st == INFLLM_OK) store_ref_out(ap, out64, lse64, out, lse, NULL);
    }
    free(out64);
    free(lse64);
    return st;
}

infllm_status infllm_sparse_attention(const infllm_params *p, const infllm_layout *l, const void *q, const void *k,
                                      const void *v, const int32_t *topk_idx, int32_t topk_cols, void *out,
                                      float *lse) {
    BEGIN_STAGE2_OP(p, l)
    if ((st = need(q, "q")) || (st = need(k, "k")) || (st = need(v, "v")) || (st = need(topk_idx, "topk_idx")) ||
        (st = need(out, "out")))
        goto done;
    if ((st = check_topk_cols(&ap, topk_cols))) goto done;
    switch (p->backend) {
    case INFLLM_BACKEND_REF: st = ref_attn_to_out(&ap, q, k, v, topk_idx, topk_cols, out, lse); break;
    case INFLLM_BACKEND_CPU: st = cpu_sparse_attn(&ap, q, k, v, topk_idx, topk_cols, out, lse); break;
    case INFLLM_BACKEND_CUDA:
#ifdef INFLLM_HAVE_CUDA
        st = cuda_sparse_attn(&ap, q, k, v, topk_idx, topk_cols, out, lse);
#else
        st = infllm_set_error(INFLLM_ERR_UNSUPPORTED, "built without CUDA");
#endif
        break;
    }
    END_OP()
}

infllm_status infllm_dense_attention(const infllm_params *p, const infllm_layout *l, const void *q, const void *k,
                                     const void *v, void *out, float *lse) {
    BEGIN_STAGE2_OP(p, l)
    if ((st = need(q, "q")) || (st = need(k, "k")) || (st = need(v, "v")) || (st = need(out, "out"))) goto done;
    switch (p->backend) {
    case INFLLM_BACKEND_REF: st = ref_attn_to_out(&ap, q, k, v, NULL, 0, out, lse); break;
    case INFLLM_BACKEND_CPU: st = cpu_dense_attn(&ap, q, k, v, out, lse); break;
    case INFLLM_BACKEND_CUDA:
#ifdef INFLLM_HAVE_CUDA
        st = cuda_dense_attn(&ap, q, k, v, out, lse);
#else
        st = infllm_set_error(INFLLM_ERR_UNSUPPORTED, "built without CUDA");
#endif
        break;
    }
    END_OP()
}

/* The reference selection: compression (unless c1_in / c2_in are given: the decode cache's), stage 1,
 * block scores and top-k, each materialised. */
static infllm_status ref_select_blocks(const infllm_attn_params *ap, const void *q, const void *k, const void *c1_in,
                                       const void *c2_in, int32_t *topk_idx) {
    const size_t es = infllm_dtype_size(ap->dtype);
    const size_t n_sc = (size_t)ap->Hkv * (size_t)ap->total_q * (size_t)ap->max_n1 + 1;
    const size_t n_bs = (size_t)ap->Hkv * (size_t)ap->total_q * (size_t)ap->nblocks_out + 1;
    void *c1 = c1_in ? NULL : malloc((size_t)(ap->total_n1 * ap->kv_tok + 1) * es);
    void *c2 = c1_in ? NULL : malloc((size_t)(ap->total_n2 * ap->kv_tok + 1) * es);
    float *scores = malloc(n_sc * sizeof(float)), *bscores = malloc(n_bs * sizeof(float));
    infllm_status st = INFLLM_OK;
    if ((!c1_in && (!c1 || !c2)) || !scores || !bscores)
        st = infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (reference selection)");
    else if (!c1_in && !(st = ref_compress(ap, k, c1, c2)))
        c1_in = c1, c2_in = c2;
    if (!st && !(st = ref_stage1(ap, q, c1_in, c2_in, scores)) && !(st = ref_block_scores(ap, scores, bscores)))
        st = ref_topk(ap, bscores, topk_idx);
    free(c1);
    free(c2);
    free(scores);
    free(bscores);
    return st;
}

infllm_status infllm_select_blocks(const infllm_params *p, const infllm_layout *l, const void *q, const void *k,
                                   int32_t *topk_idx) {
    BEGIN_OP(p, l)
    if ((st = need(q, "q")) || (st = need(k, "k")) || (st = need(topk_idx, "topk_idx"))) goto done;
    /* no key block, or no query: nothing to select (the CUDA backend still checks the caller's workspace) */
    if ((ap.topk_out < 1 || ap.total_q == 0) && p->backend != INFLLM_BACKEND_CUDA) goto done;
    switch (p->backend) {
    case INFLLM_BACKEND_REF: st = ref_select_blocks(&ap, q, k, NULL, NULL, topk_idx); break;
    case INFLLM_BACKEND_CPU: st = cpu_select_blocks(&ap, q, k, topk_idx); break;
    case INFLLM_BACKEND_CUDA:
#ifdef INFLLM_HAVE_CUDA
        st = cuda_select_blocks(&ap, q, k, topk_idx);
#else
        st = infllm_set_error(INFLLM_ERR_UNSUPPORTED, "built without CUDA");
#endif
        break;
    }
    END_OP()
}

/* What the CUDA workspace is for: sizes differ by op. */
typedef enum { WS_ATTENTION, WS_SELECT, WS_SPARSE, WS_DENSE, WS_SPARSE_BWD, WS_DENSE_BWD } ws_op;

/* The CUDA workspace of one op (topk_cols: WS_SPARSE's); 0 on the host backends, after the same
 * validation as the op's */
static infllm_status workspace_size(const infllm_params *p, const infllm_layout *l, ws_op op, int32_t topk_cols,
                                    size_t *bytes) {
    if (!bytes) return infllm_set_error(INFLLM_ERR_NULL_ARG, "bytes is NULL");
    *bytes = 0;
    BEGIN_OP_CHECKED(p, l, op == WS_ATTENTION || op == WS_SELECT) /* the same validation as the op's */
    if ((op == WS_SPARSE || op == WS_SPARSE_BWD) && (st = check_topk_cols(&ap, topk_cols))) goto done;
#ifdef INFLLM_HAVE_CUDA
    if (p->backend == INFLLM_BACKEND_CUDA) {
        switch (op) {
        case WS_ATTENTION: st = cuda_attention_workspace_size(&ap, bytes); break;
        case WS_SELECT: st = cuda_select_blocks_workspace_size(&ap, bytes); break;
        case WS_SPARSE: st = cuda_flash_workspace_size(&ap, topk_cols, bytes); break;
        case WS_DENSE: st = cuda_flash_workspace_size(&ap, 0, bytes); break;
        case WS_SPARSE_BWD: st = cuda_attn_backward_workspace_size(&ap, topk_cols, bytes); break;
        case WS_DENSE_BWD: st = cuda_attn_backward_workspace_size(&ap, 0, bytes); break;
        }
    }
#endif
    goto done;
    END_OP()
}

infllm_status infllm_select_blocks_workspace_size(const infllm_params *p, const infllm_layout *l, size_t *bytes) {
    return workspace_size(p, l, WS_SELECT, 0, bytes);
}

infllm_status infllm_sparse_attention_workspace_size(const infllm_params *p, const infllm_layout *l,
                                                     int32_t topk_cols, size_t *bytes) {
    return workspace_size(p, l, WS_SPARSE, topk_cols, bytes);
}

infllm_status infllm_dense_attention_workspace_size(const infllm_params *p, const infllm_layout *l, size_t *bytes) {
    return workspace_size(p, l, WS_DENSE, 0, bytes);
}

infllm_status infllm_sparse_attention_backward_workspace_size(const infllm_params *p, const infllm_layout *l,
                                                              int32_t topk_cols, size_t *bytes) {
    return workspace_size(p, l, WS_SPARSE_BWD, topk_cols, bytes);
}

infllm_status infllm_dense_attention_backward_workspace_size(const infllm_params *p, const infllm_layout *l,
                                                             size_t *bytes) {
    return workspace_size(p, l, WS_DENSE_BWD, 0, bytes);
}

/* The backward ops (topk_idx NULL: dense; out the forward's output or NULL, read by CUDA only). REF runs in
 * float64 and rounds the gradients once. */
static infllm_status attn_backward(const infllm_params *p, const infllm_attn_params *ap, const void *q,
                                   const void *k, const void *v, const int32_t *topk_idx, int32_t topk_cols,
                                   const void *out, const float *lse, const void *dout, void *dq, void *dk,
                                   void *dv) {
    infllm_status st;
    switch (p->backend) {
    case INFLLM_BACKEND_REF: {
        const size_t nq = (size_t)(ap->total_q * ap->q_tok), nk = (size_t)(ap->total_k * ap->kv_tok);
        double *dq64 = malloc((nq + 1) * sizeof *dq64), *dk64 = malloc((nk + 1) * sizeof *dk64),
               *dv64 = malloc((nk + 1) * sizeof *dv64);
        if (!dq64 || !dk64 || !dv64) {
            st = infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (reference attention backward)");
        } else {
            st = ref_attn_backward(ap, q, k, v, topk_idx, topk_cols, dout, dq64, dk64, dv64);
            if (st == INFLLM_OK) {
                for (size_t i = 0; i < nq; i++) infllm_store_f64(dq, ap->dtype, (int64_t)i, dq64[i]);
                for (size_t i = 0; i < nk; i++) {
                    infllm_store_f64(dk, ap->dtype, (int64_t)i, dk64[i]);
                    infllm_store_f64(dv, ap->dtype, (int64_t)i, dv64[i]);
                }
            }
        }
        free(dq64);
        free(dk64);
        free(dv64);
        return st;
    }
    case INFLLM_BACKEND_CPU: return cpu_attn_backward(ap, q, k, v, topk_idx, topk_cols, lse, dout, dq, dk, dv);
    case INFLLM_BACKEND_CUDA:
#ifdef INFLLM_HAVE_CUDA
        return cuda_attn_backward(ap, q, k, v, topk_idx, topk_cols, out, lse, dout, dq, dk, dv);
#else
        (void)out;
        break;
#endif
    }
    return infllm_set_error(INFLLM_ERR_UNSUPPORTED, "built without CUDA");
}

static infllm_status need_backward(const void *q, const void *k, const void *v, const float *lse, const void *dout,
                                   const void *dq, const void *dk, const void *dv) {
    infllm_status st;
    if ((st = need(q, "q")) || (st = need(k, "k")) || (st = need(v, "v")) || (st = need(lse, "lse")) ||
        (st = need(dout, "dout")) || (st = need(dq, "dq")) || (st = need(dk, "dk")) || (st = need(dv, "dv")))
        return st;
    return INFLLM_OK;
}

/* 1 when the byte ranges [a, a + na) and [b, b + nb) share a byte (differences, not ends: no overflow) */
static int bytes_overlap(const void *a, size_t na, const void *b, size_t nb) {
    if (!a || !b || !na || !nb) return 0;
    const uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return x >= y ? x - y < nb : y - x < na;
}

/* The gradients must not share memory with an input or with each other: the CPU backward reads q, dout and lse again
 * (pass B) after storing dq, and packs each (sequence, KV head)'s k / v after the last one's dk / dv were stored, so
 * an overlap gave wrong gradients without a word (REF's float64 temporaries hid it). Refused on every backend. */
static infllm_status check_backward_overlap(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                            const int32_t *topk_idx, int32_t topk_cols, const void *out,
                                            const float *lse, const void *dout, const void *dq, const void *dk,
                                            const void *dv) {
    const size_t es = infllm_dtype_size(ap->dtype);
    const size_t bq = (size_t)ap->total_q * (size_t)ap->q_tok * es, bk = (size_t)ap->total_k * (size_t)ap->kv_tok * es;
    const size_t blse = (size_t)ap->total_q * (size_t)ap->Hq * sizeof(float);
    const size_t btk = topk_idx ? (size_t)ap->Hkv * (size_t)ap->total_q * (size_t)topk_cols * sizeof(int32_t) : 0;
    const struct {
        const void *p;
        size_t n;
        const char *name;
    } grads[] = {{dq, bq, "dq"}, {dk, bk, "dk"}, {dv, bk, "dv"}},
      ins[] = {{q, bq, "q"}, {k, bk, "k"}, {v, bk, "v"}, {topk_idx, btk, "topk_idx"},
               {out, bq, "out"}, {lse, blse, "lse"}, {dout, bq, "dout"}};
    for (size_t g = 0; g < 3; g++) {
        for (size_t i = 0; i < sizeof ins / sizeof ins[0]; i++)
            if (bytes_overlap(grads[g].p, grads[g].n, ins[i].p, ins[i].n))
                return infllm_set_error(INFLLM_ERR_PARAM,
                                        "%s overlaps the input %s: the gradients must not share memory with the "
                                        "inputs (give %s its own buffer)",
                                        grads[g].name, ins[i].name, grads[g].name);
        for (size_t h = g + 1; h < 3; h++)
            if (bytes_overlap(grads[g].p, grads[g].n, grads[h].p, grads[h].n))
                return infllm_set_error(INFLLM_ERR_PARAM, "%s and %s overlap: each gradient needs its own buffer",
                                        grads[g].name, grads[h].name);
    }
    return INFLLM_OK;
}

infllm_status infllm_sparse_attention_backward_out(const infllm_params *p, const infllm_layout *l, const void *q,
                                                   const void *k, const void *v, const int32_t *topk_idx,
                                                   int32_t topk_cols, const void *out, const float *lse,
                                                   const void *dout, void *dq, void *dk, void *dv) {
    BEGIN_STAGE2_OP(p, l)
    if ((st = need_backward(q, k, v, lse, dout, dq, dk, dv)) || (st = need(topk_idx, "topk_idx"))) goto done;
    if ((st = check_topk_cols(&ap, topk_cols))) goto done;
    if ((st = check_backward_overlap(&ap, q, k, v, topk_idx, topk_cols, out, lse, dout, dq, dk, dv))) goto done;
    st = attn_backward(p, &ap, q, k, v, topk_idx, topk_cols, out, lse, dout, dq, dk, dv);
    END_OP()
}

infllm_status infllm_dense_attention_backward_out(const infllm_params *p, const infllm_layout *l, const void *q,
                                                  const void *k, const void *v, const void *out, const float *lse,
                                                  const void *dout, void *dq, void *dk, void *dv) {
    BEGIN_STAGE2_OP(p, l)
    if ((st = need_backward(q, k, v, lse, dout, dq, dk, dv))) goto done;
    if ((st = check_backward_overlap(&ap, q, k, v, NULL, 0, out, lse, dout, dq, dk, dv))) goto done;
    st = attn_backward(p, &ap, q, k, v, NULL, 0, out, lse, dout, dq, dk, dv);
    END_OP()
}

infllm_status infllm_sparse_attention_backward(const infllm_params *p, const infllm_layout *l, const void *q,
                                               const void *k, const void *v, const int32_t *topk_idx,
                                               int32_t topk_cols, const float *lse, const void *dout, void *dq,
                                               void *dk, void *dv) {
    return infllm_sparse_attention_backward_out(p, l, q, k, v, topk_idx, topk_cols, NULL, lse, dout, dq, dk, dv);
}

infllm_status infllm_dense_attention_backward(const infllm_params *p, const infllm_layout *l, const void *q,
                                              const void *k, const void *v, const float *lse, const void *dout,
                                              void *dq, void *dk, void *dv) {
    return infllm_dense_attention_backward_out(p, l, q, k, v, NULL, lse, dout, dq, dk, dv);
}

/* The reference pipeline: every stage materialised (O(T^2) memory: it is the spec, not a path
 * for long inputs). Sparse sequences take the sparse result, dense ones the dense result. */
static infllm_status ref_pipeline(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                  const void *c1_in, const void *c2_in, void *out, float *lse) {
    size_t n_out = (size_t)(ap->total_q * ap->o_tok) + 1;
    size_t n_lse = (size_t)(ap->total_q * ap->Hq) + 1;
    size_t n_tk = (size_t)ap->Hkv * (size_t)ap->total_q * (size_t)(ap->topk_out > 0 ? ap->topk_out : 1) + 1;
    int32_t *topk = malloc(n_tk * sizeof(int32_t));
    double *out64 = malloc(n_out * sizeof(double));
    double *lse64 = malloc(n_lse * sizeof(double));
    infllm_status st = INFLLM_OK;
    int any_sparse = 0, any_dense = 0;
    for (int32_t b = 0; b < ap->num_seqs; b++) {
        if (ap->seqs[b].sparse)
            any_sparse = 1;
        else
            any_dense = 1;
    }
    if (!topk || !out64 || !lse64) {
        st = infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (reference pipeline)");
        goto done;
    }
    if (any_dense) {
        if ((st = ref_dense_attn(ap, q, k, v, out64, lse64))) goto done;
        for (int32_t b = 0; b < ap->num_seqs; b++)
            if (!ap->seqs[b].sparse) store_ref_out(ap, out64, lse64, out, lse, &ap->seqs[b]);
    }
    if (any_sparse && ap->total_q > 0) {
        if ((st = ref_select_blocks(ap, q, k, c1_in, c2_in, topk))) goto done;
        if ((st = ref_sparse_attn(ap, q, k, v, topk, ap->topk_out, out64, lse64))) goto done;
        for (int32_t b = 0; b < ap->num_seqs; b++)
            if (ap->seqs[b].sparse) store_ref_out(ap, out64, lse64, out, lse, &ap->seqs[b]);
    }
done:
    free(topk);
    free(out64);
    free(lse64);
    return st;
}

infllm_status infllm_attention_with_compressed(const infllm_attn_params *ap, infllm_backend backend, const void *q,
                                               const void *k, const void *v, const void *c1, const void *c2,
                                               const cpu_kv_tiles *kvt, void *out, float *lse) {
    switch (backend) {
    case INFLLM_BACKEND_REF: return ref_pipeline(ap, q, k, v, c1, c2, out, lse);
    case INFLLM_BACKEND_CPU: return cpu_attention(ap, q, k, v, c1, c2, kvt, out, lse);
    case INFLLM_BACKEND_CUDA:
#ifdef INFLLM_HAVE_CUDA
        /* the decode cache's device c1/c2 (one sequence): no recompression */
        if (c1 || c2) return cuda_cache_attend(ap, q, k, v, c1, c2, out, lse);
        return cuda_attention(ap, q, k, v, out, lse);
#else
        return infllm_set_error(INFLLM_ERR_UNSUPPORTED, "built without CUDA");
#endif
    }
    return infllm_set_error(INFLLM_ERR_PARAM, "invalid backend");
}

infllm_status infllm_attention(const infllm_params *p, const infllm_layout *l, const void *q, const void *k,
                               const void *v, void *out, float *lse) {
    BEGIN_OP(p, l)
    if ((st = need(q, "q")) || (st = need(k, "k")) || (st = need(v, "v")) || (st = need(out, "out"))) goto done;
    st = infllm_attention_with_compressed(&ap, p->backend, q, k, v, NULL, NULL, NULL, out, lse);
    END_OP()
}

infllm_status infllm_attention_workspace_size(const infllm_params *p, const infllm_layout *l, size_t *bytes) {
    return workspace_size(p, l, WS_ATTENTION, 0, bytes);
}

infllm_status infllm_build_single_seq_params(const infllm_params *p, infllm_dtype dtype, int32_t Hq, int32_t Hkv,
                                             int32_t D, int64_t lq, int64_t lk, infllm_attn_params *ap,
                                             infllm_seq **seqs_out) {
    infllm_layout l;
    memset(&l, 0, sizeof l);
    l.dtype = dtype;
    l.num_seqs = 1;
    l.total_q = lq;
    l.total_k = lk;
    l.num_q_heads = Hq;
    l.num_kv_heads = Hkv;
    l.head_dim = D;
    return build_params(p, &l, ap, seqs_out, 1);
}
