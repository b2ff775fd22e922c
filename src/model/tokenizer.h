/*
 * tokenizer.h: BPE tokenizers (GPT-2 byte-level BPE and SentencePiece-style BPE) built from
 * GGUF metadata arrays or from a Hugging Face tokenizer.json.
 *
 * Two kinds:
 *   TOK_BPE (GGUF tokenizer.ggml.model = "gpt2"; HF BPE + ByteLevel): text -> special-token
 *     split -> pre-tokenizer (hand-written matchers of llama.cpp's regexes, chosen by the pre
 *     name: "default"/"gpt2"/"mpt"/"olmo" = GPT-2 regex; "smollm"/"starcoder"/"refact"/
 *     "command-r"/"codeshell"/"exaone" = \p{N} split then GPT-2 regex; "llama-bpe"/"llama3"/
 *     "dbrx"/"smaug-bpe"/"falcon3"/"pixtral" = Llama-3 regex (all but dbrx and smaug-bpe also
 *     ignore_merges, as llama.cpp); "qwen2"/"stablelm2"/"deepseek-r1-qwen" = Qwen2 regex; "tekken" = Mistral's
 *     tekken pattern (words by Unicode case, Lu/Lt/Lm/Lo/M heads and Ll/Lm/Lo/M tails; single
 *     digits; ignore_merges), by its Unicode classes where llama.cpp approximates them by ASCII
 *     case; "gpt-4o" = o200k's pattern (tekken's words + (?i:'s|'t|...)?, \p{N}{1,3}; it was
 *     taken as Llama 3's before session 58); other names are rejected. Note: llama.cpp's
 *     "default" regex differs slightly from GPT-2's. A tokenizer.json's Split takes these
 *     patterns verbatim) -> bytes
 *     mapped through GPT-2 bytes_to_unicode -> BPE merges by rank (priority queue, O(n log n)
 *     per word). \p{L} / \p{N} / \s and tekken's case classes follow Unicode 14 (tok_unicode.c,
 *     generated).
 *   TOK_SPM (GGUF "llama"; HF BPE + Metaspace or Prepend/Replace normalizer + byte_fallback):
 *     spaces -> U+2581, optional "▁" prefix (GGUF and the HF Prepend normalizer: always, as
 *     llama.cpp; HF Metaspace: only when the text does not already start with a space, and
 *     with prepend_scheme "first" only before the first special token), BPE by merges (HF
 *     or GGUF merges when present) or by piece scores (GGUF,
 *     SentencePiece rule: repeatedly merge the adjacent pair whose concatenation is in the
 *     vocab with the highest score), unknown bytes -> <0xNN> byte tokens (else unk).
 *
 * Special tokens (GGUF token_type CONTROL/UNKNOWN, HF added_tokens with special=true) are
 * matched in the text first (longest match at each position) when parse_special is set;
 * otherwise they are ordinary text. User-defined tokens (GGUF USER_DEFINED, HF added_tokens
 * with special=false) are always matched. HF lstrip/rstrip drop the whitespace beside them.
 * Verified token-for-token against the HF `tokenizers` library: tests/test_tokenizer.c
 * (fixtures in tests/data) and tests/py_tokenizer.py (SmolLM2's 49K vocabulary; a BPE trained with the
 * tekken pattern); Mistral Nemo's real tekken vocabulary: scripts/chat_check_spm.py and session 58's 3033
 * strings, identical.
 *
 * Return convention for constructors: 0 on success, -1 with a message in err (err may be NULL).
 * A built tokenizer is immutable; encode/decode may run concurrently from several threads.
 */
#ifndef INFLLM_TOKENIZER_H
#define INFLLM_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct infllm_tokenizer infllm_tokenizer;

typedef enum { TOK_BPE = 0, TOK_SPM = 1 } tok_kind;

/* GGUF token types (tokenizer.ggml.token_type), as llama.cpp defines them. */
enum {
    TOK_TYPE_UNDEFINED = 0,
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
};

/* GGUF-style description. Strings are NOT required to be NUL-terminated when the matching
 * *_lens array is given (GGUF strings are length-prefixed); with *_lens == NULL they must be.
 * Everything is copied: the arrays may be freed after tok_load_gguf returns. */
typedef struct {
    const char *model;              /* tokenizer.ggml.model: "gpt2" or "llama" (required) */
    const char *pre;                /* tokenizer.ggml.pre, NULL -> "default" */
    uint32_t n_vocab;
    const char *const *tokens;      /* tokenizer.ggml.tokens [n_vocab] (required) */
    const uint32_t *token_lens;     /* optional byte lengths of tokens */
    const float *scores;            /* tokenizer.ggml.scores [n_vocab] (optional; SPM wants it) */
    const int32_t *token_types;     /* tokenizer.ggml.token_type [n_vocab] (optional) */
    uint32_t n_merges;
    const char *const *merges;      /* tokenizer.ggml.merges "a b" [n_merges] (gpt2: required) */
    const uint32_t *merge_lens;     /* optional */
    int32_t bos_id, eos_id, unk_id, pad_id, eot_id; /* -1 = absent */
    int add_bos;                    /* tokenizer.ggml.add_bos_token (-1 = default by model) */
    int add_eos;                    /* tokenizer.ggml.add_eos_token (-1 = false) */
    int add_space_prefix;           /* tokenizer.ggml.add_space_prefix (-1 = true for llama) */
    int specials_rstrip;            /* 1: every special token but <unk>, <s> and <|endoftext|> (and </s> too) takes
                                       the whitespace after it (llama.cpp's rule for Phi-3 GGUFs, whose tokenizer.json
                                       marks them rstrip); 0 (default): none */
} tok_gguf_desc;

/* Sets every id to -1, add_* to -1 and the rest to 0/NULL. */
void tok_gguf_desc_init(tok_gguf_desc *d);

