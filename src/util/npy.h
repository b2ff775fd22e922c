/*
 * npy.h: reading and writing NumPy .npy files (format 1.0/2.0/3.0, little-endian, C order, no
 * pickles). Used by the infllm command and the tests; not part of the public library API.
 */
#ifndef INFLLM_NPY_H
#define INFLLM_NPY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define NPY_MAX_DIMS 8

typedef struct npy_array {
    char descr[8];                /* "<u2", "<f2", "<f4", "<f8", "<i4", "<i8", "|u1" */
    int ndim;
    int64_t shape[NPY_MAX_DIMS];
    size_t elem_size;
    size_t count;                 /* product of shape */
    void *data;                   /* count * elem_size bytes, malloc'd; free with npy_free */
} npy_array;

/* Reads path into *a. Returns 0, or -1 with a message naming the file and the problem in err. */
int npy_read(const char *path, npy_array *a, char *err, size_t errlen);
/* npy_read on an open stream that can seek (a file, or fmemopen's memory: tests/fuzz/fuzz_npy.c), from its start
 * position to its end; messages name the input `path`. The stream stays open. */
int npy_read_stream(FILE *f, const char *path, npy_array *a, char *err, size_t errlen);
/* Writes data as a .npy file, atomically (temporary file + rename): an existing file is
 * replaced only when the new one is complete. Returns 0 or -1 with err. */
int npy_write(const char *path, const char *descr, int ndim, const int64_t *shape, const void *data,
              char *err, size_t errlen);
void npy_free(npy_array *a);

#endif
