/*
 * bench_cuda.h: what the standalone CUDA benches (bench/wgmma_rate.cu, bench/l2_bw.cu) share.
 * CK(call): on a CUDA error, print it with the file and line and return 1 from main.
 */
#pragma once

#include <cstdio>
#include <cuda_runtime.h>

#define CK(x)                                                                                                  \
    do {                                                                                                       \
        cudaError_t e_ = (x);                                                                                  \
        if (e_ != cudaSuccess) {                                                                               \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));                      \
            return 1;                                                                                          \
        }                                                                                                      \
    } while (0)
