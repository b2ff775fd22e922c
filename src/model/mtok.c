/* mtok.c: see mtok.h. */
#include "mtok.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    { /* llama.cpp: a model named Phi-3 (general.name, any case) has its special tokens take the whitespace after
       * them */
        char name[256] = "";
        gguf_get_str(g, "general.name", name, sizeof name);
        for (char *p = name; *p; p++) *p = (char)tolower((unsigned char)*p);
        d.specials_rstrip = strstr(name, "phi-3") || strstr(name, "phi3");
    }
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

/* whether the template holds the marker */
static int has(const char *tpl, const char *needle) { return tpl && strstr(tpl, needle) != NULL; }

/* tpl's literal default system prompt of a ChatML template (SmolLM2's, Qwen2.5's): the text of the first
 * '<|im_start|>system' + newline + ... + '<|im_end|>' inside one Jinja string literal (no unescaped quote of the
 * literal's kind and no {{ / {% between: the others are the template's code writing a system message given to it),
 * with its \n, \t, \\, \' and \" escapes undone; NULL when there is none (or out of memory, which only drops the
 * default). The newline is a real one (a GGUF's template, JSON-decoded) or the escape (a .jinja file). */
static char *chatml_default_system(const char *tpl) {
    static const char *const opens[2] = {"<|im_start|>system\n", "<|im_start|>system\\n"};
    for (const char *a = tpl; a && *a; a++) {
        int k = !strncmp(a, opens[0], strlen(opens[0])) ? 0 : !strncmp(a, opens[1], strlen(opens[1])) ? 1 : -1;
        if (k < 0) continue;
        char q = 0; /* the quote that opened the literal: the nearest one before the marker */
        for (const char *p = a; p > tpl && !q;)
            if (*--p == '\'' || *p == '"') q = *p;
        const char *c = a + strlen(opens[k]), *b = strstr(c, "<|im_end|>");
        if (!b) return NULL;
        int code = !q;
        for (const char *p = c; p < b && !code; p++) {
            if (*p == '\\' && p + 1 < b) p++;
            else code = *p == q || ((*p == '{') && (p[1] == '{' || p[1] == '%'));
        }
        if (code) continue;
        char *out = malloc((size_t)(b - c) + 1), *o = out;
        if (!out) return NULL;
        for (const char *p = c; p < b; p++) {
            if (*p == '\\' && p + 1 < b && strchr("nt\\'\"", p[1])) {
                p++;
                *o++ = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
            } else {
                *o++ = *p;
            }
        }
        *o = 0;
        return out;
    }
    return NULL;
}

/* Llama 3.1+'s "Today Date": today's (strftime_now's "%d %b %Y", local time, as transformers renders it) when the
 * template asks for it, else its date_string literal ("26 Jul 2024" in Llama 3.1 / 3.3) */
static void llama3_date(const char *tpl, char *date, size_t n) {
    snprintf(date, n, "26 Jul 2024");
    if (strstr(tpl, "strftime_now")) {
        const time_t now = time(NULL);
        struct tm tmv;
#ifdef _WIN32
        if (localtime_s(&tmv, &now) == 0) strftime(date, n, "%d %b %Y", &tmv);
#else
        if (localtime_r(&now, &tmv)) strftime(date, n, "%d %b %Y", &tmv);
#endif
        return;
    }
    const char *a = strstr(tpl, "date_string = \"");
    if (!a) return;
    a += strlen("date_string = \"");
    const char *b = strchr(a, '"');
    if (b && (size_t)(b - a) < n && !memchr(a, '{', (size_t)(b - a))) {
        memcpy(date, a, (size_t)(b - a));
        date[b - a] = 0;
    }
}

/* The template in a comparable form: inside {{ }} / {% %} tags, string literals as '...' with a real newline written
 * as the \n escape (so both spellings compare equal), adjacent literals joined ('a' + 'b' as 'ab'), empty ones
 * dropped, whitespace outside literals gone, message.x as message['x']; the text outside tags without whitespace.
 * NULL: out of memory. */
