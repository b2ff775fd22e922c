/* bench_time.h: the CPU benchmark programs' timing helpers (kern_rate.c, qmm_rate.c, ggmlc_decode_rate.c,
 * ggmlc_prefill_rate.c), which had each written them; included by path next to the program, so their one-line gcc
 * commands need no extra -I. The program defines _POSIX_C_SOURCE (clock_gettime) before its first include. */
#ifndef INFLLM_BENCH_TIME_H
#define INFLLM_BENCH_TIME_H
#include <time.h>

/* seconds on the monotonic clock */
static inline double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
/* qsort comparator of doubles, ascending */
static inline int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
#endif
