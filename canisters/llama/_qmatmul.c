/* _qmatmul: y = x @ W.T with W kept in GGUF's own block layout (raw tensor bytes, one row after
 * another). The products are canisters/kernels/kernels.c, included here: ggml's numerics (each
 * token's activations quantized to the weight type's vec_dot_type, integer dot products; see
 * kernels.h), the same bits as the wasm build and canisters/llama/act_quant.py. Types: F32, F16,
 * BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K; the others use the numpy path of
 * canisters/llama/weights.py. `dequantize` decodes rows to f32 for the BLAS path of larger batches.
 *
 * Why native code: decoding one token is a matrix-vector product per weight, so its speed is the
 * bandwidth of reading the weights. f32 BLAS reads 4 bytes per weight (SmolLM2-135M: 538 MB per
 * token, ~34 tok/s here); the GGUF bytes are 0.56 (Q4_1) to 1.06 (Q8_0) bytes per weight.
 *
 * `dequantize` is bit for bit equal to canisters/llama/quants.py (the same f32 operations in the same
 * order; this file is built with -ffp-contract=off so that no multiply-add is fused behind our back).
 *
 * CPU safety: the AVX2/FMA/F16C kernels carry a per-function target attribute and are called only
 * when __builtin_cpu_supports reports all three at import; everything else is portable C. Building
 * the whole file with -mavx2 would let the compiler use AVX2 in the portable fallback too, so the
 * flags are per function, not per file.
 *
 * Threads: output rows are split across n_threads threads (a persistent pool, see "Threads" below)
 * with the GIL released; products too small to pay for it run on the calling thread.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <time.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "_qmatmul reads GGUF's little-endian fields in place; elsewhere weights.py uses its numpy path"
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define QM_X86 1
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) inline
#endif

/* ggml type ids (gguf.constants.GGMLQuantizationType) */
enum {
    GT_F32 = 0, GT_F16 = 1, GT_Q4_0 = 2, GT_Q4_1 = 3, GT_Q5_0 = 6, GT_Q5_1 = 7, GT_Q8_0 = 8,
    GT_Q4_K = 12, GT_Q5_K = 13, GT_Q6_K = 14, GT_BF16 = 30,
};

#define MAX_THREADS 64

typedef struct Kernel Kernel;

typedef struct Job {
    const Kernel *kernel;
    const uint8_t *w;          /* n_rows rows of row_bytes */
    int64_t row_bytes, n_blocks, n_in, n_rows;
    const float *x;            /* (n_tok, n_in) */
    int64_t n_tok;
    const uint8_t *xq;         /* the n_tok rows of x prepared by icl_quantize_act */
    int simd;                  /* the AVX2 dot products (else the portable ones) */
    float *y;                  /* matmul: (n_tok, n_rows); dequantize: (n_rows, n_in) */
} Job;

typedef void (*rows_fn)(const Job *job, int64_t r0, int64_t r1);
typedef void (*decode_fn)(const uint8_t *src, int64_t n_blocks, float *out);

struct Kernel {
    int type;
    int block_size, type_size;
    decode_fn decode;          /* portable, bit-exact: n_blocks consecutive blocks -> f32 */
    rows_fn simd_dequantize;
};

static int simd_available;

#include "../kernels/kernels.c"

/* ---------------------------------------------------------------------------------------------- */
/* Portable decoders (bit for bit as quants.py)                                                   */

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else {
        float value = (float)man * 5.9604644775390625e-8f; /* man * 2^-24, exact */
        memcpy(&bits, &value, 4);
        bits |= sign;
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

static float f16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return f16_to_f32(h);
}

static void decode_f32(const uint8_t *src, int64_t n, float *out) { memcpy(out, src, (size_t)n * 4); }

static void decode_f16(const uint8_t *src, int64_t n, float *out) {
    for (int64_t i = 0; i < n; i++) out[i] = f16_at(src + 2 * i);
}

static void decode_bf16(const uint8_t *src, int64_t n, float *out) {
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        uint32_t bits = (uint32_t)h << 16;
        memcpy(out + i, &bits, 4);
    }
}

static void decode_q8_0(const uint8_t *src, int64_t n, float *out) {
    for (int64_t b = 0; b < n; b++, src += 34, out += 32) {
        float d = f16_at(src);
        for (int i = 0; i < 32; i++) out[i] = (float)(int8_t)src[2 + i] * d;
    }
}

static void decode_q4_0(const uint8_t *src, int64_t n, float *out) {
    for (int64_t b = 0; b < n; b++, src += 18, out += 32) {
        float d = f16_at(src);
        for (int i = 0; i < 16; i++) {
            out[i] = (float)((src[2 + i] & 0x0F) - 8) * d;
            out[i + 16] = (float)((src[2 + i] >> 4) - 8) * d;
        }
    }
}

static void decode_q4_1(const uint8_t *src, int64_t n, float *out) {
    for (int64_t b = 0; b < n; b++, src += 20, out += 32) {
        float d = f16_at(src), m = f16_at(src + 2);
        for (int i = 0; i < 16; i++) {
            out[i] = (float)(src[4 + i] & 0x0F) * d + m;
            out[i + 16] = (float)(src[4 + i] >> 4) * d + m;
        }
    }
}

