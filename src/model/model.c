/* model.c: loading (GGUF / HF safetensors) and the transformer forward pass (model.h). */
#include "model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "ggmlc.h"
#include "gguf.h"
#include "json.h"
#include "mcommon.h"
#include "portable.h"
#include "quant.h"
#include "safetensors.h"

/* ------------------------------------------------------------ owned floats -- */
typedef struct owned_buf {
    struct owned_buf *next;
    float data[];
} owned_buf;

static float *own_floats(mdl_model *m, size_t n) {
    owned_buf *b = malloc(sizeof *b + n * sizeof(float));
    if (!b) return NULL;
    b->next = (owned_buf *)m->owned;
    m->owned = b;
    return b->data;
}

void mdl_free(mdl_model *m) {
    if (!m) return;
    owned_buf *b = (owned_buf *)m->owned;
    while (b) {
        owned_buf *n = b->next;
        free(b);
        b = n;
    }
    free(m->layers);
    if (m->gguf) gguf_close(m->gguf);
    if (m->st) st_close(m->st);
    free(m);
}

/* ------------------------------------------------------------------ GGUF ---- */
static int g_weight(mdl_model *m, const char *name, int64_t cols, int64_t rows, mdl_weight *w, int optional) {
    const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
    if (!t) {
        if (optional) {
            memset(w, 0, sizeof *w);
            return 0;
        }
        return mdl_fail("model: tensor '%s' is missing", name);
    }
    if (t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != 1 || t->ne[3] != 1)
        return mdl_fail("model: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", name, (long long)t->ne[0],
                        (long long)t->ne[1], (long long)cols, (long long)rows);
    if (!quant_supported(t->type))
        return mdl_fail("model: tensor '%s' has type %s, which is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1, "
                        "Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS are)", name, ggml_type_name(t->type));
    if (ggml_block_size(t->type) > 1 && cols % ggml_block_size(t->type))
        return mdl_fail("model: tensor '%s' row length %lld is not a multiple of its block", name, (long long)cols);
    w->type = t->type;
    w->data = t->data;
    w->cols = cols;
    w->rows = rows;
    m->weight_bytes += t->nbytes;
    return 0;
}

/* a 1-D float vector of n values (converted when stored as F16/BF16) */
static int g_vec(mdl_model *m, const char *name, int64_t n, const float **out, int optional) {
    const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
    *out = NULL;
    if (!t) return optional ? 0 : mdl_fail("model: tensor '%s' is missing", name);
    if (t->ne[0] != n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1)
        return mdl_fail("model: tensor '%s' has %lld values, expected %lld", name, (long long)t->ne[0], (long long)n);
    if (t->type == GGML_F32 && ((uintptr_t)t->data % 4) == 0) {
        *out = (const float *)t->data;
    } else if (t->type == GGML_F32 || t->type == GGML_F16 || t->type == GGML_BF16) {
        float *f = own_floats(m, (size_t)n);
        if (!f) return mdl_fail("out of memory");
        quant_dequant_row(t->type, t->data, f, n);
        *out = f;
    } else {
        return mdl_fail("model: tensor '%s' must be F32/F16/BF16 (is %s)", name, ggml_type_name(t->type));
    }
    m->weight_bytes += t->nbytes;
    return 0;
}

/* the architectures this runtime builds (GGUF general.architecture / HF model_type). Mistral's GGUF files say
 * "llama" (llama.cpp's converter), so "mistral" is a model_type only */
static int arch_is_qwen(const char *a) { return !strcmp(a, "qwen2") || !strcmp(a, "qwen3"); }
static int arch_is_phi3(const char *a) { return !strcmp(a, "phi3"); }
static int arch_supported(const char *a, int hf) {
    return !strcmp(a, "llama") || !strcmp(a, "minicpm") || arch_is_qwen(a) || arch_is_phi3(a) ||
           (hf && !strcmp(a, "mistral"));
}

/* rows [r0, r0 + n) of a weight: a fused matrix's part (Phi-3's qkv_proj / attn_qkv, gate_up_proj / ffn_up), a
 * weight of its own to the products (rows are independent in every storage type) */
static mdl_weight weight_rows(const mdl_weight *w, int64_t r0, int64_t n) {
    mdl_weight v = *w;
    v.data = (const char *)w->data + (size_t)r0 * ggml_row_size(w->type, w->cols);
    v.rows = n;
    return v;
}

/* a layer's q, k, v from one matrix of rows q, k, v (attn_qkv, qkv_proj: q_dim and kv_dim rows) */
static void split_qkv(mdl_layer *L, const mdl_weight *qkv, int64_t q_dim, int64_t kv_dim) {
    L->wq = weight_rows(qkv, 0, q_dim);
    L->wk = weight_rows(qkv, q_dim, kv_dim);
    L->wv = weight_rows(qkv, q_dim + kv_dim, kv_dim);
}

/* a layer's MLP gate and up from one matrix of 2 n_ff rows, gate first (llama.cpp's SWIGLU split, transformers'
 * gate_up_proj.chunk(2)) */
static void split_gate_up(mdl_layer *L, const mdl_weight *gate_up, int64_t n_ff) {
    L->wgate = weight_rows(gate_up, 0, n_ff);
    L->wup = weight_rows(gate_up, n_ff, n_ff);
}

/* A layer's infllm_params.window for a model window of w tokens (0: none): past INT32_MAX positions no context
 * reaches, so the window changes nothing there */
static int32_t window_of(int64_t w) { return w > 0 && w < INT32_MAX ? (int32_t)w : 0; }

