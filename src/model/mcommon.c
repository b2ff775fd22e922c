/* mcommon.c: error message and clock of the model runtime. */
#include "mcommon.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static _Thread_local char g_err[1024];

int mdl_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return -1;
}

const char *mdl_error(void) { return g_err; }

double mdl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
