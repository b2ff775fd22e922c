/* test_safetensors.c: single files, in-memory images, sharded checkpoints (index json and
 * folder), dtype conversion, and every validation error (header length, JSON, dtype, shape,
 * data_offsets range / overlap / size mismatch, shard consistency). */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "safetensors.h"

static unsigned char img[1 << 16];

/* Builds header-length + header (padded with spaces to 8 bytes) + data into img. */
static size_t build(const char *header, const void *data, size_t dlen) {
    size_t h = strlen(header), pad = (8 - h % 8) % 8;
    uint64_t hl = h + pad;
    for (int i = 0; i < 8; i++) img[i] = (unsigned char)(hl >> (8 * i));
    memcpy(img + 8, header, h);
    memset(img + 8 + h, ' ', pad);
    if (dlen) memcpy(img + 8 + hl, data, dlen);
    return 8 + hl + dlen;
}

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

static void expect_fail(const char *header, size_t dlen, const char *why) {
    static unsigned char zeros[4096];
    size_t n = build(header, zeros, dlen);
    st_model *m = (st_model *)1;
    char err[256] = "";
    int rc = st_open_memory(img, n, &m, err, sizeof err);
    CHECK(rc == -1 && m == NULL && strstr(err, why), "%s: rc %d err '%s', want '%s'", header, rc, err, why);
    if (rc == 0) st_close(m);
}

