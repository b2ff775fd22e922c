/*
 * cuda_cache.cu: the device side of the decode cache (infllm_cache_* on the CUDA backend, SPEC B §8,
 * A.7). cache.c keeps the bookkeeping on the host (length, n1, n2); the storage lives on the device:
 *   K, V [capacity, Hkv, D]   c1 [windows(capacity, l1, s1), Hkv, D]   c2 [windows(capacity, 4 l1, 4 s1), ...]
 *
 * Append (k_cache_append, one launch): copies the n new K/V rows and computes the c1/c2 kernels
 * that complete with them, and only those: window j of a level is complete once the length reaches
 * s*j + l, so an append of n tokens at length L builds j in [windows(L), windows(L + n)). A window
 * reads its rows from the cache (row < L) or from the caller's new rows (row >= L), so the copy and
 * the compression need no ordering inside the launch. The mean is the f32 sum in index order divided
 * by the window length (IEEE division), like k_compress and cpu_mean_window: the kernels are
 * bit-identical to a full compression. A decode step is 1 copy block, plus 32 blocks (8 columns
 * each at Hkv*D = 256) for each kernel that completes: a c1 every s1 tokens, a c2 every 4*s1.
 *
 * Attend, on the stored c1/c2 (no compression): up to 16 query tokens (decode; any G) take
 * this file's k_cd_* kernels ("fast decode step" below); other shapes the shared kernels: up to 64
 * query rows cuda_dec_select_launch, else the fused cuda_select_launch, then cuda_flash_launch
 * (sparse with split-KV, or dense below dense_len). The stateless cuda_attention of one sequence with
 * few queries also runs the k_cd_* kernels, on the c1 / c2 it has just compressed (cuda_fewq_cd_*
 * below). Nothing reads device memory on the host and
 * nothing allocates when the caller passes workspace, so append + attend can be captured into a
 * CUDA graph.
 */
#include <algorithm>
#include <atomic>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"
#include "cuda_internal.cuh"

/* ------------------------------------------------------------ storage ---- */

extern "C" infllm_status cuda_cache_check(infllm_dtype dtype, int32_t head_dim) {
    infllm_attn_params ap;
    memset(&ap, 0, sizeof ap);
    ap.dtype = dtype;
    ap.D = head_dim;
    return cuda_check_supported(&ap, "decode cache");
}

extern "C" infllm_status cuda_cache_malloc(void **p, size_t bytes) {
    *p = NULL;
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        *p = NULL;
        return infllm_set_error(INFLLM_ERR_NOMEM, "CUDA cache: cannot allocate %zu bytes of device memory: %s", bytes,
                                cudaGetErrorString(e));
    }
    return INFLLM_OK;
}

extern "C" void cuda_cache_mfree(void *p) {
    if (p) cudaFree(p);
}

/* ------------------------------------------------------------- append ---- */

/* PDL: let the next kernel launch now, and wait until the previous one has finished (no-ops
 * before sm_90 and when launched without the attribute) */
__device__ __forceinline__ void cd_pdl_start() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void cd_pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

struct AppendParams {
    const uint16_t *k_new, *v_new; /* [n, cols] */
    uint16_t *kc, *vc;             /* [capacity, cols] */
    uint16_t *c1, *c2;
    int64_t old_len, n, cols;
    int32_t l1, s1;
    int32_t j1_0, nj1, j2_0, nj2; /* new kernels: c1 rows j1_0 .. j1_0+nj1-1, likewise c2 */
    int32_t copy_blocks;
    int32_t col_groups; /* cols / 8 */
    int32_t vec;        /* 1: every row start is 16-byte aligned (uint4 loads and copies) */
};

#define APPEND_THREADS 128

/* Blocks [0, copy_blocks) copy the new K/V rows. The others compute one new kernel each for 8
 * columns (one 16-byte vector of a row): APPEND_THREADS rows of the window are loaded at once, one
 * per thread, into shared memory as f32; then 8 threads sum their column over those rows in index
 * order (the running sum carries over to the next rows), so a 128-row c2 window costs one round
 * trip to memory instead of 128 dependent loads. */
template <typename T> __global__ void __launch_bounds__(APPEND_THREADS) k_cache_append(AppendParams p) {
    const int64_t bx = blockIdx.x;
    const int tid = threadIdx.x;
    cd_pdl_start(); /* an attend's first kernel may launch now: it waits for this one before reading */
    if (bx < p.copy_blocks) {
        if (p.vec) {
            const int64_t nvec = p.n * p.cols / 8;
            const uint4 *ks = (const uint4 *)p.k_new, *vs = (const uint4 *)p.v_new;
            uint4 *kd = (uint4 *)(p.kc + p.old_len * p.cols), *vd = (uint4 *)(p.vc + p.old_len * p.cols);
            for (int64_t i = bx * APPEND_THREADS + tid; i < nvec; i += (int64_t)p.copy_blocks * APPEND_THREADS) {
                kd[i] = ks[i];
                vd[i] = vs[i];
            }
        } else {
            const int64_t ne = p.n * p.cols;
            uint16_t *kd = p.kc + p.old_len * p.cols, *vd = p.vc + p.old_len * p.cols;
            for (int64_t i = bx * APPEND_THREADS + tid; i < ne; i += (int64_t)p.copy_blocks * APPEND_THREADS) {
                kd[i] = p.k_new[i];
                vd[i] = p.v_new[i];
            }
        }
        return;
    }
    __shared__ float rows[APPEND_THREADS][9];
    const int wb = (int)(bx - p.copy_blocks); /* < 2^31: the host checks the grid */
    const int w = wb / p.col_groups, col0 = wb % p.col_groups * 8;
    const int level = w >= p.nj1;
    const int32_t j = level ? p.j2_0 + (int32_t)(w - p.nj1) : p.j1_0 + (int32_t)w;
    const int32_t size = level ? 4 * p.l1 : p.l1, stride = level ? 4 * p.s1 : p.s1;
    const int64_t r0 = (int64_t)stride * j;
    float s = 0.f;
    for (int32_t u0 = 0; u0 < size; u0 += APPEND_THREADS) {
        int32_t nr = size - u0 < APPEND_THREADS ? size - u0 : APPEND_THREADS;
        if (tid < nr) {
            int64_t r = r0 + u0 + tid;
            const uint16_t *src = r < p.old_len ? p.kc + r * p.cols + col0 : p.k_new + (r - p.old_len) * p.cols + col0;
            uint16_t e[8];
            if (p.vec) {
                *reinterpret_cast<uint4 *>(e) = *reinterpret_cast<const uint4 *>(src);
            } else {
#pragma unroll
                for (int i = 0; i < 8; i++) e[i] = src[i];
            }
#pragma unroll
            for (int i = 0; i < 8; i++) {
                T x;
                memcpy(&x, &e[i], 2);
                rows[tid][i] = DT<T>::to_f(x);
            }
        }
        __syncthreads();
        if (tid < 8)
            for (int32_t r = 0; r < nr; r++) s += rows[r][tid];
        __syncthreads();
    }
    if (tid < 8) {
        T *dst = (T *)(level ? p.c2 : p.c1);
        dst[(int64_t)j * p.cols + col0 + tid] = DT<T>::from_f(__fdiv_rn(s, (float)size));
    }
}

extern "C" infllm_status cuda_cache_append(infllm_dtype dt, int32_t Hkv, int32_t D, int32_t l1, int32_t s1, void *kc,
                                           void *vc, void *c1, void *c2, const void *k, const void *v, int64_t old_len,
                                           int64_t n, void *stream) {
    if (n <= 0) return INFLLM_OK;
    if (dt != INFLLM_DTYPE_BF16 && dt != INFLLM_DTYPE_F16)
        return infllm_set_error(INFLLM_ERR_UNSUPPORTED, "CUDA cache: dtype %s is not supported, use bf16 or f16",
                                infllm_dtype_name(dt));
    /* any alignment (the copy falls back to 2-byte accesses), but memory the GPU reads */
    infllm_status s = cuda_check_pointers("cache append", {{k, "k", 2}, {v, "v", 2}, {kc, "the cache's keys", 2}});
    if (s) return s;
    AppendParams p;
    memset(&p, 0, sizeof p);
    p.k_new = (const uint16_t *)k;
    p.v_new = (const uint16_t *)v;
    p.kc = (uint16_t *)kc;
    p.vc = (uint16_t *)vc;
    p.c1 = (uint16_t *)c1;
    p.c2 = (uint16_t *)c2;
    p.old_len = old_len;
    p.n = n;
    p.cols = (int64_t)Hkv * D; /* D % 16 == 0: whole 8-column groups */
    p.col_groups = (int32_t)(p.cols / 8);
    p.l1 = l1;
    p.s1 = s1;
    p.vec = (((uintptr_t)k | (uintptr_t)v | (uintptr_t)kc | (uintptr_t)vc) & 15) == 0;
    int64_t new_len = old_len + n;
    p.j1_0 = d_windows(old_len, l1, s1);
    p.nj1 = d_windows(new_len, l1, s1) - p.j1_0;
    p.j2_0 = d_windows(old_len, 4 * l1, 4 * s1);
    p.nj2 = d_windows(new_len, 4 * l1, 4 * s1) - p.j2_0;
    int64_t units = p.vec ? n * p.cols / 8 : n * p.cols;
    int64_t cb = (units + APPEND_THREADS - 1) / APPEND_THREADS;
    p.copy_blocks = (int32_t)(cb < 8192 ? cb : 8192);
    int64_t blocks = (int64_t)p.copy_blocks + ((int64_t)p.nj1 + p.nj2) * p.col_groups;
    if (blocks > INT32_MAX)
        return infllm_set_error(INFLLM_ERR_UNSUPPORTED, "CUDA cache: append of %lld tokens is too large for one launch",
                                (long long)n);
    cudaStream_t st = (cudaStream_t)stream;
    if (dt == INFLLM_DTYPE_BF16)
        k_cache_append<__nv_bfloat16><<<(unsigned)blocks, APPEND_THREADS, 0, st>>>(p);
    else
        k_cache_append<__half><<<(unsigned)blocks, APPEND_THREADS, 0, st>>>(p);
    CU_LAUNCH_CHECK("k_cache_append");
    return INFLLM_OK;
}

