/* fuzz_npy.c: libFuzzer target for the .npy reader (npy_read_stream over fmemopen's memory: the header's dict,
 * its shape tuple, the data size against the input's). An accepted input must describe itself exactly: a known
 * dtype, at most NPY_MAX_DIMS dimensions, count the product of the shape, and the header plus count x element
 * bytes the whole input; a refused one must say why, naming the input. fmemopen is POSIX 2008 (_DEFAULT_SOURCE). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* fmemopen refuses a zero-size buffer on some C libraries: give it one spare byte it never reads */
    uint8_t *copy = malloc(size + 1);
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    FILE *f = fmemopen(copy, size ? size : 1, "rb");
    if (!f) {
        free(copy);
        return 0;
    }
    if (!size) fseek(f, 1, SEEK_SET); /* an empty input: at the end already */
    npy_array a;
    char err[256] = "";
    if (npy_read_stream(f, "input.npy", &a, err, sizeof err) == 0) {
        if (a.ndim < 0 || a.ndim > NPY_MAX_DIMS || !a.data) abort();
        size_t count = 1;
        for (int i = 0; i < a.ndim; i++) {
            if (a.shape[i] < 0) abort();
            count *= (size_t)a.shape[i];
        }
        if (count != a.count) abort();
        const size_t es = a.elem_size;
        if (es != 1 && es != 2 && es != 4 && es != 8) abort();
        /* the array's bytes are the input's last count x es bytes */
        const size_t bytes = a.count * es;
        if (bytes > size || (bytes && memcmp(a.data, data + size - bytes, bytes) != 0)) abort();
        npy_free(&a);
    } else if (!strstr(err, "input.npy")) {
        abort();
    }
    fclose(f);
    free(copy);
    return 0;
}
