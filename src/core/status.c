/* status.c: status names and the thread-local last-error message. */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

static _Thread_local char last_error[1024];

const char *infllm_status_str(infllm_status s) {
    switch (s) {
    case INFLLM_OK: return "ok";
    case INFLLM_ERR_NULL_ARG: return "null argument";
    case INFLLM_ERR_SHAPE: return "shape mismatch";
    case INFLLM_ERR_GQA: return "invalid GQA head counts";
    case INFLLM_ERR_DTYPE: return "unsupported dtype";
    case INFLLM_ERR_HEAD_DIM: return "unsupported head_dim";
    case INFLLM_ERR_PARAM: return "invalid parameter";
    case INFLLM_ERR_CAPACITY: return "cache capacity exceeded";
    case INFLLM_ERR_NOMEM: return "out of memory";
    case INFLLM_ERR_UNSUPPORTED: return "unsupported";
    case INFLLM_ERR_CUDA: return "CUDA error";
    case INFLLM_ERR_IO: return "I/O error";
    case INFLLM_ERR_FORMAT: return "malformed input";
    case INFLLM_ERR_WORKSPACE: return "workspace too small or misaligned";
    }
    return "unknown status";
}

const char *infllm_last_error(void) { return last_error; }

infllm_status infllm_set_error(infllm_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return s;
}

size_t infllm_dtype_size(infllm_dtype dt) {
    switch (dt) {
    case INFLLM_DTYPE_F32: return 4;
    case INFLLM_DTYPE_F16: return 2;
    case INFLLM_DTYPE_BF16: return 2;
    }
    return 0;
}

const char *infllm_dtype_name(infllm_dtype dt) {
    switch (dt) {
    case INFLLM_DTYPE_F32: return "f32";
    case INFLLM_DTYPE_F16: return "f16";
    case INFLLM_DTYPE_BF16: return "bf16";
    }
    return "invalid";
}
