/*
 * cuda_backward.cu: the backward of stage 2 (block-sparse attention with the selection held fixed, SPEC B
 * §9.3, A.1) and of dense causal attention on NVIDIA GPUs (sm_80+, mma.sync m16n8k16, bf16 / f16, head_dim
 * 64 / 128, any GQA group, varlen, any block size). The math is ref_backward.c's:
 *   P = softmax over a row's allowed keys,  dP_j = dO . v_j,  Delta = sum_j P_j dP_j,
 *   dS_j = P_j (dP_j - Delta),  dq = scale sum_j dS_j k_j,  dk_j = scale sum_rows dS_j q,  dv_j = sum_rows P_j dO.
 *
 * Rows are (query token, query head) pairs of one KV head: row rho = i G + hh of sequence-relative token i
 * and head g G + hh, as the forward's k_flash tiles them. Three passes, none with atomics on the gradients,
 * each gradient element written by one CTA with its sums in a fixed order (deterministic):
 *   1. the forward, recomputed by stage 2's / dense attention's own kernels (cuda_flash_delta_launch: k_flash90
 *      on sm_90a, else k_flash, split ones combined by k_combine; their tiles, token grouping and block lists),
 *      whose epilogue writes no O but Delta = rowsum(dO * O) from the unrounded f32 O and the log2 LSE
 *      ([total_q, Hq] f32 each; until session 60 Delta came from O rounded to the dtype, FlashAttention's,
 *      which a row that one key dominates cannot afford: test_cuda_backward's f16 case at softmax_scale 3.3 /
 *      sqrt(D) had dq and dk 4x the naive bound). The caller's lse is not read: the forward's own is
 *      recomputed, so any lse (or none that fits) gives the same gradients. The _out calls skip this pass:
 *      k_bwd_delta takes Delta from the caller's out (FlashAttention's way, rounded O) and its lse. (Until
 *      session 42 a statistics pass of this file's did it: 180 ms at 128K against the forward's 43.)
 *   2. dq: P = exp2(s - lse2), dS = P (dP - Delta) rounded to the dtype, dq += dS K, over the walk of pass 1:
 *      k_flash90<DQ> on wgmma where it runs (cuda_flash_dq_launch), else k_bwd_q (mma.sync: 64 rows a CTA, 4
 *      warps x 16, the union of their tokens' 64-key chunks in increasing order).
 *   3. k_bwd_kv: a CTA per piece of a (64-key chunk, KV head, sequence), 4 warps x 16 keys, over the rows of
 *      the tokens that attend any key of the chunk (sparse: a chunk-major bitmap of tokens built by k_bwd_bits
 *      from topk_idx; dense: every token at or after the chunk), NQ rows a step: S^T = K Q^T, dP^T = V dO^T,
 *      dv += P^T dO, dk += dS^T Q. Keys no row attends get 0. A chunk's tokens are cut into pieces of at most
 *      P (k_bwd_plan_*: the forced first block, which every token attends, would otherwise be the pass's
 *      critical path); pieces write f32 partials that k_bwd_kv_sum adds in piece order.
 * A warp skips the products of a chunk (pass 1-2) or a step (pass 3) where none of its rows sees a key.
 * FLOPs: 2 D per (row, allowed key) for each of the 9 products (4 in pass 3, 2 + 3 in passes 1-2),
 * against the forward's 2; passes 1-2 also walk the union of a tile's tokens (loads only: a warp whose
 * token did not select a chunk skips its products).
 */
#include "cuda_common.cuh"
#include "cuda_internal.cuh"
#include "cuda_sm90.cuh"
#include "bwd_plan.cuh"

namespace {

constexpr int BWD_ROWS = 64;   /* rows of a k_bwd_q CTA */
constexpr int BWD_WIN = 1024;  /* tokens a k_bwd_kv window lists at a time (32 bitmap words) */
/* k_bwd_kv's stages of step rows (Q, dout, lse2, Delta, key masks): 4 of 32 rows (d 128) or 64 (d 64) on
 * mma.sync; on wgmma (64 rows a step) 2 at d 128, where 2 CTAs an SM leave no room for more, 4 at d 64 */
template <int D, bool WG> __host__ __device__ constexpr int kv_stages() { return WG && D == 128 ? 2 : 4; }
template <int D, bool WG> __host__ __device__ constexpr int kv_rows() { return WG || D == 64 ? 64 : 32; }

/* 4-byte async copy global -> shared (.ca: .cg takes 16 bytes only); src_bytes 0 zero-fills */
__device__ __forceinline__ void cp_async4(void *smem, const void *gmem, int src_bytes) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(a), "l"(gmem), "r"(src_bytes));
}

struct BwdParams {
    const void *q, *k, *v, *dout;
    void *dq, *dk, *dv;
    float *lse2;  /* [total_q, Hq] log2 LSE of each row (pass 1 writes, 2-3 read) */
    float *delta; /* [total_q, Hq] */
    SeqDesc sd;
    int Hq, Hkv, G;
    float scale_log2, scale;
    const int32_t *topk; /* [Hkv, total_q, topk_cols] or NULL: dense */
    int topk_cols;
    int B;
    int window; /* sliding key window (d_window_start), 0: none */
    int tt;  /* k_bwd_q: most tokens a 64-row tile spans */
    int nbw; /* k_bwd_q: words of one token's block bitmap */
    int ncw; /* k_bwd_q: words of the tile's chunk bitmap */
    /* sparse k_bwd_kv: per KV head, the rows of sequence s start at word bits_off[s]; row c (chunk c) has
     * ceil(lq / 32) words, bit i of the row = sequence-relative token i attends a key of chunk c */
    uint32_t *bits;
    int64_t bits_head; /* words a KV head's rows take */
    int64_t *bits_off; /* [num_seqs + 1] */
    /* k_bwd_kv's work items (bwd_plan.cuh): chunk entry e = (b Hkv + g) max_chunks + c; a piece of a chunk of
     * several writes f32 partials [slot][64][D] (dk scaled, dv) that k_bwd_kv_sum adds in piece order */
    BwdPlan plan;
    /* pass 1 (the forward's kernel, cuda_flash_delta_launch, writing Delta and lse2) and the wgmma dq pass
     * (cuda_flash_dq_launch): their scratch (split partials or the token grouping table) */
    void *fwd_ws;
    size_t fwd_ws_bytes;
    /* the caller's forward output and lse (infllm_*_attention_backward_out), or NULL: pass 1 recomputes them */
    const void *fwd_out;
    const float *fwd_lse;
    int max_chunks;
    float *part_dk, *part_dv;
};

/* entry e -> chunk c, KV head g, sequence b */
__device__ __forceinline__ void bwd_entry(const BwdParams &p, int64_t e, int &c, int &g, int &b) {
    c = (int)(e % p.max_chunks);
    const int64_t bg = e / p.max_chunks;
    g = (int)(bg % p.Hkv);
    b = (int)(bg / p.Hkv);
}

/* the sparse bitmap row of chunk c of KV head g in sequence b (lq queries): ceil(lq / 32) words */
__device__ __forceinline__ const uint32_t *bwd_rowbits(const BwdParams &p, int g, int b, int c, int32_t lq) {
    return p.bits + g * p.bits_head + p.bits_off[b] + (int64_t)c * ((lq + 31) / 32);
}

__device__ __forceinline__ int bwd_chunk_next(const uint32_t *bits, int nwords, int from) {
    int w = from >> 5;
    if (w >= nwords) return -1;
    uint32_t m = bits[w] & (0xffffffffu << (from & 31));
    while (!m) {
        if (++w >= nwords) return -1;
        m = bits[w];
    }
    return w * 32 + __ffs(m) - 1;
}

/* 16 rows (this warp's, A operand from a swizzled [rows][D] tile at row0) times 64 keys (B operand, the
 * swizzled [64][D] tile sk): s[j] = columns 8 j .. 8 j + 7 */