static char *template_norm(const char *tpl) {
    const size_t n = strlen(tpl);
    char *t = malloc(2 * n + 1), *o = t;
    if (!t) return NULL;
    int in_tag = 0;
    for (const char *p = tpl; *p; p++) {
        if (!in_tag && p[0] == '{' && (p[1] == '{' || p[1] == '%')) in_tag = 1;
        else if (in_tag && (p[0] == '}' || p[0] == '%') && p[1] == '}') in_tag = 0;
        if (in_tag && (*p == '\'' || *p == '"')) {
            const char q = *p;
            *o++ = '\'';
            for (p++; *p && *p != q; p++) {
                if (*p == '\\' && p[1]) {
                    if (p[1] == q || p[1] == '\'' || p[1] == '"') *o++ = *++p; /* an escaped quote: the quote */
                    else *o++ = *p++, *o++ = *p;
                } else if (*p == '\n') {
                    *o++ = '\\', *o++ = 'n';
                } else {
                    *o++ = *p;
                }
            }
            *o++ = '\'';
            if (!*p) break;
            continue;
        }
        if (!tok_is_space_byte(*p)) *o++ = *p;
    }
    *o = 0;
    static const char *const from[] = {"'+'", "+''", "''+", "message.role", "message.content"};
    static const char *const to[] = {"", "", "", "message['role']", "message['content']"};
    for (int k = 0; k < 5; k++)
        for (char *a; (a = strstr(t, from[k]));) {
            const size_t fl = strlen(from[k]), tl = strlen(to[k]);
            if (tl > fl) { /* message.role -> message['role']: 3 more bytes */
                const size_t off = (size_t)(a - t);
                char *g = realloc(t, strlen(t) + tl - fl + 1);
                if (!g) {
                    free(t);
                    return NULL;
                }
                t = g;
                a = t + off;
            }
            memmove(a + tl, a + fl, strlen(a + fl) + 1);
            memcpy(a, to[k], tl);
        }
    return t;
}

/* The text the template's generation prompt writes: the {% if add_generation_prompt %} block up to its else / elif /
 * endif, its {{ }} string literals and non-blank text outside tags, escapes undone, into out (at most n - 1 bytes).
 * A nested if whose condition is an "is defined" test of a variable (enable_thinking: infllm passes none, so it is
 * false) is skipped whole, unless it has an else / elif at its own level (then live). 1 when found and made of
 * literals only; 0 when the template has no such block; -1 when the block holds anything else: an expression that
 * is not a string literal, a loop or set, another nested if. */
static int generation_prompt(const char *tpl, char *out, size_t n) {
    const char *a = NULL;
    for (const char *p = strstr(tpl, "{%"); p; p = strstr(p + 2, "{%")) {
        const char *e = strstr(p, "%}");
        if (!e) return 0;
        const char *q = p + 2;
        while (*q == '-' || tok_is_space_byte(*q)) q++;
        const char *g = strstr(q, "add_generation_prompt");
        if (!strncmp(q, "if", 2) && tok_is_space_byte(q[2]) && g && g < e &&
            !strstr(q, "not add_generation_prompt")) {
            a = e + 2;
            break;
        }
    }
    if (!a) return 0;
    size_t o = 0;
    int depth = 0; /* nested ifs, all of them skipped (an "is defined" one and what it holds) */
    for (const char *p = a; *p;) {
        const char *tag = strchr(p, '{');
        while (tag && tag[1] != '{' && tag[1] != '%' && tag[1] != '#') tag = strchr(tag + 1, '{');
        const char *text_end = tag ? tag : p + strlen(p);
        for (const char *x = p; depth == 0 && x < text_end; x++) /* text outside tags: its blank runs are layout */
            if (!tok_is_space_byte(*x)) {
                for (const char *y = p; y < text_end && o + 1 < n; y++) out[o++] = *y;
                break;
            }
        if (!tag) return -1; /* no endif */
        const char close = tag[1] == '{' ? '}' : tag[1] == '%' ? '%' : '#';
        const char *end = tag + 2;
        while (*end && !(end[0] == close && end[1] == '}')) end++;
        if (!*end) return -1;
        const char *q = tag + 2, *qe = end;
        while (q < qe && (*q == '-' || tok_is_space_byte(*q))) q++;
        while (qe > q && (qe[-1] == '-' || tok_is_space_byte(qe[-1]))) qe--;
        const size_t kl = (size_t)(qe - q);
        if (tag[1] == '%') {
            char cond[256];
            snprintf(cond, sizeof cond, "%.*s", (int)(kl < 255 ? kl : 255), q);
            if (kl >= 2 && !strncmp(q, "if", 2) && (kl == 2 || tok_is_space_byte(q[2]))) {
                /* at the block's own level only a test that is false when infllm renders it */
                if (depth == 0 && (!strstr(cond, "is defined") || strstr(cond, "not") || strstr(cond, " or ")))
                    return -1;
                depth++;
            } else if (!strncmp(cond, "endif", 5)) {
                if (depth == 0) break;
                depth--;
            } else if (!strncmp(cond, "else", 4) || !strncmp(cond, "elif", 4)) {
                if (depth == 0) break;
                if (depth == 1) return -1; /* the skipped if's other branch runs */
            } else if (depth == 0 && (!strncmp(cond, "for", 3) || !strncmp(cond, "set", 3) ||
                                      !strncmp(cond, "macro", 5))) {
                return -1;
            }
        } else if (tag[1] == '{' && depth == 0) { /* string literals joined by + */
            for (const char *x = q; x < qe;) {
                if (tok_is_space_byte(*x) || *x == '+') {
                    x++;
                    continue;
                }
                if (*x != '\'' && *x != '"') return -1;
                const char qc = *x++;
                for (; x < qe && *x != qc; x++) {
                    char ch = *x;
                    if (ch == '\\' && x + 1 < qe) {
                        ch = *++x;
                        ch = ch == 'n' ? '\n' : ch == 't' ? '\t' : ch;
                    }
                    if (o + 1 < n) out[o++] = ch;
                }
                if (x >= qe) return -1;
                x++;
            }
        }
        p = end + 2;
    }
    out[o] = 0;
    return 1;
}

