/*
 * bench.c: `infllm bench attn` (CPU backend, or the GPU with --device cuda), `infllm bench peak`,
 * `infllm bench backward` and `infllm bench decode` (CPU backend, or the GPU with --device cuda); `infllm bench run` is tools/bench_run.c.
 * Each benchmark's options, their defaults and meanings are its option table in parse_bench (one table for the
 * three: `infllm bench BENCH --help` prints a benchmark's share of it). What the table does not say:
 *
 *   peak: every thread runs independent AVX-512 (else AVX2) FMA chains held in registers; GFLOP/s =
 *       2 * 16 (8) lanes * FMAs / s, by the wall clock and by each thread's CPU time.
 *   attn: one prefill sequence of T tokens a --seqlen (q, k, v N(0,1) in the dtype by default). dense: the
 *       dense causal path (mode DENSE); sparse: the whole InfLLM-V2 pipeline through infllm_attention (mode
 *       SPARSE: compression, fused stage 1 + top-k, stage 2), with per-stage times from the CPU path's timing
 *       hook. Times are medians over the reps (after one warm-up run at the first length, at most 4096 tokens,
 *       unless --no-warmup); the runs alternate dense, sparse, dense, ... and "vs dense" is the median of the
 *       per-pair ratios (both see the same machine load).
 *       --device cuda: the same on the GPU (bf16 / f16, head_dim 64 / 128), timed with CUDA events on one stream
 *       with a caller workspace (no allocation inside the timed calls), kind by kind; the sparse row's stages are
 *       separate calls on the same inputs: compress = infllm_compress_keys, stage 1 = infllm_select_blocks
 *       (compression + fused selection) less compress, stage 2 = infllm_sparse_attention on the selected blocks;
 *       "vs dense" the ratio of the medians (with a --window whose blocks topk + local_blocks cover, the stages are
 *       not timed: the pipeline then runs as the windowed dense call). --inputs structured (both devices) are
 *       bench/cuda_bench.py's synthetic inputs, on which neighbouring tokens select similar blocks, as in real text.
 *   backward: a training step's attention: dense (infllm_dense_attention, then
 *       infllm_dense_attention_backward_out) and sparse (infllm_select_blocks, infllm_sparse_attention on its
 *       blocks, infllm_sparse_attention_backward_out), the forward and backward calls alternating, the backward
 *       given the forward's out and lse as a training step has them (the CPU does not read out; CUDA then skips
 *       recomputing the forward, about a quarter of its backward at 128K); medians over the reps, "bwd / fwd" the
 *       median of the per-pair ratios. FLOPs count the attended keys exactly (from the selection): forward 4 D
 *       per (row, key), backward 14 D (S, dP, dq in pass A; S, dP, dk, dv in pass B; cpu_backward.c).
 *       --device cuda: the same on the GPU (bf16 / f16, head_dim 64 / 128; --inputs too), timed with CUDA
 *       events on one stream with one caller workspace of the largest need; the selection timed once; backward
 *       GFLOP/s at 10 D a pair (the usual five products; the CUDA backward does 14 D with out given, 18 D
 *       without: cuda_backward.cu). bench/cuda_bwd_bench.py times these calls, with and without out,
 *       against PyTorch's SDPA and FlexAttention backwards.
 *   decode: one decode step against the public decode cache (infllm_cache_*): a cache of T - 1 tokens a --seqlen T
 *       (k, v as attn's inputs), then per timed step the cache truncated back to T - 1 tokens, one token appended and
 *       its query attended, dense and sparse (mode DENSE / SPARSE at each attend), append and attend timed apart.
 *       CPU: wall clock a call, CPU time a step, the modes alternating; "vs dense" the median of the per-step
 *       ratios. --device cuda: one stream, caller workspace, eager steps enqueued back to back between CUDA events,
 *       then the step and the attend alone captured into CUDA graphs and replayed (issue 3's decode measure);
 *       "vs dense" the ratio of the graph steps. "read MiB" counts the K / V rows (and compressed keys) the attend
 *       reads (decode_read_bytes), "GB/s" that over the attend (the graph's on the GPU): decode is bound by memory.
 *   Output (--format): a value that does not apply to a row (NOT_APPLICABLE: a dense row's stages, "vs dense"
 *       without a dense row, what the GPU does not measure) is null in json, an empty field in csv, "-" in md.
 *   FLOP formulas (multiply-add = 2):
 *       dense   4 * D * Hq * sum_p (p + 1)                        (~2 T^2 D Hq)
 *       stage 2 4 * D * Hq * sum_p |keys of p|                    (|keys| <= K * B)
 *       stage 1 2 * D * Hq * sum_{p: stage 1 runs} (n1v(p) + n2v(p))
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#ifdef INFLLM_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "../src/attn/cpu_stats.h"
#include "commands.h"
#include "dtype.h"
#include "infllm.h"
#include "internal.h"
#include "fmtout.h"
#include "opts.h"

static double cpu_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_dbl);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void cpu_model(char *buf, size_t n) {
    snprintf(buf, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "model name", 10)) {
            char *c = strchr(line, ':');
            if (c) {
                c++;
                while (*c == ' ') c++;
                size_t l = strlen(c);
                while (l && (c[l - 1] == '\n' || c[l - 1] == ' ')) c[--l] = 0;
                snprintf(buf, n, "%s", c);
            }
            break;
        }
    }
    fclose(f);
}

static long vm_hwm_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) v = strtol(line + 6, NULL, 10);
    fclose(f);
    return v;
}

/* the 1-minute load average, or NAN when /proc/loadavg cannot be read (no /proc, another OS): a value that does not
 * apply, printed null (json) / "-" (md) as NOT_APPLICABLE below, not the -1.00 it was, which read as a load */
static double load_avg(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    double l = NAN;
    if (f) {
        if (fscanf(f, "%lf", &l) != 1 || !(l >= 0)) l = NAN;
        fclose(f);
    }
    return l;
}

/* v with decimals as a md table cell into buf[n]; NOT_APPLICABLE (any value that is not finite) as "-", as eval's
 * table marks its columns without a dense row */
static const char *md_cell(char *buf, size_t n, int decimals, double v) {
    if (isfinite(v)) snprintf(buf, n, "%.*f", decimals, v);
    else snprintf(buf, n, "-");
    return buf;
}


/* ------------------------------------------------------------------ peak ---- */

#if defined(__x86_64__) || defined(__i386__)
/* independent FMA chains a thread: enough to cover the FMA latency on both FMA ports (4-5 cycles x 2), and with
 * the two operands within the register file: 16 + 2 of AVX-512's 32 zmm, 12 + 2 of AVX2's 16 ymm (16 chains
 * there spilled to the stack and measured ~1/3 of the peak: 29.9 GFLOP/s a thread on an AMD EPYC whose dense
 * attention ran at ~52) */
#define PEAK_R(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
#define PEAK_R12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define PEAK_CHAINS_AVX512 16
#define PEAK_CHAINS_AVX2 12
__attribute__((target("avx512f"))) static double peak_avx512(long iters) {
#define P_DECL(i) __m512 a##i = _mm512_set1_ps(0.001f * (i + 1));
    PEAK_R(P_DECL)
    __m512 x = _mm512_set1_ps(0.99999f), y = _mm512_set1_ps(1e-7f);
    for (long n = 0; n < iters; n++) {
#define P_FMA(i) a##i = _mm512_fmadd_ps(a##i, x, y);
        PEAK_R(P_FMA)
        __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7));
        __asm__ volatile("" : "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11), "+v"(a12), "+v"(a13), "+v"(a14), "+v"(a15));
    }
#define P_SUM(i) +_mm512_reduce_add_ps(a##i)
    return 0.0 PEAK_R(P_SUM);
}
__attribute__((target("avx2,fma"))) static double peak_avx2(long iters) {
#define Q_DECL(i) __m256 a##i = _mm256_set1_ps(0.001f * (i + 1));
    PEAK_R12(Q_DECL)
    __m256 x = _mm256_set1_ps(0.99999f), y = _mm256_set1_ps(1e-7f);
    for (long n = 0; n < iters; n++) {
#define Q_FMA(i) a##i = _mm256_fmadd_ps(a##i, x, y);
        PEAK_R12(Q_FMA)
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5));
        __asm__ volatile("" : "+x"(a6), "+x"(a7), "+x"(a8), "+x"(a9), "+x"(a10), "+x"(a11));
    }
    float s[8];
    __m256 t = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    t = _mm256_add_ps(t, _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    t = _mm256_add_ps(t, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    _mm256_storeu_ps(s, t);
    return s[0];
}

static double thread_cpu_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}
#endif

/* Peak measured against each thread's CPU time instead of the wall clock: what `threads`
 * threads would do on an otherwise idle machine (the machine is shared). Set by measure_peak. */
static double g_peak_cpu;

/* fp32 FMA peak of `threads` threads in GFLOP/s (median of 5 runs of ~seconds/5). */
static double measure_peak(int threads, double seconds, int *lanes_out) {
    int lanes = 1;
    double chains = 0; /* independent FMA chains of the peak kernel */
#if defined(__x86_64__) || defined(__i386__)
    const char *lvl = infllm_cpu_simd_level();
    if (!strncmp(lvl, "avx512", 6)) lanes = 16, chains = PEAK_CHAINS_AVX512;
    else if (!strcmp(lvl, "avx2")) lanes = 8, chains = PEAK_CHAINS_AVX2;
#endif
    *lanes_out = lanes;
    if (lanes == 1) return 0.0;
#if defined(__x86_64__) || defined(__i386__)
    long iters = lanes == 16 ? 2000000 : 4000000;
    double runs[5], runs_cpu[5];
    volatile double sink = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = 0, t1 = 0;
        long it = iters;
        for (;;) { /* calibrate so that one run lasts about seconds/5 */
            double gcpu = 0;
            t0 = now_s();
#pragma omp parallel num_threads(threads)
            {
                double c0 = thread_cpu_s();
                double s = lanes == 16 ? peak_avx512(it) : peak_avx2(it);
                double g = 2.0 * lanes * chains * (double)it / (thread_cpu_s() - c0) / 1e9;
#pragma omp atomic
                sink += s;
#pragma omp atomic
                gcpu += g;
            }
            t1 = now_s();
            runs_cpu[rep] = gcpu;
            if (t1 - t0 > seconds / 5 * 0.5 || rep > 0) break;
            it *= 2;
            iters = it;
        }
        runs[rep] = 2.0 * lanes * chains * (double)it * threads / (t1 - t0) / 1e9;
    }
    (void)sink;
    g_peak_cpu = median(runs_cpu, 5);
    return median(runs, 5);
#else /* no peak kernel for this CPU (lanes is 1 here): the caller reports "no peak" */
    (void)threads, (void)seconds, (void)chains;
    return 0.0;
#endif
}

/* ----------------------------------------------------------------- attn ---- */

typedef struct opts {
    int seqlens[32], nseq;
    int heads, kv_heads, head_dim, threads, reps, warmup;
    infllm_dtype dtype;
    int do_dense, do_sparse;
    int cuda;       /* --device cuda */
    int structured; /* --inputs structured */
    infllm_params p;
    double peak, peak_cpu;
    int peak_given; /* --peak X: peak and peak_cpu are both X, not measured */
    const char *format;
    double seconds;
} opts;

/* A flag of two values: *out = 0 for off, 1 for on; anything else a message naming both. */
static int choice_arg(const char *prog, const char *flag, const char *val, const char *off, const char *on, int *out) {
    if (!strcmp(val, off) || !strcmp(val, on)) {
        *out = !strcmp(val, on);
        return 0;
    }
    fprintf(stderr, "%s: %s %s|%s (got '%s')\n", prog, flag, off, on, val);
    return -1;
}

/* --modes: a comma list of dense and sparse; anything else a message (a typo ran nothing, exit 0) */
static int modes_arg(const char *prog, const char *val, int *dense, int *sparse) {
    static const char *const names[] = {"dense", "sparse"};
    int picked[2];
    if (opts_choice_list(val, names, 2, picked)) {
        fprintf(stderr, "%s: --modes is a comma list of dense and sparse (got '%s')\n", prog, val);
        return -1;
    }
    *dense = picked[0];
    *sparse = picked[1];
    return 0;
}

static int parse_dtype(const char *s, infllm_dtype *dt) {
    if (!strcmp(s, "bf16")) *dt = INFLLM_DTYPE_BF16;
    else if (!strcmp(s, "f16") || !strcmp(s, "fp16")) *dt = INFLLM_DTYPE_F16;
    else if (!strcmp(s, "f32") || !strcmp(s, "fp32")) *dt = INFLLM_DTYPE_F32;
    else return -1;
    return 0;
}