template <typename T, int D>
__device__ __forceinline__ void mma_rows_keys(float (&s)[8][4], const uint16_t *sa, int row0, const uint16_t *sk,
                                              int lane) {
#pragma unroll
    for (int j = 0; j < 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk += 2) {
        uint32_t a0[4], a1[4];
        const int ar = row0 + (lane & 7) + ((lane >> 3) & 1) * 8;
        ldsm_x4(a0, sa + swz<D>(ar, 16 * kk + (lane >> 4) * 8));
        ldsm_x4(a1, sa + swz<D>(ar, 16 * (kk + 1) + (lane >> 4) * 8));
#pragma unroll
        for (int jg = 0; jg < 8; jg += 4) {
            uint32_t r[4][4];
#pragma unroll
            for (int x = 0; x < 4; x++) ldsm_x4(r[x], sk + swz<D>(8 * (jg + x) + (lane & 7), 16 * kk + (lane >> 3) * 8));
#pragma unroll
            for (int x = 0; x < 4; x++) {
                mma16816<T>(s[jg + x], a0, r[x][0], r[x][1]);
                mma16816<T>(s[jg + x], a1, r[x][2], r[x][3]);
            }
        }
    }
}

/* ------------------------------------------------------------------ passes 1-2 ---- */
template <typename T, int D, bool SPARSE>
__global__ void __launch_bounds__(128, 2) k_bwd_q(BwdParams p) {
    constexpr int NT = 128, CH = D / 8, DT_ = D / 8;
    constexpr int NS = 2; /* K / V stages (2 CTAs an SM at d 128) */
    extern __shared__ __align__(16) unsigned char smem[];
    uint16_t *sQ = (uint16_t *)smem;   /* [64][D] */
    uint16_t *sO = sQ + BWD_ROWS * D;  /* [64][D] dout rows */
    uint16_t *sKV = sO + BWD_ROWS * D; /* [NS stages][K 64 x D, V 64 x D] */
    uint32_t *sTok = (uint32_t *)(sKV + NS * 2 * 64 * D);
    uint32_t *sChunk = sTok + (SPARSE ? p.tt * p.nbw : 0);

    const int tile = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
    int64_t q0, k0;
    int32_t lq, lk;
    seq_get(p.sd, b, q0, lq, k0, lk);
    const int G = p.G;
    const int64_t nrows = (int64_t)lq * G, rho0 = (int64_t)tile * BWD_ROWS;
    if (rho0 >= nrows) return;
    const int i0 = (int)(rho0 / G);
    const int ilast = (int)min((rho0 + BWD_ROWS - 1) / G, (int64_t)lq - 1);
    const int ntok = ilast - i0 + 1;
    const int64_t shift = (int64_t)lk - lq; /* query i sits at position shift + i */
    const int64_t pos_last = shift + ilast;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;

    bool rvalid[2];
    int rtt[2];
    int64_t rpos[2], ridx[2]; /* position; index into [total_q, Hq] */
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        const int64_t rho = rho0 + warp * 16 + gid + 8 * ri;
        rvalid[ri] = rho < nrows;
        const int i = rvalid[ri] ? (int)(rho / G) : i0;
        rtt[ri] = i - i0;
        rpos[ri] = rvalid[ri] ? shift + i : -1;
        ridx[ri] = (q0 + i) * p.Hq + (int64_t)g * G + (int)(rho % G);
    }
    float rl[2] = {0.f, 0.f}, rd[2] = {0.f, 0.f};
#pragma unroll
    for (int ri = 0; ri < 2; ri++)
        if (rvalid[ri]) rl[ri] = p.lse2[ridx[ri]], rd[ri] = p.delta[ridx[ri]];

    /* Q and dout rows -> sQ, sO */
    {
        const uint16_t *qg = (const uint16_t *)p.q, *og = (const uint16_t *)p.dout;
        for (int x = tid; x < BWD_ROWS * CH; x += NT) {
            const int r = x / CH, c = x % CH;
            const int64_t rho = rho0 + r;
            const bool ok = rho < nrows;
            const int64_t off = ok ? ((q0 + rho / G) * p.Hq + (int64_t)g * G + rho % G) * D + c * 8 : 0;
            cp_async16(sQ + swz<D>(r, c * 8), qg + off, ok ? 16 : 0);
            cp_async16(sO + swz<D>(r, c * 8), og + off, ok ? 16 : 0);
        }
    }
    if (SPARSE) {
        for (int x = tid; x < p.tt * p.nbw + p.ncw; x += NT) sTok[x] = 0u;
        __syncthreads();
        const int32_t nb_seq = (lk + p.B - 1) / p.B;
        for (int x = tid; x < ntok * p.topk_cols; x += NT) {
            const int tt = x / p.topk_cols, kk = x % p.topk_cols;
            const int32_t blk = p.topk[((int64_t)g * p.sd.total_q + q0 + i0 + tt) * p.topk_cols + kk];
            const int64_t pos = shift + i0 + tt;
            /* a block past the token or wholly before its sliding window holds no key it sees */
            const int64_t kbeg = (int64_t)blk * p.B, wlo = d_window_start(pos, p.window);
            if (blk < 0 || blk >= nb_seq || kbeg > pos || kbeg + p.B <= wlo) continue;
            atomicOr(&sTok[tt * p.nbw + (blk >> 5)], 1u << (blk & 31));
            int64_t kend = kbeg + p.B - 1;
            if (kend > pos) kend = pos;
            for (int64_t c = max(kbeg, wlo) >> 6; c <= (kend >> 6); c++) atomicOr(&sChunk[c >> 5], 1u << (c & 31));
        }
        __syncthreads();
    }
    const int last_chunk = pos_last >= 0 ? (int)(pos_last >> 6) : -1;
    auto next_chunk = [&](int cc) {
        int n = SPARSE ? bwd_chunk_next(sChunk, p.ncw, cc + 1) : cc + 1;
        return n > last_chunk ? -1 : n;
    };
    /* dense: from the chunk of the tile's first window start (its first token's) */
    int c = SPARSE ? bwd_chunk_next(sChunk, p.ncw, 0) : (int)(d_window_start(shift + i0, p.window) >> 6);
    if (c > last_chunk) c = -1;

    const uint16_t *kg = (const uint16_t *)p.k + (k0 * p.Hkv + g) * D;
    const uint16_t *vg = (const uint16_t *)p.v + (k0 * p.Hkv + g) * D;
    const int64_t kvs = (int64_t)p.Hkv * D;
    auto load_chunk = [&](int cc, int st) {
        uint16_t *base = sKV + st * 2 * 64 * D;
        load_tile_async<D, 64, NT>(base, kg + (int64_t)cc * 64 * kvs, kvs, lk - cc * 64);
        load_tile_async<D, 64, NT>(base + 64 * D, vg + (int64_t)cc * 64 * kvs, kvs, lk - cc * 64);
    };
    /* the ring: chunk i of the walk in stage i % NS; NS - 1 chunks in flight ahead of the one computed */
    int nxt = c;
#pragma unroll
    for (int st = 0; st < NS - 1; st++) {
        if (nxt >= 0) {
            load_chunk(nxt, st);
            nxt = next_chunk(nxt);
        }
        cp_async_commit();
    }
    float acc[DT_][4]; /* dq rows */
