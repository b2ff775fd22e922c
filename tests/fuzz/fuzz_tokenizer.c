/* fuzz_tokenizer.c: libFuzzer target for encoding/decoding with the fixture tokenizers
 * (tests/data). First byte: bit 0 picks the fixture (byte-level BPE / SentencePiece-style),
 * bit 1 parse_special, bit 2 the byte-level BPE with Mistral's tekken split pattern instead of its
 * own (the tekken matcher: words by Unicode case); the rest is text: encode, decode, and for byte-level BPE check that
 * decoding the ids (rendering specials) gives back the input bytes exactly (unless a special
 * token that strips the whitespace around it, the fixture's <mask>, was parsed). The loader has
 * its own target, fuzz_tokenizer_json.c. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

#ifndef FUZZ_DATA_DIR
#define FUZZ_DATA_DIR "tests/data"
#endif

static infllm_tokenizer *fixture[3];

/* tok_bpe.json with its pre-tokenizer (Digits + ByteLevel) replaced by tekken's Split + ByteLevel without a regex */
static infllm_tokenizer *load_tekken_variant(void) {
    static const char own[] = "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\","
                              "\"individual_digits\":true},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
                              "\"trim_offsets\":true,\"use_regex\":true}]}";
    static const char tekken[] =
        "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
        "\"[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?[\\\\p{Lu}\\\\p{Lt}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]*[\\\\p{Ll}\\\\p{Lm}\\\\p{Lo}"
        "\\\\p{M}]+|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?[\\\\p{Lu}\\\\p{Lt}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]+[\\\\p{Ll}\\\\p{Lm}"
        "\\\\p{Lo}\\\\p{M}]*|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n/]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
        "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
        "\"trim_offsets\":true,\"use_regex\":false}]}";
    FILE *f = fopen(FUZZ_DATA_DIR "/tok_bpe.json", "rb");
    if (!f) return NULL;
    static char doc[1 << 16], out[(1 << 16) + sizeof tekken];
    const size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = 0;
    const char *at = strstr(doc, own);
    if (!at) return NULL;
    const size_t head = (size_t)(at - doc);
    memcpy(out, doc, head);
    memcpy(out + head, tekken, sizeof tekken - 1);
    const size_t tail = n - head - (sizeof own - 1);
    memcpy(out + head + sizeof tekken - 1, at + sizeof own - 1, tail);
    infllm_tokenizer *t = NULL;
    char err[256];
    return tok_load_hf_json_mem(out, head + sizeof tekken - 1 + tail, &t, err, sizeof err) ? NULL : t;
}

static void load_fixtures(void) {
    if (fixture[0]) return;
    char err[256];
    if (tok_load_hf_json(FUZZ_DATA_DIR "/tok_bpe.json", &fixture[0], err, sizeof err) ||
        tok_load_hf_json(FUZZ_DATA_DIR "/tok_spm.json", &fixture[1], err, sizeof err) ||
        !(fixture[2] = load_tekken_variant()))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t mode = data[0];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    static int32_t ids[1 << 16];
    static char dec[1 << 20];
    load_fixtures();
    const infllm_tokenizer *t = fixture[(mode & 4) ? 2 : mode & 1];
    int parse_special = (mode >> 1) & 1;
    if (len > 4096) return 0;
    int n = tok_encode(t, text, len, 0, parse_special, ids, 1 << 16);
    if (n < 0) abort();
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tok_n_vocab(t)) abort();
    long dl = tok_decode(t, ids, n, 1, dec, sizeof dec);
    if (dl < 0) abort();
    int stripping = 0;
    for (size_t i = 0; parse_special && i + 6 <= len && !stripping; i++) stripping = !memcmp(text + i, "<mask>", 6);
    if (tok_get_kind(t) == TOK_BPE && !stripping && ((size_t)dl != len || memcmp(dec, text, len))) abort();
    char piece[TOK_MAX_PIECE];
    for (int i = 0; i < n; i++)
        if (tok_decode_piece(t, ids[i], 1, piece, sizeof piece) < 0) abort();
    tok_utf8_complete(dec, (size_t)dl);
    return 0;
}