/* the benchmarks and their one-line summaries: each one's --help, and `infllm bench --help` */
static const struct {
    const char *name, *summary;
} benches[] = {
    {"attn", "one prefill sequence's attention, dense and InfLLM-V2 sparse (per stage)"},
    {"backward", "a training step's attention, forward then backward, dense and InfLLM-V2 sparse"},
    {"decode", "one decode step (append a token + attend its query) against a cache, dense and InfLLM-V2 sparse"},
    {"peak", "the CPU's fp32 FMA peak: independent AVX-512 (else AVX2) FMA chains on every thread"},
    {"run", "model prefill/decode speed at several context lengths, dense vs InfLLM-V2 sparse"},
};

/* `infllm bench --help` (stdout) or, beside an error, its usage on stderr: the benchmarks, each one's options
 * listed by its own --help */
static void bench_usage(FILE *f) {
    fprintf(f, "usage: infllm bench attn|backward|decode|peak|run [options]\n");
    for (size_t i = 0; i < sizeof benches / sizeof *benches; i++)
        fprintf(f, "  infllm bench %-10s %s\n", benches[i].name, benches[i].summary);
    fprintf(f, "'infllm bench BENCH --help' lists a benchmark's options\n");
}

static uint64_t rng_state = 0x1234567887654321ull;
static double rnd_normal(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    double u1 = ((double)(z >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    double u2 = ((double)((z * 0x2545f4914f6cdd1dull) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
static void *rand_tensor(size_t n, infllm_dtype dt) {
    size_t es = infllm_dtype_size(dt);
    void *p = malloc(n * es);
    if (!p) return NULL;
    for (size_t i = 0; i < n; i++) infllm_store_f32(p, dt, (int64_t)i, (float)rnd_normal());
    return p;
}

/* q or k [T, H, D]: N(0,1), or with structured 0.6 N(0,1) + 0.8 s, s an N(0,1) vector of the token's 256-token
 * segment and head (bench/cuda_bench.py's make_inputs: neighbouring tokens then select similar blocks, as in real
 * text, instead of nearly independent ones) */
static void *input_tensor(int T, int H, int D, infllm_dtype dt, int structured) {
    if (!structured) return rand_tensor((size_t)T * H * D, dt);
    const size_t row = (size_t)H * D, nseg = ((size_t)T + 255) / 256;
    float *seg = malloc(nseg * row * sizeof(float));
    void *x = malloc((size_t)T * row * infllm_dtype_size(dt));
    if (!seg || !x) {
        free(seg);
        free(x);
        return NULL;
    }
    for (size_t i = 0; i < nseg * row; i++) seg[i] = (float)rnd_normal();
    for (size_t t = 0; t < (size_t)T; t++)
        for (size_t j = 0; j < row; j++)
            infllm_store_f32(x, dt, (int64_t)(t * row + j), (float)(0.6 * rnd_normal() + 0.8 * seg[(t / 256) * row + j]));
    free(seg);
    return x;
}

/* A value that does not apply to a row (NAN): the stages of a dense row, "vs dense" without a dense row beside
 * it, the CPU's times and peak on the GPU, the fraction of a peak not measured. json prints it null, csv an empty
 * field (fmtout.h), md "-" (md_cell): never a 0 that reads as a time or a ratio. */
#define NOT_APPLICABLE NAN

typedef struct row {
    const char *mode;
    int seqlen;
    double frac_cpu;
    double ms, cpu_ms, compress_ms, stage1_ms, stage2_ms, gflop, gflops, frac, vs_dense, vs_dense_cpu;
    double io_mb, work_mb, mem_ratio, hwm_mb;
    double s1_tokens; /* tokens that ran stage 1 (an integer; NOT_APPLICABLE where not counted) */
} row;

/* What the query at position pos of a T-token sequence costs: *dense_keys, the keys a dense row attends (its causal
 * ones, the last `window` of them with a sliding window); *sparse_keys, those of its selected blocks (at most (K - 1) B
 * + its own block's, or the dense keys where the selection takes every block its window reaches); *scored, the c1 +
 * c2 kernels (c1 twice with exact_lse) stage 1 scores for it (0 where it takes every block). n1 / n2: the sequence's
 * kernel counts. flops_of sums it over a prefill, decode_read_bytes takes a decode step's. */
static void query_cost(const opts *o, int64_t pos, int32_t n1, int32_t n2, double *dense_keys, double *sparse_keys,
                       double *scored) {
    const infllm_params *p = &o->p;
    const int64_t K = (int64_t)p->topk + p->local_blocks, B = p->block_size;
    const double keys = p->window > 0 && pos + 1 > p->window ? (double)p->window : (double)(pos + 1);
    const int64_t qb = pos / B, wb = infllm_window_first_block(pos, p->window, p->block_size);
    *dense_keys = *sparse_keys = keys;
    *scored = 0;
    if (qb - wb + 1 <= K) return;
    const double sel = (double)(K - 1) * B + (double)(pos - qb * B + 1);
    if (sel < keys) *sparse_keys = sel;
    const int64_t v1 = infllm_visible_kernels(pos, p->kernel_size, p->kernel_stride, n1);
    const int64_t v2 = p->exact_lse ? v1 : infllm_visible_kernels(pos, 4 * p->kernel_size, 4 * p->kernel_stride, n2);
    *scored = (double)(v1 + v2);
}

/* the kernel counts of a T-token sequence: c1 (*n1) and c2 (*n2) */
static void kernel_counts(const opts *o, int T, int32_t *n1, int32_t *n2) {
    *n1 = infllm_windows(T, o->p.kernel_size, o->p.kernel_stride);
    *n2 = infllm_windows(T, 4 * o->p.kernel_size, 4 * o->p.kernel_stride);
}

static void flops_of(const opts *o, int T, double *dense, double *s1, double *s2) {
    int32_t n1, n2;
    kernel_counts(o, T, &n1, &n2);
    double d = 0, a = 0, b = 0;
    for (int64_t pos = 0; pos < T; pos++) {
        double dk, sk, sc;
        query_cost(o, pos, n1, n2, &dk, &sk, &sc);
        d += dk;
        a += sk;
        b += sc;
    }
    double hd = (double)o->head_dim * o->heads;
    *dense = 4.0 * hd * d;
    *s2 = 4.0 * hd * a;
    *s1 = 2.0 * hd * b;
}

/* the benches' layout: one prefill sequence of T tokens */
static infllm_layout one_seq_layout(const opts *o, int T) {
    infllm_layout l;
    memset(&l, 0, sizeof l);
    l.dtype = o->dtype;
    l.num_seqs = 1;
    l.total_q = l.total_k = T;
    l.num_q_heads = o->heads;
    l.num_kv_heads = o->kv_heads;
    l.head_dim = o->head_dim;
    return l;
}

/* the options checked by the library's own validation at every --seqlen before any run: the benches'
 * FLOP counts divide by the block size and the kernel stride; 0, or after printing why 2 for options the library
 * refuses and 1 when it ran out of memory (not a usage error) */
static int check_opts(const opts *o, const char *prog) {
    for (int i = 0; i < o->nseq; i++) {
        const infllm_layout l = one_seq_layout(o, o->seqlens[i]);
        infllm_sizes sz;
        const infllm_status st = infllm_get_sizes(&o->p, &l, &sz);
        if (st) {
            fprintf(stderr, "%s: %s: %s\n", prog, infllm_status_str(st), infllm_last_error());
            return st == INFLLM_ERR_NOMEM ? 1 : 2;
        }
    }
    return 0;
}

static int bench_one(const opts *o, int T, row *rd, row *rs, char *err, size_t errlen) {
    const int Hq = o->heads, Hkv = o->kv_heads, D = o->head_dim;
    size_t es = infllm_dtype_size(o->dtype);
    void *q = input_tensor(T, Hq, D, o->dtype, o->structured);
    void *k = input_tensor(T, Hkv, D, o->dtype, o->structured);
    void *v = rand_tensor((size_t)T * Hkv * D, o->dtype);
    void *out = malloc((size_t)T * Hq * D * es);
    float *lse = malloc((size_t)T * Hq * sizeof(float));
    int rc = 0;
    if (!q || !k || !v || !out || !lse) {
        snprintf(err, errlen, "out of memory for T=%d", T);
        rc = 1;
        goto done;
    }
    memset(out, 0, (size_t)T * Hq * D * es);
    const infllm_layout l = one_seq_layout(o, T);
    double fd, f1, f2;
    flops_of(o, T, &fd, &f1, &f2);
    double io = (double)T * (2.0 * Hq + 2.0 * Hkv) * D * es + (double)T * Hq * sizeof(float);
    int reps = o->reps < 1 ? 1 : o->reps;
    /* Dense and sparse runs alternate (dense, sparse, dense, sparse, ...) so that both modes see
     * the same machine load, and vs_dense is the median of the per-pair ratios: on a shared
     * machine that ratio is far steadier than a ratio of two medians taken minutes apart. */
    double *tt = calloc((size_t)reps * 5 * 2, sizeof(double)); /* [mode][5][reps] */
    double *pair = calloc((size_t)reps * 2, sizeof(double));   /* [wall|cpu][reps] */
    size_t work[2] = {0, 0};
    long long s1tok[2] = {0, 0};
    if (!tt || !pair) {
        snprintf(err, errlen, "out of memory for T=%d", T);
        rc = 1;
        free(tt);
        free(pair);
        goto done;
    }
    for (int r = 0; r < reps; r++) {
        for (int mode = 0; mode < 2; mode++) {
            if ((mode == 0 && !o->do_dense) || (mode == 1 && !o->do_sparse)) continue;
            double *m = tt + (size_t)mode * 5 * reps;
            infllm_params p = o->p;
            p.mode = mode == 0 ? INFLLM_MODE_DENSE : INFLLM_MODE_SPARSE;
            p.num_threads = o->threads;
            cpu_attn_stats st;
            memset(&st, 0, sizeof st);
            cpu_attn_stats_set(&st);
            double c0 = cpu_s(), t0 = now_s();
            infllm_status s = infllm_attention(&p, &l, q, k, v, out, lse);
            double t1 = now_s(), c1 = cpu_s();
            cpu_attn_stats_set(NULL);
            if (s != INFLLM_OK) {
                snprintf(err, errlen, "infllm_attention: %s (%s)", infllm_status_str(s), infllm_last_error());
                rc = 1;
                free(tt);
                free(pair);
                goto done;
            }
            m[r] = (t1 - t0) * 1e3;
            m[reps + r] = st.compress_ms;
            m[2 * reps + r] = st.stage1_ms;
            m[3 * reps + r] = st.stage2_ms;
            m[4 * reps + r] = (c1 - c0) * 1e3;
            if (st.work_peak > work[mode]) work[mode] = st.work_peak;
            s1tok[mode] = st.stage1_tokens;
        }
        if (o->do_dense && o->do_sparse) {
            const double *d = tt, *sp = tt + 5 * reps;
            pair[r] = sp[r] / d[r];
            pair[reps + r] = sp[4 * reps + r] / d[4 * reps + r];
        }
    }
    for (int mode = 0; mode < 2; mode++) {
        if ((mode == 0 && !o->do_dense) || (mode == 1 && !o->do_sparse)) continue;
        double *m = tt + (size_t)mode * 5 * reps;
        row *x = mode == 0 ? rd : rs;
        memset(x, 0, sizeof *x);
        x->mode = mode == 0 ? "dense" : "sparse";
        x->seqlen = T;
        x->ms = median(m, reps);
        x->cpu_ms = median(m + 4 * reps, reps);
        /* a dense row has no stages */
        x->compress_ms = mode == 0 ? NOT_APPLICABLE : median(m + reps, reps);
        x->stage1_ms = mode == 0 ? NOT_APPLICABLE : median(m + 2 * reps, reps);
        x->stage2_ms = mode == 0 ? NOT_APPLICABLE : median(m + 3 * reps, reps);
        x->gflop = mode == 0 ? fd / 1e9 : (f1 + f2) / 1e9;
        x->gflops = x->gflop / (x->ms / 1e3);
        x->frac = o->peak > 0 ? x->gflops / o->peak : NOT_APPLICABLE; /* no peak kernel on this CPU */
        /* FLOPs per CPU second is a per-core rate: compare with the per-thread peak */
        x->frac_cpu = o->peak_cpu > 0 ? (x->gflop / (x->cpu_ms / 1e3)) / (o->peak_cpu / o->threads) : NOT_APPLICABLE;
        x->vs_dense = x->vs_dense_cpu = NOT_APPLICABLE; /* set below for a sparse row beside a dense one */
        x->io_mb = io / 1048576.0;
        x->work_mb = (double)work[mode] / 1048576.0;
        x->mem_ratio = (io + (double)work[mode]) / io;
        x->hwm_mb = (double)vm_hwm_kb() / 1024.0;
        x->s1_tokens = mode == 0 ? NOT_APPLICABLE : (double)s1tok[mode];
    }
    if (o->do_dense && o->do_sparse) {
        rs->vs_dense = median(pair, reps);
        rs->vs_dense_cpu = median(pair + reps, reps);
    }
    free(tt);
    free(pair);
done:
    free(q);
    free(k);
    free(v);
    free(out);
    free(lse);
    return rc;
}

#ifdef INFLLM_HAVE_CUDA
/* a workspace query in a GPU bench: *wsb grows to its bytes *b; on failure its name goes to *what */
static infllm_status ws_grow(infllm_status st, const size_t *b, size_t *wsb, const char *name, const char **what) {
    if (st) *what = name;
    else if (*b > *wsb) *wsb = *b;
    return st;
}

/* bench_one on the GPU: the same inputs (made on the host, copied once), every call on one stream with one
 * caller workspace (the largest of the pipeline's, the selection's and stage 2's needs, so no call allocates), timed with
 * CUDA events: the dense call, the sparse pipeline, and its stages as separate calls (compress, select =
 * compress + stage 1, stage 2 on the selected blocks); "vs dense" = the ratio of the medians. */
static int bench_one_cuda(const opts *o, int T, row *rd, row *rs, char *err, size_t errlen) {
    const int Hq = o->heads, Hkv = o->kv_heads, D = o->head_dim, reps = o->reps < 1 ? 1 : o->reps;
    const size_t es = infllm_dtype_size(o->dtype), nq = (size_t)T * Hq * D, nk = (size_t)T * Hkv * D;
    const infllm_layout l = one_seq_layout(o, T);
    infllm_params p = o->p;
    p.backend = INFLLM_BACKEND_CUDA;
    void *hq = input_tensor(T, Hq, D, o->dtype, o->structured), *hk = input_tensor(T, Hkv, D, o->dtype, o->structured);
    void *hv = rand_tensor(nk, o->dtype);
    void *q = NULL, *k = NULL, *v = NULL, *out = NULL, *lse = NULL, *c1 = NULL, *c2 = NULL, *topk = NULL, *ws = NULL;
    cudaStream_t stream = NULL;
    cudaEvent_t *ev = calloc((size_t)reps + 1, sizeof(cudaEvent_t)); /* boundaries of the reps of one kind */
    double *t = calloc((size_t)reps * 5, sizeof(double)); /* [dense, pipeline, compress, select, stage 2][reps] */
    int rc = 1;
    infllm_status st = INFLLM_OK;
    const char *what = "";
    if (!hq || !hk || !hv || !t || !ev) {
        snprintf(err, errlen, "out of host memory for T=%d", T);
        goto done;
    }
    infllm_params pc = o->p; /* the sizes on the host: one sequence, no cu_seqlens to read */
    infllm_sizes sz;
    if ((st = infllm_get_sizes(&pc, &l, &sz))) {
        what = "infllm_get_sizes";
        goto fail;
    }
    const int32_t K = sz.topk_out > 0 ? sz.topk_out : 1;
    const size_t n1 = sz.total_n1 > 0 ? (size_t)sz.total_n1 : 1, n2 = sz.total_n2 > 0 ? (size_t)sz.total_n2 : 1;
    if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) goto cuda_fail;
    for (int i = 0; i <= reps; i++)
        if (cudaEventCreate(&ev[i]) != cudaSuccess) goto cuda_fail;
    if (cudaMalloc(&q, nq * es) || cudaMalloc(&k, nk * es) || cudaMalloc(&v, nk * es) || cudaMalloc(&out, nq * es) ||
        cudaMalloc(&lse, (size_t)T * Hq * sizeof(float)) || cudaMalloc(&c1, n1 * Hkv * D * es) ||
        cudaMalloc(&c2, n2 * Hkv * D * es) || cudaMalloc(&topk, (size_t)Hkv * T * K * sizeof(int32_t)))
        goto cuda_fail;
    if (cudaMemcpy(q, hq, nq * es, cudaMemcpyHostToDevice) || cudaMemcpy(k, hk, nk * es, cudaMemcpyHostToDevice) ||
        cudaMemcpy(v, hv, nk * es, cudaMemcpyHostToDevice))
        goto cuda_fail;
    p.cuda_stream = stream;
    size_t wsb = 0, b = 0;
    for (int mode = 0; mode < 2; mode++) {
        p.mode = mode ? INFLLM_MODE_SPARSE : INFLLM_MODE_DENSE;
        if ((st = ws_grow(infllm_attention_workspace_size(&p, &l, &b), &b, &wsb, "infllm_attention_workspace_size",
                          &what)))
            goto fail;
    }
    /* the stages apart, but for a window whose blocks every row selects (at most topk + local_blocks of them): the
     * pipeline then selects nothing and runs as the windowed dense call, which separate stages would not time */
    const int staged =
        p.window == 0 || infllm_window_span_blocks(p.window, p.block_size) > (int64_t)p.topk + p.local_blocks;
    if (staged && ((st = ws_grow(infllm_select_blocks_workspace_size(&p, &l, &b), &b, &wsb,
                                 "infllm_select_blocks_workspace_size", &what)) ||
                   (st = ws_grow(infllm_sparse_attention_workspace_size(&p, &l, K, &b), &b, &wsb,
                                 "infllm_sparse_attention_workspace_size", &what))))
        goto fail;
    if (wsb && cudaMalloc(&ws, wsb)) goto cuda_fail;
    p.workspace = ws;
    p.workspace_bytes = wsb;
    infllm_params pd = p, ps = p;
    pd.mode = INFLLM_MODE_DENSE;
    ps.mode = INFLLM_MODE_SPARSE;
    /* kind by kind (sparse pipeline, compress, select, stage 2, dense): one untimed call, then the reps enqueued back
     * to back with an event between two calls, so that each time is the call's own device time and not the host's
     * launch latency in front of an idle GPU (a lone ~20 us compression read 86-113 us between two events with a
     * synchronisation after each, session 33), and one synchronisation at the end. Kind by kind, not interleaved: a
     * call timed right after a 240 ms dense one ran slower (the H200 at 128K: pipeline 65.3 ms interleaved against
     * 61.4 for its stages). */
    static const char *const names[5] = {"infllm_attention (dense)", "infllm_attention (sparse)", "infllm_compress_keys",
                                         "infllm_select_blocks", "infllm_sparse_attention"};
    static const int order[5] = {1, 2, 3, 4, 0};
    for (int oi = 0; oi < 5; oi++) {
        const int kind = order[oi];
        if ((kind == 0 && !o->do_dense) || (kind > 0 && !o->do_sparse) || (kind > 1 && !staged)) continue;
        for (int r = -1; r < reps; r++) { /* r = -1: the untimed call */
            if (r >= 0 && cudaEventRecord(ev[r], stream) != cudaSuccess) goto cuda_fail;
            switch (kind) {
            case 0: st = infllm_attention(&pd, &l, q, k, v, out, lse); break;
            case 1: st = infllm_attention(&ps, &l, q, k, v, out, lse); break;
            case 2: st = infllm_compress_keys(&ps, &l, k, c1, c2, NULL, NULL); break;
            case 3: st = infllm_select_blocks(&ps, &l, q, k, topk); break;
            default: st = infllm_sparse_attention(&ps, &l, q, k, v, topk, K, out, lse); break;
            }
            if (st) {
                what = names[kind];
                goto fail;
            }
        }
        if (cudaEventRecord(ev[reps], stream) != cudaSuccess || cudaStreamSynchronize(stream) != cudaSuccess)
            goto cuda_fail;
        for (int r = 0; r < reps; r++) {
            float ms = 0;
            if (cudaEventElapsedTime(&ms, ev[r], ev[r + 1]) != cudaSuccess) goto cuda_fail;
            t[(size_t)kind * reps + r] = ms;
        }
    }
    const double io = (double)(nq * 2 + nk * 2) * es + (double)T * Hq * sizeof(float);
    double fd, f1, f2;
    flops_of(o, T, &fd, &f1, &f2);
    for (int mode = 0; mode < 2; mode++) {
        if ((mode == 0 && !o->do_dense) || (mode == 1 && !o->do_sparse)) continue;
        row *x = mode == 0 ? rd : rs;
        memset(x, 0, sizeof *x);
        x->mode = mode == 0 ? "dense" : "sparse";
        x->seqlen = T;
        x->ms = median(t + (size_t)mode * reps, reps);
        /* not measured on the GPU: CPU time, the CPU's peak, stage-1 tokens; a dense row has no stages */
        x->cpu_ms = x->frac = x->frac_cpu = x->vs_dense = x->vs_dense_cpu = x->s1_tokens = NOT_APPLICABLE;
        x->compress_ms = x->stage1_ms = x->stage2_ms = NOT_APPLICABLE;
        if (mode == 1 && !staged) {
            if (o->do_dense) x->vs_dense = x->ms / rd->ms;
        } else if (mode == 1) {
            x->compress_ms = median(t + (size_t)2 * reps, reps);
            x->stage1_ms = median(t + (size_t)3 * reps, reps) - x->compress_ms;
            if (x->stage1_ms < 0) x->stage1_ms = 0; /* a few-us selection under the timing noise */
            x->stage2_ms = median(t + (size_t)4 * reps, reps);
            if (o->do_dense) x->vs_dense = x->ms / rd->ms; /* the dense row is filled first */
        }
        x->gflop = mode == 0 ? fd / 1e9 : (f1 + f2) / 1e9;
        x->gflops = x->gflop / (x->ms / 1e3);
        x->io_mb = io / 1048576.0;
        x->work_mb = (double)wsb / 1048576.0;
        x->mem_ratio = (io + (double)wsb) / io;
    }
    rc = 0;
    goto done;
cuda_fail:
    snprintf(err, errlen, "T=%d: CUDA: %s", T, cudaGetErrorString(cudaGetLastError()));
    goto done;
fail:
    snprintf(err, errlen, "T=%d: %s: %s (%s)", T, what, infllm_status_str(st), infllm_last_error());
done:
    if (stream) cudaStreamSynchronize(stream);
    cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(out), cudaFree(lse), cudaFree(c1), cudaFree(c2), cudaFree(topk);
    cudaFree(ws);
    for (int i = 0; ev && i <= reps; i++)
        if (ev[i]) cudaEventDestroy(ev[i]);
    if (stream) cudaStreamDestroy(stream);
    (void)cudaGetLastError();
    free(hq), free(hk), free(hv), free(t), free(ev);
    return rc;
}
#endif

/* A CPU header's note on the bf16 dot-product kernels, or "" (inputs of another dtype, or the f32 FMA kernels):
 * ", WHAT on the bf16 dot-product kernels[, AMX tiles]TAIL", written into buf */
static const char *dot16_note(infllm_dtype dt, const char *what, const char *tail, char *buf, size_t n) {
    const int dot = infllm_cpu_bf16_dot();
    if (dt != INFLLM_DTYPE_BF16 || !dot) return "";
    snprintf(buf, n, ", %s on the bf16 dot-product kernels%s%s", what, dot == 2 ? ", AMX tiles" : "", tail);
    return buf;
}

static void print_header(const opts *o, const char *cpu) {
    if (strcmp(o->format, "md")) return;
    if (o->cuda) {
        printf("# infllm bench attn --device cuda: commit %s, %s\n", infllm_build_commit(), cpu);
        printf("# Hq %d, Hkv %d, D %d, dtype %s, B %d, topk %d + local %d (K %d), init %d, kernel %d/%d, exact_lse %d, "
               "inputs %s, reps %d (median of CUDA-event times); stage 1 = infllm_select_blocks - compress, stage 2 = "
               "infllm_sparse_attention on its blocks\n",
               o->heads, o->kv_heads, o->head_dim, infllm_dtype_name(o->dtype), o->p.block_size, o->p.topk,
               o->p.local_blocks, o->p.topk + o->p.local_blocks, o->p.init_blocks, o->p.kernel_size,
               o->p.kernel_stride, o->p.exact_lse, o->structured ? "structured" : "random", o->reps);
        printf("\n| mode | seqlen | ms | compress ms | stage-1 ms | stage-2 ms | stage-1 share | GFLOP | TFLOP/s | "
               "vs dense | io MiB | workspace MiB |\n");
        printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        return;
    }
    char la[32], peak[160], dn[160];
    printf("# infllm bench attn: commit %s, %s, simd %s, %d thread(s), load avg %s, inputs %s%s\n", infllm_build_commit(),
           cpu, infllm_cpu_simd_level(), o->threads, md_cell(la, sizeof la, 2, load_avg()),
           o->structured ? "structured" : "random",
           dot16_note(o->dtype, "bf16 attention", " (frac of peak is of the fp32 FMA peak: it can pass 1)", dn, sizeof dn));
    /* the peak as it was had: measured (by the wall clock and by CPU time), given by --peak (one number, which the
     * CPU-time fractions use too: it printed it twice, as if both had been measured), or not measured at all (no
     * peak kernel for this CPU: it printed 0.0) */
    if (o->peak_given)
        snprintf(peak, sizeof peak, "fp32 FMA peak %.1f GFLOP/s (given by --peak, not measured; the CPU-time fractions "
                 "use it too)", o->peak);
    else if (o->peak > 0)
        snprintf(peak, sizeof peak, "fp32 FMA peak %.1f GFLOP/s (wall), %.1f (by CPU time)", o->peak, o->peak_cpu);
    else
        snprintf(peak, sizeof peak, "fp32 FMA peak not measured (no AVX2 / AVX-512 peak kernel at simd %s)",
                 infllm_cpu_simd_level());
    printf("# Hq %d, Hkv %d, D %d, dtype %s, B %d, topk %d + local %d (K %d), init %d, kernel %d/%d, exact_lse %d, "
           "window %d, reps %d (median), %s\n",
           o->heads, o->kv_heads, o->head_dim, infllm_dtype_name(o->dtype), o->p.block_size, o->p.topk,
           o->p.local_blocks, o->p.topk + o->p.local_blocks, o->p.init_blocks, o->p.kernel_size,
           o->p.kernel_stride, o->p.exact_lse, o->p.window, o->reps, peak);
    printf("\n| mode | seqlen | ms | cpu ms | compress ms | stage-1 ms | stage-2 ms | stage-1 share | GFLOP | GFLOP/s | "
           "frac of peak | frac of peak (cpu time) | vs dense | vs dense (cpu time) | io MiB | work MiB | mem ratio |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
}

static void print_row(const opts *o, const row *x, const char *cpu, int *first) {
    const double share = x->ms > 0 ? x->stage1_ms / x->ms : NOT_APPLICABLE; /* NOT_APPLICABLE for a dense row */
    const char *device = o->cuda ? "cuda" : "cpu", *inputs = o->structured ? "structured" : "random";
    if (!strcmp(o->format, "md")) {
        char c[8][32];
        if (o->cuda)
            printf("| %s | %d | %.3f | %s | %s | %s | %s | %.1f | %.1f | %s | %.1f | %.1f |\n", x->mode, x->seqlen, x->ms,
                   md_cell(c[0], 32, 3, x->compress_ms), md_cell(c[1], 32, 3, x->stage1_ms),
                   md_cell(c[2], 32, 3, x->stage2_ms), md_cell(c[3], 32, 1, share), x->gflop, x->gflops / 1e3,
                   md_cell(c[4], 32, 3, x->vs_dense), x->io_mb, x->work_mb);
        else
            printf("| %s | %d | %.1f | %.1f | %s | %s | %s | %s | %.1f | %.1f | %s | %s | %s | %s | %.1f | %.1f | %.3f |\n",
                   x->mode, x->seqlen, x->ms, x->cpu_ms, md_cell(c[0], 32, 1, x->compress_ms),
                   md_cell(c[1], 32, 1, x->stage1_ms), md_cell(c[2], 32, 1, x->stage2_ms), md_cell(c[3], 32, 3, share),
                   x->gflop, x->gflops, md_cell(c[4], 32, 3, x->frac), md_cell(c[5], 32, 3, x->frac_cpu),
                   md_cell(c[6], 32, 3, x->vs_dense), md_cell(c[7], 32, 3, x->vs_dense_cpu), x->io_mb, x->work_mb,
                   x->mem_ratio);
    } else { /* csv / json: one list of columns for both (fmtout.h); NOT_APPLICABLE and a rate that is not finite (a
              * GPU time of 0) print null / an empty field */
        /* the CPU's peak: none on the GPU (--peak refused there), nor on a CPU without the peak kernel (0) */
        const double peak = o->peak > 0 ? o->peak : NOT_APPLICABLE, peak_cpu = o->peak_cpu > 0 ? o->peak_cpu : NOT_APPLICABLE;
        const fmt_col cols[] = {
            FMT_STR("mode", x->mode), FMT_INT("seqlen", x->seqlen), FMT_INT("heads", o->heads),
            FMT_INT("kv_heads", o->kv_heads), FMT_INT("head_dim", o->head_dim),
            FMT_STR("dtype", infllm_dtype_name(o->dtype)), FMT_INT("threads", o->threads),
            FMT_INT("block_size", o->p.block_size), FMT_INT("topk_total", o->p.topk + o->p.local_blocks),
            FMT_INT("window", o->p.window),
            FMT_NUM("ms", 3, x->ms), FMT_NUM("cpu_ms", 3, x->cpu_ms), FMT_NUM("compress_ms", 3, x->compress_ms),
            FMT_NUM("stage1_ms", 3, x->stage1_ms), FMT_NUM("stage2_ms", 3, x->stage2_ms),
            FMT_NUM("stage1_share", 4, share), FMT_NUM("gflop", 3, x->gflop), FMT_NUM("gflops", 2, x->gflops),
            FMT_NUM("peak_gflops", 2, peak), FMT_NUM("frac_peak", 4, x->frac),
            FMT_NUM("peak_gflops_cpu_time", 2, peak_cpu), FMT_NUM("frac_peak_cpu_time", 4, x->frac_cpu),
            FMT_NUM("vs_dense", 4, x->vs_dense), FMT_NUM("vs_dense_cpu", 4, x->vs_dense_cpu),
            FMT_NUM("io_mib", 2, x->io_mb), FMT_NUM("work_mib", 2, x->work_mb), FMT_NUM("mem_ratio", 4, x->mem_ratio),
            FMT_NUM("stage1_tokens", 0, x->s1_tokens), FMT_INT("reps", o->reps),
            FMT_STR("commit", infllm_build_commit()), FMT_STR("cpu", cpu), FMT_STR("simd", infllm_cpu_simd_level()),
            FMT_NUM("load_avg", 2, load_avg()), FMT_STR("device", device), FMT_STR("inputs", inputs)};
        fmt_record(stdout, !strcmp(o->format, "json"), cols, sizeof cols / sizeof *cols, first);
    }
    fflush(stdout);
    *first = 0;
}

/* The options of benchmark cmd ("attn", "backward", "decode" or "peak") into o, from one table: peak takes its last
 * three entries (--threads, --format, --seconds), attn all but --seconds, backward and decode attn's with --peak parsed
 * but not listed (refused with its own message, as before; decode: 20 reps by default). 0, 1 after --help (usage on stdout), or 2 after a message naming the
 * option and the benchmark's usage on stderr (opts_parse's errors and the checks of the parsed options alike, the
 * library's own check of the attention parameters at every --seqlen included), or 3 after a message when that
 * check ran out of memory (the caller exits 1). */
static int parse_bench(opts *o, int argc, char **argv, const char *cmd) {
    const int peak = !strcmp(cmd, "peak");
    const char *summary = "";
    for (size_t i = 0; i < sizeof benches / sizeof *benches; i++)
        if (!strcmp(benches[i].name, cmd)) summary = benches[i].summary;
    char prog[64];
    snprintf(prog, sizeof prog, "infllm bench %s", cmd);
    memset(o, 0, sizeof *o);
    infllm_params_default(&o->p);
    o->p.dense_len = -1;
    o->heads = 16;
    o->kv_heads = 1;
    o->head_dim = 128;
    o->threads = infllm_cpu_num_threads();
    o->reps = 3;
    o->format = "md";
    o->seconds = 2.0;
    const char *seqlen = "4096,16384,32768", *dtype = "bf16", *modes = "dense,sparse", *device = "cpu",
               *inputs = "random";
    int no_warmup = 0;
    const opt_def all[] = {
        {"--seqlen", NULL, OPT_STR, &seqlen, "LIST",
         "sequence lengths in tokens, a k suffix: times 1024 (4096,16384,32768)"},
        {"--heads", NULL, OPT_INT, &o->heads, "N", "query heads (16)"},
        {"--kv-heads", NULL, OPT_INT, &o->kv_heads, "N", "KV heads (1)"},
        {"--head-dim", NULL, OPT_INT, &o->head_dim, "N", "head dimension (128)"},
        {"--dtype", NULL, OPT_STR, &dtype, "DT", "bf16 | f16 | f32: q, k and v's dtype (bf16)"},
        {"--reps", NULL, OPT_INT, &o->reps, "N", "timed runs; times are their medians (3)"},
        {"--modes", NULL, OPT_STR, &modes, "LIST", "dense,sparse or one of them (dense,sparse)"},
        {"--block-size", NULL, OPT_INT, &o->p.block_size, "N", "stage-2 block size (64)"},
        {"--topk", NULL, OPT_INT, &o->p.topk, "N", "dynamic blocks; a query selects topk + local-blocks (64)"},
        {"--local-blocks", NULL, OPT_INT, &o->p.local_blocks, "N", "forced blocks before the current one (32)"},
        {"--init-blocks", NULL, OPT_INT, &o->p.init_blocks, "N", "forced initial blocks (1)"},
        {"--kernel-size", NULL, OPT_INT, &o->p.kernel_size, "N", "c1 kernel size (32); c2 uses 4x"},
        {"--kernel-stride", NULL, OPT_INT, &o->p.kernel_stride, "N", "c1 kernel stride (16); c2 uses 4x"},
        {"--exact-lse", NULL, OPT_FLAG, &o->p.exact_lse, NULL, "stage-1 LSE over c1 (no c2 approximation)"},
        {"--window", NULL, OPT_INT, &o->p.window, "N",
         "sliding key window: a query attends the keys of its last N positions (0: none; on CUDA the stages "
         "are not timed apart where topk + local blocks cover it: the pipeline then runs as the windowed dense call)"},
        {"--no-warmup", NULL, OPT_FLAG, &no_warmup, NULL, "no untimed warm-up run before the first length"},
        {"--peak", NULL, OPT_DOUBLE, &o->peak, "GFLOPS", "the CPU's fp32 FMA peak for 'frac of peak' (0: measure it)"},
        {"--device", NULL, OPT_STR, &device, "DEV", "cpu | cuda (cpu)"},
        {"--inputs", NULL, OPT_STR, &inputs, "KIND",
         "random | structured: the q (and the k) of a 256-token segment share a component (random)"},
        /* bench peak's options: the last three */
        {"--threads", NULL, OPT_INT, &o->threads, "N", "CPU threads (0: all cores, the default)"},
        {"--format", NULL, OPT_STR, &o->format, "FMT", "md | csv | json (md)"},
        {"--seconds", NULL, OPT_DOUBLE, &o->seconds, "S", "measuring time of each peak (2)"},
    };
    const size_t n_all = sizeof all / sizeof *all;
    opt_def defs[sizeof all / sizeof *all + 1];
    size_t n = 0;
    for (size_t i = peak ? n_all - 3 : 0; i < (peak ? n_all : n_all - 1); i++) defs[n++] = all[i];
    defs[n] = (opt_def){NULL, NULL, OPT_FLAG, NULL, NULL, NULL};
    if (peak) opts_set_help(defs, "--threads", "threads of the many-thread run (0: all cores, the default)");
    const int nopeak = !strcmp(cmd, "backward") || !strcmp(cmd, "decode"); /* no FLOP rate against a CPU peak */
    if (nopeak) opts_set_help(defs, "--peak", NULL);
    if (!strcmp(cmd, "decode")) {
        o->reps = 20;
        opts_set_help(defs, "--reps", "timed steps a context and mode; times are their medians (20)");
        opts_set_help(defs, "--seqlen", "context lengths in tokens (the cache's after the step), a k suffix: times 1024 "
                                        "(4096,16384,32768)");
        opts_set_help(defs, "--no-warmup", "no untimed step before each mode's timed ones (CPU; the GPU always has it)");
        opts_set_help(defs, "--inputs", "random | structured: the k of a 256-token segment share a component (random)");
        opts_set_help(defs, "--window", "sliding key window: the query attends the keys of its last N positions (0: none)");
    }
    const int rc = opts_parse(prog, summary, defs, argc, argv, 0, NULL, 0, NULL);
    if (rc) return rc;
    if (!opts_one_of(prog, "--format", o->format, "md", "csv", "json")) return opts_usage_error(prog, summary, defs);
    if (!peak) {
        int64_t lens[32];
        const int nl = opts_int_list(prog, "--seqlen", seqlen, lens, 32);
        if (nl < 0) return opts_usage_error(prog, summary, defs);
        for (int j = 0; j < nl; j++) {
            if (lens[j] > INT32_MAX) {
                fprintf(stderr, "%s: --seqlen %lld is too long\n", prog, (long long)lens[j]);
                return opts_usage_error(prog, summary, defs);
            }
            o->seqlens[o->nseq++] = (int)lens[j];
        }
        if (parse_dtype(dtype, &o->dtype)) {
            fprintf(stderr, "%s: --dtype bf16|f16|f32 (got '%s')\n", prog, dtype);
            return opts_usage_error(prog, summary, defs);
        }
        if (modes_arg(prog, modes, &o->do_dense, &o->do_sparse) ||
            choice_arg(prog, "--device", device, "cpu", "cuda", &o->cuda) ||
            choice_arg(prog, "--inputs", inputs, "random", "structured", &o->structured))
            return opts_usage_error(prog, summary, defs);
        o->warmup = !no_warmup;
    }
    if (o->reps < 1) {
        fprintf(stderr, "%s: --reps must be >= 1 (got %d)\n", prog, o->reps);
        return opts_usage_error(prog, summary, defs);
    }
    /* each benchmark's message names its own option: one message for both said "--seconds must be > 0 and --peak
     * >= 0" to bench peak (which has no --peak) and to bench attn (which has no --seconds) */
    if (peak && !(o->seconds > 0)) {
        fprintf(stderr, "%s: --seconds must be > 0 (got %g)\n", prog, o->seconds);
        return opts_usage_error(prog, summary, defs);
    }
    if (nopeak && o->peak != 0) { /* 0, "measure it", is taken: nothing to refuse */
        fprintf(stderr, "%s: --peak does not apply\n", prog);
        return opts_usage_error(prog, summary, defs);
    }
    if (!peak && !(o->peak >= 0)) {
        fprintf(stderr, "%s: --peak must be >= 0 (0: measure it; got %g)\n", prog, o->peak);
        return opts_usage_error(prog, summary, defs);
    }
    /* 0: all cores, as infllm attn's --threads and infllm_params.num_threads (it ran 1 thread, and a negative
     * count was quietly taken for 1) */
    if (o->threads < 0 || o->threads > INFLLM_MAX_THREADS) {
        fprintf(stderr, "%s: --threads must be in 0..%d (0: all cores; got %d)\n", prog, INFLLM_MAX_THREADS,
                o->threads);
        return opts_usage_error(prog, summary, defs);
    }
    if (o->threads == 0) o->threads = infllm_cpu_num_threads();
    if (o->threads < 1) o->threads = 1;
    if (nopeak && (o->kv_heads < 1 || o->heads % o->kv_heads)) {
        fprintf(stderr, "%s: --heads must be a multiple of --kv-heads\n", prog);
        return opts_usage_error(prog, summary, defs);
    }
    if (o->cuda && o->peak > 0) { /* a usage error with or without CUDA in this build */
        fprintf(stderr, "%s: --peak (the CPU's FMA peak) does not apply to --device cuda\n", prog);
        return opts_usage_error(prog, summary, defs);
    }
    const int checked = peak ? 0 : check_opts(o, prog);
    if (checked) return checked == 2 ? opts_usage_error(prog, summary, defs) : 3;
    return 0;
}

/* The end of --format json's array (the rows print as they are measured, the first one opening it): see
 * fmt_records_end. On a failure after some rows the array is closed, so that stdout stays one valid JSON document
 * beside the message and exit status 1 (it was left open: '[ {...},' parsed nowhere). */
static void json_close(const opts *o, int first, int failed) {
    fmt_records_end(stdout, !strcmp(o->format, "json"), first, failed);
}

static int cmd_peak(int argc, char **argv) {
    opts o;
    int rc = parse_bench(&o, argc, argv, "peak");
    if (rc) return rc == 1 ? 0 : rc == 3 ? 1 : rc; /* 1: --help was printed; 3: out of memory */
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    int lanes;
    double g1 = measure_peak(1, o.seconds, &lanes);
    double g1cpu = g_peak_cpu;
    double gn = o.threads > 1 ? measure_peak(o.threads, o.seconds, &lanes) : g1;
    double gncpu = o.threads > 1 ? g_peak_cpu : g1cpu;
    if (lanes == 1) {
        fprintf(stderr, "infllm bench peak: no AVX2/AVX-512 on this CPU (simd %s)\n", infllm_cpu_simd_level());
        return 1;
    }
    if (strcmp(o.format, "md")) { /* as print_row */
        const fmt_col cols[] = {FMT_STR("bench", "peak"),
                                FMT_INT("threads", o.threads),
                                FMT_NUM("gflops", 2, gn),
                                FMT_NUM("gflops_1thread", 2, g1),
                                FMT_NUM("gflops_cpu_time", 2, gncpu),
                                FMT_NUM("gflops_1thread_cpu_time", 2, g1cpu),
                                FMT_INT("lanes", lanes),
                                FMT_STR("commit", infllm_build_commit()),
                                FMT_STR("cpu", cpu),
                                FMT_NUM("load_avg", 2, load_avg())};
        const int json = !strcmp(o.format, "json");
        int first = 1;
        fmt_record(stdout, json, cols, sizeof cols / sizeof *cols, &first);
        fmt_records_end(stdout, json, first, 0);
    } else {
        char la[32];
        printf("| bench | threads | fp32 FMA GFLOP/s (wall) | 1 thread (wall) | by CPU time | 1 thread by CPU time | lanes | "
               "load avg | commit | cpu |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---|\n"
               "| peak | %d | %.1f | %.1f | %.1f | %.1f | %d | %s | %s | %s |\n",
               o.threads, gn, g1, gncpu, g1cpu, lanes, md_cell(la, sizeof la, 2, load_avg()), infllm_build_commit(),
               cpu);
    }
    return 0;
}

/* --device cuda: 1 with the device's line in info, else a message naming cmd (no usable device, or a build
 * without CUDA) and 0 */
static int cuda_bench_device(const char *cmd, char *info, size_t n) {
#ifdef INFLLM_HAVE_CUDA
    if (infllm_cuda_device_info(info, n)) return 1;
    fprintf(stderr, "%s: --device cuda: %s (needs a device of compute capability 8.0 or newer and code for it)\n", cmd,
            info);
#else
    (void)info;
    (void)n;
    fprintf(stderr, "%s: --device cuda: this infllm was built without CUDA\n", cmd);
#endif
    return 0;
}

/* The start every GPU-capable benchmark shares: its options parsed into o and the machine's line into cpu (the
 * device's with --device cuda, else the CPU model). -1 to go on, else the exit status (0 after --help, 1 when out
 * of memory or without a usable device, 2 after a usage error). */
static int bench_start(opts *o, int argc, char **argv, const char *cmd, char *cpu, size_t ncpu) {
    const int rc = parse_bench(o, argc, argv, cmd);
    if (rc) return rc == 1 ? 0 : rc == 3 ? 1 : rc; /* 1: --help was printed; 3: out of memory */
    char prog[64];
    snprintf(prog, sizeof prog, "infllm bench %s", cmd);
    if (o->cuda) return cuda_bench_device(prog, cpu, ncpu) ? -1 : 1;
    cpu_model(cpu, ncpu);
    return -1;
}

static int cmd_attn_bench(int argc, char **argv) {
    opts o;
    char cpu[512], err[512];
    const int rc = bench_start(&o, argc, argv, "attn", cpu, sizeof cpu);
    if (rc >= 0) return rc;
    int (*one)(const opts *, int, row *, row *, char *, size_t) = bench_one;
#ifdef INFLLM_HAVE_CUDA
    if (o.cuda) one = bench_one_cuda;
#endif
    if (!o.cuda) {
        if (o.peak <= 0) {
            int lanes;
            o.peak = measure_peak(o.threads, 1.0, &lanes);
            o.peak_cpu = g_peak_cpu;
        } else {
            o.peak_cpu = o.peak;
            o.peak_given = 1;
        }
    }
    print_header(&o, cpu);
    int first = 1;
    if (o.warmup && o.nseq > 0) {
        opts w = o;
        w.reps = 1;
        row a, b;
        int T = o.seqlens[0] < 4096 ? o.seqlens[0] : 4096;
        if (one(&w, T, &a, &b, err, sizeof err)) {
            fprintf(stderr, "infllm bench attn: %s\n", err);
            return 1;
        }
    }
    for (int i = 0; i < o.nseq; i++) {
        row rd, rs;
        if (one(&o, o.seqlens[i], &rd, &rs, err, sizeof err)) {
            json_close(&o, first, 1);
            fprintf(stderr, "infllm bench attn: %s\n", err);
            return 1;
        }
        if (o.do_dense) print_row(&o, &rd, cpu, &first);
        if (o.do_sparse) print_row(&o, &rs, cpu, &first);
    }
    json_close(&o, first, 0);
    return 0;
}

/* attended (row, key) pairs of one sequence of T tokens: every causal key (topk NULL) or the keys
 * of each token's selected blocks, times the G query heads of each KV head; -1 when out of memory (it returned 0,
 * which the rows printed as 0 pairs and 0 GFLOP/s with exit 0) */
static double attended_pairs(const opts *o, int T, const int32_t *topk, int32_t cols) {
    const int B = o->p.block_size, G = o->heads / o->kv_heads;
    double n = 0.0;
    if (!topk) return (double)o->heads * ((double)T * (T + 1) / 2.0);
    unsigned char *seen = calloc((size_t)T / (size_t)B + 2, 1);
    if (!seen) return -1.0;
    for (int64_t r = 0; r < (int64_t)o->kv_heads * T; r++) {
        const int64_t pos = r % T;
        const int32_t *sel_row = topk + r * cols;
        for (int32_t e = 0; e < cols; e++) {
            const int32_t b = sel_row[e];
            if (b < 0 || (int64_t)b * B > pos || seen[b]) continue;
            seen[b] = 1;
            const int64_t end = (int64_t)(b + 1) * B < pos + 1 ? (int64_t)(b + 1) * B : pos + 1;
            n += (double)(end - (int64_t)b * B) * G;
        }
        for (int32_t e = 0; e < cols; e++)
            if (sel_row[e] >= 0 && (int64_t)sel_row[e] * B <= pos) seen[sel_row[e]] = 0;
    }
    free(seen);
    return n;
}

typedef struct brow {
    const char *mode;
    int seqlen;
    double select_ms, fwd_ms, bwd_ms, ratio, fwd_gflops, bwd_gflops, pairs; /* select_ms: NOT_APPLICABLE when dense */
} brow;

static int bench_backward_one(const opts *o, int T, int sparse, brow *x, char *err, size_t errlen) {
    const int Hq = o->heads, Hkv = o->kv_heads, D = o->head_dim, reps = o->reps < 1 ? 1 : o->reps;
    const size_t es = infllm_dtype_size(o->dtype), nq = (size_t)T * Hq * D, nk = (size_t)T * Hkv * D;
    void *q = rand_tensor(nq, o->dtype), *k = rand_tensor(nk, o->dtype), *v = rand_tensor(nk, o->dtype);
    void *dout = rand_tensor(nq, o->dtype), *out = malloc(nq * es), *dq = malloc(nq * es);
    void *dk = malloc(nk * es), *dv = malloc(nk * es);
    float *lse = malloc((size_t)T * Hq * sizeof(float));
    double *t = calloc((size_t)reps * 3, sizeof(double)); /* forward, backward, ratio */
    int32_t *topk = NULL;
    int rc = 1;
    const infllm_layout l = one_seq_layout(o, T);
    infllm_params p = o->p;
    p.num_threads = o->threads;
    p.mode = sparse ? INFLLM_MODE_SPARSE : INFLLM_MODE_DENSE;
    infllm_sizes sz;
    infllm_status st = INFLLM_OK;
    memset(x, 0, sizeof *x);
    x->select_ms = NOT_APPLICABLE; /* a dense row selects nothing */
    if (!q || !k || !v || !dout || !out || !dq || !dk || !dv || !lse || !t) {
        snprintf(err, errlen, "out of memory for T=%d", T);
        goto done;
    }
    if ((st = infllm_get_sizes(&p, &l, &sz))) goto fail;
    if (sparse) {
        topk = malloc((size_t)Hkv * T * (size_t)(sz.topk_out > 0 ? sz.topk_out : 1) * sizeof(int32_t));
        if (!topk) {
            snprintf(err, errlen, "out of memory for T=%d", T);
            goto done;
        }
        const double t0 = now_s();
        if ((st = infllm_select_blocks(&p, &l, q, k, topk))) goto fail;
        x->select_ms = (now_s() - t0) * 1e3;
    }
    for (int r = 0; r < reps; r++) {
        const double t0 = now_s();
        st = sparse ? infllm_sparse_attention(&p, &l, q, k, v, topk, sz.topk_out, out, lse)
                    : infllm_dense_attention(&p, &l, q, k, v, out, lse);
        if (st) goto fail;
        const double t1 = now_s();
        st = sparse ? infllm_sparse_attention_backward_out(&p, &l, q, k, v, topk, sz.topk_out, out, lse, dout, dq, dk, dv)
                    : infllm_dense_attention_backward_out(&p, &l, q, k, v, out, lse, dout, dq, dk, dv);
        if (st) goto fail;
        const double t2 = now_s();
        t[r] = (t1 - t0) * 1e3;
        t[reps + r] = (t2 - t1) * 1e3;
        t[2 * reps + r] = (t2 - t1) / (t1 - t0);
    }
    x->mode = sparse ? "sparse" : "dense";
    x->seqlen = T;
    x->fwd_ms = median(t, reps);
    x->bwd_ms = median(t + reps, reps);
    x->ratio = median(t + 2 * reps, reps);
    x->pairs = attended_pairs(o, T, topk, sparse ? sz.topk_out : 0);
    if (x->pairs < 0) {
        snprintf(err, errlen, "out of memory for T=%d (counting the attended pairs)", T);
        goto done;
    }
    x->fwd_gflops = 4.0 * D * x->pairs / (x->fwd_ms * 1e6);
    x->bwd_gflops = 14.0 * D * x->pairs / (x->bwd_ms * 1e6);
    rc = 0;
    goto done;
fail:
    snprintf(err, errlen, "T=%d: %s (%s)", T, infllm_status_str(st), infllm_last_error());
done:
    free(q), free(k), free(v), free(dout), free(out), free(dq), free(dk), free(dv), free(lse), free(t), free(topk);
    return rc;
}

#ifdef INFLLM_HAVE_CUDA
/* bench_backward_one on the GPU: the same host inputs copied once; the selection once (timed alone), then per rep
 * the forward and the backward back to back on one stream, with a CUDA event before, between and after, one caller
 * workspace of the largest need (forward, selection, backward: no call allocates), one synchronisation at the end.
 * The backward is the _out call on the forward's out and lse. bwd / fwd is the median of the per-rep ratios.
 * GFLOP/s count the attended (row, key) pairs exactly, 4 D a pair forward and 10 D backward (the five products of
 * the usual count, as bench/cuda_bwd_bench.py and the SDPA baselines; the CUDA backward itself does 14 D with out
 * given: S and dP in both its passes). */
static int bench_backward_one_cuda(const opts *o, int T, int sparse, brow *x, char *err, size_t errlen) {
    const int Hq = o->heads, Hkv = o->kv_heads, D = o->head_dim, reps = o->reps < 1 ? 1 : o->reps;
    const size_t es = infllm_dtype_size(o->dtype), nq = (size_t)T * Hq * D, nk = (size_t)T * Hkv * D;
    const infllm_layout l = one_seq_layout(o, T);
    infllm_params p = o->p;
    p.backend = INFLLM_BACKEND_CUDA;
    p.mode = sparse ? INFLLM_MODE_SPARSE : INFLLM_MODE_DENSE;
    void *hq = input_tensor(T, Hq, D, o->dtype, o->structured), *hk = input_tensor(T, Hkv, D, o->dtype, o->structured);
    void *hv = rand_tensor(nk, o->dtype), *hdo = rand_tensor(nq, o->dtype);
    void *q = NULL, *k = NULL, *v = NULL, *dout = NULL, *out = NULL, *dq = NULL, *dk = NULL, *dv = NULL, *ws = NULL;
    float *lse = NULL;
    int32_t *topk = NULL, *htopk = NULL;
    cudaStream_t stream = NULL;
    cudaEvent_t *ev = calloc((size_t)2 * reps + 3, sizeof(cudaEvent_t)); /* [2 reps + 1] the reps', 2 the selection's */
    double *t = calloc((size_t)reps * 3, sizeof(double));                 /* forward, backward, ratio */
    int rc = 1, nev = 0;
    infllm_status st = INFLLM_OK;
    const char *what = "";
    memset(x, 0, sizeof *x);
    x->select_ms = NOT_APPLICABLE; /* a dense row selects nothing */
    if (!hq || !hk || !hv || !hdo || !t || !ev) {
        snprintf(err, errlen, "out of host memory for T=%d", T);
        goto done;
    }
    infllm_sizes sz;
    if ((st = infllm_get_sizes(&o->p, &l, &sz))) {
        what = "infllm_get_sizes";
        goto fail;
    }
    const int32_t K = sparse ? (sz.topk_out > 0 ? sz.topk_out : 1) : 0;
    if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) goto cuda_fail;
    for (; nev < 2 * reps + 3; nev++)
        if (cudaEventCreate(&ev[nev]) != cudaSuccess) goto cuda_fail;
    if (cudaMalloc(&q, nq * es) || cudaMalloc(&k, nk * es) || cudaMalloc(&v, nk * es) || cudaMalloc(&dout, nq * es) ||
        cudaMalloc(&out, nq * es) || cudaMalloc(&dq, nq * es) || cudaMalloc(&dk, nk * es) || cudaMalloc(&dv, nk * es) ||
        cudaMalloc((void **)&lse, (size_t)T * Hq * sizeof(float)) ||
        (sparse && cudaMalloc((void **)&topk, (size_t)Hkv * T * K * sizeof(int32_t))))
        goto cuda_fail;
    if (cudaMemcpy(q, hq, nq * es, cudaMemcpyHostToDevice) || cudaMemcpy(k, hk, nk * es, cudaMemcpyHostToDevice) ||
        cudaMemcpy(v, hv, nk * es, cudaMemcpyHostToDevice) || cudaMemcpy(dout, hdo, nq * es, cudaMemcpyHostToDevice))
        goto cuda_fail;
    p.cuda_stream = stream;
    size_t wsb = 0, b = 0;
    if (sparse) {
        if ((st = ws_grow(infllm_select_blocks_workspace_size(&p, &l, &b), &b, &wsb,
                          "infllm_select_blocks_workspace_size", &what)) ||
            (st = ws_grow(infllm_sparse_attention_workspace_size(&p, &l, K, &b), &b, &wsb,
                          "infllm_sparse_attention_workspace_size", &what)) ||
            (st = ws_grow(infllm_sparse_attention_backward_workspace_size(&p, &l, K, &b), &b, &wsb,
                          "infllm_sparse_attention_backward_workspace_size", &what)))
            goto fail;
    } else if ((st = ws_grow(infllm_dense_attention_workspace_size(&p, &l, &b), &b, &wsb,
                             "infllm_dense_attention_workspace_size", &what)) ||
               (st = ws_grow(infllm_dense_attention_backward_workspace_size(&p, &l, &b), &b, &wsb,
                             "infllm_dense_attention_backward_workspace_size", &what))) {
        goto fail;
    }
    if (wsb && cudaMalloc(&ws, wsb)) goto cuda_fail;
    p.workspace = ws;
    p.workspace_bytes = wsb;
    if (sparse) {
        if (cudaEventRecord(ev[2 * reps + 1], stream) != cudaSuccess) goto cuda_fail;
        if ((st = infllm_select_blocks(&p, &l, q, k, topk))) {
            what = "infllm_select_blocks";
            goto fail;
        }
        if (cudaEventRecord(ev[2 * reps + 2], stream) != cudaSuccess) goto cuda_fail;
    }
    /* r = -1: the untimed pair (first launches) */
    for (int r = -1; r < reps; r++) {
        if (r >= 0 && cudaEventRecord(ev[2 * r], stream) != cudaSuccess) goto cuda_fail;
        st = sparse ? infllm_sparse_attention(&p, &l, q, k, v, topk, K, out, lse)
                    : infllm_dense_attention(&p, &l, q, k, v, out, lse);
        if (st) {
            what = sparse ? "infllm_sparse_attention" : "infllm_dense_attention";
            goto fail;
        }
        if (r >= 0 && cudaEventRecord(ev[2 * r + 1], stream) != cudaSuccess) goto cuda_fail;
        st = sparse ? infllm_sparse_attention_backward_out(&p, &l, q, k, v, topk, K, out, lse, dout, dq, dk, dv)
                    : infllm_dense_attention_backward_out(&p, &l, q, k, v, out, lse, dout, dq, dk, dv);
        if (st) {
            what = sparse ? "infllm_sparse_attention_backward_out" : "infllm_dense_attention_backward_out";
            goto fail;
        }
        if (r >= 0 && cudaEventRecord(ev[2 * r + 2], stream) != cudaSuccess) goto cuda_fail;
    }
    if (cudaStreamSynchronize(stream) != cudaSuccess) goto cuda_fail;
    for (int r = 0; r < reps; r++) {
        float f = 0, g = 0;
        if (cudaEventElapsedTime(&f, ev[2 * r], ev[2 * r + 1]) != cudaSuccess ||
            cudaEventElapsedTime(&g, ev[2 * r + 1], ev[2 * r + 2]) != cudaSuccess)
            goto cuda_fail;
        t[r] = f;
        t[reps + r] = g;
        t[2 * reps + r] = f > 0 ? (double)g / f : 0.0;
    }
    if (sparse) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, ev[2 * reps + 1], ev[2 * reps + 2]) != cudaSuccess) goto cuda_fail;
        x->select_ms = ms;
        htopk = malloc((size_t)Hkv * T * K * sizeof(int32_t));
        if (!htopk) {
            snprintf(err, errlen, "out of host memory for T=%d", T);
            goto done;
        }
        if (cudaMemcpy(htopk, topk, (size_t)Hkv * T * K * sizeof(int32_t), cudaMemcpyDeviceToHost)) goto cuda_fail;
    }
    x->mode = sparse ? "sparse" : "dense";
    x->seqlen = T;
    x->fwd_ms = median(t, reps);
    x->bwd_ms = median(t + reps, reps);
    x->ratio = median(t + 2 * reps, reps);
    x->pairs = attended_pairs(o, T, htopk, K);
    if (x->pairs < 0) {
        snprintf(err, errlen, "out of host memory for T=%d (counting the attended pairs)", T);
        goto done;
    }
    x->fwd_gflops = 4.0 * D * x->pairs / (x->fwd_ms * 1e6);
    x->bwd_gflops = 10.0 * D * x->pairs / (x->bwd_ms * 1e6);
    rc = 0;
    goto done;
cuda_fail:
    snprintf(err, errlen, "T=%d: CUDA: %s", T, cudaGetErrorString(cudaGetLastError()));
    goto done;
fail:
    snprintf(err, errlen, "T=%d: %s: %s (%s)", T, what, infllm_status_str(st), infllm_last_error());
done:
    if (stream) cudaStreamSynchronize(stream);
    cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(dout), cudaFree(out), cudaFree(dq), cudaFree(dk), cudaFree(dv);
    cudaFree(lse), cudaFree(topk), cudaFree(ws);
    for (int i = 0; i < nev; i++) cudaEventDestroy(ev[i]);
    if (stream) cudaStreamDestroy(stream);
    (void)cudaGetLastError();
    free(hq), free(hk), free(hv), free(hdo), free(t), free(ev), free(htopk);
    return rc;
}
#endif

static void print_brow(const opts *o, const brow *x, const char *cpu, int *first) {
    if (!strcmp(o->format, "md")) {
        if (*first)
            printf("| mode | seqlen | select ms | forward ms | backward ms | bwd / fwd | forward GFLOP/s | backward GFLOP/s "
                   "| attended (row, key) pairs |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        char sel[32];
        md_cell(sel, sizeof sel, o->cuda ? 3 : 1, x->select_ms);
        if (o->cuda) /* GPU times are short: three decimals */
            printf("| %s | %d | %s | %.3f | %.3f | %.2f | %.1f | %.1f | %.4g |\n", x->mode, x->seqlen, sel, x->fwd_ms,
                   x->bwd_ms, x->ratio, x->fwd_gflops, x->bwd_gflops, x->pairs);
        else
            printf("| %s | %d | %s | %.1f | %.1f | %.2f | %.1f | %.1f | %.4g |\n", x->mode, x->seqlen, sel, x->fwd_ms,
                   x->bwd_ms, x->ratio, x->fwd_gflops, x->bwd_gflops, x->pairs);
    } else { /* csv / json: as print_row (the times at 4 decimals in both: csv had 4, json 3) */
        const fmt_col cols[] = {
            FMT_STR("mode", x->mode), FMT_INT("seqlen", x->seqlen), FMT_INT("heads", o->heads),
            FMT_INT("kv_heads", o->kv_heads), FMT_INT("head_dim", o->head_dim),
            FMT_STR("dtype", infllm_dtype_name(o->dtype)), FMT_INT("threads", o->threads),
            FMT_NUM("select_ms", 4, x->select_ms), FMT_NUM("forward_ms", 4, x->fwd_ms),
            FMT_NUM("backward_ms", 4, x->bwd_ms), FMT_NUM("bwd_over_fwd", 4, x->ratio),
            FMT_NUM("forward_gflops", 2, x->fwd_gflops), FMT_NUM("backward_gflops", 2, x->bwd_gflops),
            FMT_NUM("pairs", 0, x->pairs), FMT_INT("reps", o->reps), FMT_STR("commit", infllm_build_commit()),
            FMT_STR("cpu", cpu), FMT_STR("simd", infllm_cpu_simd_level()), FMT_NUM("load_avg", 2, load_avg()),
            FMT_STR("device", o->cuda ? "cuda" : "cpu")};
        fmt_record(stdout, !strcmp(o->format, "json"), cols, sizeof cols / sizeof *cols, first);
    }
    fflush(stdout);
    *first = 0;
}

static int cmd_backward_bench(int argc, char **argv) {
    opts o;
    char cpu[512], err[512];
    const int rc = bench_start(&o, argc, argv, "backward", cpu, sizeof cpu);
    if (rc >= 0) return rc;
    int (*one)(const opts *, int, int, brow *, char *, size_t) = bench_backward_one;
#ifdef INFLLM_HAVE_CUDA
    if (o.cuda) one = bench_backward_one_cuda;
#endif
    if (!strcmp(o.format, "md") && o.cuda)
        printf("# infllm bench backward --device cuda: commit %s, %s\n"
               "# Hq %d, Hkv %d, D %d, dtype %s, B %d, topk %d + local %d, inputs %s, reps %d (median of CUDA-event "
               "times); backward: the _out calls (the forward's out and lse given), GFLOP/s at 10 D a pair (the usual five "
               "products; bench/cuda_bwd_bench.py has the PyTorch baselines)\n",
               infllm_build_commit(), cpu, o.heads, o.kv_heads, o.head_dim, infllm_dtype_name(o.dtype),
               o.p.block_size, o.p.topk, o.p.local_blocks, o.structured ? "structured" : "random", o.reps);
    else if (!strcmp(o.format, "md")) {
        char la[32], dn[160];
        printf("# infllm bench backward: commit %s, %s, simd %s, %d thread(s), load avg %s%s\n"
               "# Hq %d, Hkv %d, D %d, dtype %s, B %d, topk %d + local %d, reps %d (median)\n",
               infllm_build_commit(), cpu, infllm_cpu_simd_level(), o.threads, md_cell(la, sizeof la, 2, load_avg()),
               dot16_note(o.dtype, "bf16", " (the forward; the backward's S and dP)", dn, sizeof dn),
               o.heads, o.kv_heads, o.head_dim, infllm_dtype_name(o.dtype), o.p.block_size, o.p.topk, o.p.local_blocks,
               o.reps);
    }
    int first = 1;
    if (o.warmup && o.nseq > 0) {
        opts w = o;
        w.reps = 1;
        brow b;
        if (one(&w, o.seqlens[0] < 1024 ? o.seqlens[0] : 1024, o.do_sparse, &b, err, sizeof err)) {
            fprintf(stderr, "infllm bench backward: %s\n", err);
            return 1;
        }
    }
    for (int i = 0; i < o.nseq; i++)
        for (int sparse = 0; sparse < 2; sparse++) {
            if ((sparse && !o.do_sparse) || (!sparse && !o.do_dense)) continue;
            brow b;
            if (one(&o, o.seqlens[i], sparse, &b, err, sizeof err)) {
                json_close(&o, first, 1);
                fprintf(stderr, "infllm bench backward: %s\n", err);
                return 1;
            }
            print_brow(&o, &b, cpu, &first);
        }
    json_close(&o, first, 0);
    return 0;
}

/* ---------------------------------------------------------------- decode ---- */

/* One row of `infllm bench decode`: times in microseconds, medians over the reps */
typedef struct drow {
    const char *mode;
    int seqlen;
    double step_us, append_us, attend_us; /* eager: CPU wall clock a call; CUDA events between calls enqueued back to back */
    double graph_step_us, graph_attend_us; /* CUDA graph replays (NOT_APPLICABLE on the CPU) */
    double cpu_us;                         /* CPU time of a step, all threads (NOT_APPLICABLE on the GPU) */
    double read_mib, gbs, vs_dense;        /* bytes the attend reads (decode_read_bytes), their rate over the attend */
    double cache_mib, ws_mib;
} drow;

/* The bytes the decode attend of the query at position T - 1 reads from a cache of T tokens: K and V of the keys
 * it attends (dense: its causal keys, the last --window of them; sparse: the selected blocks, at most (K - 1) B keys
 * + its own block's, or the dense keys where the selection takes every block its window reaches) and, where stage 1
 * runs, the compressed keys it scores (the visible c1 and c2 kernels; c1 twice with --exact-lse). Scores, lists and
 * the query are left out (a few KB). */
static double decode_read_bytes(const opts *o, int T, int sparse) {
    const double rowb = (double)o->kv_heads * o->head_dim * (double)infllm_dtype_size(o->dtype);
    int32_t n1, n2;
    kernel_counts(o, T, &n1, &n2);
    double dk, sk, sc;
    query_cost(o, (int64_t)T - 1, n1, n2, &dk, &sk, &sc);
    return sparse ? (2.0 * sk + sc) * rowb : 2.0 * dk * rowb;
}

/* the parts of a row both devices fill the same way */
static void decode_row_fill(const opts *o, int T, int sparse, drow *x, double cache_bytes, double ws_bytes) {
    x->mode = sparse ? "sparse" : "dense";
    x->seqlen = T;
    x->read_mib = decode_read_bytes(o, T, sparse) / 1048576.0;
    x->cache_mib = cache_bytes / 1048576.0;
    x->ws_mib = ws_bytes / 1048576.0;
    x->vs_dense = NOT_APPLICABLE;
}

/* The decode step on the CPU: a cache of T - 1 tokens (k, v as bench attn's inputs), then per rep and mode (dense,
 * sparse alternating, so that both see the same load) the cache truncated back to T - 1 tokens, one token appended
 * (infllm_cache_append) and its query attended (infllm_cache_attend), each call timed by the wall clock; one untimed
 * step per mode first unless --no-warmup. "vs dense": the median of the per-rep step ratios. */
static int bench_decode_one(const opts *o, int T, drow *rd, drow *rs, char *err, size_t errlen) {
    const int Hq = o->heads, Hkv = o->kv_heads, D = o->head_dim, reps = o->reps < 1 ? 1 : o->reps;
    const size_t es = infllm_dtype_size(o->dtype), rowb = (size_t)Hkv * D * es;
    void *k = input_tensor(T, Hkv, D, o->dtype, o->structured), *v = rand_tensor((size_t)T * Hkv * D, o->dtype);
    void *q = rand_tensor((size_t)Hq * D, o->dtype), *out = malloc((size_t)Hq * D * es);
    float *lse = malloc((size_t)Hq * sizeof(float));
    double *t = calloc((size_t)reps * 2 * 4 + reps, sizeof(double)); /* [mode][step, append, attend, cpu][reps], ratio */
    infllm_cache *cache = NULL;
    infllm_status st = INFLLM_OK;
    const char *what = "";
    int rc = 1;
    if (!k || !v || !q || !out || !lse || !t) {
        snprintf(err, errlen, "out of memory for T=%d", T);
        goto done;
    }
    infllm_params p = o->p;
    p.num_threads = o->threads;
    if ((st = infllm_cache_create(&p, o->dtype, Hkv, D, T, &cache))) {
        what = "infllm_cache_create";
        goto fail;
    }
    if (T > 1 && (st = infllm_cache_append(cache, k, v, T - 1))) {
        what = "infllm_cache_append (the prefix)";
        goto fail;
    }
    const char *kl = (const char *)k + (size_t)(T - 1) * rowb, *vl = (const char *)v + (size_t)(T - 1) * rowb;
    for (int r = o->warmup ? -1 : 0; r < reps; r++) {
        for (int mode = 0; mode < 2; mode++) {
            if ((mode == 0 && !o->do_dense) || (mode == 1 && !o->do_sparse)) continue;
            p.mode = mode ? INFLLM_MODE_SPARSE : INFLLM_MODE_DENSE;
            double *m = t + (size_t)mode * 4 * reps;
            const double c0 = cpu_s(), t0 = now_s();
            if ((st = infllm_cache_truncate(cache, T - 1))) {
                what = "infllm_cache_truncate";
                goto fail;
            }
            if ((st = infllm_cache_append(cache, kl, vl, 1))) {
                what = "infllm_cache_append";
                goto fail;
            }
            const double t1 = now_s();
            if ((st = infllm_cache_attend(cache, &p, q, 1, Hq, out, lse))) {
                what = "infllm_cache_attend";
                goto fail;
            }
            const double t2 = now_s(), c1 = cpu_s();
            if (r < 0) continue;
            m[r] = (t2 - t0) * 1e6;
            m[reps + r] = (t1 - t0) * 1e6;
            m[2 * reps + r] = (t2 - t1) * 1e6;
            m[3 * reps + r] = (c1 - c0) * 1e6;
        }
        if (r >= 0 && o->do_dense && o->do_sparse) t[(size_t)8 * reps + r] = t[(size_t)4 * reps + r] / t[r];
    }
    const double cache_bytes = (double)infllm_cache_memory_bytes(cache);
    for (int mode = 0; mode < 2; mode++) {
        if ((mode == 0 && !o->do_dense) || (mode == 1 && !o->do_sparse)) continue;
        double *m = t + (size_t)mode * 4 * reps;
        drow *x = mode ? rs : rd;
        memset(x, 0, sizeof *x);
        decode_row_fill(o, T, mode, x, cache_bytes, 0);
        x->step_us = median(m, reps);
        x->append_us = median(m + reps, reps);
        x->attend_us = median(m + 2 * reps, reps);
        x->cpu_us = median(m + 3 * reps, reps);
        x->graph_step_us = x->graph_attend_us = NOT_APPLICABLE;
        x->gbs = x->read_mib * 1048576.0 / (x->attend_us * 1e3);
    }
    if (o->do_dense && o->do_sparse) rs->vs_dense = median(t + (size_t)8 * reps, reps);
    rc = 0;
    goto done;
fail:
    snprintf(err, errlen, "T=%d: %s: %s (%s)", T, what, infllm_status_str(st), infllm_last_error());
done:
    infllm_cache_free(cache);
    free(k), free(v), free(q), free(out), free(lse), free(t);
    return rc;
}

#ifdef INFLLM_HAVE_CUDA
/* The decode step on the GPU: the same cache and token on one stream with one caller workspace (the larger of the two
 * modes' infllm_cache_workspace_size for one query, so no call allocates), mode by mode (sparse, then dense): eager,
 * one untimed step, then the reps' steps enqueued back to back (the host-side truncate between them) with an event
 * before the append, between append and attend and after the attend (the device's time while the host keeps ahead;
 * a host slower than the kernels shows as the gaps it leaves); then the step (append + attend, from T - 1 tokens)
 * captured into a CUDA graph and replayed reps times back to back between events, and the attend alone (at T
 * tokens) likewise: a replay re-runs the captured step at the same position (the cache API's rule). "vs dense": the
 * ratio of the graph steps' medians. */
static int bench_decode_one_cuda(const opts *o, int T, drow *rd, drow *rs, char *err, size_t errlen) {
    const int Hq = o->heads, Hkv = o->kv_heads, D = o->head_dim, reps = o->reps < 1 ? 1 : o->reps;
    const size_t es = infllm_dtype_size(o->dtype), nk = (size_t)T * Hkv * D, rowb = (size_t)Hkv * D * es;
    void *hk = input_tensor(T, Hkv, D, o->dtype, o->structured), *hv = rand_tensor(nk, o->dtype);
    void *hq = rand_tensor((size_t)Hq * D, o->dtype);
    void *k = NULL, *v = NULL, *q = NULL, *out = NULL, *lse = NULL, *ws = NULL;
    cudaStream_t stream = NULL;
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    const int nev = 2 * reps + 1;
    cudaEvent_t *ev = calloc((size_t)nev, sizeof(cudaEvent_t));
    double *t = calloc((size_t)reps * 5, sizeof(double)); /* [step, append, attend, graph step, graph attend][reps] */
    infllm_cache *cache = NULL;
    infllm_status st = INFLLM_OK;
    const char *what = "";
    int rc = 1;
    if (!hk || !hv || !hq || !ev || !t) {
        snprintf(err, errlen, "out of host memory for T=%d", T);
        goto done;
    }
    if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) goto cuda_fail;
    for (int i = 0; i < nev; i++)
        if (cudaEventCreate(&ev[i]) != cudaSuccess) goto cuda_fail;
    if (cudaMalloc(&k, nk * es) || cudaMalloc(&v, nk * es) || cudaMalloc(&q, (size_t)Hq * D * es) ||
        cudaMalloc(&out, (size_t)Hq * D * es) || cudaMalloc(&lse, (size_t)Hq * sizeof(float)))
        goto cuda_fail;
    if (cudaMemcpy(k, hk, nk * es, cudaMemcpyHostToDevice) || cudaMemcpy(v, hv, nk * es, cudaMemcpyHostToDevice) ||
        cudaMemcpy(q, hq, (size_t)Hq * D * es, cudaMemcpyHostToDevice))
        goto cuda_fail;
    infllm_params p = o->p;
    p.backend = INFLLM_BACKEND_CUDA;
    p.cuda_stream = stream;
    if ((st = infllm_cache_create(&p, o->dtype, Hkv, D, T, &cache))) {
        what = "infllm_cache_create";
        goto fail;
    }
    size_t wsb = 0, b = 0;
    for (int mode = 0; mode < 2; mode++) {
        p.mode = mode ? INFLLM_MODE_SPARSE : INFLLM_MODE_DENSE;
        if ((st = ws_grow(infllm_cache_workspace_size(cache, &p, 1, Hq, &b), &b, &wsb, "infllm_cache_workspace_size",
                          &what)))
            goto fail;
    }
    if (wsb && cudaMalloc(&ws, wsb)) goto cuda_fail;
    p.workspace = ws;
    p.workspace_bytes = wsb;
    if (T > 1 && (st = infllm_cache_append(cache, k, v, T - 1))) {
        what = "infllm_cache_append (the prefix)";
        goto fail;
    }
    const char *kl = (const char *)k + (size_t)(T - 1) * rowb, *vl = (const char *)v + (size_t)(T - 1) * rowb;
    for (int oi = 0; oi < 2; oi++) {
        const int mode = 1 - oi; /* sparse first, as bench attn's order */
        if ((mode == 0 && !o->do_dense) || (mode == 1 && !o->do_sparse)) continue;
        p.mode = mode ? INFLLM_MODE_SPARSE : INFLLM_MODE_DENSE;
        /* eager: one untimed step, then the reps back to back */
        for (int r = -1; r < reps; r++) {
            if (r >= 0 && r == 0 && cudaEventRecord(ev[0], stream) != cudaSuccess) goto cuda_fail;
            if ((st = infllm_cache_truncate(cache, T - 1))) {
                what = "infllm_cache_truncate";
                goto fail;
            }
            if ((st = infllm_cache_append(cache, kl, vl, 1))) {
                what = "infllm_cache_append";
                goto fail;
            }
            if (r >= 0 && cudaEventRecord(ev[2 * r + 1], stream) != cudaSuccess) goto cuda_fail;
            if ((st = infllm_cache_attend(cache, &p, q, 1, Hq, out, lse))) {
                what = "infllm_cache_attend";
                goto fail;
            }
            if (r >= 0 && cudaEventRecord(ev[2 * r + 2], stream) != cudaSuccess) goto cuda_fail;
        }
        if (cudaStreamSynchronize(stream) != cudaSuccess) goto cuda_fail;
        for (int r = 0; r < reps; r++) {
            float a = 0, c = 0;
            if (cudaEventElapsedTime(&a, ev[2 * r], ev[2 * r + 1]) != cudaSuccess ||
                cudaEventElapsedTime(&c, ev[2 * r + 1], ev[2 * r + 2]) != cudaSuccess)
                goto cuda_fail;
            t[r] = (double)(a + c) * 1e3;
            t[reps + r] = (double)a * 1e3;
            t[2 * reps + r] = (double)c * 1e3;
        }
        /* graphs: the step from T - 1 tokens, then the attend alone at T */
        for (int g = 0; g < 2; g++) {
            if (g == 0 && (st = infllm_cache_truncate(cache, T - 1))) {
                what = "infllm_cache_truncate";
                goto fail;
            }
            if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) goto cuda_fail;
            st = g == 0 ? infllm_cache_append(cache, kl, vl, 1) : INFLLM_OK;
            what = "infllm_cache_append (captured)";
            if (!st) {
                st = infllm_cache_attend(cache, &p, q, 1, Hq, out, lse);
                what = "infllm_cache_attend (captured)";
            }
            const cudaError_t ce = cudaStreamEndCapture(stream, &graph);
            if (st) goto fail;
            if (ce != cudaSuccess || cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) goto cuda_fail;
            if (cudaGraphLaunch(exec, stream) != cudaSuccess) goto cuda_fail; /* untimed */
            for (int r = 0; r < reps; r++) {
                if (r == 0 && cudaEventRecord(ev[0], stream) != cudaSuccess) goto cuda_fail;
                if (cudaGraphLaunch(exec, stream) != cudaSuccess || cudaEventRecord(ev[r + 1], stream) != cudaSuccess)
                    goto cuda_fail;
            }
            if (cudaStreamSynchronize(stream) != cudaSuccess) goto cuda_fail;
            for (int r = 0; r < reps; r++) {
                float ms = 0;
                if (cudaEventElapsedTime(&ms, ev[r], ev[r + 1]) != cudaSuccess) goto cuda_fail;
                t[(size_t)(3 + g) * reps + r] = (double)ms * 1e3;
            }
            cudaGraphExecDestroy(exec);
            cudaGraphDestroy(graph);
            exec = NULL;
            graph = NULL;
        }
        drow *x = mode ? rs : rd;
        memset(x, 0, sizeof *x);
        decode_row_fill(o, T, mode, x, (double)infllm_cache_memory_bytes(cache), (double)wsb);
        x->step_us = median(t, reps);
        x->append_us = median(t + reps, reps);
        x->attend_us = median(t + 2 * reps, reps);
        x->graph_step_us = median(t + (size_t)3 * reps, reps);
        x->graph_attend_us = median(t + (size_t)4 * reps, reps);
        x->cpu_us = NOT_APPLICABLE;
        x->gbs = x->read_mib * 1048576.0 / (x->graph_attend_us * 1e3);
    }
    if (o->do_dense && o->do_sparse) rs->vs_dense = rs->graph_step_us / rd->graph_step_us;
    rc = 0;
    goto done;
cuda_fail:
    snprintf(err, errlen, "T=%d: CUDA: %s", T, cudaGetErrorString(cudaGetLastError()));
    goto done;
fail:
    snprintf(err, errlen, "T=%d: %s: %s (%s)", T, what, infllm_status_str(st), infllm_last_error());
done:
    if (stream) {
        enum cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
        if (cudaStreamIsCapturing(stream, &cs) == cudaSuccess && cs != cudaStreamCaptureStatusNone) {
            cudaGraph_t g2 = NULL;
            cudaStreamEndCapture(stream, &g2);
            if (g2) cudaGraphDestroy(g2);
        }
        cudaStreamSynchronize(stream);
    }
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    infllm_cache_free(cache);
    cudaFree(k), cudaFree(v), cudaFree(q), cudaFree(out), cudaFree(lse), cudaFree(ws);
    for (int i = 0; ev && i < nev; i++)
        if (ev[i]) cudaEventDestroy(ev[i]);
    if (stream) cudaStreamDestroy(stream);
    (void)cudaGetLastError();
    free(hk), free(hv), free(hq), free(ev), free(t);
    return rc;
}
#endif