#pragma unroll
    for (int j = 0; j < DT_; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    const bool b64 = (p.B & 63) == 0;
    int stage = 0;

    while (c >= 0) {
        if (nxt >= 0) {
            load_chunk(nxt, stage == 0 ? NS - 1 : stage - 1); /* the stage computed last iteration */
            nxt = next_chunk(nxt);
        }
        cp_async_commit();
        cp_async_wait<NS - 1>();
        __syncthreads();
        const uint16_t *sk = sKV + stage * 2 * 64 * D, *sv = sk + 64 * D;
        const int blk = SPARSE && b64 ? (int)(((int64_t)c * 64) / p.B) : 0;
        bool need = false;
#pragma unroll
        for (int ri = 0; ri < 2; ri++) {
            bool sel = rvalid[ri] && (int64_t)c * 64 <= rpos[ri] &&
                       (p.window == 0 || (int64_t)c * 64 + 62 + p.window >= rpos[ri]); /* reaches its window */
            if (SPARSE && b64 && sel) sel = (sTok[rtt[ri] * p.nbw + (blk >> 5)] >> (blk & 31)) & 1u;
            need = need || sel;
        }
        if (__any_sync(0xffffffffu, need)) {
            float s[8][4], dp[8][4];
            mma_rows_keys<T, D>(s, sQ, warp * 16, sk, lane);
            mma_rows_keys<T, D>(dp, sO, warp * 16, sv, lane);
#pragma unroll
            for (int ri = 0; ri < 2; ri++) {
                bool rowsel = true;
                const uint32_t *bits = sTok + rtt[ri] * p.nbw;
                if (SPARSE && b64) rowsel = (bits[blk >> 5] >> (blk & 31)) & 1u;
                const int64_t rel = rpos[ri] - (int64_t)c * 64 - 2 * tig;
                const int lim = rowsel && rvalid[ri] ? (int)max(min(rel, (int64_t)64), (int64_t)-1) : -1;
                /* the sliding window: key 8 j + e also only iff 8 j + e >= lo (clamped to [0, 64]) */
                const int lo = p.window > 0 ? (int)min(max(rel - p.window + 1, (int64_t)0), (int64_t)64) : 0;
#pragma unroll
                for (int j = 0; j < 8; j++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        bool ok = 8 * j + e <= lim && 8 * j + e >= lo;
                        if (SPARSE && !b64 && ok) {
                            const int bb = (int)(((int64_t)c * 64 + 8 * j + 2 * tig + e) / p.B);
                            ok = (bits[bb >> 5] >> (bb & 31)) & 1u;
                        }
                        if (!ok) s[j][2 * ri + e] = -INFINITY;
                    }
            }
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int ri = e >> 1;
                    const float pe = exp2f(s[j][e] * p.scale_log2 - rl[ri]);
                    s[j][e] = pe * (dp[j][e] - rd[ri]); /* dS */
                }
            mma_acc_rows<T, D, 4>(acc, s, sk, lane);
        }
        __syncthreads();
        stage = stage == NS - 1 ? 0 : stage + 1;
        c = next_chunk(c);
    }
    cp_async_wait<0>();

#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        if (!rvalid[ri]) continue;
        T *row = (T *)p.dq + ridx[ri] * D;
#pragma unroll
        for (int j = 0; j < DT_; j++)
            *reinterpret_cast<uint32_t *>(row + 8 * j + 2 * tig) =
                DT<T>::pack2(acc[j][2 * ri] * p.scale, acc[j][2 * ri + 1] * p.scale);
    }
}

/* pass 1 of the _out calls: the caller's forward gave each row's O (o_all, rounded to the dtype) and natural-log
 * lse. A warp a row: Delta = dout . O (FlashAttention's), lse2 = lse log2(e), a row without keys (lse -inf, O 0)
 * +inf and Delta 0, NaN kept. O's rounding enters Delta: within 2x the naive error of a 16-bit backward that
 * takes Delta from the same O, but in a row that one key dominates well above the call without out's, whose
 * pass 1 takes Delta from the recomputed forward's f32 O (cuda_flash_delta_launch; bench/bwd_delta_model.py). */
template <typename T, int D>
__global__ void __launch_bounds__(256) k_bwd_delta(BwdParams p, int64_t rows, const T *o_all, const float *lse) {
    const int64_t r = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const T *o = o_all + r * D, *d = (const T *)p.dout + r * D;
    float acc = 0.f;
#pragma unroll
    for (int x = lane; x < D; x += 32) acc += DT<T>::to_f(o[x]) * DT<T>::to_f(d[x]);
#pragma unroll
    for (int w = 16; w; w >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, w);
    if (lane == 0) {
        p.lse2[r] = bwd_lse2_of(lse[r]);
        p.delta[r] = acc;
    }
}

/* ------------------------------------------------------------------- pass 3 ---- */
/* the sparse rows' word offsets: bits_off[s] = sum over earlier sequences of ceil(lk / 64) ceil(lq / 32) */
__global__ void __launch_bounds__(256) k_bwd_bits_off(BwdParams p) {
    __shared__ int64_t part[256];
    const int n = p.sd.num_seqs, per = (n + 255) / 256, s0 = threadIdx.x * per, s1 = min(s0 + per, n);
    int64_t sum = 0;
    for (int s = s0; s < s1; s++) {
        int64_t q0, k0;
        int32_t lq, lk;
        seq_get(p.sd, s, q0, lq, k0, lk);
        sum += (int64_t)((lk + 63) / 64) * ((lq + 31) / 32);
    }
    part[threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
        int64_t run = 0;
        for (int x = 0; x < 256; x++) {
            const int64_t v = part[x];
            part[x] = run;
            run += v;
        }
        p.bits_off[n] = run;
    }
    __syncthreads();
    int64_t run = part[threadIdx.x];
    for (int s = s0; s < s1; s++) {
        int64_t q0, k0;
        int32_t lq, lk;
        seq_get(p.sd, s, q0, lq, k0, lk);
        p.bits_off[s] = run;
        run += (int64_t)((lk + 63) / 64) * ((lq + 31) / 32);
    }
}

/* a thread per (query token, KV head): sets its bit in the rows of the chunks its selected blocks reach
 * (clipped to its position); the rows were zeroed. OR is order-free: the bitmap is deterministic. */
__global__ void __launch_bounds__(128) k_bwd_bits(BwdParams p) {
    const int g = blockIdx.y, b = blockIdx.z;
    int64_t q0, k0;
    int32_t lq, lk;
    seq_get(p.sd, b, q0, lq, k0, lk);
    const int i = blockIdx.x * 128 + threadIdx.x;
    if (i >= lq) return;
    const int64_t pos = (int64_t)lk - lq + i;
    const int32_t nb_seq = (lk + p.B - 1) / p.B, words = (lq + 31) / 32;
    uint32_t *rows = p.bits + g * p.bits_head + p.bits_off[b];
    const int32_t *tk = p.topk + ((int64_t)g * p.sd.total_q + q0 + i) * p.topk_cols;
    for (int kk = 0; kk < p.topk_cols; kk++) {
        const int32_t blk = tk[kk];
        const int64_t kbeg = (int64_t)blk * p.B, wlo = d_window_start(pos, p.window);
        if (blk < 0 || blk >= nb_seq || kbeg > pos || kbeg + p.B <= wlo) continue;
        int64_t kend = kbeg + p.B - 1;
        if (kend > pos) kend = pos;
        for (int64_t c = max(kbeg, wlo) >> 6; c <= (kend >> 6); c++)
            atomicOr(&rows[c * words + (i >> 5)], 1u << (i & 31));
    }
}

/* plan 1, a warp per chunk entry: the tokens the chunk lists (-1: the chunk is past its sequence's keys) */
template <bool SPARSE>
__global__ void __launch_bounds__(256) k_bwd_plan_count(BwdParams p) {
    const int64_t e = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (e >= p.plan.nentries) return;
    int c, g, b;
    bwd_entry(p, e, c, g, b);
    int64_t q0, k0;
    int32_t lq, lk;
    seq_get(p.sd, b, q0, lq, k0, lk);
    if ((int64_t)c * 64 >= lk) {
        if (lane == 0) p.plan.cnt[e] = -1;
        return;
    }
    const int i_start = bwd_first_token(c, lq, lk);
    const int n = SPARSE ? bwd_plan_count_sparse(bwd_rowbits(p, g, b, c, lq), i_start, lq, lane)
                         : bwd_end_token(c, lq, lk, p.window) - i_start;
    if (lane == 0) p.plan.cnt[e] = n;
}