int main(void) {
    char err[256];
    /* a valid image: F32 [2,3], F16 [2], BF16 scalar, an empty tensor */
    float f32[6] = {1, -2, 3.5f, 0, 1e-3f, -7};
    uint16_t f16[2] = {0x3C00, 0xC000}; /* 1, -2 */
    uint16_t bf16[1] = {0x4049};        /* 3.140625 */
    unsigned char data[64];
    memcpy(data, f32, 24);
    memcpy(data + 24, f16, 4);
    memcpy(data + 28, bf16, 2);
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},"
                      "\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                      "\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[24,28]},"
                      "\"b\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[28,30]},"
                      "\"e\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[30,30]}}";
    size_t n = build(hdr, data, 30);
    st_model *m = NULL;
    CHECK(st_open_memory(img, n, &m, err, sizeof err) == 0, "open valid: %s", err);
    if (m) {
        CHECK(st_count(m) == 4, "4 tensors");
        const st_tensor *w = st_find(m, "w");
        CHECK(w && w->dtype == ST_F32 && w->ndim == 2 && w->shape[0] == 2 && w->shape[1] == 3 && w->numel == 6 &&
                  w->nbytes == 24 && !memcmp(w->data, f32, 24),
              "w");
        float out[6];
        st_to_f32(w, out);
        CHECK(!memcmp(out, f32, 24), "F32 copy");
        const st_tensor *h = st_find(m, "h");
        st_to_f32(h, out);
        CHECK(h && h->dtype == ST_F16 && out[0] == 1.0f && out[1] == -2.0f, "F16 -> F32");
        const st_tensor *b = st_find(m, "b");
        st_to_f32(b, out);
        CHECK(b && b->ndim == 0 && b->numel == 1 && out[0] == 3.140625f, "BF16 scalar");
        const st_tensor *e = st_find(m, "e");
        CHECK(e && e->numel == 0 && e->nbytes == 0, "empty tensor");
        CHECK(st_find(m, "nope") == NULL && st_find(m, "") == NULL, "absent");
        CHECK(!strcmp(st_tensor_at(m, 0)->name, "b") && st_tensor_at(m, 4) == NULL, "sorted by name");
        CHECK(st_metadata(m, "format") && !strcmp(st_metadata(m, "format"), "pt") && !st_metadata(m, "x"),
              "metadata");
        CHECK(!strcmp(st_dtype_name(ST_BF16), "BF16") && st_dtype_size(ST_F16) == 2, "dtype helpers");
        st_close(m);
    }
    /* F16 specials: subnormal, inf, nan */
    uint16_t sp[3] = {0x0001, 0x7C00, 0x7E00};
    n = build("{\"s\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,6]}}", sp, 6);
    CHECK(st_open_memory(img, n, &m, err, sizeof err) == 0, "f16 specials");
    if (m) {
        float o[3];
        st_to_f32(st_find(m, "s"), o);
        CHECK(o[0] == 5.9604645e-08f && o[1] > 1e38f && o[2] != o[2], "subnormal/inf/nan: %g %g %g", o[0], o[1], o[2]);
        st_close(m);
    }

    /* validation errors */
    expect_fail("{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "unsupported dtype I64");
    expect_fail("{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "unsupported dtype F64");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8, "needs 8");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "out of range");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "out of range");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "non-negative");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "non-negative");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
                "overflow");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "dimensions");
    expect_fail("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "missing \"dtype\"");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "\"shape\"");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "data_offsets");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "data_offsets");
    expect_fail("{\"a\":3}", 0, "not an object");
    expect_fail("[1,2]", 0, "not a JSON object");
    expect_fail("{\"a\":", 0, "JSON error");
    expect_fail("{\"__metadata__\":{\"k\":1}}", 0, "not a string");
    /* header length problems */
    memset(img, 0, 16);
    CHECK(st_open_memory(img, 4, &m, err, sizeof err) == -1 && strstr(err, "too small"), "tiny: %s", err);
    img[0] = 200;
    CHECK(st_open_memory(img, 16, &m, err, sizeof err) == -1 && strstr(err, "header length"), "hlen: %s", err);
    memset(img, 0xFF, 8);
    CHECK(st_open_memory(img, 16, &m, err, sizeof err) == -1 && strstr(err, "header length"), "huge hlen: %s", err);
    memset(img, 0, 8);
    CHECK(st_open_memory(img, 16, &m, err, sizeof err) == -1 && strstr(err, "header length"), "zero hlen: %s", err);

    /* files: single file, sharded index, folder */
    char dir[] = "/tmp/infllm_st_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char p1[256], p2[256], pi[256];
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
    snprintf(pi, sizeof pi, "%s/model.safetensors.index.json", dir);
    n = build("{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", f32, 8);
    write_file(p1, img, n);
    n = build("{\"b.weight\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2]},"
              "\"c.weight\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[2,6]}}", data + 28, 6);
    write_file(p2, img, n);
    const char *idx = "{\"metadata\":{\"total_size\":14},\"weight_map\":{"
                      "\"a.weight\":\"model-00001-of-00002.safetensors\","
                      "\"b.weight\":\"model-00002-of-00002.safetensors\","
                      "\"c.weight\":\"model-00002-of-00002.safetensors\"}}";
    write_file(pi, idx, strlen(idx));
    CHECK(st_open(p1, &m, err, sizeof err) == 0 && st_count(m) == 1, "single file: %s", err);
    st_close(m);
    CHECK(st_open(pi, &m, err, sizeof err) == 0 && st_count(m) == 3, "index: %s", err);
    if (m) {
        const st_tensor *c = st_find(m, "c.weight");
        CHECK(c && c->shard == 1 && !memcmp(c->data, data + 30, 4), "tensor from shard 2");
        CHECK(st_find(m, "a.weight")->shard == 0, "tensor from shard 1");
        st_close(m);
    }
    CHECK(st_open(dir, &m, err, sizeof err) == 0 && st_count(m) == 3, "folder with index: %s", err);
    st_close(m);
    /* index naming a tensor its shard lacks */
    const char *idx2 = "{\"weight_map\":{\"a.weight\":\"model-00001-of-00002.safetensors\","
                       "\"zz\":\"model-00001-of-00002.safetensors\"}}";
    write_file(pi, idx2, strlen(idx2));
    CHECK(st_open(pi, &m, err, sizeof err) == -1 && strstr(err, "zz"), "missing tensor: %s", err);
    const char *idx3 = "{\"weight_map\":{\"a.weight\":\"../etc/passwd\"}}";
    write_file(pi, idx3, strlen(idx3));
    CHECK(st_open(pi, &m, err, sizeof err) == -1 && strstr(err, "invalid shard"), "path escape: %s", err);
    const char *idx4 = "{\"weight_map\":{\"a.weight\":\"nothere.safetensors\"}}";
    write_file(pi, idx4, strlen(idx4));
    CHECK(st_open(pi, &m, err, sizeof err) == -1 && strstr(err, "nothere"), "missing shard: %s", err);
    /* the same tensor in two shards */
    n = build("{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", f32, 8);
    write_file(p2, img, n);
    const char *idx5 = "{\"weight_map\":{\"a.weight\":\"model-00001-of-00002.safetensors\","
                       "\"x\":\"model-00002-of-00002.safetensors\"}}";
    write_file(pi, idx5, strlen(idx5));
    CHECK(st_open(pi, &m, err, sizeof err) == -1 && strstr(err, "twice"), "duplicate: %s", err);
    /* folder without index -> model.safetensors */
    unlink(pi);
    char ps[256];
    snprintf(ps, sizeof ps, "%s/model.safetensors", dir);
    rename(p1, ps);
    CHECK(st_open(dir, &m, err, sizeof err) == 0 && st_find(m, "a.weight"), "folder with model.safetensors: %s", err);
    st_close(m);
    CHECK(st_open("/nonexistent/x.safetensors", &m, err, sizeof err) == -1 && strstr(err, "nonexistent"),
          "missing file: %s", err);
    write_file(p1, "abc", 3);
    CHECK(st_open(p1, &m, err, sizeof err) == -1 && strstr(err, "too small"), "truncated file: %s", err);
    unlink(p1);
    unlink(p2);
    unlink(ps);
    rmdir(dir);
    return finish("test_safetensors");
}
