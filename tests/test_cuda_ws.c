/*
 * test_cuda_ws: the decode cache's workspace contract on the CUDA backend, on the host (no GPU needed).
 * infllm_cache_workspace_size(n) promises one buffer for every attend of 1..n queries at every length up to
 * the capacity. The sizes do not grow monotonically with the query count (the decode kernels split each row
 * over ceil(2 SMs / rows) CTAs, the small-batch selection stops at a row limit for some groups, the flash
 * launch splits while its tiles are fewer than the SMs), and a size taken at a few counts once came out
 * short (an attend of 8 queries needed more than the size for 9). So, for seeded random layouts, this holds
 * cuda_cache_workspace_size (the cache's query) to cuda_cache_attend_bytes (what cuda_cache_attend itself
 * asks for) at every count 1..n and at several lengths, and the query must not ask for more than 1.5x the
 * largest need (a size that served by being huge would pass the first check; the sizes of the decode kernels
 * and of the other paths are not added up when the decode kernels serve every length). Checked to fail on
 * the four-count sizing it replaced (132 of 209,640 checks).
 *
 * Both functions are host arithmetic over the device's properties: without a GPU those are the fallback's
 * (100 SMs, no tensor-core generation, 48 KB), or with INFLLM_CUDA_EMULATE=NAME that GPU's (ctest runs it as
 * planned for an H200, an A100, a 99 KB cc 8.6 part and a 16-SM Orin), on a GPU machine the device's own
 * (lowered to the profile's), so CI and the GPU machine check different splits and kernel choices.
 * INFLLM_CUDA_WS_CASES (default 400) and INFLLM_CUDA_WS_SEED (default 1).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "infllm.h"
#include "internal.h"

#ifdef INFLLM_HAVE_CUDA
/* the bytes of cuda_cache_attend for (n queries, L keys); 0 and a failed check when the params are refused */
static size_t attend_need(const infllm_params *p, infllm_dtype dt, int Hq, int Hkv, int D, int64_t n, int64_t L,
                          const char *name) {
    infllm_attn_params ap;
    infllm_seq *seqs = NULL;
    infllm_status st = infllm_build_single_seq_params(p, dt, Hq, Hkv, D, n, L, &ap, &seqs);
    CHECK(st == INFLLM_OK, "%s: n %lld L %lld: params refused: %s", name, (long long)n, (long long)L,
          infllm_last_error());
    size_t need = st == INFLLM_OK ? cuda_cache_attend_bytes(&ap) : 0;
    free(seqs);
    return need;
}

static int64_t log_uniform(unsigned long long *rng, int64_t lo, int64_t hi) {
    const double x = h_uniform(rng) * log((double)hi / (double)lo);
    int64_t v = (int64_t)((double)lo * exp(x));
    return v < lo ? lo : v > hi ? hi : v;
}
#endif

