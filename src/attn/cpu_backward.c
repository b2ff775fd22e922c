/*
 * cpu_backward.c: the fast CPU path of the backward of stage 2 (block-sparse attention) and of
 * dense causal attention (topk_idx NULL), f32 arithmetic on the SIMD kernels of cpu_kern.h,
 * OpenMP. The math is ref_backward.c's (SPEC B §9.3): with P_j = exp(s_j - lse) recomputed from
 * q, k and the forward's lse,
 *   dP_j = dO . v_j,  Delta = sum_j P_j dP_j,  dS_j = P_j (dP_j - Delta),
 *   dq = scale sum_j dS_j k_j,  dk_j = scale sum_rows dS_j q,  dv_j = sum_rows P_j dO.
 * Delta comes from the recomputed P and dP, not from dO . out with a rounded forward output, so
 * bf16 / f16 outputs add no error of their own to the gradients. dS = P (dP - Delta) cancels
 * where dP_j is close to Delta, so an error of Delta or of P's scale moves dq by about its own size
 * times scale Delta sum_j P_j k_j. Hence Delta and the row's sum of P are accumulated in double
 * (in f32 that error alone gave 3x a naive f32 backward's worst dq error in random tests), and each
 * row's P is normalised by that recomputed sum (pass A's first sweep; it is 1 up to the lse's
 * rounding: an f32 lse of magnitude 8-16 is only good to ~1e-6).
 *
 * The K / V of the (sequence, KV head) in hand are packed once into f32 64-key tiles (K and V as
 * the qk kernel wants them, K also row-major for dq's product; bf16 where the forward runs on the bf16
 * dot-product kernels, cpu_dot16_get: K and V in their K layout for S and dP, the products of two bf16
 * values being exact, while dq / dk / dv keep f32 P and dS), then two passes run over them,
 * each without atomics (S = Q K^T and dP = dO V^T by qk, P by the softmax kernel on S - lse / scale
 * with the row max set to 0, the dq / dk / dv products by pv):
 *   A. a task per query token (and chunk of up to 64 of its G heads; without a selection, 64 / G
 *      consecutive tokens share a task): over the tiles holding its allowed keys (a key mask per
 *      tile and row: selected blocks, causal limit), a first sweep sums
 *      Delta and keeps P and dP of every tile (recomputed instead when they would pass
 *      BW_CACHE_BYTES), a second forms dS and accumulates dq. Delta is kept for pass B.
 *   B. a task per 64-key tile: the tokens that attend any of its keys (merged from a CSR table
 *      of the blocks' tokens built from topk_idx; dense: every token at or after the tile), up to
 *      64 (token, head) rows at a time, each row with its own key mask; P and dS are transposed,
 *      so that dv = P^T dO and dk = scale dS^T Q are pv products over the tile's keys, stored
 *      once. Keys no token attends get 0.
 * Each gradient element is written by one task, and the sums inside a task run in a fixed order,
 * so the result does not depend on the thread count. FLOPs: 14 D per (row, allowed key) against
 * the forward's 4 D.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kern.h"
#include "internal.h"

/* pass A's P / dP cache per thread, at most (INFLLM_CPU_BW_CACHE_BYTES overrides it: tests run the
 * recomputing sweep with 0) */
#define BW_CACHE_BYTES ((size_t)8 << 20)
#define BW_LOG2E 1.4426950408889634f

/* the packed K / V of one (sequence, KV head): tile tau holds keys [64 tau, 64 tau + 64) */
typedef struct bw_head {
    void *kp, *vp;  /* [ntile][4][D][16] f32, or (dot) [ntile][4][D/2][16][2] bf16 (zero past the sequence's keys) */
    float *kr;      /* [ntile * 64][D] K row-major */
} bw_head;

typedef struct bw_ctx {
    const infllm_attn_params *ap;
    const cpu_kern *kern;
    const cpu_dot16 *dot; /* non-NULL: S and dP on the bf16 dot kernels (bf16 inputs on a CPU where they are faster) */
    size_t kv_es;         /* bytes of a kp / vp element: 2 with dot, else 4 */
    const void *q, *k, *v, *dout;
    const int32_t *topk;
    int32_t cols;
    const float *lse;
    float *delta; /* [total_q, Hq] */
    float *pnorm; /* [total_q, Hq]: 1 / sum_j exp(s_j - lse), the row's normalisation */
    unsigned char *rowbad; /* [total_q, Hq]: 1 where the row's q or dout holds a NaN / inf (pass A writes it) */
    void *dq, *dk, *dv;
    size_t es; /* bytes of one element */
    size_t cache_bytes; /* pass A's P / dP cache per thread, at most */
    bw_head hd;
} bw_ctx;

/* per-thread scratch; R <= CPU_KT rows at a time */
typedef struct bw_scratch {
    float *qf, *df;                            /* [CPU_KT][D] rows of q / dout */
    uint16_t *q16, *d16;                       /* [CPU_KT][D] the same rows' bf16 values (dot) */
    float *acc, *dkt, *dvt;                    /* [CPU_KT][D] accumulators */
    float *s, *dp, *p, *ds;                    /* [CPU_KT][CPU_KT] */
    float *pt, *dst;                           /* [CPU_KT][CPU_KT] transposed P / dS */
    float *m, *l, *alpha, *ones, *lse, *delta; /* [CPU_KT] */
    float *pscale;                             /* [CPU_KT] what P rows are multiplied by (pnorm) */
    uint64_t *kmask;                           /* [CPU_KT] */
    unsigned char *sel;                        /* [nblocks_out + 1] */
    float *cache;                              /* pass A: P and dP of a token's tiles */
    size_t cache_floats;
} bw_scratch;