/* ------------------------------------------------- fast decode step ---- */
/* Few query tokens (n <= 16) against the cache. A group's G query heads are R = ceil(G / 16) m16 head
 * tiles (rows past G zero; G <= 16: one tile, rows = the G heads); four launches after the append (two
 * without a selection), all grids sized on the host:
 *   k_cd_lse    grid (LSE-level tiles, n, Hkv R), 1 warp: per 64-kernel tile of c2 (c1 with
 *               exact_lse) and head tile the row partials (max, sum) of exp2 logits over the visible
 *               kernels
 *   k_cd_score  grid (c1 tiles, n, Hkv), 1 warp: per head tile S = Q c1^T (tile 0 before the PDL
 *               wait), the row LSE from the partials, P = exp2(S - LSE) on visible c1 kernels, the
 *               head sum (shuffle tree; head tiles added in order), bf16 rounding, max-pool into
 *               the tile's blocks in shared memory, then plain stores of the tile's block maxima
 *               into one of two planes (cd_store_blocks: no zeroed row, no global atomics)
 *   k_cd_attn   grid (splits, n, Hkv R), 8 warps, 16 query rows (one head tile): every CTA of a selecting row first
 *               selects the row's list itself from the block scores (cd_select, into shared memory): forced (+inf) /
 *               empty (-inf) blocks, the K-th largest key 2 bits a step over the bits in which the finite keys
 *               differ, one index-ordered scan (ties to the lower index): ascending, -1 padded (the SPEC rule, like
 *               warp_topk); rows whose causal blocks are all taken (qb + 1 <= K) use 0..qb. Then its two groups of 4
 *               warps attend its eps entries of the list side by side, in rounds of one 64-key chunk a group (16
 *               keys a warp for S; one online softmax in base 2 for the CTA, the round's row max and P through
 *               shared memory; each warp then P V for its own D / 8 output columns) and it writes one partial (o
 *               unnormalised, max, sum); two entries a CTA at decode
 *   k_cd_combine grid (G, n * D/32, Hkv), 8 warps: 32 columns of one output row from the partials
 *               of every split (each warp a strided share, then merged in shared memory)
 * Dense (kv_len < dense_len, or mode DENSE) takes k_cd_attn + k_cd_combine over blocks 0..q_block.
 * Under a sliding window (session 59) each token's list starts at its window's first block wb (dense: wb..q_block;
 * sparse: cd_select's candidates are the blocks from wb on, min(K, q_block + 1 - wb) of them), k_cd_attn starts
 * that block at the 64-key chunk holding the window's first key and masks (and zero-fills) the keys before it, and
 * k_cd_score's CTAs of c1 tiles that touch no block from wb on exit (their block scores are never read). The LSE
 * and the scores of the other blocks are the unwindowed ones, as in REF. A sparse sequence whose rows all select
 * their window whole (cuda_window_selects_all) attends as a dense one (cuda_cd_sparse): no selection.
 * The arithmetic of the selection mirrors k_dec_lse / k_dec_score (same MMA order, same partial
 * merge order, same head-sum tree), so the blocks equal the pipeline's at G <= 16.
 * On sm_90 the kernels are launched with programmatic stream serialization (PDL; the first one
 * too where it reads nothing before its wait, see cd_launch): each starts while its predecessor
 * drains and waits (griddepcontrol.wait) before it reads what that one wrote, which hides most of
 * the launch gap between these short kernels. Per-token positions, blocks and visible kernel
 * counts come from the host (CdParams), so the kernels do no integer division on them. */
#include "cd_select.cuh"
#include "sel_seg.cuh"

/* 16 rows (head tile h of token t: heads g G + 16 h + r, rows past the group zero) x 64 kernels of one
 * tile: the copies (one commit group; warp_q16_mma waits for them and multiplies) */
template <int D>
__device__ __forceinline__ void cd_tile_issue(const CdParams &p, uint16_t *sq, uint16_t *sc, int t, int g, int h,
                                              const uint16_t *cbase, int nvalid) {
    warp_q16_issue<D>(sq, sc, q_head_tile<D>(p, t, g, h), p.G - 16 * h, cbase, (int64_t)p.Hkv * D, nvalid);
}

/* k_cd_lse / k_cd_lse4 take one head tile each: grid.z = Hkv R, z = g R + h; their partials are sub-row
 * z n + t's */
template <typename T, int D> __global__ void __launch_bounds__(32) k_cd_lse(CdParams p) {
    __shared__ __align__(16) uint16_t sq[16 * D];
    __shared__ __align__(16) uint16_t sc[64 * D];
    const int t = blockIdx.y, z = blockIdx.z, tile = blockIdx.x, lane = threadIdx.x, gid = lane >> 2, tig = lane & 3;
    const int g = z / p.R, h = z - g * p.R;
    cd_pdl_wait(); /* c1/c2 from the append */
    cd_pdl_start(); /* after the wait: the next kernel may read the append's output before its own wait */
    if (p.qb[t] + 1 <= p.K) return; /* every causal block is taken: no scores needed */
    const int vis = p.visL[t];
    if (64 * tile >= vis) return; /* k_cd_score reads tiles below ceil(vis / 64) only */
    float *part = p.part + (((int64_t)z * p.n + t) * p.ntL + tile) * 16 * 2; /* [16][2] of this tile */
    float s[8][4];
    cd_tile_issue<D>(p, sq, sc, t, g, h, (p.exact ? p.c1 : p.c2) + ((int64_t)64 * tile * p.Hkv + g) * D,
                     vis - 64 * tile);
    warp_q16_mma<T, D>(sq, sc, s);
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        float mx = tile_row_scale_max(s, ri, 64 * tile, tig, vis, p.scale_log2);
        float mu = mx == -INFINITY ? 0.f : mx, acc = tile_row_exp2_sum(s, ri, mu);
        acc = quad_sum(acc);
        if (tig == 0) *reinterpret_cast<float2 *>(part + 2 * (gid + 8 * ri)) = make_float2(mx, acc);
    }
}

/* k_cd_lse4 / k_cd_score4: k_cd_lse / k_cd_score for 4 or more tokens, CD_SEL_TOKENS consecutive
 * tokens a CTA (grid.y = token / CD_SEL_TOKENS), a warp each, sharing the compressed-key tile: one
 * copy into shared memory for 4 tokens instead of one a token (k_cd_score 23.6 -> 15.4 us at 16 x
 * 128K on the H200). Each warp's arithmetic is the 1-warp kernel's, so the scores are bit-identical.
 * The tile is copied up to the CTA's last token's visible count (counts grow with the position).
 * Decode (1 token) keeps the 1-warp kernels: the same code as a TPC = 1 instance measured 1.1-1.3 us
 * slower a decode attend (the CTA-wide copy, its barrier and the per-CTA bounds). */
#define CD_SEL_TOKENS 4
/* 16 rows (head tile h of token t; rows past the group zero; need false: all zero) x 64 kernels of one
 * tile, the tile copied by all NTHREADS of the CTA (one commit group); cd_tile_wait then waits for the
 * copies and the CTA */
template <int D, int NTHREADS>
__device__ __forceinline__ void cd_cta_tile_issue(const CdParams &p, uint16_t *sq, uint16_t *sc, int t, int g, int h,
                                                  bool need, const uint16_t *cbase, int nvalid) {
    cta_q16_issue<D, NTHREADS>(sq, sc, need ? q_head_tile<D>(p, t, g, h) : NULL, p.G - 16 * h, cbase,
                               (int64_t)p.Hkv * D, nvalid);
}
__device__ __forceinline__ void cd_tile_wait() {
    cp_async_wait<0>();
    __syncthreads();
}

