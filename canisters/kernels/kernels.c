/* The kernels of kernels.h: portable C, plus wasm simd128 (built with -msimd128) and x86 AVX2
 * (per-function target attributes, used only when the CPU reports AVX2, FMA and F16C; the native
 * extension includes this file and decides at run time). Every build computes the same bits: the
 * integer sums are exact, and the float steps follow kernels.h in the same order. Build with
 * -ffp-contract=off so that no multiply-add is fused behind our back.
 */
#include "kernels.h"

#include <stdint.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the kernels read GGUF's little-endian fields in place"
#endif

#if defined(__wasm_simd128__)
#include <wasm_simd128.h>
#define ICL_WASM 1
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(ICL_NO_AVX2)
#include <immintrin.h>
#define ICL_X86 1
#define ICL_AVX2 __attribute__((target("avx2,fma,f16c")))
#endif

/* Types the native build also multiplies (not offered to the wasm yblock: see sharding/partition.py) */
enum { ICL_Q5_0 = 6, ICL_Q5_1 = 7, ICL_BF16 = 30 };

#define QK 32      /* elements of a Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 block and of a Q8_0/Q8_1 activation block */
#define QK_K 256   /* elements of a k-quant super-block and of a Q8_K activation block */
#define PREFETCH_BYTES 2048

/* ---------------------------------------------------------------------------------------------- */
/* Scalars                                                                                        */

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    __builtin_memcpy(&u, &f, 4);
    return u;
}

static inline float bits_f32(uint32_t u) {
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t le16_at(const uint8_t *p) {
    uint16_t v;
    __builtin_memcpy(&v, p, 2);
    return v;
}

static inline uint32_t le32_at(const uint8_t *p) {
    uint32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

/* Exact for every finite f16 (subnormals included): the f16 sign-extended and shifted so that its
 * sign, exponent and mantissa sit in an f32's fields (the mask clears the sign's other copies),
 * then scaled by 2^112, the difference of the two exponent biases. */
static inline float half_to_f32(uint16_t h) {
    return bits_f32(((uint32_t)(int32_t)(int16_t)h << 13) & 0x8FFFE000u) * 0x1p112f;
}

static inline float half_at(const uint8_t *p) { return half_to_f32(le16_at(p)); }

/* Round half to even, as F16C and ggml's GGML_FP32_TO_FP16. */
static inline uint16_t f32_to_f16(float f) {
    uint32_t x = f32_bits(f), sign = (x >> 16) & 0x8000;
    x &= 0x7FFFFFFF;
    if (x >= 0x7F800000) return (uint16_t)(sign | 0x7C00 | (x > 0x7F800000 ? 0x200 : 0));
    if (x >= 0x477FF000) return (uint16_t)(sign | 0x7C00); /* rounds past 65504 */
    if (x < 0x38800000) /* below 2^-14: an f16 subnormal; adding 0.5 rounds to its 2^-24 steps */
        return (uint16_t)(sign | (f32_bits(bits_f32(x) + 0.5f) - 0x3F000000));
    x += 0xC8000FFF + ((x >> 13) & 1); /* rebias by -112 and round half to even */
    return (uint16_t)(sign | (x >> 13));
}

static inline float round_f16(float f) { return half_to_f32(f32_to_f16(f)); }

static inline float round_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7FFFFFFF) > 0x7F800000) return bits_f32((x | 0x00400000) & 0xFFFF0000); /* quiet NaN */
    return bits_f32((x + 0x7FFF + ((x >> 16) & 1)) & 0xFFFF0000);
}

static inline float bfloat_at(const uint8_t *p) { return bits_f32((uint32_t)le16_at(p) << 16); }

/* Round half to even to an int, for |v| < 2^22 (ggml's nearest_int; _mm256_round_ps, f32x4.nearest) */
static inline int nearest_int(float v) {
    float shifted = v + 12582912.0f; /* 1.5 * 2^23: the sum's low mantissa bits are the rounded value */
    return (int)(f32_bits(shifted) & 0x007FFFFF) - 0x00400000;
}

static inline float abs_f32(float f) { return bits_f32(f32_bits(f) & 0x7FFFFFFF); }

/* ---------------------------------------------------------------------------------------------- */
/* Sizes                                                                                          */

typedef struct {
    int block;      /* elements per weight block */
    int bytes;      /* bytes per weight block */
} WeightBlock;

static int weight_block(int wtype, WeightBlock *b) {
    switch (wtype) {
    case ICL_F32: *b = (WeightBlock){1, 4}; return 1;
    case ICL_F16: *b = (WeightBlock){1, 2}; return 1;
    case ICL_BF16: *b = (WeightBlock){1, 2}; return 1;
    case ICL_Q4_0: *b = (WeightBlock){QK, 18}; return 1;
    case ICL_Q4_1: *b = (WeightBlock){QK, 20}; return 1;
    case ICL_Q5_0: *b = (WeightBlock){QK, 22}; return 1;
    case ICL_Q5_1: *b = (WeightBlock){QK, 24}; return 1;
    case ICL_Q8_0: *b = (WeightBlock){QK, 34}; return 1;
    case ICL_Q4_K: *b = (WeightBlock){QK_K, 144}; return 1;
    case ICL_Q5_K: *b = (WeightBlock){QK_K, 176}; return 1;
    case ICL_Q6_K: *b = (WeightBlock){QK_K, 210}; return 1;
    default: return 0;
    }
}

size_t icl_row_bytes(int wtype, int n) {
    WeightBlock b;
    if (!weight_block(wtype, &b) || n <= 0 || n % b.block) return 0;
    return (size_t)(n / b.block) * (size_t)b.bytes;
}

/* Prepared activation rows (n elements):
 *   Q8_0: int8 q[n], then f32 d[n/32]           (for Q4_0, Q5_0, Q8_0)
 *   Q8_1: int8 q[n], f32 d[n/32], f32 s[n/32]   (for Q4_1, Q5_1)
 *   Q8_K: int8 q[n], f32 d[n/256], int16 bsums[n/16] (for Q4_K, Q5_K, Q6_K)
 *   F16, BF16, F32: f32 x[n], rounded to the weight's float type (exact in f32) */
size_t icl_act_row_bytes(int wtype, int n) {
    if (icl_row_bytes(wtype, n) == 0) return 0;
    size_t count = (size_t)n;
    switch (wtype) {
    case ICL_Q4_0: case ICL_Q5_0: case ICL_Q8_0: return count + 4 * (count / QK);
    case ICL_Q4_1: case ICL_Q5_1: return count + 8 * (count / QK);
    case ICL_Q4_K: case ICL_Q5_K: case ICL_Q6_K: return count + 4 * (count / QK_K) + 2 * (count / 16);
    default: return 4 * count;
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* Activation quantization                                                                        */

/* Q8_0 / Q8_1 (with_sum): x86 ggml's quantize_row_q8_0/q8_1: d = amax / 127, q = round(x * (127 / amax)) */
static void quantize_q8_0(const float *x, int n, uint8_t *out, int with_sum) {
    int nb = n / QK;
    int8_t *q = (int8_t *)out;
    float *d = (float *)(out + n), *s = d + nb;
    for (int b = 0; b < nb; b++, x += QK, q += QK) {
        float amax = 0.0f;
        for (int i = 0; i < QK; i++) {
            float a = abs_f32(x[i]);
            amax = a > amax ? a : amax;
        }
        float scale = amax / 127.0f, inverse = amax != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int i = 0; i < QK; i++) {
            q[i] = (int8_t)nearest_int(x[i] * inverse);
            sum += q[i];
        }
        d[b] = round_f16(scale);
        if (with_sum) s[b] = round_f16(scale * (float)sum);
    }
}

/* Q8_K: ggml's quantize_row_q8_K_ref */
static void quantize_q8_k(const float *x, int n, uint8_t *out) {
    int nb = n / QK_K;
    int8_t *q = (int8_t *)out;
    float *d = (float *)(out + n);
    int16_t *bsums = (int16_t *)(out + n + 4 * nb);
    for (int b = 0; b < nb; b++, x += QK_K, q += QK_K, bsums += QK_K / 16) {
        float amax = 0.0f, max = 0.0f;
        for (int i = 0; i < QK_K; i++) {
            float a = abs_f32(x[i]);
            if (a > amax) amax = a, max = x[i];
        }
        if (amax == 0.0f) {
            d[b] = 0.0f;
            __builtin_memset(q, 0, QK_K);
            __builtin_memset(bsums, 0, QK_K / 16 * sizeof(int16_t));
            continue;
        }
        float iscale = -127.0f / max;
        for (int i = 0; i < QK_K; i++) {
            int v = nearest_int(iscale * x[i]);
            q[i] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int i = 0; i < 16; i++) sum += q[16 * j + i];
            bsums[j] = (int16_t)sum;
        }
        d[b] = 1.0f / iscale;
    }
}

