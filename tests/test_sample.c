/* test_sample.c: the sampler's candidate order (src/model/sample.c, mdl_sample_order): with top-k, the best k by a
 * bounded heap; without, the whole sort. Both against a plain reference: qsort by (logit descending, index
 * ascending), on logits with many exact ties (a few distinct values), distinct ones, and every k from 0 past n. Then
 * mdl_sample's draws with top-k against the draws of a reference sampler that sorts all candidates (the same
 * RNG stream, the rule of sample.c), so that the heap changes no token. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "sample.h"

static const float *g_lg; /* the reference comparator's logits (this test is single-threaded) */
static int ref_cmp(const void *a, const void *b) {
    const int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (g_lg[i] != g_lg[j]) return g_lg[i] > g_lg[j] ? -1 : 1;
    return i < j ? -1 : i > j;
}

static uint64_t rng = 12345;
static uint32_t next32(void) {
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng >> 33);
}

/* the sampler's draw from candidates already ordered (sample.c's rule after the order): softmax at temp over the
 * first n, top-p cut, one uniform draw from st */
static uint64_t split_next(uint64_t *st) {
    uint64_t z = (*st += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static int32_t ref_draw(const float *lg, const int32_t *idx, int n, float temp, float top_p, uint64_t *st, float *prob) {
    float mx = lg[idx[0]];
    double sum = 0;
    for (int i = 0; i < n; i++) {
        prob[i] = expf((lg[idx[i]] - mx) / temp);
        sum += prob[i];
    }
    if (top_p < 1.f) {
        double acc = 0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            acc += prob[i] / sum;
            if (acc >= top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
        sum = 0;
        for (int i = 0; i < n; i++) sum += prob[i];
    }
    double r = (double)(split_next(st) >> 11) * (1.0 / 9007199254740992.0) * sum, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += prob[i];
        if (r < acc) return idx[i];
    }
    return idx[n - 1];
}

int main(void) {
    enum { NMAX = 3000 };
    float *lg = malloc(sizeof(float) * NMAX);
    int32_t *idx = malloc(sizeof(int32_t) * NMAX), *ref = malloc(sizeof(int32_t) * NMAX);
    if (!lg || !idx || !ref) return 1;
    /* the order: sizes 1..NMAX, tie-heavy and distinct logits, k in {0, 1, 2, 3, 40, n - 1, n, n + 5, random} */
    const int sizes[] = {1, 2, 3, 5, 17, 64, 257, 1000, NMAX};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        const int n = sizes[si];
        for (int ties = 0; ties < 2; ties++) {
            for (int i = 0; i < n; i++)
                lg[i] = ties ? (float)(int)(next32() % 5) - 2.f : (float)((int)(next32() % 2000001) - 1000000) * 1e-4f;
            const int ks[] = {0, 1, 2, 3, 40, n - 1, n, n + 5, 1 + (int)(next32() % (uint32_t)n)};
            for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
                const int k = ks[ki];
                /* candidates in a shuffled order (the sampler takes them in index order; any order must do) */
                for (int i = 0; i < n; i++) idx[i] = ref[i] = i;
                for (int i = n - 1; i > 0; i--) {
                    const int j = (int)(next32() % (uint32_t)(i + 1));
                    const int32_t t = idx[i];
                    idx[i] = idx[j];
                    idx[j] = t;
                }
                g_lg = lg;
                qsort(ref, (size_t)n, sizeof *ref, ref_cmp);
                const int lead = mdl_sample_order(lg, idx, n, k), want = k > 0 && k < n ? k : n;
                CHECK(lead == want, "n %d k %d ties %d: %d lead, want %d", n, k, ties, lead, want);
                CHECK(memcmp(idx, ref, sizeof *idx * (size_t)(lead < want ? lead : want)) == 0,
                      "n %d k %d ties %d: the leading candidates differ from the sorted reference", n, k, ties);
            }
        }
    }
    /* draws: a 20,000-token vocabulary with tied and distinct logits, top-k 40 (and 1, 5000) at temperatures 0.8 / 2,
     * top-p 0.95 / 1, 200 draws each: mdl_sample's tokens equal the reference sampler's on the same RNG stream */
    enum { V = 20000, DRAWS = 200 };
    float *lgv = malloc(sizeof(float) * V), *lgc = malloc(sizeof(float) * V), *pv = malloc(sizeof(float) * V);
    int32_t *iv = malloc(sizeof(int32_t) * V);
    if (!lgv || !lgc || !pv || !iv) return 1;
    for (int i = 0; i < V; i++) lgv[i] = i % 7 == 0 ? 3.f : (float)((int)(next32() % 200001) - 100000) * 1e-4f;
    const int topks[] = {40, 1, 5000};
    const float temps[] = {0.8f, 2.f}, topps[] = {0.95f, 1.f};
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 2; b++)
            for (int c = 0; c < 2; c++) {
                mdl_sampler s;
                CHECK(mdl_sampler_init(&s, V, temps[b], topks[a], topps[c], 1.f, 99) == 0, "sampler init");
                uint64_t st = 99;
                int same = 0;
                for (int d = 0; d < DRAWS; d++) {
                    memcpy(lgc, lgv, sizeof(float) * V);
                    const int32_t got = mdl_sample(&s, lgc, NULL, 0);
                    /* the reference: every candidate within 30 temp of the best, all sorted, the first top-k */
                    float best = lgv[0];
                    for (int i = 1; i < V; i++)
                        if (lgv[i] > best) best = lgv[i];
                    int n = 0;
                    for (int i = 0; i < V; i++)
                        if (lgv[i] >= best - 30.f * temps[b]) iv[n++] = i;
                    g_lg = lgv;
                    qsort(iv, (size_t)n, sizeof *iv, ref_cmp);
                    if (topks[a] < n) n = topks[a];
                    same += got == ref_draw(lgv, iv, n, temps[b], topps[c], &st, pv);
                }
                CHECK(same == DRAWS, "top-k %d temp %g top-p %g: %d of %d draws equal the reference sampler's",
                      topks[a], (double)temps[b], (double)topps[c], same, DRAWS);
                mdl_sampler_free(&s);
            }
    free(lg); free(idx); free(ref); free(lgv); free(lgc); free(pv); free(iv);
    return finish("test_sample");
}
