/*
 * cpu_attn.c: the fast CPU path of InfLLM-V2 (cpu_* in src/core/internal.h).
 *
 * Layout of the work (per sequence, per KV head g):
 *  - K and V of the head are packed once, in 64-key tiles, lazily (a tile is packed the first
 *    time any thread needs it: a decode step only touches its selected blocks):
 *      Kp [tiles*4 groups][D][16] (16 keys per vector), Vp [keys][D].
 *    Dense packs f32. Stage 2 keeps 16-bit storage as 16-bit in the same layout and widens a
 *    tile into per-thread f32 scratch at each tile step (exact, so results are the same bits):
 *    its dynamically selected tiles come from far memory for a few tokens each, and half the
 *    bytes is what such a tile costs.
 *  - Attention (dense and stage 2) is tiled online softmax. A row tile is several query tokens
 *    x the G query heads of the KV head (GQA fold): every K/V tile loaded feeds all G heads.
 *    Dense: groups of max(1, 64/G) consecutive tokens over key tiles 0..p.
 *    Sparse: the same groups walk the union of their selected blocks in ascending order; for a
 *    block, only the tokens that selected it compute (their rows are contiguous runs). Every
 *    row sees its tiles in ascending key order with the same tile boundaries whatever the
 *    grouping, so a decode step reproduces the prefill result bit for bit.
 *  - Stage 1 is fused with the group sum, max-pool and top-k: per token group the scores of
 *    one token are a row of n1 floats (working memory linear in T, no T x n1 buffer); a
 *    token whose causal block count is <= K selects all of them without stage 1.
 *  - Top-k: 64-bit keys (score, ~index) and quickselect for the K-th largest (no sort).
 * Threads: OpenMP over token groups (dynamic schedule, longest first), ap->num_threads. A call of fewer tokens than
 * its threads cover (a decode step) cuts each KV head finer instead (few_tokens): a token's rows in segments of
 * ATTN_SEG_TILES key tiles, stage 1's tiles side by side. A row's online softmax restarts at every segment on every
 * path, so neither the thread count nor the path changes a bit of any result.
 */
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#include <pthread.h>
#endif

#include "cpu_kern.h"
#include "cpu_stats.h"
#include "cpu_x86.h"
#include "dtype.h"
#include "internal.h"

/* ------------------------------------------------------------ dispatch ---- */

/* x86 levels ascend; NEON is aarch64's one level above the portable kernels */
enum { LVL_SCALAR = 0, LVL_AVX2 = 1, LVL_AVX512 = 2, LVL_AVX512BF16 = 3, LVL_NEON = 1 };

static int detect_level(void) {
    int hw = LVL_SCALAR;
#ifdef INFLLM_CPU_X86
    if (infllm_x86_has(INFLLM_X86_LEVEL_AVX2)) hw = LVL_AVX2;
    if (infllm_x86_has(INFLLM_X86_LEVEL_AVX512)) {
        hw = LVL_AVX512;
        if (infllm_x86_has(INFLLM_X86_AVX512BF16)) hw = LVL_AVX512BF16;
    }
#elif defined(INFLLM_CPU_NEON)
    hw = LVL_NEON;
#endif
    const char *env = getenv("INFLLM_SIMD");
    if (env && *env) {
        int want = hw;
        if (!strcmp(env, "scalar")) want = LVL_SCALAR;
        else if (!strcmp(env, "avx2")) want = LVL_AVX2;
        else if (!strcmp(env, "avx512")) want = LVL_AVX512;
        if (want < hw) hw = want; /* only ever lower */
    }
    return hw;
}

static int simd_level(void) {
    static atomic_int cached = -1;
    int v = atomic_load(&cached);
    if (v < 0) {
        v = detect_level();
        atomic_store(&cached, v);
    }
    return v;
}

const char *cpu_simd_level_name(void) {
#ifdef INFLLM_CPU_NEON
    return simd_level() >= LVL_NEON ? "neon" : "scalar";
#endif
    switch (simd_level()) {
    case LVL_AVX512BF16: return "avx512-bf16";
    case LVL_AVX512: return "avx512";
    case LVL_AVX2: return "avx2";
    default: return "scalar";
    }
}

const cpu_kern *cpu_kern_get(void) {
#ifdef INFLLM_CPU_X86
    int l = simd_level();
    if (l >= LVL_AVX512) return &cpu_kern_avx512;
    if (l >= LVL_AVX2) return &cpu_kern_avx2;
#elif defined(INFLLM_CPU_NEON)
    if (simd_level() >= LVL_NEON) return &cpu_kern_neon;
#endif
    return &cpu_kern_scalar;
}

/* Whether the AMX kernels run by default where they can (1), or only under INFLLM_BF16_DOT=amx / 1 (0) */
#define CPU_AMX_DEFAULT 1
int cpu_amx_default(void) { return CPU_AMX_DEFAULT; }

/* 0: off, 1: vdpbf16ps (cpu_dot16_avx512bf16), 2: AMX tiles (cpu_dot16_amx). INFLLM_BF16_DOT: 0 off; 1 the best the
 * CPU has (AMX where granted, else vdpbf16ps); avx512bf16 / amx that one (off where the CPU lacks it); unset, AMX where
 * granted, vdpbf16ps on AMD (on Intel's AVX512_BF16 parts without AMX it runs at half the f32 FMA rate). */
static int dot16_choice(void) {
#ifdef INFLLM_CPU_X86
    static atomic_int cached = -1;
    int v = atomic_load(&cached);
    if (v < 0) {
        v = 0;
        if (simd_level() >= LVL_AVX512BF16) { /* INFLLM_SIMD below avx512-bf16 turns them off too */
            const char *e = getenv("INFLLM_BF16_DOT");
            if (e && *e) {
                if (strcmp(e, "0") == 0) v = 0;
                else if (strcmp(e, "avx512bf16") == 0) v = 1;
                else if (strcmp(e, "amx") == 0) v = infllm_x86_amx_ready() ? 2 : 0;
                else v = infllm_x86_amx_ready() ? 2 : 1; /* "1" (any other value: on) */
            } else {
                v = CPU_AMX_DEFAULT && infllm_x86_amx_ready() ? 2 : infllm_x86_has(INFLLM_X86_VENDOR_AMD) ? 1 : 0;
            }
        }
        atomic_store(&cached, v);
    }
    return v;
#else
    return 0;
#endif
}

/* tests/amx_emu_hook.c: the AMX kernels' source with the tile instructions emulated, in place of whatever the CPU
 * would run (set before any attention work; tests only) */
static const cpu_dot16 *dot16_test_override;
void cpu_dot16_test_override(const cpu_dot16 *k) { dot16_test_override = k; }

const cpu_dot16 *cpu_dot16_get(void) {
    if (dot16_test_override) return dot16_test_override;
#ifdef INFLLM_CPU_X86
    switch (dot16_choice()) {
    case 1: return &cpu_dot16_avx512bf16;
#ifdef INFLLM_CPU_AMX
    case 2: return &cpu_dot16_amx;
#endif
    default: return NULL;
    }
#else
    return NULL;
#endif
}

int cpu_bf16_dot_on(void) { return dot16_test_override ? 2 : dot16_choice(); }

const cpu_dot16 *cpu_dot16_for(infllm_dtype dt) { return dt == INFLLM_DTYPE_BF16 ? cpu_dot16_get() : NULL; }

int cpu_default_threads(void) {
#ifdef _OPENMP
    int n = omp_get_num_procs();
    return n > 0 ? n : 1;
#else
    return 1; /* built without OpenMP: the CPU path runs on one thread */
#endif
}

#if defined(_OPENMP) && defined(__unix__)
/* A process forked after the library ran a parallel region (a server's or a data loader's workers: Python's
 * multiprocessing, PyTorch's DataLoader) inherits GCC's OpenMP runtime without its thread pool, and its first
 * parallel region of more than one thread waits forever for threads that are not there. Such a child runs its
 * calls on one thread, as PyTorch's do (the results do not depend on the thread count); a child forked before any
 * parallel region keeps its threads. Process-wide, set once: atomics (no other mutable globals in the library). */
static atomic_int g_pool_used;     /* a call resolved more than one thread in this process */
static atomic_int g_forked_after;  /* this process was forked after that (or descends from one that was) */
static pthread_once_t g_atfork_once = PTHREAD_ONCE_INIT;
static void on_fork_child(void) {
    if (atomic_load(&g_pool_used)) atomic_store(&g_forked_after, 1);
}
static void register_atfork(void) { (void)pthread_atfork(NULL, NULL, on_fork_child); }
#endif

int cpu_call_threads(int32_t requested) {
    int n = requested > 0 ? requested : cpu_default_threads();
#if defined(_OPENMP) && defined(__unix__)
    pthread_once(&g_atfork_once, register_atfork);
    if (atomic_load(&g_forked_after)) return 1;
#endif
    return n;
}

int cpu_team(int nth) {
#if defined(_OPENMP) && defined(__unix__)
    /* noted where a region starts, not where a call resolves its count: a process that ran only REF or CUDA calls
     * (or CPU calls on one thread) started no pool, and its forked children keep their threads */
    if (nth > 1 && !atomic_load(&g_pool_used)) atomic_store(&g_pool_used, 1);
#endif
    return nth;
}

/* --------------------------------------------------------------- stats ---- */

static cpu_attn_stats *g_stats;
void cpu_attn_stats_set(cpu_attn_stats *s) { g_stats = s; }

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

/* working-memory accounting of the calling thread (each call's allocations are made by the thread
 * that called it, not by its OpenMP team), so that calls from several threads do not race */
static _Thread_local size_t g_ws_cur, g_ws_peak;
static void *ws_alloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (p) {
        g_ws_cur += n;
        if (g_ws_cur > g_ws_peak) g_ws_peak = g_ws_cur;
    }
    return p;
}
static void ws_free(void *p, size_t n) {
    if (!p) return;
    free(p);
    g_ws_cur -= n;
}

/* ------------------------------------------------------------- context ---- */

typedef struct ctx {
    const infllm_attn_params *ap;
    const cpu_kern *kn;
    size_t es; /* element size of the storage dtype */
    int nth;
    const cpu_kv_tiles *kvt; /* the decode cache's packed K/V (NULL: pack per call) */
    const cpu_dot16 *dot;    /* non-NULL: bf16 K / V packed in the dot kernels' pair layouts (cpu_dot16_for) */
    int few;                 /* the sequence at hand takes the few-token path (few_tokens), its heads one by one */
} ctx;

/* Packing of one head's keys (or compressed keys) and values, in 64-key tiles. Elements are f32,
 * or (half: attention K/V of 16-bit storage) the storage's own 16-bit values in the same layout,
 * widened to f32 (exactly) into per-thread scratch when a tile step uses them: half the bytes of
 * a tile to fetch, which is what a dynamically selected (cold) tile costs. */
typedef struct kvpack {
    void *K;            /* [ntile*4][D][16] (dot: [ntile*4][D/2][16][2]) */
    void *V;            /* [ntile*64][D] (dot: [ntile*32][D][2]) or NULL */
    int half;           /* elements are 16-bit storage values (else f32) */
    int dot;            /* (with half) bf16 in the dot kernels' pair layouts (cpu_kern.h, cpu_dot16), not [.][D][16] */
    atomic_int *state;  /* per tile: 0 empty, 1 packing, 2 ready */
    int ntile, n;       /* tiles, rows */
    int borrowed;       /* K/V point into a cpu_kv_tiles (all tiles ready, not freed here) */
    const char *kb, *vb;/* row 0 of the source (head g), row stride `stride` bytes */
    size_t stride;
    size_t k_bytes;     /* bytes of K (and of V when present) */
    uint64_t *vbad;     /* [ntile] (with V) the tile's keys whose V row holds a NaN / inf (tile_step's care) */
} kvpack;

/* bytes of one packed element: 16-bit storage values (half) or f32 */
static inline size_t pack_elem_bytes(int half) { return half ? sizeof(uint16_t) : sizeof(float); }
static inline size_t kvpack_elem_bytes(const kvpack *p) { return pack_elem_bytes(p->half); }
/* whether the decode cache's K / V tiles hold its 16-bit values (a bf16 / f16 cache), else f32 */
static inline int kv_tiles_half(const cpu_kv_tiles *t) { return infllm_dtype_size(t->dtype) == 2; }
/* 64-row tiles of one KV head in head_elems elements of D columns (the cache's vbad words a head) */
static inline size_t tiles_per_head(size_t head_elems, int32_t D) { return head_elems / ((size_t)CPU_KT * D); }

/* half16: keep 16-bit K/V as 16-bit (stage 2, where most tiles are fetched cold for a few tokens;
 * dense keeps f32 tiles: it reuses each tile for up to 1024 rows and would only pay the widening) */
static int kvpack_init(const ctx *c, kvpack *p, const void *k, const void *v, int64_t row0, int n, int g,
                       int half16) {
    const infllm_attn_params *ap = c->ap;
    memset(p, 0, sizeof *p);
    p->n = n;
    p->ntile = (n + CPU_KT - 1) / CPU_KT;
    if (v && c->kvt && row0 == 0 && n <= c->kvt->rows) { /* decode cache: packed as tokens arrived */
        p->half = kv_tiles_half(c->kvt);
        p->dot = c->kvt->dot;
        const size_t off = (size_t)g * c->kvt->head_elems * kvpack_elem_bytes(p);
        p->K = (char *)c->kvt->K + off;
        p->V = (char *)c->kvt->V + off;
        p->vbad = c->kvt->vbad + (size_t)g * tiles_per_head(c->kvt->head_elems, ap->D);
        p->borrowed = 1;
        return 0;
    }
    p->dot = c->dot != NULL; /* dense and the compressed keys too: the dot kernels read bf16 as it is */
    p->half = p->dot || (half16 && v && c->es == 2);
    size_t tile_elems = (size_t)CPU_KT * ap->D;
    size_t nk = (size_t)p->ntile * tile_elems * kvpack_elem_bytes(p);
    p->k_bytes = nk;
    p->K = ws_alloc(nk);
    p->V = v ? ws_alloc(nk) : NULL;
    p->state = ws_alloc((size_t)(p->ntile + 1) * sizeof(atomic_int));
    p->vbad = v ? ws_alloc((size_t)(p->ntile + 1) * sizeof(uint64_t)) : NULL;
    if (!p->K || (v && (!p->V || !p->vbad)) || !p->state) return -1;
    for (int t = 0; t < p->ntile; t++) atomic_init(&p->state[t], 0);
    p->stride = (size_t)ap->kv_tok * c->es;
    p->kb = (const char *)k + ((size_t)row0 * ap->kv_tok + (size_t)g * ap->D) * c->es;
    p->vb = v ? (const char *)v + ((size_t)row0 * ap->kv_tok + (size_t)g * ap->D) * c->es : NULL;
    return 0;
}