void icl_quantize_act(int wtype, const float *x, int n, void *out) {
    uint8_t *o = (uint8_t *)out;
    float *f = (float *)out;
    switch (wtype) {
    case ICL_Q4_0: case ICL_Q5_0: case ICL_Q8_0: quantize_q8_0(x, n, o, 0); break;
    case ICL_Q4_1: case ICL_Q5_1: quantize_q8_0(x, n, o, 1); break;
    case ICL_Q4_K: case ICL_Q5_K: case ICL_Q6_K: quantize_q8_k(x, n, o); break;
    case ICL_F16: for (int i = 0; i < n; i++) f[i] = round_f16(x[i]); break;
    case ICL_BF16: for (int i = 0; i < n; i++) f[i] = round_bf16(x[i]); break;
    default: for (int i = 0; i < n; i++) f[i] = x[i]; break;
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* One dot product: weight row w (n elements) against prepared activation row a                   */

typedef struct {
    const int8_t *q;       /* quantized activations */
    const float *d;        /* their block scales */
    const float *s;        /* Q8_1: f16(d * sum q) per block */
    const int16_t *bsums;  /* Q8_K: sums of 16 */
    const float *f;        /* float activations */
} Act;

static Act act_view(int wtype, const uint8_t *a, int n) {
    Act v = {0, 0, 0, 0, 0};
    v.q = (const int8_t *)a;
    v.d = (const float *)(a + n);
    v.f = (const float *)a;
    if (wtype == ICL_Q4_1 || wtype == ICL_Q5_1) v.s = v.d + n / QK;
    if (wtype == ICL_Q4_K || wtype == ICL_Q5_K || wtype == ICL_Q6_K) v.bsums = (const int16_t *)(a + n + 4 * (n / QK_K));
    return v;
}

static inline float sum_lanes(const float acc[4]) { return (acc[0] + acc[1]) + (acc[2] + acc[3]); }

/* Weight block b's integer values, for the 32-blocks: 32 ints in element order */
static inline void unpack_block32(int wtype, const uint8_t *blk, int *v) {
    switch (wtype) {
    case ICL_Q8_0:
        for (int i = 0; i < QK; i++) v[i] = (int8_t)blk[2 + i];
        break;
    case ICL_Q4_0:
        for (int i = 0; i < 16; i++) v[i] = (blk[2 + i] & 15) - 8, v[i + 16] = (blk[2 + i] >> 4) - 8;
        break;
    case ICL_Q4_1:
        for (int i = 0; i < 16; i++) v[i] = blk[4 + i] & 15, v[i + 16] = blk[4 + i] >> 4;
        break;
    case ICL_Q5_0: {
        uint32_t qh = le32_at(blk + 2);
        for (int i = 0; i < 16; i++) {
            v[i] = ((blk[6 + i] & 15) | (int)(((qh >> i) & 1) << 4)) - 16;
            v[i + 16] = ((blk[6 + i] >> 4) | (int)(((qh >> (i + 16)) & 1) << 4)) - 16;
        }
        break;
    }
    default: { /* Q5_1 */
        uint32_t qh = le32_at(blk + 4);
        for (int i = 0; i < 16; i++) {
            v[i] = (blk[8 + i] & 15) | (int)(((qh >> i) & 1) << 4);
            v[i + 16] = (blk[8 + i] >> 4) | (int)(((qh >> (i + 16)) & 1) << 4);
        }
        break;
    }
    }
}

static float dot_block32_portable(int wtype, const uint8_t *w, int n, Act a) {
    WeightBlock wb;
    weight_block(wtype, &wb);
    int has_min = wtype == ICL_Q4_1 || wtype == ICL_Q5_1;
    float acc[4] = {0, 0, 0, 0}, accm = 0.0f;
    int v[QK];
    for (int b = 0; b < n / QK; b++, w += wb.bytes) {
        unpack_block32(wtype, w, v);
        int lanes[4] = {0, 0, 0, 0};
        for (int i = 0; i < QK; i++) lanes[(i % 8) / 2] += v[i] * a.q[QK * b + i];
        float scale = half_at(w) * a.d[b];
        for (int l = 0; l < 4; l++) acc[l] += scale * (float)lanes[l];
        if (has_min) accm += half_at(w + 2) * a.s[b];
    }
    return sum_lanes(acc) + accm;
}

/* ggml's get_scale_min_k4: 12 bytes -> eight 6-bit scales and eight 6-bit mins */
static inline void scale_min_k4(const uint8_t *s, int *sc, int *mn) {
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 15) | ((s[j] >> 6) << 4);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
}

/* The super-block's exact integer sums, for Q4_K/Q5_K (*summs set) and Q6_K */
static void sums_k_portable(int wtype, const uint8_t *w, const int8_t *q, const int16_t *bsums, int *sumi,
                            int *summs) {
    int total = 0;
    if (wtype == ICL_Q6_K) {
        const int8_t *scales = (const int8_t *)(w + 192);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = w + 64 * h, *qh = w + 128 + 32 * h;
            for (int l = 0; l < 32; l++) {
                int v[4] = {
                    (ql[l] & 15) | ((qh[l] & 3) << 4),
                    (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4),
                    (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                    (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                };
                for (int t = 0; t < 4; t++) {
                    int e = 128 * h + 32 * t + l;
                    total += scales[e / 16] * (v[t] - 32) * q[e];
                }
            }
        }
        *sumi = total;
        return;
    }
    int sc[8], mn[8];
    scale_min_k4(w + 4, sc, mn);
    const uint8_t *qh = w + 16, *qs = w + (wtype == ICL_Q5_K ? 48 : 16);
    for (int j = 0; j < 8; j++) {
        int sub = 0;
        for (int l = 0; l < 32; l++) {
            int v = j % 2 ? qs[32 * (j / 2) + l] >> 4 : qs[32 * (j / 2) + l] & 15;
            if (wtype == ICL_Q5_K) v |= ((qh[l] >> j) & 1) << 4;
            sub += v * q[32 * j + l];
        }
        total += sc[j] * sub;
    }
    int m = 0;
    for (int j = 0; j < 8; j++) m += mn[j] * (bsums[2 * j] + bsums[2 * j + 1]);
    *sumi = total;
    *summs = m;
}

static float dot_k_portable(int wtype, const uint8_t *w, int n, Act a) {
    WeightBlock wb;
    weight_block(wtype, &wb);
    float acc[4] = {0, 0, 0, 0};
    for (int b = 0; b < n / QK_K; b++, w += wb.bytes) {
        int sumi = 0, summs = 0;
        sums_k_portable(wtype, w, a.q + QK_K * b, a.bsums + 16 * b, &sumi, &summs);
        if (wtype == ICL_Q6_K) {
            acc[b % 4] += (half_at(w + 208) * a.d[b]) * (float)sumi;
        } else {
            acc[b % 4] += (half_at(w) * a.d[b]) * (float)sumi;
            acc[b % 4] -= (half_at(w + 2) * a.d[b]) * (float)summs;
        }
    }
    return sum_lanes(acc);
}

static float dot_float_portable(int wtype, const uint8_t *w, int n, Act a) {
    float acc[4] = {0, 0, 0, 0};
    for (int i = 0; i < n; i++) {
        float wi = wtype == ICL_F32 ? bits_f32(le32_at(w + 4 * i)) : wtype == ICL_F16 ? half_at(w + 2 * i) : bfloat_at(w + 2 * i);
        acc[i % 4] += wi * a.f[i];
    }
    return sum_lanes(acc);
}

static float dot_row_portable(int wtype, const uint8_t *w, int n, Act a) {
    switch (wtype) {
    case ICL_F32: case ICL_F16: case ICL_BF16: return dot_float_portable(wtype, w, n, a);
    case ICL_Q4_K: case ICL_Q5_K: case ICL_Q6_K: return dot_k_portable(wtype, w, n, a);
    default: return dot_block32_portable(wtype, w, n, a);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* wasm simd128                                                                                   */

#ifdef ICL_WASM
/* Why extmul + extadd instead of extending to i16 and i32x4.dot_i16x8_s: for int8 x int8 the
 * products of two extmuls fit an i16 lane together (|q8 activations| <= 127), so 32 products take 4
 * extmul, 2 i16x8.add and 2 extadd_pairwise instead of 8 extends and 4 dots. The k-quants use
 * i32x4.dot_i16x8_s where it saves work: to apply the sub-block scales. */
/* extract_lane costs 1 in the IC's table, a shuffle 3 */
static inline int hsum_i32x4(v128_t v) {
    return (wasm_i32x4_extract_lane(v, 0) + wasm_i32x4_extract_lane(v, 1)) +
           (wasm_i32x4_extract_lane(v, 2) + wasm_i32x4_extract_lane(v, 3));
}

/* 32 int8 weights (lo = elements 0..15, hi = 16..31) against 32 int8 activations: the four i32
 * lane sums of kernels.h (lane l: elements i with (i % 8) / 2 == l). Two extmuls fit an i16 lane
 * (|q8 activation| <= 127, |weight| <= 128); `small` weights (|w| <= 16) let all four share one. */
static inline v128_t lanes_i8x32(v128_t lo, v128_t hi, const int8_t *x, int small) {
    v128_t x0 = wasm_v128_load(x), x1 = wasm_v128_load(x + 16);
    v128_t p0 = wasm_i16x8_add(wasm_i16x8_extmul_low_i8x16(lo, x0), wasm_i16x8_extmul_high_i8x16(lo, x0));
    v128_t p1 = wasm_i16x8_add(wasm_i16x8_extmul_low_i8x16(hi, x1), wasm_i16x8_extmul_high_i8x16(hi, x1));
    if (small) return wasm_i32x4_extadd_pairwise_i16x8(wasm_i16x8_add(p0, p1));
    return wasm_i32x4_add(wasm_i32x4_extadd_pairwise_i16x8(p0), wasm_i32x4_extadd_pairwise_i16x8(p1));
}

static inline float sum_f32x4(v128_t v) {
    float lanes[4] = {wasm_f32x4_extract_lane(v, 0), wasm_f32x4_extract_lane(v, 1),
                      wasm_f32x4_extract_lane(v, 2), wasm_f32x4_extract_lane(v, 3)};
    return sum_lanes(lanes);
}

/* acc[l] += scale * f32(lanes[l]) */
static inline v128_t add_scaled(v128_t acc, v128_t lanes, float scale) {
    return wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(lanes), wasm_f32x4_splat(scale)));
}

static float dot_block32_wasm(int wtype, const uint8_t *w, int n, Act a) {
    const v128_t low4 = wasm_i8x16_splat(15), eight = wasm_i8x16_splat(8);
    v128_t acc = wasm_f32x4_splat(0.0f);
    float accm = 0.0f;
    int nb = n / QK;
    const int8_t *x = a.q;
    if (wtype == ICL_Q8_0) {
        for (int b = 0; b < nb; b++, w += 34, x += QK)
            acc = add_scaled(acc, lanes_i8x32(wasm_v128_load(w + 2), wasm_v128_load(w + 18), x, 0), half_at(w) * a.d[b]);
    } else if (wtype == ICL_Q4_0) {
        for (int b = 0; b < nb; b++, w += 18, x += QK) {
            v128_t qs = wasm_v128_load(w + 2);
            v128_t lo = wasm_i8x16_sub(wasm_v128_and(qs, low4), eight);
            v128_t hi = wasm_i8x16_sub(wasm_u8x16_shr(qs, 4), eight);
            acc = add_scaled(acc, lanes_i8x32(lo, hi, x, 1), half_at(w) * a.d[b]);
        }
    } else { /* Q4_1 */
        for (int b = 0; b < nb; b++, w += 20, x += QK) {
            v128_t qs = wasm_v128_load(w + 4);
            acc = add_scaled(acc, lanes_i8x32(wasm_v128_and(qs, low4), wasm_u8x16_shr(qs, 4), x, 1), half_at(w) * a.d[b]);
            accm += half_at(w + 2) * a.s[b];
        }
    }
    return sum_f32x4(acc) + accm;
}

#define ROWS 4 /* rows the wasm kernels multiply at once against one token */
#define UNROLL _Pragma("clang loop unroll(full)") /* keeps per-row values in locals, not in memory */

/* x0/x1 preloaded: the four-row kernels share them */
static inline __attribute__((always_inline)) v128_t lanes_x(v128_t lo, v128_t hi, v128_t x0, v128_t x1, int small) {
    v128_t p0 = wasm_i16x8_add(wasm_i16x8_extmul_low_i8x16(lo, x0), wasm_i16x8_extmul_high_i8x16(lo, x0));
    v128_t p1 = wasm_i16x8_add(wasm_i16x8_extmul_low_i8x16(hi, x1), wasm_i16x8_extmul_high_i8x16(hi, x1));
    if (small) return wasm_i32x4_extadd_pairwise_i16x8(wasm_i16x8_add(p0, p1));
    return wasm_i32x4_add(wasm_i32x4_extadd_pairwise_i16x8(p0), wasm_i32x4_extadd_pairwise_i16x8(p1));
}

/* ROWS rows (row_bytes apart) against one token, the same bits as dot_block32_wasm per row. Sharing
 * the activations' loads and the loop's bookkeeping across rows is what the IC's count rewards: every
 * local.get, address add and branch costs as much as a SIMD multiply. `wtype` is a constant at each
 * call, so each type gets its own loop. */
/* The f16 at offset `off` of four blocks, as f32 lanes (exact for finite values, as half_to_f32) */
static inline __attribute__((always_inline)) v128_t halves4_wasm(const uint8_t *const p[ROWS], int off) {
    v128_t h = wasm_i32x4_make((int16_t)le16_at(p[0] + off), (int16_t)le16_at(p[1] + off),
                               (int16_t)le16_at(p[2] + off), (int16_t)le16_at(p[3] + off));
    v128_t bits = wasm_v128_and(wasm_i32x4_shl(h, 13), wasm_i32x4_splat((int32_t)0x8FFFE000));
    return wasm_f32x4_mul(bits, wasm_f32x4_splat(0x1p112f));
}

static inline __attribute__((always_inline)) void rows_block32_wasm(const int wtype, const uint8_t *w, size_t row_bytes,
                                                                    int n, Act a, float *out) {
    const v128_t low4 = wasm_i8x16_splat(15), eight = wasm_i8x16_splat(8);
    const int bytes = wtype == ICL_Q8_0 ? 34 : wtype == ICL_Q4_0 ? 18 : 20;
    const int qs = wtype == ICL_Q8_0 ? 2 : wtype == ICL_Q4_0 ? 2 : 4;
    v128_t acc[ROWS];
    v128_t accm = wasm_f32x4_splat(0.0f); /* Q4_1's sum of m * s, row r in lane r */
    const uint8_t *p[ROWS]; /* one pointer per row, stepped a block at a time: loads then take constant offsets */
    UNROLL for (int r = 0; r < ROWS; r++) acc[r] = wasm_f32x4_splat(0.0f), p[r] = w + r * row_bytes;
    const int8_t *x = a.q;
    const float *xd = a.d, *xs = a.s;
    for (const int8_t *end = x + n; x < end; x += QK, xd++, xs++) {
        v128_t x0 = wasm_v128_load(x), x1 = wasm_v128_load(x + 16);
        /* the four rows' scales f32(d) * xd at once; each row takes its lane (a constant: four copies) */
        v128_t scales = wasm_f32x4_mul(halves4_wasm(p, 0), wasm_f32x4_splat(*xd));
#define BLOCK32_ROW(r)                                                                                              \
    do {                                                                                                            \
        v128_t lanes;                                                                                               \
        if (wtype == ICL_Q8_0) {                                                                                    \
            lanes = lanes_x(wasm_v128_load(p[r] + qs), wasm_v128_load(p[r] + qs + 16), x0, x1, 0);                  \
        } else {                                                                                                    \
            v128_t q = wasm_v128_load(p[r] + qs);                                                                   \
            v128_t lo = wasm_v128_and(q, low4), hi = wasm_u8x16_shr(q, 4);                                          \
            if (wtype == ICL_Q4_0) lo = wasm_i8x16_sub(lo, eight), hi = wasm_i8x16_sub(hi, eight);                  \
            lanes = lanes_x(lo, hi, x0, x1, 1);                                                                     \
        }                                                                                                           \
        acc[r] = add_scaled(acc[r], lanes, wasm_f32x4_extract_lane(scales, r));                                     \
    } while (0)
        BLOCK32_ROW(0);
        BLOCK32_ROW(1);
        BLOCK32_ROW(2);
        BLOCK32_ROW(3);
#undef BLOCK32_ROW
        if (wtype == ICL_Q4_1) accm = wasm_f32x4_add(accm, wasm_f32x4_mul(halves4_wasm(p, 2), wasm_f32x4_splat(*xs)));
        UNROLL for (int r = 0; r < ROWS; r++) p[r] += bytes;
    }
    float mins[ROWS] = {wasm_f32x4_extract_lane(accm, 0), wasm_f32x4_extract_lane(accm, 1),
                        wasm_f32x4_extract_lane(accm, 2), wasm_f32x4_extract_lane(accm, 3)};
    UNROLL for (int r = 0; r < ROWS; r++) out[r] = sum_f32x4(acc[r]) + mins[r];
}

/* 32 unsigned weights < 32 (as int8) against 32 int8 activations: their 8 i16 partial sums (each
 * of 4 products: |4 * 31 * 127| < 2^15) */
static inline v128_t dot_u5x32_i16(v128_t lo, v128_t hi, const int8_t *x) {
    v128_t x0 = wasm_v128_load(x), x1 = wasm_v128_load(x + 16);
    v128_t p0 = wasm_i16x8_add(wasm_i16x8_extmul_low_i8x16(lo, x0), wasm_i16x8_extmul_high_i8x16(lo, x0));
    v128_t p1 = wasm_i16x8_add(wasm_i16x8_extmul_low_i8x16(hi, x1), wasm_i16x8_extmul_high_i8x16(hi, x1));
    return wasm_i16x8_add(p0, p1);
}

static float dot_k_wasm(int wtype, const uint8_t *w, int n, Act a) {
    const v128_t low4 = wasm_i8x16_splat(15);
    float acc[4] = {0, 0, 0, 0};
    int nb = n / QK_K;
    for (int b = 0; b < nb; b++) {
        const int8_t *x = a.q + QK_K * b;
        int sumi, summs = 0;
        if (wtype == ICL_Q6_K) {
            /* (q - 32) * x summed per 16 elements (one scale each), then scaled by a dot */
            const uint8_t *blk = w + 210 * b;
            const int8_t *scales = (const int8_t *)(blk + 192);
            const v128_t m32 = wasm_i8x16_splat(32), three = wasm_i8x16_splat(3);
            v128_t total = wasm_i32x4_splat(0);
            for (int h = 0; h < 2; h++) {
                const uint8_t *ql = blk + 64 * h, *qh = blk + 128 + 32 * h;
                const int8_t *xh = x + 128 * h;
                const int8_t *sh = scales + 8 * h;
                for (int half = 0; half < 2; half++) { /* l in [16 half, 16 half + 16) */
                    v128_t l0 = wasm_v128_load(ql + 16 * half), l1 = wasm_v128_load(ql + 32 + 16 * half);
                    v128_t hb = wasm_v128_load(qh + 16 * half);
                    v128_t v[4] = {
                        wasm_v128_or(wasm_v128_and(l0, low4), wasm_i8x16_shl(wasm_v128_and(hb, three), 4)),
                        wasm_v128_or(wasm_v128_and(l1, low4), wasm_i8x16_shl(wasm_v128_and(wasm_u8x16_shr(hb, 2), three), 4)),
                        wasm_v128_or(wasm_u8x16_shr(l0, 4), wasm_i8x16_shl(wasm_v128_and(wasm_u8x16_shr(hb, 4), three), 4)),
                        wasm_v128_or(wasm_u8x16_shr(l1, 4), wasm_i8x16_shl(wasm_u8x16_shr(hb, 6), 4)),
                    };
                    /* element 32t + 16 half + i has scale index 2t + half: four 16-sums, scaled by one dot */
                    v128_t sums16[4];
                    for (int t = 0; t < 4; t++) {
                        v128_t q = wasm_i8x16_sub(v[t], m32);
                        v128_t xv = wasm_v128_load(xh + 32 * t + 16 * half);
                        v128_t p = wasm_i16x8_add(wasm_i16x8_extmul_low_i8x16(q, xv), wasm_i16x8_extmul_high_i8x16(q, xv));
                        sums16[t] = wasm_i32x4_extadd_pairwise_i16x8(p);
                    }
                    for (int t = 0; t < 4; t++)
                        total = wasm_i32x4_add(total, wasm_i32x4_mul(sums16[t], wasm_i32x4_splat(sh[2 * t + half])));
                }
            }
            sumi = hsum_i32x4(total);
            acc[b % 4] += (half_at(blk + 208) * a.d[b]) * (float)sumi;
            continue;
        }
        const uint8_t *blk = w + (wtype == ICL_Q5_K ? 176 : 144) * b;
        int sc[8], mn[8];
        scale_min_k4(blk + 4, sc, mn);
        const uint8_t *qs = blk + (wtype == ICL_Q5_K ? 48 : 16);
        /* i16 lanes k of sub-block j: the sum of its 4 products; the dot with [sc_j, sc_j+1]
         * interleaved applies the scales */
        v128_t total = wasm_i32x4_splat(0);
        v128_t qh0 = wasm_i32x4_splat(0), qh1 = qh0;
        if (wtype == ICL_Q5_K) qh0 = wasm_v128_load(blk + 16), qh1 = wasm_v128_load(blk + 32);
        const v128_t one = wasm_i8x16_splat(1);
        for (int c = 0; c < 4; c++) {
            v128_t q0 = wasm_v128_load(qs + 32 * c), q1 = wasm_v128_load(qs + 32 * c + 16);
            v128_t lo0 = wasm_v128_and(q0, low4), lo1 = wasm_v128_and(q1, low4);
            v128_t hi0 = wasm_u8x16_shr(q0, 4), hi1 = wasm_u8x16_shr(q1, 4);
            if (wtype == ICL_Q5_K) {
                lo0 = wasm_v128_or(lo0, wasm_i8x16_shl(wasm_v128_and(wasm_u8x16_shr(qh0, 2 * c), one), 4));
                lo1 = wasm_v128_or(lo1, wasm_i8x16_shl(wasm_v128_and(wasm_u8x16_shr(qh1, 2 * c), one), 4));
                hi0 = wasm_v128_or(hi0, wasm_i8x16_shl(wasm_v128_and(wasm_u8x16_shr(qh0, 2 * c + 1), one), 4));
                hi1 = wasm_v128_or(hi1, wasm_i8x16_shl(wasm_v128_and(wasm_u8x16_shr(qh1, 2 * c + 1), one), 4));
            }
            v128_t s_lo = dot_u5x32_i16(lo0, lo1, x + 64 * c);
            v128_t s_hi = dot_u5x32_i16(hi0, hi1, x + 64 * c + 32);
            total = wasm_i32x4_add(total, wasm_i32x4_dot_i16x8(s_lo, wasm_i16x8_splat((int16_t)sc[2 * c])));
            total = wasm_i32x4_add(total, wasm_i32x4_dot_i16x8(s_hi, wasm_i16x8_splat((int16_t)sc[2 * c + 1])));
        }
        sumi = hsum_i32x4(total);
        const int16_t *bs = a.bsums + 16 * b;
        for (int j = 0; j < 8; j++) summs += mn[j] * (bs[2 * j] + bs[2 * j + 1]);
        acc[b % 4] += (half_at(blk) * a.d[b]) * (float)sumi;
        acc[b % 4] -= (half_at(blk + 2) * a.d[b]) * (float)summs;
    }
    return sum_lanes(acc);
}

/* ROWS rows of Q4_K or Q5_K (`five`) against one token, the same bits as dot_k_wasm per row. Shared
 * across the rows: the activations' loads and Q8_K's pair sums of bsums (for the mins). Per row, the
 * 12 bytes of 6-bit scales and mins are unpacked four at a time in 32-bit words into one vector of
 * eight i16 scales and one of eight i16 mins; the mins' term is then one i32x4.dot_i16x8_s. */
static inline __attribute__((always_inline)) void rows_k4_wasm(const int five, const uint8_t *w, size_t row_bytes,
                                                               int n, Act a, float *out) {
    const int bytes = five ? 176 : 144, qoff = five ? 48 : 16;
    const v128_t low4 = wasm_i8x16_splat(15), one = wasm_i8x16_splat(1);
    /* acc[k]: lane r is row r's kernels.h accumulator k (super-block b adds to k = b % 4) */
    v128_t acc[4] = {wasm_f32x4_splat(0.0f), wasm_f32x4_splat(0.0f), wasm_f32x4_splat(0.0f), wasm_f32x4_splat(0.0f)};
    int sumi[ROWS], summs[ROWS];
    const uint8_t *p[ROWS]; /* one pointer per row, stepped a super-block at a time */
    UNROLL for (int r = 0; r < ROWS; r++) p[r] = w + r * row_bytes;
    for (int b = 0; b < n / QK_K; b++) {
        const int8_t *x = a.q + QK_K * b;
        const int16_t *bs = a.bsums + 16 * b;
        /* the eight pair sums bsums[2j] + bsums[2j+1] (|each| <= 32 * 127: they fit i16) */
        v128_t pairs = wasm_i16x8_narrow_i32x4(wasm_i32x4_extadd_pairwise_i16x8(wasm_v128_load(bs)),
                                               wasm_i32x4_extadd_pairwise_i16x8(wasm_v128_load(bs + 8)));
        float xd = a.d[b];
        v128_t x16[32]; /* the token's 256 activations widened to i16, shared by the rows */
        UNROLL for (int k = 0; k < 16; k++) {
            v128_t xv = wasm_v128_load(x + 16 * k);
            x16[2 * k] = wasm_i16x8_extend_low_i8x16(xv), x16[2 * k + 1] = wasm_i16x8_extend_high_i8x16(xv);
        }
        UNROLL for (int r = 0; r < ROWS; r++) {
            const uint8_t *blk = p[r];
            uint32_t s0 = le32_at(blk + 4), s1 = le32_at(blk + 8), s2 = le32_at(blk + 12);
            uint32_t sc_lo = s0 & 0x3F3F3F3Fu, mn_lo = s1 & 0x3F3F3F3Fu;
            uint32_t sc_hi = (s2 & 0x0F0F0F0Fu) | ((s0 >> 2) & 0x30303030u);
            uint32_t mn_hi = ((s2 >> 4) & 0x0F0F0F0Fu) | ((s1 >> 2) & 0x30303030u);
            v128_t packed = wasm_u32x4_make(sc_lo, sc_hi, mn_lo, mn_hi);
            v128_t sc = wasm_u16x8_extend_low_u8x16(packed), mn = wasm_u16x8_extend_high_u8x16(packed);
            const uint8_t *qs = blk + qoff;
            v128_t qh0 = wasm_i32x4_splat(0), qh1 = qh0;
            if (five) qh0 = wasm_v128_load(blk + 16), qh1 = wasm_v128_load(blk + 32);
            v128_t total = wasm_i32x4_splat(0);
            /* sub-blocks 2c and 2c + 1 (the lane index of a scale must be a constant: four copies). The
             * weights are widened to i16 and dotted with the token's widened activations: LLVM turns
             * extmul of values it knows to be 0..31 into shuffles and i16 multiplies, dearer here. */
#define K4_HALF(q, k) \
    wasm_i32x4_add(wasm_i32x4_dot_i16x8(wasm_u16x8_extend_low_u8x16(q), x16[k]), \
                   wasm_i32x4_dot_i16x8(wasm_u16x8_extend_high_u8x16(q), x16[(k) + 1]))
#define K4_PAIR(c)                                                                                                   \
    do {                                                                                                             \
        v128_t q0 = wasm_v128_load(qs + 32 * (c)), q1 = wasm_v128_load(qs + 32 * (c) + 16);                           \
        v128_t lo0 = wasm_v128_and(q0, low4), lo1 = wasm_v128_and(q1, low4);                                         \
        v128_t hi0 = wasm_u8x16_shr(q0, 4), hi1 = wasm_u8x16_shr(q1, 4);                                             \
        if (five) {                                                                                                  \
            lo0 = wasm_v128_or(lo0, wasm_i8x16_shl(wasm_v128_and(wasm_u8x16_shr(qh0, 2 * (c)), one), 4));            \
            lo1 = wasm_v128_or(lo1, wasm_i8x16_shl(wasm_v128_and(wasm_u8x16_shr(qh1, 2 * (c)), one), 4));            \
            hi0 = wasm_v128_or(hi0, wasm_i8x16_shl(wasm_v128_and(wasm_u8x16_shr(qh0, 2 * (c) + 1), one), 4));        \
            hi1 = wasm_v128_or(hi1, wasm_i8x16_shl(wasm_v128_and(wasm_u8x16_shr(qh1, 2 * (c) + 1), one), 4));        \
        }                                                                                                            \
        v128_t d_lo = wasm_i32x4_add(K4_HALF(lo0, 8 * (c)), K4_HALF(lo1, 8 * (c) + 2));                             \
        v128_t d_hi = wasm_i32x4_add(K4_HALF(hi0, 8 * (c) + 4), K4_HALF(hi1, 8 * (c) + 6));                         \
        total = wasm_i32x4_add(total, wasm_i32x4_mul(d_lo, wasm_i32x4_splat(wasm_u16x8_extract_lane(sc, 2 * (c))))); \
        total = wasm_i32x4_add(total, wasm_i32x4_mul(d_hi, wasm_i32x4_splat(wasm_u16x8_extract_lane(sc, 2 * (c) + 1)))); \
    } while (0)
            K4_PAIR(0);
            K4_PAIR(1);
            K4_PAIR(2);
            K4_PAIR(3);
#undef K4_PAIR
#undef K4_HALF
            sumi[r] = hsum_i32x4(total), summs[r] = hsum_i32x4(wasm_i32x4_dot_i16x8(mn, pairs));
        }
        /* the four rows' float steps at once: the same operations, lane by lane */
        v128_t xdv = wasm_f32x4_splat(xd);
        v128_t sumis = wasm_f32x4_convert_i32x4(wasm_i32x4_make(sumi[0], sumi[1], sumi[2], sumi[3]));
        v128_t summss = wasm_f32x4_convert_i32x4(wasm_i32x4_make(summs[0], summs[1], summs[2], summs[3]));
        acc[b % 4] = wasm_f32x4_add(acc[b % 4], wasm_f32x4_mul(wasm_f32x4_mul(halves4_wasm(p, 0), xdv), sumis));
        acc[b % 4] = wasm_f32x4_sub(acc[b % 4], wasm_f32x4_mul(wasm_f32x4_mul(halves4_wasm(p, 2), xdv), summss));
        UNROLL for (int r = 0; r < ROWS; r++) p[r] += bytes;
    }
    v128_t total = wasm_f32x4_add(wasm_f32x4_add(acc[0], acc[1]), wasm_f32x4_add(acc[2], acc[3]));
    wasm_v128_store(out, total);
}

/* ROWS rows of Q6_K against one token, the same bits as dot_k_wasm per row: each 16 elements' products
 * (q - 32) * x summed in i16 pairs (|2 * 32 * 127| < 2^15) and scaled by one i32x4.dot_i16x8_s with
 * their int8 scale; the activations' loads are shared across the rows. */
static inline __attribute__((always_inline)) void rows_q6_k_wasm(const uint8_t *w, size_t row_bytes, int n, Act a,
                                                                 float *out) {
    const v128_t low4 = wasm_i8x16_splat(15), m30 = wasm_i8x16_splat(0x30), m32 = wasm_i8x16_splat(32);
    /* acc[k]: lane r is row r's kernels.h accumulator k (super-block b adds to k = b % 4) */
    v128_t acc[4] = {wasm_f32x4_splat(0.0f), wasm_f32x4_splat(0.0f), wasm_f32x4_splat(0.0f), wasm_f32x4_splat(0.0f)};
    int sumi[ROWS];
    const uint8_t *p[ROWS]; /* one pointer per row, stepped a super-block at a time */
    UNROLL for (int r = 0; r < ROWS; r++) p[r] = w + r * row_bytes;
    for (int b = 0; b < n / QK_K; b++) {
        const int8_t *x = a.q + QK_K * b;
        float xd = a.d[b];
        UNROLL for (int r = 0; r < ROWS; r++) {
            const uint8_t *blk = p[r];
            v128_t scales = wasm_v128_load(blk + 192);
            v128_t sc[2] = {wasm_i16x8_extend_low_i8x16(scales), wasm_i16x8_extend_high_i8x16(scales)};
            v128_t total = wasm_i32x4_splat(0);
            /* elements 128h + 32t + 16half + i (i < 16) have scale 8h + 2t + half */
#define Q6_GROUP(v, t, h, half)                                                                                     \
    do {                                                                                                            \
        v128_t xv = wasm_v128_load(x + 128 * (h) + 32 * (t) + 16 * (half));                                         \
        v128_t q = wasm_i8x16_sub(v, m32);                                                                          \
        v128_t prod = wasm_i16x8_add(wasm_i16x8_extmul_low_i8x16(q, xv), wasm_i16x8_extmul_high_i8x16(q, xv));     \
        total = wasm_i32x4_add(total, wasm_i32x4_dot_i16x8(prod, wasm_i16x8_splat(wasm_i16x8_extract_lane(sc[h], 2 * (t) + (half))))); \
    } while (0)
#define Q6_QUARTER(h, half)                                                                                         \
    do {                                                                                                            \
        const uint8_t *ql = blk + 64 * (h) + 16 * (half), *qh = blk + 128 + 32 * (h) + 16 * (half);              \
        v128_t l0 = wasm_v128_load(ql), l1 = wasm_v128_load(ql + 32), hb = wasm_v128_load(qh);                      \
        /* bits 2t..2t+1 of hb moved to bits 4..5: shifts of 16-bit lanes (cost 2, an i8x16 shift costs 3);   \
         * the mask drops what crosses from the neighbouring byte */                                             \
        Q6_GROUP(wasm_v128_or(wasm_v128_and(l0, low4), wasm_v128_and(wasm_i16x8_shl(hb, 4), m30)), 0, h, half);    \
        Q6_GROUP(wasm_v128_or(wasm_v128_and(l1, low4), wasm_v128_and(wasm_i16x8_shl(hb, 2), m30)), 1, h, half);    \
        Q6_GROUP(wasm_v128_or(wasm_u8x16_shr(l0, 4), wasm_v128_and(hb, m30)), 2, h, half);                         \
        Q6_GROUP(wasm_v128_or(wasm_u8x16_shr(l1, 4), wasm_v128_and(wasm_u16x8_shr(hb, 2), m30)), 3, h, half);      \
    } while (0)
            Q6_QUARTER(0, 0);
            Q6_QUARTER(0, 1);
            Q6_QUARTER(1, 0);
            Q6_QUARTER(1, 1);
#undef Q6_QUARTER
#undef Q6_GROUP
            sumi[r] = hsum_i32x4(total);
        }
        v128_t sumis = wasm_f32x4_convert_i32x4(wasm_i32x4_make(sumi[0], sumi[1], sumi[2], sumi[3]));
        acc[b % 4] = wasm_f32x4_add(acc[b % 4],
                                    wasm_f32x4_mul(wasm_f32x4_mul(halves4_wasm(p, 208), wasm_f32x4_splat(xd)), sumis));
        UNROLL for (int r = 0; r < ROWS; r++) p[r] += 210;
    }
    wasm_v128_store(out, wasm_f32x4_add(wasm_f32x4_add(acc[0], acc[1]), wasm_f32x4_add(acc[2], acc[3])));
}

/* Rows r0..r1 of one token in groups of ROWS where the type has a ROWS kernel; 0 if it has none */
static int rows_wasm(int wtype, const uint8_t *w, size_t row_bytes, int n, Act a, float *y, int r0, int r1) {
    int r = r0;
    for (; r + ROWS <= r1; r += ROWS) {
        const uint8_t *rows = w + (size_t)r * row_bytes;
        switch (wtype) {
        case ICL_Q8_0: rows_block32_wasm(ICL_Q8_0, rows, row_bytes, n, a, y + r); break;
        case ICL_Q4_0: rows_block32_wasm(ICL_Q4_0, rows, row_bytes, n, a, y + r); break;
        case ICL_Q4_1: rows_block32_wasm(ICL_Q4_1, rows, row_bytes, n, a, y + r); break;
        case ICL_Q4_K: rows_k4_wasm(0, rows, row_bytes, n, a, y + r); break;
        case ICL_Q5_K: rows_k4_wasm(1, rows, row_bytes, n, a, y + r); break;
        case ICL_Q6_K: rows_q6_k_wasm(rows, row_bytes, n, a, y + r); break;
        default: return r;
        }
    }
    return r;
}

/* f16 lanes sign-extended to i32, to f32: exact for finite values (as half_to_f32) */
static inline v128_t f16x4_to_f32(v128_t h32) {
    v128_t bits = wasm_v128_and(wasm_i32x4_shl(h32, 13), wasm_i32x4_splat((int32_t)0x8FFFE000));
    return wasm_f32x4_mul(bits, wasm_f32x4_splat(0x1p112f));
}

/* One loop per type, 16 elements an iteration with one accumulator (the order of kernels.h): the
 * IC counts every local.get and branch, so a type test inside the loop measured 2.3x the cost. */
static float dot_f32_wasm(const uint8_t *w, int n, Act a) {
    v128_t acc = wasm_f32x4_splat(0.0f);
    const float *x = a.f;
    int i = 0;
    for (; i + 16 <= n; i += 16, w += 64, x += 16) {
        acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_v128_load(w), wasm_v128_load(x)));
        acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_v128_load(w + 16), wasm_v128_load(x + 4)));
        acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_v128_load(w + 32), wasm_v128_load(x + 8)));
        acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_v128_load(w + 48), wasm_v128_load(x + 12)));
    }
    for (; i < n; i += 4, w += 16, x += 4) acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_v128_load(w), wasm_v128_load(x)));
    return sum_f32x4(acc);
}