static int bw_scratch_init(bw_scratch *w, const infllm_attn_params *ap) {
    const size_t td = (size_t)CPU_KT * ap->D, tt = (size_t)CPU_KT * CPU_KT;
    memset(w, 0, sizeof *w);
    float **td_bufs[] = {&w->qf, &w->df, &w->acc, &w->dkt, &w->dvt};
    float **tt_bufs[] = {&w->s, &w->dp, &w->p, &w->ds, &w->pt, &w->dst};
    float **row_bufs[] = {&w->m, &w->l, &w->alpha, &w->ones, &w->lse, &w->delta, &w->pscale};
    int ok = 1;
    for (size_t i = 0; i < sizeof td_bufs / sizeof td_bufs[0]; i++) ok &= (*td_bufs[i] = malloc(td * 4)) != NULL;
    for (size_t i = 0; i < sizeof tt_bufs / sizeof tt_bufs[0]; i++) ok &= (*tt_bufs[i] = malloc(tt * 4)) != NULL;
    for (size_t i = 0; i < sizeof row_bufs / sizeof row_bufs[0]; i++) ok &= (*row_bufs[i] = malloc(CPU_KT * 4)) != NULL;
    ok &= (w->kmask = malloc(CPU_KT * sizeof(uint64_t))) != NULL;
    ok &= (w->q16 = malloc(td * sizeof(uint16_t))) != NULL;
    ok &= (w->d16 = malloc(td * sizeof(uint16_t))) != NULL;
    ok &= (w->sel = malloc((size_t)ap->nblocks_out + 1)) != NULL;
    if (ok)
        for (int r = 0; r < CPU_KT; r++) w->ones[r] = 1.0f;
    return ok;
}

static void bw_scratch_free(bw_scratch *w) {
    float *bufs[] = {w->qf, w->df, w->acc, w->dkt, w->dvt, w->s, w->dp, w->p, w->ds, w->pt,
                     w->dst, w->m, w->l, w->alpha, w->ones, w->lse, w->delta, w->pscale, w->cache};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(w->kmask);
    free(w->sel);
    free(w->q16);
    free(w->d16);
}

static void *bw_tile_kp(const bw_ctx *c, int64_t tau) {
    return (char *)c->hd.kp + (size_t)tau * CPU_KT * c->ap->D * c->kv_es;
}
static void *bw_tile_vp(const bw_ctx *c, int64_t tau) {
    return (char *)c->hd.vp + (size_t)tau * CPU_KT * c->ap->D * c->kv_es;
}
static float *bw_tile_kr(const bw_ctx *c, int64_t tau) { return c->hd.kr + (size_t)tau * CPU_KT * c->ap->D; }

/* tile tau of KV head g of sequence s into c->hd: K packed and row-major, V packed (zeros past the
 * sequence's keys) */
static void bw_pack_tile(const bw_ctx *c, const infllm_seq *s, int32_t g, int64_t tau) {
    const infllm_attn_params *ap = c->ap;
    const int64_t key0 = tau * CPU_KT, kend = s->lk < key0 + CPU_KT ? s->lk : key0 + CPU_KT;
    if (kend < key0 + CPU_KT) { /* a tile past the last key: zeroed whole (contiguous), then its keys packed */
        const size_t tb = (size_t)CPU_KT * ap->D * sizeof(float);
        memset(bw_tile_kp(c, tau), 0, (size_t)CPU_KT * ap->D * c->kv_es);
        memset(bw_tile_vp(c, tau), 0, (size_t)CPU_KT * ap->D * c->kv_es);
        memset(bw_tile_kr(c, tau), 0, tb);
    }
    for (int64_t key = key0; key < kend; key++) {
        const size_t src = (size_t)((s->k0 + key) * ap->kv_tok + g * ap->kv_head) * c->es;
        const char *ks = (const char *)c->k + src, *vs = (const char *)c->v + src;
        if (c->dot) {
            cpu_pack_row_dot16(ap->D, c->hd.kp, key, (const uint16_t *)ks);
            cpu_pack_row_dot16(ap->D, c->hd.vp, key, (const uint16_t *)vs);
            c->kern->load(c->hd.kr + (size_t)key * ap->D, ks, ap->dtype, ap->D);
        } else {
            cpu_pack_row(c->kern, ap->dtype, ap->D, c->hd.kp, c->hd.kr, key, ks, ks);
            cpu_pack_row(c->kern, ap->dtype, ap->D, c->hd.vp, NULL, key, vs, NULL);
        }
        /* the row-major copy feeds dq += dS K only: a NaN / inf element there would reach, as 0 x NaN, the rows whose
         * masked dS is 0 (before session 64 the rows of its tile before the key); zeroed, it does not, and a row
         * that sees the key still gets NaN, from its NaN score's dS (REF's rule) */
        float *kr = c->hd.kr + (size_t)key * ap->D;
        for (int32_t d = 0; d < ap->D; d++)
            if (!isfinite(kr[d])) kr[d] = 0.0f;
    }
}

/* heads [h0, h0 + nh) of token t into rows r0.. of the q / dout scratch, with their lse (and Delta and
 * the normalisation; else a normalisation of 1) */
