/* mtok.c: see mtok.h. */
#include "mtok.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "json.h"
#include "mcommon.h"
#include "portable.h"

infllm_tokenizer *mdl_load_tokenizer(const mdl_model *m) {
    infllm_tokenizer *tok = NULL;
    char err[512] = "";
    if (!m->is_gguf) {
        if (tok_load_hf_dir(m->path, &tok, err, sizeof err)) {
            mdl_fail("%s", err); /* names the tokenizer.json it read */
            return NULL;
        }
        return tok;
    }
    const gguf_file *g = m->gguf;
    char model[64] = "", pre[64] = "";
    if (gguf_get_str(g, "tokenizer.ggml.model", model, sizeof model)) {
        mdl_fail("%s: tokenizer.ggml.model is missing", m->path);
        return NULL;
    }
    gguf_get_str(g, "tokenizer.ggml.pre", pre, sizeof pre);
    const gguf_kv *kt = gguf_find(g, "tokenizer.ggml.tokens");
    if (!kt || kt->type != GGUF_T_ARRAY || kt->arr_type != GGUF_T_STRING || kt->arr_n == 0 || kt->arr_n > (1u << 24)) {
        mdl_fail("%s: tokenizer.ggml.tokens is missing or not a string array", m->path);
        return NULL;
    }
    uint32_t nv = (uint32_t)kt->arr_n;
    const gguf_kv *km = gguf_find(g, "tokenizer.ggml.merges");
    const gguf_kv *ks = gguf_find(g, "tokenizer.ggml.scores");
    const gguf_kv *ky = gguf_find(g, "tokenizer.ggml.token_type");
    uint32_t nm = (km && km->type == GGUF_T_ARRAY && km->arr_type == GGUF_T_STRING) ? (uint32_t)km->arr_n : 0;
    const char **toks = malloc(sizeof(char *) * nv), **merges = malloc(sizeof(char *) * (nm ? nm : 1));
    uint32_t *tl = malloc(sizeof(uint32_t) * nv), *ml = malloc(sizeof(uint32_t) * (nm ? nm : 1));
    float *scores = NULL;
    int32_t *types = NULL;
    if (!toks || !merges || !tl || !ml) goto oom;
    for (uint32_t i = 0; i < nv; i++) {
        toks[i] = kt->arr_strs[i].p;
        tl[i] = (uint32_t)kt->arr_strs[i].n;
    }
    for (uint32_t i = 0; i < nm; i++) {
        merges[i] = km->arr_strs[i].p;
        ml[i] = (uint32_t)km->arr_strs[i].n;
    }
    if (ks && ks->type == GGUF_T_ARRAY && ks->arr_type == GGUF_T_FLOAT32 && ks->arr_n == nv) {
        scores = malloc(sizeof(float) * nv);
        if (!scores) goto oom;
        memcpy(scores, ks->arr_data, sizeof(float) * nv);
    }
    if (ky && ky->type == GGUF_T_ARRAY && ky->arr_type == GGUF_T_INT32 && ky->arr_n == nv) {
        types = malloc(sizeof(int32_t) * nv);
        if (!types) goto oom;
        memcpy(types, ky->arr_data, sizeof(int32_t) * nv);
    }
    tok_gguf_desc d;
    tok_gguf_desc_init(&d);
    d.model = model;
    d.pre = pre[0] ? pre : NULL;
    d.n_vocab = nv;
    d.tokens = toks;
    d.token_lens = tl;
    d.scores = scores;
    d.token_types = types;
    d.n_merges = nm;
    d.merges = merges;
    d.merge_lens = ml;
    d.bos_id = mdl_sat_i32(gguf_get_int(g, "tokenizer.ggml.bos_token_id", -1));
    d.eos_id = mdl_sat_i32(gguf_get_int(g, "tokenizer.ggml.eos_token_id", -1));
    d.unk_id = mdl_sat_i32(gguf_get_int(g, "tokenizer.ggml.unknown_token_id", -1));
    d.pad_id = mdl_sat_i32(gguf_get_int(g, "tokenizer.ggml.padding_token_id", -1));
    d.eot_id = mdl_sat_i32(gguf_get_int(g, "tokenizer.ggml.eot_token_id", -1));
    d.add_bos = mdl_sat_i32(gguf_get_int(g, "tokenizer.ggml.add_bos_token", -1));
    d.add_eos = mdl_sat_i32(gguf_get_int(g, "tokenizer.ggml.add_eos_token", -1));
    d.add_space_prefix = mdl_sat_i32(gguf_get_int(g, "tokenizer.ggml.add_space_prefix", -1));
    if (tok_load_gguf(&d, &tok, err, sizeof err)) {
        mdl_fail("%s: %s", m->path, err);
        tok = NULL;
    }
    free(toks); free(merges); free(tl); free(ml); free(scores); free(types);
    return tok;
oom:
    free(toks); free(merges); free(tl); free(ml); free(scores); free(types);
    mdl_fail("%s: out of memory (tokenizer)", m->path);
    return NULL;
}

