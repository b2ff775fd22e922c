/* fuzz_tokenizer_json.c: libFuzzer target for the tokenizer.json loader
 * (tok_load_hf_json_mem); a tokenizer that loads encodes and decodes a fixed text with ids in
 * range. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int32_t tj_ids[4096];
    static char tj_dec[1 << 16];
    infllm_tokenizer *t = NULL;
    char err[256];
    if (tok_load_hf_json_mem((const char *)data, size, &t, err, sizeof err) == 0) {
        const char *s = "Hello world <s> 12 \xE4\xBD\xA0\xE5\xA5\xBD <|im_start|>x\n\n  y";
        int n = tok_encode(t, s, strlen(s), 1, 1, tj_ids, 4096);
        if (n < 0) abort();
        for (int i = 0; i < n; i++)
            if (tj_ids[i] < 0 || tj_ids[i] >= tok_n_vocab(t)) abort();
        tok_decode(t, tj_ids, n, 1, tj_dec, sizeof tj_dec);
        tok_free(t);
    }
    return 0;
}
