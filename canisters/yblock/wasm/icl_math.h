/* The few math functions the model needs, for freestanding wasm32 where there is no libm.

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
