/*
 * attn.c: `infllm attn`: InfLLM-V2 attention on tensors read from .npy files, results written
 * as .npy in the layout of shared/golden (see its README). With --dout (dLoss/dout) it also
 * writes dq, dk and dv (the backward on the host backends, the selection held fixed).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "commands.h"
#include "infllm.h"
#include "npy.h"
#include "opts.h"
#include "portable.h"

#ifdef INFLLM_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

typedef struct attn_opts {
    const char *q, *k, *v, *cu_seqlens, *cu_seqlens_q, *out, *dump, *mode, *device, *dout, *grad_dir;
    int cache_len; /* ATTN_CACHE_LEN_UNSET when --cache-len is not given */
    int block_size, kernel_size, kernel_stride, init_blocks, local_blocks, topk, dense_len, exact_lse, window, threads;
    float scale;
    int quiet;
} attn_opts;

/* o.cache_len before parsing: any negative value a user gives is refused, this one included */
#define ATTN_CACHE_LEN_UNSET OPTS_INT_UNSET

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------ device buffers ---- */
/* On the CPU backends a "device" buffer is host memory; on CUDA it is cudaMalloc'd. */
typedef struct dev_ctx {
    int cuda;
} dev_ctx;

static void *dev_alloc(const dev_ctx *d, size_t bytes) {
    if (bytes == 0) bytes = 1;
#ifdef INFLLM_HAVE_CUDA
    if (d->cuda) {
        void *p = NULL;
        if (cudaMalloc(&p, bytes) != cudaSuccess) return NULL;
        return p;
    }
#endif
    (void)d;
    return malloc(bytes);
}
static void dev_free(const dev_ctx *d, void *p) {
    if (!p) return;
#ifdef INFLLM_HAVE_CUDA
    if (d->cuda) {
        cudaFree(p);
        return;
    }
#endif
    (void)d;
    free(p);
}
/* Host data as a device buffer: on the CPU returns host itself (no copy). */
static void *dev_from_host(const dev_ctx *d, const void *host, size_t bytes) {
#ifdef INFLLM_HAVE_CUDA
    if (d->cuda) {
        void *p = dev_alloc(d, bytes);
        if (p && bytes && cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice) != cudaSuccess) {
            cudaFree(p);
            return NULL;
        }
        return p;
    }
#endif
    (void)d;
    (void)bytes;
    return (void *)host;
}
static void dev_release_copy(const dev_ctx *d, void *p) {
    if (d->cuda) dev_free(d, p);
}
/* Device buffer to a host buffer: on the CPU returns dev itself. Free with host_release. */
static void *host_from_dev(const dev_ctx *d, const void *dev, size_t bytes) {
#ifdef INFLLM_HAVE_CUDA
    if (d->cuda) {
        void *h = malloc(bytes ? bytes : 1);
        if (h && bytes && cudaMemcpy(h, dev, bytes, cudaMemcpyDeviceToHost) != cudaSuccess) {
            free(h);
            return NULL;
        }
        return h;
    }
#endif
    (void)d;
    (void)bytes;
    return (void *)dev;
}
static void host_release(const dev_ctx *d, void *h) {
    if (d->cuda) free(h);
}

/* ------------------------------------------------------------- helpers ---- */

static int dtype_of(const npy_array *a, const char *path, infllm_dtype *dt) {
    if (strcmp(a->descr, "<u2") == 0) *dt = INFLLM_DTYPE_BF16; /* raw bf16 bits, as shared/golden stores them */
    else if (strcmp(a->descr, "<f2") == 0) *dt = INFLLM_DTYPE_F16;
    else if (strcmp(a->descr, "<f4") == 0) *dt = INFLLM_DTYPE_F32;
    else {
        fprintf(stderr, "infllm attn: %s: dtype '%s' is not a tensor dtype (want bf16 as '<u2' (.bf16.npy), "
                        "'<f2' or '<f4')\n", path, a->descr);
        return -1;
    }
    return 0;
}

static const char *suffix_for(infllm_dtype dt) {
    return dt == INFLLM_DTYPE_BF16 ? ".bf16.npy" : dt == INFLLM_DTYPE_F16 ? ".f16.npy" : ".npy";
}
static const char *descr_for(infllm_dtype dt) {
    return dt == INFLLM_DTYPE_BF16 ? "<u2" : dt == INFLLM_DTYPE_F16 ? "<f2" : "<f4";
}

/* 1 (after a message) when path names one of the input files: writing it would replace that input */
static int output_is_input(const attn_opts *o, const char *path) {
    const char *in[][2] = {{"--q", o->q}, {"--k", o->k}, {"--v", o->v}, {"--cu-seqlens", o->cu_seqlens},
                           {"--cu-seqlens-q", o->cu_seqlens_q}, {"--dout", o->dout}};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
        if (opts_same_file(path, in[i][1])) {
            fprintf(stderr, "infllm attn: %s is the %s input: not overwriting it (choose another output path)\n",
                    path, in[i][0]);
            return 1;
        }
    return 0;
}

