/*
 * test_quant_amx.c: the AMX-INT8 prefill of the K-quants and IQ4_XS (src/model/qgemm_amx.c) against the one-row
 * kernels (quant_dot_rows: k_q45_k, k_q6_k, k_kx), bitwise: the file's own source on any x86 CPU with the tile
 * instructions emulated (tests/amx_emu.h checks every tile operation's shapes against the loaded configuration) and
 * its vector helpers in their scalar twins (INFLLM_AMX_EMULATE), and the library's build of it where the CPU runs
 * AMX-INT8 (quant_amx_available). Cases: 1-70 rows (partial 16-row panels, one or two panels a pass, a call on rows
 * r0..r1 that leaves the others untouched), 256-1024 values, 16-300 tokens (partial 16-token tiles, more than one
 * group of 16 tiles), random codes and the extremes (every scale and value at its largest magnitude against
 * activations of +-127: super-block sums past 2^24, which the float conversion rounds; products one past a byte), a
 * NaN activation block (NaN exactly where the row kernel's output is NaN). Also: quant_amx_takes the K-quants and
 * IQ4_XS only, rows of whole super-blocks, 16+ tokens. Where the row kernels are not the x86 SIMD ones (no AVX2)
 * there is nothing bitwise to compare: exit 77.
 */
#define INFLLM_AMX_EMULATE 1
/* the emulated build's entry points, beside the library's own */
#define quant_amx_available quant_amx_available_emu
#define quant_amx_takes quant_amx_takes_emu
#define quant_amx_act_bytes quant_amx_act_bytes_emu
#define quant_amx_pack_act quant_amx_pack_act_emu
#define quant_gemm_amx quant_gemm_amx_emu
#include "../src/model/qgemm_amx.c"
#undef quant_amx_available
#undef quant_amx_takes
#undef quant_amx_act_bytes
#undef quant_amx_pack_act
#undef quant_gemm_amx
/* the library's (quant.h, read above under the renames) */
int quant_amx_available(void);
void quant_amx_pack_act(const int8_t *q, const float *d, const float *s, int64_t ntok, int64_t cols, int64_t tile,
                        void *packed);
int quant_gemm_amx(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed,
                   int64_t ntok, float *y, int64_t ldy);

#include "harness.h"
#include "mcommon.h"

static void put_f16(uint8_t *p, float v) {
    const uint16_t h = mdl_f32_to_f16(v);
    memcpy(p, &h, 2);
}

/* random codes with small positive d / dmin (extreme: Q4_K / Q5_K every scale / min 63 and every value at its
 * maximum; Q6_K every scale -128 and every value -32) */
static void fill_rows(uint32_t type, uint8_t *w, int64_t rows, int64_t cols, int extreme, unsigned long long *rng) {
    const size_t bb = ggml_row_size(type, 256), nsb = (size_t)(cols / 256);
    const uint8_t fill = type == GGML_Q6_K ? 0x00 : 0xFF;
    if (type == GGML_Q2_K || type == GGML_Q3_K || type == GGML_IQ4_XS) { /* extremes as random codes, then d */
        for (size_t i = 0; i < (size_t)rows * nsb * bb; i++) w[i] = (uint8_t)h_rng_next(rng);
        for (size_t b = 0; b < (size_t)rows * nsb; b++) {
            uint8_t *x = w + b * bb;
            if (extreme && type == GGML_Q3_K) { /* every scale -32 (6-bit 0), every value -4 (no high bit, low 0) */
                memset(x, 0, 96);
                memset(x + 96, 0, 12);
            }
            if (extreme && type == GGML_IQ4_XS) { /* every scale -32, every value -127 */
                memset(x + 2, 0, 6);
                memset(x + 8, 0, 128);
            }
            if (extreme && type == GGML_Q2_K) memset(x, 0xFF, 80); /* scales / mins 15, values 3 */
            const size_t off = type == GGML_Q2_K ? 80 : type == GGML_Q3_K ? 108 : 0;
            put_f16(x + off, (float)(0.0005 + 0.004 * h_uniform(rng)));
            if (type == GGML_Q2_K) put_f16(x + 82, (float)(0.0002 + 0.002 * h_uniform(rng)));
        }
        return;
    }
    for (size_t i = 0; i < (size_t)rows * nsb * bb; i++) w[i] = extreme ? fill : (uint8_t)h_rng_next(rng);
    for (size_t b = 0; b < (size_t)rows * nsb; b++) {
        uint8_t *x = w + b * bb;
        if (type == GGML_Q6_K) {
            if (extreme) memset(x + 192, 0x80, 16);
            put_f16(x + 208, (float)(0.0005 + 0.004 * h_uniform(rng)));
        } else {
            put_f16(x, (float)(0.0005 + 0.004 * h_uniform(rng)));
            put_f16(x + 2, (float)(0.0002 + 0.002 * h_uniform(rng)));
        }
    }
}

