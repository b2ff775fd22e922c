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

/* today in local time, as transformers' strftime_now reads it: 0, or -1 when the clock cannot be read */
static int local_today(struct tm *tmv) {
    const time_t now = time(NULL);
#ifdef _WIN32
    return localtime_s(tmv, &now) == 0 ? 0 : -1;
#else
    return localtime_r(&now, tmv) ? 0 : -1;
#endif
}

/* Llama 3.1+'s "Today Date": today's (strftime_now's "%d %b %Y", local time, as transformers renders it) when the
 * template asks for it, else its date_string literal ("26 Jul 2024" in Llama 3.1 / 3.3) */
static void llama3_date(const char *tpl, char *date, size_t n) {
    snprintf(date, n, "26 Jul 2024");
    if (strstr(tpl, "strftime_now")) {
        struct tm tmv;
        if (!local_today(&tmv)) strftime(date, n, "%d %b %Y", &tmv);
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

/* ---- Mistral's [INST] templates: what they write for a message, read by walking the template's tags ----
 * The other styles share one layout per style (a signature expression); Mistral's checkpoints each spell theirs
 * (spaces around [INST] / [/INST], the system prompt in the first or the last user message or a [SYSTEM_PROMPT] of
 * its own, the answer with or without a leading space), and write a message over several tags (a user message in
 * pieces around an "is string" test, tool-calling branches in between). So the message expressions are read off the
 * template: the branch of the message loop for a role is walked as transformers renders it for infllm's messages
 * (string contents, no tools, no tool calls), its output tags joined, and that expression must have one of the
 * shapes written here; anything else on the way (an unknown condition, a set, a raise, text) refuses the template. */

/* one piece of a template: a tag ({{ }}, {% %}, {# #}: kind '{', '%', '#') or the text between tags (kind 't') */
typedef struct {
    const char *p;
    size_t n;
    char kind;
} tpl_piece;

/* the piece at p (*p != 0) in *t, and what follows it; a tag's string literals are skipped whole (a "}}" inside one
 * does not end it); an unterminated tag runs to the end */
static const char *tpl_next(const char *p, tpl_piece *t) {
    t->p = p;
    if (p[0] == '{' && (p[1] == '{' || p[1] == '%' || p[1] == '#')) {
        const char close = p[1] == '{' ? '}' : p[1];
        t->kind = p[1];
        const char *q = p + 2;
        while (*q && !(q[0] == close && q[1] == '}')) {
            if (t->kind != '#' && (*q == '\'' || *q == '"')) {
                const char qc = *q++;
                while (*q && *q != qc) q += (q[0] == '\\' && q[1]) ? 2 : 1;
                if (*q) q++;
                continue;
            }
            q++;
        }
        if (*q) q += 2;
        t->n = (size_t)(q - p);
        return q;
    }
    const char *q = p + 1;
    while (*q && !(q[0] == '{' && (q[1] == '{' || q[1] == '%' || q[1] == '#'))) q++;
    t->kind = 't';
    t->n = (size_t)(q - p);
    return q;
}

/* a tag's content in template_norm's form, without its delimiters and whitespace-control dashes ("if x", "'a'+b");
 * malloc'ed, NULL when out of memory */
static char *tag_norm(const tpl_piece *t) {
    char *raw = copy_text(t->p, t->n);
    char *nt = raw ? template_norm(raw) : NULL;
    free(raw);
    if (!nt) return NULL;
    size_t n = strlen(nt), a = 2;
    if (n >= 4) n -= 2; /* the closing }} / %} */
    else a = n = 0;
    if (a < n && nt[a] == '-') a++;
    if (n > a && nt[n - 1] == '-') n--;
    memmove(nt, nt + a, n - a);
    nt[n - a] = 0;
    return nt;
}

static int starts(const char *s, const char *prefix) { return !strncmp(s, prefix, strlen(prefix)); }

/* whether a template tag's dash or transformers' trim_blocks / lstrip_blocks drop the blank text t between prev
 * and next (either may be NULL) */
static int blank_dropped(const tpl_piece *prev, const tpl_piece *t, const tpl_piece *next) {
    for (size_t i = 0; i < t->n; i++)
        if (!tok_is_space_byte(t->p[i])) return 0;
    if (next && next->n > 2 && next->p[2] == '-') return 1;
    if (prev && prev->n > 2 && prev->p[prev->n - 3] == '-') return 1;
    /* trim_blocks: the newline after a block tag; lstrip_blocks: the spaces and tabs before one on its line */
    if (prev && prev->kind != '{' && t->p[0] == '\n' && next && next->kind != '{') {
        for (size_t i = 1; i < t->n; i++)
            if (t->p[i] != ' ' && t->p[i] != '\t') return 0;
        return 1;
    }
    return 0;
}

enum { MSYS_NONE = 0, MSYS_FIRST = 1, MSYS_LAST = 2 };

/* A condition of a message branch as transformers evaluates it for infllm's messages (contents non-empty strings,
 * no tools, no tool calls): 1 true, 0 false, -1 not known here. A test of the caller's system prompt placing it in
 * the first or last user message gives sys_value and sets *sys_kind. */
static int mistral_cond(const char *cond, int sys_value, int *sys_kind) {
    static const char *const first[] = {"loop.firstandsystem_messageisdefined"};
    static const char *const last[] = {"loop.lastandsystem_messageisdefined",
                                       "(message==user_messages[-1])andsystem_messageisdefined",
                                       "message==user_messages[-1]andsystem_messageisdefined",
                                       "loop.index==last_user_messageandsystem_messageisdefined"};
    for (size_t i = 0; i < sizeof first / sizeof *first; i++)
        if (!strcmp(cond, first[i])) return *sys_kind = MSYS_FIRST, sys_value;
    for (size_t i = 0; i < sizeof last / sizeof *last; i++)
        if (!strcmp(cond, last[i])) return *sys_kind = MSYS_LAST, sys_value;
    /* tools given, a message with tool calls: never here */
    static const char *const no_tools[] = {"toolsisnotnone", "toolsisdefinedandtoolsisnotnone", "message.tool_calls",
                                           "(message.tool_callsisdefined", "message['tool_calls']isdefined",
                                           "message.get('tool_calls')", "has_tools"};
    for (size_t i = 0; i < sizeof no_tools / sizeof *no_tools; i++)
        if (starts(cond, no_tools[i])) return 0;
    if (starts(cond, "(message['content']isnoneormessage['content']==''")) return 0; /* an empty content: raises */
    if (!strcmp(cond, "message['content']isstring") ||
        !strcmp(cond, "message['content']isstringandmessage['content']!=''"))
        return 1;
    return -1;
}

/* The expression a message branch writes: from the piece after its role test (p) to the branch's end (its elif /
 * else / endif), the output tags on the path mistral_cond takes, joined by + into *out (template_norm's form).
 * *sys_kind: the system test met on the way (MSYS_*). 0, or -1 when the path holds anything not known here, -2 when
 * out of memory. */
static int mistral_branch(const char *p, int sys_value, int *sys_kind, chat_buf *out) {
    enum { MAXD = 16 };
    int active[MAXD], taken[MAXD], d = 0; /* per nesting level: writing now; a branch of its if taken */
    active[0] = 1;
    taken[0] = 1;
    tpl_piece prev = {0}, t, next;
    int have_prev = 0, rc = -1;
    const char *q = p;
    while (*q) {
        q = tpl_next(q, &t);
        if (t.kind == '#') continue;
        if (t.kind == 't') {
            const int has_next = *q != 0;
            if (has_next) tpl_next(q, &next);
            if (active[d] && !blank_dropped(have_prev ? &prev : NULL, &t, has_next ? &next : NULL)) return -1;
            continue;
        }
        prev = t;
        have_prev = 1;
        char *s = tag_norm(&t);
        if (!s) return -2;
        int ok = 1;
        if (t.kind == '{') {
            if (active[d]) {
                if (strstr(s, "raise_exception") || !*s) ok = 0;
                else {
                    if (out->n) put(out, "+");
                    put(out, s);
                }
            }
        } else if (starts(s, "endif")) {
            if (d == 0) {
                rc = 0;
                free(s);
                break;
            }
            d--;
        } else if (starts(s, "elif") || starts(s, "else")) {
            if (d == 0) {
                rc = 0;
                free(s);
                break;
            }
            const int parent = active[d - 1];
            if (taken[d] || !parent) {
                active[d] = 0;
            } else if (starts(s, "else")) {
                active[d] = taken[d] = 1;
            } else {
                const int v = mistral_cond(s + 4, sys_value, sys_kind);
                if (v < 0) ok = 0;
                active[d] = taken[d] = v > 0;
            }
        } else if (starts(s, "if")) {
            if (d + 1 >= MAXD) ok = 0;
            else {
                const int parent = active[d];
                d++;
                if (!parent) {
                    active[d] = 0;
                    taken[d] = 1;
                } else {
                    const int v = mistral_cond(s + 2, sys_value, sys_kind);
                    if (v < 0) ok = 0;
                    active[d] = taken[d] = v > 0;
                }
            }
        } else if (active[d]) {
            ok = 0; /* a set, a loop, a macro on the path taken */
        }
        free(s);
        if (!ok) return -1;
    }
    return out->oom ? -2 : rc;
}

/* the branch of the template's message loop for a role: the piece after its {% if / elif message['role'] == 'R' %}
 * test; NULL when there is none or more than one, or out of memory (*oom set) */
static const char *role_branch(const char *tpl, const char *role, int *oom) {
    char want[64];
    snprintf(want, sizeof want, "message['role']=='%s'", role);
    const char *found = NULL;
    tpl_piece t;
    for (const char *q = tpl; *q;) {
        q = tpl_next(q, &t);
        if (t.kind != '%') continue;
        char *s = tag_norm(&t);
        if (!s) {
            *oom = 1;
            return NULL;
        }
        const int hit = (starts(s, "if") && !strcmp(s + 2, want)) || (starts(s, "elif") && !strcmp(s + 4, want));
        free(s);
        if (hit) {
            if (found) return NULL;
            found = q;
        }
    }
    return found;
}

/* expr = 'A' + middle + 'B' (template_norm's form, A and B without quotes or escapes, at most n - 1 bytes): A and
 * B into a and b; 0, or -1 when expr has another shape */
static int literal_around(const char *expr, const char *middle, char *a, char *b, size_t n) {
    const char *m = strstr(expr, middle);
    const size_t ml = strlen(middle), el = strlen(expr);
    if (expr[0] != '\'' || !m || m - expr < 2 || m[-1] != '\'' || el < (size_t)(m - expr) + ml + 2 ||
        m[ml] != '\'' || expr[el - 1] != '\'')
        return -1;
    const char *a0 = expr + 1, *a1 = m - 1, *b0 = m + ml + 1, *b1 = expr + el - 1;
    if ((size_t)(a1 - a0) >= n || (size_t)(b1 - b0) >= n || b1 < b0) return -1;
    for (const char *x = a0; x < a1; x++)
        if (*x == '\'' || *x == '\\') return -1;
    for (const char *x = b0; x < b1; x++)
        if (*x == '\'' || *x == '\\') return -1;
    memcpy(a, a0, (size_t)(a1 - a0));
    a[a1 - a0] = 0;
    memcpy(b, b0, (size_t)(b1 - b0));
    b[b1 - b0] = 0;
    return 0;
}

/* today (local time, as transformers' strftime_now) in fmt, of strftime's directives for dates (%Y %y %m %d %e %b
 * %B %a %A %j), %% and literal characters, onto b; -1 for any other directive (the format is the template's) */
static int put_date(chat_buf *b, const char *fmt) {
    struct tm tmv;
    if (local_today(&tmv)) return -1;
    for (const char *f = fmt; *f; f++) {
        if (*f != '%') {
            put_bytes(b, f, 1);
            continue;
        }
        char part[64] = "";
        switch (*++f) { /* (a literal format each: the template's text is never strftime's format) */
        case 'Y': strftime(part, sizeof part, "%Y", &tmv); break;
        case 'y': snprintf(part, sizeof part, "%02d", (tmv.tm_year + 1900) % 100); break;
        case 'm': strftime(part, sizeof part, "%m", &tmv); break;
        case 'd': strftime(part, sizeof part, "%d", &tmv); break;
        case 'e': snprintf(part, sizeof part, "%2d", tmv.tm_mday); break; /* (msvcrt's strftime has no %e) */
        case 'b': strftime(part, sizeof part, "%b", &tmv); break;
        case 'B': strftime(part, sizeof part, "%B", &tmv); break;
        case 'a': strftime(part, sizeof part, "%a", &tmv); break;
        case 'A': strftime(part, sizeof part, "%A", &tmv); break;
        case 'j': strftime(part, sizeof part, "%j", &tmv); break;
        case '%': part[0] = '%'; break;
        default: return -1;
        }
        put(b, part);
    }
    return 0;
}

/* A Jinja expression of string literals and names bound by {% set NAME = strftime_now("FORMAT") %} (today, local
 * time, as transformers renders it) joined by +, at *pp in the raw template: its value, malloc'ed; NULL when it is
 * anything else, or out of memory (*oom set) */
static char *eval_string_expr(const char *tpl, const char *p, int *oom) {
    chat_buf b = {0};
    put(&b, "");
    for (;;) {
        while (tok_is_space_byte(*p)) p++;
        if (*p == '\'' || *p == '"') {
            const char q = *p++;
            for (; *p && *p != q; p++) {
                if (*p == '\\' && p[1]) {
                    const char e = *++p;
                    const char *rep = e == 'n' ? "\n" : e == 't' ? "\t" : e == 'r' ? "\r" : NULL;
                    char one[3] = {e, 0, 0};
                    if (!rep && e != '\\' && e != '\'' && e != '"') one[0] = '\\', one[1] = e; /* kept, as Python */
                    put(&b, rep ? rep : one);
                } else {
                    put_bytes(&b, p, 1);
                }
            }
            if (*p != q) break;
            p++;
        } else if (*p == '_' || isalpha((unsigned char)*p)) {
            const char *n0 = p;
            while (*p == '_' || isalnum((unsigned char)*p)) p++;
            /* the name's {% set NAME = strftime_now("FMT") %} */
            char want[96], fmt[64] = "";
            snprintf(want, sizeof want, "set%.*s=strftime_now('", (int)(p - n0 < 60 ? p - n0 : 60), n0);
            tpl_piece t;
            for (const char *q = tpl; *q && !fmt[0];) {
                q = tpl_next(q, &t);
                if (t.kind != '%') continue;
                char *s = tag_norm(&t);
                if (!s) *oom = 1;
                if (s && starts(s, want)) {
                    const char *f = s + strlen(want), *e = strstr(f, "')");
                    if (e && !e[2] && e > f && (size_t)(e - f) < sizeof fmt) memcpy(fmt, f, (size_t)(e - f));
                }
                free(s);
            }
            if (!fmt[0]) break;
            if (put_date(&b, fmt)) break;
        } else {
            break;
        }
        while (tok_is_space_byte(*p)) p++;
        if (*p == '+') {
            p++;
            continue;
        }
        if ((p[0] == '-' && p[1] == '%' && p[2] == '}') || (p[0] == '%' && p[1] == '}')) {
            if (b.oom) break;
            return b.p;
        }
        break;
    }
    *oom |= b.oom;
    free(b.p);
    return NULL;
}

/* the template's {% set NAME = ... %} of literals (eval_string_expr); *found 1 when the template sets NAME */
static char *template_string_set(const char *tpl, const char *name, int *found, int *oom) {
    *found = 0;
    tpl_piece t;
    for (const char *q = tpl; *q;) {
        q = tpl_next(q, &t);
        if (t.kind != '%') continue;
        const char *p = t.p + 2;
        while (*p == '-' || tok_is_space_byte(*p)) p++;
        if (strncmp(p, "set", 3) || !tok_is_space_byte(p[3])) continue;
        p += 3;
        while (tok_is_space_byte(*p)) p++;
        const size_t nl = strlen(name);
        if (strncmp(p, name, nl) || (p[nl] != '=' && !tok_is_space_byte(p[nl]))) continue;
        p += nl;
        while (tok_is_space_byte(*p)) p++;
        if (*p != '=') continue;
        *found = 1;
        return eval_string_expr(tpl, p + 1, oom);
    }
    return NULL;
}

/* The system prompt as a message of its own: every '[SYSTEM_PROMPT]...' the template writes (normalised) is
 * OPEN + (a system prompt's expression) + '[/SYSTEM_PROMPT]', all with the same OPEN, which goes to c->sys_open.
 * 0, or -1 when one is written another way. */
static int mistral_system_message(const char *nt, mdl_chat *c) {
    static const char *const values[] = {"system_message", "system_prompt", "default_system_message",
                                         "message['content']", "messages[0]['content']",
                                         "message['content'][0]['text']", "messages[0]['content'][0]['text']"};
    /* Ministral 3's: the open, then messages[0]'s content in its own tags, then the close */
    static const char *const split = "'-}}{%-ifmessages[0]['content']isstring%}{{-messages[0]['content']-}}";
    int n = 0;
    for (const char *a = strstr(nt, "'[SYSTEM_PROMPT]"); a; a = strstr(a + 1, "'[SYSTEM_PROMPT]")) {
        const char *e = strchr(a + 1, '\'');
        if (!e || (size_t)(e - a - 1) >= sizeof c->sys_open) return -1;
        char open[sizeof c->sys_open];
        memcpy(open, a + 1, (size_t)(e - a - 1));
        open[e - a - 1] = 0;
        int known = starts(e, split);
        for (size_t i = 0; !known && i < sizeof values / sizeof *values; i++) {
            char want[96];
            snprintf(want, sizeof want, "'+%s+'[/SYSTEM_PROMPT]'", values[i]);
            known = starts(e, want);
        }
        if (!known || (n && strcmp(open, c->sys_open))) return -1;
        snprintf(c->sys_open, sizeof c->sys_open, "%s", open);
        n++;
    }
    snprintf(c->sys_close, sizeof c->sys_close, "[/SYSTEM_PROMPT]");
    return n ? 0 : -1;
}

static int mistral_other_way(int oom, const char *what) {
    if (oom) return mdl_fail("out of memory (the chat template)");
    return mdl_fail("chat: the model's chat template has Mistral's [INST] markers but writes its %s another way, which "
                    "is not reproduced here: give the prompt in its format with -p / -f instead",
                    what);
}

/* c's Mistral pieces from the template (see the section's head). 0, or -1 after mdl_fail naming what is not
 * reproduced. */
static int mistral_read(const char *tpl, mdl_chat *c) {
    char *nt = template_norm(tpl);
    if (!nt) return mdl_fail("out of memory (the chat template)");
    int rc = -1, oom = 0, r = 0; /* r: mistral_branch's, -2 when out of memory */
    const char *ub = role_branch(tpl, "user", &oom), *ab = role_branch(tpl, "assistant", &oom);
    chat_buf user = {0}, user_sys = {0}, answer = {0};
    int sys_kind = MSYS_NONE, sys_kind2 = MSYS_NONE, ignored = MSYS_NONE;
    put(&user, "");
    put(&user_sys, "");
    put(&answer, "");
    if (!ub || (r = mistral_branch(ub, 0, &sys_kind, &user)) != 0 ||
        literal_around(user.p, "+message['content']+", c->inst_open, c->inst_close, sizeof c->inst_open) ||
        !strstr(c->inst_open, "[INST]") || !strstr(c->inst_close, "[/INST]")) {
        mistral_other_way(oom || r == -2, "user messages");
        goto done;
    }
    if (!ab || (r = mistral_branch(ab, 0, &ignored, &answer)) != 0) {
        mistral_other_way(oom || r == -2, "answers");
        goto done;
    }
    /* an answer: [' ' +] content [| trim] + the end (eos_token, or a literal). The leading space is the model's own
     * (a SentencePiece model's first answer piece carries it); a space or anything between the content and the end
     * is not: a sampled EOS is fed as it comes, so nothing could be put before it */
    const char *a = answer.p;
    if (starts(a, "' '+")) a += 4;
    if (!starts(a, "message['content']")) {
        mistral_other_way(0, "answers");
        goto done;
    }
    a += strlen("message['content']");
    if (starts(a, "|trim")) a += 5; /* (the answer as generated is fed: infllm cannot trim it, as for Llama 3) */
    if (!strcmp(a, "+eos_token")) {
        snprintf(c->eos, sizeof c->eos, "</s>");
    } else if (starts(a, "+'") && strlen(a) > 3 && strlen(a) - 3 < sizeof c->eos && a[strlen(a) - 1] == '\'' &&
               !strpbrk(a + 2, "\\ ") && strchr(a + 2, '\'') == a + strlen(a) - 1) {
        snprintf(c->eos, sizeof c->eos, "%.*s", (int)(strlen(a) - 3), a + 2);
        c->eos_literal = 1;
    } else {
        mistral_other_way(0, "answers");
        goto done;
    }
    /* the system prompt: in a user message (a system test in the user branch), a message of its own, or none */
    if (sys_kind != MSYS_NONE) {
        char want[96];
        snprintf(want, sizeof want, "'%s'+system_message+'\\n\\n'+message['content']+'%s'", c->inst_open,
                 c->inst_close);
        if ((r = mistral_branch(ub, 1, &sys_kind2, &user_sys)) != 0 || strcmp(user_sys.p, want)) {
            mistral_other_way(r == -2, "system prompt");
            goto done;
        }
        c->system_place = sys_kind == MSYS_FIRST ? MDL_CHAT_SYS_FIRST_USER : MDL_CHAT_SYS_LAST_USER;
    } else if (strstr(nt, "[SYSTEM_PROMPT]")) {
        if (mistral_system_message(nt, c)) {
            mistral_other_way(0, "system prompt");
            goto done;
        }
        c->system_place = MDL_CHAT_SYS_OWN;
        int found;
        c->default_system = template_string_set(tpl, "default_system_message", &found, &oom);
        if (oom) {
            mdl_fail("out of memory (the chat template)");
            goto done;
        }
        if (found && !c->default_system) {
            mdl_fail("chat: the model's chat template (Mistral) computes its default system prompt in a way not "
                     "reproduced here: give one with --system, or the prompt in its format with -p / -f");
            goto done;
        }
    } else if (!strstr(tpl, "system") && !strstr(tpl, "<<SYS>>")) {
        c->system_place = MDL_CHAT_SYS_NONE; /* (the original v0.1 / v0.2 templates: a system message raises) */
    } else {
        mistral_other_way(0, "system prompt");
        goto done;
    }
    rc = 0;
done:
    free(nt);
    free(user.p);
    free(user_sys.p);
    free(answer.p);
    return rc;
}

/* The styles: their message pieces, and the expression by which a template of the style writes a message
 * (template_norm's form; chat_template_check) */
static const struct chat_style {
    const char *name, *system_open, *user_open, *assistant_open, *turn_end, *after_end;
    int trim;
    const char *sig[2];
} STYLES[4] = {
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
    /* its pieces are the template's own (mistral_read) */
    [MDL_CHAT_MISTRAL] = {"Mistral", "", "", "", "</s>", "", 0, {NULL, NULL}},
};

/* Whether tpl, recognised as c's style by its markers, writes what mdl_chat_first / mdl_chat_next write (templates
 * that share a style's markers but not its layout: tool-calling variants, "thinking" generation prompts, dated or
 * metadata system prompts of ChatML models): its messages by the style's own expression, a generation prompt of
 * literals equal to c->assistant_open, and for ChatML no dated system message. 0, or -1 after mdl_fail naming what
 * differs. (scripts/chat_check.py holds the accepted ones to transformers' rendering.) */
static int chat_template_check(const char *tpl, const mdl_chat *c) {
    const struct chat_style *st = &STYLES[c->kind];
    const char *name = st->name;
    char *nt = st->sig[0] ? template_norm(tpl) : NULL;
    if (st->sig[0] && !nt) return mdl_fail("out of memory (the chat template)");
    /* (Mistral's messages were read off the template by mistral_read) */
    const int sig = !st->sig[0] || strstr(nt, st->sig[0]) || (st->sig[1] && strstr(nt, st->sig[1]));
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
    } else if (has(tpl, "[INST]") && has(tpl, "[/INST]")) {
        c->kind = MDL_CHAT_MISTRAL;
    } else {
        mdl_fail("chat: the model's chat template is none of the styles formatted here (ChatML, Llama 3, Phi-3, "
                 "Mistral): give the prompt already in its format with -p / -f instead");
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
    if (c->kind == MDL_CHAT_MISTRAL) {
        if (mistral_read(tpl, c)) {
            mdl_chat_free(c);
            return -1;
        }
        c->turn_end = c->eos; /* (into c itself: a mdl_chat is used where it was made, never copied) */
    }
    if (tpl && chat_template_check(tpl, c)) {
        mdl_chat_free(c);
        return -1;
    }
    return 0;
}

int mdl_chat_set_eos(mdl_chat *c, const infllm_tokenizer *tok) {
    if (c->kind != MDL_CHAT_MISTRAL || c->eos_literal) return 0;
    const int32_t id = tok ? tok_eos(tok) : -1;
    const char *text = id >= 0 ? tok_token_text(tok, id) : NULL;
    if (!text || !text[0] || strlen(text) >= sizeof c->eos)
        return mdl_fail("chat: the model's chat template (Mistral) ends an answer with the EOS token, and the "
                        "tokenizer %s: give the prompt in its format with -p / -f instead",
                        text && text[0] ? "names one longer than 63 bytes" : "has none");
    snprintf(c->eos, sizeof c->eos, "%s", text);
    return 0;
}

const char *mdl_chat_style_name(const mdl_chat *c) { return STYLES[c->kind].name; }

void mdl_chat_free(mdl_chat *c) {
    if (!c) return;
    free(c->default_system);
    c->default_system = NULL;
}

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

/* Mistral's first turn: the system prompt where the template writes it (given even when empty: the templates test
 * that a system message is there, not its content), the user message, no generation prompt */
static char *mistral_first(const mdl_chat *c, const char *system, const char *user, size_t user_len, size_t *len) {
    if (system && c->system_place == MDL_CHAT_SYS_NONE) {
        mdl_fail("chat: the model's chat template (Mistral, without a system role: transformers raises on a system "
                 "message) takes no system prompt: drop --system, or put it in the message");
        return NULL;
    }
    chat_buf b = {0};
    put(&b, "");
    const char *sys = system ? system : c->default_system;
    if (sys && c->system_place == MDL_CHAT_SYS_OWN) {
        put(&b, c->sys_open);
        put(&b, sys);
        put(&b, c->sys_close);
    }
    put(&b, c->inst_open);
    if (system && (c->system_place == MDL_CHAT_SYS_FIRST_USER || c->system_place == MDL_CHAT_SYS_LAST_USER)) {
        put(&b, system);
        put(&b, "\n\n");
    }
    put_bytes(&b, user, user_len);
    put(&b, c->inst_close);
    return chat_done(&b, len);
}

char *mdl_chat_first(const mdl_chat *c, const char *system, const char *user, size_t user_len, size_t *len) {
    if (c->kind == MDL_CHAT_MISTRAL) return mistral_first(c, system, user, user_len, len);
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
    if (c->kind == MDL_CHAT_MISTRAL) { /* (a system prompt of the last user message is not repeated: see mtok.h) */
        put(&b, c->inst_open);
        put_bytes(&b, line, line_len);
        put(&b, c->inst_close);
        return chat_done(&b, len);
    }
    put_message(&b, c, c->user_open, line, line_len);
    put(&b, c->assistant_open);
    return chat_done(&b, len);
}