static int load_gguf(mdl_model *m, const char *path) {
    m->gguf = gguf_open(path);
    if (!m->gguf) return -1;
    gguf_file *g = m->gguf;
    mdl_config *c = &m->cfg;
    if (gguf_get_str(g, "general.architecture", c->arch, sizeof c->arch))
        return mdl_fail("model: general.architecture is missing");
    if (!arch_supported(c->arch, 0))
        return mdl_fail("model: architecture '%s' is not supported (llama, minicpm, qwen2, qwen3, phi3 are)", c->arch);
    char k[128];
#define KEY(s) (snprintf(k, sizeof k, "%s." s, c->arch), k)
    c->n_layer = mdl_sat_i32(gguf_get_int(g, KEY("block_count"), 0));
    c->n_embd = mdl_sat_i32(gguf_get_int(g, KEY("embedding_length"), 0));
    c->n_ff = mdl_sat_i32(gguf_get_int(g, KEY("feed_forward_length"), 0));
    c->n_head = mdl_sat_i32(gguf_get_int(g, KEY("attention.head_count"), 0));
    c->n_head_kv = mdl_sat_i32(gguf_get_int(g, KEY("attention.head_count_kv"), c->n_head));
    c->ctx_train = mdl_sat_i32(gguf_get_int(g, KEY("context_length"), 4096));
    c->rope_theta = (float)gguf_get_float(g, KEY("rope.freq_base"), 10000.0);
    c->rms_eps = (float)gguf_get_float(g, KEY("attention.layer_norm_rms_epsilon"), 1e-5);
    c->embed_scale = (float)gguf_get_float(g, KEY("embedding_scale"), 1.0);
    c->residual_scale = (float)gguf_get_float(g, KEY("residual_scale"), 1.0);
    c->logit_scale = (float)gguf_get_float(g, KEY("logit_scale"), 1.0);
    c->rope_orig_ctx = mdl_sat_i32(gguf_get_int(g, KEY("rope.scaling.original_context_length"), 0));
    c->rope_attn_factor = (float)gguf_get_float(g, KEY("rope.scaling.attn_factor"), 1.0);
    /* Phi-3's sliding window (the converter writes config.json's, 0 for none), every layer's. llama.cpp ignores it
     * and runs full attention past it; this runtime runs what the model defines, as transformers does */
    if (arch_is_phi3(c->arch)) {
        const int64_t w = gguf_get_int(g, KEY("attention.sliding_window"), 0);
        if (w < 0) return mdl_fail("model: %s.attention.sliding_window %lld must be >= 0", c->arch, (long long)w);
        c->sliding_window = w;
    }
    if (c->n_layer < 1 || c->n_layer > 4096 || c->n_embd < 1 || c->n_embd > (1 << 20) || c->n_head < 1 ||
        c->n_head_kv < 1 || c->n_head % c->n_head_kv || c->n_ff < 1 || c->n_ff > (1 << 22))
        return mdl_fail("model: bad hyper-parameters (layers %d, embd %d, heads %d/%d, ff %d)", c->n_layer, c->n_embd,
                        c->n_head, c->n_head_kv, c->n_ff);
    c->head_dim = mdl_sat_i32(gguf_get_int(g, KEY("attention.key_length"), c->n_embd / c->n_head));
    int rope_dim = mdl_sat_i32(gguf_get_int(g, KEY("rope.dimension_count"), c->head_dim));
    if (c->head_dim < 2 || c->head_dim > 1024 || c->head_dim % 2)
        return mdl_fail("model: bad head_dim %d", c->head_dim);
    if (rope_dim != c->head_dim) return mdl_fail("model: partial rotary (%d of %d) is not supported", rope_dim, c->head_dim);
#undef KEY
    /* llama.cpp's rope types: LLAMA (pairs 2i, 2i+1; its converter permutes Q/K rows) for llama and
     * minicpm, NEOX (i, i + d/2; rows as in the checkpoint) for qwen2, qwen3 and phi3 */
    c->rope_interleaved = !arch_is_qwen(c->arch) && !arch_is_phi3(c->arch);
    const gguf_tensor *te = gguf_find_tensor(g, "token_embd.weight");
    if (!te) return mdl_fail("model: tensor 'token_embd.weight' is missing");
    c->n_vocab = (int)te->ne[1];
    int64_t E = c->n_embd, Q = (int64_t)c->n_head * c->head_dim, KV = (int64_t)c->n_head_kv * c->head_dim;
    if (g_weight(m, "token_embd.weight", E, c->n_vocab, &m->tok_embd, 0)) return -1;
    if (g_weight(m, "output.weight", E, c->n_vocab, &m->output, 1)) return -1;
    if (!m->output.data) m->output = m->tok_embd;
    if (g_vec(m, "output_norm.weight", E, &m->output_norm, 0)) return -1;
    if (g_vec(m, "rope_factors_long.weight", c->head_dim / 2, &c->rope_factors_long, 1)) return -1;
    if (g_vec(m, "rope_factors_short.weight", c->head_dim / 2, &c->rope_factors_short, 1)) return -1;
    if (g_vec(m, "rope_freqs.weight", c->head_dim / 2, &c->rope_freqs, 1)) return -1;
    /* RoPE scaling as llama.cpp reads it: the type defaults to linear, whose factor (rope.scaling.factor, or the
     * older rope.scale_linear) divides the positions; "none" ignores the factor; YaRN is not implemented, so it
     * is refused rather than run unscaled */
    {
        char stype[32] = "linear";
        snprintf(k, sizeof k, "%s.rope.scaling.type", c->arch);
        const gguf_kv *tkv = gguf_find(g, k);
        if (tkv && gguf_get_str(g, k, stype, sizeof stype))
            return mdl_fail("model: %s must be a string", k);
        snprintf(k, sizeof k, "%s.rope.scaling.factor", c->arch);
        double factor = gguf_get_float(g, k, 0.0);
        if (factor == 0.0) {
            snprintf(k, sizeof k, "%s.rope.scale_linear", c->arch);
            factor = gguf_get_float(g, k, 0.0);
        }
        if (!strcmp(stype, "none")) {
            c->rope_freq_scale = 1.f;
        } else if (!strcmp(stype, "linear") || !strcmp(stype, "longrope")) {
            /* llama.cpp's converter marks a LlamaForCausalLM checkpoint with longrope scaling as longrope but writes
             * its factors only for Phi-3 / MiniCPM: such a file would run unscaled (hf_check.py: 1.1 relative off
             * transformers), so it is refused */
            if (!strcmp(stype, "longrope") && !c->rope_factors_long && !c->rope_factors_short)
                return mdl_fail("model: %s.rope.scaling.type is longrope but the file has no rope_factors_long / "
                                "rope_factors_short tensors (it would run unscaled)", c->arch);
            if (!(factor >= 0) || !isfinite(factor))
                return mdl_fail("model: RoPE scaling factor %g must be finite and >= 0", factor);
            c->rope_freq_scale = factor == 0.0 ? 1.f : (float)(1.0 / factor);
        } else {
            return mdl_fail("model: RoPE scaling type '%s' is not supported (none, linear and longrope are)", stype);
        }
    }
    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->layers) return mdl_fail("out of memory");
    for (int l = 0; l < c->n_layer; l++) {
        mdl_layer *L = &m->layers[l];
        L->window = window_of(c->sliding_window);
        char n[96];
#define T(s) (snprintf(n, sizeof n, "blk.%d." s, l), n)
        /* q, k, v as one matrix (attn_qkv: Phi-3's, rows q then k then v) or three; the MLP's gate and up as one
         * (ffn_up of 2 n_ff rows without ffn_gate: Phi-3's, gate first, as llama.cpp's SWIGLU split) or two */
        const int fused_qkv = gguf_find_tensor(g, T("attn_qkv.weight")) != NULL;
        const gguf_tensor *up = gguf_find_tensor(g, T("ffn_up.weight"));
        const int fused_up = !gguf_find_tensor(g, T("ffn_gate.weight")) && up && up->ne[1] == 2 * (int64_t)c->n_ff;
        if (fused_qkv && gguf_find_tensor(g, T("attn_q.weight")))
            return mdl_fail("model: layer %d has both attn_qkv and attn_q tensors", l);
        mdl_weight qkv, gate_up;
        if (fused_qkv) {
            if (g_weight(m, T("attn_qkv.weight"), E, Q + 2 * KV, &qkv, 0)) return -1;
            split_qkv(L, &qkv, Q, KV);
        } else if (g_weight(m, T("attn_q.weight"), E, Q, &L->wq, 0) || g_weight(m, T("attn_k.weight"), E, KV, &L->wk, 0) ||
                   g_weight(m, T("attn_v.weight"), E, KV, &L->wv, 0)) {
            return -1;
        }
        if (fused_up) {
            if (g_weight(m, T("ffn_up.weight"), E, 2 * (int64_t)c->n_ff, &gate_up, 0)) return -1;
            split_gate_up(L, &gate_up, c->n_ff);
        } else if (g_weight(m, T("ffn_gate.weight"), E, c->n_ff, &L->wgate, 0) ||
                   g_weight(m, T("ffn_up.weight"), E, c->n_ff, &L->wup, 0)) {
            return -1;
        }
        if (g_vec(m, T("attn_norm.weight"), E, &L->attn_norm, 0) || g_vec(m, T("ffn_norm.weight"), E, &L->ffn_norm, 0) ||
            g_weight(m, T("attn_output.weight"), Q, E, &L->wo, 0) ||
            g_weight(m, T("ffn_down.weight"), c->n_ff, E, &L->wdown, 0) ||
            g_vec(m, T("attn_q.bias"), Q, &L->bq, 1) || g_vec(m, T("attn_k.bias"), KV, &L->bk, 1) ||
            g_vec(m, T("attn_v.bias"), KV, &L->bv, 1) ||
            g_vec(m, T("attn_q_norm.weight"), c->head_dim, &L->q_norm, strcmp(c->arch, "qwen3") != 0) ||
            g_vec(m, T("attn_k_norm.weight"), c->head_dim, &L->k_norm, strcmp(c->arch, "qwen3") != 0))
            return -1;
        /* tensors llama.cpp adds to these layers that this forward does not apply: refused rather than
         * silently dropped (the logits would be wrong) */
        static const char *const unapplied[] = {"attn_output.bias", "ffn_gate.bias", "ffn_up.bias", "ffn_down.bias",
                                                "attn_qkv.bias"};
        for (size_t i = 0; i < sizeof unapplied / sizeof *unapplied; i++) {
            snprintf(n, sizeof n, "blk.%d.%s", l, unapplied[i]);
            if (gguf_find_tensor(g, n)) return mdl_fail("model: tensor '%s' is not supported (it would be ignored)", n);
        }
#undef T
    }
    if (gguf_find_tensor(g, "output.bias")) return mdl_fail("model: tensor 'output.bias' is not supported (it would be ignored)");
    infllm_params_default(&c->sparse);
    m->is_gguf = 1;
    return 0;
}

/* ------------------------------------------------------- HF safetensors ---- */
static uint32_t st_type(st_dtype d) { return d == ST_F32 ? GGML_F32 : d == ST_F16 ? GGML_F16 : GGML_BF16; }