static void print_drow(const opts *o, const drow *x, const char *cpu, int *first) {
    if (!strcmp(o->format, "md")) {
        char c[6][32];
        if (o->cuda) {
            if (*first)
                printf("| mode | context | step us | append us | attend us | graph step us | graph attend us | read MiB | "
                       "GB/s | vs dense | cache MiB | workspace MiB |\n"
                       "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            printf("| %s | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f | %.1f | %s | %.1f | %.2f |\n", x->mode,
                   x->seqlen, x->step_us, x->append_us, x->attend_us, x->graph_step_us, x->graph_attend_us, x->read_mib,
                   x->gbs, md_cell(c[0], 32, 3, x->vs_dense), x->cache_mib, x->ws_mib);
        } else {
            if (*first)
                printf("| mode | context | step us | append us | attend us | CPU us | read MiB | GB/s | vs dense | "
                       "cache MiB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            printf("| %s | %d | %.1f | %.1f | %.1f | %.1f | %.2f | %.2f | %s | %.1f |\n", x->mode, x->seqlen,
                   x->step_us, x->append_us, x->attend_us, x->cpu_us, x->read_mib, x->gbs,
                   md_cell(c[0], 32, 3, x->vs_dense), x->cache_mib);
        }
    } else {
        const fmt_col cols[] = {
            FMT_STR("mode", x->mode), FMT_INT("seqlen", x->seqlen), FMT_INT("heads", o->heads),
            FMT_INT("kv_heads", o->kv_heads), FMT_INT("head_dim", o->head_dim),
            FMT_STR("dtype", infllm_dtype_name(o->dtype)), FMT_INT("threads", o->threads),
            FMT_INT("block_size", o->p.block_size), FMT_INT("topk_total", o->p.topk + o->p.local_blocks),
            FMT_INT("window", o->p.window), FMT_NUM("step_us", 2, x->step_us), FMT_NUM("append_us", 2, x->append_us),
            FMT_NUM("attend_us", 2, x->attend_us), FMT_NUM("cpu_us", 2, x->cpu_us),
            FMT_NUM("graph_step_us", 2, x->graph_step_us), FMT_NUM("graph_attend_us", 2, x->graph_attend_us),
            FMT_NUM("read_mib", 5, x->read_mib), FMT_NUM("gbs", 4, x->gbs), FMT_NUM("vs_dense", 4, x->vs_dense),
            FMT_NUM("cache_mib", 2, x->cache_mib), FMT_NUM("workspace_mib", 3, x->ws_mib), FMT_INT("reps", o->reps),
            FMT_STR("commit", infllm_build_commit()), FMT_STR("cpu", cpu), FMT_STR("simd", infllm_cpu_simd_level()),
            FMT_NUM("load_avg", 2, load_avg()), FMT_STR("device", o->cuda ? "cuda" : "cpu"),
            FMT_STR("inputs", o->structured ? "structured" : "random")};
        fmt_record(stdout, !strcmp(o->format, "json"), cols, sizeof cols / sizeof *cols, first);
    }
    fflush(stdout);
    *first = 0;
}