static uint32_t u32_at(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Q5_0 (d, qh, qs) and Q5_1 (d, m, qh, qs): Q4's nibbles plus bit j of the u32 qh for element j */
static void decode_q5_0(const uint8_t *src, int64_t n, float *out) {
    for (int64_t b = 0; b < n; b++, src += 22, out += 32) {
        float d = f16_at(src);
        uint32_t qh = u32_at(src + 2);
        for (int i = 0; i < 16; i++) {
            int lo = (src[6 + i] & 0x0F) | (int)(((qh >> i) & 1) << 4);
            int hi = (src[6 + i] >> 4) | (int)(((qh >> (i + 16)) & 1) << 4);
            out[i] = (float)(lo - 16) * d;
            out[i + 16] = (float)(hi - 16) * d;
        }
    }
}

static void decode_q5_1(const uint8_t *src, int64_t n, float *out) {
    for (int64_t b = 0; b < n; b++, src += 24, out += 32) {
        float d = f16_at(src), m = f16_at(src + 2);
        uint32_t qh = u32_at(src + 4);
        for (int i = 0; i < 16; i++) {
            int lo = (src[8 + i] & 0x0F) | (int)(((qh >> i) & 1) << 4);
            int hi = (src[8 + i] >> 4) | (int)(((qh >> (i + 16)) & 1) << 4);
            out[i] = (float)lo * d + m;
            out[i + 16] = (float)hi * d + m;
        }
    }
}

static void decode_q4_k(const uint8_t *src, int64_t n, float *out) {
    for (int64_t b = 0; b < n; b++, src += 144, out += 256) {
        float d = f16_at(src), dmin = f16_at(src + 2);
        int sc[8], mn[8]; /* kernels.c's scale_min_k4 */
        scale_min_k4(src + 4, sc, mn);
        for (int c = 0; c < 4; c++) {
            const uint8_t *qs = src + 16 + 32 * c;
            float d_lo = d * (float)sc[2 * c], m_lo = dmin * (float)mn[2 * c];
            float d_hi = d * (float)sc[2 * c + 1], m_hi = dmin * (float)mn[2 * c + 1];
            for (int l = 0; l < 32; l++) {
                out[64 * c + l] = d_lo * (float)(qs[l] & 0x0F) - m_lo;
                out[64 * c + 32 + l] = d_hi * (float)(qs[l] >> 4) - m_hi;
            }
        }
    }
}

/* Q5_K: Q4_K plus qh[32] at 16 (qs moves to 48): bit s of qh[l] is the fifth bit of element l of
 * sub-block s */
static void decode_q5_k(const uint8_t *src, int64_t n, float *out) {
    for (int64_t b = 0; b < n; b++, src += 176, out += 256) {
        float d = f16_at(src), dmin = f16_at(src + 2);
        int sc[8], mn[8]; /* kernels.c's scale_min_k4 */
        scale_min_k4(src + 4, sc, mn);
        const uint8_t *qh = src + 16;
        for (int c = 0; c < 4; c++) {
            const uint8_t *qs = src + 48 + 32 * c;
            float d_lo = d * (float)sc[2 * c], m_lo = dmin * (float)mn[2 * c];
            float d_hi = d * (float)sc[2 * c + 1], m_hi = dmin * (float)mn[2 * c + 1];
            for (int l = 0; l < 32; l++) {
                int lo = (qs[l] & 0x0F) | (((qh[l] >> (2 * c)) & 1) << 4);
                int hi = (qs[l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4);
                out[64 * c + l] = d_lo * (float)lo - m_lo;
                out[64 * c + 32 + l] = d_hi * (float)hi - m_hi;
            }
        }
    }
}

static void decode_q6_k(const uint8_t *src, int64_t n, float *out) {
    for (int64_t b = 0; b < n; b++, src += 210, out += 256) {
        float d = f16_at(src + 208);
        const int8_t *scales = (const int8_t *)(src + 192);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = src + 64 * h, *qh = src + 128 + 32 * h;
            for (int l = 0; l < 32; l++) {
                int q[4] = {
                    (ql[l] & 0x0F) | ((qh[l] & 3) << 4),
                    (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4),
                    (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                    (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                };
                for (int t = 0; t < 4; t++) {
                    int e = 128 * h + 32 * t + l;
                    out[e] = (float)(q[t] - 32) * (d * (float)scales[e / 16]);
                }
            }
        }
    }
}



/* Rows r0..r1 of a matmul (kernels.c): every prepared token against each row */
static void matmul_rows(const Job *j, int64_t r0, int64_t r1) {
#ifdef ICL_X86
    dot_fn dot = j->simd ? dot_avx2 : dot_row_portable;
#else
    dot_fn dot = dot_row_portable;
#endif
    matmul_rows_with(dot, j->kernel->type, j->w, (int)j->n_in, j->xq, (int)j->n_tok, j->y, (int)j->n_rows, (int)r0,
                     (int)r1);
}

static void dequantize_portable(const Job *j, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) j->kernel->decode(j->w + r * j->row_bytes, j->n_blocks, j->y + r * j->n_in);
}

#ifdef QM_X86
/* ---------------------------------------------------------------------------------------------- */
/* AVX2 + FMA + F16C                                                                               */

/* The f16 at p as f32 lanes [value, 0, 0, 0]. Not _cvtsh_ss: gcc compiles it to a vpinsrw into the
 * previous call's register, a dependency from block to block that measured 1.6x slower. */
AVX2_INLINE static __m128 f16_vec_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _mm_cvtph_ps(_mm_cvtsi32_si128(h));
}

AVX2_INLINE static float f16c_at(const uint8_t *p) { return _mm_cvtss_f32(f16_vec_at(p)); }

/* 16 int8 -> two vectors of 8 f32 */
AVX2_INLINE static void i8x16_to_f32(__m128i v, __m256 *w) {
    w[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
    w[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(v, v)));
}

/* 8 bytes at p, each widened to a 32-bit lane (one vpmovzxbd from memory) */
AVX2_INLINE static __m256i u8x8_at(const uint8_t *p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)); }

