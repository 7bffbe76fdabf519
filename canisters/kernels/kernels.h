/* icllama kernels: matrix products straight from GGUF weight rows, with ggml's numerics.
 *
 * One source (kernels.c) builds natively into the Python extension (canisters/llama/_qmatmul.c,
 * AVX2/FMA/F16C chosen at run time) and to wasm32 + simd128 for the yblock canister (zig cc). It
 * needs no libc: no allocation, no I/O; the caller owns every buffer.
 *
 * Matmul numerics (as ggml's CPU backend: the activation row is first quantized to the weight
 * type's vec_dot_type, then dot products are integer):
 *   weight type        activation prepared as           block
 *   Q4_0, Q5_0, Q8_0   Q8_0: d = amax/127 (rounded to f16), q = round_half_even(x * 127/amax)   32
 *   Q4_1, Q5_1         Q8_1: Q8_0 plus s = f16(d * sum(q)) (d before its rounding)              32
 *   Q4_K, Q5_K, Q6_K   Q8_K: d = 1/iscale (f32), iscale = -127/x[argmax|x|],
 *                      q = min(127, round_half_even(iscale * x)), bsums of 16                  256
 *   F16 / BF16         x rounded to f16 / bf16 (round half even)                                1
 *   F32                x as is                                                                  1
 * A prepared row is laid out for the kernels, not as ggml's blocks (the quants first, then the
 * scales as f32 holding exactly ggml's f16-rounded values), so icl_act_row_bytes is ours. The
 * n_tokens rows given to icl_matmul_rows lie one after another, icl_act_row_bytes apart.
 *
 * Float arithmetic is fixed so that every build gives the same bits (no FMA contraction):
 *   32-blocks: per block b, four integer lane sums L[l] of w_i * q_i over the elements i with
 *     (i % 8) / 2 == l; scale = f32(dw_b) * dx_b; acc[l] += scale * f32(L[l]) for l < 4;
 *     Q4_1/Q5_1 also accm += f32(mw_b) * sx_b (sequential over b);
 *     y = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + accm.
 *   K-quants: per super-block b, exact int32 sumi = sum_j scale_j * dot_j (Q6_K: (q - 32) * x);
 *     Q4_K/Q5_K also summs = sum_j min_j * (bsums[2j] + bsums[2j+1]);
 *     acc[b % 4] += (f32(d) * xd) * f32(sumi); then acc[b % 4] -= (f32(dmin) * xd) * f32(summs);
 *     y = (acc[0] + acc[1]) + (acc[2] + acc[3]).
 *   F16/BF16/F32: acc[i % 4] += w_i * x_i, in order of i (f16/bf16 products are exact in f32);
 *     y = (acc[0] + acc[1]) + (acc[2] + acc[3]).
 * Integer sums are exact in every build. f16 fields are converted exactly; a weight with an inf or
 * NaN f16 scale is not supported (no quantizer writes one).
 *
 * Numerics shared with the yblock (canisters/llama/model.py does the same; the C yblock mirrors it):
 *   - every op outside the matmuls is f32, without FMA;
 *   - RMSNorm: mean of squares summed in f64 (as ggml), scale = 1 / sqrtf(mean + eps) in f32;
 *   - RoPE: angle = pos * theta_base^(-2i/rope_dim) (divided by the frequency factor) in f64, then
 *     cos and sin rounded to f32; llama pairs adjacent elements, qwen2 (NEOX) the two halves;
 *   - KV cache: K and V stored as f16 (round half even), as llama.cpp's default cache;
 *   - attention: q rounded to f16, scores = dot(k_f16, q_f16) in f32, times 1/sqrt(head_dim) in f32;
 *     softmax over the visible keys in f32 (max subtracted, exp, sum, divide); the probabilities
 *     rounded to f16 before multiplying V (ggml's vec_dot_type for an F16 matrix is F16);
 *   - SiLU: x / (1 + exp(-x)) in f32.
 */
#ifndef ICLLAMA_KERNELS_H
#define ICLLAMA_KERNELS_H

#include <stddef.h>

/* ggml type ids */
enum { ICL_F32 = 0, ICL_F16 = 1, ICL_Q4_0 = 2, ICL_Q4_1 = 3, ICL_Q8_0 = 8, ICL_Q4_K = 12, ICL_Q5_K = 13, ICL_Q6_K = 14 };

size_t icl_row_bytes(int wtype, int n);      /* bytes of one GGUF weight row of n values (0: type or n unsupported) */
size_t icl_act_row_bytes(int wtype, int n);  /* bytes of one activation row prepared for wtype */
/* prepares one activation row for wtype as ggml does (vec_dot_type): Q8_0 for Q4_0/Q8_0, Q8_1 for
   Q4_1, Q8_K for the K types, f16 for F16, f32 for F32 */
void icl_quantize_act(int wtype, const float *x, int n, void *out);
/* y[t*ldy + r] = dot(weight row r, prepared activation row t), r in [r0, r1), t in [0, n_tokens) */
void icl_matmul_rows(int wtype, const void *w, int n, const void *xq, int n_tokens,
                     float *y, int ldy, int r0, int r1);

#endif
