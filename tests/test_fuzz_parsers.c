/*
 * test_fuzz_parsers.c: a deterministic mutation fuzzer over the libFuzzer targets in
 * tests/fuzz/ (JSON, safetensors header, tokenizer, GGUF reader, .npy reader, chat templates), for builds without
 * clang's libFuzzer: ctest runs it under ASan/UBSan in CI (INFLLM_SANITIZE=ON). Each target gets
 * seed inputs and a fixed number of mutated variants (bit flips, byte sets, inserts, deletes,
 * duplications, truncations, splices) from a fixed seed, so failures reproduce exactly.
 * A target signals a broken property with abort(); the sanitizers catch memory errors.
 * INFLLM_FUZZ_ITERS scales the iteration counts (default 1).
 */
#include <stdint.h>

#include "harness.h"

#define FUZZ_DATA_DIR INFLLM_SOURCE_DIR "/tests/data"
#define LLVMFuzzerTestOneInput fuzz_json_one
#include "fuzz/fuzz_json.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_st_one
#include "fuzz/fuzz_safetensors.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_tok_one
#include "fuzz/fuzz_tokenizer.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_tokjson_one
#include "fuzz/fuzz_tokenizer_json.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_npy_one
#include "fuzz/fuzz_npy.c"
#undef LLVMFuzzerTestOneInput
#if __has_include("gguf.h")
#define LLVMFuzzerTestOneInput fuzz_gguf_one
#include "fuzz/fuzz_gguf.c"
#undef LLVMFuzzerTestOneInput
#include "mcommon.h"
#define HAVE_GGUF 1
#endif
#if __has_include("mtok.h")
#define LLVMFuzzerTestOneInput fuzz_chat_one
#include "fuzz/fuzz_chat_template.c"
#undef LLVMFuzzerTestOneInput
#define HAVE_CHAT 1
#endif

typedef int (*target_fn)(const uint8_t *, size_t);

typedef struct {
    uint8_t *p;
    size_t n;
} buf;

static unsigned long long rng = 0x1234567ULL;
static size_t rnd(size_t n) { return n ? (size_t)(h_rng_next(&rng) % n) : 0; }

static buf mk(const void *p, size_t n) {
    buf b = {malloc(n ? n : 1), n};
    if (n) memcpy(b.p, p, n);
    return b;
}

static buf mutate(const buf *seeds, int ns) {
    const buf *s = &seeds[rnd((size_t)ns)];
    size_t cap = s->n * 2 + 64;
    uint8_t *p = malloc(cap);
    size_t n = s->n;
    memcpy(p, s->p, n);
    int k = 1 + (int)rnd(4);
    static const uint8_t interesting[] = {0, 1, 0x7F, 0x80, 0xFF, '"', '\\', '{', '[', ']', '}', ',', ':', '<', '>'};
    for (int m = 0; m < k; m++) {
        switch (rnd(8)) {
        case 0: if (n) p[rnd(n)] ^= (uint8_t)(1u << rnd(8)); break;
        case 1: if (n) p[rnd(n)] = (uint8_t)rnd(256); break;
        case 2: if (n) p[rnd(n)] = interesting[rnd(sizeof interesting)]; break;
        case 3: { /* insert */
            size_t at = rnd(n + 1), len = 1 + rnd(8);
            if (n + len > cap) break;
            memmove(p + at + len, p + at, n - at);
            for (size_t i = 0; i < len; i++) p[at + i] = (uint8_t)rnd(256);
            n += len;
            break;
        }
        case 4: { /* delete */
            if (!n) break;
            size_t at = rnd(n), len = 1 + rnd(n - at < 16 ? n - at : 16);
            memmove(p + at, p + at + len, n - at - len);
            n -= len;
            break;
        }
        case 5: { /* duplicate a range */
            if (!n) break;
            size_t at = rnd(n), len = 1 + rnd(n - at < 32 ? n - at : 32);
            if (n + len > cap) break;
            size_t to = rnd(n + 1);
            uint8_t tmp[32];
            memcpy(tmp, p + at, len);
            memmove(p + to + len, p + to, n - to);
            memcpy(p + to, tmp, len);
            n += len;
            break;
        }
        case 6: n = rnd(n + 1); break; /* truncate */
        default: { /* 8-byte little-endian integer overwrite (lengths, counts, offsets) */
            if (n < 8) break;
            size_t at = rnd(n - 7);
            uint64_t v = rnd(2) ? rnd(1u << 20) : ~(uint64_t)rnd(16);
            memcpy(p + at, &v, rnd(2) ? 8 : 4);
        }
        }
    }
    buf r = {p, n};
    return r;
}

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    if (fread(b, 1, (size_t)sz, f) != (size_t)sz) sz = 0;
    b[sz] = 0;
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static void run(const char *name, target_fn fn, buf *seeds, int ns, int iters) {
    const char *e = getenv("INFLLM_FUZZ_ITERS");
    if (e && atoi(e) > 0) iters *= atoi(e);
    for (int i = 0; i < ns; i++) fn(seeds[i].p, seeds[i].n);
    for (int i = 0; i < iters; i++) {
        buf b = mutate(seeds, ns);
        fn(b.p, b.n);
        free(b.p);
    }
    printf("%s: %d seeds + %d mutated inputs, no crash\n", name, ns, iters);
    CHECK(1, "%s", name);
    for (int i = 0; i < ns; i++) free(seeds[i].p);
}