/* plan 2, one CTA */
__global__ void __launch_bounds__(BWD_PLAN_THREADS) k_bwd_plan_scan(BwdParams p) { bwd_plan_scan(p.plan, threadIdx.x); }

/* plan 3, a warp per entry: its items */
template <bool SPARSE>
__global__ void __launch_bounds__(256) k_bwd_plan_items(BwdParams p) {
    const int64_t e = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
    if (e >= p.plan.nentries) return;
    const int pc = p.plan.npieces[e];
    if (pc == 0) return;
    int c, g, b;
    bwd_entry(p, e, c, g, b);
    int64_t q0, k0;
    int32_t lq, lk;
    seq_get(p.sd, b, q0, lq, k0, lk);
    const uint32_t *rowbits = SPARSE ? bwd_rowbits(p, g, b, c, lq) : NULL;
    /* dense: the tokens up to the last whose window reaches the chunk (bwd_plan_items ends the last piece there) */
    bwd_plan_items(p.plan, e, pc, rowbits, bwd_first_token(c, lq, lk), SPARSE ? lq : bwd_end_token(c, lq, lk, p.window),
                   threadIdx.x & 31);
}

/* a wgmma A operand (k = 16 ks .. 16 ks + 15) from a C fragment of m64n(16 KS) (the forward's P from S) */
template <typename T, int KS>
__device__ __forceinline__ void kv_pack_a(uint32_t (&a)[KS][4], const float (&c)[2 * KS][4]) {
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
        a[ks][0] = DT<T>::pack2(c[2 * ks][0], c[2 * ks][1]);
        a[ks][1] = DT<T>::pack2(c[2 * ks][2], c[2 * ks][3]);
        a[ks][2] = DT<T>::pack2(c[2 * ks + 1][0], c[2 * ks + 1][1]);
        a[ks][3] = DT<T>::pack2(c[2 * ks + 1][2], c[2 * ks + 1][3]);
    }
}

/* WG (sm_90a on cc 9.0): the four products on wgmma, the 4 warps one warpgroup of M = 64 keys, NQ = 64 rows a
 * step (m64n64k16 for S^T and dP^T with K / V and the step's Q / dout rows from shared memory, K-major; dv and dk
 * m64nDk16 with P^T / dS^T from registers as the forward's P and dout / Q transposed by their descriptors, as its
 * V). The accumulator layouts are mma.sync's (warp w: keys 16 w + gid, + 8; columns 8 j + 2 tig + e), so the
 * masks, the softmax and the epilogue are shared. Tiles in the 128-byte swizzle layout (swz90), 1024-aligned. */
