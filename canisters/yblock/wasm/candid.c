#include "candid.h"

#define MAX_DEPTH 64
#define SKIP_BUDGET (1u << 22)

int cd_fail(cd_reader *r, const char *error) {
    if (!r->error) r->error = error;
    return 0;
}

static int read_leb(cd_reader *r, uint64_t *out) {
    uint64_t n = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) return cd_fail(r, "Candid: the message ends inside a number");
        uint8_t b = *r->p++;
        if (shift == 63 && b > 1) break;
        n |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = n;
            return 1;
        }
    }
    return cd_fail(r, "Candid: a LEB128 number does not fit in 64 bits");
}

static int read_sleb(cd_reader *r, int64_t *out) {
    int64_t n = 0;
    int shift = 0;
    uint8_t b;
    do {
        if (r->p >= r->end) return cd_fail(r, "Candid: the message ends inside a number");
        if (shift > 63) return cd_fail(r, "Candid: an SLEB128 number does not fit in 64 bits");
        b = *r->p++;
        n |= (int64_t)((uint64_t)(b & 0x7f) << shift);
        shift += 7;
    } while (b & 0x80);
    if (shift < 64 && (b & 0x40)) n |= -((int64_t)1 << shift);
    *out = n;
    return 1;
}

static int read_u32_leb(cd_reader *r, uint32_t *out) {
    uint64_t n;
    if (!read_leb(r, &n)) return 0;
    if (n > 0xffffffffu) return cd_fail(r, "Candid: a length or field id is 2^32 or more");
    *out = (uint32_t)n;
    return 1;
}

static int take(cd_reader *r, size_t n, const uint8_t **at) {
    if ((size_t)(r->end - r->p) < n) return cd_fail(r, "Candid: the message ends inside a value");
    *at = r->p;
    r->p += n;
    return 1;
}

/* A type reference in the table or the argument list: a primitive or an index into the table. */
static int read_type_ref(cd_reader *r, uint32_t n_table, int32_t *out) {
    int64_t code;
    if (!read_sleb(r, &code)) return 0;
    if (code >= 0 ? code >= n_table : (code < CD_PRINCIPAL || (code <= CD_OPT && code >= CD_SERVICE)))
        return cd_fail(r, "Candid: a type refers to a table entry or primitive that does not exist");
    *out = (int32_t)code;
    return 1;
}

static int check_entry(cd_reader *r, uint32_t n_table) {
    int64_t op;
    int32_t ref;
    uint32_t n, id;
    if (!read_sleb(r, &op)) return 0;
    switch (op) {
    case CD_OPT:
    case CD_VEC:
        return read_type_ref(r, n_table, &ref);
    case CD_RECORD:
    case CD_VARIANT: {
        if (!read_u32_leb(r, &n)) return 0;
        uint64_t previous = 0;
        for (uint32_t i = 0; i < n; i++) {
            if (!read_u32_leb(r, &id) || !read_type_ref(r, n_table, &ref)) return 0;
            if (i > 0 && id <= previous) return cd_fail(r, "Candid: record or variant field ids are not strictly increasing");
            previous = id;
        }
        return 1;
    }
    case CD_FUNC: {
        for (int part = 0; part < 2; part++) {
            if (!read_u32_leb(r, &n)) return 0;
            for (uint32_t i = 0; i < n; i++)
                if (!read_type_ref(r, n_table, &ref)) return 0;
        }
        const uint8_t *modes;
        if (!read_u32_leb(r, &n) || !take(r, n, &modes)) return 0;
        return 1;
    }
    case CD_SERVICE: {
        if (!read_u32_leb(r, &n)) return 0;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t len;
            const uint8_t *name;
            if (!read_u32_leb(r, &len) || !take(r, len, &name) || !read_type_ref(r, n_table, &ref)) return 0;
        }
        return 1;
    }
    default:
        return cd_fail(r, "Candid: the type table holds an entry that is not opt, vec, record, variant, func or service");
    }
}

