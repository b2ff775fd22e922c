/* f2key.cuh: float -> order-preserving uint32 key (larger float -> larger key; NaN ordered by its bits).
 * Its own header so that tests/test_topk_host.cpp compiles the device top-k (sel_topk.cuh) on the host. */
#pragma once
#include <stdint.h>

__device__ __forceinline__ uint32_t f2key(float f) {
    uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* f2key with REF's NaN rule (a NaN score ranks below every other, -inf included): NaN -> 0, below
 * f2key(-inf) = 0x007fffff. For scores the caller hands in (infllm_topk_select); the selection kernels'
 * own block scores never hold a NaN (their max-pool skips it, as REF's block max does). */
__device__ __forceinline__ uint32_t f2key_nan_low(float f) { return f != f ? 0u : f2key(f); }