/* 16 bytes of nibbles -> their 32 values 0..15 in GGUF's order (low nibbles are elements 0..15).
 * Widening bytes to lanes first and splitting nibbles there needs no shuffles besides the two loads,
 * measured ~1.3x faster than splitting 16 packed bytes and widening each half. */
AVX2_INLINE static void nibbles_to_f32(const uint8_t *qs, __m256 *w) {
    const __m256i mask = _mm256_set1_epi32(0x0F);
    __m256i a = u8x8_at(qs), b = u8x8_at(qs + 8);
    w[0] = _mm256_cvtepi32_ps(_mm256_and_si256(a, mask));
    w[1] = _mm256_cvtepi32_ps(_mm256_and_si256(b, mask));
    w[2] = _mm256_cvtepi32_ps(_mm256_srli_epi32(a, 4));
    w[3] = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
}





/* Q5_0/Q5_1: 16 bytes of nibbles plus the u32 of fifth bits at qh -> 32 values 0..31. Element 8k + i
 * gets 16 where bit 8k + i of qh is set: one broadcast, then and, compare, and, or per 8 elements. */
AVX2_INLINE static void q5_to_f32(const uint8_t *qs, const uint8_t *qh, __m256 *w) {
    const __m256i low = _mm256_set1_epi32(0x0F), sixteen = _mm256_set1_epi32(16);
    __m256i a = u8x8_at(qs), b = u8x8_at(qs + 8), bits = _mm256_set1_epi32((int)u32_at(qh));
    __m256i q[4] = {_mm256_and_si256(a, low), _mm256_and_si256(b, low), _mm256_srli_epi32(a, 4), _mm256_srli_epi32(b, 4)};
    for (int k = 0; k < 4; k++) {
        __m256i mask = _mm256_sllv_epi32(_mm256_set1_epi32(1), _mm256_setr_epi32(8 * k, 8 * k + 1, 8 * k + 2, 8 * k + 3,
                                                                               8 * k + 4, 8 * k + 5, 8 * k + 6, 8 * k + 7));
        __m256i set = _mm256_cmpeq_epi32(_mm256_and_si256(bits, mask), mask);
        w[k] = _mm256_cvtepi32_ps(_mm256_or_si256(q[k], _mm256_and_si256(set, sixteen)));
    }
}



AVX2_INLINE static void q8_0_to_f32(const uint8_t *qs, __m256 *w) {
    for (int k = 0; k < 4; k++)
        w[k] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(qs + 8 * k))));
}


/* Q4_K: 32 bytes of qs -> sub-block 2c (low nibbles, w[0..3]) and 2c+1 (high nibbles, w[4..7]) */
AVX2_INLINE static void q4_k_pair_to_f32(const uint8_t *qs, __m256 *w) {
    const __m256i mask = _mm256_set1_epi32(0x0F);
    for (int k = 0; k < 4; k++) {
        __m256i v = u8x8_at(qs + 8 * k);
        w[k] = _mm256_cvtepi32_ps(_mm256_and_si256(v, mask));
        w[k + 4] = _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4));
    }
}

/* Q5_K: like q4_k_pair_to_f32, plus bits 0 and 1 of high[k] (qh bytes widened to lanes, shifted right
 * by 2c for pair c) as the fifth bits of the low and high sub-block */
AVX2_INLINE static void q5_k_pair_to_f32(const uint8_t *qs, const __m256i *high, __m256 *w) {
    const __m256i mask = _mm256_set1_epi32(0x0F), one = _mm256_set1_epi32(1), two = _mm256_set1_epi32(2);
    for (int k = 0; k < 4; k++) {
        __m256i v = u8x8_at(qs + 8 * k);
        __m256i lo = _mm256_or_si256(_mm256_and_si256(v, mask), _mm256_slli_epi32(_mm256_and_si256(high[k], one), 4));
        __m256i hi = _mm256_or_si256(_mm256_srli_epi32(v, 4), _mm256_slli_epi32(_mm256_and_si256(high[k], two), 3));
        w[k] = _mm256_cvtepi32_ps(lo);
        w[k + 4] = _mm256_cvtepi32_ps(hi);
    }
}

/* The 32-element sub-blocks 2c and 2c+1 of a Q4_K (five = 0) or Q5_K (five = 1) super-block; `high`
 * holds Q5_K's qh bytes in lanes and is shifted for the next pair. */
AVX2_INLINE static void k4_pair_to_f32(const uint8_t *blk, int c, int five, __m256i *high, __m256 *w) {
    if (!five) {
        q4_k_pair_to_f32(blk + 16 + 32 * c, w);
        return;
    }
    q5_k_pair_to_f32(blk + 48 + 32 * c, high, w);
    for (int k = 0; k < 4; k++) high[k] = _mm256_srli_epi32(high[k], 2);
}




/* Q6_K: one 128-element half h, lanes l0..l0+15 of its 32 -> four 16-element sub-blocks q[t] (t = 0..3,
 * elements 128h + 32t + l0 ..), each as 2 vectors of 8, already minus 32 */
