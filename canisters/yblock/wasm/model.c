/* See model.h. The numerics outside the matmuls are those of canisters/kernels/kernels.h
   ("Numerics shared with the yblock"): f32 without FMA, RMSNorm's mean of squares in f64, rope
   tables from f64, the KV cache in f16, q and the attention probabilities rounded to f16. */
#include "model.h"
#include "model_ops.h"

#include "../../kernels/kernels.h"
#include "gguf.h"
#include "icl_math.h"
#include "icl_text.h"

#define SHARD_KEY "icllama.shard."
#define ALIGN 16

/* GCC/Clang vector types: SSE natively, simd128 in wasm, one summation order in both. */
typedef float v4f __attribute__((vector_size(16)));
typedef uint32_t v4u __attribute__((vector_size(16)));
typedef uint16_t v4h __attribute__((vector_size(8)));
typedef int16_t v4s __attribute__((vector_size(8)));
typedef int32_t v4i __attribute__((vector_size(16)));

typedef struct {
    const uint8_t *data; /* row 0; rows are icl_row_bytes(type, n_in) apart */
    int type;
    int n_in, n_out;
} matrix;

typedef struct {
    const float *attn_norm, *ffn_norm;
    const float *bq, *bk, *bv; /* qwen2's biases; NULL for llama */
    matrix wq, wk, wv, wo, gate, up, down;
} layer;

struct icl_shard {
    icl_shard_info info;
    int n_layers, n_head, n_head_kv, head_dim, d_ff, rope_dim, neox;
    float eps;
    const float *rope_cos, *rope_sin; /* (n_ctx, rope_dim / 2) */
    const layer *layers;
    const float *output_norm;
    matrix output;
    size_t act_bytes_per_token; /* the largest prepared activation row of any matrix */
};

/* ---------------------------------------------------------------------------------------------
   Vector loads and f16 (icl_math.h has the scalar conversions) */

static v4f load4(const float *p) {
    v4f v;
    __builtin_memcpy(&v, p, 16);
    return v;
}

static void store4(float *p, v4f v) { __builtin_memcpy(p, &v, 16); }

/* Four cached f16 values as f32 times 2^-112: the f16's bits moved into an f32's exponent and
   mantissa without the rebias, which costs a multiply per lane. Callers scale the other factor
   by 2^112, so each product is the product of the f16 values, exactly (both have 11 significant
   bits), and every sum is what it would be without the scaling. Sign-extending the f16 to 32 bits
   puts its sign in bit 31; the mask keeps the sign, exponent and mantissa. Cached values are
   finite (icl_forward_layers writes them), so no inf or NaN case is needed. */
static v4f load4_f16_scaled(const uint16_t *p) {
    v4h h;
    __builtin_memcpy(&h, p, 8);
    v4i wide = __builtin_convertvector((v4s)h, v4i);
    return (v4f)((wide << 13) & (int32_t)0x8fffe000);
}

/* round_f16 of four lanes: f16's round half to even of the f32 bits (subnormal f16 by adding 0.5). */
static v4f round4_f16(v4f x) {
    v4i bits = (v4i)x, sign = bits & (int32_t)0x80000000, a = bits & 0x7fffffff;
    v4i normal = (a + 0xfff + ((a >> 13) & 1)) & ~0x1fff;
    v4i small = (v4i)(((v4f)a + 0.5f) - 0.5f);
    v4i big = a >= 0x477ff000, tiny = a < 0x38800000, nan = a > 0x7f800000;
    v4i rounded = (normal & ~(tiny | big)) | (small & tiny) | (0x7f800000 & big);
    return (v4f)((rounded & ~nan) | (a & nan) | sign);
}

/* ---------------------------------------------------------------------------------------------
   Parsing */

typedef struct {
    const icl_gguf *g;
    const char *arch; /* "llama" or "qwen2" */
    icl_text *err;
    void *(*alloc)(size_t);
} parser;

static int streq(const char *a, size_t a_len, const char *b) {
    size_t i = 0;
    for (; i < a_len; i++)
        if (!b[i] || a[i] != b[i]) return 0;
    return b[i] == 0;
}

/* key = prefix + name, in a buffer */
static const char *join(char *buf, size_t cap, const char *prefix, const char *name) {
    icl_text t = icl_text_on(buf, cap);
    icl_put(icl_put(&t, prefix), name);
    return buf;
}

static int missing(parser *p, const char *key) {
    icl_put(icl_put(icl_put(p->err, "metadata "), key), " is missing");
    return -1;
}

static int wrong_type(parser *p, const char *key, const char *expected) {
    icl_put(icl_put(icl_put(icl_put(p->err, "metadata "), key), " is not "), expected);
    return -1;
}

/* An integer field; `fallback` >= 0 is used when it is absent, else absence is an error. */
static int get_int(parser *p, const char *key, int64_t fallback, int64_t *out) {
    icl_gguf_value v;
    if (!icl_gguf_find(p->g, key, &v)) {
        if (fallback < 0) return missing(p, key);
        *out = fallback;
        return 0;
    }
    if (!icl_gguf_int(v, out)) return wrong_type(p, key, "an integer");
    return 0;
}

