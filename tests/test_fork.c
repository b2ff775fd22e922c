/*
 * test_fork.c: the CPU backend in a process forked after the library ran in the parent, as a server's or a
 * data loader's workers are (Python's multiprocessing, PyTorch's DataLoader). GCC's OpenMP runtime does not
 * survive fork: its thread pool is not copied, and a child's first parallel region with more than one thread
 * waited forever for the parent's threads. The library runs such a child's calls on one thread (results do not
 * depend on the thread count). Here: the parent runs the sparse pipeline and a backward on 2 threads, forks;
 * each child (one at once, then a grandchild of a child) repeats the calls on 2 threads under a 20-second alarm
 * and must get the parent's bits. Without the rule the child is killed by the alarm (a failure, not a hang).
 * First, before any CPU call: a process that ran only REF calls (no thread pool) forks a child that keeps its 2
 * threads (the rule once took any call's thread count as a pool, CUDA's and REF's too).
 */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h" /* cpu_call_threads: the threads a call of this process resolves */
#include "harness.h"
#include "infllm.h"

#define HQ 8
#define HKV 2
#define D 64
#define T 2000

typedef struct result {
    float out[T * HQ * D], lse[T * HQ], dq[T * HQ * D], dk[T * HKV * D], dv[T * HKV * D];
    int32_t topk[HKV * T * 8];
} result;

static float q[T * HQ * D], k[T * HKV * D], v[T * HKV * D], dout[T * HQ * D];

/* the sparse pipeline, the fused selection and the sparse backward on 2 threads; 0 on success */
static int run_calls(result *r) {
    infllm_params p;
    infllm_params_default(&p);
    p.mode = INFLLM_MODE_SPARSE;
    p.topk = 4;
    p.local_blocks = 4; /* 8 blocks of 32 a query */
    p.block_size = 32;
    p.num_threads = 2;
    infllm_layout l = h_layout1(INFLLM_DTYPE_F32, T, T, HQ, HKV, D);
    if (infllm_attention(&p, &l, q, k, v, r->out, r->lse)) return 1;
    if (infllm_select_blocks(&p, &l, q, k, r->topk)) return 2;
    if (infllm_sparse_attention_backward(&p, &l, q, k, v, r->topk, 8, r->lse, dout, r->dq, r->dk, r->dv)) return 3;
    return 0;
}

/* in a forked process: the calls again under an alarm; exit 0 when they give the parent's bits. With depth > 1 the
 * process then forks again (after its own calls) and its child does the same, depth - 1 times. */
static void child(const result *want, int depth) {
    result *got = malloc(sizeof *got);
    for (;;) {
        alarm(20);
        if (!got || run_calls(got)) _exit(2);
        if (memcmp(got, want, sizeof *got)) _exit(3);
        if (depth-- <= 1) _exit(0);
        pid_t pid = fork();
        if (pid == 0) continue; /* the grandchild: the same again */
        int st = 0;
        _exit(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 4);
    }
}

/* a child forked now resolves `want` threads for a 2-thread call: its exit status says */
static void fork_and_check_threads(int want, const char *what) {
    pid_t pid = fork();
    if (pid == 0) _exit(cpu_call_threads(2) == want ? 0 : 5);
    int st = 0;
    CHECK(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "%s: the child does not resolve %d threads for a 2-thread call", what, want);
}

static void fork_and_check(const result *want, int depth, const char *what) {
    pid_t pid = fork();
    if (pid == 0) child(want, depth);
    int st = 0;
    CHECK(pid > 0 && waitpid(pid, &st, 0) == pid, "%s: fork / wait failed", what);
    if (pid > 0) {
        CHECK(!WIFSIGNALED(st) || WTERMSIG(st) != SIGALRM, "%s: the child hung in its first call (killed by the alarm)",
              what);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: the child's calls failed or differed (status %d)", what,
              WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
}

int main(void) {
    unsigned long long seed = 4242;
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) q[i] = (float)h_normal(&seed);
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) k[i] = (float)h_normal(&seed);
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) v[i] = (float)h_normal(&seed);
    for (size_t i = 0; i < sizeof dout / sizeof dout[0]; i++) dout[i] = (float)h_normal(&seed);
    result *want = malloc(sizeof *want);
    CHECK(want != NULL, "out of memory");
    if (!want) return finish("test_fork");
    memset(want, 0, sizeof *want);
    {   /* a REF call on "2 threads" starts no pool: a child keeps its threads */
        infllm_params p;
        infllm_params_default(&p);
        p.backend = INFLLM_BACKEND_REF;
        p.num_threads = 2;
        p.block_size = 32;
        infllm_layout l = h_layout1(INFLLM_DTYPE_F32, 200, 200, HQ, HKV, D);
        CHECK(infllm_attention(&p, &l, q, k, v, want->out, want->lse) == 0, "REF call: %s", infllm_last_error());
        fork_and_check_threads(2, "a child forked after REF calls alone");
    }
    CHECK(run_calls(want) == 0, "the parent's calls failed: %s", infllm_last_error());
#ifdef _OPENMP
    fork_and_check_threads(1, "a child forked after a CPU call on 2 threads");
#endif
    fork_and_check(want, 1, "a child forked after the library ran");
    fork_and_check(want, 2, "a grandchild forked from such a child after its own calls");
    CHECK(run_calls(want) == 0, "the parent's calls after the forks failed: %s", infllm_last_error());
    free(want);
    return finish("test_fork");
}