static void bw_load_rows(const bw_ctx *c, bw_scratch *w, int64_t t, int32_t h0, int32_t nh, int32_t r0,
                         int with_delta) {
    const infllm_attn_params *ap = c->ap;
    const int32_t D = ap->D;
    c->kern->load(w->qf + (size_t)r0 * D, (const char *)c->q + (size_t)(t * ap->q_tok + h0 * ap->q_head) * c->es,
                  ap->dtype, (int64_t)nh * D);
    c->kern->load(w->df + (size_t)r0 * D, (const char *)c->dout + (size_t)(t * ap->o_tok + h0 * ap->o_head) * c->es,
                  ap->dtype, (int64_t)nh * D);
    if (c->dot) { /* the dtype's own bf16 values */
        memcpy(w->q16 + (size_t)r0 * D, (const char *)c->q + (size_t)(t * ap->q_tok + h0 * ap->q_head) * c->es,
               (size_t)nh * D * sizeof(uint16_t));
        memcpy(w->d16 + (size_t)r0 * D, (const char *)c->dout + (size_t)(t * ap->o_tok + h0 * ap->o_head) * c->es,
               (size_t)nh * D * sizeof(uint16_t));
    }
    for (int32_t i = 0; i < nh; i++) {
        w->lse[r0 + i] = c->lse[t * ap->Hq + h0 + i];
        w->delta[r0 + i] = with_delta ? c->delta[t * ap->Hq + h0 + i] : 0.0f;
        w->pscale[r0 + i] = with_delta ? c->pnorm[t * ap->Hq + h0 + i] : 1.0f;
    }
}

/* S, dP and P of rows [0, R) against tile tau; row r sees the keys of kmask[r]; P row r is multiplied
 * by pscale[r] */
static void bw_scores(const bw_ctx *c, bw_scratch *w, int32_t R, int64_t tau) {
    const infllm_attn_params *ap = c->ap;
    if (c->dot) {
        c->dot->qk16(w->q16, ap->D, NULL, R, ap->D, bw_tile_kp(c, tau), CPU_KT / CPU_KG, w->s);
        c->dot->qk16(w->d16, ap->D, NULL, R, ap->D, bw_tile_vp(c, tau), CPU_KT / CPU_KG, w->dp);
    } else {
        c->kern->qk(w->qf, ap->D, NULL, R, ap->D, bw_tile_kp(c, tau), CPU_KT / CPU_KG, w->s);
        c->kern->qk(w->df, ap->D, NULL, R, ap->D, bw_tile_vp(c, tau), CPU_KT / CPU_KG, w->dp);
    }
    /* P = exp(scale s - lse) = 2^((s - lse / scale) sl2): the row's lse / scale is subtracted from
     * S first (one rounding, of a value near 0 for the keys that matter; the rounding of lse / scale
     * is the same for the whole row, which the normalisation removes), then the softmax kernel runs
     * with the row max set to 0 (>= every shifted score up to rounding: a row whose max passes it
     * gets alpha < 1, undone below) */
    for (int32_t r = 0; r < R; r++) {
        const int fin = isfinite(w->lse[r]) || isnan(w->lse[r]); /* a NaN lse (a NaN score) makes the row NaN, as REF */
        float shift = fin ? w->lse[r] / ap->scale : 0.0f;
        /* a finite lse over a tiny scale (softmax_scale ~1e-38 and below: lse ~ log(keys), lse / scale past FLT_MAX)
         * is inf, and s - inf made every P 0: gradients 0 where the softmax is about uniform. Any shift that keeps
         * the exponents in range gives the same normalised P (pass A divides by the recomputed sum), and
         * -FLT_MAX .. FLT_MAX scaled by such a scale is a few units: clamp it */
        if (isinf(shift)) shift = shift > 0 ? FLT_MAX : -FLT_MAX;
        float *sr = w->s + (size_t)r * CPU_KT;
        for (int n = 0; n < CPU_KT; n++) sr[n] -= shift;
        w->m[r] = fin ? 0.0f : -INFINITY;
        w->l[r] = 0.0f;
        if (!fin) w->kmask[r] = 0; /* a row without keys: P = 0 */
    }
    c->kern->softmax(w->s, R, CPU_KT, w->kmask, ap->scale * BW_LOG2E, w->m, w->l, w->alpha, w->p);
    for (int32_t r = 0; r < R; r++) {
        const float mul = w->kmask[r] && w->alpha[r] != 1.0f ? w->pscale[r] / w->alpha[r] : w->pscale[r];
        if (w->kmask[r] && mul != 1.0f) {
            float *pr = w->p + (size_t)r * CPU_KT;
            if (isfinite(mul))
                for (int n = 0; n < CPU_KT; n++) pr[n] *= mul;
            else /* a NaN row's normalisation (pass B): its masked keys keep P = 0 (0 x NaN was NaN), as REF's */
                for (int n = 0; n < CPU_KT; n++) pr[n] = pr[n] == 0.0f ? 0.0f : pr[n] * mul;
        }
    }
}

/* bits [lo, hi) of a tile's 64 keys (lo / hi relative to its first key, clipped to [0, 64)) */
static uint64_t bw_key_bits(int64_t lo, int64_t hi) {
    if (lo < 0) lo = 0;
    if (hi > CPU_KT) hi = CPU_KT;
    if (hi <= lo) return 0;
    return (hi >= 64 ? ~0ull : (1ull << hi) - 1) & ~((1ull << lo) - 1);
}

