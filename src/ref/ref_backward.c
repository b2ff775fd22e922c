/*
 * ref_backward.c: float64 reference of the backward of stage 2 (block-sparse attention, SPEC B
 * §9.3) and of dense causal attention: the exact gradients of ref_attention.c's outputs with the
 * selection held fixed (SPEC A.1: no gradient through selection or compression).
 *
 * For query row (t, h) with allowed keys A (j <= its position p, j > p - window with a sliding window, and
 * j's block selected for the sparse op), scores s_j = scale q.k_j, P_j = softmax over A, O = sum P_j v_j, and dO
 * given:
 *   dP_j = dO . v_j         Delta = sum_j P_j dP_j (= dO . O)      dS_j = P_j (dP_j - Delta)
 *   dq   = scale sum_j dS_j k_j          dk_j += scale dS_j q          dv_j += P_j dO
 * The softmax is recomputed here from q and k (max-subtracted, in double); nothing of the forward
 * is read. dq [total_q, Hq, D], dk / dv [total_k, Hkv, D], double, fully written.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "internal.h"

static double ld(const void *p, infllm_dtype dt, int64_t i) { return (double)infllm_load_f32(p, dt, i); }

/* One query row: the gradients of its attention over keys first <= j < nkeys of sequence s with allowed(j). */
static void ref_backward_row(const infllm_attn_params *ap, const infllm_seq *s, const void *q, const void *k,
                             const void *v, const void *dout, int64_t t, int32_t h, int64_t first, int64_t nkeys,
                             const unsigned char *allowed, double *w /* [nkeys] */, double *dp /* [nkeys] */,
                             double *dq, double *dk, double *dv) {
    const int32_t g = h / ap->G, D = ap->D;
    const int64_t qrow = t * ap->q_tok + h * ap->q_head, orow = t * ap->o_tok + h * ap->o_head;
    double m = -INFINITY;
    int64_t cnt = 0;
    for (int64_t j = first; j < nkeys; j++) {
        if (allowed && !allowed[j]) continue;
        cnt++;
        const int64_t krow = (s->k0 + j) * ap->kv_tok + g * ap->kv_head;
        double dot = 0.0, dpj = 0.0;
        for (int32_t d = 0; d < D; d++) {
            dot += ld(q, ap->dtype, qrow + d) * ld(k, ap->dtype, krow + d);
            dpj += ld(dout, ap->dtype, orow + d) * ld(v, ap->dtype, krow + d);
        }
        w[j] = (double)ap->scale * dot;
        dp[j] = dpj;
        if (w[j] > m) m = w[j];
    }
    /* no key: out = 0, every gradient of this row 0. (Not m == -inf: a row of NaN scores has keys, and its
     * NaN reaches its gradients as ref_attend_row's reaches its output.) */
    if (cnt == 0) return;
    double sum = 0.0;
    for (int64_t j = first; j < nkeys; j++)
        if (!allowed || allowed[j]) sum += exp(w[j] - m);
    double delta = 0.0;
    for (int64_t j = first; j < nkeys; j++)
        if (!allowed || allowed[j]) {
            w[j] = exp(w[j] - m) / sum; /* P_j */
            delta += w[j] * dp[j];
        }
    for (int64_t j = first; j < nkeys; j++) {
        if (allowed && !allowed[j]) continue;
        const int64_t krow = (s->k0 + j) * ap->kv_tok + g * ap->kv_head;
        const double ds = w[j] * (dp[j] - delta) * (double)ap->scale;
        for (int32_t d = 0; d < D; d++) {
            dq[qrow + d] += ds * ld(k, ap->dtype, krow + d);
            dk[krow + d] += ds * ld(q, ap->dtype, qrow + d);
            dv[krow + d] += w[j] * ld(dout, ap->dtype, orow + d);
        }
    }
}

infllm_status ref_attn_backward(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                const int32_t *topk_idx /* [Hkv, total_q, topk_cols] or NULL: dense */,
                                int32_t topk_cols, const void *dout, double *dq, double *dk, double *dv) {
    const size_t n = (size_t)ap->max_lk + 1;
    double *w = malloc(n * sizeof *w), *dp = malloc(n * sizeof *dp);
    unsigned char *allowed = topk_idx ? malloc(n) : NULL;
    unsigned char *sel = topk_idx ? malloc((size_t)ap->nblocks_out + 1) : NULL;
    if (!w || !dp || (topk_idx && (!allowed || !sel))) {
        free(w);
        free(dp);
        free(allowed);
        free(sel);
        return infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (reference attention backward)");
    }
    memset(dq, 0, (size_t)(ap->total_q * ap->q_tok) * sizeof *dq);
    memset(dk, 0, (size_t)(ap->total_k * ap->kv_tok) * sizeof *dk);
    memset(dv, 0, (size_t)(ap->total_k * ap->kv_tok) * sizeof *dv);
    for (int32_t sb = 0; sb < ap->num_seqs; sb++) {
        const infllm_seq *s = &ap->seqs[sb];
        for (int32_t i = 0; i < s->lq; i++) {
            const int64_t t = s->q0 + i, p = (int64_t)s->lk - s->lq + i;
            for (int32_t g = 0; g < ap->Hkv; g++) {
                if (topk_idx)
                    ref_allowed_keys(ap, s, topk_idx + ((int64_t)g * ap->total_q + t) * topk_cols, topk_cols, p,
                                     sel, allowed);
                for (int32_t hh = 0; hh < ap->G; hh++)
                    ref_backward_row(ap, s, q, k, v, dout, t, g * ap->G + hh, infllm_window_start(p, ap->window), p + 1,
                                     allowed, w, dp, dq, dk, dv);
            }
        }
    }
    free(w);
    free(dp);
    free(allowed);
    free(sel);
    return INFLLM_OK;
}
