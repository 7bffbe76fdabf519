/* Single ops of model.c: exported so that their instructions can be counted one by one
   (benchmarks/bench_yblock_ops.py), and so that the Python path (canisters/llama/model.py) can
   compute them natively in the same float order (canisters/llama/native_ops.py). The canister
   calls them only through icl_forward_layers. */
#ifndef ICL_MODEL_OPS_H
#define ICL_MODEL_OPS_H

#include <stddef.h>

/* out = x * (1 / sqrt(mean(x^2) + eps)) * weight, per token; squares in f32 summed in f64 (ggml) */
void icl_rms_norm(const float *x, const float *weight, int n_tokens, int d, float eps, float *out);

/* gate[i] = silu(gate[i]) * up[i] */
void icl_swiglu(float *gate, const float *up, size_t n);

/* p[0..n) = f16(softmax(p)) * 2^112 (the scale that attention's f16 cache reads expect) */
void icl_softmax_f16_scaled(float *p, int n);

/* Causal grouped-query attention: out (n_tokens x n_head x head_dim) for q (the same shape, already
   rounded to f16) at positions pos.. over one layer's cache, k_cache and v_cache each
   (n_head_kv x n_ctx x head_dim) of f16 (cache_f32 = 0) or of f32 holding f16 values (cache_f32 = 1,
   native builds only), positions up to pos + n_tokens - 1 filled. scratch holds
   icl_attention_scratch_floats(...) floats. */
size_t icl_attention_scratch_floats(int n_head, int n_head_kv, int head_dim, int n_ctx);
void icl_attention(const float *q, const void *k_cache, const void *v_cache, int cache_f32, int n_head, int n_head_kv,
                   int head_dim, int n_ctx, int pos, int n_tokens, float *out, float *scratch);

#endif