/* the keys of block b in the tile whose first key is key0 */
static uint64_t bw_block_bits(const bw_ctx *c, int64_t b, int64_t key0) {
    return bw_key_bits(b * c->ap->B - key0, (b + 1) * c->ap->B - key0);
}

/* the keys of tile tau a token at position pos attends, given its selected blocks (sel; NULL:
 * dense): bit j for key 64 tau + j */
static uint64_t bw_tile_mask(const bw_ctx *c, const unsigned char *sel, int64_t tau, int64_t pos) {
    const int64_t key0 = tau * CPU_KT;
    /* causal, and not before the sliding window */
    const uint64_t m = bw_key_bits(infllm_window_start(pos, c->ap->window) - key0, pos - key0 + 1);
    if (!m || !sel) return m;
    uint64_t keep = 0;
    for (int64_t b = key0 / c->ap->B; b * c->ap->B <= pos && b * c->ap->B < key0 + CPU_KT; b++)
        if (sel[b]) keep |= bw_block_bits(c, b, key0);
    return m & keep;
}

/* the key masks of tile tau for tokens at positions pos0 .. pos0 + ntok - 1 into kms; returns their OR
 * (0: no token attends the tile) */
static uint64_t bw_token_masks(const bw_ctx *c, const unsigned char *sel, int64_t tau, int64_t pos0, int32_t ntok,
                               uint64_t *kms) {
    uint64_t any = 0;
    for (int32_t tt = 0; tt < ntok; tt++) {
        kms[tt] = bw_tile_mask(c, sel, tau, pos0 + tt);
        any |= kms[tt];
    }
    return any;
}

/* 1 when one of the n floats of a or b is a NaN or an inf (an exponent field of all ones) */
static int bw_nonfinite(const float *a, const float *b, int32_t n) {
    uint32_t e = 0;
    for (int32_t d = 0; d < n; d++) {
        uint32_t ua, ub;
        memcpy(&ua, &a[d], 4);
        memcpy(&ub, &b[d], 4);
        ua &= 0x7f800000u, ub &= 0x7f800000u;
        e = ua > e ? ua : e;
        e = ub > e ? ub : e;
    }
    return e == 0x7f800000u;
}

/* Pass A for tokens [i0, i0 + ntok) of sequence s and heads [h0, h0 + nh) of each (KV head g), row
 * tt nh + hh: Delta, then dq. Several tokens only without a selection (dense: they share every tile
 * but the diagonal one, which each row masks for itself). */