template <typename T, int D> __global__ void __launch_bounds__(32 * CD_SEL_TOKENS) k_cd_lse4(CdParams p) {
    constexpr int TPC = CD_SEL_TOKENS;
    __shared__ __align__(16) uint16_t sq[TPC][16 * D];
    __shared__ __align__(16) uint16_t sc[64 * D];
    const int warp = threadIdx.x >> 5, t0 = blockIdx.y * TPC, t = t0 + warp, t_last = min(t0 + TPC, p.n) - 1;
    const int z = blockIdx.z, g = z / p.R, h = z - g * p.R, tile = blockIdx.x, lane = threadIdx.x & 31;
    const int gid = lane >> 2, tig = lane & 3;
    cd_pdl_wait(); /* c1/c2 from the append */
    cd_pdl_start(); /* after the wait: the next kernel may read the append's output before its own wait */
    if (p.qb[t_last] + 1 <= p.K) return; /* every causal block is taken (by every token of the CTA): no scores */
    if (64 * tile >= p.visL[t_last]) return; /* k_cd_score reads tiles below ceil(vis / 64) only */
    const bool tok = t < p.n && p.qb[t] + 1 > p.K;
    const int vis = tok ? p.visL[t] : 0;
    const bool need = tok && 64 * tile < vis;
    cd_cta_tile_issue<D, 32 * TPC>(p, sq[warp], sc, t, g, h, need,
                                   (p.exact ? p.c1 : p.c2) + ((int64_t)64 * tile * p.Hkv + g) * D,
                                   p.visL[t_last] - 64 * tile);
    cd_tile_wait();
    if (!need) return;
    float *part = p.part + (((int64_t)z * p.n + t) * p.ntL + tile) * 16 * 2; /* [16][2] of this tile */
    float s[8][4];
    warp_q16_mma<T, D>(sq[warp], sc, s);
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        float mx = tile_row_scale_max(s, ri, 64 * tile, tig, vis, p.scale_log2);
        float mu = mx == -INFINITY ? 0.f : mx, acc = tile_row_exp2_sum(s, ri, mu);
        acc = quad_sum(acc);
        if (tig == 0) *reinterpret_cast<float2 *>(part + 2 * (gid + 8 * ri)) = make_float2(mx, acc);
    }
}


/* The block maxima of c1 tile `tile` (sbm[b - bA], float bits; NULL: all 0) into plane tile & 1 of
 * the row's two block-score planes, for every block bA..bB that a full tile's kernels touch. A block
 * is touched by at most two consecutive tiles (cd_plan checks l1 + B <= 65 s1 + 1), which write
 * different planes; a block that neither neighbour touches gets 0 in the other plane too. So every
 * block with a c1 kernel has both planes written by this launch, by plain stores (no zeroed row, no
 * global atomics, no ordering between the CTAs), and its score is the larger of the two: the same
 * max as an atomicMax over all its kernels. */
__device__ __forceinline__ void cd_store_blocks(const CdParams &p, int64_t row, int tile, const int *sbm, int lane) {
    const int bA = p.s1 * 64 * tile / p.B;
    const int bB = min((p.s1 * (64 * tile + 63) + p.l1 - 1) / p.B, p.nbmax - 1);
    const int prev_hi = tile > 0 ? (p.s1 * (64 * tile - 1) + p.l1 - 1) / p.B : -1; /* tile - 1 touches <= it */
    const int next_lo = tile + 1 < (int)gridDim.x ? p.s1 * 64 * (tile + 1) / p.B : INT_MAX; /* tile + 1: >= it */
    int *mine = (int *)p.bs + (row * 2 + (tile & 1)) * p.nbmax;
    int *other = (int *)p.bs + (row * 2 + ((tile & 1) ^ 1)) * p.nbmax;
    for (int bb = bA + lane; bb <= bB; bb += 32) {
        mine[bb] = sbm ? sbm[bb - bA] : 0;
        if (bb > prev_hi && bb < next_lo) other[bb] = 0;
    }
}

/* one head tile of cd_score_finish: the row LSEs of sub-row srow (head tile h) from its partials, P of
 * the tile in s, and its head sum over the 16 rows (rows past the group have an LSE of +inf, so P 0)
 * added to keep: lane (gid, tig) holds the sums of columns 8 gid + 2 tig (+1) */
__device__ __forceinline__ void cd_tile_head_sum(const CdParams &p, float (&s)[8][4], int64_t srow, int h, int ntl,
                                                 int tile, int vis1, int *sbm, float *slse, int lane,
                                                 float (&keep)[2]) {
    const int gid = lane >> 2, tig = lane & 3;
    /* the row LSEs: the partials come in with wide loads, then lane r < 16 merges row r's in tile
     * order (row_lse2, as k_dec_score) */
    float4 *sp = (float4 *)(sbm + ((p.nbt + 3) & ~3)); /* [ntl][16][2] as float4 */
    const float4 *part = (const float4 *)(p.part + srow * p.ntL * 16 * 2);
    const int n4 = ntl * 16 * 2 / 4;
    for (int base = 0; base < n4; base += 32 * 8) {
        float4 v[8];
#pragma unroll
        for (int u = 0; u < 8; u++) {
            int i = base + u * 32 + lane;
            if (i < n4) v[u] = __ldcg(part + i);
        }
#pragma unroll
        for (int u = 0; u < 8; u++) {
            int i = base + u * 32 + lane;
            if (i < n4) sp[i] = v[u];
        }
    }
    __syncwarp();
    /* lane r < 16: row r's (max, sum) pairs are 32 floats apart, so the 16 lanes hit distinct banks */
    if (lane < 16) slse[lane] = row_lse2((const float2 *)sp + lane, ntl, 16 * h + lane < p.G);
    __syncwarp();
    const float lse2[2] = {slse[gid], slse[gid + 8]};
    tile_head_sum_add(s, 64 * tile, tig, gid, vis1, p.scale_log2, lse2, keep);
    __syncwarp(); /* every lane's reads of sp and slse are done before the next head tile's writes */
}

/* k_cd_score's and k_cd_score4's per-warp finish, after the PDL wait, for each head tile h of the group
 * (s holds tile 0's S on entry; sq / sc: the warp's query tile and the c1 tile, which stays): the row
 * LSEs from sub-row (g R + h) n + t's partials, P of the tile, the head sum over its 16 rows, added
 * over the head tiles in order (G <= 16: the one tile's sum), then the max-pool into the tile's blocks
 * and their store (cd_store_blocks) into block-score row g n + t */
template <typename T, int D>
__device__ __forceinline__ void cd_score_finish(const CdParams &p, float (&s)[8][4], uint16_t *sq, const uint16_t *sc,
                                                int g, int t, int tile, int qb, int vis1, int *sbm, float *slse,
                                                int lane) {
    const int gid = lane >> 2, tig = lane & 3;
    const int ntl = (p.visL[t] + 63) / 64;
    float keep[2] = {0.f, 0.f};
    for (int h = 0; h < p.R; h++) {
        if (h > 0) /* head tile h's queries against the same c1 tile */
            warp_q16_next_tile<T, D>(sq, sc, q_head_tile<D>(p, t, g, h), p.G - 16 * h, s);
        cd_tile_head_sum(p, s, ((int64_t)g * p.R + h) * p.n + t, h, ntl, tile, vis1, sbm, slse, lane, keep);
    }
    const int blo0 = p.s1 * 64 * tile / p.B;
    pool_kernels(keep, 64 * tile, gid, tig, p.n1, p.s1, p.l1, p.B, qb, p.round_bf16, sbm, blo0);
    __syncwarp();
    cd_store_blocks(p, (int64_t)g * p.n + t, tile, sbm, lane);
}

template <typename T, int D> __global__ void __launch_bounds__(32) k_cd_score(CdParams p) {
    __shared__ __align__(16) uint16_t sq[16 * D];
    __shared__ __align__(16) uint16_t sc[64 * D];
    __shared__ float slse[16];
    extern __shared__ __align__(16) int sbm[]; /* [nbt] the tile's block maxima (float bits, scores >= 0), then the
                                    row partials [ntl][16][2] */
    const int t = blockIdx.y, g = blockIdx.z, tile = blockIdx.x, lane = threadIdx.x;
    const int qb = p.qb[t], vis1 = p.vis1[t];
    if (qb + 1 <= p.K) return; /* every causal block is taken: k_cd_attn uses wb..qb, no list */
    /* the tile's blocks all lie before the token's window: no candidates (cd_select gives them key 0) */
    if (tile < p.t1lo[t]) return;
    const int64_t row = (int64_t)g * p.n + t;
    if (64 * tile >= vis1) { /* invisible kernels score 0 */
        cd_store_blocks(p, row, tile, NULL, lane);
        return;
    }
    float s[8][4];
    /* q and the c1 tile were final when k_cd_lse let this kernel start (after its own wait), so
     * S = Q c1^T is computed before this kernel waits for k_cd_lse */
    cd_tile_issue<D>(p, sq, sc, t, g, 0, p.c1 + ((int64_t)64 * tile * p.Hkv + g) * D, vis1 - 64 * tile);
    for (int i = lane; i < p.nbt; i += 32) sbm[i] = 0;
    warp_q16_mma<T, D>(sq, sc, s);
    cd_pdl_wait(); /* the LSE partials */
    cd_pdl_start();
    cd_score_finish<T, D>(p, s, sq, sc, g, t, tile, qb, vis1, sbm, slse, lane);
}