static float dot_f16_wasm(const uint8_t *w, int n, Act a) {
    v128_t acc = wasm_f32x4_splat(0.0f);
    const float *x = a.f;
    int i = 0;
    for (; i + 16 <= n; i += 16, w += 32, x += 16) {
        acc = wasm_f32x4_add(acc, wasm_f32x4_mul(f16x4_to_f32(wasm_i32x4_load16x4(w)), wasm_v128_load(x)));
        acc = wasm_f32x4_add(acc, wasm_f32x4_mul(f16x4_to_f32(wasm_i32x4_load16x4(w + 8)), wasm_v128_load(x + 4)));
        acc = wasm_f32x4_add(acc, wasm_f32x4_mul(f16x4_to_f32(wasm_i32x4_load16x4(w + 16)), wasm_v128_load(x + 8)));
        acc = wasm_f32x4_add(acc, wasm_f32x4_mul(f16x4_to_f32(wasm_i32x4_load16x4(w + 24)), wasm_v128_load(x + 12)));
    }
    for (; i < n; i += 4, w += 8, x += 4)
        acc = wasm_f32x4_add(acc, wasm_f32x4_mul(f16x4_to_f32(wasm_i32x4_load16x4(w)), wasm_v128_load(x)));
    return sum_f32x4(acc);
}

