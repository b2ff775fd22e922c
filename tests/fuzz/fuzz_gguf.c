/* fuzz_gguf.c: libFuzzer target for the GGUF reader (gguf_open_buffer in src/model/gguf.h).
 * Accepted files must have every tensor's data inside the input. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_file *g = gguf_open_buffer(data, size);
    if (g) {
        for (uint64_t i = 0; i < g->n_tensors; i++) {
            const gguf_tensor *t = &g->tensors[i];
            const uint8_t *p = t->data;
            if (t->nbytes && (p < data || p + t->nbytes > data + size)) abort();
        }
        gguf_get_int(g, "general.alignment", 0);
        gguf_close(g);
    }
    return 0;
}