typedef int (*gemm_fn)(uint32_t, const void *, int64_t, int64_t, int64_t, const void *, int64_t, float *, int64_t);
typedef void (*pack_fn)(const int8_t *, const float *, const float *, int64_t, int64_t, int64_t, void *);

/* one case through one build (pack + gemm): rows r0..r1-1 written, bitwise the row kernel, the rest untouched */
static void run_case(const char *build, pack_fn pack, gemm_fn gemm, uint32_t type, int64_t rows, int64_t cols,
                     int64_t ntok, int64_t r0, int64_t r1, int extreme, int nan_block, unsigned long long seed) {
    unsigned long long rng = seed;
    const size_t rb = ggml_row_size(type, cols);
    const int64_t nb = cols / 32;
    uint8_t *w = malloc(rb * (size_t)rows);
    float *x = malloc(sizeof(float) * (size_t)(ntok * cols)), *y = malloc(sizeof(float) * (size_t)(ntok * rows));
    int8_t *q = malloc((size_t)(ntok * cols));
    float *d = malloc(sizeof(float) * (size_t)(ntok * nb)), *s = malloc(sizeof(float) * (size_t)(ntok * nb));
    void *packed = malloc(quant_amx_act_bytes_emu(ntok, cols));
    if (!w || !x || !y || !q || !d || !s || !packed) {
        CHECK(0, "out of memory");
        return;
    }
    fill_rows(type, w, rows, cols, extreme, &rng);
    for (int64_t i = 0; i < ntok * cols; i++) x[i] = extreme ? (i % 3 ? 2.5f : -2.5f) : (float)h_normal(&rng);
    if (nan_block) x[(ntok / 2) * cols + 40] = NAN; /* spoils that token's first 256-value group */
    for (int64_t t = 0; t < ntok; t++)
        quant_act_row_mode(x + t * cols, cols, q + t * cols, d + t * nb, s + t * nb, QACT_Q8_K);
    for (int64_t t = 0; t < (ntok + 15) / 16; t++) pack(q, d, s, ntok, cols, t, packed);
    for (int64_t i = 0; i < ntok * rows; i++) y[i] = -12345.f;
    const long ops0 = amx_emu.ops;
    CHECK(gemm(type, w, r0, r1, cols, packed, ntok, y, rows) == 1, "%s: %s %lld x %lld, %lld tokens: not taken",
          build, ggml_type_name(type), (long long)rows, (long long)cols, (long long)ntok);
    if (gemm == quant_gemm_amx_emu) CHECK(amx_emu.ops > ops0, "%s: no tile product ran", build);
    int bad = 0, touched = 0, nans = 0;
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t r = 0; r < rows; r++) {
            const float got = y[t * rows + r];
            if (r < r0 || r >= r1) {
                touched += got != -12345.f;
                continue;
            }
            const float *xa[1] = {x + t * cols};
            const int8_t *qa[1] = {q + t * cols};
            const float *da[1] = {d + t * nb}, *sa[1] = {s + t * nb};
            float want;
            quant_dot_rows(type, cols, w + (size_t)r * rb, xa, qa, da, sa, 1, &want, 1);
            nans += isnan(want);
            if (isnan(want) ? !isnan(got) : memcmp(&got, &want, sizeof got) != 0) {
                if (bad++ < 3)
                    printf("  %s: %s row %lld token %lld: %.9g, the row kernel %.9g\n", build, ggml_type_name(type),
                           (long long)r, (long long)t, (double)got, (double)want);
            }
        }
    CHECK(bad == 0, "%s: %s %lld x %lld, %lld tokens, rows %lld..%lld%s%s: %d outputs differ from the row kernel",
          build, ggml_type_name(type), (long long)rows, (long long)cols, (long long)ntok, (long long)r0,
          (long long)r1 - 1, extreme ? " (extreme)" : "", nan_block ? " (NaN block)" : "", bad);
    CHECK(touched == 0, "%s: %d outputs outside rows %lld..%lld written", build, touched, (long long)r0,
          (long long)r1 - 1);
    if (nan_block) CHECK(nans == r1 - r0, "%s: the NaN token's %d NaN outputs, expected %lld", build, nans,
                         (long long)(r1 - r0));
    free(w), free(x), free(y), free(q), free(d), free(s), free(packed);
}