static int s_weight(mdl_model *m, const char *name, int64_t cols, int64_t rows, mdl_weight *w, int optional) {
    const st_tensor *t = st_find(m->st, name);
    if (!t) {
        if (optional) {
            memset(w, 0, sizeof *w);
            return 0;
        }
        return mdl_fail("model: tensor '%s' is missing", name);
    }
    if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
        return mdl_fail("model: tensor '%s' has the wrong shape (expected [%lld, %lld])", name, (long long)rows,
                        (long long)cols);
    w->type = st_type(t->dtype);
    w->data = t->data;
    w->cols = cols;
    w->rows = rows;
    m->weight_bytes += t->nbytes;
    return 0;
}
static int s_vec(mdl_model *m, const char *name, int64_t n, const float **out, int optional) {
    const st_tensor *t = st_find(m->st, name);
    *out = NULL;
    if (!t) return optional ? 0 : mdl_fail("model: tensor '%s' is missing", name);
    if (t->numel != n) return mdl_fail("model: tensor '%s' has %lld values, expected %lld", name, (long long)t->numel, (long long)n);
    float *f = own_floats(m, (size_t)n);
    if (!f) return mdl_fail("out of memory");
    st_to_f32(t, f);
    *out = f;
    m->weight_bytes += t->nbytes;
    return 0;
}
/* <section><key> (section "rope_scaling." or "rope_parameters."): an array of n numbers > 0 (LongRoPE divides the
 * inverse frequencies by them) */
static int json_floats(mdl_model *m, const char *path, const json_value *rs, const char *section, const char *key, int n,
                       const float **out) {
    const json_value *arr = json_get(rs, key);
    if (!arr || !json_is(arr, JSON_ARRAY) || (int)json_len(arr) != n)
        return mdl_fail("%s: %s%s must be an array of %d numbers (head_dim / 2)", path, section, key, n);
    float *f = own_floats(m, (size_t)n);
    if (!f) return mdl_fail("out of memory");
    for (int i = 0; i < n; i++) {
        double v;
        if (!json_num(json_index(arr, (size_t)i), &v) || !(v > 0) || !isfinite((float)v))
            return mdl_fail("%s: %s%s[%d] is not a finite number > 0", path, section, key, i);
        f[i] = (float)v;
    }
    *out = f;
    return 0;
}

/* config.json values. An absent key, or JSON null where HF writes it ("head_dim": null, "rope_scaling": null), takes
 * the default; a present value of another type is refused with a message naming the key (section: "" at the top
 * level, "rope_scaling." / "sparse_config." inside those), where it used to fall back to the default silently
 * ("rope_theta": "x" ran at 10000). Integers may be written as integral numbers (4096.0). 0 or -1 (mdl_fail). */
