/* mcommon.h: small shared helpers of the model runtime (error message, timing, fp16). */
#ifndef INFLLM_MCOMMON_H
#define INFLLM_MCOMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "portable.h" /* PF_PRINTF */

/* Records a printf-style message (thread-local) and returns -1. */
int mdl_fail(const char *fmt, ...) PF_PRINTF(1, 2);
/* The last recorded message ("" if none). */
const char *mdl_error(void);
/* Monotonic wall clock in seconds. */
double mdl_now(void);
/* A 64-bit config integer as int32, saturated: a value past the range reads as INT32_MAX / INT32_MIN, which the
 * loaders' range checks refuse, instead of wrapping into a plausible one (hidden_size 2^32 + 128 read as 128). */
static inline int32_t mdl_sat_i32(int64_t v) { return v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : (int32_t)v; }
/* The precision for printing a name read from a file with "%.*s": at most MDL_SHOWN_MAX bytes of it. (int)len was
 * used, and a length past INT_MAX made the precision negative, which printf takes as "no precision": it read on past
 * the name (which is not NUL-terminated) until some NUL. */
#define MDL_SHOWN_MAX 200
static inline int mdl_shown_len(uint64_t len) { return len < MDL_SHOWN_MAX ? (int)len : MDL_SHOWN_MAX; }
/* Whether a file name is one a Hugging Face checkpoint folder holds (*.json, *.safetensors). */
static inline int mdl_hf_file_name(const char *path) {
    const size_t n = strlen(path);
    return (n >= 5 && !strcmp(path + n - 5, ".json")) || (n >= 12 && !strcmp(path + n - 12, ".safetensors"));
}

static inline float mdl_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal */
            float f = (float)man * (1.0f / 16777216.0f);
            uint32_t fb;
            memcpy(&fb, &f, 4);
            bits = sign | fb;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}
static inline uint16_t mdl_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t man = x & 0x7fffff;
    if (((x >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = 1u << (shift - 1);
        uint32_t r = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = (sign | ((uint32_t)exp << 10) | (man >> 13));
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return (uint16_t)r;
}
static inline float mdl_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float out;
    memcpy(&out, &bits, 4);
    return out;
}
static inline uint16_t mdl_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

#endif