static float dot_simd(int wtype, const uint8_t *w, int n, Act a) {
    switch (wtype) {
    case ICL_Q8_0: case ICL_Q4_0: case ICL_Q4_1: return dot_block32_wasm(wtype, w, n, a);
    case ICL_Q4_K: case ICL_Q5_K: case ICL_Q6_K: return dot_k_wasm(wtype, w, n, a);
    case ICL_F32: return n % 4 ? dot_row_portable(wtype, w, n, a) : dot_f32_wasm(w, n, a);
    case ICL_F16: return n % 4 ? dot_row_portable(wtype, w, n, a) : dot_f16_wasm(w, n, a);
    default: return dot_row_portable(wtype, w, n, a);
    }
}
#endif /* ICL_WASM */

/* ---------------------------------------------------------------------------------------------- */
/* x86 AVX2 (the native build's fast path; same bits as the portable code)                        */

#ifdef ICL_X86
/* 32 int8 weights w (as bytes, elements 0..31) against 32 int8 activations: kernels.h's four i32
 * lane sums (lane l: elements i with (i % 8) / 2 == l). maddubs pairs elements (2k, 2k+1) into i16
 * lane k (|w| <= 128, |x| <= 127: no saturation); reordering the pairs to k = 0,4,1,5,2,6,3,7 per
 * 128 bits lets madd add pairs with the same k % 4, and the two halves add to the four lanes.
 * `unsigned_w`: w is 0..31 and multiplies as is (no sign trick). */