AVX2_INLINE static void q6_k_quarter_to_f32(const uint8_t *ql, const uint8_t *qh, __m256 *w) {
    const __m128i low4 = _mm_set1_epi8(0x0F), high2 = _mm_set1_epi8(0x30), bias = _mm_set1_epi8(32);
    __m128i a = _mm_loadu_si128((const __m128i *)ql), b = _mm_loadu_si128((const __m128i *)(ql + 32));
    __m128i h = _mm_loadu_si128((const __m128i *)qh);
    __m128i lows[4] = {
        _mm_and_si128(a, low4), _mm_and_si128(b, low4),
        _mm_and_si128(_mm_srli_epi16(a, 4), low4), _mm_and_si128(_mm_srli_epi16(b, 4), low4),
    };
    /* bits 2t..2t+1 of h moved to bits 4..5 (16-bit shifts: what crosses a byte is masked off) */
    __m128i highs[4] = {
        _mm_and_si128(_mm_slli_epi16(h, 4), high2), _mm_and_si128(_mm_slli_epi16(h, 2), high2),
        _mm_and_si128(h, high2), _mm_and_si128(_mm_srli_epi16(h, 2), high2),
    };
    for (int t = 0; t < 4; t++) i8x16_to_f32(_mm_sub_epi8(_mm_or_si128(lows[t], highs[t]), bias), w + 2 * t);
}





AVX2_INLINE static __m256 load8_f16(const uint8_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
AVX2_INLINE static __m256 load8_bf16(const uint8_t *p) {
    __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

/* SIMD dequantization for the BLAS path of larger batches; same operations as the portable
 * decoders (multiply, then add or subtract), so the same bits. */

AVX2 static void dequantize_q4_0(const Job *j, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *blk = j->w + r * j->row_bytes;
        float *out = j->y + r * j->n_in;
        for (int64_t b = 0; b < j->n_blocks; b++, blk += 18, out += 32) {
            __m256 w[4], d = _mm256_set1_ps(f16c_at(blk)), eight = _mm256_set1_ps(8.0f);
            nibbles_to_f32(blk + 2, w); /* q - 8 is exact in f32, so this is f32(q - 8) * d */
            for (int k = 0; k < 4; k++) _mm256_storeu_ps(out + 8 * k, _mm256_mul_ps(_mm256_sub_ps(w[k], eight), d));
        }
    }
}

AVX2 static void dequantize_q4_1(const Job *j, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *blk = j->w + r * j->row_bytes;
        float *out = j->y + r * j->n_in;
        for (int64_t b = 0; b < j->n_blocks; b++, blk += 20, out += 32) {
            __m256 w[4], d = _mm256_set1_ps(f16c_at(blk)), m = _mm256_set1_ps(f16c_at(blk + 2));
            nibbles_to_f32(blk + 4, w);
            for (int k = 0; k < 4; k++) _mm256_storeu_ps(out + 8 * k, _mm256_add_ps(_mm256_mul_ps(w[k], d), m));
        }
    }
}

AVX2 static void dequantize_q5_0(const Job *j, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *blk = j->w + r * j->row_bytes;
        float *out = j->y + r * j->n_in;
        for (int64_t b = 0; b < j->n_blocks; b++, blk += 22, out += 32) {
            __m256 w[4], d = _mm256_set1_ps(f16c_at(blk)), bias = _mm256_set1_ps(16.0f);
            q5_to_f32(blk + 6, blk + 2, w); /* q - 16 is exact in f32 */
            for (int k = 0; k < 4; k++) _mm256_storeu_ps(out + 8 * k, _mm256_mul_ps(_mm256_sub_ps(w[k], bias), d));
        }
    }
}

AVX2 static void dequantize_q5_1(const Job *j, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *blk = j->w + r * j->row_bytes;
        float *out = j->y + r * j->n_in;
        for (int64_t b = 0; b < j->n_blocks; b++, blk += 24, out += 32) {
            __m256 w[4], d = _mm256_set1_ps(f16c_at(blk)), m = _mm256_set1_ps(f16c_at(blk + 2));
            q5_to_f32(blk + 8, blk + 4, w);
            for (int k = 0; k < 4; k++) _mm256_storeu_ps(out + 8 * k, _mm256_add_ps(_mm256_mul_ps(w[k], d), m));
        }
    }
}

AVX2 static void dequantize_q8_0(const Job *j, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *blk = j->w + r * j->row_bytes;
        float *out = j->y + r * j->n_in;
        for (int64_t b = 0; b < j->n_blocks; b++, blk += 34, out += 32) {
            __m256 w[4], d = _mm256_set1_ps(f16c_at(blk));
            q8_0_to_f32(blk + 2, w);
            for (int k = 0; k < 4; k++) _mm256_storeu_ps(out + 8 * k, _mm256_mul_ps(w[k], d));
        }
    }
}