/* dynamic shared memory of k_cd_score, per warp: the tile's block maxima [nbt] (rounded to 4), then
 * the row partials [ntL][16][2] */
__host__ __device__ __forceinline__ size_t cd_score_warp_smem(int nbt, int ntL) {
    return (size_t)((nbt + 3) & ~3) * sizeof(int) + (size_t)32 * ntL * sizeof(float);
}

template <typename T, int D> __global__ void __launch_bounds__(32 * CD_SEL_TOKENS) k_cd_score4(CdParams p) {
    constexpr int TPC = CD_SEL_TOKENS;
    __shared__ __align__(16) uint16_t sq[TPC][16 * D];
    __shared__ __align__(16) uint16_t sc[64 * D];
    __shared__ float slse_all[TPC][16];
    extern __shared__ __align__(16) int sbm_all[]; /* per warp: [nbt] the tile's block maxima (float bits, scores
                                                      >= 0), then the row partials [ntl][16][2] */
    const int warp = threadIdx.x >> 5, t0 = blockIdx.y * TPC, t = t0 + warp, t_last = min(t0 + TPC, p.n) - 1;
    const int g = blockIdx.z, tile = blockIdx.x, lane = threadIdx.x & 31;
    if (p.qb[t_last] + 1 <= p.K) return; /* every causal block is taken: k_cd_attn uses wb..qb, no list */
    /* the tile's blocks all lie before the window of every token of the CTA (the first token's starts first) */
    if (tile < p.t1lo[t0]) return;
    const bool tok = t < p.n && p.qb[t] + 1 > p.K && tile >= p.t1lo[t];
    const int qb = tok ? p.qb[t] : 0, vis1 = tok ? p.vis1[t] : 0;
    const int64_t row = (int64_t)g * p.n + t;
    if (tok && 64 * tile >= vis1) cd_store_blocks(p, row, tile, NULL, lane); /* invisible kernels score 0 */
    if (64 * tile >= p.vis1[t_last]) return;                                 /* no warp sees a kernel of the tile */
    const bool need = tok && 64 * tile < vis1;
    int *sbm = sbm_all + warp * (int)(cd_score_warp_smem(p.nbt, p.ntL) / sizeof(int));
    float *slse = slse_all[warp];
    /* q and the c1 tile were final when k_cd_lse let this kernel start (after its own wait), so
     * S = Q c1^T is computed before this kernel waits for k_cd_lse */
    cd_cta_tile_issue<D, 32 * TPC>(p, sq[warp], sc, t, g, 0, need, p.c1 + ((int64_t)64 * tile * p.Hkv + g) * D,
                                   p.vis1[t_last] - 64 * tile);
    if (need)
        for (int i = lane; i < p.nbt; i += 32) sbm[i] = 0;
    cd_tile_wait();
    if (!need) return;
    float s[8][4];
    warp_q16_mma<T, D>(sq[warp], sc, s);
    cd_pdl_wait(); /* the LSE partials */
    cd_pdl_start();
    cd_score_finish<T, D>(p, s, sq[warp], sc, g, t, tile, qb, vis1, sbm, slse, lane);
}

/* attention of the G heads of token t (KV head g) over entries [split * eps, (split + 1) * eps) of
 * its block list (two entries a CTA at decode, so the K/V bytes spread over all SMs). KPT > 0
 * (sparse steps after k_cd_score): every CTA of a selecting row (qb + 1 > K) first selects the row's
 * list from the block scores itself (cd_select with all 256 threads, KPT keys each, into shared
 * memory), so no single CTA's selection and no list in device memory sit between the two kernels;
 * rows that take every causal block use 0..qb. Then the 8 warps attend as 2 groups of 4, group q
 * taking entries q, q + 2, ... of the CTA's share (two blocks at once at decode), in rounds of one
 * 64-key chunk a group: warp w of a group computes S for keys [16 w, 16 w + 16) of its group's chunk
 * (its own K/V rows in the group's tiles; K and V are two copy groups, so S = Q K^T starts while V
 * is in flight), the CTA takes the round's row max over all 8 warps (shared memory), every warp
 * writes its P = exp2(S - max) to a shared [16][128] tile, and then each warp multiplies the whole
 * P by V for its own D / 8 output columns: an online softmax over the CTA's keys with no merge of
 * per-warp states at the end. The CTA writes one partial, o unnormalised [16][D] and (max, sum)
 * per row. */