ICL_AVX2 static inline __m128i lanes_avx2(__m256i w, __m256i x, int unsigned_w) {
    __m256i p = unsigned_w ? _mm256_maddubs_epi16(w, x)
                           : _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    const __m256i order = _mm256_setr_epi8(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15,
                                           0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15);
    __m256i sums = _mm256_madd_epi16(_mm256_shuffle_epi8(p, order), _mm256_set1_epi16(1));
    return _mm_add_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
}

ICL_AVX2 static inline float half_avx2(const uint8_t *p) {
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(le16_at(p))));
}

/* 16 bytes of nibbles -> 32 bytes 0..15 in element order (low nibbles are elements 0..15) */
ICL_AVX2 static inline __m256i nibbles_avx2(const uint8_t *qs) {
    __m128i q = _mm_loadu_si128((const __m128i *)qs), mask = _mm_set1_epi8(15);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), mask), _mm_and_si128(q, mask));
}

ICL_AVX2 static float sum_lanes_avx2(__m128 acc) {
    float lanes[4];
    _mm_storeu_ps(lanes, acc);
    return sum_lanes(lanes);
}

/* One 32-block's weights as 32 bytes in element order (Q4_0's centred, Q4_1's as 0..15) */
ICL_AVX2 static inline __attribute__((always_inline)) __m256i block32_weights_avx2(const int wtype, const uint8_t *blk) {
    if (wtype == ICL_Q8_0) return _mm256_loadu_si256((const __m256i *)(blk + 2));
    if (wtype == ICL_Q4_0) return _mm256_sub_epi8(nibbles_avx2(blk + 2), _mm256_set1_epi8(8));
    return nibbles_avx2(blk + 4);
}

