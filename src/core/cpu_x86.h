/*
 * cpu_x86.h: the x86 SIMD extensions that this CPU and its operating system support, read from CPUID and
 * XGETBV (cpu_x86.c), for the run-time dispatch of the SIMD kernels (src/attn/cpu_attn.c, the model's
 * quant_avx2.c / quant_avx512.c). One definition of what each level needs, on every compiler: the
 * dispatch used __builtin_cpu_supports, whose feature names differ between compilers (clang 14 knows neither
 * "f16c" nor "avx512bf16", so the library did not build with clang).
 */
#ifndef INFLLM_CPU_X86_H
#define INFLLM_CPU_X86_H

enum {
    INFLLM_X86_AVX2 = 1u << 0, /* with the OS saving YMM state, as every AVX feature below */
    INFLLM_X86_FMA = 1u << 1,
    INFLLM_X86_F16C = 1u << 2,
    INFLLM_X86_AVX512F = 1u << 3, /* with the OS saving the opmask and ZMM state, as every AVX-512 feature */
    INFLLM_X86_AVX512BW = 1u << 4,
    INFLLM_X86_AVX512VL = 1u << 5,
    INFLLM_X86_AVX512DQ = 1u << 6,
    INFLLM_X86_AVX512VNNI = 1u << 7,
    INFLLM_X86_AVX512BF16 = 1u << 8,
    INFLLM_X86_VENDOR_AMD = 1u << 9, /* not an extension: CPUID's vendor string is AuthenticAMD (cpu_dot16_get) */
    /* AMX-TILE and AMX-BF16 with the OS enabling the tile state (XCR0 bits 17 / 18). Linux still wants each process
     * to ask for the tile data before it runs a tile instruction: infllm_x86_amx_ready */
    INFLLM_X86_AMX_BF16 = 1u << 10,
    /* AMX-TILE and AMX-INT8 with the tile state enabled (the model's quantized prefill: infllm_x86_amx_int8_ready) */
    INFLLM_X86_AMX_INT8 = 1u << 11,
    /* AVX-VNNI (the VEX-encoded vpdpbusd / vpdpwssd of Intel's client cores from Alder Lake, with YMM state): the
     * model's K-quant prefill tiles on AVX2 CPUs (qgemm_avxvnni.c) */
    INFLLM_X86_AVX_VNNI = 1u << 12,
};
/* the level sets the dispatchers test */
#define INFLLM_X86_LEVEL_AVX2 (INFLLM_X86_AVX2 | INFLLM_X86_FMA | INFLLM_X86_F16C)
#define INFLLM_X86_LEVEL_AVX512 \
    (INFLLM_X86_LEVEL_AVX2 | INFLLM_X86_AVX512F | INFLLM_X86_AVX512BW | INFLLM_X86_AVX512VL | INFLLM_X86_AVX512DQ)

/* The INFLLM_X86_* bits this CPU supports (0 on other architectures). Compiled without SIMD flags, so the
 * SIMD files may call it before they run any instruction of their own. Cached after the first call. */
unsigned infllm_x86_features(void);

/* 1 if this process may run AMX-BF16 tile instructions: INFLLM_X86_AMX_BF16 and, on Linux, the kernel's grant of
 * the tile data state to the process (arch_prctl ARCH_REQ_XCOMP_PERM, asked once, as oneDNN and PyTorch ask); 0
 * elsewhere (other operating systems are not asked: the AMX kernels stay off there). Cached after the first call. */
int infllm_x86_amx_ready(void);
/* the same for AMX-INT8 (INFLLM_X86_AMX_INT8 and the grant) */
int infllm_x86_amx_int8_ready(void);

/* every bit of `need` supported */
static inline int infllm_x86_has(unsigned need) { return (infllm_x86_features() & need) == need; }

#endif