/* The files --dump DIR and --grad-dir DIR write: base names, typed ones followed by the dtype's suffix (suffix_for) */
typedef struct {
    const char *base;
    int typed; /* 1: base + ".npy" / ".f16.npy" / ".bf16.npy" by the inputs' dtype */
} out_name;
static const out_name DUMP_FILES[] = {{"c1", 1}, {"c2", 1}, {"stage1_scores.npy", 0}, {"block_scores.npy", 0},
                                      {"topk_idx.npy", 0}, {"out", 1}, {"lse.npy", 0}};
static const out_name GRAD_FILES[] = {{"dq", 1}, {"dk", 1}, {"dv", 1}};

static void out_file_name(const out_name *n, infllm_dtype dt, char *buf, size_t len) {
    snprintf(buf, len, "%s%s", n->base, n->typed ? suffix_for(dt) : "");
}

/* 1 (after a message) when one of the files --dump / --grad-dir would write is an input, or is the --out file
 * (written first, then replaced): checked once the dtype (the names' suffix) is known, before anything is written */
static int dir_outputs_collide(const attn_opts *o, infllm_dtype dt) {
    const struct {
        const char *flag, *dir;
        const out_name *names;
        size_t n;
    } dirs[] = {{"--dump", o->dump, DUMP_FILES, sizeof DUMP_FILES / sizeof DUMP_FILES[0]},
                {"--grad-dir", o->grad_dir, GRAD_FILES, sizeof GRAD_FILES / sizeof GRAD_FILES[0]}};
    const char *out_base = o->out ? pf_last_sep(o->out) : NULL;
    out_base = out_base ? out_base + 1 : o->out;
    for (size_t d = 0; d < sizeof dirs / sizeof dirs[0]; d++) {
        if (!dirs[d].dir) continue;
        for (size_t i = 0; i < dirs[d].n; i++) {
            char name[64], path[4096];
            out_file_name(&dirs[d].names[i], dt, name, sizeof name);
            snprintf(path, sizeof path, "%s/%s", dirs[d].dir, name);
            if (output_is_input(o, path)) return 1;
            if (o->out && !strcmp(out_base, name) && opts_path_in_dir(o->out, dirs[d].dir)) {
                fprintf(stderr, "infllm attn: --out %s is also the %s file %s: one would replace the other (choose "
                                "another --out)\n", o->out, dirs[d].flag, name);
                return 1;
            }
        }
    }
    return 0;
}

static int write_npy(const attn_opts *o, const char *dir, const char *name, const char *descr, int ndim,
                     const int64_t *shape, const void *data) {
    char path[4096];
    if (dir)
        snprintf(path, sizeof path, "%s/%s", dir, name);
    else
        snprintf(path, sizeof path, "%s", name);
    if (output_is_input(o, path)) return -1;
    char err[512];
    if (npy_write(path, descr, ndim, shape, data, err, sizeof err)) {
        fprintf(stderr, "infllm attn: %s\n", err);
        return -1;
    }
    return 0;
}

static int load_cu(const char *path, npy_array *a, const char *what) {
    char err[512];
    if (npy_read(path, a, err, sizeof err)) {
        fprintf(stderr, "infllm attn: %s\n", err);
        return -1;
    }
    if (strcmp(a->descr, "<i4") != 0 || a->ndim != 1 || a->shape[0] < 2 || a->shape[0] - 1 > INT32_MAX) {
        fprintf(stderr, "infllm attn: %s: %s must be a 1-D int32 array of at least 2 offsets (got dtype '%s', %d dims)\n",
                path, what, a->descr, a->ndim);
        return -1;
    }
    const int32_t *c = a->data;
    for (int64_t i = 0; i + 1 < a->shape[0]; i++)
        if (c[i + 1] < c[i] || c[0] != 0) {
            fprintf(stderr, "infllm attn: %s: %s must start at 0 and never decrease (entry %lld)\n", path, what,
                    (long long)i + 1);
            return -1;
        }
    return 0;
}

/* the usage's summary line; a check of the parsed options that fails prints the usage after its message too */
#define ATTN_SUMMARY "InfLLM-V2 attention on .npy tensors (shared/golden layout)."

