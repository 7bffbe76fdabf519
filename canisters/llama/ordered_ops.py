"""The model's ops outside the matmuls in a fixed float order: the order of the wasm yblock's C
(canisters/yblock/wasm/model.c), so that numpy and the canister compute the same bits.

Why it matters: activations are quantized to 8 bits before every matmul, and where a value sits
on a rounding tie, a last-bit difference upstream (a sum taken in another order, an exp one ulp
off) moves it a whole step, about 1/127 of its block's largest value. Over 30 layers that happens,
and greedy decoding can follow another token at a near-tie. With the same order everywhere there
is nothing to flip.

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
    """e^x elementwise, as icl_exp4 computes it (canisters/yblock/wasm/icl_math.h)."""
    x = np.asarray(x, dtype=F32)
    too_low, too_high = x < _LOW, x > _HIGH
    x = np.where(too_low, _LOW, np.where(too_high, F32(0), x))
    t = x * _LOG2E + _MAGIC
    k = t - _MAGIC
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p = _TAYLOR[0]
    for c in _TAYLOR[1:]:
        p = c + r * p
    p = F32(1.0) + r * (F32(1.0) + r * (F32(0.5) + r * p))
    scale = ((t.view(np.int32) - np.int32(0x4B400000 - 127)) << np.int32(23)).view(F32)
    y = p * scale
    y = np.where(too_low, F32(0), y)
    return np.where(too_high, F32(np.inf), y).astype(F32)


def lane_sum(x: np.ndarray) -> np.ndarray:
    """Sum over the last axis (a multiple of 4 long) in four lanes, then across them."""
    lanes = np.moveaxis(x.reshape(*x.shape[:-1], -1, 4), -2, 0).sum(axis=0)  # in order, lane by lane
    return (lanes[..., 0] + lanes[..., 1]) + (lanes[..., 2] + lanes[..., 3])


def _padded(x: np.ndarray) -> np.ndarray:
    """x with zeros appended on the last axis up to a multiple of 4 (adding 0 changes no sum)."""
    extra = -x.shape[-1] % 4
    return np.concatenate([x, np.zeros((*x.shape[:-1], extra), x.dtype)], axis=-1) if extra else x


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x (n, d) normalized per row, d a multiple of 4."""
    squares = (x * x).astype(np.float64)
    total = lane_sum(squares)[..., None]
    scale = F32(1.0) / np.sqrt((total / x.shape[-1]).astype(F32) + F32(eps))
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
    n_ctx = keys.shape[1]
    q = round_f16(q)
    scale = F32(1.0) / np.sqrt(F32(head_dim))
    out = np.empty(q.shape, dtype=F32)
    for t in range(n):  # one query position at a time: bounded memory, and the C's order
        visible = pos + t + 1
        if visible > n_ctx:
            raise ValueError(f"position {pos + t} is past the {n_ctx} cached positions")
        k, v = keys[:, None, :visible], values[:, :visible]  # (n_kv, 1, visible, hd), (n_kv, visible, hd)
        scores = lane_sum(q[:, :, t, None, :] * k) * scale  # (n_kv, group, visible)
        e = exp_f32(scores - scores.max(axis=-1, keepdims=True))
        probs = round_f16(e / lane_sum(_padded(e))[..., None])
        # sum over the positions in order: a non-innermost axis, which numpy reduces in order
        out[:, :, t] = np.moveaxis(probs[..., None] * v[:, None], -2, 0).sum(axis=0)
    return out
