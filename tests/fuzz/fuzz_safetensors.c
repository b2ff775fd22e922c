/* fuzz_safetensors.c: libFuzzer target for the safetensors header parser (st_open_memory).
 * Accepted images must have every tensor inside the input. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_model *m = NULL;
    char err[256];
    if (st_open_memory(data, size, &m, err, sizeof err) == 0) {
        for (size_t i = 0; i < st_count(m); i++) {
            const st_tensor *t = st_tensor_at(m, i);
            const uint8_t *p = t->data;
            if (p < data || p + t->nbytes > data + size) abort();
            if (st_find(m, t->name) != t) abort();
            if (t->nbytes && t->nbytes <= 4096) {
                float tmp[2048];
                st_to_f32(t, tmp);
            }
        }
        st_close(m);
    }
    return 0;
}