template <typename T, int D, bool SPARSE, bool WG>
__global__ void __launch_bounds__(128, 2) k_bwd_kv(BwdParams p) {
    constexpr int NQ = kv_rows<D, WG>(), KV_NS = kv_stages<D, WG>();
    constexpr int NT = 128, CH = D / 8, DT_ = D / 8, NJ = NQ / 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    unsigned char *smem =
        WG ? smem_raw + ((1024u - ((uint32_t)__cvta_generic_to_shared(smem_raw) & 1023u)) & 1023u) : smem_raw;
    /* the swizzled element offset of (row, col) in a step's Q or dout tile */
    auto swzt = [](int row, int col) { return WG ? swz90<NQ>(row, col) : swz<D>(row, col); };
    uint16_t *sK = (uint16_t *)smem;        /* [64][D] */
    uint16_t *sV = sK + 64 * D;             /* [64][D] */
    uint16_t *sRows = sV + 64 * D;          /* [KV_NS stages][Q NQ x D, dout NQ x D] */
    float *sLse = (float *)(sRows + KV_NS * 2 * NQ * D); /* [KV_NS][NQ] */
    float *sDel = sLse + KV_NS * NQ;                     /* [KV_NS][NQ] */
    uint64_t *sMask = (uint64_t *)(sDel + KV_NS * NQ);   /* [KV_NS][NQ] the row's keys of this chunk */
    uint64_t *sTokMask = sMask + KV_NS * NQ;         /* [BWD_WIN] */
    int32_t *sList = (int32_t *)(sTokMask + BWD_WIN); /* [BWD_WIN] sequence-relative tokens */
    int32_t *sCount = sList + BWD_WIN;

    if ((int)blockIdx.x >= p.plan.hdr[0]) return;
    const int4 item = p.plan.items[blockIdx.x];
    const int tok_lo = item.y, tok_hi = item.z, slot = item.w; /* listed tokens in [tok_lo, tok_hi) */
    int c, g, b;
    bwd_entry(p, item.x, c, g, b);
    int64_t q0, k0;
    int32_t lq, lk;
    seq_get(p.sd, b, q0, lq, k0, lk);
    const int G = p.G;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
    const int nkeys = min(64, lk - c * 64);
    const int64_t shift = (int64_t)lk - lq;

    const uint16_t *kg = (const uint16_t *)p.k + ((k0 + (int64_t)c * 64) * p.Hkv + g) * D;
    const uint16_t *vg = (const uint16_t *)p.v + ((k0 + (int64_t)c * 64) * p.Hkv + g) * D;
    const int64_t kvs = (int64_t)p.Hkv * D;
    if constexpr (WG) {
        load_tile90<D, 64, NT>(sK, kg, kvs, nkeys);
        load_tile90<D, 64, NT>(sV, vg, kvs, nkeys);
    } else {
        load_tile_async<D, 64, NT>(sK, kg, kvs, nkeys);
        load_tile_async<D, 64, NT>(sV, vg, kvs, nkeys);
    }
    cp_async_commit();

    float dk[DT_][4], dv[DT_][4];
#pragma unroll
    for (int j = 0; j < DT_; j++) {
        dk[j][0] = dk[j][1] = dk[j][2] = dk[j][3] = 0.f;
        dv[j][0] = dv[j][1] = dv[j][2] = dv[j][3] = 0.f;
    }
    const bool b64 = (p.B & 63) == 0;
    const int32_t nb_seq = (lk + p.B - 1) / p.B;
    const int words = (lq + 31) / 32;
    const uint32_t *rowbits = SPARSE ? bwd_rowbits(p, g, b, c, lq) : NULL;

    /* step loads: the next NQ rows of the window's (token, head) list (row rho = token j G + head hh) into stage
     * buffer bf. Thread (warp w, lane l) loads the 16-byte column cc = l % CH of the rows r0 + RS i (i < NI) of
     * each step, r0 = GPW w + l / CH. Each of those rows is owned by one lane of the warp (lane h NI + i owns row
     * GPW w + h + RS i; lanes past GPW NI repeat the first ones): it keeps that row's (j, hh) cursor, advanced NQ
     * rows a step without a division (G is a runtime value: a division a row was a third of the kernel's
     * instructions, session 43's ncu), loads its lse2 / Delta / key mask and hands its global row to the
     * loading lanes by a shuffle. Rows past the list are zero-filled with an empty key mask. */
    constexpr int RS = NT / CH, NI = NQ / RS, GPW = 32 / CH;
    static_assert(NT % CH == 0 && 32 % CH == 0, "k_bwd_kv: a thread's 16-byte column is the same in every row it loads");
    static_assert(NQ % RS == 0 && RS % 8 == 0, "k_bwd_kv: a thread's rows share their swizzle phase");
    static_assert(GPW * NI <= 32, "k_bwd_kv: a lane owns at most one of its warp's rows");
    constexpr int RSTRIDE = WG ? RS * 64 : RS * D; /* swzt(r + RS, c) - swzt(r, c) */
    const int r0 = tid / CH, cc = tid % CH;
    const int own = lane % (GPW * NI), own_r = GPW * warp + own / NI + RS * (own % NI); /* the row this lane owns */
    const int dj = NQ / G, dh = NQ % G; /* a step in the cursor */
    int cj = 0, ch = 0;                 /* own_r's cursor: set at each window's start */
    auto load_step = [&](int bf, int nlist) {
        const bool ok = cj < nlist;
        const int64_t row = ok ? q0 * p.Hq + (int64_t)g * G + (int64_t)sList[ok ? cj : 0] * p.Hq + ch : -1;
        /* the row's lse2 / Delta by cp.async too (a plain load would hold its warp until the data came, and the
         * CTA at the next barrier) */
        if (lane < GPW * NI) {
            cp_async4(sLse + bf * NQ + own_r, p.lse2 + (ok ? row : 0), ok ? 4 : 0);
            cp_async4(sDel + bf * NQ + own_r, p.delta + (ok ? row : 0), ok ? 4 : 0);
            sMask[bf * NQ + own_r] = ok ? sTokMask[ok ? cj : 0] : 0ull;
        }
        ch += dh;
        cj += dj;
        if (ch >= G) {
            ch -= G;
            cj++;
        }
        uint16_t *sq = sRows + bf * 2 * NQ * D + swzt(r0, cc * 8), *so = sq + NQ * D;
        const uint16_t *qg = (const uint16_t *)p.q + cc * 8, *og = (const uint16_t *)p.dout + cc * 8;
#pragma unroll
        for (int i = 0; i < NI; i++) {
            const int64_t ri = __shfl_sync(0xffffffffu, row, (lane / CH) * NI + i);
            const bool oki = ri >= 0;
            const int64_t off = oki ? ri * D : 0;
            cp_async16(sq + i * RSTRIDE, qg + off, oki ? 16 : 0);
            cp_async16(so + i * RSTRIDE, og + off, oki ? 16 : 0);
        }
    };

    for (int wbase = SPARSE ? tok_lo & ~31 : tok_lo; wbase < tok_hi; wbase += BWD_WIN) {
        /* the window's tokens, in increasing order */
        if (SPARSE) {
            if (warp == 0) {
                const int w = (wbase >> 5) + lane;
                const uint32_t bitsw = bwd_piece_word(rowbits, words, w, tok_lo, tok_hi);
                const int n = __popc(bitsw);
                int incl = n;
#pragma unroll
                for (int o = 1; o < 32; o <<= 1) {
                    const int y = __shfl_up_sync(0xffffffffu, incl, o);
                    if (lane >= o) incl += y;
                }
                int at = incl - n;
                uint32_t mm = bitsw;
                while (mm) {
                    const int bit = __ffs(mm) - 1;
                    mm &= mm - 1;
                    sList[at++] = w * 32 + bit;
                }
                if (lane == 31) *sCount = incl;
            }
        } else {
            for (int x = tid; x < BWD_WIN; x += NT) sList[x] = wbase + x;
            if (tid == 0) *sCount = min(BWD_WIN, tok_hi - wbase);
        }
        __syncthreads();
        const int nlist = *sCount;
        /* each listed token's keys of this chunk: causal limit, and (blocks not multiples of 64) its blocks */
        for (int x = tid; x < nlist; x += NT) {
            const int i = sList[x];
            const int64_t lim = shift + i - (int64_t)c * 64; /* its last visible key of the chunk */
            uint64_t mk = lim < 0 ? 0ull : lim >= 63 ? ~0ull : ((2ull << lim) - 1ull);
            if (p.window > 0) { /* and its first, under a sliding window */
                const int64_t lo = lim - p.window + 1;
                if (lo > 63) mk = 0ull;
                else if (lo > 0) mk &= ~((1ull << lo) - 1ull);
            }
            if (SPARSE && !b64 && mk) {
                const int64_t pos = shift + i;
                const int32_t *tk = p.topk + ((int64_t)g * p.sd.total_q + q0 + i) * p.topk_cols;
                uint64_t sel = 0;
                for (int kk = 0; kk < p.topk_cols; kk++) {
                    const int32_t blk = tk[kk];
                    if (blk < 0 || blk >= nb_seq || (int64_t)blk * p.B > pos) continue;
                    const int64_t ks = max((int64_t)blk * p.B - (int64_t)c * 64, (int64_t)0);
                    const int64_t ke = min((int64_t)blk * p.B + p.B - 1 - (int64_t)c * 64, (int64_t)63);
                    if (ke < 0 || ks > 63) continue;
                    const uint64_t hi = ke >= 63 ? ~0ull : ((2ull << ke) - 1ull);
                    sel |= hi & ~((1ull << ks) - 1ull);
                }
                mk &= sel;
            }
            sTokMask[x] = mk;
        }
        __syncthreads();
        const int nsteps = (nlist * G + NQ - 1) / NQ;
        cj = own_r / G, ch = own_r % G;
        /* a ring of KV_NS stages: step i in stage i % KV_NS, KV_NS - 1 steps in flight ahead of the one computed.
         * Step st + KV_NS - 1 is loaded after step st's barrier, into the stage of step st - 1, which every
         * thread has finished by then (its products waited on): one CTA barrier a step */
#pragma unroll
        for (int st = 0; st < KV_NS - 1; st++) {
            if (st < nsteps) load_step(st, nlist);
            cp_async_commit();
        }
        for (int st = 0; st < nsteps; st++) {
            const int bf = st % KV_NS;
            cp_async_wait<KV_NS - 2>(); /* step st's group: KV_NS - 2 later ones may still be in flight */
            if (WG) fence_proxy_async(); /* cp.async's writes, then wgmma's reads through the async proxy */
            __syncthreads();
            /* the next loads (a commit group each step, empty past the last) */
            auto load_next = [&]() {
                if (st + KV_NS - 1 < nsteps) load_step((st + KV_NS - 1) % KV_NS, nlist);
                cp_async_commit();
            };
            const uint16_t *sq = sRows + bf * 2 * NQ * D, *so = sq + NQ * D;
            /* this thread's columns (rows of the step): 8 j + 2 tig + e */
            /* bit 4 j + e of kb: fragment element e of column tile j is an allowed (key, row) */
            static_assert(NJ * 4 <= 32, "k_bwd_kv: one bit a fragment element");
            auto mask_bits = [&]() {
                uint32_t kb = 0;
#pragma unroll
                for (int j = 0; j < NJ; j++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const uint32_t mk = (uint32_t)(sMask[bf * NQ + 8 * j + 2 * tig + e] >> (warp * 16 + gid));
                        kb |= (mk & 1u) << (4 * j + e);
                        kb |= ((mk >> 8) & 1u) << (4 * j + 2 + e);
                    }
                return kb;
            };
            if constexpr (WG) {
#ifdef INFLLM_WGMMA_DEVICE
                /* S^T = K Q^T and dP^T = V dout^T (K-major operands: the K / V tiles and the step's rows), two
                 * commit groups: the next loads and the masks are issued under both products (session 43: they
                 * were ~40% of a step's serial chain before them), P^T's exps run under dP^T's, dS^T's math
                 * under dv's */
                float s[NJ][4], dp[NJ][4];
                const uint64_t dk_ = gmma_desc(sK, 16, 1024), dv_ = gmma_desc(sV, 16, 1024);
                const uint64_t dq_ = gmma_desc(sq, 16, 1024), do_ = gmma_desc(so, 16, 1024);
                wgmma_fence();
                wgmma_rows_keys<T, D, 64>(s, dk_, dq_);
                wgmma_commit();
                wgmma_rows_keys<T, D, 64>(dp, dv_, do_);
                wgmma_commit();
                load_next();
                const uint32_t kb = mask_bits();
                float2 lse_c[NJ]; /* the columns' lse2, read under the products */
#pragma unroll
                for (int j = 0; j < NJ; j++) lse_c[j] = *reinterpret_cast<const float2 *>(sLse + bf * NQ + 8 * j + 2 * tig);
                wgmma_wait<1>();
                reg_fence<NJ>(s);
                /* P^T, rounded to T into dv's A fragments (ap); s keeps it in f32 for dS^T */
                uint32_t ap[NQ / 16][4], ad[NQ / 16][4];
#pragma unroll
                for (int j = 0; j < NJ; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        s[j][e] = (kb >> (4 * j + e)) & 1u ? exp2f(s[j][e] * p.scale_log2 - (e & 1 ? lse_c[j].y : lse_c[j].x)) : 0.f;
                    }
                kv_pack_a<T, NQ / 16>(ap, s);
                wgmma_wait<0>();
                reg_fence<NJ>(dp);
                /* dv += P^T dout, dk += dS^T Q: A from registers, B the rows transposed by their descriptors */
                const uint64_t dqt = gmma_desc(sq, NQ * 128, 1024), dot = gmma_desc(so, NQ * 128, 1024);
                reg_fence<DT_>(dv);
                wgmma_fence();
                wgmma_regs_rows<T, D, NQ / 16>(dv, ap, dot);
                wgmma_commit();
#pragma unroll
                for (int j = 0; j < NJ; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++) dp[j][e] = s[j][e] * (dp[j][e] - sDel[bf * NQ + 8 * j + 2 * tig + (e & 1)]);
                kv_pack_a<T, NQ / 16>(ad, dp);
                reg_fence<DT_>(dk);
                wgmma_fence();
                wgmma_regs_rows<T, D, NQ / 16>(dk, ad, dqt);
                wgmma_commit();
                wgmma_wait<0>();
                reg_fence<DT_>(dv);
                reg_fence<DT_>(dk);
                reg_fence_u32<NQ / 16>(ap);
                reg_fence_u32<NQ / 16>(ad);
#else
                __trap(); /* not built for sm_90a: the host never launches this */
#endif
            } else {
                load_next();
                const uint32_t kb = mask_bits();
                if (!__any_sync(0xffffffffu, kb != 0)) continue;
                float s[NJ][4], dp[NJ][4];
#pragma unroll
                for (int j = 0; j < NJ; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.f;
#pragma unroll
                for (int kk = 0; kk < D / 16; kk += 2) {
                    uint32_t ak0[4], ak1[4], av0[4], av1[4];
                    const int ar = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
                    ldsm_x4(ak0, sK + swz<D>(ar, 16 * kk + (lane >> 4) * 8));
                    ldsm_x4(ak1, sK + swz<D>(ar, 16 * (kk + 1) + (lane >> 4) * 8));
                    ldsm_x4(av0, sV + swz<D>(ar, 16 * kk + (lane >> 4) * 8));
                    ldsm_x4(av1, sV + swz<D>(ar, 16 * (kk + 1) + (lane >> 4) * 8));
#pragma unroll
                    for (int j = 0; j < NJ; j++) {
                        uint32_t rq[4], ro[4];
                        ldsm_x4(rq, sq + swz<D>(8 * j + (lane & 7), 16 * kk + (lane >> 3) * 8));
                        ldsm_x4(ro, so + swz<D>(8 * j + (lane & 7), 16 * kk + (lane >> 3) * 8));
                        mma16816<T>(s[j], ak0, rq[0], rq[1]);
                        mma16816<T>(s[j], ak1, rq[2], rq[3]);
                        mma16816<T>(dp[j], av0, ro[0], ro[1]);
                        mma16816<T>(dp[j], av1, ro[2], ro[3]);
                    }
                }
                /* s -> P^T, dp -> dS^T; element e of fragment j: key gid + 8 (e >> 1), column 8 j + 2 tig + (e & 1) */
#pragma unroll
                for (int j = 0; j < NJ; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int col = 8 * j + 2 * tig + (e & 1);
                        const float pe =
                            (kb >> (4 * j + e)) & 1u ? exp2f(s[j][e] * p.scale_log2 - sLse[bf * NQ + col]) : 0.f;
                        s[j][e] = pe;
                        dp[j][e] = pe * (dp[j][e] - sDel[bf * NQ + col]);
                    }
                mma_acc_rows<T, D, NQ / 16>(dv, s, so, lane);
                mma_acc_rows<T, D, NQ / 16>(dk, dp, sq, lane);
            }
        }
        cp_async_wait<0>();
        __syncthreads(); /* sList / sTokMask are rewritten by the next window */
    }
    cp_async_wait<0>();

    /* epilogue: keys gid and gid + 8 of this warp's 16 */
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int key = warp * 16 + gid + 8 * h;
        if (key >= nkeys) continue;
        const int64_t off = ((k0 + (int64_t)c * 64 + key) * p.Hkv + g) * D;
        if (slot >= 0) {
            const int64_t po = ((int64_t)slot * 64 + key) * D;
#pragma unroll
            for (int j = 0; j < DT_; j++) {
                *reinterpret_cast<float2 *>(p.part_dk + po + 8 * j + 2 * tig) =
                    make_float2(dk[j][2 * h] * p.scale, dk[j][2 * h + 1] * p.scale);
                *reinterpret_cast<float2 *>(p.part_dv + po + 8 * j + 2 * tig) = make_float2(dv[j][2 * h], dv[j][2 * h + 1]);
            }
            continue;
        }
        T *dkr = (T *)p.dk + off, *dvr = (T *)p.dv + off;
#pragma unroll
        for (int j = 0; j < DT_; j++) {
            *reinterpret_cast<uint32_t *>(dkr + 8 * j + 2 * tig) =
                DT<T>::pack2(dk[j][2 * h] * p.scale, dk[j][2 * h + 1] * p.scale);
            *reinterpret_cast<uint32_t *>(dvr + 8 * j + 2 * tig) = DT<T>::pack2(dv[j][2 * h], dv[j][2 * h + 1]);
        }
    }
}

