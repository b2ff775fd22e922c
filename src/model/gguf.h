/* gguf.h: a GGUF (v2/v3) reader over a read-only mmap. Every size and offset read from the
 * file is bounds-checked before use; a truncated or corrupted file gives an error message
 * (mdl_error()), never a crash, and no allocation is sized by an unchecked file value. */
#ifndef INFLLM_GGUF_H
#define INFLLM_GGUF_H

#include <stddef.h>
#include <stdint.h>

enum gguf_vtype {
    GGUF_T_UINT8 = 0, GGUF_T_INT8 = 1, GGUF_T_UINT16 = 2, GGUF_T_INT16 = 3, GGUF_T_UINT32 = 4,
    GGUF_T_INT32 = 5, GGUF_T_FLOAT32 = 6, GGUF_T_BOOL = 7, GGUF_T_STRING = 8, GGUF_T_ARRAY = 9,
    GGUF_T_UINT64 = 10, GGUF_T_INT64 = 11, GGUF_T_FLOAT64 = 12
};

/* ggml tensor types (the subset we compute with is listed in quant.h; the others from GGML_IQ2_XXS on are only
 * sized, so that a file carrying them in roles the model does not read still parses, and named in messages) */
enum ggml_type {
    GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q5_0 = 6, GGML_Q5_1 = 7,
    GGML_Q8_0 = 8, GGML_Q8_1 = 9, GGML_Q2_K = 10, GGML_Q3_K = 11, GGML_Q4_K = 12, GGML_Q5_K = 13,
    GGML_Q6_K = 14, GGML_Q8_K = 15, GGML_IQ4_NL = 20, GGML_IQ4_XS = 23, GGML_BF16 = 30,
    GGML_IQ2_XXS = 16, GGML_IQ2_XS = 17, GGML_IQ3_XXS = 18, GGML_IQ1_S = 19, GGML_IQ3_S = 21, GGML_IQ2_S = 22,
    GGML_I8 = 24, GGML_I16 = 25, GGML_I32 = 26, GGML_I64 = 27, GGML_F64 = 28, GGML_IQ1_M = 29,
    GGML_TQ1_0 = 34, GGML_TQ2_0 = 35, GGML_MXFP4 = 39
};

typedef struct gguf_str {
    const char *p;   /* into the mapping; NOT NUL-terminated */
    uint64_t n;
} gguf_str;

typedef struct gguf_kv {
    gguf_str key;
    uint32_t type;        /* gguf_vtype */
    /* scalars */
    uint64_t u;           /* unsigned ints, bool */
    int64_t i;            /* every integer type, sign-extended or zero-extended */
    double f;             /* float32/float64 (and integers converted) */
    gguf_str s;           /* strings */
    /* arrays */
    uint32_t arr_type;
    uint64_t arr_n;
    const uint8_t *arr_data;   /* first element in the mapping */
    const gguf_str *arr_strs;  /* string arrays: decoded [arr_n] (owned by the file) */
} gguf_kv;

typedef struct gguf_tensor {
    gguf_str name;
    uint32_t n_dims;
    int64_t ne[4];        /* ne[0] is the contiguous (row) dimension, as ggml */
    uint32_t type;
    uint64_t offset;      /* relative to the data section */
    const void *data;
    size_t nbytes;
} gguf_tensor;

typedef struct gguf_file {
    void *map;
    size_t size;
    int fd;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    gguf_kv *kv;
    gguf_tensor *tensors;
    size_t alignment;
    const uint8_t *data;  /* data section */
    size_t data_size;
} gguf_file;

/* Opens and validates path. NULL on failure (message in mdl_error()). */
gguf_file *gguf_open(const char *path);
/* Validates an in-memory buffer (not copied; must outlive the result). For tests. */
gguf_file *gguf_open_buffer(const void *buf, size_t size);
void gguf_close(gguf_file *g);

const gguf_kv *gguf_find(const gguf_file *g, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name);
/* Typed look-ups: return def when absent or of a non-numeric type. */
int64_t gguf_get_int(const gguf_file *g, const char *key, int64_t def);
double gguf_get_float(const gguf_file *g, const char *key, double def);
/* String value copied into buf (NUL-terminated, truncated to cap); returns 0 if present. */
int gguf_get_str(const gguf_file *g, const char *key, char *buf, size_t cap);
int gguf_str_eq(gguf_str s, const char *c);

/* Size in bytes of n elements of a ggml type (n a multiple of the block size); 0 for
 * unknown types or a bad n. */
size_t ggml_row_size(uint32_t type, int64_t n);
int ggml_block_size(uint32_t type);     /* elements per block, 0 unknown */
const char *ggml_type_name(uint32_t type);

#endif