int main(void) {
#ifndef INFLLM_HAVE_CUDA
    printf("test_cuda_ws: SKIP (built without CUDA)\n");
    return 77;
#else
    const char *cn = getenv("INFLLM_CUDA_WS_CASES"), *sn = getenv("INFLLM_CUDA_WS_SEED");
    const int ncases = cn ? atoi(cn) : 400;
    unsigned long long rng = sn ? strtoull(sn, NULL, 10) : 1ULL;
    static const int Gs[] = {1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64};
    static const int Bs[] = {0, 16, 32, 48, 64, 128, 192};
    const int nG = (int)(sizeof Gs / sizeof Gs[0]), nB = (int)(sizeof Bs / sizeof Bs[0]);
    const char *emu = cuda_emulated_name();
    printf("test_cuda_ws: the cache workspace query against every attend's need (%d SMs, compute capability %d, as "
           "the library sees them%s%s)\n",
           cuda_sm_count(), cuda_device_cc(), *emu ? "; INFLLM_CUDA_EMULATE=" : "", emu);
    double worst_slack = 0;
    long long pairs = 0;
    for (int ci = 0; ci < ncases; ci++) {
        char name[160];
        infllm_params p;
        infllm_params_default(&p);
        const infllm_dtype dt = h_rng_next(&rng) % 2 ? INFLLM_DTYPE_BF16 : INFLLM_DTYPE_F16;
        const int D = h_rng_next(&rng) % 2 ? 128 : 64;
        const int Hkv = 1 + (int)(h_rng_next(&rng) % 8);
        const int G = Gs[h_rng_next(&rng) % (unsigned)nG];
        const int Hq = Hkv * G;
        const int B = Bs[h_rng_next(&rng) % (unsigned)nB];
        const int Bv = B ? B : 64;
        if (B) {
            const int strides[3] = {16, Bv / 2, Bv / 4};
            p.block_size = B;
            p.kernel_stride = strides[h_rng_next(&rng) % 3];
            p.kernel_size = 1 + (int)(h_rng_next(&rng) % (3 * (uint64_t)p.kernel_stride));
        }
        p.init_blocks = (int)(h_rng_next(&rng) % 3);
        p.local_blocks = (int)(h_rng_next(&rng) % 4);
        p.topk = h_rng_next(&rng) % 4 ? 1 + (int)(h_rng_next(&rng) % 8) : 1 + (int)(h_rng_next(&rng) % 128);
        p.exact_lse = (int)(h_rng_next(&rng) % 2);
        p.mode = (infllm_mode)(h_rng_next(&rng) % 3);
        /* the params are built as the CPU backend builds them (the same fields for host lengths; the CUDA
         * backend's validation wants a device), then handed to the CUDA sizing functions */
        p.backend = INFLLM_BACKEND_CPU;
        /* to 1M keys: past the decode kernels' limits (786,432 keys; their shared memory on 99 KB parts) */
        const int64_t cap = log_uniform(&rng, 1, 1000000);
        const int64_t nmax = log_uniform(&rng, 1, cap < 2000 ? cap : 2000);
        p.dense_len = h_rng_next(&rng) % 4 == 0 ? -1 : (int)(h_rng_next(&rng) % (uint64_t)(cap + 1));
        snprintf(name, sizeof name, "case%d-%s-d%d-Hq%d-Hkv%d-B%d-k%d/%d-t%d-e%d-m%d-cap%lld-n%lld", ci,
                 dt == INFLLM_DTYPE_BF16 ? "bf16" : "f16", D, Hq, Hkv, Bv, p.kernel_size, p.kernel_stride, p.topk,
                 p.exact_lse, (int)p.mode, (long long)cap, (long long)nmax);

        infllm_attn_params ap;
        infllm_seq *seqs = NULL;
        infllm_status st = infllm_build_single_seq_params(&p, dt, Hq, Hkv, D, nmax, cap, &ap, &seqs);
        CHECK(st == INFLLM_OK, "%s: params refused: %s", name, infllm_last_error());
        size_t ws = 0;
        if (st == INFLLM_OK) {
            st = cuda_cache_workspace_size(&ap, &ws);
            CHECK(st == INFLLM_OK, "%s: workspace query failed: %s", name, infllm_last_error());
        }
        free(seqs);
        if (st != INFLLM_OK) continue;
        /* lengths: the capacity, the shortest that holds nmax queries, two between, and the longest on the
         * decode kernels (their largest need, where a longer capacity switches to the other kernels; it
         * depends on the count only through 1-3 or 4+ queries a CTA) */
        int64_t dmax[2] = {0, 0};
        for (int f = 0; f < 2; f++) {
            infllm_attn_params an;
            infllm_seq *sq = NULL;
            const int64_t nq = f ? (nmax < 4 ? nmax : 4) : 1;
            if (infllm_build_single_seq_params(&p, dt, Hq, Hkv, D, nq, cap, &an, &sq) == INFLLM_OK)
                dmax[f] = cuda_cache_decode_max_len(&an);
            free(sq);
        }
        const int64_t Ls[4] = {cap, nmax, nmax + (cap - nmax) / 3,
                               nmax + (int64_t)(h_uniform(&rng) * (double)(cap - nmax))};
        size_t most = 0;
        int short_n = 0;
        int64_t first_short = -1, first_L = -1;
        size_t first_need = 0;
        for (int64_t n = 1; n <= nmax; n++) {
            for (int li = 0; li < 5; li++) { /* li 4: the longest length on the decode kernels */
                if (li == 4 && dmax[n >= 4] < n) continue;
                const int64_t L = li == 4 ? dmax[n >= 4] : Ls[li] < n ? n : Ls[li];
                const size_t need = attend_need(&p, dt, Hq, Hkv, D, n, L, name);
                pairs++;
                if (need > most) most = need;
                if (need > ws) {
                    if (!short_n) first_short = n, first_L = L, first_need = need;
                    short_n++;
                }
            }
        }
        CHECK(short_n == 0, "%s: workspace %zu bytes, but %d (count, length) pairs need more, first %lld queries at "
              "L %lld: %zu", name, ws, short_n, (long long)first_short, (long long)first_L, first_need);
        CHECK(2 * ws <= 3 * most + 8192, "%s: workspace %zu bytes, more than 1.5x the largest need %zu", name, ws,
              most);
        if (most && (double)ws / (double)most > worst_slack) worst_slack = (double)ws / (double)most;
    }
    printf("test_cuda_ws: %d layouts, %lld (count, length) pairs; the query's largest size / largest need = %.3f\n",
           ncases, pairs, worst_slack);
    return finish("test_cuda_ws");
#endif
}
