/* f2key.cuh: float -> order-preserving uint32 key (larger float -> larger key; NaN ordered by its bits).
 * Its own header so that tests/test_topk_host.cpp compiles the device top-k (sel_topk.cuh) on the host. */
#pragma once
#include <stdint.h>

__device__ __forceinline__ uint32_t f2key(float f) {
    uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