static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

int main(void) {
    size_t n1, n2;
    char *bpe = slurp(FUZZ_DATA_DIR "/tok_bpe.json", &n1);
    char *spm = slurp(FUZZ_DATA_DIR "/tok_spm.json", &n2);
    CHECK(bpe && spm, "fixtures");
    if (!bpe || !spm) return finish("test_fuzz_parsers");

    /* JSON */
    {
        const char *s1 = "{\"a\":[1,2.5e-3,\"\\ud83d\\ude00\",null,true,false,{}],\"b\":{\"c\":\"d\"}}";
        const char *s2 = "[[[[\"x\\n\\u00e9\"]]], -0.0, 1E+9]";
        buf seeds[3] = {mk(s1, strlen(s1)), mk(s2, strlen(s2)), mk(bpe, 2000)};
        run("json", fuzz_json_one, seeds, 3, 20000);
    }
    /* safetensors */
    {
        const char *h = "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],"
                        "\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[16,22]}}";
        uint8_t img[512];
        size_t hl = strlen(h);
        put64(img, hl);
        memcpy(img + 8, h, hl);
        for (int i = 0; i < 22; i++) img[8 + hl + (size_t)i] = (uint8_t)i;
        buf seeds[1] = {mk(img, 8 + hl + 22)};
        run("safetensors", fuzz_st_one, seeds, 1, 20000);
    }
    /* tokenizer: texts for both fixtures, and tokenizer.json documents */
    {
        static const char t1[] = "\0Hello world, I'm here!  12345 caf\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x98\x80";
        const char *t2 = "\3<|im_start|>user\nhi<|im_end|>\n  x\t\n";
        const char *t3 = "\1 hello  world\t\n<s></s> \xE2\x96\x81x";
        /* the tekken split (mode bit 2): mixed case, titlecase, a decomposed accent, CJK beside Latin, digits, '/' */
        const char *t4 = "\4Hello WORLDwide helloWorld \xC3\x91" "AND\xC3\x9A e\xCC\x81" "cole \xC7\x85ungla "
                         "\xE4\xB8\xAD\xE6\x96\x87" "English path/to//x\r\n 123 !\xCC\x81" "a";
        buf seeds[4] = {mk(t1, sizeof t1 - 1), mk(t2, strlen(t2)), mk(t3, strlen(t3)), mk(t4, strlen(t4))};
        run("tokenizer text", fuzz_tok_one, seeds, 4, 20000);
        buf jseeds[2] = {mk(bpe, n1), mk(spm, n2)};
        run("tokenizer json", fuzz_tokjson_one, jseeds, 2, 300);
    }
    /* .npy: format 1.0 f32 [2, 3], 2.0 bf16-as-u2 [4] with a trailing comma, 1.0 i8 scalar () */
    {
        buf seeds[3];
        const char *hdrs[3] = {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                               "{'descr': '<u2', 'fortran_order': False, 'shape': (4,), }",
                               "{'descr': '<i8', 'fortran_order': False, 'shape': (), }"};
        const size_t data_bytes[3] = {24, 8, 8};
        for (int i = 0; i < 3; i++) {
            uint8_t img[256];
            const int v2 = i == 1;
            const size_t pre = v2 ? 12 : 10, hl0 = strlen(hdrs[i]);
            size_t hl = hl0 + 1;
            while ((pre + hl) % 64) hl++; /* padded with spaces to 64 bytes, ending in a newline */
            memcpy(img, "\x93NUMPY", 6);
            img[6] = (uint8_t)(v2 ? 2 : 1);
            img[7] = 0;
            const uint32_t hl32 = (uint32_t)hl;
            memcpy(img + 8, &hl32, v2 ? 4 : 2);
            memcpy(img + pre, hdrs[i], hl0);
            memset(img + pre + hl0, ' ', hl - hl0 - 1);
            img[pre + hl - 1] = '\n';
            for (size_t b = 0; b < data_bytes[i]; b++) img[pre + hl + b] = (uint8_t)(b * 37 + 1);
            seeds[i] = mk(img, pre + hl + data_bytes[i]);
            npy_array a;
            FILE *f = fmemopen(img, seeds[i].n, "rb");
            char err[256] = "";
            CHECK(f && npy_read_stream(f, "seed.npy", &a, err, sizeof err) == 0 && a.count * a.elem_size == data_bytes[i],
                  ".npy seed %d reads (%s)", i, err);
            if (f) fclose(f);
            npy_free(&a);
        }
        run("npy", fuzz_npy_one, seeds, 3, 20000);
    }
#ifdef HAVE_GGUF
    {
        /* GGUF v3: 3 KVs (string, uint32, string array) and one F32 tensor [4,2] */
        uint8_t g[512];
        size_t o = 0;
#define PUT(p, n) (memcpy(g + o, (p), (n)), o += (n))
#define U32(v) do { uint32_t v_ = (v); PUT(&v_, 4); } while (0)
#define U64(v) do { uint64_t v_ = (v); PUT(&v_, 8); } while (0)
#define STR(s) do { U64(strlen(s)); PUT((s), strlen(s)); } while (0)
        PUT("GGUF", 4);
        U32(3);
        U64(1);
        U64(3);
        STR("general.architecture"); U32(8); STR("llama");
        STR("general.alignment"); U32(4); U32(32);
        STR("tokenizer.ggml.tokens"); U32(9); U32(8); U64(2); STR("a"); STR("b");
        STR("w"); U32(2); U64(4); U64(2); U32(0); U64(0);
        while (o % 32) g[o++] = 0;
        memset(g + o, 0, 32);
        o += 32;
        buf seeds[1] = {mk(g, o)};
        gguf_file *ok = gguf_open_buffer(g, o);
        CHECK(ok != NULL, "gguf seed opens");
        gguf_close(ok);
        /* a key or a tensor name given twice was accepted, the first one read (llama.cpp refuses both) */
        for (int dup_tensor = 0; dup_tensor < 2; dup_tensor++) {
            uint8_t d[512];
            size_t o2 = o;
            memcpy(d, g, o);
            o = 0;
            PUT("GGUF", 4);
            U32(3);
            U64(dup_tensor ? 2 : 1);
            U64(dup_tensor ? 1 : 2);
            STR("general.architecture"); U32(8); STR("llama");
            if (!dup_tensor) { STR("general.architecture"); U32(8); STR("qwen2"); }
            STR("w"); U32(2); U64(4); U64(2); U32(0); U64(0);
            if (dup_tensor) { STR("w"); U32(2); U64(4); U64(2); U32(0); U64(32); }
            while (o % 32) g[o++] = 0;
            memset(g + o, 0, 64);
            o += 64;
            gguf_file *bad = gguf_open_buffer(g, o);
            CHECK(bad == NULL && strstr(mdl_error(), "more than once") &&
                      strstr(mdl_error(), dup_tensor ? "tensor 'w'" : "key 'general.architecture'"),
                  "gguf with a duplicate %s: refused (%s)", dup_tensor ? "tensor" : "key", mdl_error());
            gguf_close(bad);
            memcpy(g, d, o2); /* the seed back */
            o = o2;
        }
        run("gguf", fuzz_gguf_one, seeds, 1, 20000);
    }
#endif
#ifdef HAVE_CHAT
    /* chat templates (a model file's text; tests/data/chat_tpl_*.jinja, scripts/fuzz.sh's seeds too): ChatML with a
     * default system prompt, Llama 3.1's dated shape, Phi-3 with an "is defined" test in its generation prompt,
     * Mistral's Large-2407 (v3: the system prompt in the last user message, tool branches) and Small 3.2 (v7: a
     * [SYSTEM_PROMPT], a default dated by strftime_now); each seed is taken as it stands */
    {
        static const char *const names[5] = {"chatml", "llama3", "phi3", "mistral_v3", "mistral_v7"};
        static const mdl_chat_kind kinds[5] = {MDL_CHAT_CHATML, MDL_CHAT_LLAMA3, MDL_CHAT_PHI3, MDL_CHAT_MISTRAL,
                                               MDL_CHAT_MISTRAL};
        buf seeds[5];
        for (int i = 0; i < 5; i++) {
            char path[512];
            size_t n = 0;
            snprintf(path, sizeof path, FUZZ_DATA_DIR "/chat_tpl_%s.jinja", names[i]);
            char *t = slurp(path, &n);
            mdl_chat c;
            const int taken = t && mdl_chat_from_template(t, &c) == 0;
            CHECK(taken && c.kind == kinds[i], "chat template seed %s is taken (%s)", path,
                  !t ? "cannot read it" : taken ? "another style" : mdl_error());
            if (taken) mdl_chat_free(&c);
            seeds[i] = mk(t ? t : "", t ? n : 0);
            free(t);
        }
        run("chat template", fuzz_chat_one, seeds, 5, 20000);
    }
#endif
    if (fixture[0]) tok_free(fixture[0]);
    if (fixture[1]) tok_free(fixture[1]);
    if (fixture[2]) tok_free(fixture[2]);
    free(bpe);
    free(spm);
    return finish("test_fuzz_parsers");
}