AVX2_INLINE static void dequantize_k4(const Job *j, int64_t r0, int64_t r1, int five) {
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *blk = j->w + r * j->row_bytes;
        float *out = j->y + r * j->n_in;
        for (int64_t b = 0; b < j->n_blocks; b++, blk += j->kernel->type_size, out += 256) {
            float d = f16c_at(blk), dmin = f16c_at(blk + 2);
            int sc[8], mn[8]; /* kernels.c's scale_min_k4 */
            __m256i high[4];
            scale_min_k4(blk + 4, sc, mn);
            if (five)
                for (int k = 0; k < 4; k++) high[k] = u8x8_at(blk + 16 + 8 * k);
            for (int c = 0; c < 4; c++) {
                __m256 w[8];
                k4_pair_to_f32(blk, c, five, high, w);
                for (int s = 0; s < 2; s++) {
                    __m256 ds = _mm256_set1_ps(d * (float)sc[2 * c + s]), dm = _mm256_set1_ps(dmin * (float)mn[2 * c + s]);
                    for (int k = 0; k < 4; k++)
                        _mm256_storeu_ps(out + 64 * c + 32 * s + 8 * k, _mm256_sub_ps(_mm256_mul_ps(ds, w[4 * s + k]), dm));
                }
            }
        }
    }
}

AVX2 static void dequantize_q4_k(const Job *j, int64_t r0, int64_t r1) { dequantize_k4(j, r0, r1, 0); }
AVX2 static void dequantize_q5_k(const Job *j, int64_t r0, int64_t r1) { dequantize_k4(j, r0, r1, 1); }

AVX2 static void dequantize_q6_k(const Job *j, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *blk = j->w + r * j->row_bytes;
        float *out = j->y + r * j->n_in;
        for (int64_t b = 0; b < j->n_blocks; b++, blk += 210, out += 256) {
            const int8_t *scales = (const int8_t *)(blk + 192);
            float d = f16c_at(blk + 208);
            for (int h = 0; h < 2; h++) {
                for (int half = 0; half < 2; half++) {
                    __m256 w[8];
                    q6_k_quarter_to_f32(blk + 64 * h + 16 * half, blk + 128 + 32 * h + 16 * half, w);
                    for (int q = 0; q < 4; q++) {
                        int e = 128 * h + 32 * q + 16 * half;
                        __m256 ds = _mm256_set1_ps(d * (float)scales[e / 16]);
                        _mm256_storeu_ps(out + e, _mm256_mul_ps(w[2 * q], ds));
                        _mm256_storeu_ps(out + e + 8, _mm256_mul_ps(w[2 * q + 1], ds));
                    }
                }
            }
        }
    }
}

#define DEFINE_SIMD_DEQUANTIZE_ELEMENTS(name, size, load8, decode_one)                           \
    AVX2 static void dequantize_##name(const Job *j, int64_t r0, int64_t r1) {                  \
        for (int64_t r = r0; r < r1; r++) {                                                      \
            const uint8_t *row = j->w + r * j->row_bytes;                                        \
            float *out = j->y + r * j->n_in;                                                     \
            int64_t i = 0;                                                                       \
            for (; i + 8 <= j->n_in; i += 8) _mm256_storeu_ps(out + i, load8(row + i * size));  \
            decode_one(row + i * size, j->n_in - i, out + i);                                    \
        }                                                                                        \
    }

DEFINE_SIMD_DEQUANTIZE_ELEMENTS(f16, 2, load8_f16, decode_f16)
DEFINE_SIMD_DEQUANTIZE_ELEMENTS(bf16, 2, load8_bf16, decode_bf16)

#define SIMD(dequantize) dequantize
#else
#define SIMD(dequantize) NULL
#endif

/* F32 dequantization is a copy, which the portable decoder already does at memcpy speed. */
static const Kernel KERNELS[] = {
    {GT_F32, 1, 4, decode_f32, SIMD(dequantize_portable)},
    {GT_F16, 1, 2, decode_f16, SIMD(dequantize_f16)},
    {GT_BF16, 1, 2, decode_bf16, SIMD(dequantize_bf16)},
    {GT_Q4_0, 32, 18, decode_q4_0, SIMD(dequantize_q4_0)},
    {GT_Q4_1, 32, 20, decode_q4_1, SIMD(dequantize_q4_1)},
    {GT_Q5_0, 32, 22, decode_q5_0, SIMD(dequantize_q5_0)},
    {GT_Q5_1, 32, 24, decode_q5_1, SIMD(dequantize_q5_1)},
    {GT_Q8_0, 32, 34, decode_q8_0, SIMD(dequantize_q8_0)},
    {GT_Q4_K, 256, 144, decode_q4_k, SIMD(dequantize_q4_k)},
    {GT_Q5_K, 256, 176, decode_q5_k, SIMD(dequantize_q5_k)},
    {GT_Q6_K, 256, 210, decode_q6_k, SIMD(dequantize_q6_k)},
};
#define N_KERNELS ((int)(sizeof(KERNELS) / sizeof(KERNELS[0])))

/* ---------------------------------------------------------------------------------------------- */
/* Threads                                                                                         */
/*
 * A pool of persistent workers: creating and joining a thread per call costs ~10 us here, and
 * decoding one SmolLM2 token makes ~210 matrix products of 10-100 us each. The rows are cut into
 * chunks that the caller and the workers claim from a shared counter, so a worker that the OS has not
 * scheduled (the machine is shared) delays nothing: the caller runs the chunks left over itself and
 * only ever waits for chunks that are already running. An idle worker spins for SPIN_NS (the next
 * product usually follows within microseconds) and then sleeps on a condition variable.
 *
 * Protocol: `claim` holds (generation << 32 | next chunk). A chunk is claimed by compare-and-swap
 * on it with the generation the worker woke for, so a late worker can never claim a chunk of a later
 * product; the job is read only after a successful claim, when that product is still running and its
 * job cannot change. `done` counts finished chunks; the caller returns when it reaches n_chunks.
 */