static void bw_rows(const bw_ctx *c, bw_scratch *w, const infllm_seq *s, int32_t i0, int32_t ntok, int32_t g,
                    int32_t h0, int32_t nh) {
    const infllm_attn_params *ap = c->ap;
    const int32_t D = ap->D, R = ntok * nh;
    const int64_t pos0 = (int64_t)s->lk - s->lq + i0, pos_last = pos0 + ntok - 1;
    const size_t tile_floats = (size_t)2 * R * CPU_KT;
    const unsigned char *sel = NULL;
    if (c->topk) { /* one token */
        memset(w->sel, 0, (size_t)s->nblocks);
        const int32_t *row = c->topk + ((int64_t)g * ap->total_q + s->q0 + i0) * c->cols;
        for (int32_t e = 0; e < c->cols; e++)
            if (row[e] >= 0 && row[e] < s->nblocks) w->sel[row[e]] = 1;
        sel = w->sel;
    }
    for (int32_t tt = 0; tt < ntok; tt++)
        bw_load_rows(c, w, s->q0 + i0 + tt, h0, nh, tt * nh, 0); /* pscale 1 for the first sweep */
    for (int32_t r = 0; r < R; r++) /* for pass B (bw_tile_rows), once a row here rather than once a tile there */
        c->rowbad[(s->q0 + i0 + r / nh) * ap->Hq + h0 + r % nh] =
            (unsigned char)bw_nonfinite(w->qf + (size_t)r * D, w->df + (size_t)r * D, D);
    double delta[CPU_KT], psum[CPU_KT];
    for (int32_t r = 0; r < R; r++) delta[r] = psum[r] = 0.0;
    memset(w->acc, 0, (size_t)R * D * sizeof(float));
    const int64_t last_tile = pos_last / CPU_KT, first_tile = infllm_window_start(pos0, ap->window) / CPU_KT;
    uint64_t kms[CPU_KT]; /* the tokens' key masks of the tile in hand (token tt's for its nh rows) */
    /* sweep 1: sum P dP and sum P (P unnormalised), and P / dP of each tile into the cache while it fits */
    int32_t ntile = 0, cached = 0;
    for (int64_t tau = first_tile; tau <= last_tile; tau++) {
        if (!bw_token_masks(c, sel, tau, pos0, ntok, kms)) continue;
        for (int32_t r = 0; r < R; r++) w->kmask[r] = kms[r / nh];
        bw_scores(c, w, R, tau);
        for (int32_t r = 0; r < R; r++) {
            const float *pr = w->p + (size_t)r * CPU_KT, *dr = w->dp + (size_t)r * CPU_KT;
            double acc = 0.0, sum = 0.0;
            for (int32_t j = 0; j < CPU_KT; j++) {
                /* a masked key (P 0) adds nothing, also where its dP is NaN (a NaN value row): REF skips it */
                acc += pr[j] == 0.0f ? 0.0 : (double)pr[j] * dr[j];
                sum += pr[j];
            }
            delta[r] += acc;
            psum[r] += sum;
        }
        const size_t need = (size_t)(ntile + 1) * tile_floats;
        if (cached == ntile && need * sizeof(float) <= c->cache_bytes) {
            if (need > w->cache_floats) {
                float *grown = realloc(w->cache, (need + need / 2) * sizeof(float));
                if (grown) {
                    w->cache = grown;
                    w->cache_floats = need + need / 2;
                }
            }
            if (need <= w->cache_floats) {
                float *dst = w->cache + (size_t)ntile * tile_floats;
                memcpy(dst, w->p, (size_t)R * CPU_KT * sizeof(float));
                memcpy(dst + (size_t)R * CPU_KT, w->dp, (size_t)R * CPU_KT * sizeof(float));
                cached++;
            }
        }
        ntile++;
    }
    /* the row's normalisation: Delta = sum P dP / sum P, and P / sum P from here on */
    float deltaf[CPU_KT];
    for (int32_t r = 0; r < R; r++) {
        /* !(psum <= 0): a NaN sum stays NaN (REF's P = exp / sum), 0 is a row without keys */
        w->pscale[r] = !(psum[r] <= 0.0) ? (float)(1.0 / psum[r]) : 0.0f;
        deltaf[r] = !(psum[r] <= 0.0) ? (float)(delta[r] / psum[r]) : 0.0f;
    }
    /* sweep 2: dS = scale P (dP - Delta) with P normalised, dq += dS K */
    const float scale = ap->scale;
    int32_t tile = 0;
    for (int64_t tau = first_tile; tau <= last_tile; tau++) {
        if (!bw_token_masks(c, sel, tau, pos0, ntok, kms)) continue;
        const float *p = w->p, *dp = w->dp;
        float pmul[CPU_KT]; /* the normalisation still to apply to this tile's P (cached: unnormalised) */
        if (tile < cached) {
            p = w->cache + (size_t)tile * tile_floats;
            dp = p + (size_t)R * CPU_KT;
            for (int32_t r = 0; r < R; r++) pmul[r] = w->pscale[r];
        } else {
            for (int32_t r = 0; r < R; r++) {
                w->kmask[r] = kms[r / nh];
                pmul[r] = 1.0f;
            }
            bw_scores(c, w, R, tau); /* normalised by pscale */
        }
        tile++;
        for (int32_t r = 0; r < R; r++)
            for (int32_t j = 0; j < CPU_KT; j++) {
                const size_t e = (size_t)r * CPU_KT + j;
                w->ds[e] = p[e] == 0.0f ? 0.0f : scale * (p[e] * pmul[r]) * (dp[e] - deltaf[r]);
            }
        c->kern->pv(w->acc, NULL, R, D, w->ones, w->ds, bw_tile_kr(c, tau), CPU_KT);
    }
    for (int32_t tt = 0; tt < ntok; tt++) {
        const int64_t t = s->q0 + i0 + tt;
        for (int32_t hh = 0; hh < nh; hh++) {
            c->delta[t * ap->Hq + h0 + hh] = deltaf[tt * nh + hh];
            c->pnorm[t * ap->Hq + h0 + hh] = w->pscale[tt * nh + hh];
        }
        c->kern->store((char *)c->dq + (size_t)(t * ap->q_tok + h0 * ap->q_head) * c->es, ap->dtype,
                       w->acc + (size_t)tt * nh * D, 1.0f, (int64_t)nh * D);
    }
}

/* The CSR table of pass B for one (sequence, KV head): for block b, the sequence's tokens that
 * selected it (each once, ascending) and see at least its first key: tok[off[b] .. off[b + 1]). */
typedef struct bw_csr {
    int64_t *off;  /* [nb + 1] */
    int32_t *tok;  /* [off[nb]] */
} bw_csr;

static int bw_csr_build(const bw_ctx *c, const infllm_seq *s, int32_t g, bw_csr *x) {
    const infllm_attn_params *ap = c->ap;
    const int32_t nb = s->nblocks;
    x->off = calloc((size_t)nb + 2, sizeof *x->off);
    int32_t *last = malloc(((size_t)nb + 1) * sizeof *last);
    int64_t *fill = malloc(((size_t)nb + 1) * sizeof *fill);
    x->tok = NULL;
    int ok = x->off && last && fill;
    for (int pass = 0; pass < 2 && ok; pass++) {
        if (pass == 1) { /* offsets from the counts */
            for (int32_t b = 0; b < nb; b++) x->off[b + 1] += x->off[b];
            x->tok = malloc(((size_t)x->off[nb] + 1) * sizeof *x->tok);
            if (!x->tok) {
                ok = 0;
                break;
            }
            memcpy(fill, x->off, (size_t)nb * sizeof *fill);
        }
        for (int32_t b = 0; b < nb; b++) last[b] = -1;
        for (int32_t i = 0; i < s->lq; i++) {
            const int64_t pos = (int64_t)s->lk - s->lq + i;
            const int32_t *row = c->topk + ((int64_t)g * ap->total_q + s->q0 + i) * c->cols;
            for (int32_t e = 0; e < c->cols; e++) {
                const int32_t b = row[e];
                if (b < 0 || b >= nb || (int64_t)b * ap->B > pos || last[b] == i) continue;
                last[b] = i;
                if (pass == 0)
                    x->off[b + 1]++;
                else
                    x->tok[fill[b]++] = i;
            }
        }
    }
    free(last);
    free(fill);
    return ok;
}

