/* The few math functions the model needs, for freestanding wasm32 where there is no libm, and
   the f16 conversions of its KV cache.

   Accuracy (checked against the host's libm by tests/test_yblock_model_c.py):
   - icl_exp4 (four lanes) and icl_exp_f32 (one): within 2 ulp where expf is a normal number;
     results below 2^-126 are 0 and results past 2^127.5 +inf (softmax's f16 probabilities and
     SiLU cannot tell a subnormal from 0). Integer steps only where wasm has cheap ones (the IC
     charges 20 for a float-to-int conversion, 2 for a vector multiply).
   - icl_exp, icl_log, icl_sin, icl_cos (f64): within 1e-15 relative (sin/cos: absolute) for the
     arguments rope tables use (|x| up to 2^20 for sin and cos). Rope tables are built in f64
     and rounded to f32, as model.py builds them with numpy, so the tables agree to the last bit
     almost everywhere.
   sqrt is a wasm instruction (__builtin_sqrtf). */
#ifndef ICL_MATH_H
#define ICL_MATH_H

#include <stdint.h>

/* Bit patterns (memcpy: the defined way to reinterpret; compilers emit a move). */
static inline uint32_t icl_f32_bits(float f) {
    uint32_t b;
    __builtin_memcpy(&b, &f, 4);
    return b;
}

static inline float icl_f32_of(uint32_t b) {
    float f;
    __builtin_memcpy(&f, &b, 4);
    return f;
}

static inline uint64_t icl_f64_bits(double d) {
    uint64_t b;
    __builtin_memcpy(&b, &d, 8);
    return b;
}

static inline double icl_f64_of(uint64_t b) {
    double d;
    __builtin_memcpy(&d, &b, 8);
    return d;
}

/* f32 to f16 and back, round half to even, exact (as F16C and ggml). */
static inline uint16_t icl_f16_of(float f) {
    uint32_t x = icl_f32_bits(f), sign = (x >> 16) & 0x8000;
    x &= 0x7fffffff;
    if (x >= 0x7f800000) return (uint16_t)(sign | (x > 0x7f800000 ? 0x7e00 : 0x7c00));
    if (x >= 0x477ff000) return (uint16_t)(sign | 0x7c00); /* 65520 and up round to inf */
    if (x < 0x38800000) /* below 2^-14: a subnormal f16, a multiple of 2^-24 (0.5's ulp in f32) */
        return (uint16_t)(sign | (icl_f32_bits(icl_f32_of(x) + 0.5f) - icl_f32_bits(0.5f)));
    return (uint16_t)(sign | ((x - (112u << 23) + 0xfff + ((x >> 13) & 1)) >> 13));
}

static inline float icl_f32_of_f16(uint16_t h) {
    float f = icl_f32_of((uint32_t)(h & 0x7fff) << 13) * 0x1p112f;
    uint32_t b = icl_f32_bits(f) | (uint32_t)(h & 0x8000) << 16;
    return icl_f32_of((h & 0x7c00) == 0x7c00 ? b | 0x7f800000 : b);
}

static inline float icl_round_f16(float f) { return icl_f32_of_f16(icl_f16_of(f)); }

typedef float icl_v4f __attribute__((vector_size(16)));
typedef int32_t icl_v4i __attribute__((vector_size(16)));

/* x = k ln2 + r with |r| <= ln2/2, k found by adding 1.5 * 2^23 (its low bits then hold k);
   e^r by Taylor to r^7 (remainder below 5e-9 relative); 2^k built in the exponent bits. */
static inline icl_v4f icl_exp4(icl_v4f x) {
    const float LOG2E = 1.44269504088896341f, LN2_HI = 0.693145751953125f, LN2_LO = 1.42860682030941723e-06f;
    const float MAGIC = 0x1.8p23f, LOW = -87.33654f, HIGH = 88.37626f; /* 2^-126, 2^127.5 */
    icl_v4i too_low = x < LOW, too_high = x > HIGH;
    x = (icl_v4f)(((icl_v4i)x & ~(too_low | too_high)) | ((icl_v4i)(icl_v4f){LOW, LOW, LOW, LOW} & too_low));
    icl_v4f t = x * LOG2E + MAGIC, k = t - MAGIC;
    icl_v4f r = (x - k * LN2_HI) - k * LN2_LO;
    icl_v4f p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720 +
                                                                                               r * (1.0f / 5040)))))));
    icl_v4i scale = ((icl_v4i)t - (0x4b400000 - 127)) << 23;
    icl_v4f y = p * (icl_v4f)scale;
    return (icl_v4f)(((icl_v4i)y & ~(too_low | too_high)) | (0x7f800000 & too_high));
}

float icl_exp_f32(float x);
double icl_exp(double x);
double icl_log(double x); /* x > 0 */
double icl_sin(double x);
double icl_cos(double x);

#endif