int cmd_attn(int argc, char **argv) {
    infllm_params p;
    infllm_params_default(&p);
    attn_opts o;
    memset(&o, 0, sizeof o);
    o.cache_len = ATTN_CACHE_LEN_UNSET;
    o.mode = "auto";
    o.device = "cpu";
    o.block_size = p.block_size;
    o.kernel_size = p.kernel_size;
    o.kernel_stride = p.kernel_stride;
    o.init_blocks = p.init_blocks;
    o.local_blocks = p.local_blocks;
    o.topk = p.topk;
    o.dense_len = p.dense_len;
    const opt_def defs[] = {
        {"--q", NULL, OPT_STR, &o.q, "FILE", "queries [T, Hq, D] (.bf16.npy as uint16, or f16/f32 .npy)"},
        {"--k", NULL, OPT_STR, &o.k, "FILE", "keys [T, Hkv, D]"},
        {"--v", NULL, OPT_STR, &o.v, "FILE", "values [T, Hkv, D]"},
        {"--cu-seqlens", NULL, OPT_STR, &o.cu_seqlens, "FILE", "int32 [B+1] key offsets of a varlen batch (optional)"},
        {"--cu-seqlens-q", NULL, OPT_STR, &o.cu_seqlens_q, "FILE",
         "int32 [B+1] query offsets when queries are a suffix of each sequence (optional)"},
        {"--cache-len", NULL, OPT_INT, &o.cache_len, "N",
         "decode: the first N tokens of each sequence are cache, the rest are the queries"},
        {"--mode", NULL, OPT_STR, &o.mode, "MODE", "auto | dense | sparse (auto: dense while kv_len < --dense-len)"},
        {"--block-size", NULL, OPT_INT, &o.block_size, "N", "stage-2 block size (64)"},
        {"--kernel-size", NULL, OPT_INT, &o.kernel_size, "N", "c1 kernel size (32); c2 uses 4x"},
        {"--kernel-stride", NULL, OPT_INT, &o.kernel_stride, "N", "c1 kernel stride (16); c2 uses 4x"},
        {"--init-blocks", NULL, OPT_INT, &o.init_blocks, "N", "forced initial blocks (1)"},
        {"--local-blocks", NULL, OPT_INT, &o.local_blocks, "N", "forced blocks before the current one (32)"},
        {"--topk", NULL, OPT_INT, &o.topk, "N", "dynamic blocks; a query selects topk + local-blocks (64)"},
        {"--dense-len", NULL, OPT_INT, &o.dense_len, "N", "auto mode: dense below this kv length (8192); -1 = sparse"},
        {"--exact-lse", NULL, OPT_FLAG, &o.exact_lse, NULL, "stage-1 LSE over c1 (no c2 approximation)"},
        {"--window", NULL, OPT_INT, &o.window, "N",
         "sliding key window: a query attends the keys of its last N positions (0: none)"},
        {"--scale", NULL, OPT_FLOAT, &o.scale, "X", "softmax scale (default 1/sqrt(head_dim))"},
        {"--threads", NULL, OPT_INT, &o.threads, "N", "CPU threads (0 = all cores)"},
        {"--device", NULL, OPT_STR, &o.device, "DEV", "cpu | ref (float64 reference) | cuda"},
        {"--out", NULL, OPT_STR, &o.out, "FILE", "write the attention output [T_q, Hq, D] here (input dtype)"},
        {"--dump", NULL, OPT_STR, &o.dump, "DIR",
         "write c1, c2, stage1_scores, block_scores, topk_idx, out and lse .npy files here"},
        {"--dout", NULL, OPT_STR, &o.dout, "FILE",
         "dLoss/dout [T_q, Hq, D] (inputs' dtype): also compute dq, dk, dv"},
        {"--grad-dir", NULL, OPT_STR, &o.grad_dir, "DIR", "where --dout's gradients go: dq, dk, dv .npy (inputs' dtype)"},
        {"--quiet", NULL, OPT_FLAG, &o.quiet, NULL, "print nothing on success"},
        {NULL, NULL, OPT_FLAG, NULL, NULL, NULL}};
    int rc = opts_parse("infllm attn", ATTN_SUMMARY, defs, argc, argv, 1, NULL, 0, NULL);
    if (rc == 1) return 0;
    if (rc) return 2; /* opts_parse printed the message and the usage */
    if (!o.q || !o.k || !o.v) {
        fprintf(stderr, "infllm attn: --q, --k and --v are required (see --help)\n");
        return opts_usage_error("infllm attn", ATTN_SUMMARY, defs);
    }
    if (!o.dout != !o.grad_dir) {
        fprintf(stderr, "infllm attn: --dout and --grad-dir go together (the gradients need both)\n");
        return opts_usage_error("infllm attn", ATTN_SUMMARY, defs);
    }
    if (o.cache_len != ATTN_CACHE_LEN_UNSET && o.cache_len < 0) { /* was taken for "not given" and ignored */
        fprintf(stderr, "infllm attn: --cache-len must be >= 0 (got %d)\n", o.cache_len);
        return opts_usage_error("infllm attn", ATTN_SUMMARY, defs);
    }
    /* before the work (--dump / --grad-dir names: dir_outputs_collide) */
    if (o.out && output_is_input(&o, o.out)) return opts_usage_error("infllm attn", ATTN_SUMMARY, defs);
    /* a folder option naming a file or nothing: said before the work, naming the option (it failed only when the
     * first file was written there, after the forward and --out) */
    const char *folders[][2] = {{"--dump", o.dump}, {"--grad-dir", o.grad_dir}};
    for (int i = 0; i < 2; i++) {
        struct stat fsb;
        if (!folders[i][1]) continue;
        if (!*folders[i][1]) {
            fprintf(stderr, "infllm attn: %s needs a folder name\n", folders[i][0]);
            return opts_usage_error("infllm attn", ATTN_SUMMARY, defs);
        }
        if (stat(folders[i][1], &fsb) == 0 && !S_ISDIR(fsb.st_mode)) {
            fprintf(stderr, "infllm attn: %s %s is a file, not a folder\n", folders[i][0], folders[i][1]);
            return opts_usage_error("infllm attn", ATTN_SUMMARY, defs);
        }
    }
    if (strcmp(o.mode, "auto") == 0) p.mode = INFLLM_MODE_AUTO;
    else if (strcmp(o.mode, "dense") == 0) p.mode = INFLLM_MODE_DENSE;
    else if (strcmp(o.mode, "sparse") == 0) p.mode = INFLLM_MODE_SPARSE;
    else {
        fprintf(stderr, "infllm attn: --mode must be auto, dense or sparse (got '%s')\n", o.mode);
        return opts_usage_error("infllm attn", ATTN_SUMMARY, defs);
    }
    dev_ctx dev = {0};
    if (strcmp(o.device, "cpu") == 0) p.backend = INFLLM_BACKEND_CPU;
    else if (strcmp(o.device, "ref") == 0) p.backend = INFLLM_BACKEND_REF;
    else if (strcmp(o.device, "cuda") == 0) {
        p.backend = INFLLM_BACKEND_CUDA;
        dev.cuda = 1;
        char info[512];
        if (!infllm_cuda_device_info(info, sizeof info)) {
            fprintf(stderr, "infllm attn: --device cuda: %s (needs a device of compute capability 8.0 or newer and code for it)\n",
                    infllm_cuda_built() ? info : "this infllm was built without CUDA");
            return 1;
        }
    } else {
        fprintf(stderr, "infllm attn: --device must be cpu, ref or cuda (got '%s')\n", o.device);
        return opts_usage_error("infllm attn", ATTN_SUMMARY, defs);
    }
    p.block_size = o.block_size;
    p.kernel_size = o.kernel_size;
    p.kernel_stride = o.kernel_stride;
    p.init_blocks = o.init_blocks;
    p.local_blocks = o.local_blocks;
    p.topk = o.topk;
    p.dense_len = o.dense_len;
    p.exact_lse = o.exact_lse;
    p.window = o.window;
    p.softmax_scale = o.scale;
    p.num_threads = o.threads;
    { /* the parameters alone, before any file is read: a value the library refuses (--threads -1, --block-size 0,
       * --topk -1, a block size not a multiple of the stride) is a usage error, exit 2 with the usage, as bench
       * attn's; it was exit 1 after the inputs were read, naming the library's field, not the option */
        static const char *const field_opt[][2] = {
            {"block_size", "--block-size"},   {"kernel_size", "--kernel-size"},   {"kernel_stride", "--kernel-stride"},
            {"init_blocks", "--init-blocks"}, {"local_blocks", "--local-blocks"}, {"topk", "--topk"},
            {"dense_len", "--dense-len"},     {"softmax_scale", "--scale"},       {"num_threads", "--threads"},
            {"window", "--window"}};
        infllm_layout one;
        memset(&one, 0, sizeof one);
        one.dtype = INFLLM_DTYPE_BF16;
        one.num_seqs = 1;
        one.total_q = one.total_k = 1;
        one.num_q_heads = one.num_kv_heads = 1;
        one.head_dim = 64;
        infllm_sizes sz;
        if (infllm_get_sizes(&p, &one, &sz) == INFLLM_ERR_PARAM) {
            const char *msg = infllm_last_error();
            char opts_named[160] = "";
            size_t n = 0;
            for (size_t i = 0; i < sizeof field_opt / sizeof field_opt[0] && n + 1 < sizeof opts_named; i++)
                if (strstr(msg, field_opt[i][0]))
                    n += (size_t)snprintf(opts_named + n, sizeof opts_named - n, "%s%s", n ? ", " : "", field_opt[i][1]);
            fprintf(stderr, "infllm attn: %s%s%s%s\n", msg, n ? " (" : "", opts_named, n ? ")" : "");
            return opts_usage_error("infllm attn", ATTN_SUMMARY, defs);
        }
    }

    npy_array q = {0}, k = {0}, v = {0}, cuk = {0}, cuq = {0}, gout = {0};
    void *gq = NULL, *gk = NULL, *gv = NULL;
    int32_t *gtopk = NULL;
    void *gdout = NULL; /* --dout on the device (on the CPU: gout.data itself) */
    int32_t *cu_q_own = NULL;
    void *q_gather = NULL;
    void *bufs[16] = {0};
    int nbufs = 0;
    void *dq = NULL, *dk = NULL, *dv = NULL, *dcuq = NULL, *dcuk = NULL;
    void *hout = NULL, *hlse = NULL;
    int status = 1;
    char err[512];
    if (npy_read(o.q, &q, err, sizeof err) || npy_read(o.k, &k, err, sizeof err) ||
        npy_read(o.v, &v, err, sizeof err)) {
        fprintf(stderr, "infllm attn: %s\n", err);
        goto done;
    }
    infllm_dtype dq_t, dk_t, dv_t;
    if (dtype_of(&q, o.q, &dq_t) || dtype_of(&k, o.k, &dk_t) || dtype_of(&v, o.v, &dv_t)) goto done;
    if (dq_t != dk_t || dq_t != dv_t) {
        fprintf(stderr, "infllm attn: q, k and v must share one dtype (%s: %s, %s: %s, %s: %s)\n", o.q,
                infllm_dtype_name(dq_t), o.k, infllm_dtype_name(dk_t), o.v, infllm_dtype_name(dv_t));
        goto done;
    }
    if (dir_outputs_collide(&o, dq_t)) { /* every output name is known now: refuse before anything is written */
        status = 2;
        goto done;
    }
    if (q.ndim != 3 || k.ndim != 3 || v.ndim != 3) {
        fprintf(stderr, "infllm attn: %s must be 3-D [T, H, D] (got %d dims)\n",
                q.ndim != 3 ? o.q : k.ndim != 3 ? o.k : o.v, q.ndim != 3 ? q.ndim : k.ndim != 3 ? k.ndim : v.ndim);
        goto done;
    }
    if (k.shape[0] != v.shape[0] || k.shape[1] != v.shape[1] || k.shape[2] != v.shape[2]) {
        fprintf(stderr, "infllm attn: %s shape [%lld, %lld, %lld] differs from %s shape [%lld, %lld, %lld]\n", o.v,
                (long long)v.shape[0], (long long)v.shape[1], (long long)v.shape[2], o.k, (long long)k.shape[0],
                (long long)k.shape[1], (long long)k.shape[2]);
        goto done;
    }
    if (q.shape[2] != k.shape[2]) {
        fprintf(stderr, "infllm attn: head_dim of %s (%lld) differs from %s (%lld)\n", o.q, (long long)q.shape[2], o.k,
                (long long)k.shape[2]);
        goto done;
    }
    /* heads and head_dim are int32 in the API: a larger dimension (possible only in an empty array) is refused
     * here, not truncated into another shape */
    if (q.shape[1] > INT32_MAX || k.shape[1] > INT32_MAX || q.shape[2] > INT32_MAX) {
        fprintf(stderr, "infllm attn: %s / %s: a head count or head_dim above %d\n", o.q, o.k, INT32_MAX);
        goto done;
    }
    int64_t total_k = k.shape[0];
    int32_t Hq = (int32_t)q.shape[1], Hkv = (int32_t)k.shape[1], D = (int32_t)q.shape[2];
    size_t es = infllm_dtype_size(dq_t);

    /* sequences: key offsets */
    int32_t num_seqs = 1;
    const int32_t *cu_k = NULL;
    if (o.cu_seqlens) {
        if (load_cu(o.cu_seqlens, &cuk, "--cu-seqlens")) goto done;
        num_seqs = (int32_t)(cuk.shape[0] - 1);
        cu_k = cuk.data;
        if (cu_k[num_seqs] != total_k) {
            fprintf(stderr, "infllm attn: %s ends at %d but %s has %lld rows\n", o.cu_seqlens, cu_k[num_seqs], o.k,
                    (long long)total_k);
            goto done;
        }
    }
    /* query offsets: explicit, from --cache-len, prefill, or one query per sequence */
    const int32_t *cu_q = NULL;
    int64_t total_q = q.shape[0];
    const void *qdata = q.data;
    if (o.cu_seqlens_q) {
        if (load_cu(o.cu_seqlens_q, &cuq, "--cu-seqlens-q")) goto done;
        if (cuq.shape[0] - 1 != num_seqs) {
            fprintf(stderr, "infllm attn: %s has %lld sequences but the keys have %d\n", o.cu_seqlens_q,
                    (long long)cuq.shape[0] - 1, num_seqs);
            goto done;
        }
        cu_q = cuq.data;
        if (cu_q[num_seqs] != total_q) {
            fprintf(stderr, "infllm attn: %s ends at %d but %s has %lld rows\n", o.cu_seqlens_q, cu_q[num_seqs], o.q,
                    (long long)total_q);
            goto done;
        }
    } else if (o.cache_len >= 0 || (q.shape[0] != total_k && q.shape[0] == num_seqs)) {
        cu_q_own = malloc(sizeof(int32_t) * (size_t)(num_seqs + 1));
        if (!cu_q_own) { /* these two failed without a word (exit 1) */
            fprintf(stderr, "infllm attn: out of memory (the query offsets of %d sequences)\n", num_seqs);
            goto done;
        }
        cu_q_own[0] = 0;
        for (int32_t b = 0; b < num_seqs; b++) {
            int32_t lk = cu_k ? cu_k[b + 1] - cu_k[b] : (int32_t)total_k;
            int32_t lq = o.cache_len >= 0 ? lk - o.cache_len : 1;
            if (lq < 0) {
                fprintf(stderr, "infllm attn: --cache-len %d exceeds the length %d of sequence %d\n", o.cache_len, lk, b);
                goto done;
            }
            if (o.cache_len < 0 && lk < 1) { /* one query a sequence (q has a row a sequence): it needs a key */
                fprintf(stderr, "infllm attn: sequence %d has no keys, so it cannot have the one query a sequence that "
                                "%s's %lld rows imply (give --cu-seqlens-q)\n", b, o.q, (long long)q.shape[0]);
                goto done;
            }
            cu_q_own[b + 1] = cu_q_own[b] + lq;
        }
        cu_q = cu_q_own;
        int64_t want_q = cu_q_own[num_seqs];
        if (q.shape[0] == total_k && want_q != total_k) {
            /* q holds every position: keep the query rows (the last lq of each sequence) */
            q_gather = malloc((size_t)want_q * (size_t)Hq * (size_t)D * es);
            if (!q_gather) {
                fprintf(stderr, "infllm attn: out of memory (the %lld query rows)\n", (long long)want_q);
                goto done;
            }
            size_t row = (size_t)Hq * (size_t)D * es;
            for (int32_t b = 0; b < num_seqs; b++) {
                int32_t k1 = cu_k ? cu_k[b + 1] : (int32_t)total_k;
                int32_t lq = cu_q_own[b + 1] - cu_q_own[b];
                memcpy((char *)q_gather + (size_t)cu_q_own[b] * row, (const char *)q.data + (size_t)(k1 - lq) * row,
                       (size_t)lq * row);
            }
            qdata = q_gather;
            total_q = want_q;
        } else if (q.shape[0] != want_q) {
            fprintf(stderr, "infllm attn: %s has %lld rows; expected %lld (all positions) or %lld (queries only)\n", o.q,
                    (long long)q.shape[0], (long long)total_k, (long long)want_q);
            goto done;
        }
    } else if (q.shape[0] == total_k) {
        cu_q = cu_k;
    } else {
        fprintf(stderr, "infllm attn: %s has %lld rows but %s has %lld: give --cache-len or --cu-seqlens-q\n", o.q,
                (long long)q.shape[0], o.k, (long long)total_k);
        goto done;
    }

    infllm_layout l;
    memset(&l, 0, sizeof l);
    l.dtype = dq_t;
    l.num_seqs = num_seqs;
    l.total_q = total_q;
    l.total_k = total_k;
    l.num_q_heads = Hq;
    l.num_kv_heads = Hkv;
    l.head_dim = D;
    for (int32_t b = 0; b < num_seqs; b++) {
        int32_t lq = cu_q ? cu_q[b + 1] - cu_q[b] : (int32_t)total_q;
        int32_t lk = cu_k ? cu_k[b + 1] - cu_k[b] : (int32_t)total_k;
        if (lq > l.max_seqlen_q) l.max_seqlen_q = lq;
        if (lk > l.max_seqlen_k) l.max_seqlen_k = lk;
    }
    infllm_sizes sz;
    infllm_layout hl = l;
    /* one sequence needs no offsets (queries are the last total_q of its total_k positions) */
    hl.cu_seqlens_q = cu_k ? cu_q : NULL;
    hl.cu_seqlens_k = cu_k;
    infllm_status st = infllm_get_sizes(&p, &hl, &sz);
    if (st) {
        fprintf(stderr, "infllm attn: %s: %s\n", infllm_status_str(st), infllm_last_error());
        goto done;
    }
    int n_sparse = 0; /* sequences the switch sends to the sparse path */
    for (int32_t b = 0; b < num_seqs; b++) {
        int32_t lk = cu_k ? cu_k[b + 1] - cu_k[b] : (int32_t)total_k;
        n_sparse += p.mode == INFLLM_MODE_SPARSE || (p.mode == INFLLM_MODE_AUTO && (p.dense_len < 0 || lk >= p.dense_len));
    }
    if (o.dout) {
        infllm_dtype gt;
        if (npy_read(o.dout, &gout, err, sizeof err)) {
            fprintf(stderr, "infllm attn: %s\n", err);
            goto done;
        }
        if (dtype_of(&gout, o.dout, &gt)) goto done;
        if (gt != dq_t || gout.ndim != 3 || gout.shape[0] != total_q || gout.shape[1] != Hq || gout.shape[2] != D) {
            fprintf(stderr, "infllm attn: %s must be %s [%lld, %d, %d] like the output (got %s, %d dims [%lld, %lld, %lld])\n",
                    o.dout, infllm_dtype_name(dq_t), (long long)total_q, Hq, D, infllm_dtype_name(gt), gout.ndim,
                    (long long)gout.shape[0], gout.ndim > 1 ? (long long)gout.shape[1] : 0LL,
                    gout.ndim > 2 ? (long long)gout.shape[2] : 0LL);
            goto done;
        }
        if (n_sparse != 0 && n_sparse != num_seqs) {
            fprintf(stderr, "infllm attn: --dout: %d of the %d sequences are sparse and the others dense; the backward "
                            "takes one mode a call (give --mode dense or --mode sparse)\n", n_sparse, num_seqs);
            goto done;
        }
        struct stat gsb;
        if (stat(o.grad_dir, &gsb) != 0 && pf_mkdir(o.grad_dir) != 0) {
            fprintf(stderr, "infllm attn: cannot create --grad-dir directory %s\n", o.grad_dir);
            goto done;
        }
    }

    /* tensors on the device (identity on the CPU) */
    size_t qbytes = (size_t)total_q * (size_t)Hq * (size_t)D * es;
    size_t kvbytes = (size_t)total_k * (size_t)Hkv * (size_t)D * es;
    dq = dev_from_host(&dev, qdata, qbytes);
    dk = dev_from_host(&dev, k.data, kvbytes);
    dv = dev_from_host(&dev, v.data, kvbytes);
    if (hl.cu_seqlens_k) {
        dcuq = dev_from_host(&dev, hl.cu_seqlens_q, sizeof(int32_t) * (size_t)(num_seqs + 1));
        dcuk = dev_from_host(&dev, hl.cu_seqlens_k, sizeof(int32_t) * (size_t)(num_seqs + 1));
    }
    if (!dq || !dk || !dv || (hl.cu_seqlens_k && (!dcuq || !dcuk))) {
        fprintf(stderr, "infllm attn: out of %s memory for the inputs\n", dev.cuda ? "device" : "host");
        goto done;
    }
    l.cu_seqlens_q = dcuq;
    l.cu_seqlens_k = dcuk;

    size_t outbytes = qbytes;
    size_t lsebytes = (size_t)total_q * (size_t)Hq * sizeof(float);
    void *dout = dev_alloc(&dev, outbytes);
    void *dlse = dev_alloc(&dev, lsebytes);
    bufs[nbufs++] = dout;
    bufs[nbufs++] = dlse;
    if (!dout || !dlse) {
        fprintf(stderr, "infllm attn: out of memory for the outputs (%zu bytes)\n", outbytes + lsebytes);
        goto done;
    }

    if (o.dump) {
        struct stat sb;
        if (stat(o.dump, &sb) != 0 && pf_mkdir(o.dump) != 0) {
            fprintf(stderr, "infllm attn: cannot create --dump directory %s\n", o.dump);
            goto done;
        }
        size_t c1b = (size_t)sz.total_n1 * (size_t)Hkv * (size_t)D * es;
        size_t c2b = (size_t)sz.total_n2 * (size_t)Hkv * (size_t)D * es;
        size_t scb = (size_t)Hkv * (size_t)total_q * (size_t)sz.max_n1 * sizeof(float);
        size_t bsb = (size_t)Hkv * (size_t)total_q * (size_t)sz.nblocks_out * sizeof(float);
        size_t tkb = (size_t)Hkv * (size_t)total_q * (size_t)sz.topk_out * sizeof(int32_t);
        void *c1 = dev_alloc(&dev, c1b), *c2 = dev_alloc(&dev, c2b), *sc = dev_alloc(&dev, scb),
             *bs = dev_alloc(&dev, bsb), *tk = dev_alloc(&dev, tkb);
        void *cuc1 = dev_alloc(&dev, sizeof(int32_t) * (size_t)(num_seqs + 1));
        void *cuc2 = dev_alloc(&dev, sizeof(int32_t) * (size_t)(num_seqs + 1));
        bufs[nbufs++] = c1;
        bufs[nbufs++] = c2;
        bufs[nbufs++] = sc;
        bufs[nbufs++] = bs;
        bufs[nbufs++] = tk;
        bufs[nbufs++] = cuc1;
        bufs[nbufs++] = cuc2;
        if (!c1 || !c2 || !sc || !bs || !tk || !cuc1 || !cuc2) {
            fprintf(stderr, "infllm attn: out of memory for --dump (stage-1 scores need %zu bytes)\n", scb);
            goto done;
        }
        if ((st = infllm_compress_keys(&p, &l, dk, c1, c2, cuc1, cuc2)) ||
            (st = infllm_stage1_scores(&p, &l, dq, c1, c2, cuc1, cuc2, sc)) ||
            (st = infllm_block_scores(&p, &l, sc, bs)) || (st = infllm_topk_select(&p, &l, bs, tk))) {
            fprintf(stderr, "infllm attn: %s: %s\n", infllm_status_str(st), infllm_last_error());
            goto done;
        }
        struct {
            const out_name *name;
            const char *descr;
            void *data;
            size_t bytes;
            int ndim;
            int64_t shape[3];
        } files[] = {
            {&DUMP_FILES[0], descr_for(dq_t), c1, c1b, 3, {sz.total_n1, Hkv, D}},         /* c1 [n1, Hkv, D] */
            {&DUMP_FILES[1], descr_for(dq_t), c2, c2b, 3, {sz.total_n2, Hkv, D}},         /* c2 [n2, Hkv, D] */
            {&DUMP_FILES[2], "<f4", sc, scb, 3, {Hkv, total_q, sz.max_n1}},               /* stage-1 scores */
            {&DUMP_FILES[3], "<f4", bs, bsb, 3, {Hkv, total_q, sz.nblocks_out}},          /* block scores */
            {&DUMP_FILES[4], "<i4", tk, tkb, 3, {Hkv, total_q, sz.topk_out}},             /* top-k block ids */
        };
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
            char name[64];
            out_file_name(files[i].name, dq_t, name, sizeof name);
            void *h = host_from_dev(&dev, files[i].data, files[i].bytes);
            if (!h) /* only on CUDA (the CPU hands the buffer itself) */
                fprintf(stderr, "infllm attn: --dump %s: cannot copy it back (out of host memory or a CUDA error)\n",
                        name);
            int bad = !h || write_npy(&o, o.dump, name, files[i].descr, files[i].ndim, files[i].shape, h);
            host_release(&dev, h);
            if (bad) goto done;
        }
    }

    double t0 = now_s();
    st = infllm_attention(&p, &l, dq, dk, dv, dout, dlse);
