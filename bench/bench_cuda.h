/*
 * bench_cuda.h: what the standalone CUDA benches (bench/wgmma_rate.cu, bench/chain_rate.cu, bench/l2_bw.cu)
 * share.
 * CK(call): on a CUDA error, print it with the file and line and return 1 from the function (main or a helper).
 * best_ms(launch, best): the fastest of `reps` runs of launch() between two events, in ms (0 or 1 as CK).
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

template <typename F> static int best_ms(F launch, float &best, int reps = 5) {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    best = 1e30f;
    for (int rep = 0; rep < reps; rep++) {
        CK(cudaEventRecord(a));
        launch();
        CK(cudaGetLastError());
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        if (ms < best) best = ms;
    }
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    return 0;
}
