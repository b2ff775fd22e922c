/* tokenizer.c: byte-level BPE and SentencePiece-style BPE tokenizers (see tokenizer.h). */
#include "tokenizer.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include "json.h"
#include "portable.h"
#include "tok_unicode.h"

/* ------------------------------------------------------------------ helpers -- */

PF_PRINTF(3, 4)
static void seterr(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Puts "PREFIX: " before the message already in err (the file or source it came from). */
static void prefix_err(char *err, size_t errlen, const char *prefix) {
    if (!err || !errlen) return;
    size_t n = strlen(err); /* every message is written by seterr: terminated */
    char *msg = malloc(n + 1);
    if (!msg) return; /* keeps the message without its prefix */
    memcpy(msg, err, n);
    msg[n] = 0;
    seterr(err, errlen, "%s: %s", prefix, msg);
    free(msg);
}

static uint64_t hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ULL;
    return h ^ (h >> 29);
}

/* Lenient UTF-8 decode: returns the sequence length (1 for an invalid byte, cp = 0xFFFD+byte
 * marker outside Unicode so it is never a letter/number/space). */
static int utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int len;
    uint32_t v;
    if (c >= 0xC2 && c < 0xE0) len = 2, v = c & 0x1F;
    else if (c >= 0xE0 && c < 0xF0) len = 3, v = c & 0x0F;
    else if (c >= 0xF0 && c < 0xF5) len = 4, v = c & 0x07;
    else goto bad;
    if ((size_t)len > n) goto bad;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) goto bad;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && (v < 0x800 || (v >= 0xD800 && v < 0xE000))) || (len == 4 && (v < 0x10000 || v > 0x10FFFF)))
        goto bad;
    *cp = v;
    return len;
bad:
    *cp = 0x110000u + c;
    return 1;
}

static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

enum { CL_OTHER = 0, CL_LETTER = 1, CL_NUMBER = 2, CL_SPACE = 3 };

static int is_white(uint32_t cp) {
    return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

static int cp_class(uint32_t cp) {
    if (cp < 128) {
        if ((cp | 32) >= 'a' && (cp | 32) <= 'z') return CL_LETTER;
        if (cp >= '0' && cp <= '9') return CL_NUMBER;
        if (is_white(cp)) return CL_SPACE;
        return CL_OTHER;
    }
    if (cp >= 0x110000) return CL_OTHER;
    if (is_white(cp)) return CL_SPACE;
    if (in_ranges(tok_unicode_letter, tok_unicode_letter_n, cp)) return CL_LETTER;
    if (in_ranges(tok_unicode_number, tok_unicode_number_n, cp)) return CL_NUMBER;
    return CL_OTHER;
}

/* the tekken pattern's case classes of a code point: CASE_U in [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}], CASE_W in
 * [\p{Ll}\p{Lm}\p{Lo}\p{M}] (both for Lm, Lo and marks) */
enum { CASE_U = 1, CASE_W = 2 };
static int cp_case(uint32_t cp) {
    if (cp < 128) return (cp >= 'A' && cp <= 'Z') ? CASE_U : (cp >= 'a' && cp <= 'z') ? CASE_W : 0;
    if (cp >= 0x110000) return 0;
    return (in_ranges(tok_unicode_upper, tok_unicode_upper_n, cp) ? CASE_U : 0) |
           (in_ranges(tok_unicode_lower, tok_unicode_lower_n, cp) ? CASE_W : 0);
}

/* growable int32 vector */
typedef struct {
    int32_t *v;
    size_t n, cap;
    int oom;
} ivec;

static void ivec_push(ivec *a, int32_t x) {
    if (a->oom) return;
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 64;
        int32_t *nv = realloc(a->v, nc * sizeof *nv);
        if (!nv) {
            a->oom = 1;
            return;
        }
        a->v = nv;
        a->cap = nc;
    }
    a->v[a->n++] = x;
}

/* --------------------------------------------------------------- hash maps -- */

typedef struct {
    int32_t *slot; /* id or -1 */
    size_t mask;
} strmap;

typedef struct {
    uint64_t *key; /* (a << 32 | b) + 1, 0 = empty */
    int32_t *rank, *result;
    size_t mask;
} pairmap;

/* the split patterns: GPT-2's, Llama 3's (digits in threes), Qwen2's (single digits), Mistral's tekken (words by
 * case: [^\r\n\p{L}\p{N}]?U*W+ | [^\r\n\p{L}\p{N}]?U+W* with U = [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}], W =
 * [\p{Ll}\p{Lm}\p{Lo}\p{M}], no contractions, single digits, punctuation runs taking [\r\n/]*) and OpenAI's o200k
 * (GPT-4o: tekken's words, each with an optional contraction (?i:'s|'t|'re|'ve|'m|'ll|'d), digits in threes) */
enum { PRE_NONE = 0, PRE_GPT2 = 1, PRE_LLAMA3 = 2, PRE_QWEN2 = 3, PRE_TEKKEN = 4, PRE_O200K = 5 };
enum { SPM_PREPEND_NONE = 0, SPM_PREPEND_ALWAYS = 1, SPM_PREPEND_FIRST = 2 };

typedef struct {
    int32_t id;
    uint32_t len;
    uint8_t first;   /* first byte of the text */
    uint8_t special; /* matched only with parse_special */
    uint8_t lstrip, rstrip;
} special_tok;

struct infllm_tokenizer {
    tok_kind kind;
    int n_vocab;
    char **text;         /* raw vocab strings */
    uint32_t *text_len;
    char **key;          /* bytes used for lookup and decoding (== text for SPM) */
    uint32_t *key_len;
    float *score;
    uint8_t *type;
    uint8_t *is_special; /* control / special added token (not rendered unless asked) */
    uint8_t *eog;
    strmap keymap;       /* key bytes -> id */
    strmap textmap;      /* raw text -> id */
    pairmap merges;
    int n_merges;
    int use_scores;      /* SPM by scores (GGUF llama) */
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t byte_id[256];
    /* pre-tokenization */
    int digits;          /* 0 none, 1 individual digits, 2 digit runs */
    int pre_regex;       /* PRE_* */
    int add_prefix_space;
    int spm_prepend, spm_split;
    int spm_prepend_cond; /* HF Metaspace: prepend only when not already starting with a space */
    int strip_decode;    /* drop the leading space of the decoded text */
    int32_t bos, eos, eot, unk, pad;
    int32_t unk_fill;    /* emitted for text the vocabulary cannot represent, or -1 to drop it */
    int add_bos, add_eos;
    uint8_t *strip_flags;  /* HF added tokens: bit 0 lstrip, bit 1 rstrip (NULL if none) */
    special_tok *specials; /* sorted by first byte, then length desc */
    int n_specials;
    int sp_first[257];     /* specials with first byte b: [sp_first[b], sp_first[b+1]) */
};

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static int strmap_build(strmap *m, char **strs, const uint32_t *lens, int n, int prefer_first) {
    size_t cap = pow2_at_least((size_t)n * 2 + 1);
    m->slot = malloc(cap * sizeof *m->slot);
    if (!m->slot) return -1;
    memset(m->slot, 0xFF, cap * sizeof *m->slot);
    m->mask = cap - 1;
    for (int i = 0; i < n; i++) {
        if (!strs[i]) continue;
        size_t h = (size_t)hash_bytes(strs[i], lens[i]) & m->mask;
        while (m->slot[h] >= 0) {
            int32_t j = m->slot[h];
            if (lens[j] == lens[i] && memcmp(strs[j], strs[i], lens[i]) == 0) break;
            h = (h + 1) & m->mask;
        }
        if (m->slot[h] < 0 || !prefer_first) m->slot[h] = i;
    }
    return 0;
}

static int32_t strmap_get(const strmap *m, char *const *strs, const uint32_t *lens, const void *s, size_t n) {
    if (!m->slot) return -1;
    size_t h = (size_t)hash_bytes(s, n) & m->mask;
    while (m->slot[h] >= 0) {
        int32_t j = m->slot[h];
        if (lens[j] == n && memcmp(strs[j], s, n) == 0) return j;
        h = (h + 1) & m->mask;
    }
    return -1;
}

static int pairmap_init(pairmap *m, size_t n) {
    size_t cap = pow2_at_least(n * 2 + 1);
    m->key = calloc(cap, sizeof *m->key);
    m->rank = malloc(cap * sizeof *m->rank);
    m->result = malloc(cap * sizeof *m->result);
    m->mask = cap - 1;
    return (m->key && m->rank && m->result) ? 0 : -1;
}

static void pairmap_put(pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t result) {
    uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t h = (size_t)hash_bytes(&k, sizeof k) & m->mask;
    while (m->key[h] && m->key[h] != k) h = (h + 1) & m->mask;
    if (m->key[h] == k) return; /* keep the first (lowest) rank */
    m->key[h] = k;
    m->rank[h] = rank;
    m->result[h] = result;
}

