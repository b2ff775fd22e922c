/* runutil.c: see runutil.h. */
#include "runutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "gguf.h"
#include "mcommon.h"
#include "mtok.h"
#include "quant.h"

#define UNSET OPTS_INT_UNSET /* out of every typed value's reach: -9 was, and --topk -9 ran as the default */

void run_opts_default(run_opts *o, const char *prog) {
    memset(o, 0, sizeof *o);
    o->prog = prog;
    o->ctx_i = 4096;
    o->attn = "auto";
    o->kv_type = "f16"; /* llama.cpp's default; dense attention over it reproduces llama.cpp bitwise */
    o->chunk = 512;
    o->topk = o->block_size = o->local_blocks = o->init_blocks = o->dense_len = o->kernel_size = o->kernel_stride = UNSET;
}

int run_threads(int t) {
    if (t > 0) return t;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int run_opts_check(run_opts *o) {
    if (strcmp(o->attn, "dense") && strcmp(o->attn, "sparse") && strcmp(o->attn, "auto")) {
        fprintf(stderr, "%s: --attn must be dense, sparse or auto (got '%s')\n", o->prog, o->attn);
        return 2;
    }
    if (strcmp(o->kv_type, "f32") && strcmp(o->kv_type, "f16") && strcmp(o->kv_type, "bf16")) {
        fprintf(stderr, "%s: --kv-type must be f32, f16 or bf16 (got '%s')\n", o->prog, o->kv_type);
        return 2;
    }
    if (o->ctx_i < 1) {
        fprintf(stderr, "%s: --ctx must be >= 1\n", o->prog);
        return 2;
    }
    if (o->chunk < 1 || o->chunk > 65536) {
        fprintf(stderr, "%s: --chunk must be in 1..65536\n", o->prog);
        return 2;
    }
    if (o->threads < 0 || o->threads > INFLLM_MAX_THREADS) { /* before the model loads (the library's bound) */
        fprintf(stderr, "%s: --threads must be in 0..%d (0: all cores)\n", o->prog, INFLLM_MAX_THREADS);
        return 2;
    }
    /* the InfLLM-V2 options that are wrong whatever the model's config says (a block size that does not divide by
     * the model's stride is found once it is loaded): before the model loads, a usage error naming the option (they
     * were exit 1 after the load, naming the library's field) */
    const struct {
        const char *name;
        int32_t v, lo;
    } ranges[] = {{"--topk", o->topk, 0},
                  {"--block-size", o->block_size, 1},
                  {"--local-blocks", o->local_blocks, 0},
                  {"--init-blocks", o->init_blocks, 0},
                  {"--dense-len", o->dense_len, -1},
                  {"--kernel-size", o->kernel_size, 1},
                  {"--kernel-stride", o->kernel_stride, 1}};
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++)
        if (ranges[i].v != UNSET && ranges[i].v < ranges[i].lo) {
            fprintf(stderr, "%s: %s must be >= %d (got %d)\n", o->prog, ranges[i].name, ranges[i].lo, ranges[i].v);
            return 2;
        }
    o->ctx = o->ctx_i;
#ifdef _OPENMP
    if (o->threads > 0) omp_set_num_threads(o->threads);
#endif
    return 0;
}

static long long mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    long long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) break;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