/* A pack of compressed keys x (level 1: c1, 2: c2; no values) of head g, n rows from row0: the decode cache's tiles
 * where it holds them (its own c1 / c2 from row 0, packed as the kernels completed), else kvpack_init's */
static int kvpack_init_compressed(const ctx *c, kvpack *p, const void *x, int64_t row0, int n, int g, int level) {
    const cpu_kv_tiles *t = c->kvt;
    if (t && row0 == 0 && n <= (level == 1 ? t->rows1 : t->rows2)) {
        memset(p, 0, sizeof *p);
        p->n = n;
        p->ntile = (n + CPU_KT - 1) / CPU_KT;
        p->dot = p->half = t->dot;
        p->K = (char *)(level == 1 ? t->C1 : t->C2) +
               (size_t)g * (level == 1 ? t->c1_floats : t->c2_floats) * kvpack_elem_bytes(p);
        p->borrowed = 1;
        return 0;
    }
    return kvpack_init(c, p, x, NULL, row0, n, g, 0);
}

static void kvpack_free(kvpack *p) {
    if (p->borrowed) {
        memset(p, 0, sizeof *p);
        return;
    }
    ws_free(p->K, p->k_bytes);
    ws_free(p->V, p->k_bytes);
    ws_free(p->state, (size_t)(p->ntile + 1) * sizeof(atomic_int));
    ws_free(p->vbad, (size_t)(p->ntile + 1) * sizeof(uint64_t));
    memset(p, 0, sizeof *p);
}

/* The one definition of the tile layout: element (key j, dim 0) of a packed K [tiles*4][D][16]
 * is at this index; dim d is d * CPU_KG further. V is [rows][D]. */
static inline size_t kpack_index(int D, int64_t j) {
    int n = (int)(j % CPU_KT);
    return (size_t)(j / CPU_KT) * CPU_KT * D + (size_t)(n / CPU_KG) * D * CPU_KG + (size_t)(n % CPU_KG);
}

/* Row j of a packed f32 K / V pair: from storage (ksrc/vsrc, vsrc may be NULL with V NULL), or
 * zeros when ksrc is NULL (cpu_kern.h; the backward packs its tiles with it too). */
void cpu_pack_row(const cpu_kern *kn, infllm_dtype dt, int D, float *K, float *V, int64_t j, const void *ksrc,
                  const void *vsrc) {
    float row[256];
    float *kg = K + kpack_index(D, j);
    if (ksrc) {
        kn->load(row, ksrc, dt, D);
        for (int d = 0; d < D; d++) kg[d * CPU_KG] = row[d];
        if (V) kn->load(V + (size_t)j * D, vsrc, dt, D);
    } else {
        for (int d = 0; d < D; d++) kg[d * CPU_KG] = 0.0f;
        if (V) memset(V + (size_t)j * D, 0, (size_t)D * sizeof(float));
    }
}

/* cpu_pack_row for 16-bit storage kept as is (kvpack.half): the same layout, 16-bit elements */
static void pack_row16(int D, uint16_t *K, uint16_t *V, int64_t j, const uint16_t *ksrc, const uint16_t *vsrc) {
    uint16_t *kg = K + kpack_index(D, j);
    for (int d = 0; d < D; d++) kg[d * CPU_KG] = ksrc ? ksrc[d] : 0;
    if (ksrc) memcpy(V + (size_t)j * D, vsrc, (size_t)D * sizeof(uint16_t));
    else memset(V + (size_t)j * D, 0, (size_t)D * sizeof(uint16_t));
}

/* The pair layouts of the dot kernels (cpu_kern.h, cpu_dot16): the element (key j, dim 0) of K, dim d at
 * (d / 2) * 2 * CPU_KG + (d & 1) further; of V, dim d at 2 d further. */
static inline size_t dot16_kindex(int D, int64_t j) {
    int n = (int)(j % CPU_KT);
    return (size_t)(j / CPU_KT) * CPU_KT * D + (size_t)(n / CPU_KG) * D * CPU_KG + 2 * (size_t)(n % CPU_KG);
}
static inline size_t dot16_vindex(int D, int64_t j) {
    int n = (int)(j % CPU_KT);
    return (size_t)(j / CPU_KT) * CPU_KT * D + (size_t)(n / 2) * 2 * D + (size_t)(n & 1);
}

/* pack_row16 in the pair layouts (kvpack.dot) */
static void pack_row_dot16(int D, uint16_t *K, uint16_t *V, int64_t j, const uint16_t *ksrc, const uint16_t *vsrc) {
    uint16_t *kg = K + dot16_kindex(D, j), *vg = V ? V + dot16_vindex(D, j) : NULL;
    for (int d = 0; d < D; d++) kg[(d >> 1) * 2 * CPU_KG + (d & 1)] = ksrc ? ksrc[d] : 0;
    if (V)
        for (int d = 0; d < D; d++) vg[2 * d] = ksrc ? vsrc[d] : 0;
}

void cpu_pack_row_dot16(int D, uint16_t *K, int64_t j, const uint16_t *src) { pack_row_dot16(D, K, NULL, j, src, NULL); }

/* Row j into packed K / V of any element kind: bf16 in the pair layouts (dot: pack_row_dot16), 16-bit storage
 * values kept (half: pack_row16) or widened to f32 (cpu_pack_row); ksrc NULL zeroes the row */
static void pack_row_as(const cpu_kern *kn, infllm_dtype dt, int D, int half, int dot, void *K, void *V, int64_t j,
                        const void *ksrc, const void *vsrc) {
    if (dot) pack_row_dot16(D, K, V, j, ksrc, vsrc);
    else if (half) pack_row16(D, K, V, j, ksrc, vsrc);
    else cpu_pack_row(kn, dt, D, K, V, j, ksrc, vsrc);
}

/* whether a row of n storage values of dtype dt holds a NaN or an infinity (all exponent bits set) */
static int row_nonfinite(const void *x, infllm_dtype dt, int n) {
    unsigned acc = 0;
    if (infllm_dtype_size(dt) == 2) {
        const uint16_t *h = x, e = dt == INFLLM_DTYPE_BF16 ? 0x7f80 : 0x7c00;
#pragma omp simd reduction(| : acc)
        for (int i = 0; i < n; i++) acc |= (h[i] & e) == e;
    } else {
        const float *f = x;
#pragma omp simd reduction(| : acc)
        for (int i = 0; i < n; i++) acc |= !isfinite(f[i]);
    }
    return acc != 0;
}

static void pack_tile(const ctx *c, kvpack *p, int t) {
    /* a tile past the last row is zeroed whole (it is contiguous in K and V) before its rows are packed: row by row,
     * a zero K row is D stores 16 floats apart, most of the packing of short sequences' tiles */
    const int64_t j0 = (int64_t)t * CPU_KT;
    const int nin = p->n - j0 >= CPU_KT ? CPU_KT : p->n > j0 ? (int)(p->n - j0) : 0;
    if (nin < CPU_KT) {
        const size_t tb = (size_t)CPU_KT * c->ap->D * kvpack_elem_bytes(p);
        memset((char *)p->K + (size_t)t * tb, 0, tb);
        if (p->V) memset((char *)p->V + (size_t)t * tb, 0, tb);
    }
    uint64_t vbad = 0;
    for (int n = 0; n < nin; n++) {
        int64_t j = j0 + n;
        const char *ks = p->kb + (size_t)j * p->stride;
        const char *vs = p->V ? p->vb + (size_t)j * p->stride : NULL;
        pack_row_as(c->kn, c->ap->dtype, c->ap->D, p->half, p->dot, p->K, p->V, j, ks, vs);
        if (vs && row_nonfinite(vs, c->ap->dtype, c->ap->D)) vbad |= 1ull << n;
    }
    if (p->vbad) p->vbad[t] = vbad;
}

/* ------------------------------------------------- decode-cache tiles ---- */

static size_t tile_floats(int64_t rows, int32_t D) { return (size_t)((rows + CPU_KT - 1) / CPU_KT * CPU_KT) * (size_t)D; }

infllm_status cpu_kv_tiles_init(cpu_kv_tiles *t, infllm_dtype dtype, int32_t Hkv, int32_t D, int64_t capacity,
                                int64_t n1cap, int64_t n2cap) {
    memset(t, 0, sizeof *t);
    t->Hkv = Hkv;
    t->D = D;
    t->dtype = dtype;
    t->dot = cpu_dot16_for(dtype) != NULL;
    const size_t kv_es = pack_elem_bytes(kv_tiles_half(t));
    t->head_elems = tile_floats(capacity, D);
    t->c1_floats = tile_floats(n1cap, D);
    t->c2_floats = tile_floats(n2cap, D);
    const size_t ntiles = tiles_per_head(t->head_elems, D);
    const size_t c_es = pack_elem_bytes(t->dot); /* c1 / c2: f32, or bf16 for the dot kernels */
    t->bytes = (size_t)Hkv * (2 * t->head_elems * kv_es + (t->c1_floats + t->c2_floats) * c_es +
                              ntiles * sizeof(uint64_t));
    /* zero rows past the length: the padding pack_tile would write */
    t->K = calloc((size_t)Hkv * t->head_elems, kv_es);
    t->V = calloc((size_t)Hkv * t->head_elems, kv_es);
    t->C1 = calloc((size_t)Hkv * t->c1_floats + 1, c_es);
    t->C2 = calloc((size_t)Hkv * t->c2_floats + 1, c_es);
    t->vbad = calloc((size_t)Hkv * ntiles + 1, sizeof(uint64_t));
    if (!t->K || !t->V || !t->C1 || !t->C2 || !t->vbad) {
        cpu_kv_tiles_free(t);
        return infllm_set_error(INFLLM_ERR_NOMEM, "out of memory: packed K/V tiles need %zu bytes", t->bytes);
    }
    return INFLLM_OK;
}

void cpu_kv_tiles_free(cpu_kv_tiles *t) {
    if (!t) return;
    free(t->K);
    free(t->V);
    free(t->C1);
    free(t->C2);
    free(t->vbad);
    memset(t, 0, sizeof *t);
}

/* rows [*have, rows) of x [., Hkv, D] (V too where v) packed into head g's tiles of K (and V), or rows [rows, *have)
 * zeroed back; *have = rows. half: the tiles hold x's 16-bit values (pack_row16; dot: in the pair layouts,
 * pack_row_dot16), else f32 (cpu_pack_row). */
static void tiles_follow(const cpu_kern *kn, infllm_dtype dt, int32_t Hkv, int32_t D, int half, int dot, void *K,
                         void *V,
                         size_t head_elems, const void *x, const void *v, int64_t *have, int64_t rows,
                         uint64_t *vbad) {
    const size_t es = infllm_dtype_size(dt), tok = (size_t)Hkv * (size_t)D * es;
    const size_t head_bytes = head_elems * pack_elem_bytes(half), ntiles = tiles_per_head(head_elems, D);
    for (int g = 0; g < Hkv; g++) {
        void *Kg = (char *)K + (size_t)g * head_bytes, *Vg = V ? (char *)V + (size_t)g * head_bytes : NULL;
        uint64_t *vb = vbad ? vbad + (size_t)g * ntiles : NULL;
        for (int64_t j = *have; j < rows; j++) { /* appended rows */
            const char *vs = v ? (const char *)v + (size_t)j * tok + (size_t)g * D * es : NULL;
            pack_row_as(kn, dt, D, half, dot, Kg, Vg, j, (const char *)x + (size_t)j * tok + (size_t)g * D * es,
                        vs);
            if (vb && vs && row_nonfinite(vs, dt, D)) vb[j / CPU_KT] |= 1ull << (j % CPU_KT);
        }
        for (int64_t j = rows; j < *have; j++) { /* truncated rows back to zero padding */
            pack_row_as(kn, dt, D, half, dot, Kg, Vg, j, NULL, NULL);
            if (vb) vb[j / CPU_KT] &= ~(1ull << (j % CPU_KT));
        }
    }
    *have = rows;
}

void cpu_kv_tiles_set_rows(cpu_kv_tiles *t, const void *k, const void *v, const void *c1, const void *c2, int64_t rows,
                           int64_t n1, int64_t n2) {
    const cpu_kern *kn = cpu_kern_get();
    tiles_follow(kn, t->dtype, t->Hkv, t->D, kv_tiles_half(t), t->dot, t->K, t->V, t->head_elems, k, v, &t->rows,
                 rows, t->vbad);
    tiles_follow(kn, t->dtype, t->Hkv, t->D, t->dot, t->dot, t->C1, NULL, t->c1_floats, c1, NULL, &t->rows1, n1, NULL);
    tiles_follow(kn, t->dtype, t->Hkv, t->D, t->dot, t->dot, t->C2, NULL, t->c2_floats, c2, NULL, &t->rows2, n2, NULL);
}

/* Makes tile t ready (packs it, or waits for the thread that does). */
static void kvpack_ensure(const ctx *c, kvpack *p, int t) {
    if (p->borrowed) return;
    if (atomic_load_explicit(&p->state[t], memory_order_acquire) == 2) return;
    int expect = 0;
    if (atomic_compare_exchange_strong(&p->state[t], &expect, 1)) {
        pack_tile(c, p, t);
        atomic_store_explicit(&p->state[t], 2, memory_order_release);
        return;
    }
    while (atomic_load_explicit(&p->state[t], memory_order_acquire) != 2) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
}

static void kvpack_all(const ctx *c, kvpack *p) {
    if (p->borrowed) return; /* the decode cache's: all ready (no team woken for nothing) */
    int nt = p->ntile;
#pragma omp parallel for schedule(dynamic, 4) num_threads(cpu_team(c->nth))
    for (int t = 0; t < nt; t++) kvpack_ensure(c, p, t);
}

/* ------------------------------------------------------------- scratch ---- */

