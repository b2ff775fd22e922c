/*
 * fault_shim.c: an LD_PRELOAD library that makes chosen heap allocations fail (return NULL with errno ENOMEM), so
 * that tests can run the infllm command through its out-of-memory paths (tests/py_cli_fault.py). glibc only: it
 * forwards to __libc_malloc / __libc_calloc / __libc_realloc, the allocator it replaces.
 *
 * Without INFLLM_FAULT_SHIM set it only forwards. INFLLM_FAULT_SHIM is a comma list of:
 *   min=BYTES  only allocations of at least BYTES bytes are counted and may fail (default 0: every one)
 *   nth=N      the Nth counted allocation fails (1-based), only that one
 *   from=N     every counted allocation from the Nth on fails
 *   report=FD  at exit, write "allocations N\n" (the counted allocations) to file descriptor FD (e.g. 2)
 * With min alone, every allocation of at least BYTES fails. malloc, calloc and realloc (to a non-zero size) are
 * counted; free is not touched. The count is atomic (OpenMP threads allocate too), so nth is exact only for a
 * single-threaded run.
 *
 * Only allocations made once main() has started are counted: the shim wraps __libc_start_main and arms itself in
 * front of main. Before main the shared libraries' constructors run, and some do not survive a failed allocation
 * (CUDA 13's libcudart dereferences it in its static initialiser: the first CI run of py_cli_fault, stop 51, died
 * by SIGSEGV there on every nth below 17), which says nothing about our code and which no program can handle.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);

static atomic_int state;        /* 0: not read yet, 1: off, 2: on */
static atomic_int armed;        /* 1 once main() has started */
static atomic_long counted;     /* allocations counted so far */
static size_t min_bytes;
static long nth, from;
static int report_fd = -1;

/* a decimal number at *s (no allocation: strtol may touch the locale, which can allocate) */
static unsigned long long num(const char **s) {
    unsigned long long v = 0;
    while (**s >= '0' && **s <= '9') v = v * 10 + (unsigned long long)(*(*s)++ - '0');
    return v;
}

static void read_env(void) {
    const char *e = getenv("INFLLM_FAULT_SHIM");
    if (!e || !*e) {
        atomic_store(&state, 1);
        return;
    }
    for (const char *p = e; *p;) {
        if (!strncmp(p, "min=", 4)) p += 4, min_bytes = (size_t)num(&p);
        else if (!strncmp(p, "nth=", 4)) p += 4, nth = (long)num(&p);
        else if (!strncmp(p, "from=", 5)) p += 5, from = (long)num(&p);
        else if (!strncmp(p, "report=", 7)) p += 7, report_fd = (int)num(&p);
        while (*p && *p != ',') p++; /* an unknown key is skipped */
        if (*p == ',') p++;
    }
    atomic_store(&state, 2);
}

/* 1 when this allocation of n bytes is to fail */
static int fail(size_t n) {
    int s = atomic_load(&state);
    if (!s) {
        read_env();
        s = atomic_load(&state);
    }
    if (s != 2 || !atomic_load(&armed) || n < min_bytes) return 0;
    const long k = atomic_fetch_add(&counted, 1) + 1;
    if (nth || from) return (nth && k == nth) || (from && k >= from);
    return min_bytes > 0;
}

void *malloc(size_t n) {
    if (fail(n)) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size) {
    if (fail(size && n > SIZE_MAX / size ? SIZE_MAX : n * size)) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n) {
    if (n && fail(n)) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_realloc(p, n);
}

/* __libc_start_main with main wrapped: the shim arms itself, then runs the program's main */
typedef int (*main_fn)(int, char **, char **);
typedef int (*start_main_fn)(main_fn, int, char **, void (*)(void), void (*)(void), void (*)(void), void *);
static main_fn program_main;

static int armed_main(int argc, char **argv, char **envp) {
    atomic_store(&armed, 1);
    return program_main(argc, argv, envp);
}

int __libc_start_main(main_fn main_, int argc, char **argv, void (*init)(void), void (*fini)(void),
                      void (*rtld_fini)(void), void *stack_end);
int __libc_start_main(main_fn main_, int argc, char **argv, void (*init)(void), void (*fini)(void),
                      void (*rtld_fini)(void), void *stack_end) {
    void *sym = dlsym(RTLD_NEXT, "__libc_start_main");
    start_main_fn next;
    memcpy(&next, &sym, sizeof next); /* ISO C has no object-to-function pointer cast; POSIX makes this valid */
    if (!sym) { /* cannot happen with glibc; without the wrap nothing would ever be counted, so say so */
        static const char msg[] = "fault_shim: __libc_start_main not found\n";
        if (write(2, msg, sizeof msg - 1) < 0) _exit(127);
        _exit(127);
    }
    program_main = main_;
    return next(armed_main, argc, argv, init, fini, rtld_fini, stack_end);
}

__attribute__((destructor)) static void report(void) {
    if (report_fd < 0) return;
    char buf[64] = "allocations ", digits[24];
    long v = atomic_load(&counted);
    int nd = 0;
    do digits[nd++] = (char)('0' + v % 10); while ((v /= 10) > 0);
    size_t o = strlen(buf);
    while (nd) buf[o++] = digits[--nd];
    buf[o++] = '\n';
    if (write(report_fd, buf, o) < 0) return;
}