static const json_value *cfg_value(const json_value *obj, const char *key) {
    const json_value *v = json_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

static int cfg_type_error(const char *file, const char *section, const char *key, const char *want,
                          const json_value *v) {
    return mdl_fail("%s: %s%s must be %s (got %s)", file, section, key, want,
                    v->type == JSON_NUMBER && !json_int(v, NULL) ? "a fractional or too large number"
                                                                   : json_type_name(v->type));
}

static int cfg_num(const char *file, const json_value *obj, const char *section, const char *key, double dflt,
                   double *out) {
    const json_value *v = cfg_value(obj, key);
    *out = dflt;
    if (v && !json_num(v, out)) return cfg_type_error(file, section, key, "a number", v);
    return 0;
}

static int cfg_int(const char *file, const json_value *obj, const char *section, const char *key, int64_t dflt,
                   int64_t *out) {
    const json_value *v = cfg_value(obj, key);
    *out = dflt;
    if (!v || json_int(v, out)) return 0;
    if (v->type == JSON_NUMBER && v->num == trunc(v->num) && fabs(v->num) < 9.2e18) { /* 4096.0 */
        *out = (int64_t)v->num;
        return 0;
    }
    return cfg_type_error(file, section, key, "an integer", v);
}

/* an int32 field: cfg_int saturated to int32 (out-of-range values are caught by the range checks after) */
static int cfg_i32(const char *file, const json_value *obj, const char *section, const char *key, int64_t dflt,
                   int *out) {
    int64_t x;
    if (cfg_int(file, obj, section, key, dflt, &x)) return -1;
    *out = mdl_sat_i32(x);
    return 0;
}

static int cfg_str(const char *file, const json_value *obj, const char *section, const char *key, const char **out) {
    const json_value *v = cfg_value(obj, key);
    *out = NULL;
    if (v && !(*out = json_str(v, NULL))) return cfg_type_error(file, section, key, "a string", v);
    return 0;
}

static int cfg_bool(const char *file, const json_value *obj, const char *section, const char *key, bool dflt,
                    bool *out) {
    const json_value *v = cfg_value(obj, key);
    *out = dflt;
    if (v && !json_bool(v, out)) return cfg_type_error(file, section, key, "true or false", v);
    return 0;
}

/* a section (rope_scaling, sparse_config): an object, or NULL when absent or null */
static int cfg_object(const char *file, const json_value *obj, const char *key, const json_value **out) {
    const json_value *v = cfg_value(obj, key);
    *out = v;
    if (v && !json_is(v, JSON_OBJECT)) return cfg_type_error(file, "", key, "an object or null", v);
    return 0;
}

/* config.json's RoPE fields, as transformers reads them. 4.x checkpoints have a top-level rope_theta and a
 * rope_scaling object ({rope_type or type, factor, ...}); transformers 5 writes one rope_parameters object that
 * holds rope_theta, rope_type and the scaling fields, and no top-level rope_theta (reading only the 4.x keys ran
 * those checkpoints at theta 10000, unscaled, and YaRN unrefused). The section is rope_scaling when it is a
 * non-empty object, else rope_parameters; its rope_theta comes before the top-level one (10000 without either). */
static int hf_rope(mdl_model *m, const char *p, const json_value *r) {
    mdl_config *c = &m->cfg;
    const json_value *rs, *rp;
    if (cfg_object(p, r, "rope_scaling", &rs) || cfg_object(p, r, "rope_parameters", &rp)) return -1;
    const char *S = "rope_scaling.";
    if (!rs || !json_len(rs)) {
        rs = rp && json_len(rp) ? rp : NULL;
        S = "rope_parameters.";
    }
    double theta;
    if (cfg_num(p, r, "", "rope_theta", 10000.0, &theta) || (rs && cfg_num(p, rs, S, "rope_theta", theta, &theta)))
        return -1;
    c->rope_theta = (float)theta;
    if (!rs) return 0;
    /* transformers 5's per-layer-type form ({"full_attention": {...}, "sliding_attention": {...}}) */
    if (json_get(rs, "full_attention") || json_get(rs, "sliding_attention"))
        return mdl_fail("%s: %.*s holds RoPE parameters per layer type, which are not supported", p,
                        (int)strlen(S) - 1, S);
    const char *rt;
    if (cfg_str(p, rs, S, "rope_type", &rt) || (!rt && cfg_str(p, rs, S, "type", &rt))) return -1;
    if (!rt || !strcmp(rt, "default")) return 0;
    /* Phi3Config renames its early checkpoints' "su" and "yarn" to longrope (their fields are longrope's) */
    if (arch_is_phi3(c->arch) && (!strcmp(rt, "su") || !strcmp(rt, "yarn"))) rt = "longrope";
    /* original_max_position_embeddings (llama3, longrope): transformers 5 takes a top-level value first (Phi-3's
     * layout), then the section's, then max_position_embeddings; 4.x read the section's. Both given and different:
     * the versions disagree, refused */
    const char *OM = "original_max_position_embeddings";
    const int has_top = cfg_value(r, OM) != NULL, has_sec = cfg_value(rs, OM) != NULL;
    int64_t o_top, orig;
    if (cfg_int(p, r, "", OM, arch_is_phi3(c->arch) ? 4096 : c->ctx_train, &o_top) || /* Phi3Config's own default */
        cfg_int(p, rs, S, OM, o_top, &orig))
        return -1;
    if (has_top && has_sec && o_top != orig)
        return mdl_fail("%s: %s %lld and %s%s %lld differ", p, OM, (long long)o_top, S, OM, (long long)orig);
    if (!strcmp(rt, "longrope")) {
        if (json_floats(m, p, rs, S, "long_factor", c->head_dim / 2, &c->rope_factors_long) ||
            json_floats(m, p, rs, S, "short_factor", c->head_dim / 2, &c->rope_factors_short))
            return -1;
        if (orig < 1 || orig > INT32_MAX)
            return mdl_fail("%s: longrope needs original_max_position_embeddings in 1..2^31-1 (got %lld)", p, (long long)orig);
        c->rope_orig_ctx = (int)orig;
        /* the cos/sin factor as transformers' _compute_longrope_parameters: attention_factor when given, else
         * sqrt(1 + ln(factor) / ln(orig)) for factor > 1 (factor when given, else max_position / orig), else 1
         * (the two keys used to be ignored) */
        double factor, attn;
        if (cfg_num(p, rs, S, "factor", (double)c->ctx_train / (double)orig, &factor) ||
            cfg_num(p, rs, S, "attention_factor", 0.0, &attn))
            return -1;
        if (!cfg_value(rs, "attention_factor"))
            attn = factor > 1.0 && orig > 1 ? sqrt(1.0 + log(factor) / log((double)orig)) : 1.0;
        if (!(attn > 0) || !isfinite(attn) || !isfinite(factor))
            return mdl_fail("%s: longrope attention factor %g (factor %g) must be finite and > 0", p, attn, factor);
        c->rope_attn_factor = (float)attn;
    } else if (!strcmp(rt, "linear")) { /* HF divides the positions by the factor */
        double factor;
        if (cfg_num(p, rs, S, "factor", 0.0, &factor)) return -1;
        if (!(factor > 0) || !isfinite(factor)) return mdl_fail("%s: RoPE scaling 'linear' needs a factor > 0", p);
        c->rope_freq_scale = (float)(1.0 / factor);
    } else if (!strcmp(rt, "llama3")) {
        /* Llama 3.1 / 3.2: a divisor a frequency, as transformers' _compute_llama3_parameters scales inv_freq and
         * llama.cpp's converter writes rope_freqs.weight: wavelengths below old_ctx / high_freq_factor keep theirs
         * (1), above old_ctx / low_freq_factor are divided by factor, and the band between blends the two */
        double factor, lo, hi;
        if (cfg_num(p, rs, S, "factor", 0.0, &factor) || cfg_num(p, rs, S, "low_freq_factor", 0.0, &lo) ||
            cfg_num(p, rs, S, "high_freq_factor", 0.0, &hi))
            return -1;
        const double old_ctx = (double)orig;
        if (!(factor > 0) || !isfinite(factor) || !(lo > 0) || !(hi > lo) || !isfinite(hi) || !(old_ctx > 0))
            return mdl_fail("%s: RoPE scaling 'llama3' needs factor > 0, 0 < low_freq_factor < high_freq_factor and "
                            "original_max_position_embeddings > 0", p);
        float *div = own_floats(m, (size_t)(c->head_dim / 2));
        if (!div) return mdl_fail("out of memory");
        const double lo_wavelen = old_ctx / lo, hi_wavelen = old_ctx / hi, PI = 3.14159265358979323846;
        for (int i = 0; i < c->head_dim / 2; i++) {
            const double wavelen = 2.0 * PI * pow((double)c->rope_theta, 2.0 * i / c->head_dim);
            if (wavelen < hi_wavelen) {
                div[i] = 1.f;
            } else if (wavelen > lo_wavelen) {
                div[i] = (float)factor;
            } else {
                const double smooth = (old_ctx / wavelen - lo) / (hi - lo);
                div[i] = (float)(1.0 / ((1.0 - smooth) / factor + smooth));
            }
        }
        c->rope_freqs = div;
    } else {
        return mdl_fail("%s: RoPE scaling type '%s' is not supported (default, linear, llama3 and longrope are)", p, rt);
    }
    return 0;
}

/* config.json fields that make transformers run another model than this forward computes: refused with a message
 * naming them, where they used to be ignored (hf_check.py: a gelu MLP ran as a SiLU one). 0 or -1 (mdl_fail). */
static int hf_refuse_unsupported(const char *p, const json_value *r) {
    const char *act;
    if (cfg_str(p, r, "", "hidden_act", &act)) return -1;
    if (act && strcmp(act, "silu") && strcmp(act, "swish")) /* transformers' ACT2FN: both are SiLU */
        return mdl_fail("%s: hidden_act '%s' is not supported (silu is)", p, act);
    /* partial rotary embeddings (rope over the first head_dim x factor values): not implemented. At the top level or
     * in a RoPE section (transformers 5 moves it there): any value other than 1 is refused */
    double prf = 1.0;
    const char *const secs[] = {"rope_scaling", "rope_parameters"};
    if (cfg_num(p, r, "", "partial_rotary_factor", 1.0, &prf)) return -1;
    for (int i = 0; i < 2; i++) {
        const json_value *sec = cfg_value(r, secs[i]);
        if (sec && json_is(sec, JSON_OBJECT) && cfg_value(sec, "partial_rotary_factor")) {
            char pre[32];
            snprintf(pre, sizeof pre, "%s.", secs[i]);
            double f;
            if (cfg_num(p, sec, pre, "partial_rotary_factor", 1.0, &f)) return -1;
            if (f != 1.0) prf = f;
        }
    }
    if (prf != 1.0) return mdl_fail("%s: partial_rotary_factor %g is not supported (rotary over the whole head is)", p, prf);
    return 0;
}

/* Which layers attend through the sliding window c->sliding_window (mdl_layer.window): every one of Mistral's and
 * Phi-3's; Qwen2 / Qwen3's layer_types "sliding_attention" ones or, without layer_types, those from max_window_layers
 * on (transformers' rule). A sliding_attention layer without a window is refused, as transformers refuses it.
 * 0 or -1 (mdl_fail). */
static int hf_layer_windows(mdl_model *m, const char *p, const json_value *r) {
    const mdl_config *c = &m->cfg;
    const int32_t w = window_of(c->sliding_window);
    if (!arch_is_qwen(c->arch)) {
        for (int l = 0; l < c->n_layer; l++) m->layers[l].window = w;
        return 0;
    }
    const json_value *lt = cfg_value(r, "layer_types");
    if (lt) {
        if (!json_is(lt, JSON_ARRAY)) return cfg_type_error(p, "", "layer_types", "an array of strings", lt);
        if (json_len(lt) != (size_t)c->n_layer)
            return mdl_fail("%s: layer_types has %zu entries for %d layers", p, json_len(lt), c->n_layer);
        for (int l = 0; l < c->n_layer; l++) {
            const char *t = json_str(json_index(lt, (size_t)l), NULL);
            const int sliding = t && !strcmp(t, "sliding_attention");
            if (!t || (!sliding && strcmp(t, "full_attention")))
                return mdl_fail("%s: layer_types[%d] is '%s': full_attention and sliding_attention layers are "
                                "supported",
                                p, l, t ? t : "(not a string)");
            if (sliding && !c->sliding_window)
                return mdl_fail("%s: layer_types[%d] is sliding_attention but the configuration sets no window "
                                "(use_sliding_window false or sliding_window null)",
                                p, l);
            m->layers[l].window = sliding ? w : 0;
        }
        return 0;
    }
    int64_t first;
    if (cfg_int(p, r, "", "max_window_layers", 28, &first)) return -1;
    for (int l = 0; l < c->n_layer; l++) m->layers[l].window = l >= first ? w : 0;
    return 0;
}

static int load_hf(mdl_model *m, const char *dir) {
    char p[1200], err[512];
    snprintf(p, sizeof p, "%s/config.json", dir);
    json_error je;
    json_doc *doc = json_parse_file(p, NULL, &je);
    if (!doc) return mdl_fail("%s: %s", p, json_error_text(&je, err, sizeof err));
    const json_value *r = json_root(doc);
    mdl_config *c = &m->cfg;
    int rc = -1;
    const char *mt;
    if (cfg_str(p, r, "", "model_type", &mt)) goto out;
    if (!mt || !arch_supported(mt, 1)) {
        mdl_fail("%s: model_type '%s' is not supported (llama, mistral, minicpm, qwen2, qwen3, phi3 are)", p,
                 mt ? mt : "(missing)");
        goto out;
    }
    const int phi3 = arch_is_phi3(mt), mistral = !strcmp(mt, "mistral");
    snprintf(c->arch, sizeof c->arch, "%s", mt);
    double rms_eps;
    bool tied; /* tie_word_embeddings: read here so that its type is checked whether or not lm_head is there */
    if (cfg_i32(p, r, "", "hidden_size", 0, &c->n_embd) || cfg_i32(p, r, "", "num_hidden_layers", 0, &c->n_layer) ||
        cfg_i32(p, r, "", "num_attention_heads", 0, &c->n_head) ||
        cfg_i32(p, r, "", "num_key_value_heads", c->n_head, &c->n_head_kv) ||
        cfg_i32(p, r, "", "intermediate_size", 0, &c->n_ff) || cfg_i32(p, r, "", "vocab_size", 0, &c->n_vocab) ||
        cfg_num(p, r, "", "rms_norm_eps", phi3 ? 1e-5 : 1e-6, &rms_eps) || /* the config classes' defaults */
        cfg_i32(p, r, "", "max_position_embeddings", arch_is_qwen(mt) ? 32768 : phi3 ? 4096 : mistral ? 131072 : 2048,
                &c->ctx_train) ||
        cfg_bool(p, r, "", "tie_word_embeddings", true, &tied))
        goto out;
    c->rms_eps = (float)rms_eps;
    if (c->n_layer < 1 || c->n_layer > 4096 || c->n_embd < 1 || c->n_head < 1 || c->n_head_kv < 1 ||
        c->n_head % c->n_head_kv || c->n_ff < 1 || c->n_vocab < 1) {
        mdl_fail("%s: bad or missing hyper-parameters", p);
        goto out;
    }
    /* transformers' defaults where the key is absent: Qwen3Config's head_dim is 128, the others' hidden / heads */
    if (cfg_i32(p, r, "", "head_dim", !strcmp(mt, "qwen3") ? 128 : c->n_embd / c->n_head, &c->head_dim)) goto out;
    if (c->head_dim < 2 || c->head_dim > 1024 || c->head_dim % 2) { /* as the GGUF loader */
        mdl_fail("%s: bad head_dim %d", p, c->head_dim);
        goto out;
    }
    c->rope_interleaved = 0; /* HF rotate_half */
    c->embed_scale = c->residual_scale = c->logit_scale = 1.f;
    c->rope_attn_factor = 1.f;
    c->rope_freq_scale = 1.f;
    if (!strcmp(mt, "minicpm")) {
        double scale_emb, sd, base;
        if (cfg_num(p, r, "", "scale_emb", 1.0, &scale_emb) || cfg_num(p, r, "", "scale_depth", 1.0, &sd) ||
            cfg_num(p, r, "", "dim_model_base", (double)c->n_embd, &base))
            goto out;
        c->embed_scale = (float)scale_emb;
        c->residual_scale = (float)(sd / sqrt((double)c->n_layer));
        c->logit_scale = (float)((double)c->n_embd / base);
    }
    if (hf_rope(m, p, r) || hf_refuse_unsupported(p, r)) goto out;
    {
        /* the sliding window (query - key < sliding_window): Mistral's and Phi-3's, and Qwen2 / Qwen3's with
         * use_sliding_window (their configs drop it otherwise); where the key is absent MistralConfig and the Qwen
         * configs take 4096, Phi3Config none; null is none. Which layers use it: hf_layer_windows */
        bool use_sw = mistral || phi3;
        if (arch_is_qwen(c->arch) && cfg_bool(p, r, "", "use_sliding_window", false, &use_sw)) goto out;
        int64_t win = 0;
        if (use_sw && !json_is_null(json_get(r, "sliding_window")) &&
            cfg_int(p, r, "", "sliding_window", phi3 ? 0 : 4096, &win))
            goto out;
        if (win < 0) {
            mdl_fail("%s: sliding_window %lld must be >= 0 or null", p, (long long)win);
            goto out;
        }
        c->sliding_window = win;
    }
    infllm_params_default(&c->sparse);
    const json_value *sc;
    if (cfg_object(p, r, "sparse_config", &sc)) goto out;
    if (sc) {
        c->has_sparse_config = 1;
        infllm_params *sp = &c->sparse;
        int64_t window;
        const char *S = "sparse_config.";
        if (cfg_i32(p, sc, S, "kernel_size", 32, &sp->kernel_size) ||
            cfg_i32(p, sc, S, "kernel_stride", 16, &sp->kernel_stride) ||
            cfg_i32(p, sc, S, "init_blocks", 1, &sp->init_blocks) || cfg_i32(p, sc, S, "block_size", 64, &sp->block_size) ||
            cfg_int(p, sc, S, "window_size", 2048, &window) || cfg_i32(p, sc, S, "topk", 64, &sp->topk) ||
            cfg_i32(p, sc, S, "dense_len", 8192, &sp->dense_len))
            goto out;
        sp->local_blocks = mdl_sat_i32(sp->block_size > 0 ? window / sp->block_size : 32);
        /* use_nope: stage 1 scores pre-RoPE q against kernels of pre-RoPE keys (SPEC B §4); the caches here compress
         * the keys attention uses (post-RoPE), so such a model would select other blocks than it was trained to */
        bool nope;
        if (cfg_bool(p, sc, S, "use_nope", false, &nope)) goto out;
        if (nope) {
            mdl_fail("%s: sparse_config.use_nope true (selection on pre-RoPE q / k) is not supported (the selection "
                     "runs on the post-RoPE keys)", p);
            goto out;
        }
    }
    if (st_open(dir, &m->st, err, sizeof err)) {
        mdl_fail("%s", err);
        goto out;
    }
    int64_t E = c->n_embd, Q = (int64_t)c->n_head * c->head_dim, KV = (int64_t)c->n_head_kv * c->head_dim;
    if (s_weight(m, "model.embed_tokens.weight", E, c->n_vocab, &m->tok_embd, 0) ||
        s_weight(m, "lm_head.weight", E, c->n_vocab, &m->output, 1) ||
        s_vec(m, "model.norm.weight", E, &m->output_norm, 0))
        goto out;
    if (!m->output.data) {
        /* a config that says the output is not tied to the embedding needs its own lm_head: without it the
         * checkpoint is incomplete (transformers would start it from random values), not tied */
        if (!tied) {
            mdl_fail("%s: tie_word_embeddings is false but the checkpoint has no lm_head.weight", p);
            goto out;
        }
        m->output = m->tok_embd;
    }
    if (st_find(m->st, "lm_head.bias")) {
        mdl_fail("model: tensor 'lm_head.bias' is not supported (it would be ignored)");
        goto out;
    }
    bool attn_bias; /* q/k/v (and o) biases in transformers' attention: attention_bias, always for qwen2 */
    if (cfg_bool(p, r, "", "attention_bias", false, &attn_bias)) goto out;
    if (!strcmp(mt, "qwen2")) attn_bias = true;
    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->layers) {
        mdl_fail("out of memory");
        goto out;
    }
    if (hf_layer_windows(m, p, r)) goto out;
    for (int l = 0; l < c->n_layer; l++) {
        mdl_layer *L = &m->layers[l];
        char n[128];
#define T(s) (snprintf(n, sizeof n, "model.layers.%d." s, l), n)
        if (phi3) { /* Phi3's fused products: qkv_proj rows q, k, v; gate_up_proj rows gate, up (its chunk(2)) */
            mdl_weight qkv, gate_up;
            if (s_weight(m, T("self_attn.qkv_proj.weight"), E, Q + 2 * KV, &qkv, 0) ||
                s_weight(m, T("mlp.gate_up_proj.weight"), E, 2 * (int64_t)c->n_ff, &gate_up, 0))
                goto out;
            split_qkv(L, &qkv, Q, KV);
            split_gate_up(L, &gate_up, c->n_ff);
        } else if (s_weight(m, T("self_attn.q_proj.weight"), E, Q, &L->wq, 0) ||
                   s_weight(m, T("self_attn.k_proj.weight"), E, KV, &L->wk, 0) ||
                   s_weight(m, T("self_attn.v_proj.weight"), E, KV, &L->wv, 0) ||
                   s_weight(m, T("mlp.gate_proj.weight"), E, c->n_ff, &L->wgate, 0) ||
                   s_weight(m, T("mlp.up_proj.weight"), E, c->n_ff, &L->wup, 0)) {
            goto out;
        }
        if (s_vec(m, T("input_layernorm.weight"), E, &L->attn_norm, 0) ||
            s_vec(m, T("post_attention_layernorm.weight"), E, &L->ffn_norm, 0) ||
            s_weight(m, T("self_attn.o_proj.weight"), Q, E, &L->wo, 0) ||
            s_weight(m, T("mlp.down_proj.weight"), c->n_ff, E, &L->wdown, 0) ||
            s_vec(m, T("self_attn.q_proj.bias"), Q, &L->bq, 1) || s_vec(m, T("self_attn.k_proj.bias"), KV, &L->bk, 1) ||
            s_vec(m, T("self_attn.v_proj.bias"), KV, &L->bv, 1) ||
            s_vec(m, T("self_attn.q_norm.weight"), c->head_dim, &L->q_norm, strcmp(mt, "qwen3") != 0) ||
            s_vec(m, T("self_attn.k_norm.weight"), c->head_dim, &L->k_norm, strcmp(mt, "qwen3") != 0))
            goto out;
        /* q/k/v biases where transformers' attention has none (llama, qwen3, minicpm: attention_bias false; qwen2
         * always has them), q/k norms outside qwen3: transformers leaves such tensors unread, this forward would
         * apply them */
        if (!attn_bias && (L->bq || L->bk || L->bv)) {
            mdl_fail("%s: attention_bias is false but the checkpoint has %s biases (transformers would not read them)",
                     p, L->bq ? "q_proj" : L->bk ? "k_proj" : "v_proj");
            goto out;
        }
        if (L->q_norm && strcmp(mt, "qwen3")) {
            mdl_fail("%s: model_type %s has no q_norm / k_norm (qwen3 has), but the checkpoint has %s", p, mt,
                     T("self_attn.q_norm.weight"));
            goto out;
        }
        if (L->k_norm && strcmp(mt, "qwen3")) {
            mdl_fail("%s: model_type %s has no q_norm / k_norm (qwen3 has), but the checkpoint has %s", p, mt,
                     T("self_attn.k_norm.weight"));
            goto out;
        }
        /* biases this forward does not apply (llama's attention_bias adds o_proj's, mlp_bias the MLP's): refused
         * rather than silently dropped */
        static const char *const unapplied[] = {"self_attn.o_proj.bias", "mlp.gate_proj.bias", "mlp.up_proj.bias",
                                                "mlp.down_proj.bias", "self_attn.qkv_proj.bias", "mlp.gate_up_proj.bias"};
        for (size_t i = 0; i < sizeof unapplied / sizeof *unapplied; i++) {
            snprintf(n, sizeof n, "model.layers.%d.%s", l, unapplied[i]);
            if (st_find(m->st, n)) {
                mdl_fail("model: tensor '%s' is not supported (it would be ignored)", n);
                goto out;
            }
        }
#undef T
    }
    rc = 0;
out:
    json_free(doc);
    return rc;
}