typedef struct scratch {
    float *Q, *O, *S, *P;     /* [RM][D], [RM][D], [RM][64], [RM][64] */
    float *Oa, *ma, *la;      /* [RM][D], [RM], [RM]: attention's rows over their finished segments (seg_merge) */
    int *segn;                /* [MT] tiles of the token's current segment so far */
    float *Kw, *Vw;           /* [64*D] one tile of a 16-bit pack widened to f32 (attention only) */
    float *Vs;                /* [64*D] an f32 pack's V tile with its NaN / inf values zeroed (tile_step; lazily) */
    uint16_t *Q16;            /* [RM][D] the Q rows as bf16 (dot packs: the dot kernels' Q) */
    uint16_t *Vs16;           /* [64*D] a dot pack's V tile with its NaN / inf values zeroed (tile_step; lazily) */
    float *m, *l, *alpha, *c; /* [RM] */
    float *sm, *sl;           /* [RM] per-slot copies of m, l for one tile step */
    int *lo, *hi, *ridx;      /* [RM] */
    uint64_t *kmask;          /* [RM] key mask of each slot in the current tile */
    uint64_t *tiles;          /* [ntile] per key tile: which tokens of the group use it */
    int *pos, *cur;           /* [MT] */
    float *tok;               /* [MT][n1] stage-1 scores of the group's tokens */
    uint64_t *keys, *tmp;     /* [nblocks] */
} scratch;

/* what a pack's tile steps need in scratch: 0 nothing (f32, or no attention), 1 its tiles widened (a 16-bit pack),
 * 2 the Q rows as bf16 (a dot pack) */
enum { SCR_F32 = 0, SCR_WIDEN = 1, SCR_DOT = 2 };
static int scratch_kind(const kvpack *kp) { return kp->dot ? SCR_DOT : kp->half ? SCR_WIDEN : SCR_F32; }

static int scratch_init(scratch *w, int RM, int MT, int D, int64_t n1, int64_t nb, int kind) {
    memset(w, 0, sizeof *w);
    if (kind == SCR_DOT) {
        w->Q16 = malloc((size_t)RM * D * sizeof(uint16_t));
        if (!w->Q16) return -1;
    }
    if (kind == SCR_WIDEN) {
        w->Kw = malloc((size_t)CPU_KT * D * sizeof(float));
        w->Vw = malloc((size_t)CPU_KT * D * sizeof(float));
        if (!w->Kw || !w->Vw) return -1;
    }
    w->Q = malloc((size_t)RM * D * sizeof(float));
    w->O = malloc((size_t)RM * D * sizeof(float));
    w->Oa = malloc((size_t)RM * (D + 2) * sizeof(float));
    w->segn = malloc((size_t)MT * sizeof(int));
    w->S = malloc((size_t)RM * CPU_KT * sizeof(float));
    w->P = malloc((size_t)RM * CPU_KT * sizeof(float));
    w->m = malloc((size_t)RM * 6 * sizeof(float));
    w->lo = malloc((size_t)RM * 3 * sizeof(int));
    w->pos = malloc((size_t)MT * 2 * sizeof(int));
    w->tok = malloc((size_t)(MT * n1 + 1) * sizeof(float));
    w->keys = malloc((size_t)(nb + 1) * 2 * sizeof(uint64_t));
    w->kmask = malloc((size_t)RM * sizeof(uint64_t));
    w->tiles = calloc((size_t)(nb + 1), sizeof(uint64_t));
    if (!w->Q || !w->O || !w->Oa || !w->segn || !w->S || !w->P || !w->m || !w->lo || !w->pos || !w->tok || !w->keys || !w->kmask ||
        !w->tiles)
        return -1;
    w->l = w->m + RM;
    w->ma = w->Oa + (size_t)RM * D;
    w->la = w->ma + RM;
    w->alpha = w->m + 2 * RM;
    w->c = w->m + 3 * RM;
    w->sm = w->m + 4 * RM;
    w->sl = w->m + 5 * RM;
    w->hi = w->lo + RM;
    w->ridx = w->lo + 2 * RM;
    w->cur = w->pos + MT;
    w->tmp = w->keys + nb + 1;
    return 0;
}

static void scratch_free(scratch *w) {
    free(w->Kw);
    free(w->Vw);
    free(w->Vs);
    free(w->Q16);
    free(w->Vs16);
    free(w->Q);
    free(w->O);
    free(w->Oa);
    free(w->segn);
    free(w->S);
    free(w->P);
    free(w->m);
    free(w->lo);
    free(w->pos);
    free(w->tok);
    free(w->keys);
    free(w->kmask);
    free(w->tiles);
}

/* (w->Vs / Vs16, allocated only when a tile holds a NaN / inf value, are not counted) */
static size_t scratch_bytes(int RM, int MT, int D, int64_t n1, int64_t nb, int kind) {
    return (size_t)RM * (3 * D + 2 * CPU_KT + 8) * sizeof(float) + (size_t)MT * sizeof(int) +
           (kind == SCR_WIDEN ? (size_t)2 * CPU_KT * D * sizeof(float) : 0) +
           (kind == SCR_DOT ? (size_t)RM * D * sizeof(uint16_t) : 0) + (size_t)RM * 3 * sizeof(int) +
           (size_t)MT * 2 * sizeof(int) + (size_t)(MT * n1 + 1) * sizeof(float) + (size_t)(nb + 1) * 24 +
           (size_t)RM * 8;
}

/* stage 1: 256 rows per group (each c1/c2 tile feeds 256 rows) */
static int group_tokens_s1(int G) { return G >= 256 ? 1 : (256 / G > CPU_KT ? CPU_KT : 256 / G); }
/* attention groups up to 1024 rows (64 tokens) so that a selected block fetched once
 * serves every token of the group that selected it */
static int group_rows(void) {
    static atomic_int cached = -1;
    int v = atomic_load(&cached);
    if (v < 0) {
        const char *e = getenv("INFLLM_CPU_GROUP_ROWS"); /* tuning knob for experiments */
        v = e && atoi(e) > 0 ? atoi(e) : 1024;
        atomic_store(&cached, v);
    }
    return v;
}
static int group_tokens_sparse(int G) {
    int rows = group_rows();
    return G >= rows ? 1 : (rows / G > 64 ? 64 : rows / G);
}

/* Loads the Q rows of tokens t0..t0+nt-1 (local to seq s), heads of KV head g: as f32 into Q, or, where Q16 is
 * given (bf16 on the dot kernels, which read only it), as the dtype's own bf16 values into Q16 instead */
static void load_q(const ctx *c, const infllm_seq *s, int g, const void *q, int t0, int nt, float *Q, uint16_t *Q16) {
    const infllm_attn_params *ap = c->ap;
    for (int tt = 0; tt < nt; tt++)
        for (int h = 0; h < ap->G; h++) {
            size_t off = (size_t)(s->q0 + t0 + tt) * ap->q_tok + (size_t)(g * ap->G + h) * ap->D;
            const size_t r = ((size_t)tt * ap->G + h) * ap->D;
            if (Q16)
                memcpy(Q16 + r, (const char *)q + off * c->es, (size_t)ap->D * sizeof(uint16_t));
            else
                c->kn->load(Q + r, (const char *)q + off * c->es, ap->dtype, ap->D);
        }
}

/* ----------------------------------------------------------- attention ---- */

/* bits a..b-1 of a 64-bit mask (0 <= a <= b <= 64) */
static inline uint64_t bit_range(int a, int b) {
    if (b <= a) return 0;
    uint64_t hi = b >= 64 ? ~0ull : ((1ull << b) - 1);
    return hi & ~((1ull << a) - 1);
}

/* The keys of the 64-key tile from ts that a query at position pos may attend before any selection: those <= pos
 * and not before its sliding window's first key wlo. One rule for attn_group and token_tiles, whose masks must
 * agree bit for bit (the few-token path reproduces attn_group's rows). */
static inline uint64_t tile_visible(int64_t ts, int64_t pos, int64_t wlo) {
    const int64_t a = wlo > ts ? wlo - ts : 0, b = pos + 1 - ts;
    return bit_range(a > 64 ? 64 : (int)a, b < 0 ? 0 : b > 64 ? 64 : (int)b);
}

/* The keys [bs, be) that fall in the 64-key tile from ts (a selected block's part of it) */
static inline uint64_t tile_span(int64_t bs, int64_t be, int64_t ts) {
    const int64_t te = ts + CPU_KT;
    return bit_range((int)((bs > ts ? bs : ts) - ts), (int)((be < te ? be : te) - ts));
}

/* prefetch the 64-byte lines [a, b) at p into L2 */
static inline void prefetch_lines(const char *p, size_t a, size_t b) {
    /* every other line: the L2 spatial prefetcher completes each 128-byte pair, and half the
     * prefetch instructions hold half the fill buffers that the products' loads need */
    for (size_t i = (a + 1) & ~(size_t)1; i < b; i += 2) __builtin_prefetch(p + i * 64, 0, 2);
}

/* A V tile whose keys vbad hold a NaN or an infinity (kvpack.vbad): P V adds P x V over every column up to the tile's
 * last visible one, and P = 0 times a NaN (or an infinity) is NaN, so a row that does not see such a key would get
 * it (before session 64 the CPU path put a NaN value into every row of the tile step; REF's rule is that a NaN
 * reaches the rows that see it). tile_v_clean returns the tile with those values zeroed (in the widened copy of a
 * 16-bit pack, or in a copy of an f32 or a dot pack's tile), so that the P V kernel adds 0 for them with its own arithmetic and every
 * finite value keeps its bits; tile_v_fixup then adds P x value for each (row, key) that the row sees and each
 * non-finite value of the key's row (NaN, or an infinity), as REF's sum has them. NULL: no memory for the copy (the
 * old behaviour, nothing worse). */
static const void *tile_v_clean(const ctx *c, scratch *w, const kvpack *kp, const void *Vt, uint64_t vbad) {
    const int D = c->ap->D;
    if (kp->dot) { /* bf16 pairs: a copy with the non-finite elements (all exponent bits set) of flagged keys zeroed */
        if (!w->Vs16) w->Vs16 = malloc((size_t)CPU_KT * D * sizeof(uint16_t));
        if (!w->Vs16) return NULL;
        memcpy(w->Vs16, Vt, (size_t)CPU_KT * D * sizeof(uint16_t));
        for (uint64_t b = vbad; b; b &= b - 1) {
            uint16_t *row = w->Vs16 + dot16_vindex(D, __builtin_ctzll(b));
            for (int d = 0; d < D; d++)
                if ((row[2 * d] & 0x7f80) == 0x7f80) row[2 * d] = 0;
        }
        return w->Vs16;
    }
    float *dst = w->Vw; /* a 16-bit pack: Vt is this step's widened copy, w->Vw */
    if (!kp->half) {
        if (!w->Vs) w->Vs = malloc((size_t)CPU_KT * D * sizeof(float));
        if (!w->Vs) return NULL;
        memcpy(w->Vs, Vt, (size_t)CPU_KT * D * sizeof(float));
        dst = w->Vs;
    }
    for (uint64_t b = vbad; b; b &= b - 1) {
        float *row = dst + (size_t)__builtin_ctzll(b) * D;
        for (int d = 0; d < D; d++)
            if (!isfinite(row[d])) row[d] = 0.0f;
    }
    return dst;
}

static void tile_v_fixup(const ctx *c, scratch *w, const kvpack *kp, int R, int t, uint64_t vbad) {
    const int D = c->ap->D;
    float row[256];
    for (int i = 0; i < R; i++)
        for (uint64_t b = w->kmask[i] & vbad; b; b &= b - 1) {
            const int n = __builtin_ctzll(b);
            const size_t at = ((size_t)t * CPU_KT + (size_t)n) * D; /* key n's V row in the pack */
            const float *vr = (const float *)kp->V + at;
            if (kp->dot) { /* the row's elements 2 apart in the pair layout */
                const uint16_t *src = (const uint16_t *)kp->V + dot16_vindex(D, (int64_t)t * CPU_KT + n);
                for (int d = 0; d < D; d++) row[d] = infllm_bf16_to_f32(src[2 * d]);
                vr = row;
            } else if (kp->half) {
                c->kn->load(row, (const uint16_t *)kp->V + at, c->ap->dtype, D);
                vr = row;
            }
            const float pn = w->P[(size_t)i * CPU_KT + n];
            float *o = w->O + (size_t)w->ridx[i] * D;
            for (int d = 0; d < D; d++)
                if (!isfinite(vr[d])) o[d] += pn * vr[d];
        }
}

/* One step over key tile t (keys 64t .. 64t+63) for R slots: w->ridx[i] is the group row,
 * w->kmask[i] its valid keys in the tile. next_k / next_v (or NULL): the next tile's packed K and
 * V, fetched into L2 a slice at a time between row chunks of the products, so that the loads
 * overlap this tile's arithmetic instead of stalling on a burst of prefetches (not at all for
 * rows of one chunk). Rows are independent, so chunking leaves every result bitwise the same. */
