/*
 * cpu_stats.h: an internal timing hook of the fast CPU path, for `infllm bench`.
 * cpu_attn_stats_set(s) makes every later cpu_attention / cpu_dense_attn / cpu_sparse_attn
 * call on any thread ADD its stage times to *s (NULL stops). Not thread-safe across
 * concurrent calls; the bench calls one op at a time.
 */
#ifndef INFLLM_CPU_STATS_H
#define INFLLM_CPU_STATS_H

#include <stddef.h>

typedef struct cpu_attn_stats {
    double compress_ms;   /* key compression (c1, c2) */
    double stage1_ms;     /* packing c1/c2, fused stage-1 scores + group sum + max-pool + top-k */
    double stage2_ms;     /* block-sparse attention (incl. lazy K/V packing) */
    double dense_ms;      /* dense attention (sequences on the dense path, or cpu_dense_attn) */
    double total_ms;      /* whole call */
    size_t work_peak;     /* peak bytes of library-allocated working memory during the call */
    long long stage1_tokens; /* query tokens that ran stage 1 (the others select all causal blocks) */
} cpu_attn_stats;

void cpu_attn_stats_set(cpu_attn_stats *s);

#endif