/* dk / dv of the chunks of several pieces: their partials summed in piece order (a CTA an entry, in turn) */
template <typename T>
__global__ void __launch_bounds__(256) k_bwd_kv_sum(BwdParams p, int D) {
    for (int64_t e = blockIdx.x; e < p.plan.nentries; e += gridDim.x) {
        const int pc = p.plan.npieces[e];
        if (pc < 2) continue;
        int c, g, b;
        bwd_entry(p, e, c, g, b);
        int64_t q0, k0;
        int32_t lq, lk;
        seq_get(p.sd, b, q0, lq, k0, lk);
        const int nkeys = min(64, lk - c * 64), d4 = D / 4;
        const int64_t s0 = p.plan.slot_off[e];
        for (int x = threadIdx.x; x < nkeys * d4; x += 256) {
            const int key = x / d4, col = 4 * (x - key * d4);
            const int64_t po = (s0 * 64 + key) * D + col;
            float4 a = *reinterpret_cast<const float4 *>(p.part_dk + po), v = *reinterpret_cast<const float4 *>(p.part_dv + po);
            for (int sp = 1; sp < pc; sp++) {
                const float4 a1 = *reinterpret_cast<const float4 *>(p.part_dk + po + (int64_t)sp * 64 * D);
                const float4 v1 = *reinterpret_cast<const float4 *>(p.part_dv + po + (int64_t)sp * 64 * D);
                a.x += a1.x, a.y += a1.y, a.z += a1.z, a.w += a1.w;
                v.x += v1.x, v.y += v1.y, v.z += v1.z, v.w += v1.w;
            }
            const int64_t off = ((k0 + (int64_t)c * 64 + key) * p.Hkv + g) * D + col;
            uint32_t *dk = reinterpret_cast<uint32_t *>((T *)p.dk + off), *dv = reinterpret_cast<uint32_t *>((T *)p.dv + off);
            dk[0] = DT<T>::pack2(a.x, a.y);
            dk[1] = DT<T>::pack2(a.z, a.w);
            dv[0] = DT<T>::pack2(v.x, v.y);
            dv[1] = DT<T>::pack2(v.z, v.w);
        }
    }
}