static int pairmap_get(const pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *result) {
    if (!m->key) return 0;
    uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t h = (size_t)hash_bytes(&k, sizeof k) & m->mask;
    while (m->key[h]) {
        if (m->key[h] == k) {
            *rank = m->rank[h];
            *result = m->result[h];
            return 1;
        }
        h = (h + 1) & m->mask;
    }
    return 0;
}

/* ----------------------------------------------------- GPT-2 byte mapping -- */

/* bytes_to_unicode: printable bytes map to themselves, the other 68 (0x00-0x20, 0x7F-0xA0,
 * 0xAD) to U+0100.. in byte order. Computed, so no shared mutable state. */
static int cp2byte(uint32_t cp) {
    if (cp < 256) {
        int printable = (cp >= '!' && cp <= '~') || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF);
        return printable ? (int)cp : -1;
    }
    if (cp < 256 + 33) return (int)(cp - 256);
    if (cp < 256 + 67) return (int)(0x7F + (cp - 289));
    if (cp == 323) return 0xAD;
    return -1;
}

/* Decodes a byte-level token text to raw bytes; returns length or -1 when not decodable. */
static long bytelevel_decode(const char *s, size_t n, char *out) {
    size_t i = 0;
    long o = 0;
    while (i < n) {
        uint32_t cp;
        int k = utf8_next((const unsigned char *)s + i, n - i, &cp);
        int b = cp2byte(cp);
        if (b < 0) return -1;
        out[o++] = (char)b;
        i += (size_t)k;
    }
    return o;
}

/* ----------------------------------------------------------- construction -- */

void tok_free(infllm_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_vocab; i++) {
        /* text may be NULL here: tok_alloc frees a tokenizer whose arrays were not all allocated */
        if (t->key && t->key[i] != (t->text ? t->text[i] : NULL)) free(t->key[i]);
        if (t->text) free(t->text[i]);
    }
    free(t->text);
    free(t->text_len);
    free(t->key);
    free(t->key_len);
    free(t->score);
    free(t->type);
    free(t->is_special);
    free(t->eog);
    free(t->keymap.slot);
    free(t->textmap.slot);
    free(t->merges.key);
    free(t->merges.rank);
    free(t->merges.result);
    free(t->specials);
    free(t->strip_flags);
    free(t);
}

static infllm_tokenizer *tok_alloc(int n) {
    infllm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->n_vocab = n;
    t->text = calloc((size_t)n, sizeof *t->text);
    t->text_len = calloc((size_t)n, sizeof *t->text_len);
    t->key = calloc((size_t)n, sizeof *t->key);
    t->key_len = calloc((size_t)n, sizeof *t->key_len);
    t->score = calloc((size_t)n, sizeof *t->score);
    t->type = calloc((size_t)n, 1);
    t->is_special = calloc((size_t)n, 1);
    t->eog = calloc((size_t)n, 1);
    t->bos = t->eos = t->eot = t->unk = t->pad = t->unk_fill = -1;
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    if (!t->text || !t->text_len || !t->key || !t->key_len || !t->score || !t->type || !t->is_special || !t->eog) {
        tok_free(t);
        return NULL;
    }
    return t;
}

static int set_text(infllm_tokenizer *t, int id, const char *s, size_t n) {
    char *c = malloc(n + 1);
    if (!c) return -1;
    memcpy(c, s, n);
    c[n] = 0;
    free(t->text[id]);
    t->text[id] = c;
    t->text_len[id] = (uint32_t)n;
    return 0;
}