static int get_arch_int(parser *p, const char *name, int64_t fallback, int *out) {
    char key[96];
    int64_t v;
    if (get_int(p, join(key, sizeof key, p->arch, name), fallback, &v)) return -1;
    if (v < 0 || v > 0x7fffffff) return wrong_type(p, key, "a positive 32-bit integer");
    *out = (int)v;
    return 0;
}

static int get_arch_float(parser *p, const char *name, double fallback, int required, double *out) {
    char key[96];
    icl_gguf_value v;
    join(key, sizeof key, p->arch, name);
    if (!icl_gguf_find(p->g, key, &v)) {
        if (required) return missing(p, key);
        *out = fallback;
        return 0;
    }
    if (!icl_gguf_float(v, out)) return wrong_type(p, key, "a number");
    return 0;
}

static int get_string(parser *p, const char *key, const char **s, size_t *len) {
    icl_gguf_value v;
    if (!icl_gguf_find(p->g, key, &v)) return missing(p, key);
    if (!icl_gguf_string(v, s, len)) return wrong_type(p, key, "a string");
    return 0;
}

static const char *type_name(uint32_t type) {
    static const char *const names[] = {
        "F32", "F16", "Q4_0", "Q4_1", "type 4", "type 5", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K",
        "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S",
        "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16"};
    return type < sizeof names / sizeof names[0] ? names[type] : "an unknown type";
}

/* The weight types of the wasm yblock (the kernels multiply a few more natively). */
static int supported(uint32_t type) {
    switch (type) {
    case ICL_F32: case ICL_F16: case ICL_Q8_0: case ICL_Q4_0: case ICL_Q4_1: case ICL_Q4_K: case ICL_Q5_K: case ICL_Q6_K:
        return 1;
    default:
        return 0;
    }
}

/* The tensor `name`, checked: present, of shape (n_in, n_out) (n_out < 0: any row count, or a
   vector when n_out == 0), and its bytes inside the file. Returns its data, or NULL with err set. */
static const uint8_t *tensor(parser *p, const char *name, int n_in, int n_out, icl_gguf_tensor *t, size_t *bytes) {
    if (!icl_gguf_tensor_find(p->g, name, t)) {
        icl_put(icl_put(icl_put(p->err, "tensor "), name), " is missing");
        return 0;
    }
    int vector = n_out == 0;
    if ((vector ? t->n_dims != 1 : t->n_dims != 2) || t->ne[0] != (uint64_t)n_in ||
        (n_out > 0 && t->ne[1] != (uint64_t)n_out) || t->ne[1] > 0x7fffffff) {
        icl_put(icl_put(icl_put(p->err, "tensor "), name), " has shape (");
        icl_put(icl_put_int(p->err, (int64_t)t->ne[0]), ", ");
        icl_put(icl_put_int(p->err, (int64_t)t->ne[1]), "), expected (");
        icl_put_int(p->err, n_in);
        if (n_out > 0) icl_put_int(icl_put(p->err, ", "), n_out);
        if (n_out < 0) icl_put(p->err, ", rows");
        icl_put(p->err, ")");
        return 0;
    }
    size_t row = icl_row_bytes((int)t->type, n_in);
    if (vector && t->type != ICL_F32) {
        icl_put(icl_put(icl_put(p->err, "tensor "), name), " is ");
        icl_put(icl_put(p->err, type_name(t->type)), "; norms, biases and rope factors must be F32");
        return 0;
    }
    if (!supported(t->type)) {
        icl_put(icl_put(icl_put(p->err, "tensor "), name), " is ");
        icl_put(icl_put(p->err, type_name(t->type)), ", which the wasm yblock does not support (F32, F16, Q8_0, "
                                                     "Q4_0, Q4_1, Q4_K, Q5_K and Q6_K are); run this model with "
                                                     "--engine python");
        return 0;
    }
    if (!row) {
        icl_put(icl_put(icl_put(p->err, "tensor "), name), "'s rows of ");
        icl_put(icl_put(icl_put_int(p->err, n_in), " values are not whole blocks of "), type_name(t->type));
        return 0;
    }
    uint64_t n_bytes = (uint64_t)row * t->ne[1], start = p->g->data_start + t->offset; /* 64-bit: wasm32's size_t */
    if (t->offset > p->g->len || start > p->g->len || n_bytes > p->g->len - start) {
        icl_put(icl_put(icl_put(p->err, "tensor "), name), "'s data is past the end of the file (truncated?); "
                                                          "export and upload the shard again");
        return 0;
    }
    *bytes = (size_t)n_bytes;
    const uint8_t *data = p->g->data + start;
    if (vector && ((uintptr_t)data & 3)) {
        icl_put(icl_put(icl_put(p->err, "tensor "), name), " is not 4-byte aligned in memory: load the file at an "
                                                          "aligned address");
        return 0;
    }
    return data;
}