static int cmd_decode_bench(int argc, char **argv) {
    opts o;
    char cpu[512], err[512];
    const int rc = bench_start(&o, argc, argv, "decode", cpu, sizeof cpu);
    if (rc >= 0) return rc;
    int (*one)(const opts *, int, drow *, drow *, char *, size_t) = bench_decode_one;
#ifdef INFLLM_HAVE_CUDA
    if (o.cuda) one = bench_decode_one_cuda;
#endif
    if (!strcmp(o.format, "md")) {
        char la[32], dn[160];
        if (o.cuda)
            printf("# infllm bench decode --device cuda: commit %s, %s\n", infllm_build_commit(), cpu);
        else
            printf("# infllm bench decode: commit %s, %s, simd %s, %d thread(s), load avg %s%s\n", infllm_build_commit(),
                   cpu, infllm_cpu_simd_level(), o.threads, md_cell(la, sizeof la, 2, load_avg()),
                   dot16_note(o.dtype, "bf16", "", dn, sizeof dn));
        printf("# one decode step against a cache of `context` tokens (append 1 token + attend its query): Hq %d, Hkv %d, "
               "D %d, dtype %s, B %d, topk %d + local %d, init %d, window %d, inputs %s, reps %d (medians); read MiB: the "
               "K / V rows (and compressed keys) the attend reads, GB/s over the %s\n",
               o.heads, o.kv_heads, o.head_dim, infllm_dtype_name(o.dtype), o.p.block_size, o.p.topk, o.p.local_blocks,
               o.p.init_blocks, o.p.window, o.structured ? "structured" : "random", o.reps,
               o.cuda ? "graph attend; eager times are CUDA events between calls enqueued back to back"
                      : "attend (wall clock)");
    }
    int first = 1;
    for (int i = 0; i < o.nseq; i++) {
        drow rd, rs;
        if (one(&o, o.seqlens[i], &rd, &rs, err, sizeof err)) {
            json_close(&o, first, 1);
            fprintf(stderr, "infllm bench decode: %s\n", err);
            return 1;
        }
        if (o.do_dense) print_drow(&o, &rd, cpu, &first);
        if (o.do_sparse) print_drow(&o, &rs, cpu, &first);
    }
    json_close(&o, first, 0);
    return 0;
}

int cmd_bench(int argc, char **argv) {
    /* argv[0] is "bench" or the first argument after it; accept both */
    int i = 0;
    if (argc > 0 && !strcmp(argv[0], "bench")) i = 1;
    if (i >= argc || !strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
        bench_usage(i >= argc ? stderr : stdout);
        return i >= argc ? 2 : 0;
    }
    if (!strcmp(argv[i], "attn")) return cmd_attn_bench(argc - i - 1, argv + i + 1);
    if (!strcmp(argv[i], "peak")) return cmd_peak(argc - i - 1, argv + i + 1);
    if (!strcmp(argv[i], "backward")) return cmd_backward_bench(argc - i - 1, argv + i + 1);
    if (!strcmp(argv[i], "decode")) return cmd_decode_bench(argc - i - 1, argv + i + 1);
    if (!strcmp(argv[i], "run")) {
        return cmd_bench_run(argc - i - 1, argv + i + 1);
    }
    fprintf(stderr, "infllm bench: unknown benchmark '%s' (attn, backward, decode, peak, run)\n", argv[i]);
    bench_usage(stderr);
    return 2;
}