static void bw_csr_free(bw_csr *x) {
    free(x->off);
    free(x->tok);
}

/* transposes rows [0, R) x columns [0, CPU_KT) of a into at (at[j][r], row stride CPU_KT) */
static void bw_transpose(const float *a, int32_t R, float *at) {
    for (int32_t r = 0; r < R; r++)
        for (int32_t j = 0; j < CPU_KT; j++) at[(size_t)j * CPU_KT + r] = a[(size_t)r * CPU_KT + j];
}

/* dk / dv of tile tau's keys from rows [0, R) (their q / dout / lse / Delta and kmask loaded; row r is head
 * rhead[r] of token rtok[r]) */
static void bw_tile_rows(const bw_ctx *c, bw_scratch *w, int32_t R, int64_t tau, const int64_t *rtok,
                         const int32_t *rhead) {
    const infllm_attn_params *ap = c->ap;
    const int32_t D = ap->D;
    const float scale = ap->scale;
    bw_scores(c, w, R, tau);
    for (int32_t r = 0; r < R; r++)
        for (int32_t j = 0; j < CPU_KT; j++) {
            const size_t e = (size_t)r * CPU_KT + j;
            w->ds[e] = w->p[e] == 0.0f ? 0.0f : scale * w->p[e] * (w->dp[e] - w->delta[r]);
        }
    bw_transpose(w->p, R, w->pt);
    bw_transpose(w->ds, R, w->dst);
    /* A row whose q or dout holds a NaN / inf gave it to every key of the tile in the products below, also to the keys
     * it does not attend (P = dS = 0 times NaN: dk / dv NaN where REF's, which skips them, are finite). Such rows
     * enter the products as zeros, then are added for the keys they attend only. */
    uint64_t bad = 0; /* pass A marked the rows (a scan of each row here, once a tile, cost ~9% of a sparse backward) */
    for (int32_t r = 0; r < R; r++)
        if (c->rowbad[rtok[r] * ap->Hq + rhead[r]]) bad |= 1ull << r;
    for (int32_t r = 0; r < R; r++)
        if (bad >> r & 1) {
            memset(w->qf + (size_t)r * D, 0, (size_t)D * sizeof(float));
            memset(w->df + (size_t)r * D, 0, (size_t)D * sizeof(float));
        }
    c->kern->pv(w->dvt, NULL, CPU_KT, D, w->ones, w->pt, w->df, R);
    c->kern->pv(w->dkt, NULL, CPU_KT, D, w->ones, w->dst, w->qf, R);
    for (int32_t r = 0; r < R && bad; r++) {
        if (!(bad >> r & 1)) continue;
        float qr[256], dr[256]; /* D <= 256 */
        c->kern->load(qr, (const char *)c->q + (size_t)(rtok[r] * ap->q_tok + rhead[r] * ap->q_head) * c->es, ap->dtype, D);
        c->kern->load(dr, (const char *)c->dout + (size_t)(rtok[r] * ap->o_tok + rhead[r] * ap->o_head) * c->es,
                      ap->dtype, D);
        for (int32_t j = 0; j < CPU_KT; j++) {
            const float pj = w->pt[(size_t)j * CPU_KT + r], dsj = w->dst[(size_t)j * CPU_KT + r];
            if (pj != 0.0f)
                for (int32_t d = 0; d < D; d++) w->dvt[(size_t)j * D + d] += pj * dr[d];
            if (dsj != 0.0f)
                for (int32_t d = 0; d < D; d++) w->dkt[(size_t)j * D + d] += dsj * qr[d];
        }
    }
}

/* Pass B for tile tau of KV head g of sequence s: dk / dv of its keys from the tokens that attend
 * any of them (csr NULL: dense). The tokens come in ascending order, merged from the lists of the
 * blocks that overlap the tile, each with its mask of the tile's keys. */
