/* fuzz_tokenizer.c: libFuzzer target for encoding/decoding with the fixture tokenizers
 * (tests/data). First byte: bit 0 picks the fixture (byte-level BPE / SentencePiece-style),
 * bit 1 parse_special; the rest is text: encode, decode, and for byte-level BPE check that
 * decoding the ids (rendering specials) gives back the input bytes exactly (unless a special
 * token that strips the whitespace around it, the fixture's <mask>, was parsed). The loader has
 * its own target, fuzz_tokenizer_json.c. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

#ifndef FUZZ_DATA_DIR
#define FUZZ_DATA_DIR "tests/data"
#endif

static infllm_tokenizer *fixture[2];

static void load_fixtures(void) {
    if (fixture[0]) return;
    char err[256];
    if (tok_load_hf_json(FUZZ_DATA_DIR "/tok_bpe.json", &fixture[0], err, sizeof err) ||
        tok_load_hf_json(FUZZ_DATA_DIR "/tok_spm.json", &fixture[1], err, sizeof err))
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
    const infllm_tokenizer *t = fixture[mode & 1];
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
