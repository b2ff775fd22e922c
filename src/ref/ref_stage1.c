/*
 * ref_stage1.c: float64 reference of the stage-1 kernel scores (SPEC B §5, A.2, A.3, A.6).
 *
 * For query row t at position p (bottom-right: p = lk - lq + i) and KV head g:
 *   LSE_h   = log sum_{j' visible in the LSE level} exp(s * q_h . cL_j')   (cL = c2, or c1 with exact_lse)
 *   S[g][t][j] = sum_{h in group g} exp(s * q_h . c1_j - LSE_h)             for visible c1 kernels j
 * A kernel is visible iff its last covered position <= p. Invisible kernels, padding columns
 * (j >= n1 of the sequence) and rows without any visible LSE kernel hold 0. The head sum is
 * rounded to bf16 when the storage dtype is bf16, otherwise stored as float.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "internal.h"

/* s * q_h . c_j in double: qh the query row [D] in double, c row crow head g [Hkv, D]. */
static double ref_logit(const infllm_attn_params *ap, const double *qh, const void *c, int64_t crow, int32_t g) {
    double dot = 0.0;
    for (int32_t d = 0; d < ap->D; d++)
        dot += qh[d] * (double)infllm_load_f32(c, ap->dtype, crow * ap->kv_tok + g * ap->kv_head + d);
    return (double)ap->scale * dot;
}

/* x rounded once (to nearest even) to bf16, as a float. Going through (float)x first could
 * round twice; rounding to float toward zero with a sticky last bit ("round to odd") first
 * makes the second rounding exact. */
static float ref_round_bf16(double x) {
    float f = (float)x;
    if ((double)f != x && isfinite(f)) {
        if (fabs((double)f) > fabs(x)) f = nextafterf(f, 0.0f);
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        u |= 1u;
        memcpy(&f, &u, sizeof f);
    }
    return infllm_round_to(INFLLM_DTYPE_BF16, f);
}

infllm_status ref_stage1(const infllm_attn_params *ap, const void *q, const void *c1, const void *c2,
                         float *scores /* [Hkv, total_q, max_n1] */) {
    int64_t ncol = ap->max_n1;
    double *acc = malloc((size_t)(ncol > 0 ? ncol : 1) * sizeof *acc);       /* [max_n1] head sum */
    double *lvl = malloc((size_t)(ap->max_lk + 1) * sizeof *lvl);            /* LSE-level logits */
    double *qh = malloc((size_t)ap->D * sizeof *qh);                         /* [D] one query row */
    if (!acc || !lvl || !qh) {
        free(acc);
        free(lvl);
        free(qh);
        return infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (reference stage 1)");
    }
    for (int32_t b = 0; b < ap->num_seqs; b++) {
        const infllm_seq *s = &ap->seqs[b];
        for (int32_t i = 0; i < s->lq; i++) {
            int64_t t = s->q0 + i;
            int64_t p = (int64_t)s->lk - s->lq + i;
            int32_t nv1 = infllm_visible_kernels(p, ap->l1, ap->s1, s->n1);
            const void *cl;
            int64_t cl0;
            int32_t nvl;
            if (ap->exact_lse) {
                cl = c1;
                cl0 = s->c1_0;
                nvl = nv1;
            } else {
                cl = c2;
                cl0 = s->c2_0;
                nvl = infllm_visible_kernels(p, ap->l2, ap->s2, s->n2);
            }
            for (int32_t g = 0; g < ap->Hkv; g++) {
                for (int64_t j = 0; j < ncol; j++) acc[j] = 0.0;
                if (nvl > 0) {
                    for (int32_t hh = 0; hh < ap->G; hh++) {
                        int32_t h = g * ap->G + hh;
                        for (int32_t d = 0; d < ap->D; d++)
                            qh[d] = (double)infllm_load_f32(q, ap->dtype, t * ap->q_tok + h * ap->q_head + d);
                        double m = -INFINITY;
                        for (int32_t j = 0; j < nvl; j++) {
                            lvl[j] = ref_logit(ap, qh, cl, cl0 + j, g);
                            if (lvl[j] > m) m = lvl[j];
                        }
                        double sum = 0.0;
                        for (int32_t j = 0; j < nvl; j++) sum += exp(lvl[j] - m);
                        double lse = m + log(sum);
                        for (int32_t j = 0; j < nv1; j++) acc[j] += exp(ref_logit(ap, qh, c1, s->c1_0 + j, g) - lse);
                    }
                }
                float *row = scores + ((int64_t)g * ap->total_q + t) * ncol;
                /* a NaN (from NaN inputs) is written as 0, as the official kernels' wrapper does (SPEC B 5):
                 * in such a row every block then ties at 0 and the top-k goes by block index */
                for (int64_t j = 0; j < ncol; j++) {
                    row[j] = isnan(acc[j]) ? 0.0f
                             : ap->dtype == INFLLM_DTYPE_BF16 ? ref_round_bf16(acc[j])
                                                              : (float)acc[j];
                }
            }
        }
    }
    free(acc);
    free(lvl);
    free(qh);
    return INFLLM_OK;
}