int run_load(const run_opts *o, run_ctx *r, int quiet) {
    memset(r, 0, sizeof *r);
    double t0 = mdl_now();
    r->m = mdl_load(o->model);
    if (!r->m) {
        fprintf(stderr, "%s: cannot load model '%s': %s\n", o->prog, o->model, mdl_error());
        return -1;
    }
    r->tok = mdl_load_tokenizer(r->m);
    if (!r->tok) snprintf(r->tok_err, sizeof r->tok_err, "%s", mdl_error());
    if (!quiet) {
        const mdl_config *c = &r->m->cfg;
        fprintf(stderr, "model: %s (%s, %s)\n", o->model, c->arch, r->m->is_gguf ? "GGUF" : "safetensors");
        fprintf(stderr, "  layers %d, embd %d, heads %d (kv %d, dim %d), ff %d, vocab %d, train ctx %d", c->n_layer,
                c->n_embd, c->n_head, c->n_head_kv, c->head_dim, c->n_ff, c->n_vocab, c->ctx_train);
        if (c->sliding_window > 0) {
            int windowed = 0;
            for (int l = 0; l < c->n_layer; l++) windowed += r->m->layers[l].window > 0;
            if (windowed == c->n_layer)
                fprintf(stderr, ", sliding window %lld", (long long)c->sliding_window);
            else if (windowed)
                fprintf(stderr, ", sliding window %lld in %d of the layers", (long long)c->sliding_window, windowed);
        }
        fputc('\n', stderr);
        fprintf(stderr, "  weights %.1f MiB (mapped), tensor types: %s (layer 0 q), %s (output); kernels %s; header %.0f ms\n",
                r->m->weight_bytes / 1048576.0, ggml_type_name(r->m->layers[0].wq.type),
                ggml_type_name(r->m->output.type), quant_kernel_name(), 1e3 * (mdl_now() - t0));
        if (!r->tok) fprintf(stderr, "  tokenizer: unavailable (%s)\n", r->tok_err);
    }
    return 0;
}

void run_unload(run_ctx *r) {
    if (r->tok) tok_free(r->tok);
    mdl_free(r->m);
    memset(r, 0, sizeof *r);
}

void run_params(const run_opts *o, const mdl_model *m, infllm_params *p) {
    *p = m->cfg.sparse; /* model config (sparse_config) or SPEC B 11.1 defaults */
    if (o->topk != UNSET) p->topk = o->topk;
    if (o->block_size != UNSET) p->block_size = o->block_size;
    if (o->local_blocks != UNSET) p->local_blocks = o->local_blocks;
    if (o->init_blocks != UNSET) p->init_blocks = o->init_blocks;
    if (o->dense_len != UNSET) p->dense_len = o->dense_len;
    if (o->kernel_size != UNSET) p->kernel_size = o->kernel_size;
    if (o->kernel_stride != UNSET) p->kernel_stride = o->kernel_stride;
    p->mode = !strcmp(o->attn, "dense") ? INFLLM_MODE_DENSE : !strcmp(o->attn, "sparse") ? INFLLM_MODE_SPARSE : INFLLM_MODE_AUTO;
    p->backend = INFLLM_BACKEND_CPU;
    p->num_threads = o->threads;
}

static infllm_dtype kv_dtype(const run_opts *o) {
    return !strcmp(o->kv_type, "f16") ? INFLLM_DTYPE_F16 : !strcmp(o->kv_type, "bf16") ? INFLLM_DTYPE_BF16 : INFLLM_DTYPE_F32;
}

mdl_session *run_session(const run_opts *o, run_ctx *r, int quiet) {
    infllm_params p;
    run_params(o, r->m, &p);
    infllm_dtype dt = kv_dtype(o);
    int chunk = (int64_t)o->chunk > o->ctx ? (int)o->ctx : o->chunk;
    size_t sess = mdl_session_bytes(r->m, o->ctx, chunk, dt);
    size_t logits = (size_t)r->m->cfg.n_vocab * 4 * 2;
    size_t total = r->m->weight_bytes + sess + logits;
    long long avail = mem_available();
    if (!quiet)
        fprintf(stderr, "memory: %.1f MiB estimated = weights %.1f + KV cache/buffers %.1f (ctx %lld, %s)%s%.0f MiB available\n",
                total / 1048576.0, r->m->weight_bytes / 1048576.0, sess / 1048576.0, (long long)o->ctx,
                infllm_dtype_name(dt), avail >= 0 ? "; " : "", avail >= 0 ? avail / 1048576.0 : 0.0);
    if (avail >= 0 && (long long)total > avail) {
        fprintf(stderr,
                "%s: not enough memory: this run needs about %.1f MiB, %.1f MiB are available (lower --ctx, or "
                "use --kv-type f16 rather than f32)\n",
                o->prog, total / 1048576.0, avail / 1048576.0);
        return NULL;
    }
    mdl_session *s = mdl_session_new(r->m, &p, o->ctx, chunk, dt, o->threads);
    if (!s) {
        fprintf(stderr, "%s: %s\n", o->prog, mdl_error());
        return NULL;
    }
    if (!quiet)
        fprintf(stderr, "attention: %s, block %d, topk %d + local %d + init %d, kernel %d/%d, dense_len %d\n",
                o->attn, p.block_size, p.topk, p.local_blocks, p.init_blocks, p.kernel_size, p.kernel_stride,
                p.dense_len);
    return s;
}