/* The styles: their message pieces, and the expression by which a template of the style writes a message
 * (template_norm's form; chat_template_check) */
static const struct chat_style {
    const char *name, *system_open, *user_open, *assistant_open, *turn_end, *after_end;
    int trim;
    const char *sig[2];
} STYLES[3] = {
    [MDL_CHAT_CHATML] = {"ChatML", "<|im_start|>system\n", "<|im_start|>user\n", "<|im_start|>assistant\n",
                         "<|im_end|>", "\n", 0,
                         {"'<|im_start|>'+message['role']+'\\n'+message['content']+'<|im_end|>\\n'",
                          "'<|im_start|>'+message['role']+'\\n'+content+'<|im_end|>\\n'"}},
    [MDL_CHAT_LLAMA3] = {"Llama 3", "<|start_header_id|>system<|end_header_id|>\n\n",
                         "<|start_header_id|>user<|end_header_id|>\n\n",
                         "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>", "", 1,
                         {"'<|start_header_id|>'+message['role']+'<|end_header_id|>\\n\\n'+message['content']|trim+"
                          "'<|eot_id|>'",
                          NULL}},
    [MDL_CHAT_PHI3] = {"Phi-3", "<|system|>\n", "<|user|>\n", "<|assistant|>\n", "<|end|>", "\n", 0,
                       {"'<|user|>\\n'+message['content']+'<|end|>\\n'", NULL}},
};

/* Whether tpl, recognised as c's style by its markers, writes what mdl_chat_first / mdl_chat_next write (templates
 * that share a style's markers but not its layout: tool-calling variants, "thinking" generation prompts, dated or
 * metadata system prompts of ChatML models): its messages by the style's own expression, a generation prompt of
 * literals equal to c->assistant_open, and for ChatML no dated system message. 0, or -1 after mdl_fail naming what
 * differs. (scripts/chat_check.py holds the accepted ones to transformers' rendering.) */
static int chat_template_check(const char *tpl, const mdl_chat *c) {
    const struct chat_style *st = &STYLES[c->kind];
    const char *name = st->name;
    char *nt = template_norm(tpl);
    if (!nt) return mdl_fail("out of memory (the chat template)");
    const int sig = strstr(nt, st->sig[0]) || (st->sig[1] && strstr(nt, st->sig[1]));
    free(nt);
    if (!sig)
        return mdl_fail("chat: the model's chat template has %s's markers but writes its messages another way, which "
                        "is not reproduced here: give the prompt in its format with -p / -f instead",
                        name);
    if (c->kind == MDL_CHAT_CHATML && (strstr(tpl, "strftime_now") || strstr(tpl, "Today Date")))
        return mdl_fail("chat: the model's chat template (ChatML) writes a dated system message, which is not "
                        "reproduced here: give the prompt in its format with -p / -f instead");
    char gen[256];
    const int g = generation_prompt(tpl, gen, sizeof gen);
    if (g < 0 || (g > 0 && strcmp(gen, c->assistant_open)))
        return mdl_fail("chat: the model's chat template (%s) writes a generation prompt other than %s's plain one "
                        "(a thinking prefix, or one that depends on variables), which is not reproduced here: give "
                        "the prompt in its format with -p / -f instead",
                        name, name);
    return 0;
}

int mdl_chat_init(const mdl_model *m, mdl_chat *c) {
    memset(c, 0, sizeof *c);
    char *tpl;
    if (template_text(m, &tpl)) return -1;
    const int rc = mdl_chat_from_template(tpl, c);
    free(tpl);
    return rc;
}