#ifdef INFLLM_HAVE_CUDA
    if (dev.cuda && st == INFLLM_OK && cudaDeviceSynchronize() != cudaSuccess) {
        fprintf(stderr, "infllm attn: CUDA error: %s\n", cudaGetErrorString(cudaGetLastError()));
        goto done;
    }
#endif
    double t1 = now_s();
    if (st) {
        fprintf(stderr, "infllm attn: %s: %s\n", infllm_status_str(st), infllm_last_error());
        goto done;
    }
    hout = host_from_dev(&dev, dout, outbytes);
    hlse = host_from_dev(&dev, dlse, lsebytes);
    if (!hout || !hlse) {
        fprintf(stderr, "infllm attn: cannot copy the results back (out of host memory or a CUDA error)\n");
        goto done;
    }
    int64_t oshape[3] = {total_q, Hq, D}, lshape[2] = {total_q, Hq};
    if (o.out && write_npy(&o, NULL, o.out, descr_for(dq_t), 3, oshape, hout)) goto done;
    if (o.dump) {
        char name[64], lse_name[64];
        out_file_name(&DUMP_FILES[5], dq_t, name, sizeof name);
        out_file_name(&DUMP_FILES[6], dq_t, lse_name, sizeof lse_name);
        if (write_npy(&o, o.dump, name, descr_for(dq_t), 3, oshape, hout) ||
            write_npy(&o, o.dump, lse_name, "<f4", 2, lshape, hlse))
            goto done;
    }
    double tb = 0.0;
    if (o.dout) { /* the backward on the forward's lse, with the blocks the forward attended */
        const size_t tkb = (size_t)Hkv * (size_t)total_q * (size_t)(sz.topk_out > 0 ? sz.topk_out : 1) * sizeof(int32_t);
        /* on CUDA device buffers (the forward's lse stays on the device), copied back below */
        gq = dev_alloc(&dev, qbytes);
        gk = dev_alloc(&dev, kvbytes);
        gv = dev_alloc(&dev, kvbytes);
        gtopk = n_sparse ? dev_alloc(&dev, tkb) : NULL;
        gdout = dev_from_host(&dev, gout.data, outbytes);
        if (!gq || !gk || !gv || (n_sparse && !gtopk) || !gdout) {
            fprintf(stderr, "infllm attn: out of %s memory for the gradients\n", dev.cuda ? "GPU" : "host");
            goto done;
        }
        const float *lse_in = dev.cuda ? dlse : hlse;
        const double tb0 = now_s();
        if (n_sparse && sz.topk_out > 0) {
            st = infllm_select_blocks(&p, &l, dq, dk, gtopk);
            if (!st)
                st = infllm_sparse_attention_backward(&p, &l, dq, dk, dv, gtopk, sz.topk_out, lse_in, gdout, gq, gk,
                                                      gv);
        } else {
            st = infllm_dense_attention_backward(&p, &l, dq, dk, dv, lse_in, gdout, gq, gk, gv);
        }
#ifdef INFLLM_HAVE_CUDA
        if (dev.cuda && st == INFLLM_OK && cudaDeviceSynchronize() != cudaSuccess) {
            fprintf(stderr, "infllm attn: backward: CUDA error: %s\n", cudaGetErrorString(cudaGetLastError()));
            goto done;
        }
#endif
        tb = now_s() - tb0;
        if (st) {
            fprintf(stderr, "infllm attn: backward: %s: %s\n", infllm_status_str(st), infllm_last_error());
            goto done;
        }
        int64_t kshape[3] = {total_k, Hkv, D};
        const struct {
            const out_name *name;
            const void *data;
            const int64_t *shape;
        } grads[] = {{&GRAD_FILES[0], gq, oshape}, {&GRAD_FILES[1], gk, kshape}, {&GRAD_FILES[2], gv, kshape}};
        for (int i = 0; i < 3; i++) {
            char name[64];
            out_file_name(grads[i].name, dq_t, name, sizeof name);
            void *h = host_from_dev(&dev, grads[i].data, i ? kvbytes : qbytes);
            int bad = !h || write_npy(&o, o.grad_dir, name, descr_for(dq_t), 3, grads[i].shape, h);
            if (!h) fprintf(stderr, "infllm attn: cannot copy the gradients back\n");
            host_release(&dev, h);
            if (bad) goto done;
        }
    }
    if (!o.quiet) {
        printf("infllm attn: %d sequence(s), %lld queries, %lld keys, Hq %d, Hkv %d, D %d, %s, %s: %d sparse, %d dense; "
               "%.3f ms on %s\n",
               num_seqs, (long long)total_q, (long long)total_k, Hq, Hkv, D, infllm_dtype_name(dq_t), o.mode, n_sparse,
               num_seqs - n_sparse, (t1 - t0) * 1e3, o.device);
        if (o.dout)
            printf("infllm attn: dq, dk, dv in %s (%s backward, %.3f ms)\n", o.grad_dir, n_sparse ? "sparse" : "dense",
                   tb * 1e3);
    }
    status = 0;
done:
    host_release(&dev, hout);
    host_release(&dev, hlse);
    for (int i = 0; i < nbufs; i++) dev_free(&dev, bufs[i]);
    dev_release_copy(&dev, dq);
    dev_release_copy(&dev, dk);
    dev_release_copy(&dev, dv);
    dev_release_copy(&dev, dcuq);
    dev_release_copy(&dev, dcuk);
    npy_free(&q);
    npy_free(&k);
    npy_free(&v);
    npy_free(&cuk);
    npy_free(&cuq);
    npy_free(&gout);
    dev_free(&dev, gq);
    dev_free(&dev, gk);
    dev_free(&dev, gv);
    dev_free(&dev, gtopk);
    dev_release_copy(&dev, gdout);
    free(cu_q_own);
    free(q_gather);
    return status;
}