static int get_matrix(parser *p, const char *name, int n_in, int n_out, matrix *m, size_t *weight_bytes) {
    icl_gguf_tensor t;
    size_t bytes;
    m->data = tensor(p, name, n_in, n_out, &t, &bytes);
    if (!m->data) return -1;
    m->type = (int)t.type;
    m->n_in = n_in;
    m->n_out = (int)t.ne[1];
    *weight_bytes += bytes;
    return 0;
}

/* An F32 vector of n values; absent and optional gives NULL and 0. */
static int get_vector(parser *p, const char *name, int n, int optional, const float **out, size_t *weight_bytes) {
    icl_gguf_tensor t;
    size_t bytes;
    *out = 0;
    if (optional && !icl_gguf_tensor_find(p->g, name, &t)) return 0;
    const uint8_t *data = tensor(p, name, n, 0, &t, &bytes);
    if (!data) return -1;
    *out = (const float *)data;
    *weight_bytes += bytes;
    return 0;
}

static size_t act_bytes(const matrix *m) { return icl_act_row_bytes(m->type, m->n_in); }

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

static int parse_layer(parser *p, icl_shard *s, int index, layer *l) {
    const icl_shard_info *info = &s->info;
    int d = info->d_model, qd = s->n_head * s->head_dim, kvd = s->n_head_kv * s->head_dim;
    char prefix[32], name[96];
    icl_text t = icl_text_on(prefix, sizeof prefix);
    icl_put(icl_put_int(icl_put(&t, "blk."), index), ".");
    size_t *w = &s->info.weight_bytes;
#define NAME(suffix) join(name, sizeof name, prefix, suffix)
    if (get_vector(p, NAME("attn_norm.weight"), d, 0, &l->attn_norm, w) ||
        get_vector(p, NAME("ffn_norm.weight"), d, 0, &l->ffn_norm, w) ||
        get_matrix(p, NAME("attn_q.weight"), d, qd, &l->wq, w) || get_matrix(p, NAME("attn_k.weight"), d, kvd, &l->wk, w) ||
        get_matrix(p, NAME("attn_v.weight"), d, kvd, &l->wv, w) ||
        get_matrix(p, NAME("attn_output.weight"), qd, d, &l->wo, w) ||
        get_matrix(p, NAME("ffn_gate.weight"), d, s->d_ff, &l->gate, w) ||
        get_matrix(p, NAME("ffn_up.weight"), d, s->d_ff, &l->up, w) ||
        get_matrix(p, NAME("ffn_down.weight"), s->d_ff, d, &l->down, w) ||
        get_vector(p, NAME("attn_q.bias"), qd, 1, &l->bq, w) || get_vector(p, NAME("attn_k.bias"), kvd, 1, &l->bk, w) ||
        get_vector(p, NAME("attn_v.bias"), kvd, 1, &l->bv, w))
        return -1;
#undef NAME
    if (!l->bq != !l->bk || !l->bq != !l->bv) {
        icl_put(icl_put(p->err, prefix), " has some of the q/k/v biases but not all three");
        return -1;
    }
    const matrix *all[] = {&l->wq, &l->wk, &l->wv, &l->wo, &l->gate, &l->up, &l->down};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        s->act_bytes_per_token = max_size(s->act_bytes_per_token, act_bytes(all[i]));
    return 0;
}

/* cos and sin of pos * theta^(-2i/rope_dim) / factor_i / linear_scale, in f64 rounded to f32 (Rope.build). */
static int build_rope(parser *p, icl_shard *s, double theta, double linear_scale, const float *factors) {
    int half = s->rope_dim / 2, n_ctx = s->info.n_ctx;
    uint64_t table_bytes = (uint64_t)n_ctx * (uint64_t)half * 2 * sizeof(float); /* 64-bit: wasm32's size_t */
    size_t n = (size_t)n_ctx * (size_t)half;
    float *cos_table = table_bytes <= SIZE_MAX ? p->alloc((size_t)table_bytes) : 0;
    if (!cos_table) {
        icl_put(p->err, "out of memory for the rope table");
        return -1;
    }
    float *sin_table = cos_table + n;
    double log_theta = icl_log(theta);
    for (int i = 0; i < half; i++) {
        double inv_freq = icl_exp(log_theta * (-(double)i * 2.0 / s->rope_dim));
        if (factors) inv_freq /= (double)factors[i];
        for (int pos = 0; pos < n_ctx; pos++) {
            double angle = (pos / linear_scale) * inv_freq;
            cos_table[(size_t)pos * half + i] = (float)icl_cos(angle);
            sin_table[(size_t)pos * half + i] = (float)icl_sin(angle);
        }
    }
    s->rope_cos = cos_table;
    s->rope_sin = sin_table;
    s->info.weight_bytes += 2 * n * sizeof(float);
    return 0;
}

