/* Single ops of model.c, exported so that their instructions can be counted one by one
   (benchmarks/bench_yblock_ops.py); the canister calls them only through icl_forward_layers. */
#ifndef ICL_MODEL_OPS_H
#define ICL_MODEL_OPS_H

#include <stddef.h>

/* out = x * (1 / sqrt(mean(x^2) + eps)) * weight, per token; squares in f32 summed in f64 (ggml) */
void icl_rms_norm(const float *x, const float *weight, int n_tokens, int d, float eps, float *out);

/* gate[i] = silu(gate[i]) * up[i] */
void icl_swiglu(float *gate, const float *up, size_t n);

/* p[0..n) = f16(softmax(p)) * 2^112 (the scale that attention's f16 cache reads expect) */
void icl_softmax_f16_scaled(float *p, int n);

#endif