static void bw_tile(const bw_ctx *c, bw_scratch *w, const infllm_seq *s, const bw_csr *csr, int32_t g, int64_t tau) {
    const infllm_attn_params *ap = c->ap;
    const int32_t G = ap->G, D = ap->D, B = ap->B;
    const int64_t key0 = tau * CPU_KT, n = s->lk - key0 < CPU_KT ? s->lk - key0 : CPU_KT;
    memset(w->dkt, 0, (size_t)CPU_KT * D * sizeof(float));
    memset(w->dvt, 0, (size_t)CPU_KT * D * sizeof(float));
    const int32_t hchunk = G < CPU_KT ? G : CPU_KT;
    /* the blocks overlapping the tile (at most 65: B >= 1) and a cursor into each one's token list */
    int64_t cur[CPU_KT + 1], end[CPU_KT + 1];
    const int32_t b0 = (int32_t)(key0 / B), b1 = (int32_t)((key0 + n - 1) / B);
    const int32_t nbt = b1 - b0 + 1;
    if (csr)
        for (int32_t k = 0; k < nbt; k++) {
            cur[k] = csr->off[b0 + k];
            end[k] = csr->off[b0 + k + 1];
        }
    int64_t next_dense = (int64_t)key0 - ((int64_t)s->lk - s->lq); /* dense: the first token reaching key0 */
    if (next_dense < 0) next_dense = 0;
    int64_t dense_end = s->lq; /* dense: past the last token whose sliding window reaches the tile */
    if (ap->window > 0 && key0 + n - 1 + ap->window - ((int64_t)s->lk - s->lq) < dense_end)
        dense_end = key0 + n - 1 + ap->window - ((int64_t)s->lk - s->lq);
    int32_t R = 0;
    int64_t rtok[CPU_KT]; /* the token and head of each row in hand */
    int32_t rhead[CPU_KT];
    for (;;) {
        int32_t i;
        uint64_t km;
        if (csr) { /* the smallest token at the head of any list, and the blocks it selected */
            i = INT32_MAX;
            for (int32_t k = 0; k < nbt; k++)
                if (cur[k] < end[k] && csr->tok[cur[k]] < i) i = csr->tok[cur[k]];
            if (i == INT32_MAX) break;
            uint64_t keep = 0;
            for (int32_t k = 0; k < nbt; k++)
                if (cur[k] < end[k] && csr->tok[cur[k]] == i) {
                    cur[k]++;
                    keep |= bw_block_bits(c, b0 + k, key0);
                }
            const int64_t pos = (int64_t)s->lk - s->lq + i;
            km = keep & bw_tile_mask(c, NULL, tau, pos);
        } else {
            if (next_dense >= dense_end) break;
            i = (int32_t)next_dense++;
            km = bw_tile_mask(c, NULL, tau, (int64_t)s->lk - s->lq + i);
        }
        if (!km) continue;
        const int64_t t = s->q0 + i;
        for (int32_t h = 0; h < G; h += hchunk) {
            const int32_t nh = G - h < hchunk ? G - h : hchunk;
            if (R + nh > CPU_KT) {
                bw_tile_rows(c, w, R, tau, rtok, rhead);
                R = 0;
            }
            bw_load_rows(c, w, t, g * G + h, nh, R, 1);
            for (int32_t r = 0; r < nh; r++) {
                w->kmask[R + r] = km;
                rtok[R + r] = t;
                rhead[R + r] = g * G + h + r;
            }
            R += nh;
        }
    }
    if (R) bw_tile_rows(c, w, R, tau, rtok, rhead);
    for (int64_t j = 0; j < n; j++) {
        const size_t row = (size_t)((s->k0 + key0 + j) * ap->kv_tok + g * ap->kv_head);
        c->kern->store((char *)c->dk + row * c->es, ap->dtype, w->dkt + (size_t)j * D, 1.0f, D);
        c->kern->store((char *)c->dv + row * c->es, ap->dtype, w->dvt + (size_t)j * D, 1.0f, D);
    }
}

/* pass A's row batches: a token's G heads in chunks of at most CPU_KT, tok_batch tokens a batch */
#define BW_HCHUNK(G) ((G) < CPU_KT ? (G) : CPU_KT)

/* pass A task `task` of KV head g of sequence s: heads chunk task % nhc of tokens from (task / nhc) tok_batch */
static void bw_task_a(const bw_ctx *c, bw_scratch *w, const infllm_seq *s, int32_t g, int64_t task, int32_t tok_batch) {
    const int32_t G = c->ap->G, hchunk = BW_HCHUNK(G), nhc = (G + hchunk - 1) / hchunk;
    const int32_t hc = (int32_t)(task % nhc);
    const int32_t nh = G - hc * hchunk < hchunk ? G - hc * hchunk : hchunk;
    const int32_t i0 = (int32_t)(task / nhc) * tok_batch;
    const int32_t ntok = s->lq - i0 < tok_batch ? s->lq - i0 : tok_batch;
    bw_rows(c, w, s, i0, ntok, g, g * G + hc * hchunk, nh);
}