static void tile_step(const ctx *c, scratch *w, const kvpack *kp, int R, int t, const void *next_k,
                      const void *next_v) {
    enum { CHUNK_ROWS = 48 }; /* a multiple of the kernels' 6-row register tiles */
    const int D = c->ap->D;
    uint64_t any = 0;
    for (int i = 0; i < R; i++) {
        int r = w->ridx[i];
        any |= w->kmask[i];
        w->sm[i] = w->m[r];
        w->sl[i] = w->l[r];
    }
    int top = 64 - __builtin_clzll(any); /* highest valid column + 1 */
    int ng = (top + CPU_KG - 1) / CPU_KG;
    const size_t tile = (size_t)t * CPU_KT * D; /* first element of the tile */
    const void *Kt, *Vt;
    if (kp->dot) { /* bf16 pairs, read as they are */
        Kt = (const uint16_t *)kp->K + tile;
        Vt = (const uint16_t *)kp->V + tile;
    } else if (kp->half) { /* exact widening, once per tile step */
        c->kn->load(w->Kw, (const uint16_t *)kp->K + tile, c->ap->dtype, (int64_t)CPU_KT * D);
        c->kn->load(w->Vw, (const uint16_t *)kp->V + tile, c->ap->dtype, (int64_t)CPU_KT * D);
        Kt = w->Kw;
        Vt = w->Vw;
    } else {
        Kt = (const float *)kp->K + tile;
        Vt = (const float *)kp->V + tile;
    }
    const size_t lines = (size_t)CPU_KT * D * kvpack_elem_bytes(kp) / 64; /* per packed K (or V) tile */
    /* rows that fit one chunk would fetch the whole next tile in one burst, which stalls on the memory queue
     * (03481f6); the hardware prefetcher does better there (session 62, a 1-thread sparse decode step, G 16, where
     * perf had 10% of the samples on the prefetches: 32K 1.38-1.54 -> 1.27-1.32 ms, 128K 1.95-2.07 -> 1.83-1.97) */
    if (R <= CHUNK_ROWS) next_k = next_v = NULL;
    for (int r0 = 0; r0 < R; r0 += CHUNK_ROWS) {
        int rn = R - r0 < CHUNK_ROWS ? R - r0 : CHUNK_ROWS;
        if (kp->dot)
            c->dot->qk16(w->Q16, D, w->ridx + r0, rn, D, Kt, ng, w->S + (size_t)r0 * CPU_KT);
        else
            c->kn->qk(w->Q, D, w->ridx + r0, rn, D, Kt, ng, w->S + (size_t)r0 * CPU_KT);
        if (next_k) prefetch_lines((const char *)next_k, lines * r0 / R, lines * (r0 + rn) / R);
    }
    c->kn->softmax(w->S, R, ng * CPU_KG, w->kmask, c->ap->scale * (float)M_LOG2E, w->sm, w->sl, w->alpha, w->P);
    for (int i = 0; i < R; i++) {
        w->m[w->ridx[i]] = w->sm[i];
        w->l[w->ridx[i]] = w->sl[i];
    }
    const uint64_t vbad = kp->vbad ? kp->vbad[t] : 0; /* keys whose V row holds a NaN / inf: tile_v_clean */
    const void *Vclean = vbad ? tile_v_clean(c, w, kp, Vt, vbad) : NULL;
    if (Vclean) Vt = Vclean;
    for (int r0 = 0; r0 < R; r0 += CHUNK_ROWS) {
        int rn = R - r0 < CHUNK_ROWS ? R - r0 : CHUNK_ROWS;
        if (kp->dot)
            c->dot->pv16(w->O, w->ridx + r0, rn, D, w->alpha + r0, w->P + (size_t)r0 * CPU_KT, Vt, ng * CPU_KG);
        else
            c->kn->pv(w->O, w->ridx + r0, rn, D, w->alpha + r0, w->P + (size_t)r0 * CPU_KT, Vt, ng * CPU_KG);
        if (next_v) prefetch_lines((const char *)next_v, lines * r0 / R, lines * (r0 + rn) / R);
    }
    if (Vclean) tile_v_fixup(c, w, kp, R, t, vbad);
}

/* Rows in segments (session 61): a row's online softmax restarts after every ATTN_SEG_TILES key tiles it attends
 * (tiles where its key mask is not empty), and each finished segment's state merges into the row's accumulator in
 * key order (seg_merge). A decode step's few rows can so run their segments on several threads and merge them after
 * (run_attn_few) in the arithmetic of one thread walking the tiles: the bits depend neither on the thread count nor
 * on the path, and a decode step still reproduces the prefill result. A row of at most ATTN_SEG_TILES tiles is its
 * unsegmented result bit for bit (the first merge copies). 8 tiles (512 keys): a merge costs ~3 D flops a row
 * against a segment's ~2000 D; a sparse decode row of 96 blocks has 12 segments to share out. */
enum { ATTN_SEG_TILES = 8 };

/* Merges n rows' segment state (m: log2-domain max, l: sum, O: unnormalized output, D columns a row) into their
 * accumulators (ma, la, Oa). A state of m -inf and l 0 holds nothing; a NaN max or sum propagates. clear: the
 * segment's O is zeroed as it is read (attn_group's restart; the few-token path's partials are read only). A scale
 * of 1 is skipped: x * 1 is x, so the bits are the general formula's. */
static void seg_merge(const float *m, const float *l, float *O, float *ma, float *la, float *Oa, int n, int D,
                      int clear) {
    for (int r = 0; r < n; r++) {
        const float M = ma[r], mr = m[r];
        float *restrict oa = Oa + (size_t)r * D, *restrict o = O + (size_t)r * D;
        if (mr == -INFINITY && l[r] == 0.0f) { /* an empty segment */
            if (clear) memset(o, 0, (size_t)D * sizeof *o);
            continue;
        }
        if (M == -INFINITY && la[r] == 0.0f) { /* the first one: a copy */
            memcpy(oa, o, (size_t)D * sizeof *oa);
            if (clear) memset(o, 0, (size_t)D * sizeof *o);
            la[r] = l[r];
            ma[r] = mr;
            continue;
        }
        const float Mn = (mr > M || mr != mr) ? mr : M;
        const float a = M == Mn ? 1.0f : exp2f(M - Mn), b = mr == Mn ? 1.0f : exp2f(mr - Mn);
        /* (omp simd: -O2 leaves these loops scalar; no reduction, so the bits are the scalar loop's) */
        if (a == 1.0f && clear) {
#pragma omp simd
            for (int d = 0; d < D; d++) {
                oa[d] += o[d] * b;
                o[d] = 0.0f;
            }
        } else if (a == 1.0f) {
#pragma omp simd
            for (int d = 0; d < D; d++) oa[d] += o[d] * b;
        } else {
#pragma omp simd
            for (int d = 0; d < D; d++) oa[d] = oa[d] * a + o[d] * b;
            if (clear) memset(o, 0, (size_t)D * sizeof *o);
        }
        la[r] = la[r] * a + l[r] * b;
        ma[r] = Mn;
    }
}

/* rows r0..r0+n-1 of w: their segment merged into the accumulators and restarted */
static void seg_flush(scratch *w, int r0, int n, int D) {
    seg_merge(w->m + r0, w->l + r0, w->O + (size_t)r0 * D, w->ma + r0, w->la + r0, w->Oa + (size_t)r0 * D, n, D, 1);
    for (int r = r0; r < r0 + n; r++) {
        w->m[r] = -INFINITY;
        w->l[r] = 0.0f;
    }
}

/* after a tile step that included tokens toks[0..ntok) of the group: a token whose segment is full flushes its G
 * rows */
static void seg_count(scratch *w, const int *toks, int ntok, int G, int D) {
    for (int i = 0; i < ntok; i++)
        if (++w->segn[toks[i]] == ATTN_SEG_TILES) {
            seg_flush(w, toks[i] * G, G, D);
            w->segn[toks[i]] = 0;
        }
}

/* The output rows (and lse) of local token t, KV head g, heads h0 .. h1 - 1 of the group, from its G accumulated rows
 * (Oa [G][D], la, ma) */
static void store_token(const ctx *c, const infllm_seq *s, int g, int t, int h0, int h1, const float *Oa,
                        const float *la, const float *ma, void *out, float *lse) {
    const infllm_attn_params *ap = c->ap;
    const int D = ap->D, G = ap->G;
    const size_t row = (size_t)(s->q0 + t);
    for (int h = h0; h < h1; h++) {
        void *dst = (char *)out + (row * ap->o_tok + (size_t)(g * G + h) * D) * c->es;
        if (la[h] > 0.0f || isnan(la[h])) { /* a NaN score's row is NaN, as REF's (not a row without keys) */
            c->kn->store(dst, ap->dtype, Oa + (size_t)h * D, 1.0f / la[h], D);
            if (lse) lse[row * ap->Hq + g * G + h] = (float)(((double)ma[h] + log2((double)la[h])) * M_LN2);
        } else {
            memset(dst, 0, (size_t)D * c->es);
            if (lse) lse[row * ap->Hq + g * G + h] = -INFINITY;
        }
    }
}

/* Attention of tokens t0..t0+nt-1 of sequence s, KV head g. sel == NULL: dense causal;
 * else token t's blocks are sel[t*selw .. +nsel[t]) (ascending, unique, <= its q_block).
 * Both walk the same 64-key tiles in ascending order with per-row key masks, so a row whose
 * selection holds every causal block gets exactly the dense result. */
static void attn_group(const ctx *c, const infllm_seq *s, int g, kvpack *kp, const void *q, void *out, float *lse,
                       const int32_t *sel, int selw, const int32_t *nsel, int t0, int nt, scratch *w) {
    const infllm_attn_params *ap = c->ap;
    const int D = ap->D, G = ap->G, R = nt * G;
    load_q(c, s, g, q, t0, nt, w->Q, kp->dot ? w->Q16 : NULL);
    memset(w->O, 0, (size_t)R * D * sizeof(float));
    for (int r = 0; r < R; r++) {
        w->m[r] = w->ma[r] = -INFINITY;
        w->l[r] = w->la[r] = 0.0f;
    }
    int toks[CPU_KT], ntok; /* the tokens of a tile step (nt <= CPU_KT) */
    for (int tt = 0; tt < nt; tt++) {
        w->pos[tt] = s->lk - s->lq + t0 + tt;
        w->segn[tt] = 0;
    }
    /* the sliding window's first key of each row: keys before it are masked like future ones */
    int64_t wlo[CPU_KT] = {0}; /* nt <= CPU_KT rows; zeroed for the compiler (gcc 13 -Wmaybe-uninitialized) */
    for (int tt = 0; tt < nt; tt++) wlo[tt] = infllm_window_start(w->pos[tt], ap->window);
    if (!sel) {
        int pmax = w->pos[nt - 1];
        for (int t = (int)(wlo[0] / CPU_KT); t * CPU_KT <= pmax; t++) {
            int j0 = t * CPU_KT;
            kvpack_ensure(c, kp, t);
            int R2 = 0;
            ntok = 0;
            for (int tt = 0; tt < nt; tt++) {
                if (w->pos[tt] < j0 || wlo[tt] >= j0 + CPU_KT) continue;
                const uint64_t km = tile_visible(j0, w->pos[tt], wlo[tt]);
                toks[ntok++] = tt;
                for (int h = 0; h < G; h++) {
                    w->ridx[R2] = tt * G + h;
                    w->kmask[R2++] = km;
                }
            }
            if (R2) {
                tile_step(c, w, kp, R2, t, NULL, NULL);
                seg_count(w, toks, ntok, G, D);
            }
        }
    } else {
        const int B = ap->B;
        int tmin = INT32_MAX, tmax = -1;
        for (int tt = 0; tt < nt; tt++) {
            const int32_t *sl = sel + (size_t)(t0 + tt) * selw;
            for (int i = 0; i < nsel[t0 + tt]; i++) {
                int64_t bs = (int64_t)B * sl[i], be = bs + B;
                if (be > s->lk) be = s->lk;
                if (be <= bs) continue;
                int ta = (int)(bs / CPU_KT), tb = (int)((be - 1) / CPU_KT);
                for (int t = ta; t <= tb; t++) w->tiles[t] |= 1ull << tt;
                if (ta < tmin) tmin = ta;
                if (tb > tmax) tmax = tb;
            }
            w->cur[tt] = 0;
        }
        for (int t = tmin; t <= tmax; t++) {
            uint64_t tm = w->tiles[t];
            if (!tm) continue;
            w->tiles[t] = 0;
            /* the next used tile, fetched into L2 while this one computes (when already packed) */
            const void *next_k = NULL, *next_v = NULL;
            for (int tn = t + 1; tn <= tmax; tn++)
                if (w->tiles[tn]) {
                    if (kp->borrowed || atomic_load_explicit(&kp->state[tn], memory_order_relaxed) == 2) {
                        size_t off = (size_t)tn * CPU_KT * D * kvpack_elem_bytes(kp);
                        next_k = (const char *)kp->K + off;
                        next_v = (const char *)kp->V + off;
                    }
                    break;
                }
            kvpack_ensure(c, kp, t);
            const int64_t ts = (int64_t)t * CPU_KT, te = ts + CPU_KT;
            int R2 = 0;
            ntok = 0;
            for (int tt = 0; tt < nt; tt++) {
                if (!((tm >> tt) & 1)) continue;
                const int32_t *sl = sel + (size_t)(t0 + tt) * selw;
                int n = nsel[t0 + tt], cidx = w->cur[tt];
                while (cidx < n && (int64_t)B * sl[cidx] + B <= ts) cidx++;
                w->cur[tt] = cidx;
                uint64_t km = 0;
                for (int i = cidx; i < n && (int64_t)B * sl[i] < te; i++) {
                    km |= tile_span((int64_t)B * sl[i], (int64_t)B * sl[i] + B, ts);
                }
                km &= tile_visible(ts, w->pos[tt], wlo[tt]); /* keys <= position (and < lk), in the window */
                if (!km) continue;
                toks[ntok++] = tt;
                for (int h = 0; h < G; h++) {
                    w->ridx[R2] = tt * G + h;
                    w->kmask[R2++] = km;
                }
            }
            if (R2) {
                tile_step(c, w, kp, R2, t, next_k, next_v);
                seg_count(w, toks, ntok, G, D);
            }
        }
    }
    /* the last segments, then the rows */
    for (int tt = 0; tt < nt; tt++) {
        if (w->segn[tt]) seg_flush(w, tt * G, G, D);
        store_token(c, s, g, t0 + tt, 0, G, w->Oa + (size_t)tt * G * D, w->la + tt * G, w->ma + tt * G, out, lse);
    }
}

/* Whether sequence s has so few query tokens that a call's threads go further on one KV head at a time, each head's
 * work cut finer than token groups (run_attn_few, select_token_few), than on the heads side by side: a decode step
 * (one token) with more threads than KV heads (session 61: MiniCPM4's 2 KV heads kept a 16-core decode on 2). keys:
 * the most keys a query attends (a sparse call's selection, at most topk_total blocks), which bounds the segments a
 * head's work cuts into; the path is taken where they keep at least twice the KV heads' threads busy (short
 * contexts keep the heads side by side). Either path gives the same bits. */
static int few_tokens(const ctx *c, const infllm_seq *s, int64_t keys) {
    const infllm_attn_params *ap = c->ap;
    if (c->nth <= 1 || (int64_t)s->lq * ap->Hkv >= c->nth) return 0;
    const int64_t span = ap->window > 0 && ap->window < s->lk ? ap->window : s->lk, seg = (int64_t)CPU_KT * ATTN_SEG_TILES;
    if (keys > span) keys = span;
    const int64_t items = (keys + seg - 1) / seg * s->lq;
    return (items < c->nth ? items : c->nth) >= 2 * (int64_t)ap->Hkv;
}