static int parse_config(parser *p, icl_shard *s, double *theta, double *linear_scale) {
    icl_shard_info *info = &s->info;
    const char *arch;
    size_t arch_len;
    if (get_string(p, "general.architecture", &arch, &arch_len)) return -1;
    if (streq(arch, arch_len, "llama")) {
        p->arch = "llama.";
    } else if (streq(arch, arch_len, "qwen2")) {
        p->arch = "qwen2.";
        s->neox = 1;
    } else {
        icl_put(icl_put_n(icl_put(p->err, "architecture '"), arch, arch_len), "' is not supported; supported: llama, qwen2");
        return -1;
    }
    int n_layer_model, key_length;
    double eps;
    if (get_arch_int(p, "block_count", -1, &n_layer_model) || get_arch_int(p, "embedding_length", -1, &info->d_model) ||
        get_arch_int(p, "attention.head_count", -1, &s->n_head) ||
        get_arch_int(p, "attention.head_count_kv", s->n_head, &s->n_head_kv) ||
        get_arch_int(p, "feed_forward_length", -1, &s->d_ff) || get_arch_int(p, "vocab_size", -1, &info->n_vocab) ||
        get_arch_int(p, "context_length", -1, &info->n_ctx_train) ||
        get_arch_float(p, "attention.layer_norm_rms_epsilon", 0, 1, &eps) ||
        get_arch_float(p, "rope.freq_base", 10000.0, 0, theta))
        return -1;
    if (s->n_head < 1 || s->n_head_kv < 1 || s->n_head % s->n_head_kv) {
        icl_put(p->err, "the head counts are invalid (attention.head_count must be a positive multiple of "
                        "attention.head_count_kv)");
        return -1;
    }
    if (get_arch_int(p, "attention.key_length", info->d_model / s->n_head, &key_length) ||
        get_arch_int(p, "rope.dimension_count", key_length, &s->rope_dim))
        return -1;
    s->head_dim = key_length;
    s->eps = (float)eps;
    /* bounds far past any model, so that sizes computed from them cannot overflow */
    const int64_t big = 1 << 20;
    if (info->d_model > big || s->d_ff > big || (int64_t)s->n_head * s->head_dim > big || info->n_ctx_train > 1 << 24) {
        icl_put(p->err, "the hyperparameters are beyond what this yblock supports (widths up to 2^20, contexts up to "
                        "2^24); this is not a model the wasm yblock can run");
        return -1;
    }
    if (s->head_dim % 4 || info->d_model % 4 || s->rope_dim % 2 || s->rope_dim > s->head_dim || s->rope_dim < 2) {
        icl_put(p->err, "d_model and the head dimension must be multiples of 4, the rope dimension of 2 and within "
                        "the head");
        return -1;
    }
    *linear_scale = 1.0;
    char key[96];
    icl_gguf_value v;
    if (icl_gguf_find(p->g, join(key, sizeof key, p->arch, "rope.scaling.type"), &v)) {
        const char *scaling;
        size_t scaling_len;
        if (!icl_gguf_string(v, &scaling, &scaling_len)) return wrong_type(p, key, "a string");
        if (streq(scaling, scaling_len, "linear")) {
            if (get_arch_float(p, "rope.scaling.factor", 1.0, 0, linear_scale)) return -1;
        } else if (!streq(scaling, scaling_len, "none")) {
            icl_put(icl_put_n(icl_put(p->err, "rope scaling '"), scaling, scaling_len), "' is not supported (none, linear are)");
            return -1;
        }
    }
    if (!(*linear_scale > 0)) return wrong_type(p, "rope.scaling.factor", "positive");
    (void)n_layer_model;
    return 0;
}

static int parse_layout(parser *p, icl_shard *s) {
    icl_shard_info *info = &s->info;
    int64_t first, last;
    if (get_string(p, SHARD_KEY "name", &info->name, &info->name_len) ||
        get_string(p, SHARD_KEY "role", &info->role, &info->role_len) ||
        get_string(p, SHARD_KEY "weight_strategy", &info->strategy, &info->strategy_len) ||
        get_int(p, SHARD_KEY "first_layer", -1, &first) || get_int(p, SHARD_KEY "last_layer", -1, &last))
        return -1;
    if (streq(info->role, info->role_len, "head")) {
        icl_put(icl_put_n(icl_put(p->err, "'"), info->name, info->name_len), "' is the head's shard; upload it to the "
                                                                            "head canister");
        return -1;
    }
    if (!streq(info->role, info->role_len, "layers") && !streq(info->role, info->role_len, "output")) {
        icl_put(icl_put_n(icl_put(p->err, SHARD_KEY "role is '"), info->role, info->role_len), "', expected one of head, layers, output");
        return -1;
    }
    if (first < 0 || last < first || last > 100000) {
        icl_put(p->err, SHARD_KEY "first_layer and last_layer are not a layer range");
        return -1;
    }
    info->first_layer = (int)first;
    info->last_layer = (int)last;
    icl_gguf_value rows;
    if (icl_gguf_find(p->g, SHARD_KEY "output_rows", &rows)) {
        int64_t start, stop;
        if (!icl_gguf_array_int(rows, 0, &start) || !icl_gguf_array_int(rows, 1, &stop) || start < 0 || stop <= start ||
            stop > info->n_vocab)
            return wrong_type(p, SHARD_KEY "output_rows", "a row range [start, stop) within the vocabulary");
        info->has_output = 1;
        info->output_start = (int)start;
        info->output_stop = (int)stop;
    } else if (streq(info->role, info->role_len, "output")) {
        icl_put(p->err, "an output shard must say which output rows it holds (" SHARD_KEY "output_rows)");
        return -1;
    }
    return 0;
}