/* ------------------------------------------------------------------- host ---- */
struct BwdWs {
    size_t off_lse, off_delta, off_boff, off_bits, off_plan, off_items, off_hdr, off_part, total;
    int64_t bits_head; /* words */
    int64_t nentries;
    int max_chunks, plan_target, slots;
    size_t off_fwd, fwd_bytes;
};

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

static BwdWs bwd_ws_layout(const infllm_attn_params *ap, bool sparse, int32_t topk_cols) {
    BwdWs w;
    const size_t rows = (size_t)ap->total_q * (size_t)ap->Hq;
    w.off_lse = 0;
    w.off_delta = align256(rows * sizeof(float));
    w.off_boff = w.off_delta + align256(rows * sizeof(float));
    w.bits_head = 0;
    if (sparse && ap->total_q > 0 && ap->total_k > 0) {
        /* sum over sequences of ceil(lk / 64) ceil(lq / 32) <= (total_k / 64 + num_seqs) ceil(max_lq / 32) */
        w.bits_head = (ap->total_k / 64 + ap->num_seqs) * (int64_t)((ap->max_lq + 31) / 32);
    }
    w.off_bits = w.off_boff + (sparse ? align256(((size_t)ap->num_seqs + 1) * sizeof(int64_t)) : 0);
    w.max_chunks = (ap->max_lk + 63) / 64;
    w.nentries = (int64_t)ap->num_seqs * ap->Hkv * w.max_chunks;
    w.plan_target = 4 * cuda_num_sms();
    w.off_plan = w.off_bits + align256((size_t)w.bits_head * (size_t)ap->Hkv * sizeof(uint32_t));
    w.off_items = w.off_plan + align256((size_t)w.nentries * 4 * sizeof(int32_t));
    w.off_hdr = w.off_items + align256((size_t)bwd_plan_items_bound(w.nentries, w.plan_target) * sizeof(int4));
    w.off_part = w.off_hdr + 256;
    w.slots = (int)bwd_plan_slots_bound(ap->total_q, ap->Hkv, w.max_chunks, w.plan_target);
    const size_t part = (size_t)w.slots * 64 * ap->D * sizeof(float);
    w.total = w.max_chunks > 0 ? w.off_part + 2 * align256(part) : w.off_plan;
    w.fwd_bytes = cuda_flash_split_bytes(ap, sparse, sparse ? topk_cols : 0);
    w.off_fwd = align256(w.total);
    if (w.fwd_bytes) w.total = w.off_fwd + align256(w.fwd_bytes);
    return w;
}

/* pass 1: the forward by stage 2's / dense attention's own kernel writing Delta and lse2, or, with the caller's
 * forward (p.fwd_out, p.fwd_lse), k_bwd_delta on it */
template <typename T, int D>
static infllm_status bwd_forward_delta(const infllm_attn_params *ap, const BwdParams &p, cudaStream_t st) {
    if (!p.fwd_out) {
        const CudaFlashDelta fd = {p.dout, p.delta, p.lse2};
        return cuda_flash_delta_launch(ap, p.q, p.k, p.v, p.topk_cols ? p.topk : NULL, p.topk_cols, &fd, p.fwd_ws,
                                       p.fwd_ws_bytes, st);
    }
    const int64_t rows = ap->total_q * (int64_t)ap->Hq;
    k_bwd_delta<T, D><<<(unsigned)((rows + 7) / 8), 256, 0, st>>>(p, rows, (const T *)p.fwd_out, p.fwd_lse);
    CU_LAUNCH_CHECK("k_bwd_delta");
    return INFLLM_OK;
}

/* pass 2 (dq): k_flash90's walk on wgmma where it runs (sm_90a on cc 9.0), else k_bwd_q (mma.sync) */
template <typename T, int D, bool SPARSE>
static infllm_status bwd_dq_pass(const infllm_attn_params *ap, const BwdParams &p, dim3 grid, size_t smem,
                                 cudaStream_t st) {
    if (cuda_flash_dq_usable(ap, SPARSE, p.topk_cols)) {
        const CudaFlashDq dq = {p.dout, p.lse2, p.delta, p.dq};
        return cuda_flash_dq_launch(ap, p.q, p.k, p.v, SPARSE ? p.topk : NULL, p.topk_cols, &dq, p.fwd_ws,
                                    p.fwd_ws_bytes, st);
    }
    infllm_status s = cuda_func_smem((const void *)k_bwd_q<T, D, SPARSE>, smem, "k_bwd_q");
    if (s) return s;
    k_bwd_q<T, D, SPARSE><<<grid, 128, smem, st>>>(p);
    CU_LAUNCH_CHECK("k_bwd_q");
    return INFLLM_OK;
}

/* pass 3: k_bwd_kv over the plan's items (grid: their bound; CTAs past the count return) */
template <typename T, int D, bool SPARSE, bool WG>
static infllm_status bwd_kv_launch(const BwdParams &p, unsigned grid, cudaStream_t st) {
    constexpr int NQ = kv_rows<D, WG>(), NS = kv_stages<D, WG>();
    const size_t smem = (size_t)(2 * 64 + NS * 2 * NQ) * D * sizeof(uint16_t) +
                        (size_t)NS * NQ * (2 * sizeof(float) + sizeof(uint64_t)) +
                        (size_t)BWD_WIN * (sizeof(uint64_t) + sizeof(int32_t)) + 16 + (WG ? 1024 : 0);
    infllm_status s = cuda_func_smem((const void *)k_bwd_kv<T, D, SPARSE, WG>, smem, "k_bwd_kv");
    if (s) return s;
    k_bwd_kv<T, D, SPARSE, WG><<<grid, 128, smem, st>>>(p);
    CU_LAUNCH_CHECK(WG ? "k_bwd_kv (wgmma)" : "k_bwd_kv");
    return INFLLM_OK;
}

template <typename T, int D>
static infllm_status bwd_run(const infllm_attn_params *ap, BwdParams &p, bool sparse, cudaStream_t st) {
    const int G = ap->G;
    const int max_tiles = (int)(((int64_t)ap->max_lq * G + BWD_ROWS - 1) / BWD_ROWS);
    const int max_chunks = (ap->max_lk + 63) / 64;
    infllm_status s;
    if (max_tiles > 0) {
        /* k_bwd_q: Q, dout and 2 K / V stages */
        size_t smem = (size_t)(2 * BWD_ROWS + 4 * 64) * D * sizeof(uint16_t);
        if (sparse) smem += ((size_t)p.tt * p.nbw + p.ncw) * sizeof(uint32_t);
        const dim3 grid(max_tiles, ap->Hkv, ap->num_seqs);
        if ((s = bwd_forward_delta<T, D>(ap, p, st)) ||
            (s = sparse ? bwd_dq_pass<T, D, true>(ap, p, grid, smem, st) : bwd_dq_pass<T, D, false>(ap, p, grid, smem, st)))
            return s;
    }
    if (max_chunks > 0) {
        /* the work items (no host synchronisation: the grid is their bound, CTAs past the count return) */
        const unsigned pgrid = (unsigned)((p.plan.nentries + 7) / 8);
        if (sparse) k_bwd_plan_count<true><<<pgrid, 256, 0, st>>>(p);
        else k_bwd_plan_count<false><<<pgrid, 256, 0, st>>>(p);
        CU_LAUNCH_CHECK("k_bwd_plan_count");
        k_bwd_plan_scan<<<1, BWD_PLAN_THREADS, 0, st>>>(p);
        CU_LAUNCH_CHECK("k_bwd_plan_scan");
        if (sparse) k_bwd_plan_items<true><<<pgrid, 256, 0, st>>>(p);
        else k_bwd_plan_items<false><<<pgrid, 256, 0, st>>>(p);
        CU_LAUNCH_CHECK("k_bwd_plan_items");
        const unsigned grid = (unsigned)bwd_plan_items_bound(p.plan.nentries, p.plan.target);
        const bool wg = cuda_use_wgmma();
        if ((s = sparse ? (wg ? bwd_kv_launch<T, D, true, true>(p, grid, st) : bwd_kv_launch<T, D, true, false>(p, grid, st))
                        : (wg ? bwd_kv_launch<T, D, false, true>(p, grid, st) : bwd_kv_launch<T, D, false, false>(p, grid, st))))
            return s;
        k_bwd_kv_sum<T><<<(unsigned)min(p.plan.nentries, (int64_t)1024), 256, 0, st>>>(p, D);
        CU_LAUNCH_CHECK("k_bwd_kv_sum");
    }
    return INFLLM_OK;
}

} // namespace