#define MIN_CHUNK_WORK (64 * 1024) /* weight elements x tokens per chunk: ~4 us, so a claim's cost is noise */
#define CHUNKS_PER_THREAD 8
#define SPIN_NS 100000

typedef struct Pool {
    pthread_mutex_t dispatch;  /* one product at a time uses the workers; others run single-threaded */
    pthread_mutex_t sleep_lock;
    pthread_cond_t wake;
    int n_workers;
    uint64_t generation;       /* bumped (atomically) to start a product */
    uint64_t claim;            /* generation << 32 | next chunk */
    int64_t done;              /* chunks finished */
    int sleepers;
    int max_helpers;           /* workers allowed to join the current product */
    Job job;
    rows_fn fn;
    int64_t n_chunks, chunk_rows;
} Pool;

static Pool pool = {
    .dispatch = PTHREAD_MUTEX_INITIALIZER,
    .sleep_lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void cpu_relax(void) {
#ifdef QM_X86
    __builtin_ia32_pause();
#endif
}

/* Claims and runs chunks of product `generation` until none is left. */
static void run_chunks(uint64_t generation) {
    uint64_t seen = __atomic_load_n(&pool.claim, __ATOMIC_ACQUIRE);
    for (;;) {
        if (seen >> 32 != (generation & 0xFFFFFFFFu)) return;
        int64_t chunk = (int64_t)(seen & 0xFFFFFFFFu);
        if (chunk >= pool.n_chunks) return;
        if (!__atomic_compare_exchange_n(&pool.claim, &seen, seen + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            continue; /* `seen` now holds the current value */
        int64_t r0 = chunk * pool.chunk_rows, r1 = r0 + pool.chunk_rows;
        pool.fn(&pool.job, r0, r1 < pool.job.n_rows ? r1 : pool.job.n_rows);
        __atomic_fetch_add(&pool.done, 1, __ATOMIC_RELEASE);
        seen = __atomic_load_n(&pool.claim, __ATOMIC_ACQUIRE);
    }
}

static void *worker_main(void *arg) {
    int index = (int)(intptr_t)arg;
    uint64_t seen = __atomic_load_n(&pool.generation, __ATOMIC_ACQUIRE);
    for (;;) {
        uint64_t generation, spin_start = now_ns();
        for (int i = 1; (generation = __atomic_load_n(&pool.generation, __ATOMIC_ACQUIRE)) == seen; i++) {
            cpu_relax();
            if (i % 64 == 0 && now_ns() - spin_start > SPIN_NS) {
                pthread_mutex_lock(&pool.sleep_lock);
                __atomic_fetch_add(&pool.sleepers, 1, __ATOMIC_SEQ_CST);
                while ((generation = __atomic_load_n(&pool.generation, __ATOMIC_SEQ_CST)) == seen)
                    pthread_cond_wait(&pool.wake, &pool.sleep_lock);
                __atomic_fetch_sub(&pool.sleepers, 1, __ATOMIC_SEQ_CST);
                pthread_mutex_unlock(&pool.sleep_lock);
                break;
            }
        }
        seen = generation;
        if (index < __atomic_load_n(&pool.max_helpers, __ATOMIC_ACQUIRE)) run_chunks(generation);
    }
    return NULL;
}

/* In a child after fork() the workers are gone, and the locks may be held by threads that are too. */
static void pool_after_fork(void) {
    pthread_mutex_t fresh_mutex = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t fresh_cond = PTHREAD_COND_INITIALIZER;
    pool.dispatch = fresh_mutex;
    pool.sleep_lock = fresh_mutex;
    pool.wake = fresh_cond;
    pool.n_workers = 0;
    pool.sleepers = 0;
}

/* Runs fn over all rows of the job, on up to n_threads threads (the caller included). Results never
 * depend on how many threads ran: each output row is computed whole by one of them. */
static void run_rows(const Job *job, rows_fn fn, int n_threads, int64_t work_per_row) {
    int64_t by_work = job->n_rows * work_per_row / MIN_CHUNK_WORK;
    int64_t n_chunks = (int64_t)n_threads * CHUNKS_PER_THREAD;
    if (n_chunks > by_work) n_chunks = by_work;
    if (n_chunks > job->n_rows) n_chunks = job->n_rows;
    if (n_threads > MAX_THREADS) n_threads = MAX_THREADS;
    if (n_threads < 2 || n_chunks < 2 || pthread_mutex_trylock(&pool.dispatch) != 0) {
        fn(job, 0, job->n_rows);
        return;
    }
    while (pool.n_workers < n_threads - 1) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&thread, &attr, worker_main, (void *)(intptr_t)pool.n_workers);
        pthread_attr_destroy(&attr);
        if (failed) break; /* fewer helpers; the caller still runs whatever they leave */
        pool.n_workers++;
    }
    pool.job = *job;
    pool.fn = fn;
    pool.chunk_rows = (job->n_rows + n_chunks - 1) / n_chunks;
    pool.n_chunks = (job->n_rows + pool.chunk_rows - 1) / pool.chunk_rows;
    pool.done = 0;
    uint64_t generation = pool.generation + 1;
    __atomic_store_n(&pool.max_helpers, n_threads - 1, __ATOMIC_RELAXED);
    __atomic_store_n(&pool.claim, (generation & 0xFFFFFFFFu) << 32, __ATOMIC_RELEASE);
    __atomic_store_n(&pool.generation, generation, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&pool.sleepers, __ATOMIC_SEQ_CST) > 0) {
        pthread_mutex_lock(&pool.sleep_lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.sleep_lock);
    }
    run_chunks(generation);
    /* Only chunks that a running worker has claimed are left; yield now and then in case the OS
     * preempted it for this very core. */
    for (int i = 1; __atomic_load_n(&pool.done, __ATOMIC_ACQUIRE) < pool.n_chunks; i++) {
        cpu_relax();
        if (i % 1024 == 0) sched_yield();
    }
    pthread_mutex_unlock(&pool.dispatch);
}

