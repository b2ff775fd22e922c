/*
 * safetensors.h: read-only access to Hugging Face safetensors checkpoints.
 *
 * st_open accepts
 *   - a single file (".../model.safetensors"),
 *   - a sharded checkpoint's index ("model.safetensors.index.json": its weight_map names the
 *     shard of every tensor; shards are opened relative to the index's folder),
 *   - a folder: uses model.safetensors.index.json if present, else model.safetensors.
 * Every file is mmap'ed read-only; tensor data pointers point into the mapping and stay valid
 * until st_close.
 *
 * Validation (any failure -> st_open fails with a message naming the file and tensor):
 * 8-byte little-endian header length within the file; the header is a strict JSON object;
 * every entry (other than "__metadata__", a string->string map) has "dtype", "shape" (array
 * of non-negative integers, at most ST_MAX_DIMS) and "data_offsets" [begin, end] with
 * begin <= end <= data size; end - begin == prod(shape) * sizeof(dtype) (checked for
 * overflow); tensor byte ranges do not overlap. Supported dtypes are F32, F16 and BF16; any
 * other dtype (F64, I8, U8, I32, I64, BOOL, F8_*, ...) is rejected as "unsupported dtype".
 * In a sharded checkpoint every weight_map entry must be found in its shard, and a tensor
 * name may not appear in two shards.
 *
 * Return convention (same as gguf_*): 0 on success, -1 on failure with a NUL-terminated
 * message in err[0..errlen) (err may be NULL).
 */
#ifndef INFLLM_SAFETENSORS_H
#define INFLLM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8

typedef enum {
    ST_F32 = 0,
    ST_F16 = 1,
    ST_BF16 = 2,
} st_dtype;

typedef struct {
    const char *name;           /* NUL-terminated tensor name */
    st_dtype dtype;
    int ndim;                   /* 0 (scalar) .. ST_MAX_DIMS */
    int64_t shape[ST_MAX_DIMS]; /* shape[0] outermost (row-major, as in PyTorch) */
    int64_t numel;              /* product of shape (1 for a scalar) */
    const void *data;           /* little-endian elements, may be unaligned for odd headers */
    size_t nbytes;              /* numel * st_dtype_size(dtype) */
    int shard;                  /* index of the file it lives in (0 for single files) */
} st_tensor;

typedef struct st_model st_model;

/* Opens a file, an index json, or a folder (see above). */
int st_open(const char *path, st_model **out, char *err, size_t errlen);

/* Parses one safetensors image already in memory (not copied: must outlive the model).
 * Used by the fuzz targets and tests. */
int st_open_memory(const void *data, size_t size, st_model **out, char *err, size_t errlen);

void st_close(st_model *m); /* NULL is fine */

size_t st_count(const st_model *m);                          /* number of tensors */
const st_tensor *st_tensor_at(const st_model *m, size_t i);  /* sorted by name; NULL if OOB */
const st_tensor *st_find(const st_model *m, const char *name); /* NULL if absent (O(log n)) */

/* "__metadata__" of the first file: value for key or NULL. */
const char *st_metadata(const st_model *m, const char *key);

size_t st_dtype_size(st_dtype t);        /* 4, 2, 2 */
const char *st_dtype_name(st_dtype t);   /* "F32", "F16", "BF16" */

/* Converts a tensor's elements (any supported dtype) to float32: dst has t->numel floats. */
void st_to_f32(const st_tensor *t, float *dst);

#endif
