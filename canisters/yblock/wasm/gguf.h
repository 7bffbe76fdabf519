/* Reading a GGUF file (versions 2 and 3) held in memory: metadata lookup and tensor infos.

   icl_gguf_open checks the whole header once (every length and offset against the buffer), so the
   lookups after it read without further checks. Tensor data is never copied. */
#ifndef ICL_GGUF_H
#define ICL_GGUF_H

#include <stddef.h>
#include <stdint.h>

/* GGUF metadata value types */
enum {
    ICL_GGUF_U8 = 0, ICL_GGUF_I8, ICL_GGUF_U16, ICL_GGUF_I16, ICL_GGUF_U32, ICL_GGUF_I32, ICL_GGUF_F32,
    ICL_GGUF_BOOL, ICL_GGUF_STRING, ICL_GGUF_ARRAY, ICL_GGUF_U64, ICL_GGUF_I64, ICL_GGUF_F64
};

typedef struct {
    const uint8_t *data;
    size_t len;
    uint64_t n_kv;
    size_t kv_start; /* offset of the first metadata entry */
    uint64_t n_tensors;
    size_t tensors_start; /* offset of the first tensor info */
    size_t data_start;    /* offset of the tensor data (aligned) */
} icl_gguf;

typedef struct {
    const uint8_t *value; /* the value's bytes in the file (for an array: its item type) */
    uint32_t type;
} icl_gguf_value;

typedef struct {
    const char *name;
    size_t name_len;
    int n_dims;
    uint64_t ne[4]; /* ne[0] is the contiguous ("in") dimension; missing ones are 1 */
    uint32_t type;  /* ggml type id */
    uint64_t offset; /* from data_start: checked against the buffer by the caller, who knows the size */
} icl_gguf_tensor;

/* Returns 0, or -1 with what is wrong and where in err. */
int icl_gguf_open(icl_gguf *g, const uint8_t *data, size_t len, char *err, size_t err_cap);

/* 1 and *out if the key is present, else 0. */
int icl_gguf_find(const icl_gguf *g, const char *key, icl_gguf_value *out);

/* A scalar integer value (any integer type or bool) in *out: 1, or 0 if it is not one. */
int icl_gguf_int(icl_gguf_value v, int64_t *out);
/* A float value (f32, f64, or an integer): 1, or 0 if it is not a number. */
int icl_gguf_float(icl_gguf_value v, double *out);
/* A string value's bytes: 1, or 0 if it is not a string. */
int icl_gguf_string(icl_gguf_value v, const char **s, size_t *len);
/* Item i of an array of integers: 1, or 0 if it is not one or i is out of range. */
int icl_gguf_array_int(icl_gguf_value v, uint64_t i, int64_t *out);
/* The length of an array of any item type: 1, or 0 if the value is not an array. */
int icl_gguf_array_len(icl_gguf_value v, uint64_t *n);

/* 1 and *out if a tensor of that name is present, else 0. */
int icl_gguf_tensor_find(const icl_gguf *g, const char *name, icl_gguf_tensor *out);

#endif