/* ---------------------------------------------------------------------------------------------- */
/* Python interface                                                                                */

static const Kernel *find_kernel(int type) {
    for (int i = 0; i < N_KERNELS; i++)
        if (KERNELS[i].type == type) return &KERNELS[i];
    PyErr_Format(PyExc_ValueError, "_qmatmul has no kernel for GGML type id %d (see _qmatmul.TYPES)", type);
    return NULL;
}

/* A C-contiguous buffer; float32 ones must say so in their format. */
static int get_buffer(PyObject *obj, Py_buffer *view, const char *name, int is_float, int writable) {
    int flags = PyBUF_C_CONTIGUOUS | (is_float ? PyBUF_FORMAT : 0) | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous%s %s buffer (np.ascontiguousarray)", name,
                     writable ? " writable" : "", is_float ? "float32" : "byte");
        return -1;
    }
    if (is_float) {
        const char *f = view->format ? view->format : "B";
        if (view->itemsize != 4 || !(strcmp(f, "f") == 0 || strcmp(f, "<f") == 0 || strcmp(f, "=f") == 0)) {
            PyErr_Format(PyExc_ValueError, "%s must be float32, got buffer format '%s'", name, f);
            PyBuffer_Release(view);
            return -1;
        }
    }
    return 0;
}

static int overlaps(const Py_buffer *a, const Py_buffer *b) {
    const char *a0 = (const char *)a->buf, *b0 = (const char *)b->buf;
    return a->len > 0 && b->len > 0 && a0 < b0 + b->len && b0 < a0 + a->len;
}

/* Parses and checks the common arguments; on success the caller owns the three buffers. */
static int setup_job(Job *job, Py_buffer *w, Py_buffer *x, Py_buffer *out, PyObject *w_obj, int type, Py_ssize_t n_in,
                     PyObject *x_obj, PyObject *out_obj) {
    const Kernel *k = find_kernel(type);
    if (!k) return -1;
    if (n_in <= 0 || n_in % k->block_size) {
        PyErr_Format(PyExc_ValueError, "n_in must be a positive multiple of the block size %d, got %zd", k->block_size,
                     n_in);
        return -1;
    }
    if (get_buffer(w_obj, w, "w", 0, 0)) return -1;
    if (x_obj && get_buffer(x_obj, x, "x", 1, 0)) {
        PyBuffer_Release(w);
        return -1;
    }
    if (get_buffer(out_obj, out, "out", 1, 1)) {
        PyBuffer_Release(w);
        if (x_obj) PyBuffer_Release(x);
        return -1;
    }
    memset(job, 0, sizeof *job);
    job->kernel = k;
    job->n_in = n_in;
    job->n_blocks = n_in / k->block_size;
    job->row_bytes = job->n_blocks * k->type_size;
    job->w = (const uint8_t *)w->buf;
    job->y = (float *)out->buf;
    if (w->len % job->row_bytes) {
        PyErr_Format(PyExc_ValueError, "w holds %zd bytes, not a whole number of %lld-byte rows", w->len,
                     (long long)job->row_bytes);
        goto fail;
    }
    job->n_rows = w->len / job->row_bytes;
    if (overlaps(out, w) || (x_obj && overlaps(out, x))) {
        PyErr_SetString(PyExc_ValueError, "out must not share memory with w or x");
        goto fail;
    }
    if (x_obj) {
        job->x = (const float *)x->buf;
        if (x->len % (n_in * 4)) {
            PyErr_Format(PyExc_ValueError, "x holds %zd float32, not a whole number of %zd-element rows", x->len / 4,
                         n_in);
            goto fail;
        }
        job->n_tok = x->len / (n_in * 4);
    }
    int64_t expected = (x_obj ? job->n_tok * job->n_rows : job->n_rows * n_in) * 4;
    if (out->len != expected) {
        PyErr_Format(PyExc_ValueError, "out must hold %lld float32 (%s), got %zd", (long long)(expected / 4),
                     x_obj ? "n_tokens x n_rows" : "n_rows x n_in", out->len / 4);
        goto fail;
    }
    return 0;
fail:
    PyBuffer_Release(w);
    if (x_obj) PyBuffer_Release(x);
    PyBuffer_Release(out);
    return -1;
}