int cd_begin(cd_reader *r, const uint8_t *data, size_t size) {
    r->p = data;
    r->end = data + size;
    r->error = 0;
    r->depth = 0;
    r->skip_budget = SKIP_BUDGET;
    if (size < 4 || data[0] != 'D' || data[1] != 'I' || data[2] != 'D' || data[3] != 'L')
        return cd_fail(r, "Candid: the message does not start with DIDL");
    r->p += 4;
    if (!read_u32_leb(r, &r->n_table)) return 0;
    if (r->n_table > CD_MAX_TABLE) return cd_fail(r, "Candid: the type table has more entries than this canister reads (256)");
    for (uint32_t i = 0; i < r->n_table; i++) {
        const uint8_t *start = r->p;
        int64_t op;
        if (!read_sleb(r, &op)) return 0;
        r->table_op[i] = (int32_t)op;
        r->table[i] = r->p;
        r->p = start;
        if (!check_entry(r, r->n_table)) return 0;
    }
    if (!read_u32_leb(r, &r->n_args)) return 0;
    if (r->n_args > CD_MAX_ARGS) return cd_fail(r, "Candid: the message has more arguments than this canister reads (16)");
    for (uint32_t i = 0; i < r->n_args; i++)
        if (!read_type_ref(r, r->n_table, &r->args[i])) return 0;
    return 1;
}

int32_t cd_arg(const cd_reader *r, uint32_t i) { return i < r->n_args ? r->args[i] : CD_RESERVED; }

static int32_t op_of(const cd_reader *r, int32_t t) { return t >= 0 ? r->table_op[t] : t; }

static int expect(cd_reader *r, int32_t t, int32_t op, const char *error) {
    if (r->error) return 0;
    return op_of(r, t) == op ? 1 : cd_fail(r, error);
}

static int read_fixed(cd_reader *r, int32_t t, int32_t op, size_t n, const char *error, void *out) {
    const uint8_t *at;
    if (!expect(r, t, op, error) || !take(r, n, &at)) return 0;
    for (size_t i = 0; i < n; i++) ((uint8_t *)out)[i] = at[i]; /* wasm32 is little-endian, as Candid */
    return 1;
}

int cd_read_bool(cd_reader *r, int32_t t, int *out) {
    uint8_t b;
    if (!read_fixed(r, t, CD_BOOL, 1, "Candid: expected a bool", &b)) return 0;
    if (b > 1) return cd_fail(r, "Candid: a bool is neither 0 nor 1");
    *out = b;
    return 1;
}

int cd_read_nat32(cd_reader *r, int32_t t, uint32_t *out) {
    return read_fixed(r, t, CD_NAT32, 4, "Candid: expected a nat32", out);
}

int cd_read_nat64(cd_reader *r, int32_t t, uint64_t *out) {
    return read_fixed(r, t, CD_NAT64, 8, "Candid: expected a nat64", out);
}

int cd_read_float32(cd_reader *r, int32_t t, float *out) {
    return read_fixed(r, t, CD_FLOAT32, 4, "Candid: expected a float32", out);
}

