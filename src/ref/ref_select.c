/*
 * ref_select.c: float64-reference block scores (SPEC B §6, A.4) and top-k (SPEC B §7, A.3).
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "internal.h"

/* block_scores[g][t][b], every column b < nblocks_out (SPEC B 6, the golden README):
 *   +inf  if forced: b < init_blocks or q_block - local_blocks <= b <= q_block, q_block = p / B
 *         (also a padding column, b >= nblocks of the row's sequence, below init_blocks)
 *   else  max of scores[g][t][lo..hi) over the c1 kernels overlapping b, -inf if empty (so every
 *         other padding column is -inf: no kernel of the sequence reaches past its last block), and
 *         FLT_MAX for a max of +inf: a head sum past the float range (a c1 logit over ~88.7 above the
 *         row's LSE, possible with |q|, |k| ~ 50) ranks first among the free blocks but never ties with
 *         the forced ones, which the lower index would otherwise decide (the current block was dropped). */
infllm_status ref_block_scores(const infllm_attn_params *ap, const float *scores /* [Hkv, total_q, max_n1] */,
                               float *block_scores /* [Hkv, total_q, nblocks_out] */) {
    for (int32_t sb = 0; sb < ap->num_seqs; sb++) {
        const infllm_seq *s = &ap->seqs[sb];
        for (int32_t i = 0; i < s->lq; i++) {
            int64_t t = s->q0 + i;
            int64_t p = (int64_t)s->lk - s->lq + i;
            int32_t q_block = (int32_t)(p / ap->B);
            for (int32_t g = 0; g < ap->Hkv; g++) {
                const float *srow = scores + ((int64_t)g * ap->total_q + t) * ap->max_n1;
                float *brow = block_scores + ((int64_t)g * ap->total_q + t) * ap->nblocks_out;
                for (int32_t b = 0; b < ap->nblocks_out; b++) {
                    if (infllm_block_forced(b, q_block, ap->init_blocks, ap->local_blocks)) {
                        brow[b] = INFINITY;
                    } else if (b >= s->nblocks) {
                        brow[b] = -INFINITY; /* what the kernel range gives, stated */
                    } else {
                        int32_t lo, hi;
                        infllm_block_kernel_range(b, ap->B, ap->l1, ap->s1, s->n1, &lo, &hi);
                        float m = -INFINITY;
                        for (int32_t j = lo; j < hi; j++)
                            if (srow[j] > m) m = srow[j];
                        /* a stage-1 sum past the float range (+inf) stays below the forced blocks' +inf */
                        brow[b] = m == INFINITY ? FLT_MAX : m;
                    }
                }
            }
        }
    }
    return INFLLM_OK;
}

typedef struct ref_cand {
    float score;
    int32_t block;
} ref_cand;

/* score descending (NaN lowest), then block ascending */
static int ref_cand_cmp(const void *pa, const void *pb) {
    const ref_cand *a = pa, *b = pb;
    int an = isnan(a->score), bn = isnan(b->score);
    if (an != bn) return an - bn;
    if (!an && a->score != b->score) return a->score > b->score ? -1 : 1;
    return (a->block > b->block) - (a->block < b->block);
}

static int ref_int_cmp(const void *pa, const void *pb) {
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    return (a > b) - (a < b);
}

/* topk_idx[g][t][0..K): the K = topk_out best of the row's own blocks b < nblocks of its sequence, but for those
 * wholly before its sliding window (b < infllm_window_first_block; none without a window) (score desc,
 * index asc), sorted ascending, entries > q_block replaced by -1 (at the end, since the list is ascending); -1
 * after them when the sequence has fewer than K blocks. The padding columns (b >= nblocks, there when a longer
 * sequence sets nblocks_out) are no candidates: a sequence's selection must not depend on its batch. (Before, every
 * column competed and a padding column that won a slot became -1 there: a NaN block lost its
 * slot to a -inf padding column, and a caller's padding above the real scores emptied the row; the CPU and CUDA
 * backends never took them.) */
infllm_status ref_topk(const infllm_attn_params *ap, const float *block_scores /* [Hkv, total_q, nblocks_out] */,
                       int32_t *topk_idx /* [Hkv, total_q, topk_out] */) {
    int32_t nb = ap->nblocks_out, K = ap->topk_out;
    if (K <= 0) return INFLLM_OK;
    ref_cand *cand = malloc((size_t)(nb > 0 ? nb : 1) * sizeof *cand);
    if (!cand) return infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (reference top-k)");
    for (int32_t sb = 0; sb < ap->num_seqs; sb++) {
        const infllm_seq *s = &ap->seqs[sb];
        for (int32_t i = 0; i < s->lq; i++) {
            int64_t t = s->q0 + i;
            int64_t p = (int64_t)s->lk - s->lq + i;
            int32_t q_block = (int32_t)(p / ap->B);
            for (int32_t g = 0; g < ap->Hkv; g++) {
                const float *brow = block_scores + ((int64_t)g * ap->total_q + t) * nb;
                int32_t *out = topk_idx + ((int64_t)g * ap->total_q + t) * K;
                /* candidates: the sequence's blocks from the first that reaches the sliding window */
                const int32_t ns = s->nblocks < nb ? s->nblocks : nb;
                const int32_t wb = infllm_window_first_block(p, ap->window, ap->B);
                const int32_t nc = ns > wb ? ns - wb : 0, kk = K < nc ? K : nc;
                for (int32_t b = 0; b < nc; b++) {
                    cand[b].score = brow[wb + b];
                    cand[b].block = wb + b;
                }
                qsort(cand, (size_t)nc, sizeof *cand, ref_cand_cmp);
                for (int32_t c = 0; c < kk; c++) out[c] = cand[c].block;
                qsort(out, (size_t)kk, sizeof *out, ref_int_cmp);
                for (int32_t c = 0; c < K; c++)
                    if (c >= kk || out[c] > q_block) out[c] = -1;
            }
        }
    }
    free(cand);
    return INFLLM_OK;
}