static int check_threads(int n_threads) {
    if (n_threads < 1) {
        PyErr_Format(PyExc_ValueError, "n_threads must be at least 1, got %d", n_threads);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(matmul_doc,
             "matmul(w, ggml_type, n_in, x, out, n_threads=1, simd=True)\n--\n\n"
             "out = x @ W.T, where W is n_rows rows of raw GGUF blocks of `ggml_type` (an id), each row\n"
             "holding n_in elements; x is float32 (n_tokens, n_in), out float32 (n_tokens, n_rows), both\n"
             "C-contiguous. Each row of x is first quantized as ggml does for the type (kernels.h).\n"
             "simd=False forces the portable kernels (the same bits). Releases the GIL.");

static PyObject *py_matmul(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"w", "ggml_type", "n_in", "x", "out", "n_threads", "simd", NULL};
    PyObject *w_obj, *x_obj, *out_obj;
    int type, n_threads = 1, simd = 1;
    Py_ssize_t n_in;
    Py_buffer w, x, out;
    Job job;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OinOO|ip:matmul", keywords, &w_obj, &type, &n_in, &x_obj,
                                     &out_obj, &n_threads, &simd))
        return NULL;
    if (check_threads(n_threads) || setup_job(&job, &w, &x, &out, w_obj, type, n_in, x_obj, out_obj)) return NULL;
    size_t act_bytes = icl_act_row_bytes(type, (int)n_in);
    uint8_t *xq = (uint8_t *)malloc(act_bytes * (size_t)(job.n_tok > 0 ? job.n_tok : 1));
    if (!xq) {
        PyBuffer_Release(&w), PyBuffer_Release(&x), PyBuffer_Release(&out);
        return PyErr_NoMemory();
    }
    job.xq = xq;
    job.simd = simd && simd_available;
    Py_BEGIN_ALLOW_THREADS
    for (int64_t t = 0; t < job.n_tok; t++) icl_quantize_act(type, job.x + t * n_in, (int)n_in, xq + t * act_bytes);
    run_rows(&job, matmul_rows, n_threads, n_in * (job.n_tok < 1 ? 1 : job.n_tok));
    Py_END_ALLOW_THREADS
    free(xq);
    PyBuffer_Release(&w), PyBuffer_Release(&x), PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(quantize_act_doc,
             "quantize_act(x, ggml_type) -> bytes\n--\n\n"
             "Each row of x, float32 (n_tokens, n) C-contiguous, prepared for a product with `ggml_type`\n"
             "weights as the kernels prepare it (icl_quantize_act of canisters/kernels/kernels.h), the\n"
             "rows' bytes one after another.");

static PyObject *py_quantize_act(PyObject *self, PyObject *args) {
    PyObject *x_obj;
    int type;
    Py_buffer x;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oi:quantize_act", &x_obj, &type) || get_buffer(x_obj, &x, "x", 1, 0)) return NULL;
    if (find_kernel(type) == NULL || x.ndim != 2) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "x must be a 2-D float32 array (n_tokens, n)");
        PyBuffer_Release(&x);
        return NULL;
    }
    Py_ssize_t n_tok = x.shape[0], n = x.shape[1];
    size_t act_bytes = icl_act_row_bytes(type, (int)n);
    if (act_bytes == 0) {
        PyBuffer_Release(&x);
        return PyErr_Format(PyExc_ValueError, "rows of %zd elements are not whole blocks of GGML type id %d", n, type);
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(act_bytes * (size_t)n_tok));
    if (result) {
        uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
        for (Py_ssize_t t = 0; t < n_tok; t++)
            icl_quantize_act(type, (const float *)x.buf + t * n, (int)n, out + (size_t)t * act_bytes);
    }
    PyBuffer_Release(&x);
    return result;
}

PyDoc_STRVAR(dequantize_doc,
             "dequantize(w, ggml_type, n_in, out, n_threads=1, simd=True)\n--\n\n"
             "Decode n_rows rows of raw GGUF blocks into out, float32 (n_rows, n_in), C-contiguous: the\n"
             "same bits as canisters.llama.quants.dequantize. Releases the GIL.");

static PyObject *py_dequantize(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"w", "ggml_type", "n_in", "out", "n_threads", "simd", NULL};
    PyObject *w_obj, *out_obj;
    int type, n_threads = 1, simd = 1;
    Py_ssize_t n_in;
    Py_buffer w, out;
    Job job;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OinO|ip:dequantize", keywords, &w_obj, &type, &n_in, &out_obj,
                                     &n_threads, &simd))
        return NULL;
    if (check_threads(n_threads) || setup_job(&job, &w, NULL, &out, w_obj, type, n_in, NULL, out_obj)) return NULL;
    rows_fn fn = simd && simd_available ? job.kernel->simd_dequantize : NULL;
    Py_BEGIN_ALLOW_THREADS
    run_rows(&job, fn ? fn : dequantize_portable, n_threads, n_in);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&w), PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"matmul", (PyCFunction)(void (*)(void))py_matmul, METH_VARARGS | METH_KEYWORDS, matmul_doc},
    {"dequantize", (PyCFunction)(void (*)(void))py_dequantize, METH_VARARGS | METH_KEYWORDS, dequantize_doc},
    {"quantize_act", py_quantize_act, METH_VARARGS, quantize_act_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_qmatmul",
    .m_doc = "Matrix products and decoding straight from raw GGUF blocks (see canisters/llama/_qmatmul.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__qmatmul(void) {
#ifdef QM_X86
    __builtin_cpu_init();
    simd_available = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#endif
    pthread_atfork(NULL, NULL, pool_after_fork);
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    PyObject *types = PyTuple_New(N_KERNELS);
    if (!types) goto fail;
    for (int i = 0; i < N_KERNELS; i++) PyTuple_SET_ITEM(types, i, PyLong_FromLong(KERNELS[i].type));
    if (PyModule_AddObject(m, "TYPES", types)) {
        Py_DECREF(types);
        goto fail;
    }
    if (PyModule_AddStringConstant(m, "SIMD", simd_available ? "avx2" : "none")) goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