#define CD_WARPS 8        /* the CTA: all warps select (KPT keys a thread) and attend */
#define CD_GROUP_WARPS 4  /* a group attends one list entry at a time, 16 keys of a 64-key chunk a warp */
#define CD_GROUPS (CD_WARPS / CD_GROUP_WARPS)
static_assert(CD_GROUP_WARPS * 16 == 64, "k_cd_attn: a group's warps take 16 keys each of a 64-key chunk");
static_assert(CD_WARPS % CD_GROUP_WARPS == 0, "k_cd_attn: whole groups");
#define CD_PS (CD_GROUPS * 64 + 8) /* the P tile's padded row: 272 bytes, conflict-free ldmatrix */
template <int D> __host__ __device__ constexpr size_t cd_attn_smem() {
    /* Q [16][D] and each group's K, V tiles [64][D] (16-bit), P [16][CD_PS] (16-bit), the row
     * maxima and sums of each warp [8][16] (f32), two group flags */
    return (size_t)(16 + CD_GROUPS * 2 * 64) * D * 2 + (size_t)16 * CD_PS * 2 + (size_t)2 * CD_WARPS * 16 * 4 + 16;
}
template <typename T, int D, int KPT> __global__ void __launch_bounds__(CD_WARPS * 32, 2) k_cd_attn(CdParams p) {
    constexpr int CH = D / 8, KS = D / 16, PS = CD_PS;
    constexpr int NT = D / (8 * CD_WARPS); /* n8 output tiles a warp: 2 at d 128, 1 at d 64 */
    static_assert(NT * 8 * CD_WARPS == D && (NT == 1 || NT == 2), "k_cd_attn: the warps' output columns tile D");
    extern __shared__ __align__(16) unsigned char smem[];
    const int split = blockIdx.x, t = blockIdx.y, z = blockIdx.z, g = z / p.R, h = z - g * p.R;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gid = lane >> 2, tig = lane & 3;
    const int grp = warp / CD_GROUP_WARPS, wq = warp % CD_GROUP_WARPS;
    /* [16][D]; this group's [64][D] K and V tiles */
    uint16_t *sQ = (uint16_t *)smem, *sK = sQ + 16 * D + grp * 2 * 64 * D, *sV = sK + 64 * D;
    uint16_t *sP = sQ + (16 + CD_GROUPS * 2 * 64) * D; /* [16][PS] */
    float *smax = (float *)(sP + 16 * PS), *ssum = smax + CD_WARPS * 16; /* [8][16] each */
    int *shas = (int *)(ssum + CD_WARPS * 16);                            /* [CD_GROUPS] */
    const int VC = NT == 2 ? 16 * warp : 16 * (warp >> 1); /* the 16 V columns this warp's ldmatrix reads */
    const int64_t pos = p.pos[t], wlo = p.wlo[t]; /* the token's keys: wlo..pos (wlo 0 without a window) */
    const int qb = p.qb[t], wb = p.wb[t];
    const int64_t rowid = (int64_t)g * p.n + t, srow = (int64_t)z * p.n + t; /* block scores; partials */
    const uint16_t *qt = q_head_tile<D>(p, t, g, h);
    for (int x = tid; x < 16 * CH; x += CD_WARPS * 32) {
        int r = x / CH, c = x % CH;
        bool ok = 16 * h + r < p.G;
        const uint16_t *src = qt + (ok ? (int64_t)r * D : 0) + c * 8;
        cp_async16(sQ + swz<D>(r, c * 8), src, ok ? 16 : 0);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    cd_pdl_wait(); /* the block scores (and, transitively, K/V from the append) */
    cd_pdl_start();
    int32_t *slist = (int32_t *)(smem + cd_attn_smem<D>()); /* [topk_out] the row's selection */
    if (KPT > 0 && p.sparse && qb + 1 > p.K) {
        cd_select<(KPT > 0 ? KPT : 4), CD_WARPS>(p, rowid, qb, wb, slist);
        __syncthreads();
    }
    /* the CTA's chunks: group q walks entries split * eps + q, + CD_GROUPS, ... and each entry's
     * block in 64-key chunks; both groups step together (one chunk each per round, or none) */
    const int list_len = p.sparse ? p.topk_out : qb + 1 - wb;
    const int e_end = min(list_len, (split + 1) * p.eps);
    int e = split * p.eps + grp - CD_GROUPS;
    int64_t c0 = 0, k_hi = 0; /* the group's current chunk starts at c0 of the block ending at k_hi */
    auto advance = [&]() {     /* to the group's next chunk: c0 += 64, else the next valid entry */
        c0 += 64;
        while (c0 >= k_hi) {
            e += CD_GROUPS;
            if (e >= e_end) return;
            /* the list: dense wb..qb; sparse the selection, or wb..qb -1 padded when every causal
             * block is taken (no selection for the row; sel_take_all_slot) */
            const int blk = !p.sparse ? wb + e : qb + 1 <= p.K ? (wb + e <= qb ? wb + e : -1) : KPT > 0 ? slist[e] : -1;
            if (blk < wb || blk > qb) continue;
            c0 = (int64_t)blk * p.B;
            /* the window's first block: from the chunk holding wlo (the keys before it masked below) */
            if (c0 < wlo) c0 += (wlo - c0) & ~(int64_t)63;
            k_hi = min((int64_t)blk * p.B + p.B, pos + 1);
        }
    };
    advance();
    float o[NT][4]; /* this warp's output columns [NT * 8 * warp, + NT * 8) of the 16 rows */
#pragma unroll
    for (int j = 0; j < NT; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}; /* rows gid, gid + 8: the same in every warp */
    const int64_t kvs = (int64_t)p.Hkv * D;
    const uint16_t *kg = p.k + (int64_t)g * D, *vg = p.v + (int64_t)g * D;
    const int r0 = 16 * wq; /* this warp's rows of its group's K/V tiles */
#pragma unroll 1
    for (;;) {
        const bool has = e < e_end;
        /* also the barrier after the last round's reads of the K/V tiles, sP, smax and ssum */
        if (!__syncthreads_or(has)) break;
        float s[2][4];
        float mx[2] = {-INFINITY, -INFINITY};
        if (has) {
            /* this warp's 16 keys of the chunk: rows lv..nv-1 (zero rows before the window's first key and
             * past nv, also when nv <= 0, so that P V reads zeros there), K and V as two copy groups */
            const int nv = (int)min((int64_t)16, k_hi - c0 - r0);
            const int lv = (int)max((int64_t)0, min((int64_t)16, wlo - c0 - r0));
            auto copy_rows = [&](uint16_t *dst, const uint16_t *src) {
#pragma unroll
                for (int i = lane; i < 16 * CH; i += 32) {
                    const int r = i / CH, c = i % CH;
                    const bool ok = r < nv && r >= lv;
                    cp_async16(dst + swz<D>(r0 + r, c * 8), src + (c0 + r0 + (ok ? r : 0)) * kvs + c * 8, ok ? 16 : 0);
                }
                cp_async_commit();
            };
            copy_rows(sK, kg);
            copy_rows(sV, vg);
            cp_async_wait<1>(); /* K */
            __syncwarp();
#pragma unroll
            for (int j = 0; j < 2; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < KS; kk += 2) {
                uint32_t qa[2][4];
#pragma unroll
                for (int h = 0; h < 2; h++)
                    ldsm_x4(qa[h], sQ + swz<D>((lane & 7) + ((lane >> 3) & 1) * 8, 16 * (kk + h) + (lane >> 4) * 8));
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    uint32_t r[4];
                    ldsm_x4(r, sK + swz<D>(r0 + 8 * j + (lane & 7), 16 * kk + (lane >> 3) * 8));
                    mma16816<T>(s[j], qa[0], r[0], r[1]);
                    mma16816<T>(s[j], qa[1], r[2], r[3]);
                }
            }
#pragma unroll
            for (int ri = 0; ri < 2; ri++) {
#pragma unroll
                for (int j = 0; j < 2; j++)
#pragma unroll
                    for (int e2 = 0; e2 < 2; e2++) {
                        const int kc = 8 * j + 2 * tig + e2;
                        const float v = kc < nv && kc >= lv ? s[j][2 * ri + e2] * p.scale_log2 : -INFINITY;
                        s[j][2 * ri + e2] = v;
                        mx[ri] = fmaxf(mx[ri], v);
                    }
                mx[ri] = quad_max(mx[ri]);
            }
        }
        if (tig == 0) {
            smax[warp * 16 + gid] = mx[0];
            smax[warp * 16 + gid + 8] = mx[1];
        }
        if (wq == 0 && lane == 0) shas[grp] = has ? 1 : 0;
        __syncthreads();
        /* the round's row max over all 8 warps; P = exp2(S - max) into sP (bf16 / f16, keys 64 q +
         * 16 w + column of group q's warp w), its row sums per warp into ssum */
        float alpha[2];
#pragma unroll
        for (int ri = 0; ri < 2; ri++) {
            float cm = -INFINITY;
#pragma unroll
            for (int w = 0; w < CD_WARPS; w++) cm = fmaxf(cm, smax[w * 16 + gid + 8 * ri]);
            const float mn = fmaxf(m[ri], cm);
            const float mu = mn == -INFINITY ? 0.f : mn;
            alpha[ri] = exp2f(m[ri] - mu);
            m[ri] = mn;
            if (has) {
                float acc = 0.f;
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    const float p0 = exp2f(s[j][2 * ri] - mu), p1 = exp2f(s[j][2 * ri + 1] - mu);
                    acc += p0 + p1;
                    *reinterpret_cast<uint32_t *>(sP + (gid + 8 * ri) * PS + 64 * grp + r0 + 8 * j + 2 * tig) =
                        DT<T>::pack2(p0, p1);
                }
                acc = quad_sum(acc);
                if (tig == 0) ssum[warp * 16 + gid + 8 * ri] = acc;
            }
        }
        cp_async_wait<0>(); /* V */
        __syncthreads();
#pragma unroll
        for (int ri = 0; ri < 2; ri++) {
            float acc = 0.f;
#pragma unroll
            for (int q = 0; q < CD_GROUPS; q++)
                if (shas[q])
#pragma unroll
                    for (int w = 0; w < CD_GROUP_WARPS; w++) acc += ssum[(q * CD_GROUP_WARPS + w) * 16 + gid + 8 * ri];
            l[ri] = l[ri] * alpha[ri] + acc;
#pragma unroll
            for (int j = 0; j < NT; j++) {
                o[j][2 * ri] *= alpha[ri];
                o[j][2 * ri + 1] *= alpha[ri];
            }
        }
        /* O[:, this warp's columns] += P V over the keys of every group that had a chunk */
#pragma unroll
        for (int q = 0; q < CD_GROUPS; q++) {
            if (!shas[q]) continue;
            const uint16_t *sVq = sQ + 16 * D + q * 2 * 64 * D + 64 * D;
#pragma unroll
            for (int kb = 0; kb < 4; kb++) {
                uint32_t a[4], r[4];
                ldsm_x4(a, sP + ((lane & 7) + ((lane >> 3) & 1) * 8) * PS + 64 * q + 16 * kb + (lane >> 4) * 8);
                ldsm_x4_t(r, sVq + swz<D>(16 * kb + (lane & 7) + ((lane >> 3) & 1) * 8, VC + (lane >> 4) * 8));
                if (NT == 2) {
                    mma16816<T>(o[0], a, r[0], r[1]);
                    mma16816<T>(o[NT - 1], a, r[2], r[3]);
                } else if (warp & 1) {
                    mma16816<T>(o[0], a, r[2], r[3]);
                } else {
                    mma16816<T>(o[0], a, r[0], r[1]);
                }
            }
        }
        if (has) advance();
    }
    /* the partial: this warp's columns of o (unnormalised), and (max, sum) per row from warp 0 */
    float *po = p.apart + (srow * p.nsplit + split) * 16 * D;
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        const int r = gid + 8 * ri;
#pragma unroll
        for (int j = 0; j < NT; j++)
            *reinterpret_cast<float2 *>(po + r * D + 8 * NT * warp + 8 * j + 2 * tig) =
                make_float2(o[j][2 * ri], o[j][2 * ri + 1]);
        if (warp == 0 && tig == 0)
            reinterpret_cast<float2 *>(p.aml)[(srow * p.nsplit + split) * 16 + r] = make_float2(m[ri], l[ri]);
    }
}

/* out / lse of 32 columns of one row (token t, head g*G + r: row r % 16 of head tile r / 16) from the
 * partials of every split.
 * 8 warps, warp w takes splits w, w + 8, ...: all its loads (16 splits a pass) are in flight at once,
 * merged with the warp's own max; then the 8 warps are merged through shared memory. */