/* The key tiles local token t of sequence s attends, ascending, with its key mask in each (those attn_group builds
 * for its rows): tl[0..n), km[0..n); returns n (at most kp->ntile). sel == NULL: dense causal, else t's blocks
 * sel[t*selw ..+nsel[t]) (ascending, unique). */
static int token_tiles(const ctx *c, const infllm_seq *s, int t, const int32_t *sel, int selw, const int32_t *nsel,
                       int32_t *tl, uint64_t *km) {
    const infllm_attn_params *ap = c->ap;
    const int64_t pos = (int64_t)s->lk - s->lq + t, wlo = infllm_window_start(pos, ap->window);
    int n = 0;
    if (!sel) {
        for (int64_t j0 = wlo / CPU_KT * CPU_KT; j0 <= pos; j0 += CPU_KT) {
            tl[n] = (int32_t)(j0 / CPU_KT);
            km[n++] = tile_visible(j0, pos, wlo);
        }
        return n;
    }
    const int B = ap->B;
    const int32_t *sl = sel + (size_t)t * selw;
    for (int i = 0; i < nsel[t]; i++) {
        int64_t bs = (int64_t)B * sl[i], be = bs + B;
        if (be > s->lk) be = s->lk;
        for (int64_t ts = bs / CPU_KT * CPU_KT; ts < be; ts += CPU_KT) {
            const uint64_t bits = tile_span(bs, be, ts);
            if (n && tl[n - 1] == (int32_t)(ts / CPU_KT)) {
                km[n - 1] |= bits;
            } else {
                tl[n] = (int32_t)(ts / CPU_KT);
                km[n++] = bits;
            }
        }
    }
    int m = 0;
    for (int i = 0; i < n; i++) { /* keys <= position, and not before the window */
        const uint64_t k = km[i] & tile_visible((int64_t)tl[i] * CPU_KT, pos, wlo);
        if (k) {
            tl[m] = tl[i];
            km[m++] = k;
        }
    }
    return m;
}

/* run_attn for few tokens (few_tokens) on every thread: each token's tiles (token_tiles) cut into segments of
 * ATTN_SEG_TILES, a segment an item of the threads, then each row's segments merged in key order (seg_merge), a row a
 * thread: attn_group's arithmetic, bit for bit. Non-zero: out of memory. */
static int run_attn_few(const ctx *c, const infllm_seq *s, int g, kvpack *kp, const void *q, void *out, float *lse,
                        const int32_t *sel, int selw, const int32_t *nsel) {
    const infllm_attn_params *ap = c->ap;
    const int G = ap->G, D = ap->D, lq = s->lq, SEG = ATTN_SEG_TILES;
    const size_t cap = (size_t)kp->ntile + 1, rowf = (size_t)G * (D + 2); /* tiles a token; floats a segment */
    const size_t tlb = (size_t)lq * cap * sizeof(int32_t), kmb = (size_t)lq * cap * sizeof(uint64_t),
                 ib = (size_t)(2 * lq + 1) * sizeof(int);
    int32_t *tl = ws_alloc(tlb);
    uint64_t *km = ws_alloc(kmb);
    int *ntl = ws_alloc(ib), *first = ntl ? ntl + lq : NULL; /* [lq] tiles, [lq + 1] first item of each token */
    float *part = NULL, *acc = NULL;
    size_t pb = 0, ab = (size_t)lq * rowf * sizeof(float);
    int fail = !tl || !km || !ntl, items = 0;
    if (!fail) {
        for (int t = 0; t < lq; t++) {
            ntl[t] = token_tiles(c, s, t, sel, selw, nsel, tl + (size_t)t * cap, km + (size_t)t * cap);
            first[t] = items;
            items += (ntl[t] + SEG - 1) / SEG;
        }
        first[lq] = items;
        pb = (size_t)items * rowf * sizeof(float);
        part = ws_alloc(pb);
        acc = ws_alloc(ab);
        fail = !part || !acc;
    }
    if (!fail) {
        const int nth = c->nth; /* every thread, as select_token_few's region */
        (void)nth;              /* without OpenMP */
        int short_of_scratch = 0; /* shared: some thread could not allocate its scratch (its segments not computed) */
#pragma omp parallel num_threads(cpu_team(nth))
        {
            scratch w;
            const int ok = !scratch_init(&w, G, 1, D, 0, kp->ntile, scratch_kind(kp));
            if (!ok) { /* this thread skips its items; every thread meets every barrier */
#pragma omp atomic write
                short_of_scratch = 1;
            }
#pragma omp for schedule(dynamic, 1)
            for (int i = 0; i < items; i++) {
                if (!ok) continue;
                int t = 0;
                while (first[t + 1] <= i) t++;
                const int32_t *ti = tl + (size_t)t * cap + (size_t)(i - first[t]) * SEG;
                const uint64_t *mi = km + (size_t)t * cap + (size_t)(i - first[t]) * SEG;
                const int n = ntl[t] - (i - first[t]) * SEG < SEG ? ntl[t] - (i - first[t]) * SEG : SEG;
                load_q(c, s, g, q, t, 1, w.Q, kp->dot ? w.Q16 : NULL);
                memset(w.O, 0, (size_t)G * D * sizeof(float));
                for (int r = 0; r < G; r++) {
                    w.m[r] = -INFINITY;
                    w.l[r] = 0.0f;
                    w.ridx[r] = r;
                }
                for (int j = 0; j < n; j++) {
                    kvpack_ensure(c, kp, ti[j]);
                    const void *next_k = NULL, *next_v = NULL; /* the segment's next tile into L2, when packed */
                    if (j + 1 < n &&
                        (kp->borrowed || atomic_load_explicit(&kp->state[ti[j + 1]], memory_order_relaxed) == 2)) {
                        const size_t off = (size_t)ti[j + 1] * CPU_KT * D * kvpack_elem_bytes(kp);
                        next_k = (const char *)kp->K + off;
                        next_v = (const char *)kp->V + off;
                    }
                    for (int r = 0; r < G; r++) w.kmask[r] = mi[j];
                    tile_step(c, &w, kp, G, ti[j], next_k, next_v);
                }
                float *pi = part + (size_t)i * rowf; /* [G][D] O, [G] m, [G] l */
                memcpy(pi, w.O, (size_t)G * D * sizeof(float));
                memcpy(pi + (size_t)G * D, w.m, (size_t)G * sizeof(float));
                memcpy(pi + (size_t)G * (D + 1), w.l, (size_t)G * sizeof(float));
            }
            int short_seen; /* some segment not computed (read after the items' barrier) */
#pragma omp atomic read
            short_seen = short_of_scratch;
            /* then each row's segments merged in key order and the row stored, a row a thread (seg_merge and
             * store_token treat rows alike one by one: the bits of a call over all G) */
#pragma omp for schedule(static)
            for (int tr = 0; tr < lq * G; tr++) {
                const int t = tr / G, r = tr % G;
                float *Oa = acc + (size_t)t * rowf, *ma = Oa + (size_t)G * D, *la = ma + G; /* [G][D], [G], [G] */
                if (short_seen) continue;
                ma[r] = -INFINITY;
                la[r] = 0.0f;
                for (int i = first[t]; i < first[t + 1]; i++) {
                    float *pi = part + (size_t)i * rowf;
                    seg_merge(pi + (size_t)G * D + r, pi + (size_t)G * (D + 1) + r, pi + (size_t)r * D, ma + r, la + r,
                              Oa + (size_t)r * D, 1, D, 0);
                }
                store_token(c, s, g, t, r, r + 1, Oa, la, ma, out, lse);
            }
            scratch_free(&w);
        }
        fail = short_of_scratch;
        size_t sb = scratch_bytes(G, 1, D, 0, kp->ntile, scratch_kind(kp)) * (size_t)nth;
        if (g_ws_cur + sb > g_ws_peak) g_ws_peak = g_ws_cur + sb;
    }
    ws_free(tl, tlb);
    ws_free(km, kmb);
    ws_free(ntl, ib);
    ws_free(part, pb);
    ws_free(acc, ab);
    return fail;
}

static int run_attn(const ctx *c, const infllm_seq *s, int g, kvpack *kp, const void *q, void *out, float *lse,
                    const int32_t *sel, int selw, const int32_t *nsel) {
    if (c->few) return run_attn_few(c, s, g, kp, q, out, lse, sel, selw, nsel);
    const int G = c->ap->G;
    int MT = group_tokens_sparse(G);
    if (MT > s->lq) MT = s->lq; /* decode / short chunks: no oversized scratch */
    const int ngroups = (s->lq + MT - 1) / MT;
    const int nth = c->nth < ngroups ? c->nth : ngroups; /* decode: no idle threads to wake */
    (void)nth;                                           /* without OpenMP */
    int fail = 0;
#pragma omp parallel num_threads(cpu_team(nth)) reduction(| : fail)
    {
        scratch w;
        const int ok = !scratch_init(&w, MT * G, MT, c->ap->D, 0, kp->ntile, scratch_kind(kp));
        if (!ok) fail = 1; /* a thread without scratch skips its groups; every thread meets every barrier */
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < ngroups; i++) {
            if (!ok) continue;
            int gi = ngroups - 1 - i; /* longest rows first */
            int t0 = gi * MT, nt = s->lq - t0 < MT ? s->lq - t0 : MT;
            attn_group(c, s, g, kp, q, out, lse, sel, selw, nsel, t0, nt, &w);
        }
        scratch_free(&w);
    }
    size_t sb = scratch_bytes(MT * G, MT, c->ap->D, 0, kp->ntile, scratch_kind(kp)) * (size_t)c->nth;
    if (g_ws_cur + sb > g_ws_peak) g_ws_peak = g_ws_cur + sb;
    return fail;
}

/* ------------------------------------------------------------- stage 1 ---- */

static inline uint32_t ord_f32(float f) {
    uint32_t u = infllm_f32_to_bits(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* The k-th largest of a[0..n) (1 <= k <= n, distinct values); reorders a. */
static uint64_t kth_largest(uint64_t *a, int n, int k) {
    int lo = 0, hi = n - 1, target = k - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        uint64_t x = a[lo], y = a[mid], z = a[hi], piv;
        if ((x >= y) == (y >= z)) piv = y;
        else if ((y >= x) == (x >= z)) piv = x;
        else piv = z;
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] > piv) i++;
            while (a[j] < piv) j--;
            if (i <= j) {
                uint64_t t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (target <= j) hi = j;
        else if (target >= i) lo = i;
        else return a[target];
    }
    return a[target];
}

/* Selection of one row from its block scores' keys: the k largest of the candidates keys[b0..n) (the blocks
 * before b0 lie wholly before the row's sliding window) in ascending block order, blocks > qb dropped; returns
 * the count written to dst. */
static int select_from_keys(const uint64_t *keys, uint64_t *tmp, int b0, int n, int k, int qb, int32_t *dst) {
    int cnt = 0;
    if (k <= 0 || n <= b0) return 0;
    if (k >= n - b0) {
        for (int b = b0; b < n && b <= qb; b++) dst[cnt++] = b;
        return cnt;
    }
    memcpy(tmp, keys + b0, (size_t)(n - b0) * sizeof *tmp);
    uint64_t thr = kth_largest(tmp, n - b0, k);
    for (int b = b0; b < n && b <= qb; b++)
        if (keys[b] >= thr) dst[cnt++] = b;
    return cnt;
}

/* NaN ranks lowest (key 0, below -inf), as in REF's order (SPEC A, docs/TESTS.md) */
static inline uint64_t block_key(float score, int b) {
    return ((uint64_t)(score != score ? 0u : ord_f32(score)) << 32) | (uint32_t)(0xffffffffu - (uint32_t)b);
}

/* Block score of block b for a row with stage-1 scores sc[0..n1) (SPEC A.4). */
static inline float block_score(const infllm_attn_params *ap, const float *sc, int n1, int b, int qb) {
    if (infllm_block_forced(b, qb, ap->init_blocks, ap->local_blocks)) return INFINITY;
    int lo, hi;
    infllm_block_kernel_range(b, ap->B, ap->l1, ap->s1, n1, &lo, &hi);
    if (hi <= lo) return -INFINITY;
    float mx = -INFINITY; /* a NaN kernel score never wins the max, as in REF */
    for (int j = lo; j < hi; j++) mx = sc[j] > mx ? sc[j] : mx;
    return mx == INFINITY ? FLT_MAX : mx; /* an overflowed stage-1 sum stays below the forced +inf, as in REF */
}

/* The kernels a query at position p of sequence s scores in stage 1: *n1v of c1, *nlv of its LSE's (c2, or c1 with
 * exact_lse). fused (the selection): only kernels of non-forced blocks (b <= q_block - local - 1) reach it, the
 * last of them floor((B*b + B - 1) / s1) of that block. */
/* S [R][64] = rows r0 .. r0 + R - 1 of Q (of Q16, bf16, on a dot pack) . ng groups of 16 of pack kp's keys from key
 * c0 (a multiple of 64): the dot kernels on a dot pack (cpu_dot16), else the f32 ones; only the buffer the kernel
 * reads is offset (the other may be NULL) */
static inline void qk_keys(const ctx *c, const kvpack *kp, const float *Q, const uint16_t *Q16, int r0, int R,
                           int64_t c0, int ng, float *S) {
    const int D = c->ap->D;
    if (kp->dot)
        c->dot->qk16(Q16 + (size_t)r0 * D, D, NULL, R, D, (const uint16_t *)kp->K + (size_t)c0 * D, ng, S);
    else
        c->kn->qk(Q + (size_t)r0 * D, D, NULL, R, D, (const float *)kp->K + (size_t)c0 * D, ng, S);
}

static void stage1_kernels(const infllm_attn_params *ap, const infllm_seq *s, int64_t p, int fused, int *n1v,
                           int *nlv) {
    *n1v = infllm_visible_kernels(p, ap->l1, ap->s1, s->n1);
    *nlv = ap->exact_lse ? *n1v : infllm_visible_kernels(p, ap->l2, ap->s2, s->n2);
    if (fused) {
        int64_t blast = p / ap->B - ap->local_blocks - 1;
        int64_t jneed = blast < 0 ? 0 : ((int64_t)ap->B * blast + ap->B - 1) / ap->s1 + 1;
        if (jneed < *n1v) *n1v = (int)jneed;
    }
}

