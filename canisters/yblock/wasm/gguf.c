/* See gguf.h. The format: magic "GGUF", version, tensor count (u64), metadata count (u64), the
   metadata entries (key string, type u32, value), the tensor infos (name, n_dims u32, ne u64 x
   n_dims, type u32, offset u64), then the data at the next multiple of general.alignment. */
#include "gguf.h"

#include "icl_text.h"

#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define DEFAULT_ALIGNMENT 32
#define MAX_ARRAY_NESTING 4

static uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

static uint64_t rd64(const uint8_t *p) {
    uint64_t v;
    __builtin_memcpy(&v, p, 8);
    return v;
}

/* Bytes of a scalar of that type, or 0 for strings, arrays and unknown types. */
static size_t scalar_size(uint32_t type) {
    switch (type) {
    case ICL_GGUF_U8: case ICL_GGUF_I8: case ICL_GGUF_BOOL: return 1;
    case ICL_GGUF_U16: case ICL_GGUF_I16: return 2;
    case ICL_GGUF_U32: case ICL_GGUF_I32: case ICL_GGUF_F32: return 4;
    case ICL_GGUF_U64: case ICL_GGUF_I64: case ICL_GGUF_F64: return 8;
    default: return 0;
    }
}

typedef struct {
    const uint8_t *data;
    size_t len, pos;
    icl_text *err;
} cursor;

static int fail(cursor *c, const char *what) {
    icl_put(c->err, "the shard file is not valid GGUF: ");
    icl_put(icl_put_int(icl_put(icl_put(c->err, what), " (at byte "), (int64_t)c->pos), " of ");
    icl_put(icl_put_int(c->err, (int64_t)c->len), "); export and upload the shard again");
    return -1;
}

static int need(cursor *c, uint64_t n, const char *what) {
    if (n > c->len - c->pos) return fail(c, what);
    return 0;
}

static int skip_string(cursor *c) {
    if (need(c, 8, "truncated string length")) return -1;
    uint64_t n = rd64(c->data + c->pos);
    c->pos += 8;
    if (need(c, n, "truncated string")) return -1;
    c->pos += (size_t)n;
    return 0;
}

static int skip_value(cursor *c, uint32_t type, int depth) {
    size_t size = scalar_size(type);
    if (size) {
        if (need(c, size, "truncated metadata value")) return -1;
        c->pos += size;
        return 0;
    }
    if (type == ICL_GGUF_STRING) return skip_string(c);
    if (type != ICL_GGUF_ARRAY) return fail(c, "unknown metadata value type");
    if (depth >= MAX_ARRAY_NESTING) return fail(c, "metadata arrays nested too deeply");
    if (need(c, 12, "truncated array header")) return -1;
    uint32_t item = rd32(c->data + c->pos);
    uint64_t n = rd64(c->data + c->pos + 4);
    c->pos += 12;
    size = scalar_size(item);
    if (size) {
        if (n > (c->len - c->pos) / size) return fail(c, "truncated array");
        c->pos += (size_t)(n * size);
        return 0;
    }
    for (uint64_t i = 0; i < n; i++)
        if (skip_value(c, item, depth + 1)) return -1;
    return 0;
}

static int key_equals(const uint8_t *p, const char *key) {
    uint64_t n = rd64(p);
    size_t i = 0;
    for (; i < n; i++)
        if (!key[i] || (char)p[8 + i] != key[i]) return 0;
    return key[i] == 0;
}

int icl_gguf_open(icl_gguf *g, const uint8_t *data, size_t len, char *err, size_t err_cap) {
    icl_text text = icl_text_on(err, err_cap);
    cursor c = {data, len, 0, &text};
    if (need(&c, 24, "too short for a GGUF header")) return -1;
    if (rd32(data) != GGUF_MAGIC) return fail(&c, "no GGUF magic");
    uint32_t version = rd32(data + 4);
    if (version != 2 && version != 3) return fail(&c, "unsupported GGUF version (2 and 3 are supported)");
    g->data = data;
    g->len = len;
    g->n_tensors = rd64(data + 8);
    g->n_kv = rd64(data + 16);
    c.pos = g->kv_start = 24;
    uint64_t alignment = DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        size_t key = c.pos;
        if (skip_string(&c) || need(&c, 4, "truncated metadata type")) return -1;
        uint32_t type = rd32(data + c.pos);
        c.pos += 4;
        if (key_equals(data + key, "general.alignment")) {
            if (type != ICL_GGUF_U32) return fail(&c, "general.alignment is not a u32");
            if (need(&c, 4, "truncated general.alignment")) return -1;
            alignment = rd32(data + c.pos);
            if (alignment == 0 || alignment % 8) return fail(&c, "general.alignment is not a positive multiple of 8");
        }
        if (skip_value(&c, type, 0)) return -1;
    }
    g->tensors_start = c.pos;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        if (skip_string(&c) || need(&c, 4, "truncated tensor info")) return -1;
        uint32_t n_dims = rd32(data + c.pos);
        c.pos += 4;
        if (n_dims < 1 || n_dims > 4) return fail(&c, "a tensor has a dimension count outside 1..4");
        if (need(&c, 8 * (uint64_t)n_dims + 12, "truncated tensor info")) return -1;
        c.pos += 8 * (size_t)n_dims + 12;
    }
    uint64_t start = (c.pos + alignment - 1) / alignment * alignment;
    if (start > len) return fail(&c, "truncated before the tensor data");
    g->data_start = (size_t)start;
    return 0;
}