#define CD_COMB_WARPS 8
#define CD_COMB_PASS 16
template <typename T, int D> __global__ void __launch_bounds__(CD_COMB_WARPS * 32) k_cd_combine(CdParams p) {
    __shared__ float sm_[CD_COMB_WARPS], sl[CD_COMB_WARPS], sacc[CD_COMB_WARPS][32];
    const int r = blockIdx.x, t = blockIdx.y / (D / 32), dc = blockIdx.y % (D / 32), g = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, d = 32 * dc + lane;
    const int64_t srow = ((int64_t)g * p.R + (r >> 4)) * p.n + t;
    cd_pdl_wait(); /* the partials */
    /* split strides 16 and 16 D */
    const float2 *ml = reinterpret_cast<const float2 *>(p.aml) + srow * p.nsplit * 16 + (r & 15);
    const float *po = p.apart + (srow * p.nsplit * 16 + (r & 15)) * D + d;
    float M = -INFINITY, acc = 0.f, lsum = 0.f;
    for (int sp0 = warp; sp0 < p.nsplit; sp0 += CD_COMB_WARPS * CD_COMB_PASS) {
        float2 mlv[CD_COMB_PASS];
        float ov[CD_COMB_PASS];
#pragma unroll
        for (int u = 0; u < CD_COMB_PASS; u++) {
            const int sp = sp0 + CD_COMB_WARPS * u;
            mlv[u] = sp < p.nsplit ? __ldcg(ml + (int64_t)sp * 16) : make_float2(-INFINITY, 0.f);
            ov[u] = sp < p.nsplit ? __ldcg(po + (int64_t)sp * 16 * D) : 0.f;
        }
        float mx = M;
#pragma unroll
        for (int u = 0; u < CD_COMB_PASS; u++) mx = fmaxf(mx, mlv[u].x);
        const float mu = mx == -INFINITY ? 0.f : mx, a = exp2f(M - mu);
        acc *= a;
        lsum *= a;
#pragma unroll
        for (int u = 0; u < CD_COMB_PASS; u++) {
            const float f = exp2f(mlv[u].x - mu);
            acc += ov[u] * f;
            lsum += mlv[u].y * f;
        }
        M = mx;
    }
    sacc[warp][lane] = acc;
    if (lane == 0) {
        sm_[warp] = M;
        sl[warp] = lsum;
    }
    __syncthreads();
    if (warp) return;
    float Mt = -INFINITY;
#pragma unroll
    for (int w = 0; w < CD_COMB_WARPS; w++) Mt = fmaxf(Mt, sm_[w]);
    const float mu = Mt == -INFINITY ? 0.f : Mt;
    float at = 0.f, lt = 0.f;
#pragma unroll
    for (int w = 0; w < CD_COMB_WARPS; w++) {
        const float f = exp2f(sm_[w] - mu);
        at += sacc[w][lane] * f;
        lt += sl[w] * f;
    }
    const int64_t h = (int64_t)g * p.G + r;
    ((T *)p.out)[((int64_t)t * p.Hq + h) * D + d] = DT<T>::from_f(!(lt <= 0.f) ? at / lt : 0.f);
    if (dc == 0 && lane == 0 && p.lse) p.lse[(int64_t)t * p.Hq + h] = !(lt <= 0.f) ? (mu + __log2f(lt)) * LN2_F : -INFINITY;
}

/* the selection of n queries takes CD_SEL_TOKENS of them a CTA (k_cd_lse4 / k_cd_score4) when there are 4 or
 * more (decode: 1) */
static bool cd_four(int64_t n) { return n >= 4; }

/* k_cd_score's (four: k_cd_score4's, cd_four) shared memory, its static arrays (sq, sc, slse as declared,
 * 128 bytes of alignment slack) and the dynamic rows of cd_score_warp_smem a warp; k_cd_attn's */
static size_t cd_score_smem(int D, int four, int nbt, int ntL) {
    const size_t tpc = four ? CD_SEL_TOKENS : 1;
    return tpc * 16 * D * 2 + (size_t)64 * D * 2 + tpc * 16 * sizeof(float) + 128 + tpc * cd_score_warp_smem(nbt, ntL);
}
static size_t cd_attn_smem_total(int D, int32_t topk_out) {
    const size_t attn = D == 128 ? cd_attn_smem<128>() : cd_attn_smem<64>();
    return attn + (size_t)(topk_out > 0 ? topk_out : 1) * sizeof(int32_t);
}

struct CdPlan {
    int use;            /* the fast path applies */
    int ntL, nt1, nbmax, nbt, target, nsplit;
    size_t off_part, off_bs, off_apart, off_aml, total;
};

static size_t cd_al(size_t x) { return (x + 255) & ~(size_t)255; }

/* Sizes from the host-known shape (one sequence of total_q queries, total_k keys). sizing: an upper
 * bound for every length <= total_k (block scores clamped to what the path accepts, the most
 * splits), for the workspace query. */
static CdPlan cd_plan(const infllm_attn_params *ap, int sizing) {
    CdPlan c;
    memset(&c, 0, sizeof c);
    const int64_t L = ap->total_k, n = ap->total_q;
    c.nbmax = (int)((L + ap->B - 1) / ap->B);
    c.nbt = (int)(((int64_t)ap->s1 * 63 + ap->l1 - 1) / ap->B + 2);
    /* l1 + B <= 65 s1 + 1: no block is touched by three c1 tiles (cd_store_blocks). A sliding window shortens
     * the lists (the kernels start each token's at its window's first block) and needs no other size */
    c.use = ap->num_seqs == 1 && n >= 1 && n <= CD_MAX_TOKENS && head_tiles(ap->G) <= HEAD_TILES_MAX &&
            c.nbt <= 1024 &&
            (int64_t)ap->l1 + ap->B <= 65 * (int64_t)ap->s1 + 1 && (sizing || (c.nbmax <= CD_MAX_BLOCKS && L < INT32_MAX));
    if (!c.use) return c;
    /* sizing: the longest length these kernels serve (CD_MAX_BLOCKS blocks, below 2^31 keys) */
    const int64_t Lk = sizing ? std::min(L, std::min((int64_t)CD_MAX_BLOCKS * ap->B, (int64_t)INT32_MAX - 1)) : L;
    int64_t nL = ap->exact_lse ? d_windows(Lk, ap->l1, ap->s1) : d_windows(Lk, ap->l2, ap->s2);
    c.ntL = (int)((nL + 63) / 64);
    if (c.ntL < 1) c.ntL = 1;
    /* the selection's and the attention's shared memory within the block's limit (at 4+ tokens a CTA the
     * score kernel holds 4 rows of partials: past ~530K keys on the 99 KB of cc 8.6 / 8.9 parts, ~1.4M on
     * a Hopper); else the shared kernels take the call. Longer calls need more, so the workspace query
     * (sizing) takes the most tiles of partials that fit, which covers every length that uses these
     * kernels, and leaves them out where none can (the 48 KB of the fallback properties without a device:
     * k_cd_attn alone needs ~74 KB at d 128) */
    const size_t optin = (size_t)cuda_dev_props().smem_optin;
    const int four = cd_four(n);
    if (sizing) {
        const size_t base = cd_score_smem(ap->D, four, c.nbt, 0), per = cd_score_smem(ap->D, four, c.nbt, 1) - base;
        const int64_t fit = optin > base ? (int64_t)((optin - base) / per) : 0;
        if (c.ntL > fit) c.ntL = (int)fit;
    }
    c.use = c.ntL >= 1 && cd_score_smem(ap->D, four, c.nbt, c.ntL) <= optin &&
            cd_attn_smem_total(ap->D, ap->topk_out) <= optin;
    if (!c.use) return c;
    if (sizing && c.nbmax > CD_MAX_BLOCKS) c.nbmax = CD_MAX_BLOCKS;
    c.nbmax = (c.nbmax + 3) & ~3; /* 16-byte rows: the selection reads each plane 4 blocks at a time */
    c.nt1 = (int)((d_windows(Lk, ap->l1, ap->s1) + 63) / 64);
    const int64_t R = head_tiles(ap->G);
    int rows = (int)(ap->Hkv * n * R);
    /* attention CTAs per (head, head tile, token) sub-row: two per SM over all of them (a sparse decode
     * list of 96 blocks takes 48 of them, one per SM, each attending two blocks at once with its two
     * groups) */
    int target = (2 * cuda_num_sms() + rows - 1) / rows;
    if (target < 1) target = 1;
    if (target > 1024) target = 1024;
    c.target = target;
    c.nsplit = target; /* any list: eps >= len / target entries a split gives <= target splits */
    size_t off = 0;
    c.off_part = off;
    off += cd_al((size_t)ap->Hkv * R * n * 16 * c.ntL * 2 * sizeof(float));
    c.off_bs = off;
    off += cd_al((size_t)ap->Hkv * n * 2 * c.nbmax * sizeof(float));
    c.off_apart = off;
    off += cd_al((size_t)ap->Hkv * R * n * c.nsplit * 16 * ap->D * sizeof(float));
    c.off_aml = off;
    off += cd_al((size_t)ap->Hkv * R * n * c.nsplit * 16 * 2 * sizeof(float));
    c.total = off;
    return c;
}