/* The first c1 kernel (a tile's first) of stage 1's pass 2 for a selection whose earliest query is at p0: under a
 * sliding window the selection takes no block before that query's window first block, so the kernels before it
 * keep their 0, which no candidate block reads (the LSE stays whole: stage 1 does not depend on the window) */
static int stage1_pass2_first(const infllm_attn_params *ap, const infllm_seq *s, int64_t p0) {
    if (ap->window <= 0) return 0;
    int32_t lo, hi;
    infllm_block_kernel_range(infllm_window_first_block(p0, ap->window, ap->B), ap->B, ap->l1, ap->s1, s->n1, &lo,
                              &hi);
    return lo / CPU_KT * CPU_KT;
}

/* Stage-1 scores of tokens t0..t0+nt-1 of sequence s, KV head g, into w->tok[tt*n1 ..]. */
static void stage1_group(const ctx *c, const infllm_seq *s, int g, const kvpack *c1p, const kvpack *clp,
                         const void *q, int t0, int nt, int fused, scratch *w) {
    const infllm_attn_params *ap = c->ap;
    const int G = ap->G, R = nt * G, n1 = s->n1;
    const float sl2 = ap->scale * (float)M_LOG2E;
    int n1v[CPU_KT], nlv[CPU_KT];
    load_q(c, s, g, q, t0, nt, w->Q, c1p->dot ? w->Q16 : NULL);
    for (int tt = 0; tt < nt; tt++) stage1_kernels(ap, s, (int64_t)s->lk - s->lq + t0 + tt, fused, &n1v[tt], &nlv[tt]);
    memset(w->tok, 0, (size_t)nt * n1 * sizeof(float));
    for (int r = 0; r < R; r++) {
        w->m[r] = -INFINITY;
        w->l[r] = 0.0f;
    }
    /* pass 1: LSE over the visible c2 (c1 with exact_lse) */
    int nlmax = nlv[nt - 1];
    for (int c0 = 0; c0 < nlmax; c0 += CPU_KT) {
        int ta = 0;
        while (nlv[ta] <= c0) ta++;
        int cend = nlmax - c0 < CPU_KT ? nlmax : c0 + CPU_KT;
        int ng = (cend - c0 + CPU_KG - 1) / CPU_KG;
        for (int r = ta * G; r < R; r++) w->hi[r] = nlv[r / G] - c0;
        qk_keys(c, clp, w->Q, w->Q16, ta * G, R - ta * G, c0, ng, w->S + (size_t)ta * G * CPU_KT);
        c->kn->lse(w->S + (size_t)ta * G * CPU_KT, R - ta * G, ng * CPU_KG, w->hi + ta * G, sl2, w->m + ta * G,
                   w->l + ta * G);
    }
    /* a NaN sum (a NaN logit) stays NaN, so that the row's P are NaN as REF's */
    for (int r = 0; r < R; r++)
        w->c[r] = w->l[r] > 0.0f || isnan(w->l[r]) ? w->m[r] + log2f(w->l[r]) : INFINITY;
    /* pass 2: P = exp(a - LSE) over the visible c1, summed over the group's heads. Under a sliding window the
     * selection takes no block before a token's window first block, and the group's first token's is the earliest:
     * pass 2 starts at the tile of that block's first kernel (the LSE above stays whole: stage 1 does not depend on
     * the window). The kernels before it keep their 0 in w->tok, which no candidate block reads. */
    const int n1max = n1v[nt - 1], c_first = fused ? stage1_pass2_first(ap, s, (int64_t)s->lk - s->lq + t0) : 0;
    for (int c0 = c_first; c0 < n1max; c0 += CPU_KT) {
        int ta = 0;
        while (ta < nt && (n1v[ta] <= c0 || nlv[ta] == 0)) ta++;
        if (ta == nt) continue;
        int cend = n1max - c0 < CPU_KT ? n1max : c0 + CPU_KT;
        int ng = (cend - c0 + CPU_KG - 1) / CPU_KG;
        for (int r = ta * G; r < R; r++) w->hi[r] = n1v[r / G] - c0;
        qk_keys(c, c1p, w->Q, w->Q16, ta * G, R - ta * G, c0, ng, w->S + (size_t)ta * G * CPU_KT);
        /* P = exp(a - LSE), summed over the group's heads in head order into the tokens' rows
         * (rounded to bf16 for bf16 storage, as the reference) */
        c->kn->expsum(w->S + (size_t)ta * G * CPU_KT, nt - ta, G, w->hi + ta * G, sl2, w->c + ta * G,
                      w->tok + (size_t)ta * n1 + c0, n1, cend - c0, ap->dtype == INFLLM_DTYPE_BF16);
    }
}

/* select_row's candidate blocks for local token t of s: *wb .. *ncand - 1 (the causal ones, those before the
 * sliding window excluded; the last, ncand - 1, is the token's q_block) */
static void select_candidates(const infllm_attn_params *ap, const infllm_seq *s, int t, int *wb, int *ncand) {
    const int64_t p = (int64_t)s->lk - s->lq + t;
    *ncand = (int)(p / ap->B) + 1;
    *wb = infllm_window_first_block(p, ap->window, ap->B);
}

/* keys[b] for blocks b0 <= b < b1 of a row of q_block qb with stage-1 scores sc[0..s->n1): its block scores as
 * select_from_keys ranks them */
static void block_keys(const infllm_attn_params *ap, const infllm_seq *s, const float *sc, int qb, int b0, int b1,
                       uint64_t *keys) {
    for (int b = b0; b < b1; b++) keys[b] = block_key(block_score(ap, sc, s->n1, b, qb), b);
}

/* The selection of local token t of sequence s from its stage-1 scores sc[0..n1) into sel[t*K ..], nsel[t] (keys,
 * tmp: [nblocks] of scratch) */
static void select_row(const infllm_attn_params *ap, const infllm_seq *s, int t, const float *sc, uint64_t *keys,
                       uint64_t *tmp, int K, int32_t *sel, int32_t *nsel) {
    /* Only causal blocks compete: every future block scores 0 (its kernels are invisible) or -inf, and loses the
     * tie to a causal block of score 0 by index. */
    int wb, ncand;
    select_candidates(ap, s, t, &wb, &ncand);
    block_keys(ap, s, sc, ncand - 1, wb, ncand, keys);
    nsel[t] = select_from_keys(keys, tmp, wb, ncand, K, ncand - 1, sel + (size_t)t * K);
}

/* The buffers of select_token_few: Q [G][D], S2 [ceil(nl / 64)][G][64] (pass 1's products), tok [n1 + 1], mlc [3][G]
 * (m, l, LSE), keys / tmp [nblocks + 1] */
typedef struct few_sel {
    float *Q, *S2, *tok, *mlc;
    uint16_t *Q16; /* [G][D] the token's Q rows as bf16 (dot packs) */
    uint64_t *keys, *tmp;
} few_sel;

/* Stage 1 and the selection of local token t of sequence s, KV head g, on every thread (few_tokens): stage1_group's
 * and run_select's arithmetic for that token, bit for bit. Pass 1's products over the c2 tiles side by side into S2,
 * their LSE a row a thread, each row's tiles in order (stage1_group's calls, row by row), then pass 2's tiles side by
 * side, each writing its own kernels' scores, the block keys side by side, and the top-k on one thread. (Session 62:
 * the LSE and the block keys had run on one thread, ~1.4% of a 1-thread sparse step at 128K by perf; on 16 threads
 * the change was inside the noise.) Non-zero: out of memory. */
static int select_token_few(const ctx *c, const infllm_seq *s, int g, const kvpack *c1p, const kvpack *clp,
                            const void *q, int t, const few_sel *b, int32_t *sel, int32_t *nsel) {
    const infllm_attn_params *ap = c->ap;
    const int G = ap->G, n1 = s->n1, K = ap->topk_total;
    const float sl2 = ap->scale * (float)M_LOG2E;
    const int64_t p = (int64_t)s->lk - s->lq + t;
    int n1v, nlv;
    stage1_kernels(ap, s, p, 1, &n1v, &nlv);
    const int c_first = stage1_pass2_first(ap, s, p); /* stage1_group's bounds for this one token */
    enum { KEY_CHUNK = 64 }; /* blocks a share of the block keys */
    int wb, ncand;
    select_candidates(ap, s, t, &wb, &ncand);
    float *m = b->mlc, *l = m + G, *cl = l + G;
    load_q(c, s, g, q, t, 1, b->Q, c1p->dot ? b->Q16 : NULL);
    memset(b->tok, 0, (size_t)n1 * sizeof(float));
    for (int r = 0; r < G; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    const int nt1 = (nlv + CPU_KT - 1) / CPU_KT;
    const int nt2 = nlv > 0 && n1v > c_first ? (n1v - c_first + CPU_KT - 1) / CPU_KT : 0;
    int fail = 0;
    /* every thread, whatever the tiles: a decode step's regions keep one team size (session 61, 16 cores: with
     * teams sized to the work, and the borrowed packs' empty 16-thread loops, sparse 8K steps took 1.2-10.8 ms
     * against 0.26-0.38 so) */
#pragma omp parallel num_threads(cpu_team(c->nth)) reduction(| : fail)
    {
        float *S = malloc((size_t)G * CPU_KT * sizeof(float));
        int *hi = malloc((size_t)G * sizeof(int));
        if (!S || !hi) fail = 1; /* this thread computes nothing below; the call fails */
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < nt1; i++) {
            const int c0 = i * CPU_KT, cend = nlv - c0 < CPU_KT ? nlv : c0 + CPU_KT;
            if (S)
                qk_keys(c, clp, b->Q, b->Q16, 0, G, c0, (cend - c0 + CPU_KG - 1) / CPU_KG, b->S2 + (size_t)i * G * CPU_KT);
        }
        /* the LSE, a row a thread (the kernel's rows are independent: each row's bits as in one call over all G) */
#pragma omp for schedule(static)
        for (int r = 0; r < G; r++) {
            for (int i = 0; i < nt1; i++) {
                const int c0 = i * CPU_KT, cend = nlv - c0 < CPU_KT ? nlv : c0 + CPU_KT, h = nlv - c0;
                c->kn->lse(b->S2 + ((size_t)i * G + r) * CPU_KT, 1, (cend - c0 + CPU_KG - 1) / CPU_KG * CPU_KG, &h,
                           sl2, m + r, l + r);
            }
            cl[r] = l[r] > 0.0f || isnan(l[r]) ? m[r] + log2f(l[r]) : INFINITY;
        }
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < nt2; i++) {
            const int c0 = c_first + i * CPU_KT, cend = n1v - c0 < CPU_KT ? n1v : c0 + CPU_KT;
            if (!S || !hi) continue;
            for (int r = 0; r < G; r++) hi[r] = n1v - c0;
            qk_keys(c, c1p, b->Q, b->Q16, 0, G, c0, (cend - c0 + CPU_KG - 1) / CPU_KG, S);
            c->kn->expsum(S, 1, G, hi, sl2, cl, b->tok + c0, n1, cend - c0, ap->dtype == INFLLM_DTYPE_BF16);
        }
        /* select_row's block keys side by side, then its top-k on one thread */
#pragma omp for schedule(static)
        for (int b0 = wb; b0 < ncand; b0 += KEY_CHUNK)
            block_keys(ap, s, b->tok, ncand - 1, b0, ncand - b0 < KEY_CHUNK ? ncand : b0 + KEY_CHUNK, b->keys);
#pragma omp single
        nsel[t] = select_from_keys(b->keys, b->tmp, wb, ncand, K, ncand - 1, sel + (size_t)t * K);
        free(S);
        free(hi);
    }
    return fail;
}

/* Fused stage 1 + block scores + top-k for sequence s, head g: sel[t*K..], nsel[t].
 * scores_out != NULL (the explicit stage-1 op): writes the stage-1 rows instead and selects nothing. */
static int run_select(const ctx *c, const infllm_seq *s, int g, const kvpack *c1p, const kvpack *clp, const void *q,
                      int32_t *sel, int32_t *nsel, float *scores_out, long long *s1_tokens) {
    const infllm_attn_params *ap = c->ap;
    const int G = ap->G, MT = group_tokens_s1(G), K = ap->topk_total;
    int tfirst = 0;
    if (!scores_out) {
        /* tokens whose candidate blocks (causal, not before the window) number <= K select them all (exactly
         * dense) */
        while (tfirst < s->lq) {
            int64_t p = (int64_t)s->lk - s->lq + tfirst;
            int qb = (int)(p / ap->B), wb = infllm_window_first_block(p, ap->window, ap->B);
            if (qb - wb + 1 > K) break;
            for (int b = wb; b <= qb; b++) sel[(size_t)tfirst * K + b - wb] = b;
            nsel[tfirst] = qb - wb + 1;
            tfirst++;
        }
    }
    const int nneed = s->lq - tfirst;
    if (s1_tokens) *s1_tokens += nneed;
    if (nneed <= 0) return 0;
    if (!scores_out && c->few) {
        const size_t qb = (size_t)G * ap->D * sizeof(float),
                     s2b = (size_t)((ap->exact_lse ? s->n1 : s->n2) + CPU_KT - 1) / CPU_KT * G * CPU_KT * sizeof(float),
                     tb = (size_t)(s->n1 + 1) * sizeof(float), mb = (size_t)3 * G * sizeof(float),
                     kb = (size_t)(s->nblocks + 1) * 2 * sizeof(uint64_t),
                     q16b = c1p->dot ? (size_t)G * ap->D * sizeof(uint16_t) : 0;
        few_sel b = {ws_alloc(qb), ws_alloc(s2b), ws_alloc(tb), ws_alloc(mb), q16b ? ws_alloc(q16b) : NULL,
                     ws_alloc(kb), NULL};
        int fail = !b.Q || !b.S2 || !b.tok || !b.mlc || !b.keys || (q16b && !b.Q16);
        if (!fail) b.tmp = b.keys + s->nblocks + 1;
        for (int t = tfirst; t < s->lq && !fail; t++) fail = select_token_few(c, s, g, c1p, clp, q, t, &b, sel, nsel);
        ws_free(b.Q, qb);
        ws_free(b.S2, s2b);
        ws_free(b.tok, tb);
        ws_free(b.mlc, mb);
        ws_free(b.keys, kb);
        if (b.Q16) ws_free(b.Q16, q16b);
        return fail;
    }
    const int ngroups = (nneed + MT - 1) / MT;
    const int nth = c->nth < ngroups ? c->nth : ngroups;
    (void)nth; /* without OpenMP */
    int fail = 0;
#pragma omp parallel num_threads(cpu_team(nth)) reduction(| : fail)
    {
        scratch w;
        const int ok = !scratch_init(&w, MT * G, MT, ap->D, s->n1, s->nblocks, scratch_kind(c1p));
        if (!ok) fail = 1; /* a thread without scratch skips its groups; every thread meets every barrier */
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < ngroups; i++) {
            if (!ok) continue;
            int gi = ngroups - 1 - i;
            int t0 = tfirst + gi * MT, nt = s->lq - t0 < MT ? s->lq - t0 : MT;
            stage1_group(c, s, g, c1p, clp, q, t0, nt, scores_out == NULL, &w);
            for (int tt = 0; tt < nt; tt++) {
                const float *sc = w.tok + (size_t)tt * s->n1;
                int t = t0 + tt;
                if (scores_out) {
                    float *row = scores_out + ((size_t)g * ap->total_q + (size_t)(s->q0 + t)) * ap->max_n1;
                    /* NaN (from NaN inputs) -> 0, as REF (the fused selection's block max ignores a NaN,
                     * which ranks the blocks the same) */
                    for (int j = 0; j < s->n1; j++) row[j] = sc[j] == sc[j] ? sc[j] : 0.0f;
                    for (int j = s->n1; j < ap->max_n1; j++) row[j] = 0.0f;
                    continue;
                }
                select_row(ap, s, t, sc, w.keys, w.tmp, K, sel, nsel);
            }
        }
        scratch_free(&w);
    }
    size_t sb = scratch_bytes(MT * G, MT, ap->D, s->n1, s->nblocks, scratch_kind(c1p)) * (size_t)c->nth;
    if (g_ws_cur + sb > g_ws_peak) g_ws_peak = g_ws_cur + sb;
    return fail;
}