/* Two blocks a step: their lane sums side by side in one vector, converted and scaled together, then
 * added to the four lanes block after block (the order of kernels.h). `wtype` is a constant at each
 * call: one loop per type. */
ICL_AVX2 static inline __attribute__((always_inline)) float block32_avx2(const int wtype, const uint8_t *w, int n,
                                                                         Act a) {
    const int bytes = wtype == ICL_Q8_0 ? 34 : wtype == ICL_Q4_0 ? 18 : 20, nb = n / QK;
    const int unsigned_w = wtype == ICL_Q4_1;
    __m128 acc = _mm_setzero_ps();
    float accm = 0.0f;
    const int8_t *x = a.q;
    int b = 0;
    for (; b + 2 <= nb; b += 2, w += 2 * bytes, x += 2 * QK) {
        __m128i l0 = lanes_avx2(block32_weights_avx2(wtype, w), _mm256_loadu_si256((const __m256i *)x), unsigned_w);
        __m128i l1 = lanes_avx2(block32_weights_avx2(wtype, w + bytes), _mm256_loadu_si256((const __m256i *)(x + QK)),
                                unsigned_w);
        __m256 scale = _mm256_set_m128(_mm_set1_ps(half_avx2(w + bytes) * a.d[b + 1]), _mm_set1_ps(half_avx2(w) * a.d[b]));
        __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_set_m128i(l1, l0)), scale);
        acc = _mm_add_ps(acc, _mm256_castps256_ps128(v));
        acc = _mm_add_ps(acc, _mm256_extractf128_ps(v, 1));
        if (wtype == ICL_Q4_1) {
            accm += half_avx2(w + 2) * a.s[b];
            accm += half_avx2(w + bytes + 2) * a.s[b + 1];
        }
    }
    if (b < nb) {
        __m128i l0 = lanes_avx2(block32_weights_avx2(wtype, w), _mm256_loadu_si256((const __m256i *)x), unsigned_w);
        acc = _mm_add_ps(acc, _mm_mul_ps(_mm_cvtepi32_ps(l0), _mm_set1_ps(half_avx2(w) * a.d[b])));
        if (wtype == ICL_Q4_1) accm += half_avx2(w + 2) * a.s[b];
    }
    return sum_lanes_avx2(acc) + accm;
}