int main(void) {
    if (!quant_avx2_available()) {
        printf("test_quant_amx: SKIP (the row kernels here are the portable ones, not the x86 SIMD kernels whose bits "
               "the AMX tiles reproduce)\n");
        return 77;
    }
    /* what the path takes */
    CHECK(quant_amx_takes_emu(GGML_Q4_K, 256, 16) && quant_amx_takes_emu(GGML_Q5_K, 4096, 300) &&
          quant_amx_takes_emu(GGML_Q6_K, 512, 17), "Q4_K / Q5_K / Q6_K taken");
    CHECK(!quant_amx_takes_emu(GGML_Q4_K, 256, 15), "fewer than 16 tokens taken");
    CHECK(quant_amx_takes_emu(GGML_Q2_K, 256, 16) && quant_amx_takes_emu(GGML_Q3_K, 256, 16) &&
          quant_amx_takes_emu(GGML_IQ4_XS, 256, 16), "Q2_K / Q3_K / IQ4_XS taken");
    CHECK(!quant_amx_takes_emu(GGML_Q8_0, 256, 64) && !quant_amx_takes_emu(GGML_Q4_0, 256, 64) &&
          !quant_amx_takes_emu(GGML_IQ4_NL, 256, 64), "other types taken");
    CHECK(!quant_amx_takes_emu(GGML_Q4_K, 288, 64) && !quant_amx_takes_emu(GGML_Q4_K, 0, 64), "partial super-blocks");

    const int real = quant_amx_available();
    printf("test_quant_amx: emulated tiles%s\n", real ? " and this CPU's AMX-INT8" : " (this CPU runs no AMX-INT8)");
    struct { int64_t rows, cols, ntok, r0, r1; int extreme, nan_block; } cases[] = {
        {1, 256, 16, 0, 1, 0, 0},     {16, 256, 17, 0, 16, 0, 0},   {17, 512, 31, 0, 17, 0, 0},
        {37, 768, 33, 0, 37, 0, 0},   {64, 256, 40, 0, 64, 0, 0},   {70, 512, 300, 0, 70, 0, 0},
        {48, 256, 20, 5, 41, 0, 0},   {32, 1024, 16, 16, 32, 0, 0}, {33, 256, 24, 0, 33, 1, 0},
        {20, 512, 18, 0, 20, 1, 0},   {18, 512, 35, 0, 18, 0, 1},
    };
    const int nc = (int)(sizeof cases / sizeof cases[0]);
    const uint32_t types[6] = {GGML_Q4_K, GGML_Q5_K, GGML_Q6_K, GGML_Q2_K, GGML_Q3_K, GGML_IQ4_XS};
    for (int ty = 0; ty < 6; ty++) {
        const uint32_t type = types[ty];
        for (int c = 0; c < nc; c++) {
            run_case("emulated", quant_amx_pack_act_emu, quant_gemm_amx_emu, type, cases[c].rows, cases[c].cols,
                     cases[c].ntok, cases[c].r0, cases[c].r1, cases[c].extreme, cases[c].nan_block, 100 + c);
            if (real)
                run_case("AMX-INT8", quant_amx_pack_act, quant_gemm_amx, type, cases[c].rows, cases[c].cols,
                         cases[c].ntok, cases[c].r0, cases[c].r1, cases[c].extreme, cases[c].nan_block, 100 + c);
        }
    }
    return finish("test_quant_amx");
}