/* ------------------------------------------------------------ the ops ---- */

static void ctx_init(ctx *c, const infllm_attn_params *ap) {
    c->ap = ap;
    c->kn = cpu_kern_get();
    c->es = infllm_dtype_size(ap->dtype);
    c->nth = ap->num_threads > 0 ? ap->num_threads : 1;
    c->kvt = NULL;
    c->dot = cpu_dot16_for(ap->dtype);
    c->few = 0;
}

void cpu_mean_window(const void *k, infllm_dtype dt, int64_t row_elems, int64_t row0, int32_t len, void *dst,
                     int64_t dst_row) {
    float acc[256];
    for (int64_t c0 = 0; c0 < row_elems; c0 += 256) {
        int64_t nc = row_elems - c0 < 256 ? row_elems - c0 : 256;
        for (int64_t i = 0; i < nc; i++) acc[i] = 0.0f;
        for (int32_t r = 0; r < len; r++) {
            int64_t base = (row0 + r) * row_elems + c0;
            switch (dt) {
            case INFLLM_DTYPE_BF16:
                for (int64_t i = 0; i < nc; i++) acc[i] += infllm_bf16_to_f32(((const uint16_t *)k)[base + i]);
                break;
            case INFLLM_DTYPE_F16:
                for (int64_t i = 0; i < nc; i++) acc[i] += infllm_f16_to_f32(((const uint16_t *)k)[base + i]);
                break;
            default:
                for (int64_t i = 0; i < nc; i++) acc[i] += ((const float *)k)[base + i];
                break;
            }
        }
        for (int64_t i = 0; i < nc; i++) infllm_store_f32(dst, dt, dst_row * row_elems + c0 + i, acc[i] / (float)len);
    }
}

/* c1/c2 of sequence s into c1/c2 at rows c1_row0 / c2_row0. */
static void compress_seq(const ctx *c, const infllm_seq *s, const void *k, void *c1, int64_t c1_row0, void *c2,
                         int64_t c2_row0) {
    const infllm_attn_params *ap = c->ap;
    int n1 = s->n1, n2 = c2 ? s->n2 : 0;
#pragma omp parallel for schedule(dynamic, 16) num_threads(cpu_team(c->nth))
    for (int j = 0; j < n1 + n2; j++) {
        if (j < n1)
            cpu_mean_window(k, ap->dtype, ap->kv_tok, s->k0 + (int64_t)j * ap->s1, ap->l1, c1, c1_row0 + j);
        else
            cpu_mean_window(k, ap->dtype, ap->kv_tok, s->k0 + (int64_t)(j - n1) * ap->s2, ap->l2, c2,
                            c2_row0 + (j - n1));
    }
}

infllm_status cpu_compress(const infllm_attn_params *ap, const void *k, void *c1, void *c2) {
    ctx c;
    ctx_init(&c, ap);
    for (int32_t b = 0; b < ap->num_seqs; b++) compress_seq(&c, &ap->seqs[b], k, c1, ap->seqs[b].c1_0, c2, ap->seqs[b].c2_0);
    return INFLLM_OK;
}

infllm_status cpu_stage1(const infllm_attn_params *ap, const void *q, const void *c1, const void *c2, float *scores) {
    ctx c;
    ctx_init(&c, ap);
    infllm_status st = INFLLM_OK;
    /* rows of empty sequences / padding: zero first */
    memset(scores, 0, (size_t)ap->Hkv * (size_t)ap->total_q * (size_t)ap->max_n1 * sizeof(float));
    for (int32_t b = 0; b < ap->num_seqs && !st; b++) {
        const infllm_seq *s = &ap->seqs[b];
        if (s->lq == 0 || s->n1 == 0) continue;
        for (int g = 0; g < ap->Hkv && !st; g++) {
            kvpack p1, p2;
            int e = kvpack_init(&c, &p1, c1, NULL, s->c1_0, s->n1, g, 0);
            if (!ap->exact_lse) e |= kvpack_init(&c, &p2, c2, NULL, s->c2_0, s->n2, g, 0);
            if (e) st = infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (stage-1 packing)");
            else {
                kvpack_all(&c, &p1);
                if (!ap->exact_lse) kvpack_all(&c, &p2);
                if (run_select(&c, s, g, &p1, ap->exact_lse ? &p1 : &p2, q, NULL, NULL, scores, NULL))
                    st = infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (stage-1 scratch)");
            }
            kvpack_free(&p1);
            if (!ap->exact_lse) kvpack_free(&p2);
        }
    }
    return st;
}

infllm_status cpu_block_scores(const infllm_attn_params *ap, const float *scores, float *block_scores) {
    const int nbo = ap->nblocks_out;
    for (int32_t b = 0; b < ap->num_seqs; b++) {
        const infllm_seq *s = &ap->seqs[b];
        int64_t rows = (int64_t)ap->Hkv * s->lq;
#pragma omp parallel for schedule(static) num_threads(cpu_team(ap->num_threads > 0 ? ap->num_threads : 1))
        for (int64_t i = 0; i < rows; i++) {
            int g = (int)(i / (s->lq > 0 ? s->lq : 1)), t = (int)(i % (s->lq > 0 ? s->lq : 1));
            size_t row = (size_t)g * ap->total_q + (size_t)(s->q0 + t);
            const float *sc = scores + row * ap->max_n1;
            float *out = block_scores + row * nbo;
            int qb = (int)(((int64_t)s->lk - s->lq + t) / ap->B);
            /* every column, padding ones too (SPEC B 6): forced -> +inf, else the max-pool over the
             * sequence's own kernels (-inf past its last block) */
            for (int blk = 0; blk < nbo; blk++) out[blk] = block_score(ap, sc, s->n1, blk, qb);
        }
    }
    return INFLLM_OK;
}