/* the numbers of the config that the forward divides by, takes logs or powers of, or scales by: a value
 * outside their domain loads and then produces NaN or meaningless logits */
static int check_config_values(const mdl_config *c) {
    if (!isfinite(c->rms_eps) || c->rms_eps < 0)
        return mdl_fail("model: the RMS norm epsilon (rms_norm_eps, attention.layer_norm_rms_epsilon) %g must be finite and >= 0", (double)c->rms_eps);
    if (!isfinite(c->rope_theta) || c->rope_theta <= 0)
        return mdl_fail("model: the RoPE base (rope_theta, rope.freq_base) %g must be finite and > 0", (double)c->rope_theta);
    if (!isfinite(c->embed_scale) || !isfinite(c->residual_scale) || !isfinite(c->logit_scale) ||
        c->logit_scale == 0 || !isfinite(c->rope_attn_factor) || !(c->rope_freq_scale > 0) ||
        !isfinite(c->rope_freq_scale))
        return mdl_fail("model: embedding / residual / logit / RoPE attention scales (%g, %g, %g, %g) must be finite, "
                        "the logit scale nonzero",
                        (double)c->embed_scale, (double)c->residual_scale, (double)c->logit_scale,
                        (double)c->rope_attn_factor);
    for (int i = 0; i < c->head_dim / 2; i++)
        if ((c->rope_factors_long && !(c->rope_factors_long[i] > 0 && isfinite(c->rope_factors_long[i]))) ||
            (c->rope_factors_short && !(c->rope_factors_short[i] > 0 && isfinite(c->rope_factors_short[i]))) ||
            (c->rope_freqs && !(c->rope_freqs[i] > 0 && isfinite(c->rope_freqs[i]))))
            return mdl_fail("model: RoPE scaling factor %d must be finite and > 0", i);
    return 0;
}

