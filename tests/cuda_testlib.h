/*
 * cuda_testlib.h: device buffer helpers shared by the GPU tests (test_cuda.c, test_cuda_cache.c).
 * Include after <cuda_runtime.h>, inside #ifdef INFLLM_HAVE_CUDA. Failures are test-harness
 * failures: message and exit(2).
 */
#ifndef INFLLM_CUDA_TESTLIB_H
#define INFLLM_CUDA_TESTLIB_H

#include <stdio.h>
#include <stdlib.h>

/* a device copy of bytes of host memory (at least 4 bytes allocated) */
static void *dup_dev(const void *h, size_t bytes) {
    void *d = NULL;
    if (cudaMalloc(&d, bytes ? bytes : 4) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc(%zu) failed\n", bytes);
        exit(2);
    }
    if (bytes) cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice);
    return d;
}

/* device memory poisoned with 0xff bytes, so that unwritten outputs show up as NaN */
static void *dev_alloc(size_t bytes) {
    void *d = NULL;
    if (cudaMalloc(&d, bytes ? bytes : 4) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc(%zu) failed\n", bytes);
        exit(2);
    }
    cudaMemset(d, 0xff, bytes ? bytes : 4); /* poison */
    return d;
}

/* a host copy of bytes of device memory (free() it) */
static void *to_host(const void *d, size_t bytes) {
    void *h = malloc(bytes ? bytes : 4);
    cudaError_t e = cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) {
        fprintf(stderr, "CUDA error: %s\n", cudaGetErrorString(e));
        exit(2);
    }
    return h;
}

#endif
