/* cpu_x86.c: infllm_x86_features (cpu_x86.h) from CPUID and XGETBV. Built without SIMD flags. */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* syscall() */
#endif
#include "cpu_x86.h"

#include <stdatomic.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <stddef.h>
#include <stdint.h>

/* XCR0: the register states the OS saves on a context switch */
static uint64_t read_xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static unsigned detect(void) {
    unsigned a, b, c, d, f = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return 0;
    if (b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u) f |= INFLLM_X86_VENDOR_AMD; /* "AuthenticAMD" */
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    const uint64_t xcr0 = osxsave ? read_xcr0() : 0;
    const int ymm = avx && (xcr0 & 0x6) == 0x6;    /* XMM and YMM state */
    const int zmm = ymm && (xcr0 & 0xe0) == 0xe0;  /* opmask, ZMM_Hi256, Hi16_ZMM state */
    if (ymm && ((c >> 12) & 1)) f |= INFLLM_X86_FMA;
    if (ymm && ((c >> 29) & 1)) f |= INFLLM_X86_F16C;
    if (__get_cpuid_max(0, NULL) < 7) return f;
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned max_subleaf = a;
    /* AMX-TILE (EDX bit 24), AMX-BF16 (bit 22), the OS saving XTILECFG and XTILEDATA (XCR0 bits 17, 18) */
    if (((d >> 24) & 1) && ((d >> 22) & 1) && (xcr0 & 0x60000) == 0x60000) f |= INFLLM_X86_AMX_BF16;
    /* AMX-INT8 (EDX bit 25) */
    if (((d >> 24) & 1) && ((d >> 25) & 1) && (xcr0 & 0x60000) == 0x60000) f |= INFLLM_X86_AMX_INT8;
    if (ymm && ((b >> 5) & 1)) f |= INFLLM_X86_AVX2;
    unsigned a1 = 0, b1, c1, d1; /* leaf 7 subleaf 1: AVX-VNNI (EAX bit 4), AVX512_BF16 (EAX bit 5) */
    if (max_subleaf >= 1) __cpuid_count(7, 1, a1, b1, c1, d1);
    (void)b1, (void)c1, (void)d1;
    if (ymm && ((a1 >> 4) & 1)) f |= INFLLM_X86_AVX_VNNI;
    if (!zmm) return f;
    if ((b >> 16) & 1) f |= INFLLM_X86_AVX512F;
    if ((b >> 17) & 1) f |= INFLLM_X86_AVX512DQ;
    if ((b >> 30) & 1) f |= INFLLM_X86_AVX512BW;
    if ((b >> 31) & 1) f |= INFLLM_X86_AVX512VL;
    if ((c >> 11) & 1) f |= INFLLM_X86_AVX512VNNI;
    if ((a1 >> 5) & 1) f |= INFLLM_X86_AVX512BF16;
    return f;
}
#else
static unsigned detect(void) { return 0; }
#endif

#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
/* Linux 5.16+: a process asks once for the AMX tile data state (XFEATURE_XTILEDATA, 18); a tile instruction before
 * the grant is SIGILL. ARCH_GET_XCOMP_PERM then lists the granted state components. */
static int amx_grant(void) {
    unsigned long bits = 0;
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18UL) != 0) return 0;
    if (syscall(SYS_arch_prctl, 0x1022 /* ARCH_GET_XCOMP_PERM */, &bits) != 0) return 0;
    return (bits >> 18) & 1;
}
#else
static int amx_grant(void) { return 0; }
#endif

/* the grant, asked once for both users (the bf16 attention, the int8 prefill) */
static int amx_granted(void) {
    static atomic_int cached = -1; /* threads racing here all ask the kernel, which grants idempotently */
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        v = amx_grant();
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v;
}

int infllm_x86_amx_ready(void) { return infllm_x86_has(INFLLM_X86_AMX_BF16) && amx_granted(); }

int infllm_x86_amx_int8_ready(void) { return infllm_x86_has(INFLLM_X86_AMX_INT8) && amx_granted(); }

unsigned infllm_x86_features(void) {
    static atomic_uint cached = 1u << 31; /* unread; threads racing here all store the same answer */
    unsigned v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v == 1u << 31) {
        v = detect();
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v;
}