ICL_AVX2 static float dot_block32_avx2(int wtype, const uint8_t *w, int n, Act a) {
    switch (wtype) {
    case ICL_Q8_0: return block32_avx2(ICL_Q8_0, w, n, a);
    case ICL_Q4_0: return block32_avx2(ICL_Q4_0, w, n, a);
    default: return block32_avx2(ICL_Q4_1, w, n, a);
    }
}

/* Products of f16 or bf16 values are exact in f32, so no FMA question arises; f32 uses mul + add. */
ICL_AVX2 static float dot_float_avx2(int wtype, const uint8_t *w, int n, Act a) {
    __m128 acc = _mm_setzero_ps();
    for (int i = 0; i < n; i += 4) {
        __m128 wv = wtype == ICL_F32 ? _mm_loadu_ps((const float *)(w + 4 * i))
                                     : _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(w + 2 * i)));
        acc = _mm_add_ps(acc, _mm_mul_ps(wv, _mm_loadu_ps(a.f + i)));
    }
    return sum_lanes_avx2(acc);
}

/* i32 lanes to their exact int sum */
ICL_AVX2 static inline int hsum_epi32_avx2(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* Q4_K/Q5_K and Q6_K: the super-block's exact integer sums (any order gives them), then the float
 * steps of kernels.h. maddubs multiplies the unsigned weights (0..63) by the int8 activations in
 * pairs (no saturation: 2 * 63 * 127 < 2^15); madd applies the scales. Q6_K's -32 comes off through
 * Q8_K's bsums: sum(sc * (q - 32) * x) = sum(sc * q * x) - 32 * sum(sc * bsum). */
ICL_AVX2 static float dot_k_avx2(int wtype, const uint8_t *w, int n, Act a) {
    const __m256i low4 = _mm256_set1_epi8(15);
    float acc[4] = {0, 0, 0, 0};
    for (int b = 0; b < n / QK_K; b++) {
        const int8_t *x = a.q + QK_K * b;
        const int16_t *bs = a.bsums + 16 * b;
        __m256i total = _mm256_setzero_si256();
        if (wtype == ICL_Q6_K) {
            const uint8_t *blk = w + 210 * b;
            const int8_t *scales = (const int8_t *)(blk + 192);
            const __m256i three = _mm256_set1_epi8(3);
            for (int h = 0; h < 2; h++) {
                __m256i l0 = _mm256_loadu_si256((const __m256i *)(blk + 64 * h));
                __m256i l1 = _mm256_loadu_si256((const __m256i *)(blk + 64 * h + 32));
                __m256i hb = _mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * h));
                __m256i q[4] = {
                    _mm256_or_si256(_mm256_and_si256(l0, low4), _mm256_slli_epi16(_mm256_and_si256(hb, three), 4)),
                    _mm256_or_si256(_mm256_and_si256(l1, low4),
                                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), three), 4)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4),
                                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), three), 4)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4),
                                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), three), 4)),
                };
                for (int t = 0; t < 4; t++) { /* elements 128h + 32t + (0..31): scales 8h + 2t and 8h + 2t + 1 */
                    __m256i p = _mm256_maddubs_epi16(q[t], _mm256_loadu_si256((const __m256i *)(x + 128 * h + 32 * t)));
                    __m256i sc = _mm256_set_m128i(_mm_set1_epi16(scales[8 * h + 2 * t + 1]), _mm_set1_epi16(scales[8 * h + 2 * t]));
                    total = _mm256_add_epi32(total, _mm256_madd_epi16(p, sc));
                }
            }
            int offset = 0;
            for (int j = 0; j < 16; j++) offset += scales[j] * bs[j];
            int sumi = hsum_epi32_avx2(total) - 32 * offset;
            acc[b % 4] += (half_at(blk + 208) * a.d[b]) * (float)sumi;
            continue;
        }
        int five = wtype == ICL_Q5_K;
        const uint8_t *blk = w + (five ? 176 : 144) * b;
        int sc[8], mn[8];
        scale_min_k4(blk + 4, sc, mn);
        const uint8_t *qs = blk + (five ? 48 : 16);
        __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(blk + 16)) : _mm256_setzero_si256();
        const __m256i one = _mm256_set1_epi8(1);
        for (int c = 0; c < 4; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
            __m256i lo = _mm256_and_si256(q, low4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
            if (five) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
            }
            __m256i p_lo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(x + 64 * c)));
            __m256i p_hi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(x + 64 * c + 32)));
            total = _mm256_add_epi32(total, _mm256_madd_epi16(p_lo, _mm256_set1_epi16((int16_t)sc[2 * c])));
            total = _mm256_add_epi32(total, _mm256_madd_epi16(p_hi, _mm256_set1_epi16((int16_t)sc[2 * c + 1])));
        }
        int summs = 0;
        for (int j = 0; j < 8; j++) summs += mn[j] * (bs[2 * j] + bs[2 * j + 1]);
        acc[b % 4] += (half_at(blk) * a.d[b]) * (float)hsum_epi32_avx2(total);
        acc[b % 4] -= (half_at(blk + 2) * a.d[b]) * (float)summs;
    }
    return sum_lanes(acc);
}

