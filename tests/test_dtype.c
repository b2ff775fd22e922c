/*
 * test_dtype.c: the scalar conversions of src/core/dtype.h against independent definitions.
 *  - decode: all 65536 bf16 and f16 patterns against a formula from the bit fields
 *    (sign * mantissa * 2^exponent, subnormals, inf, NaN) and, when the compiler has
 *    _Float16, against the compiler/hardware conversion;
 *  - encode: round trip of every pattern; every midpoint between neighbouring values and its
 *    two float neighbours (round to nearest even, overflow to inf, underflow to zero);
 *    every high half of a float with the rounding-relevant low halves (bf16); a few million
 *    random float patterns (both formats) against a double-arithmetic RNE reference and
 *    _Float16; NaN stays NaN with its sign; infinities map to infinities.
 *  - infllm_load_f32 / infllm_store_f32 / infllm_round_to for every dtype.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "dtype.h"
#include "harness.h"
#include "infllm.h"

#ifdef __FLT16_MAX__
__extension__ typedef _Float16 hw_f16; /* the compiler's binary16 (hardware or libgcc) */
#endif

/* ---------------------------------------------------- independent model ---- */

/* Value of a binary16-like pattern: 1 sign bit, `eb` exponent bits, `mb` mantissa bits. */
static double ref_decode(uint32_t h, int eb, int mb) {
    int bias = (1 << (eb - 1)) - 1;
    uint32_t sign = h >> (eb + mb);
    uint32_t e = (h >> mb) & ((1u << eb) - 1);
    uint32_t m = h & ((1u << mb) - 1);
    double v;
    if (e == 0)
        v = ldexp((double)m, 1 - bias - mb);
    else if (e == (1u << eb) - 1)
        v = m ? NAN : INFINITY;
    else
        v = ldexp((double)((1u << mb) + m), (int)e - bias - mb);
    return sign ? -v : v;
}

/* x rounded to nearest even into a format with `mb` stored mantissa bits, minimum normal
 * exponent emin and maximum exponent emax (overflow -> inf), computed in double. */
static double ref_round(double x, int mb, int emin, int emax) {
    if (isnan(x) || isinf(x) || x == 0) return x;
    double a = fabs(x);
    int E;
    frexp(a, &E); /* a = f * 2^E, f in [0.5, 1) */
    int e = E - 1;
    if (e < emin) e = emin;
    double ulp = ldexp(1.0, e - mb);
    double q = a / ulp; /* exact: a has <= 24 significant bits */
    double fl = floor(q), r = q - fl;
    if (r > 0.5 || (r == 0.5 && fmod(fl, 2.0) != 0)) fl += 1;
    double res = fl * ulp;
    if (res >= ldexp(1.0, emax + 1)) res = INFINITY;
    return x < 0 ? -res : res;
}
static double ref_round_bf16(double x) { return ref_round(x, 7, -126, 127); }
static double ref_round_f16(double x) { return ref_round(x, 10, -14, 15); }

static int same_value(double a, double b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return a == b && !signbit(a) == !signbit(b);
}

static float f_of(uint32_t u) { return infllm_bits_to_f32(u); }

/* ---------------------------------------------------------------- tests ---- */

static long n_bad_dec_bf16, n_bad_dec_f16, n_bad_hw_dec, n_bad_rt;

static void test_decode_all(void) {
    for (uint32_t h = 0; h < 65536; h++) {
        double want = ref_decode(h, 8, 7);
        float got = infllm_bf16_to_f32((uint16_t)h);
        if (!same_value(got, want)) n_bad_dec_bf16++;
        if (isnan(got) && (infllm_f32_to_bits(got) >> 16) != h) n_bad_dec_bf16++; /* payload kept */
        want = ref_decode(h, 5, 10);
        got = infllm_f16_to_f32((uint16_t)h);
        if (!same_value(got, want)) n_bad_dec_f16++;
        if (isnan(got) && (signbit(got) != 0) != ((h & 0x8000u) != 0)) n_bad_dec_f16++;
#ifdef __FLT16_MAX__
        hw_f16 hv;
        uint16_t hb = (uint16_t)h;
        memcpy(&hv, &hb, 2);
        if (!same_value((float)hv, got)) n_bad_hw_dec++;
#endif
        /* round trip: every non-NaN pattern encodes back to itself, NaN stays NaN */
        float fb = infllm_bf16_to_f32((uint16_t)h), ff = infllm_f16_to_f32((uint16_t)h);
        if (isnan(fb)) {
            uint16_t r = infllm_f32_to_bf16(fb);
            if (!isnan(infllm_bf16_to_f32(r)) || (r & 0x8000u) != (h & 0x8000u)) n_bad_rt++;
        } else if (infllm_f32_to_bf16(fb) != h) {
            n_bad_rt++;
        }
        if (isnan(ff)) {
            uint16_t r = infllm_f32_to_f16(ff);
            if (!isnan(infllm_f16_to_f32(r)) || (r & 0x8000u) != (h & 0x8000u)) n_bad_rt++;
        } else if (infllm_f32_to_f16(ff) != h) {
            n_bad_rt++;
        }
    }
    CHECK(n_bad_dec_bf16 == 0, "bf16 -> f32: %ld of 65536 patterns wrong", n_bad_dec_bf16);
    CHECK(n_bad_dec_f16 == 0, "f16 -> f32: %ld of 65536 patterns wrong", n_bad_dec_f16);
    CHECK(n_bad_hw_dec == 0, "f16 -> f32 disagrees with _Float16 on %ld patterns", n_bad_hw_dec);
    CHECK(n_bad_rt == 0, "round trip f32 -> 16-bit failed on %ld patterns", n_bad_rt);
}

