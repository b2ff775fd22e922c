/* sample.c: see sample.h. */
#include "sample.h"

#include <math.h>
#include <stdlib.h>

#include "mcommon.h"

int mdl_sampler_check(float temp, int top_k, float top_p, float rp) {
    if (!(temp >= 0.f) || !isfinite(temp)) return mdl_fail("sampling: the temperature %g must be finite and >= 0", (double)temp);
    if (top_k < 0) return mdl_fail("sampling: top-k %d must be >= 0 (0: off)", top_k);
    if (!(top_p >= 0.f && top_p <= 1.f)) return mdl_fail("sampling: top-p %g must be in [0, 1] (1: off)", (double)top_p);
    /* the penalty divides positive logits: 0 would make them infinite, a negative one flip their order */
    if (!(rp > 0.f) || !isfinite(rp))
        return mdl_fail("sampling: the repetition penalty %g must be finite and > 0 (1: off)", (double)rp);
    return 0;
}

int mdl_sampler_init(mdl_sampler *s, int n_vocab, float temp, int top_k, float top_p, float rp, uint64_t seed) {
    s->idx = NULL;
    s->prob = NULL;
    if (mdl_sampler_check(temp, top_k, top_p, rp)) return -1;
    s->temp = temp;
    s->top_k = top_k;
    s->top_p = top_p;
    s->repeat_penalty = rp;
    s->repeat_last_n = 64;
    s->rng = seed ? seed : 0x853c49e6748fea9bULL;
    s->n_vocab = n_vocab;
    s->idx = malloc(sizeof(int32_t) * (size_t)n_vocab);
    s->prob = malloc(sizeof(float) * (size_t)n_vocab);
    if (!s->idx || !s->prob) return mdl_fail("out of memory (sampler)");
    return 0;
}

void mdl_sampler_free(mdl_sampler *s) {
    free(s->idx);
    free(s->prob);
    s->idx = NULL;
    s->prob = NULL;
}

static uint64_t next_u64(uint64_t *st) {
    uint64_t z = (*st += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Candidate a comes before b: higher logit, then lower index (a total order: the candidates hold no NaN). */
static int before(const float *lg, int32_t a, int32_t b) { return lg[a] > lg[b] || (lg[a] == lg[b] && a < b); }

static void sift_down(const float *lg, int32_t *idx, int root, int end) {
    for (int child; (child = 2 * root + 1) < end; root = child) {
        if (child + 1 < end && before(lg, idx[child], idx[child + 1])) child++;
        if (!before(lg, idx[root], idx[child])) return;
        const int32_t t = idx[root];
        idx[root] = idx[child];
        idx[child] = t;
    }
}

/* The best k of idx[0..n) (0 < k <= n), sorted by `before`, into idx[0..k) (the rest of idx then unspecified): a
 * heap of the best k so far whose root is the worst of them, each later candidate that comes before the root
 * replacing it, then the heap sorted; k = n is a plain heap sort of all n. O(n log k): sorting all n candidates to
 * keep the default top-k of 40 over a 49K vocabulary's (flat logits at temperature 0.8 keep thousands) was 15% of a
 * SmolLM2 decode step. A heap sort rather than qsort: qsort's comparator has no context argument, and the logits it
 * read through a global pointer were another thread's when two sessions sampled at once (test_threads: draws
 * changed, and with a smaller vocabulary there a read past its logits). The order is total, so the result is the
 * one a full sort gives. */
static void sort_best(const float *lg, int32_t *idx, int n, int k) {
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(lg, idx, i, k);
    for (int j = k; j < n; j++)
        if (before(lg, idx[j], idx[0])) {
            idx[0] = idx[j];
            sift_down(lg, idx, 0, k);
        }
    for (int end = k - 1; end > 0; end--) {
        const int32_t t = idx[0];
        idx[0] = idx[end];
        idx[end] = t;
        sift_down(lg, idx, 0, end);
    }
}

int mdl_sample_order(const float *lg, int32_t *idx, int n, int k) {
    const int lead = k > 0 && k < n ? k : n;
    sort_best(lg, idx, n, lead);
    return lead;
}

int32_t mdl_sample(mdl_sampler *s, float *lg, const int32_t *hist, int64_t n_hist) {
    int V = s->n_vocab;
    if (s->repeat_penalty != 1.f && hist) {
        int64_t from = n_hist > s->repeat_last_n ? n_hist - s->repeat_last_n : 0;
        for (int64_t i = from; i < n_hist; i++) {
            int32_t t = hist[i];
            if (t < 0 || t >= V) continue;
            /* apply once per distinct token: mark with NaN-free trick via idx scratch */
            int seen = 0;
            for (int64_t j = from; j < i; j++)
                if (hist[j] == t) {
                    seen = 1;
                    break;
                }
            if (seen) continue;
            lg[t] = lg[t] > 0 ? lg[t] / s->repeat_penalty : lg[t] * s->repeat_penalty;
        }
    }
    /* NaN logits are skipped; none but NaN (a broken model or config) is an error, not token 0 */
    int32_t best = -1;
    for (int i = 0; i < V; i++)
        if (lg[i] == lg[i] && (best < 0 || lg[i] > lg[best])) best = i;
    if (best < 0) return mdl_fail("sampling: every logit is NaN (broken weights or config values)");
    if (s->temp <= 0.f) return best;
    /* candidates: tokens within exp(-30) of the best (the rest cannot matter), then top-k */
    float cut = lg[best] - 30.f * s->temp;
    int n = 0;
    for (int i = 0; i < V; i++)
        if (lg[i] >= cut) s->idx[n++] = i;
    n = mdl_sample_order(lg, s->idx, n, s->top_k);
    float mx = lg[s->idx[0]];
    for (int i = 1; i < n; i++)
        if (lg[s->idx[i]] > mx) mx = lg[s->idx[i]];
    double sum = 0;
    for (int i = 0; i < n; i++) {
        s->prob[i] = expf((lg[s->idx[i]] - mx) / s->temp);
        sum += s->prob[i];
    }
    if (s->top_p < 1.f) {
        double acc = 0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            acc += s->prob[i] / sum;
            if (acc >= s->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
        sum = 0;
        for (int i = 0; i < n; i++) sum += s->prob[i];
    }
    double r = (double)(next_u64(&s->rng) >> 11) * (1.0 / 9007199254740992.0) * sum;
    double acc = 0;
    for (int i = 0; i < n; i++) {
        acc += s->prob[i];
        if (r < acc) return s->idx[i];
    }
    return s->idx[n - 1];
}