int icl_shard_parse(const uint8_t *gguf, size_t len, int n_ctx, void *(*alloc)(size_t), icl_shard **out, char *err,
                    size_t err_cap) {
    icl_text text = icl_text_on(err, err_cap);
    icl_gguf g;
    if (icl_gguf_open(&g, gguf, len, err, err_cap)) return -1;
    parser p = {&g, 0, &text, alloc};
    icl_shard *s = alloc(sizeof *s);
    if (!s) {
        icl_put(&text, "out of memory for the shard");
        return -1;
    }
    __builtin_memset(s, 0, sizeof *s);
    double theta, linear_scale;
    if (parse_config(&p, s, &theta, &linear_scale) || parse_layout(&p, s)) return -1;
    icl_shard_info *info = &s->info;
    if (n_ctx > info->n_ctx_train) { /* the Python yblock's words */
        icl_put(icl_put_int(icl_put(&text, "this yblock was installed for sessions of "), n_ctx),
                " positions, more than the model's trained context of ");
        icl_put(icl_put_int(&text, info->n_ctx_train), "; reinstall it with a smaller n_ctx");
        return -1;
    }
    if (n_ctx < 1) {
        icl_put(icl_put_int(icl_put(&text, "sessions of "), n_ctx), " positions hold nothing; reinstall with n_ctx >= 1");
        return -1;
    }
    info->n_ctx = n_ctx;
    s->n_layers = info->last_layer - info->first_layer;
    if (s->n_layers) {
        layer *layers = alloc((size_t)s->n_layers * sizeof *layers);
        if (!layers) {
            icl_put(&text, "out of memory for the layer table");
            return -1;
        }
        for (int i = 0; i < s->n_layers; i++)
            if (parse_layer(&p, s, info->first_layer + i, &layers[i])) return -1;
        s->layers = layers;
        const float *factors;
        if (get_vector(&p, "rope_freqs.weight", s->rope_dim / 2, 1, &factors, &info->weight_bytes) ||
            build_rope(&p, s, theta, linear_scale, factors))
            return -1;
    }
    if (info->has_output) {
        icl_gguf_tensor t;
        const char *name = icl_gguf_tensor_find(&g, "output.weight", &t) ? "output.weight" : "token_embd.weight";
        if (get_vector(&p, "output_norm.weight", info->d_model, 0, &s->output_norm, &info->weight_bytes) ||
            get_matrix(&p, name, info->d_model, -1, &s->output, &info->weight_bytes))
            return -1;
        if (s->output.n_out != info->output_stop - info->output_start) {
            icl_put(icl_put_int(icl_put(&text, "the shard says it holds output rows "), info->output_start), "..");
            icl_put(icl_put(icl_put_int(&text, info->output_stop - 1), " but its "), name);
            icl_put(icl_put_int(icl_put(&text, " has "), s->output.n_out), " rows");
            return -1;
        }
        s->act_bytes_per_token = max_size(s->act_bytes_per_token, act_bytes(&s->output));
    }
    *out = s;
    return 0;
}

void icl_shard_get_info(const icl_shard *s, icl_shard_info *out) { *out = s->info; }

/* n, or SIZE_MAX when it is more than the address space holds (wasm32's size_t is 32 bits) */
static size_t saturated(uint64_t n) { return n > SIZE_MAX ? SIZE_MAX : (size_t)n; }

size_t icl_kv_bytes(const icl_shard *s, int n_ctx) {
    return saturated(2 * (uint64_t)s->n_layers * (uint64_t)s->n_head_kv * (uint64_t)n_ctx * (uint64_t)s->head_dim *
                     sizeof(uint16_t));
}

/* ---------------------------------------------------------------------------------------------
   Scratch: the buffers of one call, carved from the caller's memory */

typedef struct {
    float *h, *q, *k, *v, *attn, *gate, *up, *out, *scores; /* scores: the attention's scratch */
    uint8_t *xq;
} buffers;

static uint64_t round_up(uint64_t n) { return (n + ALIGN - 1) / ALIGN * ALIGN; }

/* The scratch's size (64-bit: on wasm32 a long prefill could pass 4 GiB), and with `base` its
   buffers. */
static uint64_t carve(const icl_shard *s, int n_tokens, uint8_t *base, buffers *b) {
    uint64_t n = (uint64_t)n_tokens, qd = (uint64_t)s->n_head * s->head_dim, kvd = (uint64_t)s->n_head_kv * s->head_dim;
    uint64_t d = (uint64_t)s->info.d_model;
    struct {
        float **slot;
        uint64_t floats;
    } parts[] = {
        {&b->h, n * d}, {&b->q, n * qd}, {&b->k, n * kvd}, {&b->v, n * kvd}, {&b->attn, n * qd},
        {&b->gate, n * (uint64_t)s->d_ff}, {&b->up, n * (uint64_t)s->d_ff}, {&b->out, n * d},
        {&b->scores, icl_attention_scratch_floats(s->n_head, s->n_head_kv, s->head_dim, s->info.n_ctx)},
    };
    uint64_t used = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        if (base) *parts[i].slot = (float *)(base + used);
        used += round_up(parts[i].floats * sizeof(float));
    }
    if (base) b->xq = base + used;
    return used + round_up(n * s->act_bytes_per_token);
}