mdl_model *mdl_load(const char *path) {
    mdl_model *m = calloc(1, sizeof *m);
    if (!m) {
        mdl_fail("out of memory");
        return NULL;
    }
    snprintf(m->path, sizeof m->path, "%s", path);
    /* a folder is a Hugging Face checkpoint, any other file a GGUF (its loader checks the magic), whatever its name */
    struct stat sb;
    int rc;
    if (stat(path, &sb)) {
        rc = mdl_fail("model: %s: %s", path, strerror(errno));
    } else if (S_ISDIR(sb.st_mode)) {
        rc = load_hf(m, path);
    } else {
        rc = load_gguf(m, path);
        if (rc && mdl_hf_file_name(path)) {
            char why[512]; /* a file of a Hugging Face checkpoint: say that its folder is what loads */
            snprintf(why, sizeof why, "%s", mdl_error());
            const char *slash = pf_last_sep(path);
            rc = mdl_fail("%s (a Hugging Face checkpoint is loaded from its folder: -m %.*s)", why,
                          slash ? (slash == path ? 1 : (int)(slash - path)) : 1, slash ? path : ".");
        }
    }
    if (!rc && ((int64_t)m->cfg.head_dim * m->cfg.n_head > (1 << 20))) rc = mdl_fail("model: bad head sizes");
    if (!rc) rc = check_config_values(&m->cfg);
    if (rc) {
        mdl_free(m);
        return NULL;
    }
    return m;
}

/* --------------------------------------------------------------- session ---- */
static size_t cache_bytes(const mdl_model *m, int64_t ctx, infllm_dtype dt) {
    const mdl_config *c = &m->cfg;
    size_t row = (size_t)c->n_head_kv * (size_t)c->head_dim * infllm_dtype_size(dt);
    if (dt == INFLLM_DTYPE_F16) /* dense sessions also keep V transposed (ggmlc attention) */
        row += (size_t)c->n_head_kv * (size_t)c->head_dim;
    size_t rows = 2 * (size_t)ctx + (size_t)(ctx / 16) + (size_t)(ctx / 64);
    /* the CPU attention also keeps each layer's K/V (16-bit for a 16-bit cache, else f32) and compressed keys (f32;
     * bf16 for a bf16 cache on the bf16 dot-product kernels) as tiles of 64 rows, and a word a K/V tile flagging its
     * keys whose values are not finite */
    const size_t kv_es = infllm_dtype_size(dt) == 2 ? 2 : sizeof(float),
                 c_es = dt == INFLLM_DTYPE_BF16 && infllm_cpu_bf16_dot() ? 2 : sizeof(float);
    const size_t kv_tile_rows = 2 * (size_t)((ctx + 63) / 64 * 64),
                 c_tile_rows = (size_t)((ctx / 16 + 63) / 64 * 64) + (size_t)((ctx / 64 + 63) / 64 * 64);
    size_t tiles = (kv_tile_rows * kv_es + c_tile_rows * c_es) * (size_t)c->n_head_kv * (size_t)c->head_dim +
                   (size_t)((ctx + 63) / 64) * sizeof(uint64_t) * (size_t)c->n_head_kv;
    return (size_t)c->n_layer * (rows * row + tiles);
}
static size_t buf_floats(const mdl_model *m, int chunk) {
    const mdl_config *c = &m->cfg;
    size_t E = (size_t)c->n_embd, Q = (size_t)c->n_head * c->head_dim, KV = (size_t)c->n_head_kv * c->head_dim;
    size_t big = E > Q ? E : Q;
    return (size_t)chunk * (3 * big + 2 * Q + 2 * KV + 2 * (size_t)c->n_ff);
}
size_t mdl_session_bytes(const mdl_model *m, int64_t ctx, int chunk, infllm_dtype dt) {
    return cache_bytes(m, ctx, dt) + buf_floats(m, chunk) * sizeof(float) * 2;
}

void mdl_session_free(mdl_session *s) {
    if (!s) return;
    if (s->caches)
        for (int l = 0; l < s->m->cfg.n_layer; l++) infllm_cache_free(s->caches[l]);
    free(s->caches);
    if (s->vt)
        for (int l = 0; l < s->m->cfg.n_layer; l++) free(s->vt[l]);
    free(s->vt);
    free(s->x);
    free(s->kvconv);
    free(s->rope_ff);
    quant_scratch_free(&s->qs);
    free(s);
}

/* Whether layer l of session s attends through llama.cpp's dense f16 attention (ggmlc.h: bitwise llama.cpp's
 * results), which has no sliding window: dense f16 sessions, but for windowed layers (whatever the context, so that
 * a prompt cache's K / V do not depend on it) */
static int uses_ggmlc(const mdl_session *s, int l) {
    const mdl_config *c = &s->m->cfg;
    return s->kv_dtype == INFLLM_DTYPE_F16 && s->p.mode == INFLLM_MODE_DENSE && c->head_dim % 16 == 0 &&
           c->head_dim <= 512 && c->n_head % c->n_head_kv == 0 && s->m->layers[l].window == 0;
}