/* launch with programmatic stream serialization on sm_90 (the kernels wait on the device) */
template <typename... Args>
static infllm_status cd_go(void (*kern)(Args...), dim3 grid, unsigned threads, size_t smem, cudaStream_t st, int pdl,
                           const char *what, CdParams p) {
    cudaLaunchConfig_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.gridDim = grid;
    cfg.blockDim = dim3(threads);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&cfg, kern, p);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return infllm_set_error(INFLLM_ERR_CUDA, "CUDA: launch of %s failed: %s", what, cudaGetErrorString(e));
    }
    return INFLLM_OK;
}

/* PDL on compute capability >= 9.0 where the kernels run code compiled for sm_90 or newer, unless
 * INFLLM_CUDA_NO_PDL=1 (diagnosis: profilers then see each kernel's own time, not the time it spent
 * waiting for its predecessor). A newer GPU than the build's architectures runs PTX JIT-compiled by the
 * driver; from compute_80 PTX (an 80;90a build on a cc 10.x / 12.x part) cd_pdl_wait is empty, and a
 * kernel launched with the attribute would read its predecessor's output without waiting for it. */
static int cd_pdl_ok(void) {
    static std::atomic<int> no_pdl{CUDA_ENV_UNREAD};
    const CudaDevProps d = cuda_dev_props();
    return cuda_env_int("INFLLM_CUDA_NO_PDL", &no_pdl) != 1 && d.cc_major >= 9 && d.code_arch >= 90;
}

template <typename T, int D>
static infllm_status cd_launch(const CdParams &p, const CdPlan &c, int sparse, int need_select, cudaStream_t st) {
    infllm_status s = INFLLM_OK;
    /* with PDL on sm_90: every kernel reads what an earlier one wrote only after its wait. k_cd_lse
     * reads nothing before it, so as the first kernel it may overlap the append (which triggers at
     * its start) or the caller's last kernel; k_cd_attn reads q before its wait, so as the first
     * kernel (dense steps, and sparse steps that take every causal block) it is launched plainly */
    const int pdl_ok = cd_pdl_ok();
    int pdl = pdl_ok;
    void (*attn)(CdParams) = k_cd_attn<T, D, 0>;
    if (sparse && need_select) {
        /* 4 tokens a CTA share each c2 / c1 tile (cd_four) */
        const bool four = cd_four(p.n);
        const unsigned ny = (unsigned)(four ? (p.n + 3) / 4 : p.n);
        const size_t ssm = cd_score_warp_smem(c.nbt, c.ntL) * (four ? 4 : 1);
        void (*lse)(CdParams) = four ? k_cd_lse4<T, D> : k_cd_lse<T, D>;
        void (*score)(CdParams) = four ? k_cd_score4<T, D> : k_cd_score<T, D>;
        s = cd_go(lse, dim3((unsigned)c.ntL, ny, (unsigned)(p.Hkv * p.R)), four ? 128 : 32, 0, st, pdl, "k_cd_lse", p);
        if (!s) s = cuda_func_smem((const void *)score, ssm, "k_cd_score");
        if (!s)
            s = cd_go(score, dim3((unsigned)(c.nt1 > 0 ? c.nt1 : 1), ny, (unsigned)p.Hkv), four ? 128 : 32, ssm, st,
                      pdl, "k_cd_score", p);
        constexpr int TH = CD_WARPS * 32;
        static_assert(CD_MAX_BLOCKS % (4 * TH) == 0 && CD_MAX_BLOCKS / TH > 32, "k_cd_attn: KPT instances");
        attn = c.nbmax <= 8 * TH    ? k_cd_attn<T, D, 8>
               : c.nbmax <= 16 * TH ? k_cd_attn<T, D, 16>
               : c.nbmax <= 32 * TH ? k_cd_attn<T, D, 32>
                                    : k_cd_attn<T, D, CD_MAX_BLOCKS / TH>;
    } else {
        pdl = 0;
    }
    const size_t smem = cd_attn_smem_total(D, p.topk_out);
    if (!s) s = cuda_func_smem((const void *)attn, smem, "k_cd_attn");
    if (!s)
        s = cd_go(attn, dim3((unsigned)p.nsplit, (unsigned)p.n, (unsigned)(p.Hkv * p.R)), CD_WARPS * 32, smem, st,
                  pdl, "k_cd_attn", p);
    pdl = pdl_ok;
    if (!s)
        s = cd_go(k_cd_combine<T, D>, dim3((unsigned)p.G, (unsigned)(p.n * (D / 32)), (unsigned)p.Hkv),
                  CD_COMB_WARPS * 32, 0, st, pdl, "k_cd_combine", p);
    return s;
}

static infllm_status cd_run(const infllm_attn_params *ap, const CdPlan &c, const void *q, const void *k,
                            const void *v, const void *c1, const void *c2, void *out, float *lse, unsigned char *ws,
                            cudaStream_t st) {
    CdParams p;
    memset(&p, 0, sizeof p);
    p.q = (const uint16_t *)q;
    p.k = (const uint16_t *)k;
    p.v = (const uint16_t *)v;
    p.c1 = (const uint16_t *)c1;
    p.c2 = (const uint16_t *)c2;
    p.out = out;
    p.lse = lse;
    p.part = (float *)(ws + c.off_part);
    p.bs = (float *)(ws + c.off_bs);
    p.apart = (float *)(ws + c.off_apart);
    p.aml = (float *)(ws + c.off_aml);
    sel_fill_params(p, ap);
    p.n = (int)ap->total_q;
    p.R = head_tiles(p.G);
    p.L = (int)ap->total_k;
    p.ntL = c.ntL;
    p.nbmax = c.nbmax;
    p.nbt = c.nbt;
    p.sparse = cuda_cd_sparse(ap);
    p.n1 = d_windows(p.L, p.l1, p.s1);
    p.nL = p.exact ? p.n1 : d_windows(p.L, p.l2, p.s2);
    p.e_lo = d_first_untouched_block(p.B, p.l1, p.s1, p.n1);
    int dense_len = 1; /* the longest dense list, wb..qb, of the call's tokens */
    for (int t = 0; t < p.n; t++) {
        const int pos = p.L - p.n + t;
        p.pos[t] = pos;
        p.qb[t] = pos / p.B;
        p.vis1[t] = d_visible(pos, p.l1, p.s1, p.n1);
        p.visL[t] = p.exact ? p.vis1[t] : d_visible(pos, p.l2, p.s2, p.nL);
        p.wlo[t] = (int)d_window_start(pos, ap->window);
        p.wb[t] = d_window_first_block(pos, ap->window, p.B);
        /* the c1 tile (64 kernels) of the first kernel that meets block wb: every tile before it touches only
         * blocks before wb (cd_store_blocks' last block of tile x is kernel 64 x + 63's) */
        p.t1lo[t] = sel_pass2_first_kernel(pos, ap->window, p.B, p.l1, p.s1) / 64;
        dense_len = std::max(dense_len, p.qb[t] + 1 - p.wb[t]);
    }
    /* the splits this call needs (<= the planned ones): its list over at most target CTAs, a
     * multiple of the CTA's CD_GROUPS entries each (the groups attend side by side) */
    const int list_len = p.sparse ? p.topk_out : dense_len;
    p.eps = CD_GROUPS * ((list_len + CD_GROUPS * c.target - 1) / (CD_GROUPS * c.target));
    if (p.eps < CD_GROUPS) p.eps = CD_GROUPS;
    p.nsplit = (list_len + p.eps - 1) / p.eps;
    if (p.nsplit < 1) p.nsplit = 1;
    /* every query's causal blocks all taken (the last query has the most): no stage 1 */
    int need_select = (p.L - 1) / p.B + 1 > p.K;
    if (ap->dtype == INFLLM_DTYPE_BF16)
        return ap->D == 128 ? cd_launch<__nv_bfloat16, 128>(p, c, p.sparse, need_select, st)
                            : cd_launch<__nv_bfloat16, 64>(p, c, p.sparse, need_select, st);
    return ap->D == 128 ? cd_launch<__half, 128>(p, c, p.sparse, need_select, st)
                        : cd_launch<__half, 64>(p, c, p.sparse, need_select, st);
}

/* The stateless few-query call (cuda_attention of one sequence with host lengths, total_q <= 16,
 * any G) on these kernels, over the c1 / c2 that the call has just compressed (rows from 0, as the
 * cache stores them): k_cd_lse + k_cd_score + k_cd_attn (which selects) + k_cd_combine take the place
 * of k_dec_lse / k_dec_score / k_dec_topk, the split stage 2 and k_combine. The selection's arithmetic
 * is the same (see "fast decode step"), so the blocks are too; the output is a different split of
 * the same sums. A dense sequence takes it up to CD_FEWQ_DENSE_MAX queries only: k_cd_attn walks every
 * causal block of each token's row in its own CTAs, so its time grows with the queries, while the
 * split k_flash90 shares each chunk among them (H200, 128K keys, bench/smallq_ab.py --mode dense:
 * 1 / 2 / 4 / 8 queries 4.6x / 1.40x / 0.78x / 0.31x the shared kernels' speed; sparse 1-16 queries
 * 1.2-2.3x at 8K-128K). INFLLM_CUDA_NO_FEWQ_CD=1 keeps the shared kernels (cuda_check runs both).
 * cuda_fewq_cd_bytes: the workspace it needs, 0 when it does not apply. */
