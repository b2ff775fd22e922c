/* model.h: Llama-architecture transformers (llama, minicpm, qwen2, qwen3, phi3, mistral) from a GGUF file or a
 * Hugging Face safetensors folder, with attention through the InfLLM-V2 decode cache
 * (infllm_cache_*: one cache per layer, dense/sparse switch by the caller's params). */
#ifndef INFLLM_MODEL_H
#define INFLLM_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "infllm.h"
#include "quant.h"

typedef struct mdl_weight {
    uint32_t type;        /* enum ggml_type (F32/F16/BF16 for safetensors) */
    const void *data;
    int64_t cols, rows;   /* [rows][cols], cols contiguous */
} mdl_weight;

typedef struct mdl_layer {
    const float *attn_norm, *ffn_norm;
    mdl_weight wq, wk, wv, wo, wgate, wup, wdown;
    const float *bq, *bk, *bv;  /* optional biases (qwen2-style), NULL when absent */
    const float *q_norm, *k_norm; /* per-head RMSNorm of q / k before RoPE, [head_dim] (qwen3), or NULL */
    int32_t window;             /* this layer's sliding key window (query - key < window; infllm_params.window), 0:
                                   full causal attention */
} mdl_layer;

typedef struct mdl_config {
    char arch[32];             /* "llama", "minicpm", "qwen2", "qwen3", "phi3", "mistral" (HF only) */
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    int ctx_train;
    float rope_theta, rms_eps;
    int rope_interleaved;      /* 1: pairs (2i, 2i+1) (GGUF llama weights); 0: (i, i+d/2) (HF) */
    float embed_scale, residual_scale, logit_scale; /* minicpm muP: x*, branch*, logits/ */
    const float *rope_factors_long, *rope_factors_short; /* [head_dim/2] or NULL */
    const float *rope_freqs;   /* [head_dim/2] frequency divisors at every context length (GGUF rope_freqs.weight,
                                  llama3-style scaling; llama.cpp prefers them to the LongRoPE pair), or NULL */
    float rope_freq_scale;     /* positions are multiplied by this before the rotation (linear RoPE scaling:
                                  1 / factor), 1 otherwise */
    int rope_orig_ctx;         /* LongRoPE original context (0: none) */
    float rope_attn_factor;    /* cos/sin multiplier (LongRoPE), 1 otherwise */
    int64_t sliding_window;    /* the model's attention window in tokens (query - key < it; Mistral / Phi-3 / Qwen2
                                  configs), 0: none; the layers that use it have it as their mdl_layer.window */
    int has_sparse_config;     /* HF config carried sparse_config */
    infllm_params sparse;      /* InfLLM-V2 params from the config (SPEC B 11.1 defaults) */
} mdl_config;

typedef struct mdl_model {
    mdl_config cfg;
    mdl_weight tok_embd, output;
    const float *output_norm;
    mdl_layer *layers;
    /* sources */
    struct gguf_file *gguf;
    struct st_model *st;
    void *owned;               /* float copies (norm vectors from 16-bit checkpoints) */
    size_t weight_bytes;
    char path[1024];
    int is_gguf;
} mdl_model;

/* Loads a GGUF file (any name) or a HF folder (config.json + *.safetensors). NULL on failure
 * (mdl_error()). */
mdl_model *mdl_load(const char *path);
void mdl_free(mdl_model *m);

