/* A small exact Candid codec for the yblock's interface (yblock.did): no allocation, no libc.
 *
 * Reading follows the wire format of the Candid specification: the type table is read and checked
 * first, then each value is read against the type the .did expects, with the subtyping the spec
 * allows (record fields the canister does not know are skipped; an opt field that is missing, or
 * null, reads as absent; extra arguments are ignored). Any malformed input stops the reader with
 * an error message, which the canister traps with: nothing is half-applied.
 *
 * Writing produces the canonical bytes a Candid encoder produces for the same values: the type
 * table in first-use order with each distinct type once, record and variant fields in id order. */
#ifndef ICL_CANDID_H
#define ICL_CANDID_H

#include <stddef.h>
#include <stdint.h>

enum {
    CD_NULL = -1, CD_BOOL = -2, CD_NAT = -3, CD_INT = -4, CD_NAT8 = -5, CD_NAT16 = -6, CD_NAT32 = -7,
    CD_NAT64 = -8, CD_INT8 = -9, CD_INT16 = -10, CD_INT32 = -11, CD_INT64 = -12, CD_FLOAT32 = -13,
    CD_FLOAT64 = -14, CD_TEXT = -15, CD_RESERVED = -16, CD_EMPTY = -17, CD_OPT = -18, CD_VEC = -19,
    CD_RECORD = -20, CD_VARIANT = -21, CD_FUNC = -22, CD_SERVICE = -23, CD_PRINCIPAL = -24,
};

#define CD_MAX_TABLE 256 /* type table entries a message may declare */
#define CD_MAX_ARGS 16   /* argument types a message may declare */

typedef struct {
    const uint8_t *p, *end;
    const char *error;                       /* first error; every read after it fails */
    uint32_t n_table;
    const uint8_t *table[CD_MAX_TABLE];      /* each entry's bytes, after its constructor code */
    int32_t table_op[CD_MAX_TABLE];
    uint32_t n_args;
    int32_t args[CD_MAX_ARGS];
    uint32_t depth;
    uint64_t skip_budget;                    /* values a skip may still walk (zero-size vectors) */
} cd_reader;

/* Reads the magic, the type table and the argument types; 0 and r->error on malformed input. */
int cd_begin(cd_reader *r, const uint8_t *data, size_t size);
/* The wire type of argument i, or CD_RESERVED (read as absent) past the last argument. */
int32_t cd_arg(const cd_reader *r, uint32_t i);
int cd_fail(cd_reader *r, const char *error); /* records the error, returns 0 */

int cd_read_bool(cd_reader *r, int32_t t, int *out);
int cd_read_nat32(cd_reader *r, int32_t t, uint32_t *out);
int cd_read_nat64(cd_reader *r, int32_t t, uint64_t *out);
int cd_read_float32(cd_reader *r, int32_t t, float *out);
/* text, blob and principal point into the message (text is checked UTF-8). */
int cd_read_text(cd_reader *r, int32_t t, const uint8_t **data, uint32_t *size);
int cd_read_blob(cd_reader *r, int32_t t, const uint8_t **data, uint32_t *size);
int cd_read_principal(cd_reader *r, int32_t t, const uint8_t **data, uint32_t *size);
/* vec nat32: the count and the items' little-endian bytes (4 per item), in the message. */
int cd_read_vec_nat32(cd_reader *r, int32_t t, const uint8_t **items, uint32_t *count);
/* opt T: *present, and the inner wire type to read when present. null and reserved read as absent. */
int cd_read_opt(cd_reader *r, int32_t t, int *present, int32_t *inner);
/* record: the number of wire fields; then cd_record_field for each, in order. */
int cd_read_record(cd_reader *r, int32_t t, uint32_t *n_fields, const uint8_t **fields);
int cd_record_field(cd_reader *r, const uint8_t **fields, uint32_t *id, int32_t *type);
/* Any value of wire type t, read and dropped (a field the canister does not know). */
int cd_skip(cd_reader *r, int32_t t);

typedef struct cd_type cd_type;
typedef struct {
    uint32_t id; /* the field's hash, as idl_hash computes it; fields are listed in id order */
    const cd_type *type;
} cd_field;
struct cd_type {
    int32_t op;           /* a primitive's code, or CD_OPT, CD_VEC, CD_RECORD, CD_VARIANT */
    const cd_type *inner; /* opt and vec */
    uint32_t n_fields;
    const cd_field *fields;
};

typedef struct {
    uint8_t *buf;
    size_t size, capacity;
    int overflow; /* a write did not fit: the caller sized the buffer wrongly */
} cd_writer;

void cd_write_header(cd_writer *w, const cd_type *const *args, uint32_t n_args);
void cd_write_leb(cd_writer *w, uint64_t n);
void cd_write_bytes(cd_writer *w, const void *data, size_t size);
void cd_write_u8(cd_writer *w, uint8_t b);
void cd_write_u32(cd_writer *w, uint32_t v);
void cd_write_u64(cd_writer *w, uint64_t v);
void cd_write_f32(cd_writer *w, float v);
void cd_write_text(cd_writer *w, const char *text, size_t size);

#endif