size_t icl_scratch_bytes(const icl_shard *s, int n_tokens) { return saturated(carve(s, n_tokens, 0, 0)); }

/* ---------------------------------------------------------------------------------------------
   The ops, as LayerStack._block does them */

/* y (n_tokens x m->n_out) = x (n_tokens x m->n_in) times the matrix's rows, x prepared as ggml does. */
static void matmul(const matrix *m, const float *x, int n_tokens, float *y, uint8_t *xq) {
    size_t row = act_bytes(m);
    for (int t = 0; t < n_tokens; t++) icl_quantize_act(m->type, x + (size_t)t * m->n_in, m->n_in, xq + t * row);
    icl_matmul_rows(m->type, m->data, m->n_in, xq, n_tokens, y, m->n_out, 0, m->n_out);
}

void icl_rms_norm(const float *x, const float *weight, int n_tokens, int d, float eps, float *out) {
    for (int t = 0; t < n_tokens; t++) {
        const float *xt = x + (size_t)t * d;
        /* squares in f32 (as ggml), summed in f64 in four lanes: element i in lane i % 4 */
        double l0 = 0, l1 = 0, l2 = 0, l3 = 0;
        int i = 0;
        for (; i + 4 <= d; i += 4) {
            l0 += (double)(xt[i] * xt[i]);
            l1 += (double)(xt[i + 1] * xt[i + 1]);
            l2 += (double)(xt[i + 2] * xt[i + 2]);
            l3 += (double)(xt[i + 3] * xt[i + 3]);
        }
        for (; i < d; i++) *(i % 4 == 0 ? &l0 : i % 4 == 1 ? &l1 : &l2) += (double)(xt[i] * xt[i]);
        double sum = (l0 + l1) + (l2 + l3);
        float scale = 1.0f / __builtin_sqrtf((float)(sum / d) + eps);
        for (i = 0; i < d; i++) out[(size_t)t * d + i] = xt[i] * scale * weight[i];
    }
}

void icl_swiglu(float *gate, const float *up, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4f g = load4(gate + i);
        store4(gate + i, g / (1.0f + icl_exp4(-g)) * load4(up + i));
    }
    for (; i < n; i++) gate[i] = gate[i] / (1.0f + icl_exp_f32(-gate[i])) * up[i];
}

static void add_bias(float *x, const float *bias, int n_tokens, int n) {
    for (int t = 0; t < n_tokens; t++)
        for (int i = 0; i < n; i++) x[(size_t)t * n + i] += bias[i];
}

/* Rotates the heads of x (n_tokens x n_heads x head_dim) for positions pos.. (Rope.apply). */
static void rope(const icl_shard *s, float *x, int n_tokens, int n_heads, int pos) {
    int half = s->rope_dim / 2, hd = s->head_dim;
    int step = s->neox ? 1 : 2, offset = s->neox ? half : 1; /* pairs (a, b): halves, or adjacent */
    for (int t = 0; t < n_tokens; t++) {
        const float *cos = s->rope_cos + (size_t)(pos + t) * half, *sin = s->rope_sin + (size_t)(pos + t) * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * hd;
            for (int i = 0; i < half; i++) {
                float a = v[i * step], b = v[i * step + offset];
                v[i * step] = a * cos[i] - b * sin[i];
                v[i * step + offset] = a * sin[i] + b * cos[i];
            }
        }
    }
}

/* p[0..n) = f16(softmax(p)) * 2^112: max subtracted, exp, sum, divided (kernels.h). */
static float max_f(float a, float b) { return a > b ? a : b; }

void icl_softmax_f16_scaled(float *p, int n) {
    /* the max in four lanes (exact in any order); the sum in four lanes (position j in lane j % 4,
       in order), then across them: canisters/llama/ordered_ops.py does the same in numpy */
    v4f max4 = {p[0], p[0], p[0], p[0]}, sum4 = {0, 0, 0, 0};
    int j = 0;
    for (; j + 4 <= n; j += 4) {
        v4f x = load4(p + j);
        v4i greater = x > max4;
        max4 = (v4f)(((v4i)x & greater) | ((v4i)max4 & ~greater));
    }
    float max = max_f(max_f(max4[0], max4[1]), max_f(max4[2], max4[3]));
    for (; j < n; j++) max = max_f(p[j], max);
    for (j = 0; j + 4 <= n; j += 4) {
        v4f e = icl_exp4(load4(p + j) - max);
        store4(p + j, e);
        sum4 += e;
    }
    for (; j < n; j++) { /* the tail in its lanes too: the order is lane j % 4, then across lanes */
        p[j] = icl_exp_f32(p[j] - max);
        sum4[j % 4] += p[j];
    }
    float sum = (sum4[0] + sum4[1]) + (sum4[2] + sum4[3]);
    for (j = 0; j + 4 <= n; j += 4) store4(p + j, round4_f16(load4(p + j) / sum) * 0x1p112f);
    for (; j < n; j++) p[j] = icl_round_f16(p[j] / sum) * 0x1p112f;
}