ICL_AVX2 __attribute__((unused)) static float dot_avx2(int wtype, const uint8_t *w, int n, Act a) {
    switch (wtype) {
    case ICL_Q8_0: case ICL_Q4_0: case ICL_Q4_1: return dot_block32_avx2(wtype, w, n, a);
    case ICL_F32: case ICL_F16: return n % 4 ? dot_row_portable(wtype, w, n, a) : dot_float_avx2(wtype, w, n, a);
    case ICL_Q4_K: case ICL_Q5_K: case ICL_Q6_K: return dot_k_avx2(wtype, w, n, a);
    default: return dot_row_portable(wtype, w, n, a);
    }
}
#endif /* ICL_X86 */

/* ---------------------------------------------------------------------------------------------- */
/* Rows                                                                                           */

typedef float (*dot_fn)(int wtype, const uint8_t *w, int n, Act a);

static void matmul_rows_with(dot_fn dot, int wtype, const void *w, int n, const void *xq, int n_tokens, float *y,
                             int ldy, int r0, int r1) {
    size_t row_bytes = icl_row_bytes(wtype, n), act_bytes = icl_act_row_bytes(wtype, n);
    if (row_bytes == 0) return;
    /* token by token, the rows inner: a decode's one token is then prepared once for all rows */
    for (int t = 0; t < n_tokens; t++) {
        Act a = act_view(wtype, (const uint8_t *)xq + (size_t)t * act_bytes, n);
        float *yt = y + (size_t)t * ldy;
        int r = r0;
#ifdef ICL_WASM
        r = rows_wasm(wtype, (const uint8_t *)w, row_bytes, n, a, yt, r0, r1); /* groups of ROWS rows first */
#endif
        for (; r < r1; r++) {
            const uint8_t *row = (const uint8_t *)w + (size_t)r * row_bytes;
#ifndef ICL_WASM
            /* Natively, the hardware prefetcher alone runs too little ahead of a decoding kernel: reading
             * SmolLM2-sized Q4_1 matrices from memory measured 4.3 GB/s on one thread without this, 8.6
             * with it. Prefetches never fault, so running past the last row is harmless. */
            for (size_t p = PREFETCH_BYTES; p < PREFETCH_BYTES + row_bytes; p += 64) __builtin_prefetch(row + p);
#endif
            yt[r] = dot(wtype, row, n, a);
        }
    }
}

void icl_matmul_rows(int wtype, const void *w, int n, const void *xq, int n_tokens, float *y, int ldy, int r0, int r1) {
#ifdef ICL_WASM
    matmul_rows_with(dot_simd, wtype, w, n, xq, n_tokens, y, ldy, r0, r1);
#else
    matmul_rows_with(dot_row_portable, wtype, w, n, xq, n_tokens, y, ldy, r0, r1);
#endif
}