int icl_gguf_find(const icl_gguf *g, const char *key, icl_gguf_value *out) {
    cursor c = {g->data, g->len, g->kv_start, 0};
    for (uint64_t i = 0; i < g->n_kv; i++) {
        int match = key_equals(g->data + c.pos, key);
        skip_string(&c);
        uint32_t type = rd32(g->data + c.pos);
        c.pos += 4;
        if (match) {
            out->value = g->data + c.pos;
            out->type = type;
            return 1;
        }
        skip_value(&c, type, 0); /* checked by icl_gguf_open */
    }
    return 0;
}

static int read_int(const uint8_t *p, uint32_t type, int64_t *out) {
    switch (type) {
    case ICL_GGUF_U8: case ICL_GGUF_BOOL: *out = p[0]; return 1;
    case ICL_GGUF_I8: *out = (int8_t)p[0]; return 1;
    case ICL_GGUF_U16: *out = (uint16_t)(p[0] | p[1] << 8); return 1;
    case ICL_GGUF_I16: *out = (int16_t)(p[0] | p[1] << 8); return 1;
    case ICL_GGUF_U32: *out = rd32(p); return 1;
    case ICL_GGUF_I32: *out = (int32_t)rd32(p); return 1;
    case ICL_GGUF_U64: case ICL_GGUF_I64: *out = (int64_t)rd64(p); return 1;
    default: return 0;
    }
}

int icl_gguf_int(icl_gguf_value v, int64_t *out) { return read_int(v.value, v.type, out); }

int icl_gguf_float(icl_gguf_value v, double *out) {
    int64_t i;
    if (v.type == ICL_GGUF_F32) {
        float f;
        __builtin_memcpy(&f, v.value, 4);
        *out = f;
    } else if (v.type == ICL_GGUF_F64) {
        __builtin_memcpy(out, v.value, 8);
    } else if (v.type != ICL_GGUF_BOOL && read_int(v.value, v.type, &i)) {
        *out = (double)i;
    } else {
        return 0;
    }
    return 1;
}

int icl_gguf_string(icl_gguf_value v, const char **s, size_t *len) {
    if (v.type != ICL_GGUF_STRING) return 0;
    *len = (size_t)rd64(v.value);
    *s = (const char *)v.value + 8;
    return 1;
}

int icl_gguf_array_len(icl_gguf_value v, uint64_t *n) {
    if (v.type != ICL_GGUF_ARRAY) return 0;
    *n = rd64(v.value + 4);
    return 1;
}

int icl_gguf_array_int(icl_gguf_value v, uint64_t i, int64_t *out) {
    uint64_t n;
    if (!icl_gguf_array_len(v, &n) || i >= n) return 0;
    uint32_t item = rd32(v.value);
    size_t size = scalar_size(item);
    if (!size || item == ICL_GGUF_F32 || item == ICL_GGUF_F64) return 0;
    return read_int(v.value + 12 + i * size, item, out);
}

int icl_gguf_tensor_find(const icl_gguf *g, const char *name, icl_gguf_tensor *out) {
    size_t pos = g->tensors_start;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const uint8_t *p = g->data + pos;
        uint64_t name_len = rd64(p);
        const uint8_t *info = p + 8 + name_len;
        int n_dims = (int)rd32(info);
        pos += 8 + (size_t)name_len + 4 + 8 * (size_t)n_dims + 12;
        if (!key_equals(p, name)) continue;
        out->name = (const char *)p + 8;
        out->name_len = (size_t)name_len;
        out->n_dims = n_dims;
        for (int d = 0; d < 4; d++) out->ne[d] = d < n_dims ? rd64(info + 4 + 8 * d) : 1;
        out->type = rd32(info + 4 + 8 * n_dims);
        out->offset = rd64(info + 4 + 8 * n_dims + 4);
        return 1;
    }
    return 0;
}