static long enc_checked, enc_bad_bf16, enc_bad_f16, enc_bad_hw;
static uint32_t first_bad_bf16, first_bad_f16, first_bad_hw;

/* Encodes float bits u in both formats and compares with the references. */
static void check_encode(uint32_t u) {
    float x = f_of(u);
    enc_checked++;
    double wb = ref_round_bf16(x), wf = ref_round_f16(x);
    double gb = infllm_bf16_to_f32(infllm_f32_to_bf16(x));
    double gf = infllm_f16_to_f32(infllm_f32_to_f16(x));
    if (!same_value(gb, wb) || (isnan(x) && !signbit(gb) != !signbit(x))) {
        if (!enc_bad_bf16) first_bad_bf16 = u;
        enc_bad_bf16++;
    }
    if (!same_value(gf, wf) || (isnan(x) && !signbit(gf) != !signbit(x))) {
        if (!enc_bad_f16) first_bad_f16 = u;
        enc_bad_f16++;
    }
#ifdef __FLT16_MAX__
    hw_f16 hv = (hw_f16)x;
    uint16_t hb;
    memcpy(&hb, &hv, 2);
    int same = isnan(x) ? isnan(gf) : (hb == infllm_f32_to_f16(x));
    if (!same) {
        if (!enc_bad_hw) first_bad_hw = u;
        enc_bad_hw++;
    }
#endif
}

static void test_encode(void) {
    /* bf16: every high half with the low halves that decide the rounding */
    static const uint32_t lows[] = {0x0000, 0x0001, 0x7fff, 0x8000, 0x8001, 0xffff, 0x4000, 0xc000};
    for (uint32_t hi = 0; hi < 65536; hi++)
        for (size_t i = 0; i < sizeof lows / sizeof lows[0]; i++) check_encode((hi << 16) | lows[i]);
    /* f16: each value, each midpoint to the next value, and their float neighbours */
    for (uint32_t h = 0; h < 0x7c00; h++) {
        for (int s = 0; s < 2; s++) {
            uint16_t a = (uint16_t)(h | (s ? 0x8000u : 0));
            double v = ref_decode(a, 5, 10);
            double nx = h + 1 < 0x7c00 ? ref_decode((uint16_t)(a + 1), 5, 10) : (s ? -65536.0 : 65536.0);
            float mid = (float)((v + nx) / 2); /* exact: 12 significant bits */
            uint32_t mu = infllm_f32_to_bits(mid), vu = infllm_f32_to_bits((float)v);
            check_encode(mu);
            check_encode(mu + 1);
            check_encode(mu - 1);
            check_encode(vu);
            check_encode(vu + 1);
            if (vu & 0x7fffffffu) check_encode(vu - 1);
        }
    }
    /* specials and the underflow / overflow edges */
    uint32_t specials[] = {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u,
                           0x7f800001u, 0xff800001u, 0x7fbfffffu, 0x00000001u, 0x807fffffu, 0x7f7fffffu,
                           0xff7fffffu, 0x33000000u, 0x33000001u, 0x32ffffffu, 0x477ff000u, 0x477fefffu,
                           0x477fe000u, 0x387fc000u, 0x38800000u, 0x7f7f8000u, 0x7f7f7fffu};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) check_encode(specials[i]);
    /* random patterns */
    unsigned long long seed = 12345;
    for (int i = 0; i < 3000000; i++) check_encode((uint32_t)h_rng_next(&seed));
    /* dense sweep of the f16 subnormal / underflow range */
    for (uint32_t u = 0x32800000u; u < 0x39000000u; u += 97) {
        check_encode(u);
        check_encode(u | 0x80000000u);
    }
    printf("encode: %ld float patterns checked\n", enc_checked);
    CHECK(enc_bad_bf16 == 0, "f32 -> bf16 wrong on %ld patterns (first 0x%08x)", enc_bad_bf16, first_bad_bf16);
    CHECK(enc_bad_f16 == 0, "f32 -> f16 wrong on %ld patterns (first 0x%08x)", enc_bad_f16, first_bad_f16);
    CHECK(enc_bad_hw == 0, "f32 -> f16 disagrees with _Float16 on %ld patterns (first 0x%08x)", enc_bad_hw,
          first_bad_hw);
    /* named values */
    CHECK(infllm_f32_to_f16(65520.0f) == 0x7c00, "65520 -> f16 inf");
    CHECK(infllm_f32_to_f16(65519.996f) == 0x7bff, "65519.996 -> f16 max");
    CHECK(infllm_f32_to_f16(-INFINITY) == 0xfc00, "-inf -> f16");
    CHECK(infllm_f32_to_f16(ldexpf(1.0f, -25)) == 0x0000, "2^-25 ties to 0");
    CHECK(infllm_f32_to_f16(nextafterf(ldexpf(1.0f, -25), 1.0f)) == 0x0001, "just above 2^-25 -> min subnormal");
    CHECK(infllm_f32_to_f16(ldexpf(3.0f, -25)) == 0x0002, "3*2^-25 ties to even 2*2^-24");
    CHECK(infllm_f32_to_bf16(FLT_MAX) == 0x7f80, "FLT_MAX -> bf16 inf (RNE)");
    CHECK(infllm_f32_to_bf16(1.00390625f) == 0x3f80, "1 + 2^-8 ties to even 1.0");
    CHECK(infllm_f32_to_bf16(1.01171875f) == 0x3f82, "1 + 3*2^-8 ties to even");
    CHECK(infllm_f32_to_bf16(-0.0f) == 0x8000, "-0 -> bf16");
}