static char *copy_text(const char *p, size_t n) {
    char *s = malloc(n + 1);
    if (!s) return NULL;
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}

/* a chat_template.jinja whole as a string: NULL (and *absent 1) when there is none; NULL after mdl_fail when it is
 * there but not a regular file, unreadable or past 4 MiB (it would have been the template: not read as "none") */
static char *read_template_file(const char *path, int *absent) {
    int not_regular;
    long long size = 0;
    FILE *f = pf_fopen_regular(path, &not_regular, &size);
    *absent = !f && !not_regular && errno == ENOENT;
    if (!f) {
        if (!*absent) mdl_fail("chat: %s: %s", path, not_regular ? "not a regular file" : strerror(errno));
        return NULL;
    }
    enum { CAP = 4 << 20 };
    char *buf = size <= CAP ? malloc((size_t)size + 1) : NULL;
    const size_t n = buf ? fread(buf, 1, (size_t)size, f) : 0;
    fclose(f);
    if (!buf || n != (size_t)size) {
        mdl_fail("chat: %s: %s", path, size > CAP ? "larger than 4 MiB" : buf ? "read failed" : "out of memory");
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

/* a JSON file's "chat_template": a string, or transformers' list of {"name", "template"} (the one named "default",
 * else the first) */
static char *json_template(const char *path) {
    json_doc *doc = json_parse_file(path, NULL, NULL);
    const json_value *t = doc ? json_get(json_root(doc), "chat_template") : NULL, *pick = NULL;
    if (json_is(t, JSON_ARRAY)) {
        for (size_t i = 0; i < json_len(t); i++) {
            const json_value *e = json_index(t, i), *name = json_get(e, "name");
            if (!pick || (json_str(name, NULL) && !strcmp(json_str(name, NULL), "default"))) pick = json_get(e, "template");
        }
        t = pick;
    }
    size_t n = 0;
    const char *s = json_str(t, &n);
    char *out = s ? copy_text(s, n) : NULL;
    json_free(doc);
    return out;
}

/* the model's chat template (Jinja text) in *tpl, NULL when it has none: a GGUF's tokenizer.chat_template; a Hugging
 * Face folder's chat_template.jinja (what transformers saves since 4.43), else chat_template.json's or
 * tokenizer_config.json's. 0, or -1 after mdl_fail (a chat_template.jinja that cannot be read) */
static int template_text(const mdl_model *m, char **tpl) {
    *tpl = NULL;
    if (m->is_gguf) {
        const gguf_kv *kv = gguf_find(m->gguf, "tokenizer.chat_template");
        if (kv && kv->type == GGUF_T_STRING) *tpl = copy_text(kv->s.p, kv->s.n);
        return 0;
    }
    char p[1200];
    int absent;
    snprintf(p, sizeof p, "%s/chat_template.jinja", m->path);
    char *t = read_template_file(p, &absent);
    if (!t && !absent) return -1;
    if (!t) {
        snprintf(p, sizeof p, "%s/chat_template.json", m->path);
        t = json_template(p);
    }
    if (!t) {
        snprintf(p, sizeof p, "%s/tokenizer_config.json", m->path);
        t = json_template(p);
    }
    *tpl = t;
    return 0;
}

char *mdl_chat_format(const mdl_model *m, const char *system, const char *user) {
    char *tpl;
    if (template_text(m, &tpl)) return NULL;
    if (tpl && !strstr(tpl, "<|im_start|>")) {
        free(tpl);
        mdl_fail("chat: the model's chat template is not ChatML-style (no <|im_start|>), the only one formatted here: "
                 "give the prompt already in its format with -p / -f instead");
        return NULL;
    }
    char *def_sys = NULL;
    if (!system && tpl) {
        /* SmolLM2-style default system prompt: '<|im_start|>system\n...<|im_end|>' literal */
        const char *a = strstr(tpl, "<|im_start|>system\n");
        if (a) {
            a += strlen("<|im_start|>system\n");
            const char *b = strstr(a, "<|im_end|>");
            if (b && !memchr(a, '{', (size_t)(b - a)) && !memchr(a, '\'', (size_t)(b - a))) {
                def_sys = malloc((size_t)(b - a) + 1);
                if (def_sys) {
                    memcpy(def_sys, a, (size_t)(b - a));
                    def_sys[b - a] = 0;
                }
            }
        }
    }
    free(tpl);
    tok_chat_msg msgs[2];
    int n = 0;
    const char *sys = system ? system : def_sys;
    if (sys && sys[0]) msgs[n++] = (tok_chat_msg){"system", sys};
    msgs[n++] = (tok_chat_msg){"user", user};
    long need = tok_chatml_format(msgs, n, 1, NULL, 0);
    size_t cap = need < 0 ? (size_t)(-need) : (size_t)need + 1;
    char *out = malloc(cap + 1);
    if (out) tok_chatml_format(msgs, n, 1, out, cap + 1);
    free(def_sys);
    if (!out) mdl_fail("out of memory");
    return out;
}