int tok_load_gguf(const tok_gguf_desc *d, infllm_tokenizer **out, char *err, size_t errlen);

/* HF tokenizer.json (model.type "BPE"). Supported: pre_tokenizer ByteLevel / Digits / Split
 * (known regexes) / Sequence of those, Metaspace; normalizer null / Prepend / Replace / NFC
 * (NFC: accepted, treated as identity for already-composed text) / Sequence; decoder
 * ByteLevel / Metaspace / Sequence[Replace, ByteFallback, Fuse, Strip]; byte_fallback;
 * added_tokens (lstrip/rstrip; single_word and normalized are ignored); model options
 * byte_fallback, fuse_unk, ignore_merges, unk_token; merges as "a b" or ["a", "b"].
 * Unsupported configurations (WordPiece/Unigram, other Split regexes, ...) fail with a
 * message. BOS/EOS: from the TemplateProcessing post_processor when present (which also
 * sets add_bos), else looked up by conventional names (<s>, <|begin_of_text|>, </s>,
 * <|endoftext|>, ...); end of turn: <|im_end|>, <|eot_id|>, <end_of_turn>, <|end|>.
 * tok_load_hf_dir additionally reads tokenizer_config.json next to it (bos/eos/add_bos). */
int tok_load_hf_json(const char *path, infllm_tokenizer **out, char *err, size_t errlen);
int tok_load_hf_json_mem(const char *text, size_t len, infllm_tokenizer **out, char *err,
                         size_t errlen);
int tok_load_hf_dir(const char *dir, infllm_tokenizer **out, char *err, size_t errlen);

void tok_free(infllm_tokenizer *tok); /* NULL is fine */

/* Encodes text[0..len) (any bytes: invalid UTF-8 is encoded byte-wise). add_bos: prepend BOS
 * (-1 = the tokenizer's default add_bos; 0/1 force). parse_special: match special tokens.
 * Returns the number of ids written when it fits in cap, or -(needed) when cap is too small
 * (nothing useful in ids then: call again with cap >= needed). Returns INT32_MIN on out of
 * memory. ids may be NULL with cap 0 to size the output. Text the vocabulary cannot
 * represent: SentencePiece kinds use <0xNN> byte tokens, else unk; byte-level BPE drops bytes
 * missing from the vocabulary (SmolLM2 lacks a few control bytes, e.g. 0x1D) unless the
 * tokenizer.json model names an unk_token, as the HF library does. */
int tok_encode(const infllm_tokenizer *tok, const char *text, size_t len, int add_bos,
               int parse_special, int32_t *ids, int cap);

/* The bytes of one token as it appears in decoded text (byte-level unmapped, "▁" -> " ",
 * <0xNN> -> that byte; control tokens -> their text when render_special, else empty).
 * Concatenating pieces gives the decoded text except for the SPM leading-space strip (see
 * tok_decode). Pieces may split a UTF-8 character: buffer until tok_utf8_complete says so.
 * Returns bytes written (no NUL added, possibly 0), -(needed) if cap is too small, or
 * INT32_MIN for an id outside [0, n_vocab). A piece is never longer than the token's stored
 * text, so a buffer of TOK_MAX_PIECE bytes always suffices (longer vocab entries are rejected
 * at load). */
#define TOK_MAX_PIECE 1024
int tok_decode_piece(const infllm_tokenizer *tok, int32_t id, int render_special, char *buf,
                     int cap);

/* Decodes a whole sequence (SPM: drops the single leading space added by the prefix).
 * Writes at most cap bytes and NUL-terminates if room. Returns the byte length or -(needed+1)
 * when cap <= length. */
long tok_decode(const infllm_tokenizer *tok, const int32_t *ids, int n, int render_special,
                char *buf, size_t cap);

/* Length of the longest prefix of buf[0..len) that does not end inside an incomplete UTF-8
 * sequence (invalid bytes count as complete). For streaming output. */
size_t tok_utf8_complete(const char *buf, size_t len);

tok_kind tok_get_kind(const infllm_tokenizer *tok);
int tok_n_vocab(const infllm_tokenizer *tok);
int32_t tok_bos(const infllm_tokenizer *tok); /* -1 if none */
int32_t tok_eos(const infllm_tokenizer *tok);
int32_t tok_eot(const infllm_tokenizer *tok); /* end of turn (<|im_end|>, <|eot_id|>) or -1 */
int32_t tok_unk(const infllm_tokenizer *tok);
int32_t tok_pad(const infllm_tokenizer *tok);
int tok_add_bos_default(const infllm_tokenizer *tok);
int tok_is_special(const infllm_tokenizer *tok, int32_t id); /* control / added special */
int tok_is_eog(const infllm_tokenizer *tok, int32_t id);     /* eos, eot, or <|im_end|>... */
/* Exact vocabulary lookup of a token's stored text (e.g. "<|im_start|>", "Ġthe"); -1 if none. */
int32_t tok_token_id(const infllm_tokenizer *tok, const char *text);
/* Stored text of a token (raw vocab form, NUL-terminated) or NULL for a bad id. */
const char *tok_token_text(const infllm_tokenizer *tok, int32_t id);
/* An ASCII whitespace byte (space, \t, \n, \r, \v, \f): what a special token's lstrip / rstrip takes. */
int tok_is_space_byte(char c);
/* A Unicode White_Space code point (the pre-tokenizers' \s). */
int tok_is_white(uint32_t cp);
/* The code point of the UTF-8 sequence at s[0..n) (n >= 1) in *cp and its length; an invalid, overlong or truncated
 * sequence: length 1 and a *cp past U+10FFFF (no letter, number or space). */
size_t tok_utf8_next(const char *s, size_t n, uint32_t *cp);


#endif