typedef struct mdl_session {
    const mdl_model *m;
    infllm_params p;           /* attention params (mode, dense_len, topk, ...) */
    infllm_dtype kv_dtype;
    int64_t ctx;               /* cache capacity in tokens */
    int chunk;                 /* prefill chunk (tokens) */
    int nthreads;
    infllm_cache **caches;     /* [n_layer] */
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2, *tmp; /* [chunk][...] */
    void *kvconv;              /* K/V converted to the cache dtype */
    uint16_t **vt;             /* dense f16 sessions: per layer V transposed [Hkv][D][vt_cap] (llama.cpp's
                                  layout; zero-initialised), for the ggmlc attention's P.V */
    int64_t vt_cap;
    float *rope_ff;            /* [head_dim/2] LongRoPE frequency factors (1 when absent) */
    int64_t pos;               /* tokens in the caches */
    double t_attn;             /* seconds spent in attention (stats) */
    quant_scratch qs;          /* quantized activations of the weight products (per session, so that
                                  sessions may run on different threads) */
    void (*progress)(void *ud, int64_t done, int64_t total);
    void *progress_ud;
    /* Optional observer of the attention inputs (NULL: none): called for every layer of every
     * chunk, after the biases and RoPE and before attention, with the chunk's n rows at
     * positions pos..pos+n-1 as f32: q [n][n_head][head_dim], k and v [n][n_head_kv][head_dim]
     * (q unscaled; the values the KV cache receives, before any conversion to its dtype). A
     * non-zero return stops the forward pass, which then fails with the layer in its message
     * and leaves the caches at the length they had before the chunk. */
    int (*qkv_hook)(void *ud, int layer, int64_t pos, int n, const float *q, const float *k, const float *v);
    void *qkv_ud;
} mdl_session;

/* Bytes the caches and buffers of a session will take (estimate before creating it). */
size_t mdl_session_bytes(const mdl_model *m, int64_t ctx, int chunk, infllm_dtype kv_dtype);
/* Creates the caches (ctx tokens per layer). Returns NULL on failure (mdl_error()). */
mdl_session *mdl_session_new(const mdl_model *m, const infllm_params *p, int64_t ctx, int chunk,
                             infllm_dtype kv_dtype, int nthreads);
void mdl_session_free(mdl_session *s);
/* Drops the cache back to n tokens. */
int mdl_session_truncate(mdl_session *s, int64_t n);

/* Appends n rows of K / V (cache dtype, [n][n_head_kv][head_dim]) at position pos (the cache's length) to layer's
 * cache, as the forward would have (mdl_session_load's way in). 0 or -1. The caller advances s->pos once every layer
 * has them. */
int mdl_session_put_kv(mdl_session *s, int layer, int64_t pos, const void *k, const void *v, int64_t n);

/* Prompt caches: a session's state after a prompt (the tokens fed and every layer's K / V) in a file, so that a
 * later run whose prompt starts with the same tokens skips their prefill (src/model/mstate.c has the layout). The
 * file also holds what decides those K / V: the model (its configuration and samples of every weight), the KV
 * dtype, the attention parameters (a layer's K / V depend on the attention output of the layers before it) and the
 * RoPE factors the context picked (LongRoPE); a load with any of them different is refused.
 * mdl_session_save: the session's s->pos tokens (tokens[0..s->pos)) to path, through a temporary file renamed over
 * it. 0 or -1 (mdl_error()). */
int mdl_session_save(const mdl_session *s, const int32_t *tokens, const char *path);
/* Into an empty session: the K / V of the longest common prefix of the file's tokens and tokens[0..n), at most
 * n - 1 of them (the caller's forward of the rest gives the last token's logits); *used: how many, *held: how many
 * the file holds. On failure the session is left empty. 0 or -1 (mdl_error()). */
int mdl_session_load(mdl_session *s, const char *path, const int32_t *tokens, int64_t n, int64_t *used,
                     int64_t *held);
/* 0: path does not exist; 1: a regular file that starts as a prompt cache; -1: anything else (mdl_error() says) */
int mdl_state_file_kind(const char *path);

/* Feeds n tokens (chunked prefill when n > 1). logits: NULL, or [n_vocab] for the last token
 * (all_logits == 0) or [n][n_vocab] (all_logits != 0). Returns 0 or -1 (mdl_error()). */
int mdl_forward(mdl_session *s, const int32_t *tokens, int64_t n, float *logits, int all_logits);

#endif
