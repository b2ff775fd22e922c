/*
 * ref_attention.c: float64 reference of stage 2 (block-sparse attention, SPEC B §9) and of
 * dense causal attention. Query i of a sequence sits at position p = lk - lq + i; it attends
 * the keys j <= p (dense) or the keys j <= p whose block j / B is selected (sparse), and with a sliding
 * window (params window > 0) only those with j > p - window.
 * out [total_q, Hq, D] double, lse [total_q, Hq] double natural log (may be NULL).
 * An empty key set gives out = 0 and lse = -inf.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "internal.h"

/* Softmax attention of query (t, h) over the keys first <= j < nkeys of sequence s with allowed(j). */
static void ref_attend_row(const infllm_attn_params *ap, const infllm_seq *s, const void *q, const void *k,
                           const void *v, int64_t t, int32_t h, int64_t first, int64_t nkeys,
                           const unsigned char *allowed,
                           double *w /* [lk] scratch */, double *out /* [D] */, double *lse) {
    int32_t g = h / ap->G;
    double m = -INFINITY;
    int64_t cnt = 0;
    for (int32_t d = 0; d < ap->D; d++) out[d] = (double)infllm_load_f32(q, ap->dtype, t * ap->q_tok + h * ap->q_head + d);
    for (int64_t j = first; j < nkeys; j++) {
        if (allowed && !allowed[j]) continue;
        double dot = 0.0;
        for (int32_t d = 0; d < ap->D; d++) /* out[] holds the query row until the weights are known */
            dot += out[d] * (double)infllm_load_f32(k, ap->dtype, (s->k0 + j) * ap->kv_tok + g * ap->kv_head + d);
        w[j] = (double)ap->scale * dot;
        if (w[j] > m) m = w[j];
        cnt++;
    }
    for (int32_t d = 0; d < ap->D; d++) out[d] = 0.0;
    if (cnt == 0) {
        if (lse) *lse = -INFINITY;
        return;
    }
    double sum = 0.0;
    for (int64_t j = first; j < nkeys; j++) {
        if (allowed && !allowed[j]) continue;
        double e = exp(w[j] - m);
        sum += e;
        for (int32_t d = 0; d < ap->D; d++)
            out[d] += e * (double)infllm_load_f32(v, ap->dtype, (s->k0 + j) * ap->kv_tok + g * ap->kv_head + d);
    }
    for (int32_t d = 0; d < ap->D; d++) out[d] /= sum;
    if (lse) *lse = m + log(sum);
}

void ref_allowed_keys(const infllm_attn_params *ap, const infllm_seq *s, const int32_t *row, int32_t topk_cols,
                      int64_t p, unsigned char *sel, unsigned char *allowed) {
    memset(sel, 0, (size_t)ap->nblocks_out + 1);
    for (int32_t c = 0; c < topk_cols; c++)
        if (row[c] >= 0 && row[c] < s->nblocks) sel[row[c]] = 1;
    for (int64_t j = 0; j <= p; j++) allowed[j] = sel[j / ap->B];
}

infllm_status ref_sparse_attn(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                              const int32_t *topk_idx /* [Hkv, total_q, topk_cols] */, int32_t topk_cols,
                              double *out /* [total_q, Hq, D] */, double *lse /* [total_q, Hq] or NULL */) {
    size_t n = (size_t)ap->max_lk + 1;
    double *w = malloc(n * sizeof *w);
    unsigned char *allowed = malloc(n);
    unsigned char *sel = malloc((size_t)ap->nblocks_out + 1);
    if (!w || !allowed || !sel) {
        free(w);
        free(allowed);
        free(sel);
        return infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (reference sparse attention)");
    }
    for (int32_t sb = 0; sb < ap->num_seqs; sb++) {
        const infllm_seq *s = &ap->seqs[sb];
        for (int32_t i = 0; i < s->lq; i++) {
            int64_t t = s->q0 + i;
            int64_t p = (int64_t)s->lk - s->lq + i;
            for (int32_t g = 0; g < ap->Hkv; g++) {
                ref_allowed_keys(ap, s, topk_idx + ((int64_t)g * ap->total_q + t) * topk_cols, topk_cols, p, sel,
                                 allowed);
                for (int32_t hh = 0; hh < ap->G; hh++) {
                    int32_t h = g * ap->G + hh;
                    ref_attend_row(ap, s, q, k, v, t, h, infllm_window_start(p, ap->window), p + 1, allowed, w,
                                   out + t * ap->o_tok + h * ap->o_head,
                                   lse ? lse + t * ap->Hq + h : NULL);
                }
            }
        }
    }
    free(w);
    free(allowed);
    free(sel);
    return INFLLM_OK;
}

infllm_status ref_dense_attn(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                             double *out /* [total_q, Hq, D] */, double *lse /* [total_q, Hq] or NULL */) {
    double *w = malloc(((size_t)ap->max_lk + 1) * sizeof *w);
    if (!w) return infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (reference dense attention)");
    for (int32_t sb = 0; sb < ap->num_seqs; sb++) {
        const infllm_seq *s = &ap->seqs[sb];
        for (int32_t i = 0; i < s->lq; i++) {
            int64_t t = s->q0 + i;
            int64_t p = (int64_t)s->lk - s->lq + i;
            for (int32_t h = 0; h < ap->Hq; h++)
                ref_attend_row(ap, s, q, k, v, t, h, infllm_window_start(p, ap->window), p + 1, NULL, w,
                               out + t * ap->o_tok + h * ap->o_head,
                               lse ? lse + t * ap->Hq + h : NULL);
        }
    }
    free(w);
    return INFLLM_OK;
}