infllm_status cpu_attn_backward(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                const int32_t *topk_idx /* [Hkv, total_q, topk_cols] or NULL: dense */,
                                int32_t topk_cols, const float *lse /* [total_q, Hq] */, const void *dout,
                                void *dq, void *dk, void *dv) {
    bw_ctx c;
    memset(&c, 0, sizeof c);
    c.ap = ap;
    c.kern = cpu_kern_get();
    c.dot = cpu_dot16_for(ap->dtype);
    c.kv_es = c.dot ? sizeof(uint16_t) : sizeof(float);
    c.q = q, c.k = k, c.v = v, c.dout = dout;
    c.topk = topk_idx, c.cols = topk_cols, c.lse = lse;
    c.dq = dq, c.dk = dk, c.dv = dv;
    c.es = infllm_dtype_size(ap->dtype);
    const char *cache_env = getenv("INFLLM_CPU_BW_CACHE_BYTES");
    c.cache_bytes = cache_env ? (size_t)strtoull(cache_env, NULL, 10) : BW_CACHE_BYTES;
    const int nth = ap->num_threads > 0 ? ap->num_threads : 1;
    (void)nth; /* without OpenMP */
    if (ap->B < 1) return infllm_set_error(INFLLM_ERR_PARAM, "attention backward: block size %d", ap->B);
    /* the packed K / V of the largest sequence (one KV head at a time) and Delta */
    const int64_t max_tiles = ((int64_t)ap->max_lk + CPU_KT - 1) / CPU_KT;
    const size_t tile_floats = (size_t)CPU_KT * ap->D;
    c.hd.kp = malloc(((size_t)max_tiles * tile_floats + 1) * c.kv_es);
    c.hd.vp = malloc(((size_t)max_tiles * tile_floats + 1) * c.kv_es);
    c.hd.kr = malloc(((size_t)max_tiles * tile_floats + 1) * sizeof(float));
    c.delta = malloc(((size_t)ap->total_q * ap->Hq + 1) * sizeof(float));
    c.pnorm = malloc(((size_t)ap->total_q * ap->Hq + 1) * sizeof(float));
    c.rowbad = malloc((size_t)ap->total_q * ap->Hq + 1);
    int fail = !c.hd.kp || !c.hd.vp || !c.hd.kr || !c.delta || !c.pnorm || !c.rowbad;
    /* pass A's row batches: a token's G heads in chunks of at most CPU_KT; without a selection (dense)
     * CPU_KT / G consecutive tokens share a batch (their tiles are the same but the diagonal one) */
    const int32_t hchunk = BW_HCHUNK(ap->G), nhc = (ap->G + hchunk - 1) / hchunk;
    const int32_t tok_batch = topk_idx ? 1 : CPU_KT / hchunk;
    /* One thread team for the call, each thread's scratch allocated once. A (sequence, KV head) pair of at most
     * one 64-key tile runs whole on one thread, its K / V packed into that thread's own tile, with no team barrier
     * (a varlen batch of many short sequences paid a team start and the scratch's allocations a pair, ~100x the
     * pair's work: 20000 one-token sequences took 1.3-3.2 s against the forward's 0.46); the other pairs take the
     * whole team pass by pass: pack its tiles, pass A (dq, Delta), pass B (dk, dv), each loop's barrier between
     * them. Each task computes what it did alone, so the result does not depend on which thread ran it. */
    bw_csr csr = {NULL, NULL}; /* the large pair in hand's (built and freed by one thread) */
    int csr_fail = 0;
    const int64_t npairs = (int64_t)ap->num_seqs * ap->Hkv;
    if (!fail) {
#pragma omp parallel num_threads(cpu_team(nth)) reduction(| : fail)
        {
            bw_scratch w;
            bw_ctx own = c; /* the small pairs' context: this thread's tile */
            const size_t tf = (size_t)CPU_KT * ap->D + 1;
            own.hd.kp = malloc(tf * c.kv_es);
            own.hd.vp = malloc(tf * c.kv_es);
            own.hd.kr = malloc(tf * sizeof(float));
            const int ok = bw_scratch_init(&w, ap) && own.hd.kp && own.hd.vp && own.hd.kr;
            if (!ok) fail = 1; /* a thread without scratch skips its share of the tasks; every thread meets every barrier */
#pragma omp for schedule(dynamic, 8)
            for (int64_t pair = 0; pair < npairs; pair++) {
                const infllm_seq *s = &ap->seqs[pair / ap->Hkv];
                const int32_t g = (int32_t)(pair % ap->Hkv);
                if (!ok || s->lk > CPU_KT) continue;
                bw_csr mine = {NULL, NULL};
                if (topk_idx && !bw_csr_build(&own, s, g, &mine)) {
                    bw_csr_free(&mine);
                    fail = 1;
                    continue;
                }
                if (s->lk > 0) bw_pack_tile(&own, s, g, 0);
                const int64_t ntask_a = ((int64_t)s->lq + tok_batch - 1) / tok_batch * nhc;
                for (int64_t task = 0; task < ntask_a; task++) bw_task_a(&own, &w, s, g, task, tok_batch);
                if (s->lk > 0) bw_tile(&own, &w, s, topk_idx ? &mine : NULL, g, 0);
                bw_csr_free(&mine);
            }
            int stop = 0; /* csr_fail as this thread read it after a single's barrier (a read elsewhere could race the
                             next single's write and leave the team short of a thread at its barrier) */
            for (int32_t sb = 0; sb < ap->num_seqs && !stop; sb++) {
                const infllm_seq *s = &ap->seqs[sb];
                if (s->lk <= CPU_KT) continue;
                const int64_t ntile = ((int64_t)s->lk + CPU_KT - 1) / CPU_KT;
                const int64_t ntask_a = ((int64_t)s->lq + tok_batch - 1) / tok_batch * nhc;
                for (int32_t g = 0; g < ap->Hkv; g++) {
#pragma omp single
                    {
                        if (topk_idx && !bw_csr_build(&c, s, g, &csr)) {
                            bw_csr_free(&csr);
                            csr_fail = 1;
                        }
                    }
                    if ((stop = csr_fail)) break; /* read by every thread after the single's barrier */
#pragma omp for schedule(static)
                    for (int64_t tau = 0; tau < ntile; tau++)
                        if (ok) bw_pack_tile(&c, s, g, tau);
#pragma omp for schedule(dynamic, 4)
                    for (int64_t task = 0; task < ntask_a; task++)
                        if (ok) bw_task_a(&c, &w, s, g, task, tok_batch);
#pragma omp for schedule(dynamic, 1)
                    for (int64_t tau = 0; tau < ntile; tau++)
                        if (ok) bw_tile(&c, &w, s, topk_idx ? &csr : NULL, g, tau);
#pragma omp single
                    bw_csr_free(&csr);
                }
            }
            bw_scratch_free(&w);
            free(own.hd.kp);
            free(own.hd.vp);
            free(own.hd.kr);
        }
    }
    fail |= csr_fail;
    free(c.hd.kp);
    free(c.hd.vp);
    free(c.hd.kr);
    free(c.delta);
    free(c.pnorm);
    free(c.rowbad);
    if (fail) return infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (CPU attention backward)");
    return INFLLM_OK;
}
