"""The model's ops outside the matmuls in a fixed float order: the order of the wasm yblock's C
(canisters/yblock/wasm/model.c), so that numpy and the canister compute the same bits.

Why it matters: activations are quantized to 8 bits before every matmul, and where a value sits
on a rounding tie, a last-bit difference upstream (a sum taken in another order, an exp one ulp
off) moves it a whole step, about 1/127 of its block's largest value. Over 30 layers that happens,
and greedy decoding can follow another token at a near-tie. With the same order everywhere there
is nothing to flip.

canisters/llama/native_ops.py runs the C itself where it is built; this module is its fallback and
its check (tests/test_yblock_model_c.py compares them op by op and over whole models).

The order (every step f32 unless said, no fused multiply-add):
- sums over a vector take four lanes (element i in lane i % 4, in order), then
  (lane0 + lane1) + (lane2 + lane3); numpy reduces a non-innermost axis element by element in
  order, which gives exactly that from a (n / 4, 4) view;
- RMSNorm: squares in f32, summed in f64 in four lanes; scale = 1 / sqrt(f32(sum / d) + eps);
  out = (x * scale) * weight;
- exp: `exp_f32` below, the C's polynomial (within 2 ulp of expf; 0 below 2^-126, +inf past
  2^127.5), used by softmax and SiLU;
- attention scores: q (f16) . k (f16) in four lanes over the head, times 1 / sqrt(head_dim);
  softmax: e = exp(s - max), summed in four lanes over the positions, p = f16(e / sum);
  out = sum over positions in order of p * v (the products are exact);
- SiLU: (g / (1 + exp(-g))) * up.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
_LOG2E, _LN2_HI, _LN2_LO = F32(1.44269504088896341), F32(0.693145751953125), F32(1.42860682030941723e-06)
_MAGIC, _LOW, _HIGH = F32(1.5 * 2**23), F32(-87.33654), F32(88.37626)  # 1.5 * 2^23; 2^-126 and 2^127.5
_TAYLOR = [F32(1.0) / F32(n) for n in (5040, 720, 120, 24, 6)]  # 1/7! .. 1/3!, rounded as C rounds 1.0f / n


def exp_f32(x: np.ndarray) -> np.ndarray:
    """e^x elementwise, as icl_exp4 computes it (canisters/yblock/wasm/icl_math.h); in place where
    it can, since each numpy call costs more than its arithmetic on a decode step's small arrays."""
    x = np.asarray(x, dtype=F32)
    too_low, too_high = x < _LOW, x > _HIGH
    x = np.where(too_low, _LOW, x)
    x[too_high] = 0
    t = x * _LOG2E
    t += _MAGIC
    k = t - _MAGIC
    r = x - k * _LN2_HI
    r -= k * _LN2_LO
    p = r * _TAYLOR[0]  # Horner, innermost first: p = c + r * p for c = 1/6!, ..., 1/2, 1, 1
    for c in (*_TAYLOR[1:], F32(0.5), F32(1.0)):
        p += c
        p *= r
    p += F32(1.0)
    scale = t.view(np.int32)
    scale -= np.int32(0x4B400000 - 127)
    scale <<= np.int32(23)
    p *= scale.view(F32)
    p[too_low] = 0
    p[too_high] = np.inf
    return p


def lane_sum(x: np.ndarray) -> np.ndarray:
    """Sum over the last axis in four lanes (a tail in its lanes too), then across them."""
    x = _padded(x)
    chunks = x.shape[-1] // 4
    if chunks <= 64:  # few chunks (a head, a row of d_model): one add of a slice per chunk is fastest
        lanes = x[..., 0:4].copy()
        for c in range(1, chunks):
            lanes += x[..., 4 * c : 4 * c + 4]
    else:  # numpy reduces an axis that is not the innermost one element by element, in order
        lanes = x.reshape(*x.shape[:-1], chunks, 4).sum(axis=-2)
    return (lanes[..., 0] + lanes[..., 1]) + (lanes[..., 2] + lanes[..., 3])


def _padded(x: np.ndarray) -> np.ndarray:
    """x with zeros appended on the last axis up to a multiple of 4 (adding 0 changes no sum)."""
    extra = -x.shape[-1] % 4
    return np.concatenate([x, np.zeros((*x.shape[:-1], extra), x.dtype)], axis=-1) if extra else x


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x (n, d) normalized per row."""
    total = lane_sum((x * x).astype(np.float64))[..., None]
    scale = np.sqrt((total / x.shape[-1]).astype(F32) + F32(eps))
    np.divide(F32(1.0), scale, out=scale)
    return (x * scale) * weight


def silu_times(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """SwiGLU's (gate / (1 + exp(-gate))) * up."""
    return (gate / (F32(1.0) + exp_f32(-gate))) * up


def round_f16(x: np.ndarray) -> np.ndarray:
    """x rounded to f16 (half to even), as f32."""
    return x.astype(np.float16).astype(F32)


def attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray, pos: int) -> np.ndarray:
    """Causal attention of q (n_kv, group, n, head_dim) at positions pos.. over keys and values
    (n_kv, n_ctx, head_dim, f16 values as f32); returns (n_kv, group, n, head_dim)."""
    n_kv, group, n, head_dim = q.shape
    q = round_f16(q)
    scale = F32(1.0) / np.sqrt(F32(head_dim))
    out = np.empty(q.shape, dtype=F32)
    for t in range(n):  # one query position at a time: bounded memory, and the C's order
        visible = pos + t + 1
        keys_seen, values_seen = keys[:, None, :visible], values[:, None, :visible]
        scores = lane_sum(q[:, :, t, None, :] * keys_seen)  # (n_kv, group, visible)
        scores *= scale
        scores -= scores.max(axis=-1, keepdims=True)
        e = exp_f32(scores)
        probs = round_f16(e / lane_sum(e)[..., None])
        # over the positions in order: not the innermost axis, so numpy adds them one by one
        out[:, :, t] = (probs[..., None] * values_seen).sum(axis=-2)
    return out
