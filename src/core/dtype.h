/*
 * dtype.h: scalar conversions between f32 and the 16-bit storage formats (bf16, IEEE f16).
 * Round to nearest even; NaN stays NaN; overflow goes to inf. Portable C (no _Float16).
 * The SIMD paths convert in registers; these are the scalar definitions they must match.
 */
#ifndef INFLLM_DTYPE_H
#define INFLLM_DTYPE_H

#include <stdint.h>
#include <string.h>

#include "infllm.h"

static inline float infllm_bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static inline uint32_t infllm_f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float infllm_bf16_to_f32(uint16_t h) { return infllm_bits_to_f32((uint32_t)h << 16); }

static inline uint16_t infllm_f32_to_bf16(float f) {
    uint32_t u = infllm_f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float infllm_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while ((man & 0x400u) == 0) {
                man <<= 1;
                exp--;
            }
            man &= 0x3ffu;
            u = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    return infllm_bits_to_f32(u);
}

static inline uint16_t infllm_f32_to_f16(float f) {
    uint32_t u = infllm_f32_to_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);     /* NaN */
    if (absu >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);    /* >= 65520 rounds to inf */
    if (absu < 0x38800000u) {                                      /* result subnormal or 0 */
        if (absu < 0x33000000u) return (uint16_t)sign;             /* < 2^-25: 0 */
        uint32_t e = absu >> 23;
        uint32_t m = (absu & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e;                                  /* 14 + (113 - e) */
        uint32_t half = 1u << (shift - 1);
        uint32_t rest = m & ((1u << shift) - 1);
        uint32_t r = m >> shift;
        if (rest > half || (rest == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = absu + 0xfffu + ((absu >> 13) & 1u);               /* round mantissa to 10 bits */
    r -= (uint32_t)(127 - 15) << 23;
    return (uint16_t)(sign | (r >> 13));
}

/* Element i of a tensor of storage dtype dt, as f32. */
static inline float infllm_load_f32(const void *p, infllm_dtype dt, int64_t i) {
    switch (dt) {
    case INFLLM_DTYPE_BF16: return infllm_bf16_to_f32(((const uint16_t *)p)[i]);
    case INFLLM_DTYPE_F16: return infllm_f16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}
/* Stores f32 x as element i of a tensor of storage dtype dt (rounding to nearest even). */
static inline void infllm_store_f32(void *p, infllm_dtype dt, int64_t i, float x) {
    switch (dt) {
    case INFLLM_DTYPE_BF16: ((uint16_t *)p)[i] = infllm_f32_to_bf16(x); break;
    case INFLLM_DTYPE_F16: ((uint16_t *)p)[i] = infllm_f32_to_f16(x); break;
    default: ((float *)p)[i] = x; break;
    }
}
/* Double to float rounded to odd: narrowing that again to bf16/f16 with round-to-nearest-even
 * then equals rounding the double directly (no double rounding), since f32 keeps more than
 * two extra bits over either 16-bit format. */
static inline float infllm_f64_to_f32_odd(double x) {
    float f = (float)x;
    if ((double)f == x || f != f) return f;
    uint32_t u = infllm_f32_to_bits(f);
    if ((u & 0x7fffffffu) == 0x7f800000u) return f; /* overflowed to inf: stays inf */
    if (u & 1u) return f;
    /* f is even and inexact: the odd neighbour on x's side brackets x with f */
    int toward_larger_magnitude = (x > (double)f) == (f > 0.0f || (f == 0.0f && x > 0.0));
    if (f == 0.0f) return infllm_bits_to_f32((x > 0.0 ? 0u : 0x80000000u) | 1u);
    return infllm_bits_to_f32(toward_larger_magnitude ? u + 1u : u - 1u);
}
/* Stores double x as element i of a tensor of dtype dt, rounded once to nearest even. */
static inline void infllm_store_f64(void *p, infllm_dtype dt, int64_t i, double x) {
    if (dt == INFLLM_DTYPE_F32)
        ((float *)p)[i] = (float)x;
    else
        infllm_store_f32(p, dt, i, infllm_f64_to_f32_odd(x));
}

/* x rounded to what dtype dt can hold, returned as f32. */
static inline float infllm_round_to(infllm_dtype dt, float x) {
    switch (dt) {
    case INFLLM_DTYPE_BF16: return infllm_bf16_to_f32(infllm_f32_to_bf16(x));
    case INFLLM_DTYPE_F16: return infllm_f16_to_f32(infllm_f32_to_f16(x));
    default: return x;
    }
}

#endif /* INFLLM_DTYPE_H */