static void test_load_store(void) {
    const infllm_dtype dts[3] = {INFLLM_DTYPE_F32, INFLLM_DTYPE_F16, INFLLM_DTYPE_BF16};
    unsigned long long seed = 7;
    for (int d = 0; d < 3; d++) {
        infllm_dtype dt = dts[d];
        CHECK(infllm_dtype_size(dt) == (dt == INFLLM_DTYPE_F32 ? 4u : 2u), "dtype size %d", (int)dt);
        CHECK(strlen(infllm_dtype_name(dt)) > 0, "dtype name");
        unsigned char buf[64 * 4 + 8];
        memset(buf, 0xab, sizeof buf);
        float xs[64];
        for (int i = 0; i < 64; i++) {
            xs[i] = (float)(h_normal(&seed) * pow(10.0, (double)(i % 9) - 4));
            infllm_store_f32(buf, dt, i, xs[i]);
        }
        int bad = 0;
        for (int i = 0; i < 64; i++) {
            float want = dt == INFLLM_DTYPE_F32   ? xs[i]
                         : dt == INFLLM_DTYPE_F16 ? (float)ref_round_f16(xs[i])
                                                  : (float)ref_round_bf16(xs[i]);
            if (!same_value(infllm_load_f32(buf, dt, i), want)) bad++;
            if (!same_value(infllm_round_to(dt, xs[i]), want)) bad++;
        }
        CHECK(bad == 0, "load/store/round_to for %s: %d wrong", infllm_dtype_name(dt), bad);
        size_t used = 64 * infllm_dtype_size(dt);
        int guard_ok = 1;
        for (size_t i = used; i < sizeof buf; i++) guard_ok &= buf[i] == 0xab;
        CHECK(guard_ok, "store wrote past element 63 for %s", infllm_dtype_name(dt));
    }
    CHECK(infllm_dtype_size((infllm_dtype)7) == 0, "invalid dtype has size 0");
}

/* infllm_store_f64 rounds a double once: just above / below / at the midpoint between two
 * neighbouring 16-bit values, a double must go up / down / to even, where a naive
 * double->float->16-bit conversion rounds twice and gets "just above" wrong. */
static void test_store_f64_single_rounding(void) {
    const infllm_dtype dts[2] = {INFLLM_DTYPE_BF16, INFLLM_DTYPE_F16};
    for (int di = 0; di < 2; di++) {
        infllm_dtype dt = dts[di];
        long bad = 0, n = 0;
        for (uint32_t h = 0; h < 0x10000u; h++) {
            uint16_t lo = (uint16_t)h, hi = (uint16_t)(h + 1);
            if ((lo & 0x7fffu) >= (dt == INFLLM_DTYPE_BF16 ? 0x7f7fu : 0x7bffu)) continue; /* next is inf/NaN */
            double a = dt == INFLLM_DTYPE_BF16 ? infllm_bf16_to_f32(lo) : infllm_f16_to_f32(lo);
            double b = dt == INFLLM_DTYPE_BF16 ? infllm_bf16_to_f32(hi) : infllm_f16_to_f32(hi);
            double m = 0.5 * (a + b);
            double eps = fabs(m) * 0x1p-40 + 0x1p-1070;
            uint16_t out[8]; /* sized for f32 too: the store function has an f32 branch */
            infllm_store_f64(out, dt, 0, m + (b > a ? eps : -eps));
            infllm_store_f64(out, dt, 1, m - (b > a ? eps : -eps));
            infllm_store_f64(out, dt, 2, m);
            uint16_t even = (lo & 1u) ? hi : lo;
            if (out[0] != hi || out[1] != lo || out[2] != even) bad++;
            n++;
        }
        CHECK(bad == 0, "store_f64 %s: %ld of %ld midpoint neighbourhoods rounded twice", infllm_dtype_name(dt), bad, n);
    }
}

int main(void) {
    test_store_f64_single_rounding();
#ifndef __FLT16_MAX__
    printf("note: no _Float16 in this compiler: hardware cross-check skipped, formula checks still run\n");
#endif
    test_decode_all();
    test_encode();
    test_load_store();
    return finish("test_dtype");
}
