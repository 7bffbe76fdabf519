/* The few math functions the model needs, for freestanding wasm32 where there is no libm.

   Accuracy (checked against the host's libm by tests/test_yblock_model_c.py):
   - icl_exp_f32: within 2 ulp for the whole f32 range; overflow gives +inf, underflow 0 or a
     subnormal, as expf does (softmax and SiLU need exp(-inf) = 0 and exp(+large) = inf).
   - icl_exp, icl_log, icl_sin, icl_cos (f64): within 1e-15 relative (sin/cos: absolute) for the
     arguments rope tables use (|x| up to 2^20 for sin and cos). Rope tables are built in f64
     and rounded to f32, as model.py builds them with numpy, so the tables agree to the last bit
     almost everywhere.
   sqrt is a wasm instruction (__builtin_sqrtf). */
#ifndef ICL_MATH_H
#define ICL_MATH_H

float icl_exp_f32(float x);
double icl_exp(double x);
double icl_log(double x); /* x > 0 */
double icl_sin(double x);
double icl_cos(double x);

#endif
