/* sample.h: next-token sampling (greedy, temperature, top-k, top-p, repetition penalty). */
#ifndef INFLLM_SAMPLE_H
#define INFLLM_SAMPLE_H

#include <stdint.h>

typedef struct mdl_sampler {
    float temp;           /* 0: greedy */
    int top_k;            /* 0: all */
    float top_p;          /* 1: off */
    float repeat_penalty; /* 1: off (llama.cpp rule: logit>0 ? /p : *p) */
    int repeat_last_n;    /* tokens looked back for the penalty */
    uint64_t rng;
    /* scratch */
    int n_vocab;
    int32_t *idx;
    float *prob;
} mdl_sampler;

/* -1 (mdl_error() says why) unless temp >= 0, top_k >= 0, 0 <= top_p <= 1 and repeat_penalty > 0, all finite */
int mdl_sampler_check(float temp, int top_k, float top_p, float repeat_penalty);
/* mdl_sampler_check, then the buffers for n_vocab tokens; -1 on failure (mdl_sampler_free is still safe) */
int mdl_sampler_init(mdl_sampler *s, int n_vocab, float temp, int top_k, float top_p, float repeat_penalty,
                     uint64_t seed);
void mdl_sampler_free(mdl_sampler *s);
/* Picks a token from logits (modified in place by the penalty). hist: previous tokens. NaN logits are
 * never picked; -1 (mdl_error() says why) when every logit is NaN. */
int32_t mdl_sample(mdl_sampler *s, float *logits, const int32_t *hist, int64_t n_hist);
/* internal (tests/test_sample.c): orders the candidate indices idx[0..n) of logits lg (no NaN among them) best first
 * (higher logit, then lower index) and returns how many lead in that order: the first k where 0 < k < n (the rest
 * of idx is then unspecified), else all n */
int mdl_sample_order(const float *lg, int32_t *idx, int n, int k);

#endif