infllm_status cpu_topk(const infllm_attn_params *ap, const float *block_scores, int32_t *topk_idx) {
    const int nbo = ap->nblocks_out, ko = ap->topk_out;
    int fail = 0;
    for (int32_t b = 0; b < ap->num_seqs; b++) {
        const infllm_seq *s = &ap->seqs[b];
        int64_t rows = (int64_t)ap->Hkv * s->lq;
        if (rows == 0) continue;
#pragma omp parallel num_threads(cpu_team(ap->num_threads > 0 ? ap->num_threads : 1)) reduction(| : fail)
        {
            uint64_t *keys = malloc((size_t)(s->nblocks + 1) * 2 * sizeof(uint64_t));
            if (!keys) fail = 1; /* this thread skips its rows; every thread meets every barrier */
#pragma omp for schedule(static)
            for (int64_t i = 0; i < rows; i++) {
                if (!keys) continue;
                int g = (int)(i / s->lq), t = (int)(i % s->lq);
                size_t row = (size_t)g * ap->total_q + (size_t)(s->q0 + t);
                const float *bs = block_scores + row * nbo;
                int32_t *dst = topk_idx + row * ko;
                const int64_t p = (int64_t)s->lk - s->lq + t;
                int qb = (int)(p / ap->B), wb = infllm_window_first_block(p, ap->window, ap->B);
                int n = s->nblocks;
                for (int blk = wb; blk < n; blk++) keys[blk] = block_key(bs[blk], blk);
                int k = ko < n - wb ? ko : n - wb;
                int cnt = select_from_keys(keys, keys + s->nblocks + 1, wb, n, k, qb, dst);
                for (int j = cnt; j < ko; j++) dst[j] = -1;
            }
            free(keys);
        }
    }
    return fail ? infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (top-k)") : INFLLM_OK;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* ------------------------------------------------------ heads side by side ---- */

/* The threads that take sequence s's KV heads side by side. The attention and the selection thread over token
 * groups of one head at a time, so a call of few tokens (a decode step: one group) ran every head on one thread
 * however many were asked for (session 59: 2 KV heads, 2 threads, a 32K dense decode attend 7.2 ms on one thread,
 * 7.8 on two). Where the groups cannot fill the threads, min(Hkv, threads) of them take a head each (the heads'
 * arithmetic is unchanged: the same bits; a head's own regions then run on its one thread, OpenMP's nested regions
 * being inactive), unless the tokens are so few that the heads go one after the other, each on every thread
 * (few_tokens; session 61). */
static int head_threads(const ctx *c, const infllm_seq *s) {
    const int MT = group_tokens_sparse(c->ap->G), groups = (int)((s->lq + MT - 1) / MT);
    /* fewer tokens than threads a head: the heads one after the other, each cut finer (few_tokens) */
    if (c->nth <= 1 || c->ap->Hkv <= 1 || groups >= c->nth || c->few) return 1;
    return c->ap->Hkv < c->nth ? c->ap->Hkv : c->nth;
}

/* Working memory while the heads run side by side: g_ws_* count per thread, so each thread of the team reports
 * the most it held above what it held when the region began (ws_team_begin / ws_team_end, around its share of the
 * heads), and the caller adds the sum of those to its own count (ws_team_add): a bound, as if every thread's peak
 * came at once */
static size_t ws_team_begin(size_t *saved_peak) {
    *saved_peak = g_ws_peak;
    g_ws_peak = g_ws_cur;
    return g_ws_cur;
}
static size_t ws_team_end(size_t cur0, size_t saved_peak) {
    const size_t d = g_ws_peak - cur0;
    if (saved_peak > g_ws_peak) g_ws_peak = saved_peak;
    return d;
}
static void ws_team_add(size_t sum) {
    if (g_ws_cur + sum > g_ws_peak) g_ws_peak = g_ws_cur + sum;
}

/* What one KV head's work adds up (sparse_head: the stages' times, summed over heads run side by side, and the
 * tokens that ran stage 1) */
typedef struct head_times {
    double t1, t2;
    long long s1tok;
} head_times;
/* One KV head g of sequence s, for run_heads: slot indexes its own buffers (g when the heads run side by side,
 * else 0, every head using one set in turn); arg the call's arguments. 0, or a failure code */
typedef int (*head_fn)(const ctx *c, const infllm_seq *s, int g, int slot, void *arg, head_times *tm);

/* fn on every KV head of s: one after the other (stopping at the first failure, its code returned), or, with hp > 1
 * (head_threads), hp threads taking a head each with c->nth / hp threads of their own, the working memory counted
 * as ws_team_* says and the failure codes ORed */
static int run_heads(const ctx *c, const infllm_seq *s, int hp, head_fn fn, void *arg, head_times *tm) {
    int fail = 0;
    if (hp <= 1) {
        for (int g = 0; g < c->ap->Hkv && !fail; g++) fail = fn(c, s, g, 0, arg, tm);
        return fail;
    }
    ctx ci = *c;
    ci.nth = c->nth / hp;
    size_t wsd = 0;
    double t1 = 0, t2 = 0;
    long long s1tok = 0;
#pragma omp parallel num_threads(cpu_team(hp)) reduction(| : fail) reduction(+ : wsd, t1, t2, s1tok)
    {
        size_t sp;
        const size_t c0 = ws_team_begin(&sp);
        head_times mine = {0, 0, 0};
#pragma omp for schedule(dynamic, 1)
        for (int g = 0; g < c->ap->Hkv; g++) fail |= fn(&ci, s, g, g, arg, &mine);
        t1 += mine.t1;
        t2 += mine.t2;
        s1tok += mine.s1tok;
        wsd += ws_team_end(c0, sp);
    }
    ws_team_add(wsd);
    tm->t1 += t1;
    tm->t2 += t2;
    tm->s1tok += s1tok;
    return fail;
}

typedef struct given_args {
    const void *q, *k, *v;
    const int32_t *topk_idx;
    int32_t topk_cols;
    int32_t *sel, *nsel; /* per slot: [lq, topk_cols], [lq] */
    void *out;
    float *lse;
} given_args;

/* One KV head of infllm_sparse_attention's sequence s (a head_fn): its rows of the given top-k (causal entries,
 * ascending, without repeats) into its slot's sel / nsel, then stage 2. 0, or 1 when out of memory */
static int given_head(const ctx *c, const infllm_seq *s, int g, int slot, void *arg, head_times *tm) {
    (void)tm;
    const given_args *a = arg;
    const infllm_attn_params *ap = c->ap;
    const void *q = a->q, *k = a->k, *v = a->v;
    const int32_t *topk_idx = a->topk_idx, topk_cols = a->topk_cols;
    int32_t *sel = a->sel + (size_t)slot * s->lq * topk_cols, *nsel = a->nsel + (size_t)slot * s->lq;
    kvpack kp;
    if (kvpack_init(c, &kp, k, v, s->k0, s->lk, g, 1)) {
        kvpack_free(&kp);
        return 1;
    }
    for (int t = 0; t < s->lq; t++) {
        const int32_t *src = topk_idx + ((size_t)g * ap->total_q + (size_t)(s->q0 + t)) * topk_cols;
        int32_t *dst = sel + (size_t)t * topk_cols;
        int qb = (int)(((int64_t)s->lk - s->lq + t) / ap->B), n = 0;
        for (int j = 0; j < topk_cols; j++)
            if (src[j] >= 0 && src[j] <= qb) dst[n++] = src[j];
        qsort(dst, (size_t)n, sizeof *dst, cmp_i32);
        int u = 0;
        for (int j = 0; j < n; j++)
            if (u == 0 || dst[j] != dst[u - 1]) dst[u++] = dst[j];
        nsel[t] = u;
    }
    const int e = run_attn(c, s, g, &kp, q, a->out, a->lse, sel, topk_cols, nsel);
    kvpack_free(&kp);
    return e;
}

infllm_status cpu_sparse_attn(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                              const int32_t *topk_idx, int32_t topk_cols, void *out, float *lse) {
    ctx c;
    ctx_init(&c, ap);
    double t_start = now_ms();
    infllm_status st = INFLLM_OK;
    for (int32_t b = 0; b < ap->num_seqs && !st; b++) {
        const infllm_seq *s = &ap->seqs[b];
        if (s->lq == 0) continue;
        /* heads side by side (head_threads) each need their own rows */
        c.few = few_tokens(&c, s, (int64_t)topk_cols * ap->B);
        const int hp = head_threads(&c, s), nbuf = hp > 1 ? ap->Hkv : 1;
        size_t selb = (size_t)s->lq * topk_cols * sizeof(int32_t) * nbuf, nselb = (size_t)s->lq * sizeof(int32_t) * nbuf;
        int32_t *sel = ws_alloc(selb), *nsel = ws_alloc(nselb);
        int fail = !sel || !nsel;
        if (!fail) {
            given_args a = {q, k, v, topk_idx, topk_cols, sel, nsel, out, lse};
            head_times tm = {0, 0, 0};
            fail = run_heads(&c, s, hp, given_head, &a, &tm);
        }
        if (fail) st = infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (sparse attention)");
        ws_free(sel, selb);
        ws_free(nsel, nselb);
    }
    if (g_stats) g_stats->stage2_ms += now_ms() - t_start;
    return st;
}

typedef struct dense_args {
    const void *q, *k, *v;
    void *out;
    float *lse;
} dense_args;

/* One KV head of a dense sequence (a head_fn: no buffers of its own): 0, or 1 when out of memory */
static int dense_head(const ctx *c, const infllm_seq *s, int g, int slot, void *arg, head_times *tm) {
    (void)slot;
    (void)tm;
    const dense_args *a = arg;
    kvpack kp;
    const int e = kvpack_init(c, &kp, a->k, a->v, s->k0, s->lk, g, 0) ||
                  run_attn(c, s, g, &kp, a->q, a->out, a->lse, NULL, 0, NULL);
    kvpack_free(&kp);
    return e;
}

static infllm_status dense_seq(const ctx *c, const infllm_seq *s, const void *q, const void *k, const void *v,
                               void *out, float *lse) {
    dense_args a = {q, k, v, out, lse};
    head_times tm = {0, 0, 0};
    ctx cd = *c;
    cd.few = few_tokens(&cd, s, s->lk);
    const int fail = run_heads(&cd, s, head_threads(&cd, s), dense_head, &a, &tm);
    return fail ? infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (dense attention)") : INFLLM_OK;
}

infllm_status cpu_dense_attn(const infllm_attn_params *ap, const void *q, const void *k, const void *v, void *out,
                             float *lse) {
    ctx c;
    ctx_init(&c, ap);
    double t0 = now_ms();
    infllm_status st = INFLLM_OK;
    for (int32_t b = 0; b < ap->num_seqs && !st; b++)
        if (ap->seqs[b].lq > 0) st = dense_seq(&c, &ap->seqs[b], q, k, v, out, lse);
    if (g_stats) g_stats->dense_ms += now_ms() - t0;
    return st;
}

/* Whether every query of sparse sequence s has at most topk_total candidate blocks (causal, and not wholly
 * before its sliding window, which spans at most ceil((window - 1) / B) + 1 blocks), and so selects all of
 * them (sparse attention is then bitwise dense, and no selection is computed) */
static int selects_every_block(const infllm_attn_params *ap, const infllm_seq *s) {
    int64_t most = (s->lk - 1) / ap->B + 1;
    if (ap->window > 0) {
        const int64_t in_window = infllm_window_span_blocks(ap->window, ap->B);
        if (in_window < most) most = in_window;
    }
    return most <= ap->topk_total;
}

/* The selection of sequence s, KV head g (sel / nsel, K a row) from its compressed keys (c1 / c2 with
 * the sequence's first rows at r1 / r2): packs them, then run_select. Non-zero: out of memory. */
static int select_head(const ctx *c, const infllm_seq *s, int g, const void *c1, int64_t r1, const void *c2,
                       int64_t r2, const void *q, int32_t *sel, int32_t *nsel, long long *s1_tokens) {
    const infllm_attn_params *ap = c->ap;
    kvpack p1, p2;
    int e = kvpack_init_compressed(c, &p1, c1, r1, s->n1, g, 1);
    if (!ap->exact_lse) e |= kvpack_init_compressed(c, &p2, c2, r2, s->n2, g, 2);
    if (!e) {
        kvpack_all(c, &p1);
        if (!ap->exact_lse) kvpack_all(c, &p2);
        e = run_select(c, s, g, &p1, ap->exact_lse ? &p1 : &p2, q, sel, nsel, NULL, s1_tokens);
    }
    kvpack_free(&p1);
    if (!ap->exact_lse) kvpack_free(&p2);
    return e;
}

typedef struct sparse_args {
    const void *sc1, *sc2; /* compressed keys, from rows r1 / r2 */
    int64_t r1, r2;
    const void *q, *k, *v;
    int32_t *sel, *nsel; /* per slot: [lq, topk_total], [lq] */
    void *out;
    float *lse;
} sparse_args;

/* One KV head of a sparse sequence (a head_fn): the selection into its slot's sel / nsel, then stage 2. 0, 1 (stage 1
 * out of memory) or 2 (stage 2); the stages' times add to tm->t1 / t2, the tokens that ran stage 1 to tm->s1tok */
static int sparse_head(const ctx *c, const infllm_seq *s, int g, int slot, void *arg, head_times *tm) {
    const sparse_args *a = arg;
    const int32_t K = c->ap->topk_total;
    int32_t *sel = a->sel + (size_t)slot * s->lq * K, *nsel = a->nsel + (size_t)slot * s->lq;
    const double t0 = now_ms();
    if (select_head(c, s, g, a->sc1, a->r1, a->sc2, a->r2, a->q, sel, nsel, &tm->s1tok)) {
        tm->t1 += now_ms() - t0;
        return 1;
    }
    const double ta = now_ms();
    tm->t1 += ta - t0;
    kvpack kp;
    const int e = kvpack_init(c, &kp, a->k, a->v, s->k0, s->lk, g, 1) ||
                  run_attn(c, s, g, &kp, a->q, a->out, a->lse, sel, K, nsel);
    kvpack_free(&kp);
    tm->t2 += now_ms() - ta;
    return e ? 2 : 0;
}

infllm_status cpu_attention(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                            const void *c1, const void *c2, const cpu_kv_tiles *kvt, void *out, float *lse) {
    ctx c;
    ctx_init(&c, ap);
    c.kvt = kvt && ap->num_seqs == 1 && kvt->Hkv == ap->Hkv && kvt->D == ap->D && kvt->dtype == ap->dtype ? kvt : NULL;
    g_ws_cur = 0;
    g_ws_peak = 0;
    double t_start = now_ms();
    infllm_status st = INFLLM_OK;
    const int K = ap->topk_total;
    for (int32_t b = 0; b < ap->num_seqs && !st; b++) {
        const infllm_seq *s = &ap->seqs[b];
        if (s->lq == 0) continue;
        if (!s->sparse) {
            double t0 = now_ms();
            st = dense_seq(&c, s, q, k, v, out, lse);
            if (g_stats) g_stats->dense_ms += now_ms() - t0;
            continue;
        }
        if (selects_every_block(ap, s)) {
            /* the sparse result is bitwise the dense one (same tiles, same order); skip compression
             * and selection */
            double t0 = now_ms();
            st = dense_seq(&c, s, q, k, v, out, lse);
            if (g_stats) g_stats->stage2_ms += now_ms() - t0;
            continue;
        }
        /* compressed keys: given (decode cache) or computed for this sequence */
        const void *sc1 = c1, *sc2 = c2;
        int64_t r1 = s->c1_0, r2 = s->c2_0;
        void *own1 = NULL, *own2 = NULL;
        size_t b1 = (size_t)(s->n1 + 1) * ap->kv_tok * c.es, b2 = (size_t)(s->n2 + 1) * ap->kv_tok * c.es;
        if (!c1) {
            double t0 = now_ms();
            own1 = ws_alloc(b1);
            own2 = ws_alloc(b2);
            if (!own1 || !own2) {
                ws_free(own1, b1);
                ws_free(own2, b2);
                st = infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (compressed keys)");
                break;
            }
            compress_seq(&c, s, k, own1, 0, ap->exact_lse ? NULL : own2, 0);
            sc1 = own1;
            sc2 = own2;
            r1 = r2 = 0;
            if (g_stats) g_stats->compress_ms += now_ms() - t0;
        }
        /* heads side by side (head_threads) each need their own selection rows */
        c.few = few_tokens(&c, s, (int64_t)K * ap->B);
        const int hp = head_threads(&c, s), nbuf = hp > 1 ? ap->Hkv : 1;
        size_t selb = (size_t)s->lq * K * sizeof(int32_t) * nbuf, nselb = (size_t)s->lq * sizeof(int32_t) * nbuf;
        int32_t *sel = ws_alloc(selb), *nsel = ws_alloc(nselb);
        if (!sel || !nsel) st = infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (selection)");
        int fail = 0;
        head_times tm = {0, 0, 0};
        if (!st) {
            sparse_args a = {sc1, sc2, r1, r2, q, k, v, sel, nsel, out, lse};
            fail = run_heads(&c, s, hp, sparse_head, &a, &tm);
        }
        /* with the heads side by side, the stages' times are their sums over the heads */
        if (g_stats) {
            g_stats->stage1_ms += tm.t1;
            g_stats->stage2_ms += tm.t2;
            g_stats->stage1_tokens += tm.s1tok;
        }
        if (fail & 1) st = infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (stage 1)");
        else if (fail) st = infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (stage 2)");
        ws_free(sel, selb);
        ws_free(nsel, nselb);
        ws_free(own1, b1);
        ws_free(own2, b2);
    }
    if (g_stats) {
        g_stats->total_ms += now_ms() - t_start;
        if (g_ws_peak > g_stats->work_peak) g_stats->work_peak = g_ws_peak;
    }
    return st;
}

/* The fused selection of cpu_attention's sparse sequences for every sequence (mode and dense_len
 * aside): topk_idx [Hkv, total_q, topk_out], ascending, -1 padded. */
infllm_status cpu_select_blocks(const infllm_attn_params *ap, const void *q, const void *k, int32_t *topk_idx) {
    ctx c;
    ctx_init(&c, ap);
    const int KO = ap->topk_out;
    infllm_status st = INFLLM_OK;
    for (int32_t b = 0; b < ap->num_seqs && !st; b++) {
        const infllm_seq *s = &ap->seqs[b];
        if (s->lq == 0) continue;
        /* a row of sel holds at most min(topk_total, nblocks) blocks: a topk_total past the sequence's blocks (up to
         * 2^24, "every block") must not size it (4096 queries x 2^24 columns asked malloc for 275 GB: NOMEM). With
         * fewer blocks than topk_total every query selects all its causal blocks (all_causal), so run_select, whose
         * rows are topk_total wide, runs only when K == topk_total */
        const int K = ap->topk_total < s->nblocks ? ap->topk_total : s->nblocks;
        size_t selb = (size_t)s->lq * K * sizeof(int32_t), nselb = (size_t)s->lq * sizeof(int32_t);
        int32_t *sel = ws_alloc(selb), *nsel = ws_alloc(nselb);
        void *own1 = NULL, *own2 = NULL;
        size_t b1 = (size_t)(s->n1 + 1) * ap->kv_tok * c.es, b2 = (size_t)(s->n2 + 1) * ap->kv_tok * c.es;
        const int all_causal = selects_every_block(ap, s);
        if (!all_causal) {
            own1 = ws_alloc(b1);
            own2 = ws_alloc(b2);
        }
        if (!sel || !nsel || (!all_causal && (!own1 || !own2))) {
            st = infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (selection)");
        } else if (!all_causal) {
            compress_seq(&c, s, k, own1, 0, ap->exact_lse ? NULL : own2, 0);
        } else { /* blocks first-in-window .. q_block of each query, the same for every KV head */
            for (int t = 0; t < s->lq; t++) {
                const int64_t p = (int64_t)s->lk - s->lq + t;
                const int qb = (int)(p / ap->B), wb = infllm_window_first_block(p, ap->window, ap->B);
                for (int e = wb; e <= qb; e++) sel[(size_t)t * K + e - wb] = e;
                nsel[t] = qb - wb + 1;
            }
        }
        c.few = few_tokens(&c, s, s->lk); /* stage 1 scans every kernel */
        for (int g = 0; g < ap->Hkv && !st; g++) {
            if (!all_causal) {
                const int e = select_head(&c, s, g, own1, 0, own2, 0, q, sel, nsel, NULL);
                if (e) {
                    st = infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (stage 1)");
                    break;
                }
            }
            for (int t = 0; t < s->lq; t++) {
                int32_t *row = topk_idx + ((size_t)g * ap->total_q + (size_t)(s->q0 + t)) * KO;
                int e = 0;
                for (; e < nsel[t] && e < KO; e++) row[e] = sel[(size_t)t * K + e];
                for (; e < KO; e++) row[e] = -1;
            }
        }
        ws_free(sel, selb);
        ws_free(nsel, nselb);
        ws_free(own1, b1);
        ws_free(own2, b2);
    }
    return st;
}