int mdl_chat_from_template(const char *tpl, mdl_chat *c) {
    memset(c, 0, sizeof *c);
    c->has_template = tpl != NULL;
    if (!tpl || has(tpl, "<|im_start|>")) {
        c->kind = MDL_CHAT_CHATML;
        c->default_system = tpl ? chatml_default_system(tpl) : NULL;
    } else if (has(tpl, "<|start_header_id|>") && has(tpl, "<|eot_id|>")) {
        c->kind = MDL_CHAT_LLAMA3;
        if (has(tpl, "Cutting Knowledge Date")) llama3_date(tpl, c->date, sizeof c->date);
    } else if (has(tpl, "<|user|>") && has(tpl, "<|assistant|>") && has(tpl, "<|end|>")) {
        c->kind = MDL_CHAT_PHI3;
    } else {
        mdl_fail("chat: the model's chat template is none of the styles formatted here (ChatML, Llama 3, Phi-3): give "
                 "the prompt already in its format with -p / -f instead");
        return -1;
    }
    const struct chat_style *st = &STYLES[c->kind];
    c->system_open = st->system_open;
    c->user_open = st->user_open;
    c->assistant_open = st->assistant_open;
    c->turn_end = st->turn_end;
    c->after_end = st->after_end;
    c->trim = st->trim;
    c->bos = tpl && strstr(tpl, "bos_token") != NULL;
    if (tpl && chat_template_check(tpl, c)) {
        mdl_chat_free(c);
        return -1;
    }
    return 0;
}

const char *mdl_chat_style_name(const mdl_chat *c) { return STYLES[c->kind].name; }

void mdl_chat_free(mdl_chat *c) {
    if (!c) return;
    free(c->default_system);
    c->default_system = NULL;
}

/* a growing text */
typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} chat_buf;
static void put_bytes(chat_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void put(chat_buf *b, const char *s) { put_bytes(b, s, strlen(s)); }
/* whether the UTF-8 sequence at s[0..n) (n >= 1) is one of Python's str.isspace() code points, the ones Jinja's trim
 * (str.strip) removes: Unicode's White_Space and \x1c-\x1f; its length in *len */
static int py_space_at(const char *s, size_t n, size_t *len) {
    uint32_t cp;
    *len = tok_utf8_next(s, n, &cp);
    return tok_is_white(cp) || (cp >= 0x1c && cp <= 0x1f);
}
/* a message's content: trimmed of surrounding whitespace where the template trims it (Llama 3's | trim: Python's
 * strip, Unicode spaces too) */
static void put_content(chat_buf *b, const mdl_chat *c, const char *s, size_t n) {
    if (c->trim) {
        size_t k;
        while (n && py_space_at(s, n, &k)) s += k, n -= k;
        for (;;) { /* the last code point: back over continuation bytes to its lead */
            size_t a = n;
            while (a && ((unsigned char)s[a - 1] & 0xc0) == 0x80 && n - a < 3) a--;
            if (!a) break;
            a--;
            if (!py_space_at(s + a, n - a, &k) || a + k != n) break;
            n = a;
        }
    }
    put_bytes(b, s, n);
}
static char *chat_done(chat_buf *b, size_t *len) {
    if (b->oom || !b->p) {
        free(b->p);
        mdl_fail("out of memory (the chat prompt)");
        return NULL;
    }
    if (len) *len = b->n;
    return b->p;
}

/* a message: its header, its content, the turn end and what follows it */
static void put_message(chat_buf *b, const mdl_chat *c, const char *open, const char *s, size_t n) {
    put(b, open);
    put_content(b, c, s, n);
    put(b, c->turn_end);
    put(b, c->after_end);
}

char *mdl_chat_first(const mdl_chat *c, const char *system, const char *user, size_t user_len, size_t *len) {
    chat_buf b = {0};
    put(&b, "");
    const char *sys = system ? system : c->default_system;
    if (c->kind == MDL_CHAT_LLAMA3 && c->date[0]) {
        /* Llama 3.1+: a system message always, its header dated, the given system prompt after it */
        put(&b, c->system_open);
        put(&b, "Cutting Knowledge Date: December 2023\nToday Date: ");
        put(&b, c->date);
        put(&b, "\n\n");
        if (sys) put_content(&b, c, sys, strlen(sys));
        put(&b, c->turn_end);
        put(&b, c->after_end);
    } else if (sys && (sys[0] || c->kind != MDL_CHAT_PHI3)) { /* (Phi-3's template skips an empty one) */
        put_message(&b, c, c->system_open, sys, strlen(sys));
    }
    put_message(&b, c, c->user_open, user, user_len);
    put(&b, c->assistant_open);
    return chat_done(&b, len);
}

char *mdl_chat_next(const mdl_chat *c, int answer_closed, const char *line, size_t line_len, size_t *len) {
    chat_buf b = {0};
    put(&b, "");
    if (!answer_closed) put(&b, c->turn_end);
    put(&b, c->after_end);
    put_message(&b, c, c->user_open, line, line_len);
    put(&b, c->assistant_open);
    return chat_done(&b, len);
}