/* A head's loops unrolled where the head size is a constant (attention_of): on the IC every
   address computation and branch of a loop costs as much as the arithmetic. */
#ifdef __clang__
#define UNROLL_FULL _Pragma("clang loop unroll(full)")
#else
#define UNROLL_FULL
#endif

/* A cached row (f16) as f32 times 2^-112 (load4_f16_scaled), converted once for a query group. */
static inline __attribute__((always_inline)) void row_f16_scaled(float *row, const uint16_t *cached, int hd) {
    UNROLL_FULL
    for (int i = 0; i < hd; i += 4) store4(row + i, load4_f16_scaled(cached + i));
}

/* The same from a cache of f32 holding f16 values (the Python path's): scaling by 2^-112 is exact. */
static inline __attribute__((always_inline)) void row_f32_scaled(float *row, const float *cached, int hd) {
    UNROLL_FULL
    for (int i = 0; i < hd; i += 4) store4(row + i, load4(cached + i) * 0x1p-112f);
}

/* q . k: the products exact, summed in four lanes. */
static inline __attribute__((always_inline)) float dot(const float *k, const float *q, int hd) {
    v4f acc = {0, 0, 0, 0};
    UNROLL_FULL
    for (int i = 0; i < hd; i += 4) acc += load4(k + i) * load4(q + i);
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

/* out += p * v */
static inline __attribute__((always_inline)) void add_scaled(float *out, float p, const float *v, int hd) {
    UNROLL_FULL
    for (int i = 0; i < hd; i += 4) store4(out + i, load4(out + i) + p * load4(v + i));
}

size_t icl_attention_scratch_floats(int n_head, int n_head_kv, int head_dim, int n_ctx) {
    size_t group = (size_t)(n_head / n_head_kv);
    return group * (size_t)n_ctx + (group + 1) * (size_t)head_dim;
}

/* See icl_attention. Each cached row is converted once for all the query heads that share it; q
   and the probabilities carry 2^112 for the scaled rows. Inlined for each common head size, so
   that the loops over a head unroll. */
static inline __attribute__((always_inline)) void attention_of(const float *q_all, const void *k_cache,
                                                               const void *v_cache, int cache_f32, int n_head,
                                                               int n_head_kv, int hd, int n_ctx, int pos,
                                                               int n_tokens, float *out_all, float *scratch) {
    int group = n_head / n_head_kv, qd = n_head * hd;
    float scale = 1.0f / __builtin_sqrtf((float)hd);
    float *scores = scratch, *q_scaled = scratch + (size_t)group * n_ctx, *row = q_scaled + group * hd;
    for (int kvh = 0; kvh < n_head_kv; kvh++) {
        size_t head = (size_t)kvh * n_ctx * hd;
        for (int t = 0; t < n_tokens; t++) {
            int visible = pos + t + 1;
            const float *q = q_all + (size_t)t * qd + (size_t)kvh * group * hd;
            float *out = out_all + (size_t)t * qd + (size_t)kvh * group * hd;
            for (int i = 0; i < group * hd; i += 4) store4(q_scaled + i, load4(q + i) * 0x1p112f);
            for (int j = 0; j < visible; j++) {
                if (cache_f32) row_f32_scaled(row, (const float *)k_cache + head + (size_t)j * hd, hd);
                else row_f16_scaled(row, (const uint16_t *)k_cache + head + (size_t)j * hd, hd);
                for (int g = 0; g < group; g++) scores[(size_t)g * n_ctx + j] = dot(row, q_scaled + g * hd, hd) * scale;
            }
            for (int g = 0; g < group; g++) icl_softmax_f16_scaled(scores + (size_t)g * n_ctx, visible);
            for (int i = 0; i < group * hd; i += 4) store4(out + i, (v4f){0, 0, 0, 0});
            for (int j = 0; j < visible; j++) {
                if (cache_f32) row_f32_scaled(row, (const float *)v_cache + head + (size_t)j * hd, hd);
                else row_f16_scaled(row, (const uint16_t *)v_cache + head + (size_t)j * hd, hd);
                for (int g = 0; g < group; g++) add_scaled(out + g * hd, scores[(size_t)g * n_ctx + j], row, hd);
            }
        }
    }
}

void icl_attention(const float *q, const void *k_cache, const void *v_cache, int cache_f32, int n_head, int n_head_kv,
                   int head_dim, int n_ctx, int pos, int n_tokens, float *out, float *scratch) {
#ifdef __wasm__
    (void)cache_f32; /* the canister's cache is f16; f32 caches are the native Python path's */
#define CACHE_F32(hd) attention_of(q, k_cache, v_cache, 0, n_head, n_head_kv, hd, n_ctx, pos, n_tokens, out, scratch)
#else
#define CACHE_F32(hd)                                                                                               \
    (cache_f32 ? attention_of(q, k_cache, v_cache, 1, n_head, n_head_kv, hd, n_ctx, pos, n_tokens, out, scratch)      \
               : attention_of(q, k_cache, v_cache, 0, n_head, n_head_kv, hd, n_ctx, pos, n_tokens, out, scratch))
#endif
    switch (head_dim) {
    case 64: CACHE_F32(64); break;
    case 128: CACHE_F32(128); break;
    default: CACHE_F32(head_dim);
    }
#undef CACHE_F32
}

static void block(const icl_shard *s, const layer *l, uint16_t *k_cache, uint16_t *v_cache, int n_ctx, int pos,
                  float *x, int n_tokens, const buffers *b) {
    int d = s->info.d_model, hd = s->head_dim, qd = s->n_head * hd, kvd = s->n_head_kv * hd;
    size_t nd = (size_t)n_tokens * d;

    icl_rms_norm(x, l->attn_norm, n_tokens, d, s->eps, b->h);
    matmul(&l->wq, b->h, n_tokens, b->q, b->xq);
    matmul(&l->wk, b->h, n_tokens, b->k, b->xq);
    matmul(&l->wv, b->h, n_tokens, b->v, b->xq);
    if (l->bq) {
        add_bias(b->q, l->bq, n_tokens, qd);
        add_bias(b->k, l->bk, n_tokens, kvd);
        add_bias(b->v, l->bv, n_tokens, kvd);
    }
    rope(s, b->q, n_tokens, s->n_head, pos);
    rope(s, b->k, n_tokens, s->n_head_kv, pos);
    for (size_t i = 0; i < (size_t)n_tokens * qd; i += 4) store4(b->q + i, round4_f16(load4(b->q + i)));

    /* this chunk's keys and values into the cache (layout: kv head, position, dim) */
    for (int t = 0; t < n_tokens; t++)
        for (int h = 0; h < s->n_head_kv; h++) {
            size_t at = ((size_t)h * n_ctx + pos + t) * hd, from = (size_t)t * kvd + (size_t)h * hd;
            for (int i = 0; i < hd; i++) {
                k_cache[at + i] = icl_f16_of(b->k[from + i]);
                v_cache[at + i] = icl_f16_of(b->v[from + i]);
            }
        }

    icl_attention(b->q, k_cache, v_cache, 0, s->n_head, s->n_head_kv, hd, n_ctx, pos, n_tokens, b->attn, b->scores);
    matmul(&l->wo, b->attn, n_tokens, b->out, b->xq);
    for (size_t i = 0; i < nd; i++) x[i] += b->out[i];

    /* feed-forward: SwiGLU */
    icl_rms_norm(x, l->ffn_norm, n_tokens, d, s->eps, b->h);
    matmul(&l->gate, b->h, n_tokens, b->gate, b->xq);
    matmul(&l->up, b->h, n_tokens, b->up, b->xq);
    icl_swiglu(b->gate, b->up, (size_t)n_tokens * s->d_ff);
    matmul(&l->down, b->gate, n_tokens, b->out, b->xq);
    for (size_t i = 0; i < nd; i++) x[i] += b->out[i];
}

int icl_forward_layers(const icl_shard *s, void *kv, int n_ctx, int *length, int pos, float *x, int n_tokens,
                       void *scratch, char *err, size_t err_cap) {
    icl_text text = icl_text_on(err, err_cap);
    if (pos > *length) {
        icl_put(icl_put_int(icl_put(icl_put_int(icl_put(&text, "position "), pos), " skips past the "), *length),
                " cached positions");
        return -1;
    }
    if (n_tokens < 1 || pos < 0 || pos + n_tokens > n_ctx || n_ctx > s->info.n_ctx) {
        icl_put(icl_put_int(icl_put(&text, "positions up to "), (int64_t)pos + n_tokens), " do not fit the session's "
                                                                                       "context of ");
        icl_put_int(&text, n_ctx);
        return -1;
    }
    buffers b;
    carve(s, n_tokens, scratch, &b);
    size_t per_layer = (size_t)s->n_head_kv * n_ctx * s->head_dim;
    uint16_t *k_cache = kv, *v_cache = k_cache + (size_t)s->n_layers * per_layer;
    for (int i = 0; i < s->n_layers; i++)
        block(s, &s->layers[i], k_cache + i * per_layer, v_cache + i * per_layer, n_ctx, pos, x, n_tokens, &b);
    *length = pos + n_tokens; /* commit last */
    return 0;
}

void icl_output_logits(const icl_shard *s, const float *x, int n_tokens, float *logits, void *scratch) {
    if (!s->info.has_output) return;
    buffers b;
    carve(s, n_tokens, scratch, &b);
    icl_rms_norm(x, s->output_norm, n_tokens, s->info.d_model, s->eps, b.h);
    matmul(&s->output, b.h, n_tokens, logits, b.xq);
}