extern "C" infllm_status cuda_attn_backward_workspace_size(const infllm_attn_params *ap, int32_t topk_cols,
                                                           size_t *bytes) {
    infllm_status s = cuda_check_supported(ap, topk_cols ? "sparse attention backward" : "dense attention backward");
    if (s) return s;
    *bytes = bwd_ws_layout(ap, topk_cols > 0, topk_cols).total;
    return INFLLM_OK;
}

extern "C" infllm_status cuda_attn_backward(const infllm_attn_params *ap, const void *q, const void *k,
                                            const void *v, const int32_t *topk_idx, int32_t topk_cols,
                                            const void *out, const float *lse, const void *dout, void *dq, void *dk,
                                            void *dv) {
    const bool sparse = topk_idx != NULL;
    const char *op = sparse ? "sparse attention backward" : "dense attention backward";
    /* lse is read only with out (then it is the forward's, on the device) */
    infllm_status s = cuda_check_entry(ap, op, {{q, "q", 16}, {k, "k", 16}, {v, "v", 16}, {dout, "dout", 16},
                                                {dq, "dq", 16}, {dk, "dk", 16}, {dv, "dv", 16}, {topk_idx, "topk_idx", 4},
                                                {out, "out", 16}, {out ? lse : NULL, "lse", 4}});
    if (s) return s;
    const BwdWs w = bwd_ws_layout(ap, sparse, sparse ? topk_cols : 0);
    cudaStream_t st = (cudaStream_t)ap->cuda_stream;
    BwdParams p;
    p.q = q;
    p.k = k;
    p.v = v;
    p.dout = dout;
    p.dq = dq;
    p.dk = dk;
    p.dv = dv;
    p.sd = seq_desc(ap);
    p.Hq = ap->Hq;
    p.Hkv = ap->Hkv;
    p.G = ap->G;
    p.scale = ap->scale;
    p.scale_log2 = ap->scale * LOG2E_F;
    p.topk = topk_idx;
    p.topk_cols = sparse ? topk_cols : 0;
    p.B = ap->B;
    p.window = ap->window;
    p.tt = (int)min(64, 63 / ap->G + 2);
    const int64_t nb_max = ap->max_lk > 0 ? ((int64_t)ap->max_lk + ap->B - 1) / ap->B : 0;
    p.nbw = (int)((nb_max + 31) / 32);
    p.ncw = (int)((((int64_t)ap->max_lk + 63) / 64 + 31) / 32);
    p.bits_head = w.bits_head;
    if (ap->G > 65536)
        return infllm_set_error(INFLLM_ERR_UNSUPPORTED, "CUDA %s: group size %d (Hq / Hkv) above 65536", op, ap->G);
    if (bwd_plan_items_bound(w.nentries, w.plan_target) > 0x7fffffffLL)
        return infllm_set_error(INFLLM_ERR_UNSUPPORTED,
                                "CUDA %s: %lld (sequence, KV head, 64-key chunk) entries exceed the grid's 2^31 - 1",
                                op, (long long)w.nentries);
    if (sparse && !cuda_flash_dq_usable(ap, 1, topk_cols)) {
        const size_t need = (size_t)(2 * BWD_ROWS + 4 * 64) * ap->D * 2 + ((size_t)p.tt * p.nbw + p.ncw) * 4;
        if (need > (size_t)cuda_dev_props().smem_optin)
            return infllm_set_error(INFLLM_ERR_UNSUPPORTED,
                                    "CUDA sparse attention backward: the block bitmaps of %d tokens x %lld blocks "
                                    "(%zu bytes of shared memory with the tiles) exceed this GPU's %d; a larger "
                                    "block_size or group size takes fewer",
                                    p.tt, (long long)nb_max, need, cuda_dev_props().smem_optin);
    }
    unsigned char *ws = NULL;
    int owned = 0;
    if ((w.total > 0 || ap->workspace) && (s = cuda_workspace_acquire(ap, w.total, sparse ? "CUDA sparse attention backward" : "CUDA dense attention backward",
                                    sparse ? "infllm_sparse_attention_backward_workspace_size"
                                           : "infllm_dense_attention_backward_workspace_size",
                                    st, &ws, &owned)))
        return s;
    p.lse2 = (float *)(ws + w.off_lse);
    p.delta = (float *)(ws + w.off_delta);
    p.bits_off = sparse ? (int64_t *)(ws + w.off_boff) : NULL;
    p.bits = sparse ? (uint32_t *)(ws + w.off_bits) : NULL;
    p.max_chunks = w.max_chunks;
    p.plan.nentries = w.nentries;
    p.plan.target = w.plan_target;
    p.plan.cnt = w.max_chunks > 0 ? (int32_t *)(ws + w.off_plan) : NULL;
    p.plan.npieces = p.plan.cnt ? p.plan.cnt + w.nentries : NULL;
    p.plan.item_off = p.plan.cnt ? p.plan.npieces + w.nentries : NULL;
    p.plan.slot_off = p.plan.cnt ? p.plan.item_off + w.nentries : NULL;
    p.plan.items = w.max_chunks > 0 ? (int4 *)(ws + w.off_items) : NULL;
    p.plan.hdr = w.max_chunks > 0 ? (int32_t *)(ws + w.off_hdr) : NULL;
    p.fwd_ws = w.fwd_bytes ? ws + w.off_fwd : NULL;
    p.fwd_out = out;
    p.fwd_lse = out ? lse : NULL;
    p.fwd_ws_bytes = w.fwd_bytes;
    p.part_dk = w.max_chunks > 0 ? (float *)(ws + w.off_part) : NULL;
    p.part_dv = p.part_dk ? (float *)(ws + w.off_part + align256((size_t)w.slots * 64 * ap->D * sizeof(float))) : NULL;

    if (sparse && w.bits_head > 0) {
        if (cudaMemsetAsync(p.bits, 0, (size_t)w.bits_head * ap->Hkv * sizeof(uint32_t), st) != cudaSuccess) {
            s = infllm_set_error(INFLLM_ERR_CUDA, "CUDA: clearing the backward's bitmaps failed: %s",
                                 cudaGetErrorString(cudaGetLastError()));
            goto done;
        }
        k_bwd_bits_off<<<1, 256, 0, st>>>(p);
        if (cudaGetLastError() != cudaSuccess) {
            s = infllm_set_error(INFLLM_ERR_CUDA, "CUDA: launch of k_bwd_bits_off failed");
            goto done;
        }
        const dim3 grid((ap->max_lq + 127) / 128, ap->Hkv, ap->num_seqs);
        k_bwd_bits<<<grid, 128, 0, st>>>(p);
        if (cudaGetLastError() != cudaSuccess) {
            s = infllm_set_error(INFLLM_ERR_CUDA, "CUDA: launch of k_bwd_bits failed");
            goto done;
        }
    }
    if (ap->dtype == INFLLM_DTYPE_BF16)
        s = ap->D == 128 ? bwd_run<__nv_bfloat16, 128>(ap, p, sparse, st) : bwd_run<__nv_bfloat16, 64>(ap, p, sparse, st);
    else
        s = ap->D == 128 ? bwd_run<__half, 128>(ap, p, sparse, st) : bwd_run<__half, 64>(ap, p, sparse, st);
done:
    if (owned) cudaFreeAsync(ws, st);
    return s;
}