mdl_session *mdl_session_new(const mdl_model *m, const infllm_params *p, int64_t ctx, int chunk, infllm_dtype kv,
                             int nthreads) {
    const mdl_config *c = &m->cfg;
    mdl_session *s = calloc(1, sizeof *s);
    if (!s) {
        mdl_fail("out of memory");
        return NULL;
    }
    s->m = m;
    s->p = *p;
    s->p.num_threads = nthreads;
    s->kv_dtype = kv;
    s->ctx = ctx;
    s->chunk = chunk < 1 ? 1 : chunk;
    s->nthreads = nthreads;
    size_t E = (size_t)c->n_embd, Q = (size_t)c->n_head * c->head_dim, KV = (size_t)c->n_head_kv * c->head_dim;
    size_t big = E > Q ? E : Q, ch = (size_t)s->chunk;
    s->x = malloc(buf_floats(m, s->chunk) * sizeof(float));
    s->kvconv = malloc(ch * (2 * KV + 2 * Q) * 4);
    s->rope_ff = malloc(sizeof(float) * (size_t)c->head_dim / 2);
    s->caches = calloc((size_t)c->n_layer, sizeof *s->caches);
    if (!s->x || !s->kvconv || !s->rope_ff || !s->caches) {
        mdl_fail("out of memory (session buffers)");
        mdl_session_free(s);
        return NULL;
    }
    float *b = s->x + ch * big;
    s->xb = b; b += ch * big;
    s->tmp = b; b += ch * big;
    s->q = b; b += ch * Q;
    s->att = b; b += ch * Q;
    s->k = b; b += ch * KV;
    s->v = b; b += ch * KV;
    s->hb = b; b += ch * (size_t)c->n_ff;
    s->hb2 = b;
    const float *fac = NULL;
    if (c->rope_freqs) /* llama.cpp's build_rope_factors: rope_freqs first */
        fac = c->rope_freqs;
    else if (c->rope_factors_long || c->rope_factors_short)
        fac = (c->rope_orig_ctx > 0 && ctx > c->rope_orig_ctx && c->rope_factors_long) ? c->rope_factors_long
              : c->rope_factors_short ? c->rope_factors_short : c->rope_factors_long;
    for (int i = 0; i < c->head_dim / 2; i++) s->rope_ff[i] = fac ? fac[i] : 1.f;
    if (kv == INFLLM_DTYPE_F16 && s->p.mode == INFLLM_MODE_DENSE) {
        s->vt_cap = (ctx + 63) / 64 * 64;
        s->vt = calloc((size_t)c->n_layer, sizeof *s->vt);
        for (int l = 0; s->vt && l < c->n_layer; l++) {
            if (!uses_ggmlc(s, l)) continue;
            s->vt[l] = calloc((size_t)s->vt_cap * (size_t)c->n_head_kv * (size_t)c->head_dim, sizeof(uint16_t));
            if (!s->vt[l]) {
                mdl_fail("out of memory (transposed V, layer %d)", l);
                mdl_session_free(s);
                return NULL;
            }
        }
        if (!s->vt) {
            mdl_fail("out of memory");
            mdl_session_free(s);
            return NULL;
        }
    }
    for (int l = 0; l < c->n_layer; l++) {
        infllm_status st = infllm_cache_create(&s->p, kv, c->n_head_kv, c->head_dim, ctx, &s->caches[l]);
        if (st) {
            mdl_fail("attention cache (layer %d, %lld tokens): %s", l, (long long)ctx, infllm_last_error());
            mdl_session_free(s);
            return NULL;
        }
    }
    return s;
}

int mdl_session_put_kv(mdl_session *s, int layer, int64_t pos, const void *k, const void *v, int64_t n) {
    if (pos != infllm_cache_length(s->caches[layer]))
        return mdl_fail("layer %d: K / V for position %lld, the cache holds %lld", layer, (long long)pos,
                        (long long)infllm_cache_length(s->caches[layer]));
    const infllm_status st = infllm_cache_append(s->caches[layer], k, v, n);
    if (st) return mdl_fail("layer %d: %s: %s", layer, infllm_status_str(st), infllm_last_error());
    if (s->vt && s->vt[layer]) { /* the dense f16 path's transposed V, as the forward fills it */
        const int64_t KV = (int64_t)s->m->cfg.n_head_kv * s->m->cfg.head_dim;
        const uint16_t *v16 = v;
        uint16_t *vt = s->vt[layer];
        for (int64_t t = 0; t < n; t++)
            for (int64_t i = 0; i < KV; i++) vt[i * s->vt_cap + pos + t] = v16[t * KV + i];
    }
    return 0;
}

int mdl_session_truncate(mdl_session *s, int64_t n) {
    if (n < 0 || n > s->pos) return mdl_fail("truncate: bad length");
    for (int l = 0; l < s->m->cfg.n_layer; l++)
        if (infllm_cache_truncate(s->caches[l], n)) return mdl_fail("truncate: %s", infllm_last_error());
    s->pos = n;
    return 0;
}

/* ----------------------------------------------------------------- forward -- */
/* ggml_compute_forward_rms_norm_f32 then ggml_mul: the squares in f32 summed in double, the mean
 * and 1/sqrt in f32 (llama.cpp's numerics) */
static void rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)(x[i] * x[i]);
    float mean = (float)(ss / (double)n);
    float r = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

static int mm(mdl_session *s, const mdl_weight *w, const float *x, int64_t n, float *y) {
    return quant_matmul(w->type, w->data, w->rows, w->cols, x, n, y, w->rows, s->nthreads, &s->qs);
}

/* two or three products of one input (q / k / v, gate / up) in one parallel region, the input quantized once per
 * scheme (quant_matmul_multi): the same bits as one mm each */
static int mm_multi(mdl_session *s, const float *x, int64_t n, const mdl_weight *w0, float *y0, const mdl_weight *w1,
                    float *y1, const mdl_weight *w2, float *y2) {
    const quant_mm ops[3] = {{w0->type, w0->data, w0->rows, w0->cols, y0, w0->rows},
                             {w1->type, w1->data, w1->rows, w1->cols, y1, w1->rows},
                             {w2 ? w2->type : 0, w2 ? w2->data : NULL, w2 ? w2->rows : 0, w2 ? w2->cols : 0, y2,
                              w2 ? w2->rows : 0}};
    return quant_matmul_multi(ops, w2 ? 3 : 2, x, n, s->nthreads, &s->qs);
}

/* ggml's rotate_pairs as llama.cpp's build computes it (the C++ compiler fuses one product of
 * each expression): x0' = fma(x0, cos, -(x1 sin)), x1' = fma(x0, sin, x1 cos) */
static void rope(float *v, int nh, int D, const float *cs, const float *sn, int interleaved) {
    int h2 = D / 2;
    for (int h = 0; h < nh; h++) {
        float *x = v + (size_t)h * D;
        int o = interleaved ? 1 : h2, st = interleaved ? 2 : 1;
        for (int i = 0; i < h2; i++) {
            float *p = x + (size_t)i * st;
            float a = p[0], b = p[o];
            p[0] = fmaf(a, cs[i], -(b * sn[i]));
            p[o] = fmaf(a, sn[i], b * cs[i]);
        }
    }
}

static void to_dtype(infllm_dtype dt, const float *src, void *dst, size_t n) {
    if (dt == INFLLM_DTYPE_F32) {
        memcpy(dst, src, n * 4);
    } else if (dt == INFLLM_DTYPE_F16) {
        ggmlc_f32_to_f16(src, dst, n);
    } else {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = mdl_f32_to_bf16(src[i]);
    }
}
static void from_dtype(infllm_dtype dt, const void *src, float *dst, size_t n) {
    if (dt == INFLLM_DTYPE_F32) {
        memcpy(dst, src, n * 4);
    } else if (dt == INFLLM_DTYPE_F16) {
        ggmlc_f16_to_f32(src, dst, n);
    } else {
        const uint16_t *d = src;
        for (size_t i = 0; i < n; i++) dst[i] = dt == INFLLM_DTYPE_F16 ? mdl_f16_to_f32(d[i]) : mdl_bf16_to_f32(d[i]);
    }
}