/* "<0xNN>" (exactly two hex digits) -> NN, else -1 */
static int byte_token_value(const char *s, uint32_t len) {
    if (len != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    int v = 0;
    for (int k = 3; k < 5; k++) {
        char c = s[k];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static int is_eog_name(const char *s) {
    static const char *names[] = {"<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|end_of_text|>", "</s>",
                                  "<end_of_turn>", "<|end|>", "<|eom_id|>", NULL};
    for (int i = 0; names[i]; i++)
        if (!strcmp(s, names[i])) return 1;
    return 0;
}

static int cmp_special(const void *a, const void *b) {
    const special_tok *x = a, *y = b;
    if (x->first != y->first) return x->first < y->first ? -1 : 1;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Finishes construction: keys, maps, byte ids, specials, eog. */
static int tok_finish(infllm_tokenizer *t, char *err, size_t errlen) {
    for (int i = 0; i < t->n_vocab; i++) {
        if (!t->text[i] && set_text(t, i, "", 0)) goto oom;
        if (t->text_len[i] > TOK_MAX_PIECE) {
            seterr(err, errlen, "token %d is %u bytes long (at most %d)", i, t->text_len[i], TOK_MAX_PIECE);
            return -1;
        }
        t->key[i] = t->text[i];
        t->key_len[i] = t->text_len[i];
        if (t->kind == TOK_BPE && t->text_len[i] > 0) {
            char *buf = malloc(t->text_len[i] + 1);
            if (!buf) goto oom;
            long n = bytelevel_decode(t->text[i], t->text_len[i], buf);
            if (n >= 0) {
                buf[n] = 0;
                t->key[i] = buf;
                t->key_len[i] = (uint32_t)n;
            } else {
                free(buf);
            }
        }
    }
    if (strmap_build(&t->keymap, t->key, t->key_len, t->n_vocab, 1)) goto oom;
    if (t->kind == TOK_BPE && strmap_build(&t->textmap, t->text, t->text_len, t->n_vocab, 1)) goto oom;
    /* byte tokens */
    if (t->kind == TOK_SPM) {
        for (int i = 0; i < t->n_vocab; i++) {
            int v = byte_token_value(t->text[i], t->text_len[i]);
            if (v >= 0 && t->byte_id[v] < 0) {
                t->byte_id[v] = i;
                if (t->type[i] == TOK_TYPE_NORMAL || t->type[i] == TOK_TYPE_UNDEFINED) t->type[i] = TOK_TYPE_BYTE;
            }
        }
    } else {
        for (int b = 0; b < 256; b++) {
            char c = (char)b;
            t->byte_id[b] = strmap_get(&t->keymap, t->key, t->key_len, &c, 1);
        }
    }
    /* specials */
    int ns = 0;
    for (int i = 0; i < t->n_vocab; i++) {
        int ty = t->type[i];
        if (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_UNKNOWN) t->is_special[i] = 1;
        if ((ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER_DEFINED || ty == TOK_TYPE_UNKNOWN) && t->text_len[i] > 0)
            ns++;
    }
    t->specials = calloc((size_t)ns + 1, sizeof *t->specials);
    if (!t->specials) goto oom;
    for (int i = 0; i < t->n_vocab; i++) {
        int ty = t->type[i];
        if ((ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER_DEFINED || ty == TOK_TYPE_UNKNOWN) && t->text_len[i] > 0) {
            special_tok *sp = &t->specials[t->n_specials++];
            sp->id = i;
            sp->len = t->text_len[i];
            sp->first = (uint8_t)t->text[i][0];
            sp->special = t->is_special[i];
            if (t->strip_flags) {
                sp->lstrip = t->strip_flags[i] & 1;
                sp->rstrip = (t->strip_flags[i] >> 1) & 1;
            }
        }
    }
    qsort(t->specials, (size_t)t->n_specials, sizeof *t->specials, cmp_special);
    {
        int k = 0;
        for (int b = 0; b <= 256; b++) {
            while (k < t->n_specials && t->specials[k].first < b) k++;
            t->sp_first[b] = k;
        }
        t->sp_first[256] = t->n_specials;
    }
    if (t->eot < 0) {
        static const char *eot_names[] = {"<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", NULL};
        for (int k = 0; eot_names[k] && t->eot < 0; k++) t->eot = tok_token_id(t, eot_names[k]);
    }
    for (int i = 0; i < t->n_vocab; i++)
        if (t->is_special[i] && is_eog_name(t->text[i])) t->eog[i] = 1;
    if (t->eos >= 0) t->eog[t->eos] = 1;
    if (t->eot >= 0) t->eog[t->eot] = 1;
    return 0;
oom:
    seterr(err, errlen, "out of memory");
    return -1;
}

static int check_id(int32_t id, int n) { return id >= -1 && id < n; }

/* The GGUF pre name's pattern and flags; *bos_default: whether the vocabulary adds BOS when tokenizer.ggml.add_bos_token
 * is absent (llama.cpp's default for the type: its Llama-3 type's names with ignore_merges, and tekken) */
static int set_pre(infllm_tokenizer *t, const char *pre, int *bos_default, char *err, size_t errlen) {
    *bos_default = 0;
    if (!pre || !*pre || !strcmp(pre, "default") || !strcmp(pre, "gpt2") || !strcmp(pre, "gpt-2") ||
        !strcmp(pre, "mpt") || !strcmp(pre, "olmo") || !strcmp(pre, "jais") || !strcmp(pre, "trillion")) {
        t->pre_regex = PRE_GPT2;
    } else if (!strcmp(pre, "smollm") || !strcmp(pre, "starcoder") || !strcmp(pre, "refact") ||
               !strcmp(pre, "command-r") || !strcmp(pre, "codeshell") || !strcmp(pre, "exaone") ||
               !strcmp(pre, "minerva-7b")) {
        t->digits = 1;
        t->pre_regex = PRE_GPT2;
    } else if (!strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3") || !strcmp(pre, "llama-v3") ||
               !strcmp(pre, "dbrx") || !strcmp(pre, "smaug-bpe") || !strcmp(pre, "falcon3") ||
               !strcmp(pre, "pixtral")) {
        t->pre_regex = PRE_LLAMA3;
        /* (llama.cpp's Llama-3 type, with ignore_merges and BOS; dbrx and smaug-bpe are types of their own there) */
        t->ignore_merges = *bos_default = strcmp(pre, "dbrx") != 0 && strcmp(pre, "smaug-bpe") != 0;
    } else if (!strcmp(pre, "qwen2") || !strcmp(pre, "stablelm2") || !strcmp(pre, "deepseek-r1-qwen") ||
               !strcmp(pre, "hunyuan")) {
        t->pre_regex = PRE_QWEN2;
    } else if (!strcmp(pre, "tekken")) {
        /* Mistral's tekken vocabularies (Nemo, Small 3, Ministral, Devstral): the tokenizer.json's pattern itself, by
         * Unicode case (llama.cpp approximates its classes by ASCII case: a non-ASCII letter is both, a mark neither,
         * so decomposed accents and some non-ASCII words split otherwise there) */
        t->pre_regex = PRE_TEKKEN;
        t->ignore_merges = 1; /* (tekken's tokenizer.json sets ignore_merges, as llama.cpp for this type) */
        *bos_default = 1;
    } else if (!strcmp(pre, "gpt-4o")) {
        /* o200k's pattern (was taken as Llama 3's until session 58: other splits of mixed-case words, contractions
         * and "/" runs, silently) */
        t->pre_regex = PRE_O200K;
    } else {
        seterr(err, errlen, "unsupported pre-tokenizer '%s' (supported: default, gpt2, smollm, starcoder, "
                            "llama-bpe, qwen2, tekken, gpt-4o and aliases)", pre);
        return -1;
    }
    return 0;
}

void tok_gguf_desc_init(tok_gguf_desc *d) {
    memset(d, 0, sizeof *d);
    d->bos_id = d->eos_id = d->unk_id = d->pad_id = d->eot_id = -1;
    d->add_bos = d->add_eos = d->add_space_prefix = -1;
}

static int add_merge_str(infllm_tokenizer *t, const char *m, size_t n, int rank) {
    const char *sp = memchr(m, ' ', n);
    if (!sp || sp == m || sp == m + n - 1) return -1;
    size_t la = (size_t)(sp - m), lb = n - la - 1;
    strmap *tm = t->kind == TOK_BPE ? &t->textmap : &t->keymap;
    char **strs = t->kind == TOK_BPE ? t->text : t->key;
    uint32_t *lens = t->kind == TOK_BPE ? t->text_len : t->key_len;
    int32_t a = strmap_get(tm, strs, lens, m, la);
    int32_t b = strmap_get(tm, strs, lens, sp + 1, lb);
    if (a < 0 || b < 0) return 0; /* ignored, as HF does for merges of unknown tokens */
    char buf[2 * TOK_MAX_PIECE + 2];
    if (la + lb > sizeof buf) return 0;
    memcpy(buf, m, la);
    memcpy(buf + la, sp + 1, lb);
    int32_t r = strmap_get(tm, strs, lens, buf, la + lb);
    if (r < 0) return 0;
    pairmap_put(&t->merges, a, b, rank, r);
    return 0;
}

int tok_load_gguf(const tok_gguf_desc *d, infllm_tokenizer **out, char *err, size_t errlen) {
    if (!out) return -1;
    *out = NULL;
    if (!d || !d->model || !d->tokens || d->n_vocab == 0 || d->n_vocab > (1u << 30)) {
        seterr(err, errlen, "missing model name or tokens");
        return -1;
    }
    tok_kind kind;
    if (!strcmp(d->model, "gpt2")) kind = TOK_BPE;
    else if (!strcmp(d->model, "llama")) kind = TOK_SPM;
    else {
        seterr(err, errlen, "unsupported tokenizer.ggml.model '%s' (gpt2, llama)", d->model);
        return -1;
    }
    int n = (int)d->n_vocab;
    if (!check_id(d->bos_id, n) || !check_id(d->eos_id, n) || !check_id(d->unk_id, n) || !check_id(d->pad_id, n) ||
        !check_id(d->eot_id, n)) {
        seterr(err, errlen, "special token id out of range (n_vocab %d)", n);
        return -1;
    }
    if (kind == TOK_BPE && (!d->merges || d->n_merges == 0)) {
        seterr(err, errlen, "gpt2 model needs tokenizer.ggml.merges");
        return -1;
    }
    infllm_tokenizer *t = tok_alloc(n);
    if (!t) {
        seterr(err, errlen, "out of memory");
        return -1;
    }
    t->kind = kind;
    for (int i = 0; i < n; i++) {
        const char *s = d->tokens[i];
        if (!s) {
            seterr(err, errlen, "token %d is NULL", i);
            goto fail;
        }
        size_t len = d->token_lens ? d->token_lens[i] : strlen(s);
        if (set_text(t, i, s, len)) goto oom;
        t->score[i] = d->scores ? d->scores[i] : 0.0f;
        int ty = d->token_types ? d->token_types[i] : TOK_TYPE_NORMAL;
        t->type[i] = (uint8_t)((ty >= 0 && ty <= 6) ? ty : TOK_TYPE_NORMAL);
    }
    t->bos = d->bos_id;
    t->eos = d->eos_id;
    t->unk = d->unk_id;
    t->pad = d->pad_id;
    t->eot = d->eot_id;
    if (kind == TOK_BPE) {
        int bos_default;
        if (set_pre(t, d->pre, &bos_default, err, errlen)) goto fail;
        /* without tokenizer.ggml.add_bos_token: llama.cpp's default for the pre name (BOS for the Llama 3 family, whose
         * tokenizer_config.json often has no add_bos_token, and tekken; none for the others) */
        t->add_bos = d->add_bos > 0 || (d->add_bos < 0 && bos_default);
    } else {
        t->use_scores = 1;
        t->byte_fallback = 1;
        t->spm_prepend = d->add_space_prefix == 0 ? SPM_PREPEND_NONE : SPM_PREPEND_ALWAYS;
        t->strip_decode = t->spm_prepend != SPM_PREPEND_NONE;
        t->add_bos = d->add_bos != 0;
        /* llama.cpp treats the unk token as a special (UNKNOWN type) */
        if (t->unk >= 0 && t->type[t->unk] == TOK_TYPE_NORMAL) t->type[t->unk] = TOK_TYPE_UNKNOWN;
    }
    t->add_eos = d->add_eos > 0;
    if (d->specials_rstrip) { /* llama.cpp's Phi-3 rule: the special tokens eat the whitespace after them */
        if (!(t->strip_flags = calloc((size_t)t->n_vocab, 1))) goto oom;
        for (int i = 0; i < t->n_vocab; i++) {
            const int ty = t->type[i];
            const char *x = t->text[i] ? t->text[i] : "";
            const int special = ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER_DEFINED || ty == TOK_TYPE_UNKNOWN;
            if ((special || !strcmp(x, "</s>")) && strcmp(x, "<unk>") && strcmp(x, "<s>") && strcmp(x, "<|endoftext|>"))
                t->strip_flags[i] = 2;
        }
    }
    /* text the vocabulary cannot represent (byte-level vocabularies missing a byte, e.g.
     * SmolLM2 has no 0x1D): SentencePiece emits unk as llama.cpp does; byte-level BPE drops it
     * as HF does (its tokenizer.json has unk_token null even when GGUF names an unk id) */
    t->unk_fill = kind == TOK_SPM ? t->unk : -1;
    if (tok_finish(t, err, errlen)) goto fail;
    if (d->merges && d->n_merges) {
        if (pairmap_init(&t->merges, d->n_merges)) goto oom;
        for (uint32_t i = 0; i < d->n_merges; i++) {
            const char *m = d->merges[i];
            if (!m) continue;
            size_t len = d->merge_lens ? d->merge_lens[i] : strlen(m);
            if (add_merge_str(t, m, len, (int)i)) {
                seterr(err, errlen, "merge %u is not \"a b\"", i);
                goto fail;
            }
        }
        t->n_merges = (int)d->n_merges;
        if (kind == TOK_SPM) t->use_scores = 0;
    }
    *out = t;
    return 0;
oom:
    seterr(err, errlen, "out of memory");
fail:
    tok_free(t);
    return -1;
}

/* ---------------------------------------------------------- HF json loader -- */

static const char *jstr(const json_value *v, const char *key) { return json_get_str(v, key, NULL); }

typedef struct {
    int bytelevel, metaspace, digits, regex, add_prefix_space, spm_prepend, spm_split, use_regex_set;
} pre_cfg;

static int parse_pre(const json_value *p, pre_cfg *c, char *err, size_t errlen) {
    if (!p || json_is_null(p)) return 0;
    const char *ty = jstr(p, "type");
    if (!ty) {
        seterr(err, errlen, "pre_tokenizer without type");
        return -1;
    }
    if (!strcmp(ty, "Sequence")) {
        const json_value *a = json_get(p, "pretokenizers");
        for (size_t i = 0; i < json_len(a); i++)
            if (parse_pre(json_index(a, i), c, err, errlen)) return -1;
        return 0;
    }
    if (!strcmp(ty, "ByteLevel")) {
        c->bytelevel = 1;
        c->add_prefix_space = json_get_bool(p, "add_prefix_space", false);
        if (json_get_bool(p, "use_regex", true) && !c->regex) c->regex = PRE_GPT2;
        return 0;
    }
    if (!strcmp(ty, "Digits")) {
        c->digits = json_get_bool(p, "individual_digits", false) ? 1 : 2;
        return 0;
    }
    if (!strcmp(ty, "Split")) {
        const char *re = jstr(json_get(p, "pattern"), "Regex");
        const char *beh = jstr(p, "behavior");
        if ((beh && strcmp(beh, "Isolated")) || json_get_bool(p, "invert", false)) {
            seterr(err, errlen, "Split behavior %s (invert %d) not supported (Isolated only)",
                   beh ? beh : "?", (int)json_get_bool(p, "invert", false));
            return -1;
        }
        static const char *gpt2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
        static const char *llama3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
        static const char *qwen2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                                   "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
        static const char *tekken = "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}"
                                    "\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}"
                                    "\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
        static const char *o200k =
            "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|"
            "'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|"
            "'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
        if (re && !strcmp(re, gpt2)) c->regex = PRE_GPT2;
        else if (re && !strcmp(re, llama3)) c->regex = PRE_LLAMA3;
        else if (re && !strcmp(re, qwen2)) c->regex = PRE_QWEN2;
        else if (re && !strcmp(re, tekken)) c->regex = PRE_TEKKEN;
        else if (re && !strcmp(re, o200k)) c->regex = PRE_O200K;
        else {
            seterr(err, errlen, "unsupported Split pattern %.60s", re ? re : "(non-regex)");
            return -1;
        }
        c->use_regex_set = 1;
        return 0;
    }
    if (!strcmp(ty, "Metaspace")) {
        c->metaspace = 1;
        const char *ps = jstr(p, "prepend_scheme");
        if (ps) c->spm_prepend = !strcmp(ps, "never") ? SPM_PREPEND_NONE : !strcmp(ps, "first") ? SPM_PREPEND_FIRST
                                                                                               : SPM_PREPEND_ALWAYS;
        else c->spm_prepend = json_get_bool(p, "add_prefix_space", true) ? SPM_PREPEND_ALWAYS : SPM_PREPEND_NONE;
        c->spm_split = json_get_bool(p, "split", true);
        const char *rep = jstr(p, "replacement");
        if (rep && strcmp(rep, "\xE2\x96\x81")) {
            seterr(err, errlen, "Metaspace replacement must be U+2581");
            return -1;
        }
        return 0;
    }
    seterr(err, errlen, "unsupported pre_tokenizer %s", ty);
    return -1;
}

/* normalizer: returns via *spm = 1 for the Llama-2 style Prepend("▁") + Replace(" ", "▁"). */
static int parse_norm(const json_value *p, int *prepend, int *replace, char *err, size_t errlen) {
    if (!p || json_is_null(p)) return 0;
    const char *ty = jstr(p, "type");
    if (!ty) return 0;
    if (!strcmp(ty, "Sequence")) {
        const json_value *a = json_get(p, "normalizers");
        for (size_t i = 0; i < json_len(a); i++)
            if (parse_norm(json_index(a, i), prepend, replace, err, errlen)) return -1;
        return 0;
    }
    if (!strcmp(ty, "Prepend")) {
        const char *s = jstr(p, "prepend");
        if (!s || strcmp(s, "\xE2\x96\x81")) goto bad;
        *prepend = 1;
        return 0;
    }
    if (!strcmp(ty, "Replace")) {
        const char *pat = jstr(json_get(p, "pattern"), "String");
        const char *con = jstr(p, "content");
        if (!pat || !con || strcmp(pat, " ") || strcmp(con, "\xE2\x96\x81")) goto bad;
        *replace = 1;
        return 0;
    }
    if (!strcmp(ty, "NFC")) return 0; /* identity for composed text */
bad:
    seterr(err, errlen, "unsupported normalizer %s", ty);
    return -1;
}

static int32_t special_id_from_template(const json_value *post, int first, int *present) {
    /* TemplateProcessing: single = [ {SpecialToken:{id}} , {Sequence:{}} , ... ] */
    *present = 0;
    if (!post) return -1;
    const char *ty = jstr(post, "type");
    if (ty && !strcmp(ty, "Sequence")) {
        const json_value *a = json_get(post, "processors");
        for (size_t i = 0; i < json_len(a); i++) {
            int32_t r = special_id_from_template(json_index(a, i), first, present);
            if (*present) return r;
        }
        return -1;
    }
    if (!ty || strcmp(ty, "TemplateProcessing")) return -1;
    const json_value *single = json_get(post, "single");
    size_t n = json_len(single);
    if (!n) return -1;
    const json_value *item = json_index(single, first ? 0 : n - 1);
    const json_value *st = json_get(item, "SpecialToken");
    if (!st) return -1;
    const char *name = jstr(st, "id");
    const json_value *sp = json_get(json_get(post, "special_tokens"), name ? name : "");
    int64_t id;
    if (!json_int(json_index(json_get(sp, "ids"), 0), &id)) return -1;
    *present = 1;
    return (int32_t)id;
}

static int load_hf_doc(const json_value *root, infllm_tokenizer **out, char *err, size_t errlen) {
    const json_value *model = json_get(root, "model");
    const char *mtype = jstr(model, "type");
    const json_value *vocab = json_get(model, "vocab");
    const json_value *merges = json_get(model, "merges");
    if (!json_is(model, JSON_OBJECT) || (mtype && strcmp(mtype, "BPE")) || !json_is(vocab, JSON_OBJECT)) {
        seterr(err, errlen, "only model.type BPE with a vocab object is supported (got %s)",
               mtype ? mtype : "?");
        return -1;
    }
    const char *csp = jstr(model, "continuing_subword_prefix");
    const char *eows = jstr(model, "end_of_word_suffix");
    if ((csp && *csp) || (eows && *eows)) {
        seterr(err, errlen, "continuing_subword_prefix/end_of_word_suffix not supported");
        return -1;
    }
    pre_cfg pc;
    memset(&pc, 0, sizeof pc);
    if (parse_pre(json_get(root, "pre_tokenizer"), &pc, err, errlen)) return -1;
    int nprepend = 0, nreplace = 0;
    if (parse_norm(json_get(root, "normalizer"), &nprepend, &nreplace, err, errlen)) return -1;
    tok_kind kind;
    if (pc.bytelevel) kind = TOK_BPE;
    else if (pc.metaspace || nreplace) kind = TOK_SPM;
    else {
        const char *dt = jstr(json_get(root, "decoder"), "type");
        if (dt && !strcmp(dt, "ByteLevel")) kind = TOK_BPE, pc.bytelevel = 1;
        else {
            seterr(err, errlen, "need a ByteLevel or Metaspace pre-tokenizer (or SentencePiece normalizer)");
            return -1;
        }
    }
    /* vocab size: max id over vocab and added tokens */
    int64_t maxid = -1;
    for (uint32_t i = 0; i < vocab->len; i++) {
        int64_t id;
        if (!json_int(&vocab->u.members[i].value, &id) || id < 0 || id >= (1 << 30)) {
            seterr(err, errlen, "vocab['%s'] is not a valid id", vocab->u.members[i].key);
            return -1;
        }
        if (id > maxid) maxid = id;
    }
    const json_value *added = json_get(root, "added_tokens");
    for (size_t i = 0; i < json_len(added); i++) {
        int64_t id;
        const json_value *a = json_index(added, i);
        if (!json_int(json_get(a, "id"), &id) || id < 0 || id >= (1 << 30) || !jstr(a, "content")) {
            seterr(err, errlen, "added_tokens[%zu] needs an id and content", i);
            return -1;
        }
        if (id > maxid) maxid = id;
    }
    if (maxid < 0) {
        seterr(err, errlen, "empty vocab");
        return -1;
    }
    if (maxid >= (int64_t)vocab->len + (int64_t)json_len(added) + 65536) {
        seterr(err, errlen, "ids are too sparse (max id %lld for %u entries)", (long long)maxid,
               vocab->len + (uint32_t)json_len(added));
        return -1;
    }
    infllm_tokenizer *t = tok_alloc((int)maxid + 1);
    if (!t) {
        seterr(err, errlen, "out of memory");
        return -1;
    }
    t->kind = kind;
    for (int i = 0; i < t->n_vocab; i++) t->type[i] = TOK_TYPE_UNUSED;
    for (uint32_t i = 0; i < vocab->len; i++) {
        const json_member *m = &vocab->u.members[i];
        int id = (int)m->value.i;
        if (set_text(t, id, m->key, m->key_len)) goto oom;
        t->type[id] = TOK_TYPE_NORMAL;
    }
    for (size_t i = 0; i < json_len(added); i++) {
        const json_value *a = json_index(added, i);
        size_t len;
        const char *c = json_str(json_get(a, "content"), &len);
        int id = (int)json_get_int(a, "id", 0);
        if (set_text(t, id, c, len)) goto oom;
        t->type[id] = json_get_bool(a, "special", false) ? TOK_TYPE_CONTROL : TOK_TYPE_USER_DEFINED;
        uint8_t fl = (uint8_t)(json_get_bool(a, "lstrip", false) | (json_get_bool(a, "rstrip", false) << 1));
        if (fl && !t->strip_flags && !(t->strip_flags = calloc((size_t)t->n_vocab, 1))) goto oom;
        if (fl) t->strip_flags[id] = fl;
    }
    t->byte_fallback = json_get_bool(model, "byte_fallback", false);
    t->fuse_unk = json_get_bool(model, "fuse_unk", false);
    t->ignore_merges = json_get_bool(model, "ignore_merges", false);
    if (kind == TOK_BPE) {
        t->digits = pc.digits;
        t->pre_regex = pc.regex;
        t->add_prefix_space = pc.add_prefix_space;
    } else {
        t->spm_prepend = pc.metaspace ? pc.spm_prepend : (nprepend ? SPM_PREPEND_ALWAYS : SPM_PREPEND_NONE);
        t->spm_split = pc.metaspace ? pc.spm_split : 0;
        t->spm_prepend_cond = pc.metaspace;
        t->strip_decode = t->spm_prepend != SPM_PREPEND_NONE;
    }
    const char *unk = jstr(model, "unk_token");
    if (tok_finish(t, err, errlen)) goto fail;
    if (unk) t->unk = tok_token_id(t, unk);
    t->unk_fill = t->unk;
    /* merges */
    size_t nm = json_len(merges);
    if (pairmap_init(&t->merges, nm ? nm : 1)) goto oom;
    for (size_t i = 0; i < nm; i++) {
        const json_value *m = json_index(merges, i);
        size_t len;
        const char *s = json_str(m, &len);
        if (s) {
            if (add_merge_str(t, s, len, (int)i)) {
                seterr(err, errlen, "merges[%zu] is not \"a b\"", i);
                goto fail;
            }
        } else if (json_len(m) == 2 && json_is(json_index(m, 0), JSON_STRING) && json_is(json_index(m, 1), JSON_STRING)) {
            const json_value *x = json_index(m, 0), *y = json_index(m, 1);
            int32_t a = tok_token_id(t, x->u.str), b = tok_token_id(t, y->u.str);
            if (a < 0 || b < 0 || x->len + y->len > 2 * TOK_MAX_PIECE) continue;
            char buf[2 * TOK_MAX_PIECE + 1];
            memcpy(buf, x->u.str, x->len);
            memcpy(buf + x->len, y->u.str, y->len);
            buf[x->len + y->len] = 0;
            int32_t r = tok_token_id(t, buf);
            if (r >= 0) pairmap_put(&t->merges, a, b, (int32_t)i, r);
        } else {
            seterr(err, errlen, "merges[%zu] is neither \"a b\" nor [a, b]", i);
            goto fail;
        }
    }
    t->n_merges = (int)nm;
    /* BOS/EOS */
    int present;
    int32_t b = special_id_from_template(json_get(root, "post_processor"), 1, &present);
    if (present && b >= 0 && b < t->n_vocab) {
        t->bos = b;
        t->add_bos = 1;
    }
    int32_t e = special_id_from_template(json_get(root, "post_processor"), 0, &present);
    if (present && e >= 0 && e < t->n_vocab && e != t->bos) {
        t->eos = e;
        t->add_eos = 1;
    }
    if (t->bos < 0) {
        static const char *bn[] = {"<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>", NULL};
        for (int k = 0; bn[k] && t->bos < 0; k++) t->bos = tok_token_id(t, bn[k]);
    }
    if (t->eos < 0) {
        static const char *en[] = {"</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>", NULL};
        for (int k = 0; en[k] && t->eos < 0; k++) t->eos = tok_token_id(t, en[k]);
    }
    if (t->eos >= 0) t->eog[t->eos] = 1;
    *out = t;
    return 0;
oom:
    seterr(err, errlen, "out of memory");
fail:
    tok_free(t);
    return -1;
}

int tok_load_hf_json_mem(const char *text, size_t len, infllm_tokenizer **out, char *err, size_t errlen) {
    if (!out) return -1;
    *out = NULL;
    json_error je;
    json_doc *doc = json_parse(text, len, NULL, &je);
    if (!doc) {
        seterr(err, errlen, "tokenizer.json: JSON error at byte %zu: %s", je.offset, je.msg);
        return -1;
    }
    int rc = load_hf_doc(json_root(doc), out, err, errlen);
    if (rc) prefix_err(err, errlen, "tokenizer.json");
    json_free(doc);
    return rc;
}

int tok_load_hf_json(const char *path, infllm_tokenizer **out, char *err, size_t errlen) {
    if (!out) return -1;
    *out = NULL;
    json_error je;
    json_doc *doc = json_parse_file(path, NULL, &je);
    if (!doc) {
        char why[192];
        seterr(err, errlen, "%s: %s", path, json_error_text(&je, why, sizeof why));
        return -1;
    }
    int rc = load_hf_doc(json_root(doc), out, err, errlen);
    if (rc) prefix_err(err, errlen, path);
    json_free(doc);
    return rc;
}

/* A special token of tokenizer_config.json: a string, an AddedToken object {"content": ...}, null or absent
 * (NULL, 0). Another type: -1, so that the file is refused rather than its token silently dropped. */
static int cfg_token(const json_value *cfg, const char *key, const char **tok) {
    const json_value *v = json_get(cfg, key);
    *tok = NULL;
    if (!v || json_is(v, JSON_NULL)) return 0;
    if (json_is(v, JSON_STRING)) *tok = v->u.str;
    else if (json_is(v, JSON_OBJECT)) *tok = jstr(v, "content");
    return *tok ? 0 : -1;
}

/* tokenizer_config.json's special tokens and add_bos_token over the ones tokenizer.json implies. The file is
 * optional; a file that is there but does not parse, or gives a key a value of the wrong type, is an error. */
static int apply_tokenizer_config(infllm_tokenizer *t, const char *path, char *err, size_t errlen) {
    struct stat sb;
    if (stat(path, &sb) != 0 && errno == ENOENT) return 0;
    json_error je;
    json_doc *cfg = json_parse_file(path, NULL, &je);
    if (!cfg) {
        char why[192];
        seterr(err, errlen, "%s: %s", path, json_error_text(&je, why, sizeof why));
        return -1;
    }
    const json_value *r = json_root(cfg);
    int rc = -1;
    if (!json_is(r, JSON_OBJECT)) {
        seterr(err, errlen, "%s: not a JSON object", path);
        goto out;
    }
    static const char *const keys[4] = {"bos_token", "eos_token", "pad_token", "unk_token"};
    const char *tok[4];
    for (int i = 0; i < 4; i++)
        if (cfg_token(r, keys[i], &tok[i])) {
            seterr(err, errlen, "%s: '%s' is neither a string, a {\"content\": string} object nor null", path, keys[i]);
            goto out;
        }
    const json_value *abv = json_get(r, "add_bos_token");
    bool ab = false;
    if (abv && !json_is(abv, JSON_NULL) && !json_bool(abv, &ab)) {
        seterr(err, errlen, "%s: 'add_bos_token' is not true, false or null", path);
        goto out;
    }
    int32_t id[4];
    for (int i = 0; i < 4; i++) id[i] = tok[i] ? tok_token_id(t, tok[i]) : -1;
    if (id[0] >= 0) t->bos = id[0];
    if (id[1] >= 0) {
        t->eos = id[1];
        t->eog[t->eos] = 1;
    }
    if (id[2] >= 0) t->pad = id[2];
    if (id[3] >= 0) t->unk = id[3];
    if (abv && !json_is(abv, JSON_NULL)) t->add_bos = ab && t->bos >= 0;
    rc = 0;
out:
    json_free(cfg);
    return rc;
}

int tok_load_hf_dir(const char *dir, infllm_tokenizer **out, char *err, size_t errlen) {
    if (!out || !dir) return -1;
    size_t n = strlen(dir) + 32;
    char *p = malloc(n);
    if (!p) {
        seterr(err, errlen, "out of memory");
        return -1;
    }
    snprintf(p, n, "%s/tokenizer.json", dir);
    int rc = tok_load_hf_json(p, out, err, errlen);
    if (rc == 0) {
        snprintf(p, n, "%s/tokenizer_config.json", dir);
        rc = apply_tokenizer_config(*out, p, err, errlen);
        if (rc) {
            tok_free(*out);
            *out = NULL;
        }
    }
    free(p);
    return rc;
}

/* ------------------------------------------------------------- BPE engine -- */

typedef struct {
    double key; /* rank or -score: smaller first */
    int left, right;
    uint32_t size;
    int32_t result;
} bigram;

typedef struct {
    int *start, *len, *prev, *next;
    int32_t *id;
    bigram *heap;
    size_t nheap, capheap;
    size_t cap;
    int oom;
} bpe_work;

static int bg_less(const bigram *a, const bigram *b) {
    if (a->key != b->key) return a->key < b->key;
    return a->left < b->left;
}

static void heap_push(bpe_work *w, bigram g) {
    if (w->oom) return;
    if (w->nheap == w->capheap) {
        size_t nc = w->capheap ? w->capheap * 2 : 64;
        bigram *nh = realloc(w->heap, nc * sizeof *nh);
        if (!nh) {
            w->oom = 1;
            return;
        }
        w->heap = nh;
        w->capheap = nc;
    }
    size_t i = w->nheap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bg_less(&g, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = g;
}

static bigram heap_pop(bpe_work *w) {
    bigram top = w->heap[0];
    bigram last = w->heap[--w->nheap];
    size_t i = 0, n = w->nheap;
    while (1) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && bg_less(&w->heap[c + 1], &w->heap[c])) c++;
        if (!bg_less(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

static int work_reserve(bpe_work *w, size_t n) {
    if (n <= w->cap) return 0;
    size_t nc = w->cap ? w->cap : 64;
    while (nc < n) nc *= 2;
    int *a = realloc(w->start, nc * sizeof(int));
    if (a) w->start = a;
    int *b = realloc(w->len, nc * sizeof(int));
    if (b) w->len = b;
    int *c = realloc(w->prev, nc * sizeof(int));
    if (c) w->prev = c;
    int *d = realloc(w->next, nc * sizeof(int));
    if (d) w->next = d;
    int32_t *e = realloc(w->id, nc * sizeof(int32_t));
    if (e) w->id = e;
    if (!a || !b || !c || !d || !e) return -1;
    w->cap = nc;
    return 0;
}

static void try_pair(const infllm_tokenizer *t, bpe_work *w, const char *s, int l, int r) {
    if (l < 0 || r < 0) return;
    bigram g;
    g.left = l;
    g.right = r;
    g.size = (uint32_t)(w->len[l] + w->len[r]);
    if (t->use_scores) {
        int32_t id = strmap_get(&t->keymap, t->key, t->key_len, s + w->start[l], g.size);
        if (id < 0) return;
        g.key = -t->score[id];
        g.result = id;
    } else {
        int32_t rank, res;
        if (w->id[l] < 0 || w->id[r] < 0 || !pairmap_get(&t->merges, w->id[l], w->id[r], &rank, &res)) return;
        g.key = (double)rank;
        g.result = res;
    }
    heap_push(w, g);
}

static void emit_bytes(const infllm_tokenizer *t, const char *s, int n, ivec *out) {
    for (int i = 0; i < n; i++) {
        int32_t b = t->byte_id[(unsigned char)s[i]];
        if (b >= 0) ivec_push(out, b);
        else if (t->unk_fill >= 0) ivec_push(out, t->unk_fill);
    }
}

/* BPE of one word s[0..n) (n > 0). */
static void bpe_word(const infllm_tokenizer *t, bpe_work *w, const char *s, int n, ivec *out) {
    if (t->ignore_merges) {
        int32_t id = strmap_get(&t->keymap, t->key, t->key_len, s, (size_t)n);
        if (id >= 0) {
            ivec_push(out, id);
            return;
        }
    }
    if (work_reserve(w, (size_t)n)) {
        out->oom = 1;
        return;
    }
    int ns = 0;
    for (int i = 0; i < n;) {
        int k = 1;
        if (t->kind == TOK_SPM) {
            uint32_t cp;
            k = utf8_next((const unsigned char *)s + i, (size_t)(n - i), &cp);
        }
        int32_t id = strmap_get(&t->keymap, t->key, t->key_len, s + i, (size_t)k);
        if (id < 0 && !t->use_scores && t->byte_fallback) {
            /* HF: byte fallback before merging */
            int all = 1;
            for (int j = 0; j < k; j++)
                if (t->byte_id[(unsigned char)s[i + j]] < 0) all = 0;
            if (all) {
                for (int j = 0; j < k; j++) {
                    w->start[ns] = i + j;
                    w->len[ns] = 1;
                    w->id[ns] = t->byte_id[(unsigned char)s[i + j]];
                    ns++;
                }
                i += k;
                continue;
            }
        }
        if (id < 0 && !t->use_scores && t->unk_fill >= 0) {
            if (t->fuse_unk && ns > 0 && w->id[ns - 1] == t->unk_fill && w->len[ns - 1] > 0 &&
                strmap_get(&t->keymap, t->key, t->key_len, s + w->start[ns - 1], (size_t)w->len[ns - 1]) < 0) {
                w->len[ns - 1] += k;
                i += k;
                continue;
            }
            id = t->unk_fill;
        }
        w->start[ns] = i;
        w->len[ns] = k;
        w->id[ns] = id;
        ns++;
        i += k;
    }
    for (int i = 0; i < ns; i++) {
        w->prev[i] = i - 1;
        w->next[i] = i + 1 < ns ? i + 1 : -1;
    }
    w->nheap = 0;
    for (int i = 0; i + 1 < ns; i++) try_pair(t, w, s, i, i + 1);
    while (w->nheap > 0 && !w->oom) {
        bigram g = heap_pop(w);
        int l = g.left, r = g.right;
        if (w->len[l] == 0 || w->len[r] == 0 || w->next[l] != r || (uint32_t)(w->len[l] + w->len[r]) != g.size)
            continue;
        w->len[l] += w->len[r];
        w->id[l] = g.result;
        w->len[r] = 0;
        w->next[l] = w->next[r];
        if (w->next[r] >= 0) w->prev[w->next[r]] = l;
        try_pair(t, w, s, w->prev[l], l);
        try_pair(t, w, s, l, w->next[l]);
    }
    if (w->oom) {
        out->oom = 1;
        return;
    }
    for (int i = 0; i >= 0 && ns > 0; i = w->next[i]) {
        if (w->id[i] >= 0) ivec_push(out, w->id[i]);
        else if (t->byte_fallback) emit_bytes(t, s + w->start[i], w->len[i], out);
        else if (t->unk_fill >= 0) ivec_push(out, t->unk_fill);
    }
}

/* ---------------------------------------------------------- pre-tokenizers -- */

typedef struct {
    uint32_t *cp;
    int *off; /* byte offset of each code point; off[n] = byte length */
    int *cls;
    int *cas; /* the tekken pattern's case classes (CASE_*), filled for it only */
    size_t cap;
} cpbuf;

static int cpbuf_fill(cpbuf *b, const char *s, int n, int *ncp, int with_case) {
    if ((size_t)n + 1 > b->cap) {
        size_t nc = (size_t)n + 64;
        uint32_t *a = realloc(b->cp, nc * sizeof *a);
        if (a) b->cp = a;
        int *o = realloc(b->off, nc * sizeof *o);
        if (o) b->off = o;
        int *c = realloc(b->cls, nc * sizeof *c);
        if (c) b->cls = c;
        int *u = realloc(b->cas, nc * sizeof *u);
        if (u) b->cas = u;
        if (!a || !o || !c || !u) return -1;
        b->cap = nc;
    }
    int k = 0;
    for (int i = 0; i < n;) {
        uint32_t cp;
        int l = utf8_next((const unsigned char *)s + i, (size_t)(n - i), &cp);
        b->cp[k] = cp;
        b->off[k] = i;
        b->cls[k] = cp_class(cp);
        if (with_case) b->cas[k] = cp_case(cp);
        k++;
        i += l;
    }
    b->off[k] = n;
    *ncp = k;
    return 0;
}

static uint32_t lower_ascii(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* Length (in code points) of a contraction at i ('s 't 're 've 'm 'll 'd), or 0. */
static int contraction(const uint32_t *cp, int i, int n, int icase) {
    if (cp[i] != '\'' || i + 1 >= n) return 0;
    uint32_t a = icase ? lower_ascii(cp[i + 1]) : cp[i + 1];
    uint32_t b = i + 2 < n ? (icase ? lower_ascii(cp[i + 2]) : cp[i + 2]) : 0;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

static int is_crlf(uint32_t c) { return c == '\r' || c == '\n'; }

/* tekken's U*W+ from s (U, W: the CASE_* classes), as a backtracking engine takes it: the longest U* after which
 * W+ matches at least one, W+ then as long as it goes. Its end, or -1. */
static int tekken_head_tail(const int *cas, int s, int n) {
    int u = s;
    while (u < n && (cas[u] & CASE_U)) u++;
    for (int k = u; k >= s; k--) /* U* gives back from its longest: O(run) in all (a failed k costs one test) */
        if (k < n && (cas[k] & CASE_W)) {
            int e = k + 1;
            while (e < n && (cas[e] & CASE_W)) e++;
            return e;
        }
    return -1;
}
/* tekken's U+W* from s: its end, or -1 */
static int tekken_head_opt_tail(const int *cas, int s, int n) {
    int e = s;
    while (e < n && (cas[e] & CASE_U)) e++;
    if (e == s) return -1;
    while (e < n && (cas[e] & CASE_W)) e++;
    return e;
}

/* The Llama-3 family's  ?[^\s\p{L}\p{N}]+[\r\n]* (with slash, tekken's and o200k's [\r\n/]*), then \s*[\r\n]+, from i:
 * the end of the first that matches, or -1 */
static int punct_or_newlines(const uint32_t *cp, const int *cls, int i, int n, int slash) {
    int j = (cp[i] == ' ' && i + 1 < n) ? i + 1 : i;
    if (cls[j] == CL_OTHER) {
        while (j < n && cls[j] == CL_OTHER) j++;
        while (j < n && (is_crlf(cp[j]) || (slash && cp[j] == '/'))) j++;
        return j;
    }
    if (cls[i] == CL_SPACE) {
        int k = i, last_nl = -1;
        while (k < n && cls[k] == CL_SPACE) {
            if (is_crlf(cp[k])) last_nl = k;
            k++;
        }
        if (last_nl >= 0) return last_nl + 1;
    }
    return -1;
}

/* One regex match starting at i (code points); returns its end (> i). cas: the CASE_* classes (PRE_TEKKEN and
 * PRE_O200K only). */
static int regex_match(int kind, const uint32_t *cp, const int *cls, const int *cas, int i, int n) {
    if (kind == PRE_TEKKEN || kind == PRE_O200K) {
        /* [^\r\n\p{L}\p{N}]?U*W+ | [^\r\n\p{L}\p{N}]?U+W*: each alternative with the optional char first, then
         * without it (the engine's order); o200k: then an optional contraction (greedy: taken where it matches) */
        const int opt = !is_crlf(cp[i]) && cls[i] != CL_LETTER && cls[i] != CL_NUMBER;
        int e;
        if ((opt && i + 1 < n && (e = tekken_head_tail(cas, i + 1, n)) > i) || (e = tekken_head_tail(cas, i, n)) > i ||
            (opt && i + 1 < n && (e = tekken_head_opt_tail(cas, i + 1, n)) > i) ||
            (e = tekken_head_opt_tail(cas, i, n)) > i)
            return kind == PRE_O200K && e < n ? e + contraction(cp, e, n, 1) : e;
        if (cls[i] == CL_NUMBER) { /* \p{N} (tekken), \p{N}{1,3} (o200k) */
            int j = i + 1;
            while (kind == PRE_O200K && j < n && j - i < 3 && cls[j] == CL_NUMBER) j++;
            return j;
        }
        if ((e = punct_or_newlines(cp, cls, i, n, 1)) > i) return e;
    } else if (kind == PRE_GPT2) {
        int c = contraction(cp, i, n, 0);
        if (c) return i + c;
        int j = (cp[i] == ' ' && i + 1 < n) ? i + 1 : i;
        if (cls[j] == CL_LETTER) {
            while (j < n && cls[j] == CL_LETTER) j++;
            return j;
        }
        if (cls[j] == CL_NUMBER) {
            while (j < n && cls[j] == CL_NUMBER) j++;
            return j;
        }
        if (cls[j] == CL_OTHER) {
            while (j < n && cls[j] == CL_OTHER) j++;
            return j;
        }
    } else {
        int c = contraction(cp, i, n, 1);
        if (c) return i + c;
        /* [^\r\n\p{L}\p{N}]?\p{L}+ */
        if (cls[i] == CL_LETTER || (!is_crlf(cp[i]) && cls[i] != CL_NUMBER && i + 1 < n && cls[i + 1] == CL_LETTER)) {
            int j = i + 1;
            while (j < n && cls[j] == CL_LETTER) j++;
            return j;
        }
        if (cls[i] == CL_NUMBER) {
            int j = i + 1, maxd = kind == PRE_LLAMA3 ? 3 : 1;
            while (j < n && j - i < maxd && cls[j] == CL_NUMBER) j++;
            return j;
        }
        const int e = punct_or_newlines(cp, cls, i, n, 0);
        if (e > i) return e;
    }
    /* \s+(?!\S) | \s+ */
    if (cls[i] == CL_SPACE) {
        int k = i;
        while (k < n && cls[k] == CL_SPACE) k++;
        if (k == n) return k;
        if (k - i >= 2) return k - 1;
        return k;
    }
    return i + 1; /* unreachable for well-formed classes; keeps progress */
}

typedef struct {
    const infllm_tokenizer *t;
    bpe_work *w;
    cpbuf *cb;
    ivec *out;
} enc_ctx;

static void pre_regex_split(enc_ctx *e, const char *s, int n) {
    int ncp;
    if (cpbuf_fill(e->cb, s, n, &ncp, e->t->pre_regex == PRE_TEKKEN || e->t->pre_regex == PRE_O200K)) {
        e->out->oom = 1;
        return;
    }
    int *off = e->cb->off;
    for (int i = 0; i < ncp;) {
        int j = regex_match(e->t->pre_regex, e->cb->cp, e->cb->cls, e->cb->cas, i, ncp);
        bpe_word(e->t, e->w, s + off[i], off[j] - off[i], e->out);
        i = j;
    }
}

static void pre_digits_then_regex(enc_ctx *e, const char *s, int n) {
    const infllm_tokenizer *t = e->t;
    if (!t->digits) {
        if (t->pre_regex) pre_regex_split(e, s, n);
        else bpe_word(t, e->w, s, n, e->out);
        return;
    }
    /* split digits first; the regex pass reuses the code point buffer, so collect pieces */
    int i = 0;
    while (i < n) {
        uint32_t cp;
        int l = utf8_next((const unsigned char *)s + i, (size_t)(n - i), &cp);
        int j = i;
        if (cp_class(cp) == CL_NUMBER) {
            j = i + l;
            if (t->digits == 2) {
                while (j < n) {
                    int l2 = utf8_next((const unsigned char *)s + j, (size_t)(n - j), &cp);
                    if (cp_class(cp) != CL_NUMBER) break;
                    j += l2;
                }
            }
            bpe_word(t, e->w, s + i, j - i, e->out);
        } else {
            while (j < n) {
                int l2 = utf8_next((const unsigned char *)s + j, (size_t)(n - j), &cp);
                if (cp_class(cp) == CL_NUMBER) break;
                j += l2;
            }
            if (t->pre_regex) pre_regex_split(e, s + i, j - i);
            else bpe_word(t, e->w, s + i, j - i, e->out);
        }
        i = j;
    }
}

/* Encodes one text segment (no special tokens inside). */
static void encode_segment(enc_ctx *e, const char *s, int n, int first_segment) {
    const infllm_tokenizer *t = e->t;
    if (t->kind == TOK_BPE) {
        if (n <= 0) return;
        if (t->add_prefix_space && s[0] != ' ') {
            char *tmp = malloc((size_t)n + 1);
            if (!tmp) {
                e->out->oom = 1;
                return;
            }
            tmp[0] = ' ';
            memcpy(tmp + 1, s, (size_t)n);
            pre_digits_then_regex(e, tmp, n + 1);
            free(tmp);
        } else {
            pre_digits_then_regex(e, s, n);
        }
        return;
    }
    /* SPM: spaces -> U+2581, optional prefix */
    int prepend = t->spm_prepend == SPM_PREPEND_ALWAYS || (t->spm_prepend == SPM_PREPEND_FIRST && first_segment);
    if (n <= 0) return;
    if (t->spm_prepend_cond && (s[0] == ' ' || (n >= 3 && !memcmp(s, "\xE2\x96\x81", 3)))) prepend = 0;
    size_t spaces = 0;
    for (int i = 0; i < n; i++) spaces += s[i] == ' ';
    size_t m = (size_t)n + spaces * 2 + (prepend ? 3 : 0);
    char *buf = malloc(m + 1);
    if (!buf) {
        e->out->oom = 1;
        return;
    }
    size_t o = 0;
    if (prepend) {
        memcpy(buf, "\xE2\x96\x81", 3);
        o = 3;
    }
    for (int i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(buf + o, "\xE2\x96\x81", 3);
            o += 3;
        } else {
            buf[o++] = s[i];
        }
    }
    if (t->spm_split) {
        size_t st = 0;
        for (size_t i = 3; i + 3 <= o; i++) {
            if (!memcmp(buf + i, "\xE2\x96\x81", 3)) {
                if (i > st) bpe_word(t, e->w, buf + st, (int)(i - st), e->out);
                st = i;
                i += 2;
            }
        }
        if (o > st) bpe_word(t, e->w, buf + st, (int)(o - st), e->out);
    } else {
        bpe_word(t, e->w, buf, (int)o, e->out);
    }
    free(buf);
}

int tok_is_space_byte(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
int tok_is_white(uint32_t cp) { return is_white(cp); }
size_t tok_utf8_next(const char *s, size_t n, uint32_t *cp) { return (size_t)utf8_next((const unsigned char *)s, n, cp); }

int tok_encode(const infllm_tokenizer *t, const char *text, size_t len, int add_bos, int parse_special,
               int32_t *ids, int cap) {
    if (!t || (!text && len)) return INT32_MIN;
    if (len > (size_t)1 << 30) return INT32_MIN;
    ivec out = {0};
    bpe_work w;
    memset(&w, 0, sizeof w);
    cpbuf cb;
    memset(&cb, 0, sizeof cb);
    enc_ctx e = {t, &w, &cb, &out};
    if (add_bos < 0) add_bos = t->add_bos;
    if (add_bos && t->bos >= 0) ivec_push(&out, t->bos);
    size_t seg = 0, i = 0;
    int first = 1;
    while (i < len) {
        unsigned char c = (unsigned char)text[i];
        int found = -1;
        for (int k = t->sp_first[c]; k < t->sp_first[c + 1]; k++) {
            const special_tok *sp = &t->specials[k];
            if (sp->special && !parse_special) continue;
            uint32_t sl = sp->len;
            if (sl <= len - i && memcmp(text + i, t->text[sp->id], sl) == 0) {
                found = k;
                break; /* sorted by length desc: longest first */
            }
        }
        if (found < 0) {
            i++;
            continue;
        }
        const special_tok *sp = &t->specials[found];
        size_t seg_end = i;
        if (sp->lstrip)
            while (seg_end > seg && tok_is_space_byte(text[seg_end - 1])) seg_end--;
        if (seg_end > seg) encode_segment(&e, text + seg, (int)(seg_end - seg), first);
        first = 0;
        ivec_push(&out, sp->id);
        i += t->text_len[sp->id];
        if (sp->rstrip)
            while (i < len && tok_is_space_byte(text[i])) i++;
        seg = i;
    }
    if (len > seg) encode_segment(&e, text + seg, (int)(len - seg), first);
    free(w.start);
    free(w.len);
    free(w.prev);
    free(w.next);
    free(w.id);
    free(w.heap);
    free(cb.cp);
    free(cb.off);
    free(cb.cls);
    free(cb.cas);
    if (out.oom || out.n > (size_t)INT32_MAX) {
        free(out.v);
        return INT32_MIN;
    }
    int n = (int)out.n;
    if (n > cap || (n > 0 && !ids)) {
        free(out.v);
        return -n;
    }
    if (n) memcpy(ids, out.v, (size_t)n * sizeof *ids);
    free(out.v);
    return n;
}

/* ---------------------------------------------------------------- decoding -- */

int tok_decode_piece(const infllm_tokenizer *t, int32_t id, int render_special, char *buf, int cap) {
    if (!t || id < 0 || id >= t->n_vocab) return INT32_MIN;
    int ty = t->type[id];
    if ((t->is_special[id] || ty == TOK_TYPE_CONTROL) && !render_special) return 0;
    char tmp[3 * TOK_MAX_PIECE];
    const char *src;
    int n;
    if (t->kind == TOK_BPE) {
        src = t->key[id];
        n = (int)t->key_len[id];
    } else if (ty == TOK_TYPE_BYTE && byte_token_value(t->text[id], t->text_len[id]) >= 0) {
        tmp[0] = (char)byte_token_value(t->text[id], t->text_len[id]);
        src = tmp;
        n = 1;
    } else {
        const char *s = t->text[id];
        uint32_t L = t->text_len[id];
        n = 0;
        for (uint32_t i = 0; i < L;) {
            if (i + 3 <= L && !memcmp(s + i, "\xE2\x96\x81", 3)) {
                tmp[n++] = ' ';
                i += 3;
            } else {
                tmp[n++] = s[i++];
            }
        }
        src = tmp;
    }
    if (n > cap || (n > 0 && !buf)) return -n;
    if (n) memcpy(buf, src, (size_t)n);
    return n;
}

long tok_decode(const infllm_tokenizer *t, const int32_t *ids, int n, int render_special, char *buf, size_t cap) {
    if (!t || (n > 0 && !ids)) return -1;
    size_t total = 0;
    int first = 1;
    char piece[3 * TOK_MAX_PIECE];
    for (int i = 0; i < n; i++) {
        int k = tok_decode_piece(t, ids[i], render_special, piece, (int)sizeof piece);
        if (k == INT32_MIN) continue;
        if (k < 0) k = 0;
        if (!render_special && (t->is_special[ids[i]] || t->type[ids[i]] == TOK_TYPE_CONTROL)) continue;
        const char *p = piece;
        if (first && t->strip_decode && k > 0 && p[0] == ' ') {
            p++;
            k--;
        }
        first = 0;
        if (buf && total + (size_t)k < cap) memcpy(buf + total, p, (size_t)k);
        total += (size_t)k;
    }
    if (total >= cap) {
        if (buf && cap) buf[cap - 1] = 0;
        return -(long)(total + 1);
    }
    if (buf) buf[total] = 0;
    return (long)total;
}

size_t tok_utf8_complete(const char *buf, size_t len) {
    if (!buf || len == 0) return 0;
    /* look back at most 3 bytes for a lead byte whose sequence is cut off */
    size_t i = len;
    int back = 0;
    while (i > 0 && back < 4) {
        unsigned char c = (unsigned char)buf[i - 1];
        if ((c & 0xC0) != 0x80) {
            int need = c >= 0xF0 && c < 0xF5 ? 4 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 1;
            if (need > back + 1) return i - 1; /* incomplete */
            return len;
        }
        i--;
        back++;
    }
    return len;
}

/* ---------------------------------------------------------------- queries -- */

tok_kind tok_get_kind(const infllm_tokenizer *t) { return t ? t->kind : TOK_BPE; }
int tok_n_vocab(const infllm_tokenizer *t) { return t ? t->n_vocab : 0; }
int32_t tok_bos(const infllm_tokenizer *t) { return t ? t->bos : -1; }
int32_t tok_eos(const infllm_tokenizer *t) { return t ? t->eos : -1; }
int32_t tok_eot(const infllm_tokenizer *t) { return t ? t->eot : -1; }
int32_t tok_unk(const infllm_tokenizer *t) { return t ? t->unk : -1; }
int32_t tok_pad(const infllm_tokenizer *t) { return t ? t->pad : -1; }
int tok_add_bos_default(const infllm_tokenizer *t) { return t ? t->add_bos : 0; }

int tok_is_special(const infllm_tokenizer *t, int32_t id) {
    return t && id >= 0 && id < t->n_vocab && (t->is_special[id] || t->type[id] == TOK_TYPE_CONTROL);
}

int tok_is_eog(const infllm_tokenizer *t, int32_t id) { return t && id >= 0 && id < t->n_vocab && t->eog[id]; }

int32_t tok_token_id(const infllm_tokenizer *t, const char *text) {
    if (!t || !text) return -1;
    size_t n = strlen(text);
    if (t->kind == TOK_BPE) return strmap_get(&t->textmap, t->text, t->text_len, text, n);
    return strmap_get(&t->keymap, t->key, t->key_len, text, n);
}

const char *tok_token_text(const infllm_tokenizer *t, int32_t id) {
    return (t && id >= 0 && id < t->n_vocab) ? t->text[id] : NULL;
}