#define CD_FEWQ_DENSE_MAX 2
size_t cuda_fewq_cd_bytes(const infllm_attn_params *ap) {
    static std::atomic<int> no_fewq{CUDA_ENV_UNREAD};
    if (cuda_env_int("INFLLM_CUDA_NO_FEWQ_CD", &no_fewq) == 1 || !ap->seqs || ap->num_seqs != 1) return 0;
    if (!cuda_cd_sparse(ap) && ap->total_q > CD_FEWQ_DENSE_MAX) return 0;
    CdPlan c = cd_plan(ap, 0);
    return c.use ? c.total : 0;
}

infllm_status cuda_fewq_cd_launch(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                  const void *c1, const void *c2, void *out, float *lse, void *ws, cudaStream_t st) {
    CdPlan c = cd_plan(ap, 0);
    if (!c.use || !ap->seqs || ap->num_seqs != 1)
        return infllm_set_error(INFLLM_ERR_UNSUPPORTED, "CUDA few-query attention: the decode kernels do not apply");
    return cd_run(ap, c, q, k, v, c1, c2, out, lse, (unsigned char *)ws, st);
}

/* ------------------------------------------------------------- attend ---- */

struct CacheWs {
    size_t off_topk, off_dec, dec_bytes, off_split, split_bytes, total;
};

static size_t al256(size_t x) { return (x + 255) & ~(size_t)255; }

/* The pieces for ap as it stands (one sequence, total_q queries, total_k keys). Both the sparse and
 * the dense needs are counted whatever the mode, so that one size serves every length. */
static CacheWs cache_ws(const infllm_attn_params *ap) {
    CacheWs w;
    memset(&w, 0, sizeof w);
    size_t off = 0;
    w.off_topk = off;
    off += al256((size_t)ap->Hkv * (size_t)ap->total_q * (size_t)(ap->topk_out > 0 ? ap->topk_out : 1) *
                 sizeof(int32_t));
    w.dec_bytes = cuda_dec_select_bytes(ap);
    w.off_dec = off;
    off += al256(w.dec_bytes);
    size_t sb = cuda_flash_split_bytes(ap, 1, ap->topk_out > 0 ? ap->topk_out : 1);
    size_t sd = cuda_flash_split_bytes(ap, 0, 0);
    w.split_bytes = sb > sd ? sb : sd;
    w.off_split = off;
    off += al256(w.split_bytes);
    w.total = off;
    return w;
}

/* the bytes cuda_cache_attend needs for ap as it stands (total_q queries, total_k keys), from its plans */
static size_t attend_bytes(const CdPlan &cd, const CacheWs &w) { return cd.use ? cd.total : w.total; }
extern "C" size_t cuda_cache_attend_bytes(const infllm_attn_params *ap) {
    return attend_bytes(cd_plan(ap, 0), cache_ws(ap));
}

/* The longest length up to ap->total_k at which an attend of ap->total_q queries runs on the decode kernels
 * (their block and shared-memory limits only shrink the usable lengths as they grow), 0 if none: where
 * test_cuda_ws looks for the decode kernels' largest need. */
extern "C" int64_t cuda_cache_decode_max_len(const infllm_attn_params *ap) {
    infllm_attn_params a = *ap;
    auto usable = [&](int64_t L) {
        a.total_k = L;
        a.max_lk = (int32_t)std::min(L, (int64_t)INT32_MAX);
        return cd_plan(&a, 0).use != 0;
    };
    int64_t lo = 0, hi = ap->total_k; /* usable(lo) or lo = 0; find the last usable length */
    if (hi >= 1 && usable(hi)) return hi;
    while (hi - lo > 1) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (usable(mid)) lo = mid;
        else hi = mid;
    }
    return lo;
}

/* The most any call of 1..total_q queries needs (at total_k keys, the cache's capacity: every size grows with
 * the keys). The sizes do not grow monotonically with the query count, so the largest is not always at the
 * most queries: the decode kernels (up to 16 queries) split each (KV head, head tile, query) row over
 * ceil(2 SMs / rows) CTAs, n x ceil(264 / (2 n)) partials on an H200 (8 queries: 136, 9 queries: 135); the
 * small-batch selection (up to 64) stops at 128 rows for groups below 16 that do not divide it; the flash
 * launch splits its tiles while they number fewer than the SMs (about 2 SMs' CTAs in all, whatever the
 * tile count). So every count up to 64 is sized, and above that the last count of each flash tile count
 * (its sizes are constant within one, the top-k and grouping tables grow with the queries) while the
 * tiles may still split, and total_q itself. */
static size_t cache_ws_for(const infllm_attn_params *ap, int64_t n) {
    infllm_attn_params a = *ap;
    a.total_q = n;
    a.max_lq = (int32_t)n;
    const size_t cd = cd_plan(&a, 1).total;
    /* the decode kernels at the full length: at every shorter one too (their limits are on the length) */
    if (cd_plan(&a, 0).use) return cd;
    const size_t other = cache_ws(&a).total;
    return other > cd ? other : cd;
}

extern "C" infllm_status cuda_cache_workspace_size(const infllm_attn_params *ap, size_t *bytes) {
    infllm_status s = cuda_check_supported(ap, "cache attend");
    if (s) return s;
    const int64_t nq = ap->total_q;
    size_t best = cache_ws_for(ap, nq);
    for (int64_t n = 1; n <= nq && n <= 64; n++) {
        size_t x = cache_ws_for(ap, n);
        if (x > best) best = x;
    }
    const int sms = cuda_num_sms();
    for (int sparse = 0; sparse < 2 && nq > 64; sparse++) {
        const int64_t tt = cuda_flash_tile_tokens(ap, sparse); /* the same for every count above 16 / G */
        for (int64_t tiles = 64 / tt + 1; tiles <= sms && tiles * tt < nq; tiles++) {
            size_t x = cache_ws_for(ap, tiles * tt);
            if (x > best) best = x;
        }
    }
    *bytes = best;
    return INFLLM_OK;
}

extern "C" infllm_status cuda_cache_attend(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                           const void *c1, const void *c2, void *out, float *lse) {
    infllm_status s = cuda_check_supported(ap, "cache attend");
    if (!s) /* the cache's own storage too: a cache made while another GPU was current */
        s = cuda_check_pointers("cache attend",
                                {{q, "q", 16}, {out, "out", 16}, {lse, "lse", 4}, {k, "the cache's keys", 2}});
    if (s) return s;
    if (ap->total_q == 0) return INFLLM_OK;
    if (ap->num_seqs != 1 || !ap->seqs)
        return infllm_set_error(INFLLM_ERR_UNSUPPORTED, "CUDA cache attend: one sequence with host lengths expected");
    cudaStream_t st = (cudaStream_t)ap->cuda_stream;
    const int sparse = ap->seqs[0].sparse;
    CdPlan cd = cd_plan(ap, 0);
    CacheWs w = cache_ws(ap);
    unsigned char *ws = NULL;
    int owned = 0;
    s = cuda_workspace_acquire(ap, attend_bytes(cd, w), "CUDA cache attend", "infllm_cache_workspace_size", st, &ws,
                               &owned);
    if (s) return s;
    void *split = w.split_bytes ? ws + w.off_split : NULL;
    if (cd.use) {
        s = cd_run(ap, cd, q, k, v, c1, c2, out, lse, ws, st);
    } else if (ap->window > 0 && (!sparse || cuda_window_selects_all(ap))) {
        /* dense, or sparse selecting every block of the window: the windowed dense kernel (an inactive window on a
         * wider selection takes the sparse path below, whose kernels mask by it: no key) */
        s = cuda_flash_launch(ap, q, k, v, NULL, 0, out, lse, 0, split, w.split_bytes, st);
    } else if (sparse) {
        int32_t *topk = (int32_t *)(ws + w.off_topk);
        /* the stored kernels: one sequence, rows from 0 (cu_c1 / cu_c2 NULL) */
        if (w.dec_bytes)
            s = cuda_dec_select_launch(ap, q, c1, c2, NULL, NULL, topk, ws + w.off_dec, st);
        else
            s = cuda_select_launch(ap, q, c1, ap->exact_lse ? c1 : c2, NULL, NULL, NULL, topk, 1, ap->total_n1,
                                   ap->exact_lse ? ap->total_n1 : ap->total_n2, st);
        if (!s && ap->topk_out > 0)
            s = cuda_flash_launch(ap, q, k, v, topk, ap->topk_out, out, lse, 1, split, w.split_bytes, st);
    } else {
        s = cuda_flash_launch(ap, q, k, v, NULL, 0, out, lse, 2, split, w.split_bytes, st);
    }
    if (owned) cudaFreeAsync(ws, st);
    return s;
}