static int forward_chunk(mdl_session *s, const int32_t *tok, int n, float *logits, int all_logits, int want_last) {
    const mdl_model *m = s->m;
    const mdl_config *c = &m->cfg;
    const int64_t E = c->n_embd, D = c->head_dim, Q = (int64_t)c->n_head * D, KV = (int64_t)c->n_head_kv * D;
    const int64_t F = c->n_ff;
    float *x = s->x;
    size_t erow = ggml_row_size(m->tok_embd.type, E);
    for (int t = 0; t < n; t++) {
        if (tok[t] < 0 || tok[t] >= c->n_vocab) return mdl_fail("token id %d is outside the vocabulary (0..%d)", tok[t], c->n_vocab - 1);
        quant_dequant_row(m->tok_embd.type, (const uint8_t *)m->tok_embd.data + (size_t)tok[t] * erow, x + t * E, E);
        if (c->embed_scale != 1.f)
            for (int64_t i = 0; i < E; i++) x[t * E + i] *= c->embed_scale;
    }
    /* cos/sin of this chunk's positions */
    int h2 = (int)D / 2;
    float *cs = malloc(sizeof(float) * (size_t)n * h2 * 2);
    if (!cs) return mdl_fail("out of memory");
    float *sn = cs + (size_t)n * h2;
    /* ggml_rope_cache_init: theta starts at the position and is multiplied by
     * powf(base, -2/D) per pair in f32, divided by the frequency factor, cosf/sinf */
    const float theta_scale = powf(c->rope_theta, -2.0f / (float)D);
    for (int t = 0; t < n; t++) {
        float theta = (float)(s->pos + t);
        for (int i = 0; i < h2; i++) {
            float th = c->rope_freq_scale * (theta / s->rope_ff[i]); /* ggml: freq_scale * theta_extrap */
            cs[t * h2 + i] = cosf(th) * c->rope_attn_factor;
            sn[t * h2 + i] = sinf(th) * c->rope_attn_factor;
            theta *= theta_scale;
        }
    }
    const float rs = c->residual_scale;
    int rc = 0;
#ifdef _OPENMP
    const int NT = s->nthreads > 0 ? s->nthreads : omp_get_max_threads();
#endif
    size_t esz = infllm_dtype_size(s->kv_dtype);
    uint8_t *kc = s->kvconv, *vc = kc + (size_t)n * KV * esz, *qc = vc + (size_t)n * KV * esz,
            *oc = qc + (size_t)n * Q * esz;
    for (int l = 0; l < c->n_layer && !rc; l++) {
        const mdl_layer *L = &m->layers[l];
#pragma omp parallel for num_threads(NT) if (n > 8)
        for (int t = 0; t < n; t++) rmsnorm(s->xb + t * E, x + t * E, L->attn_norm, E, c->rms_eps);
        if (mm_multi(s, s->xb, n, &L->wq, s->q, &L->wk, s->k, &L->wv, s->v)) {
            rc = -1;
            break;
        }
#pragma omp parallel for num_threads(NT) if (n > 8)
        for (int t = 0; t < n; t++) {
            if (L->bq)
                for (int64_t i = 0; i < Q; i++) s->q[t * Q + i] += L->bq[i];
            if (L->bk)
                for (int64_t i = 0; i < KV; i++) s->k[t * KV + i] += L->bk[i];
            if (L->bv)
                for (int64_t i = 0; i < KV; i++) s->v[t * KV + i] += L->bv[i];
            if (L->q_norm) /* qwen3: each head's q and k RMS-normalised before RoPE */
                for (int h = 0; h < c->n_head; h++)
                    rmsnorm(s->q + t * Q + h * D, s->q + t * Q + h * D, L->q_norm, D, c->rms_eps);
            if (L->k_norm)
                for (int h = 0; h < c->n_head_kv; h++)
                    rmsnorm(s->k + t * KV + h * D, s->k + t * KV + h * D, L->k_norm, D, c->rms_eps);
            rope(s->q + t * Q, c->n_head, (int)D, cs + t * h2, sn + t * h2, c->rope_interleaved);
            rope(s->k + t * KV, c->n_head_kv, (int)D, cs + t * h2, sn + t * h2, c->rope_interleaved);
        }
        if (s->qkv_hook && s->qkv_hook(s->qkv_ud, l, s->pos, n, s->q, s->k, s->v)) {
            rc = mdl_fail("layer %d, positions %lld..%lld: the q/k/v observer failed", l, (long long)s->pos,
                          (long long)(s->pos + n - 1));
            break;
        }
        double t0 = mdl_now();
        infllm_status st;
        infllm_params lp = s->p; /* the layer's: its sliding window */
        lp.window = L->window;
        if (uses_ggmlc(s, l)) {
            /* llama.cpp's dense attention over the f16 cache (ggmlc.h): bitwise its results */
            to_dtype(s->kv_dtype, s->k, kc, (size_t)n * KV);
            to_dtype(s->kv_dtype, s->v, vc, (size_t)n * KV);
            st = infllm_cache_append(s->caches[l], kc, vc, n);
            uint16_t *vt = s->vt ? s->vt[l] : NULL;
            if (!st && vt) {
                const uint16_t *v16 = (const uint16_t *)(const void *)vc;
                for (int t = 0; t < n; t++)
                    for (int64_t i = 0; i < KV; i++) vt[i * s->vt_cap + s->pos + t] = v16[t * KV + i];
            }
            if (!st && ggmlc_attn_f16(infllm_cache_keys(s->caches[l]), infllm_cache_values(s->caches[l]), vt,
                                      s->vt_cap, infllm_cache_length(s->caches[l]), s->q, n, c->n_head,
                                      c->n_head_kv, (int)D,
                                      s->p.softmax_scale > 0.f ? s->p.softmax_scale : 1.0f / sqrtf((float)D), s->att,
                                      s->nthreads)) {
                s->t_attn += mdl_now() - t0;
                rc = mdl_fail("attention (layer %d): out of memory", l);
                break;
            }
        } else if (s->kv_dtype == INFLLM_DTYPE_F32) {
            st = infllm_cache_append(s->caches[l], s->k, s->v, n);
            if (!st) st = infllm_cache_attend(s->caches[l], &lp, s->q, n, c->n_head, s->att, NULL);
        } else {
            to_dtype(s->kv_dtype, s->k, kc, (size_t)n * KV);
            to_dtype(s->kv_dtype, s->v, vc, (size_t)n * KV);
            to_dtype(s->kv_dtype, s->q, qc, (size_t)n * Q);
            st = infllm_cache_append(s->caches[l], kc, vc, n);
            if (!st) st = infllm_cache_attend(s->caches[l], &lp, qc, n, c->n_head, oc, NULL);
            if (!st) from_dtype(s->kv_dtype, oc, s->att, (size_t)n * Q);
        }
        s->t_attn += mdl_now() - t0;
        if (st) {
            rc = mdl_fail("attention (layer %d, position %lld): %s: %s", l, (long long)s->pos, infllm_status_str(st),
                          infllm_last_error());
            break;
        }
        if (mm(s, &L->wo, s->att, n, s->tmp)) {
            rc = -1;
            break;
        }
        for (int64_t i = 0; i < n * E; i++) x[i] += rs * s->tmp[i];
#pragma omp parallel for num_threads(NT) if (n > 8)
        for (int t = 0; t < n; t++) rmsnorm(s->xb + t * E, x + t * E, L->ffn_norm, E, c->rms_eps);
        if (mm_multi(s, s->xb, n, &L->wgate, s->hb, &L->wup, s->hb2, NULL, NULL)) {
            rc = -1;
            break;
        }
#pragma omp parallel for num_threads(NT) if (n > 8)
        for (int t = 0; t < n; t++) ggmlc_swiglu(s->hb + t * F, s->hb2 + t * F, F);
        if (mm(s, &L->wdown, s->hb, n, s->tmp)) {
            rc = -1;
            break;
        }
        for (int64_t i = 0; i < n * E; i++) x[i] += rs * s->tmp[i];
    }
    free(cs);
    if (rc) {
        /* keep the caches consistent with s->pos */
        for (int l = 0; l < c->n_layer; l++)
            if (infllm_cache_length(s->caches[l]) > s->pos) infllm_cache_truncate(s->caches[l], s->pos);
        return -1;
    }
    s->pos += n;
    if (logits && (all_logits || want_last)) {
        int first = all_logits ? 0 : n - 1, cnt = n - first;
        for (int t = 0; t < cnt; t++) rmsnorm(s->xb + t * E, x + (first + t) * E, m->output_norm, E, c->rms_eps);
        if (quant_matmul(m->output.type, m->output.data, m->output.rows, m->output.cols, s->xb, cnt, logits,
                         m->output.rows, s->nthreads, &s->qs))
            return -1;
        if (c->logit_scale != 1.f)
            for (int64_t i = 0; i < (int64_t)cnt * c->n_vocab; i++) logits[i] /= c->logit_scale;
    }
    return 0;
}

int mdl_forward(mdl_session *s, const int32_t *tokens, int64_t n, float *logits, int all_logits) {
    if (n < 1) return mdl_fail("forward: no tokens");
    if (s->pos + n > s->ctx)
        return mdl_fail("context full: %lld tokens in the cache + %lld new > --ctx %lld", (long long)s->pos,
                        (long long)n, (long long)s->ctx);
    for (int64_t i = 0; i < n; i += s->chunk) {
        int cn = (int)(n - i < s->chunk ? n - i : s->chunk);
        float *lg = logits ? (all_logits ? logits + i * s->m->cfg.n_vocab : logits) : NULL;
        if (forward_chunk(s, tokens + i, cn, lg, all_logits, i + cn == n)) return -1;
        if (s->progress) s->progress(s->progress_ud, i + cn, n);
    }
    return 0;
}