static int valid_utf8(const uint8_t *s, uint32_t n) {
    for (uint32_t i = 0; i < n;) {
        uint8_t c = s[i];
        uint32_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n) return 0;
        uint32_t cp = len == 1 ? c : c & (0x7f >> len);
        for (uint32_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < least[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += len;
    }
    return 1;
}

static int read_sized(cd_reader *r, const uint8_t **data, uint32_t *size) {
    return read_u32_leb(r, size) && take(r, *size, data);
}

int cd_read_text(cd_reader *r, int32_t t, const uint8_t **data, uint32_t *size) {
    if (!expect(r, t, CD_TEXT, "Candid: expected a text") || !read_sized(r, data, size)) return 0;
    return valid_utf8(*data, *size) ? 1 : cd_fail(r, "Candid: a text is not valid UTF-8");
}

static int vec_of(cd_reader *r, int32_t t, int32_t element, const char *error) {
    if (!expect(r, t, CD_VEC, error)) return 0;
    const uint8_t *saved = r->p;
    int32_t inner;
    r->p = r->table[t];
    int ok = read_type_ref(r, r->n_table, &inner);
    r->p = saved;
    return ok && op_of(r, inner) == element ? 1 : cd_fail(r, error);
}

int cd_read_blob(cd_reader *r, int32_t t, const uint8_t **data, uint32_t *size) {
    return vec_of(r, t, CD_NAT8, "Candid: expected a blob (vec nat8)") && read_sized(r, data, size);
}

int cd_read_vec_nat32(cd_reader *r, int32_t t, const uint8_t **items, uint32_t *count) {
    if (!vec_of(r, t, CD_NAT32, "Candid: expected a vec nat32") || !read_u32_leb(r, count)) return 0;
    if (*count > (uint32_t)(r->end - r->p) / 4) return cd_fail(r, "Candid: the message ends inside a value");
    return take(r, (size_t)*count * 4, items);
}

int cd_read_principal(cd_reader *r, int32_t t, const uint8_t **data, uint32_t *size) {
    const uint8_t *tag;
    if (!expect(r, t, CD_PRINCIPAL, "Candid: expected a principal") || !take(r, 1, &tag)) return 0;
    if (*tag != 1) return cd_fail(r, "Candid: an opaque principal reference cannot be read");
    if (!read_sized(r, data, size)) return 0;
    return *size <= 29 ? 1 : cd_fail(r, "Candid: a principal is longer than 29 bytes");
}

int cd_read_opt(cd_reader *r, int32_t t, int *present, int32_t *inner) {
    if (r->error) return 0;
    int32_t op = op_of(r, t);
    if (op == CD_NULL || op == CD_RESERVED) { /* a missing or null opt field: absent */
        *present = 0;
        return 1;
    }
    if (op != CD_OPT) return cd_fail(r, "Candid: expected an opt");
    const uint8_t *tag, *saved = r->p;
    r->p = r->table[t];
    int ok = read_type_ref(r, r->n_table, inner);
    r->p = saved;
    if (!ok || !take(r, 1, &tag)) return 0;
    if (*tag > 1) return cd_fail(r, "Candid: an opt's tag is neither 0 nor 1");
    *present = *tag;
    return 1;
}

int cd_read_record(cd_reader *r, int32_t t, uint32_t *n_fields, const uint8_t **fields) {
    if (!expect(r, t, CD_RECORD, "Candid: expected a record")) return 0;
    const uint8_t *saved = r->p;
    r->p = r->table[t];
    int ok = read_u32_leb(r, n_fields);
    *fields = r->p;
    r->p = saved;
    return ok;
}

int cd_record_field(cd_reader *r, const uint8_t **fields, uint32_t *id, int32_t *type) {
    const uint8_t *saved = r->p;
    r->p = *fields;
    int ok = read_u32_leb(r, id) && read_type_ref(r, r->n_table, type);
    *fields = r->p;
    r->p = saved;
    return ok;
}

static int skip_n(cd_reader *r, size_t n) {
    const uint8_t *at;
    return take(r, n, &at);
}

int cd_skip(cd_reader *r, int32_t t) {
    if (r->error) return 0;
    if (r->skip_budget-- == 0) return cd_fail(r, "Candid: the message holds more values than this canister skips");
    switch (op_of(r, t)) {
    case CD_NULL: case CD_RESERVED: return 1;
    case CD_EMPTY: return cd_fail(r, "Candid: a value of type empty cannot exist");
    case CD_BOOL: case CD_NAT8: case CD_INT8: return skip_n(r, 1);
    case CD_NAT16: case CD_INT16: return skip_n(r, 2);
    case CD_NAT32: case CD_INT32: case CD_FLOAT32: return skip_n(r, 4);
    case CD_NAT64: case CD_INT64: case CD_FLOAT64: return skip_n(r, 8);
    case CD_NAT: case CD_INT: {
        const uint8_t *at;
        do {
            if (!take(r, 1, &at)) return 0;
        } while (*at & 0x80);
        return 1;
    }
    case CD_TEXT: {
        const uint8_t *data;
        uint32_t size;
        return cd_read_text(r, t, &data, &size);
    }
    case CD_PRINCIPAL: {
        const uint8_t *data;
        uint32_t size;
        return cd_read_principal(r, t, &data, &size);
    }
    default: break;
    }
    if (++r->depth > MAX_DEPTH) return cd_fail(r, "Candid: values nest more than 64 levels deep");
    const uint8_t *saved = r->p, *tag;
    r->p = r->table[t];
    int32_t op = r->table_op[t], inner;
    uint32_t n, count, index;
    int ok = 1;
    switch (op) {
    case CD_OPT:
        ok = read_type_ref(r, r->n_table, &inner);
        r->p = saved;
        if (ok && (ok = take(r, 1, &tag)) && *tag == 1) ok = cd_skip(r, inner);
        else if (ok && *tag > 1) ok = cd_fail(r, "Candid: an opt's tag is neither 0 nor 1");
        break;
    case CD_VEC:
        ok = read_type_ref(r, r->n_table, &inner);
        r->p = saved;
        if (ok && (ok = read_u32_leb(r, &count)))
            for (uint32_t i = 0; ok && i < count; i++) ok = cd_skip(r, inner);
        break;
    case CD_RECORD: {
        ok = read_u32_leb(r, &n);
        const uint8_t *fields = r->p;
        r->p = saved;
        for (uint32_t i = 0; ok && i < n; i++) {
            uint32_t id;
            ok = cd_record_field(r, &fields, &id, &inner) && cd_skip(r, inner);
        }
        break;
    }
    case CD_VARIANT: {
        ok = read_u32_leb(r, &n);
        const uint8_t *fields = r->p;
        r->p = saved;
        if (ok && (ok = read_u32_leb(r, &index)) && index >= n) ok = cd_fail(r, "Candid: a variant's index is past its cases");
        uint32_t id;
        for (uint32_t i = 0; ok && i <= index; i++) ok = cd_record_field(r, &fields, &id, &inner);
        if (ok) ok = cd_skip(r, inner);
        break;
    }
    case CD_SERVICE:
        r->p = saved;
        if ((ok = take(r, 1, &tag)) && *tag == 1) {
            const uint8_t *data;
            uint32_t size;
            ok = read_sized(r, &data, &size);
        }
        break;
    case CD_FUNC:
        r->p = saved;
        if ((ok = take(r, 1, &tag)) && *tag == 1) {
            const uint8_t *data;
            uint32_t size;
            ok = take(r, 1, &tag) && (*tag != 1 || read_sized(r, &data, &size)) && read_sized(r, &data, &size);
        }
        break;
    default:
        r->p = saved;
        ok = cd_fail(r, "Candid: a value of an unknown type");
    }
    r->depth--;
    return ok;
}

/* --- writing ---------------------------------------------------------------------------------- */

void cd_write_bytes(cd_writer *w, const void *data, size_t size) {
    if (w->overflow || size > w->capacity - w->size) {
        w->overflow = 1;
        return;
    }
    for (size_t i = 0; i < size; i++) w->buf[w->size + i] = ((const uint8_t *)data)[i];
    w->size += size;
}

void cd_write_u8(cd_writer *w, uint8_t b) { cd_write_bytes(w, &b, 1); }
void cd_write_u32(cd_writer *w, uint32_t v) { cd_write_bytes(w, &v, 4); }
void cd_write_u64(cd_writer *w, uint64_t v) { cd_write_bytes(w, &v, 8); }
void cd_write_f32(cd_writer *w, float v) { cd_write_bytes(w, &v, 4); }

void cd_write_leb(cd_writer *w, uint64_t n) {
    do {
        uint8_t b = n & 0x7f;
        n >>= 7;
        cd_write_u8(w, n ? b | 0x80 : b);
    } while (n);
}

static void write_sleb(cd_writer *w, int64_t n) {
    for (;;) {
        uint8_t b = n & 0x7f;
        n >>= 7;
        if ((n == 0 && !(b & 0x40)) || (n == -1 && (b & 0x40))) {
            cd_write_u8(w, b);
            return;
        }
        cd_write_u8(w, b | 0x80);
    }
}

void cd_write_text(cd_writer *w, const char *text, size_t size) {
    cd_write_leb(w, size);
    cd_write_bytes(w, text, size);
}

typedef struct {
    const cd_type *types[CD_MAX_TABLE];
    uint32_t n;
} type_table;

/* The type's code, adding it (and what it refers to, depth first) to the table on first use. */
static int32_t table_code(type_table *table, const cd_type *t) {
    if (t->op != CD_OPT && t->op != CD_VEC && t->op != CD_RECORD && t->op != CD_VARIANT) return t->op;
    for (uint32_t i = 0; i < table->n; i++)
        if (table->types[i] == t) return (int32_t)i;
    table->types[table->n] = t;
    int32_t code = (int32_t)table->n++;
    if (t->inner) table_code(table, t->inner);
    for (uint32_t i = 0; i < t->n_fields; i++) table_code(table, t->fields[i].type);
    return code;
}

void cd_write_header(cd_writer *w, const cd_type *const *args, uint32_t n_args) {
    type_table table = {.n = 0};
    for (uint32_t i = 0; i < n_args; i++) table_code(&table, args[i]);
    cd_write_bytes(w, "DIDL", 4);
    cd_write_leb(w, table.n);
    for (uint32_t i = 0; i < table.n; i++) {
        const cd_type *t = table.types[i];
        write_sleb(w, t->op);
        if (t->inner) {
            write_sleb(w, table_code(&table, t->inner));
            continue;
        }
        cd_write_leb(w, t->n_fields);
        for (uint32_t f = 0; f < t->n_fields; f++) {
            cd_write_leb(w, t->fields[f].id);
            write_sleb(w, table_code(&table, t->fields[f].type));
        }
    }
    cd_write_leb(w, n_args);
    for (uint32_t i = 0; i < n_args; i++) write_sleb(w, table_code(&table, args[i]));
}