const char *run_attn_desc(const run_opts *o, int64_t kv_len) {
    (void)kv_len;
    return o->attn;
}

char *run_read_file(const char *prog, const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: cannot open '%s': %s\n", prog, path, strerror(errno));
        return NULL;
    }
    /* A regular file is refused by its size before anything is read. Anything else (a pipe: -f /dev/stdin, a
     * process substitution; a device: /dev/zero) is read up to the cap and refused past it, instead of being
     * read until memory runs out. */
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "%s: '%s' is a folder, not a text file\n", prog, path);
        fclose(f);
        return NULL;
    }
    if (fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size > RUN_TEXT_MAX) {
        fprintf(stderr, "%s: '%s' holds %lld bytes, more than the %d MiB a text input may have\n", prog, path,
                (long long)sb.st_size, RUN_TEXT_MAX >> 20);
        fclose(f);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    int too_long = 0;
    while (b) {
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (n < cap) break;
        if (n > RUN_TEXT_MAX) {
            too_long = 1;
            break;
        }
        cap = cap * 2 > (size_t)RUN_TEXT_MAX + 1 ? (size_t)RUN_TEXT_MAX + 1 : cap * 2; /* one byte past the cap shows it */
        char *nb = realloc(b, cap + 1);
        if (!nb) {
            free(b);
            b = NULL;
        } else {
            b = nb;
        }
    }
    const int bad = ferror(f);
    fclose(f);
    if (!b) {
        fprintf(stderr, "%s: out of memory reading '%s'\n", prog, path);
        return NULL;
    }
    if (too_long) {
        fprintf(stderr, "%s: '%s' is not a regular file and gave more than the %d MiB a text input may have\n", prog,
                path, RUN_TEXT_MAX >> 20);
        free(b);
        return NULL;
    }
    if (bad) {
        fprintf(stderr, "%s: read error on '%s'\n", prog, path);
        free(b);
        return NULL;
    }
    b[n] = 0;
    *len = n;
    return b;
}

run_opts run_opts_mode(const run_opts *o, const char *mode) {
    run_opts r = *o;
    r.attn = mode;
    if (!strcmp(mode, "sparse")) r.dense_len = -1;
    return r;
}

int run_chat_add_bos(const infllm_tokenizer *tok, const char *text) {
    const int32_t bos = tok_bos(tok);
    const char *bt = bos >= 0 ? tok_token_text(tok, bos) : NULL;
    return bt && strncmp(text, bt, strlen(bt)) == 0 ? 0 : -1;
}

int32_t *run_tokenize(const char *prog, const infllm_tokenizer *tok, const char *text, size_t len, int add_bos,
                      int special, size_t extra, int64_t *n) {
    const int need = tok_encode(tok, text, len, add_bos, special, NULL, 0);
    if (need == INT32_MIN) {
        fprintf(stderr, "%s: out of memory (tokenizer)\n", prog);
        return NULL;
    }
    const int cnt = need < 0 ? -need : need;
    int32_t *ids = malloc(sizeof(int32_t) * ((size_t)cnt + extra + 1));
    if (!ids) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return NULL;
    }
    const int got = tok_encode(tok, text, len, add_bos, special, ids, cnt + 1);
    if (got == INT32_MIN) { /* the second pass ran out of memory: it read as a count, "the prompt is empty" */
        fprintf(stderr, "%s: out of memory (tokenizer)\n", prog);
        free(ids);
        return NULL;
    }
    *n = got;
    return ids;
}
