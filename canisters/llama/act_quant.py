"""ggml's matmul numerics in numpy: activations quantized to the weight type's vec_dot_type, and
integer dot products, exactly as canisters/kernels/kernels.h specifies (its header is the spec).

- `quantize_act`: one activation matrix prepared as ggml does (Q8_0, Q8_1, Q8_K, or f16/bf16/f32
  rounding), the same values as the C kernels' `icl_quantize_act`; `to_bytes` gives their layout.
- `for_blas`: the prepared activations as f32 (q * d), which is what the weight strategies that
  multiply with BLAS use (canisters/llama/weights.py): with `min_correction` for Q4_1/Q5_1, their
  result equals the integer kernels' to f32 rounding.
- `matmul`: the integer kernels' result bit for bit (the float steps in kernels.h's order). Slow:
  it is the reference the tests hold the native and wasm kernels to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from canisters.llama import quants

_T = GGMLQuantizationType
# weight type -> what its activations are quantized to (ggml's vec_dot_type)
Q8_0_TYPES = frozenset({_T.Q4_0, _T.Q5_0, _T.Q8_0})
Q8_1_TYPES = frozenset({_T.Q4_1, _T.Q5_1})
Q8_K_TYPES = frozenset({_T.Q2_K, _T.Q3_K, _T.Q4_K, _T.Q5_K, _T.Q6_K})
FLOAT_TYPES = frozenset({_T.F32, _T.F16, _T.BF16})
SUPPORTED_TYPES = Q8_0_TYPES | Q8_1_TYPES | Q8_K_TYPES | FLOAT_TYPES
# the integer kernels of kernels.c (Q2_K and Q3_K have prepared activations but no kernel here)
KERNEL_TYPES = SUPPORTED_TYPES - {_T.Q2_K, _T.Q3_K}


@dataclass(frozen=True)
class PreparedAct:
    """Activations (n_tokens, n) prepared for one weight type."""

    weight_type: GGMLQuantizationType
    q: np.ndarray | None  # int8 (n_tokens, n) for the quantized types
    d: np.ndarray | None  # f32 (n_tokens, n / block): block scales (f16-rounded for Q8_0/Q8_1)
    s: np.ndarray | None  # f32 (n_tokens, n / 32): Q8_1's f16(d * sum(q))
    bsums: np.ndarray | None  # int16 (n_tokens, n / 16): Q8_K's sums of 16
    f: np.ndarray | None  # f32 (n_tokens, n) for the float types


def _check(x: np.ndarray, weight_type: GGMLQuantizationType) -> GGMLQuantizationType:
    weight_type = quants.ggml_type_of(weight_type)
    if weight_type not in SUPPORTED_TYPES:
        names = ", ".join(sorted(t.name for t in SUPPORTED_TYPES))
        raise ValueError(f"no integer kernel for {weight_type.name} weights; these have one: {names}")
    block = _act_block(weight_type)
    if x.ndim != 2 or x.dtype != np.float32 or x.shape[1] % block:
        raise ValueError(f"activations must be float32 (n_tokens, a multiple of {block}), got {x.dtype} {x.shape}")
    return weight_type


def _act_block(weight_type: GGMLQuantizationType) -> int:
    return 256 if weight_type in Q8_K_TYPES else 32 if weight_type in Q8_0_TYPES | Q8_1_TYPES else 1


def _round_f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


def _round_bf16(x: np.ndarray) -> np.ndarray:
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return np.where(np.isnan(x), x, rounded.view(np.float32))


def quantize_act(x: np.ndarray, weight_type: GGMLQuantizationType | int | str) -> PreparedAct:
    """x f32 (n_tokens, n) prepared as ggml prepares it for a matmul against `weight_type`."""
    weight_type = _check(x, weight_type)
    if weight_type in FLOAT_TYPES:
        f = x.copy() if weight_type is _T.F32 else _round_f16(x) if weight_type is _T.F16 else _round_bf16(x)
        return PreparedAct(weight_type, None, None, None, None, f)
    n_tokens, n = x.shape
    if weight_type in Q8_K_TYPES:
        blocks = x.reshape(n_tokens, n // 256, 256)
        at_max = np.take_along_axis(blocks, np.abs(blocks).argmax(axis=2)[..., None], axis=2)[..., 0]
        with np.errstate(divide="ignore"):
            iscale = np.float32(-127.0) / at_max
        zero = at_max == 0
        iscale[zero] = 0
        q = np.minimum(np.rint(blocks * iscale[..., None]), 127).astype(np.int8)
        with np.errstate(divide="ignore"):
            d = np.where(zero, np.float32(0), np.float32(1.0) / iscale).astype(np.float32)
        bsums = q.reshape(n_tokens, n // 16, 16).sum(axis=2, dtype=np.int32).astype(np.int16)
        return PreparedAct(weight_type, q.reshape(n_tokens, n), d, None, bsums, None)
    blocks = x.reshape(n_tokens, n // 32, 32)
    amax = np.abs(blocks).max(axis=2)
    scale = amax / np.float32(127.0)
    with np.errstate(divide="ignore"):
        inverse = np.where(amax != 0, np.float32(127.0) / amax, np.float32(0)).astype(np.float32)
    q = np.rint(blocks * inverse[..., None]).astype(np.int8)
    s = None
    if weight_type in Q8_1_TYPES:
        s = _round_f16(scale * q.sum(axis=2, dtype=np.int32).astype(np.float32))
    return PreparedAct(weight_type, q.reshape(n_tokens, n), _round_f16(scale), s, None, None)


def to_bytes(act: PreparedAct) -> bytes:
    """The prepared rows in the C kernels' layout (kernels.c, icl_act_row_bytes), one after another."""
    if act.f is not None:
        return np.ascontiguousarray(act.f, dtype="<f4").tobytes()
    rows = []
    for t in range(act.q.shape[0]):
        parts = [act.q[t].tobytes(), act.d[t].astype("<f4").tobytes()]
        if act.s is not None:
            parts.append(act.s[t].astype("<f4").tobytes())
        if act.bsums is not None:
            parts.append(act.bsums[t].astype("<i2").tobytes())
        rows.append(b"".join(parts))
    return b"".join(rows)


@dataclass(frozen=True)
class BlasAct:
    """Prepared activations for a product by BLAS with dequantized weights."""

    values: np.ndarray  # f32 (n_tokens, n): q * d per block, or the rounded floats
    block_sums: np.ndarray | None  # Q4_1/Q5_1: f32 (n_tokens, n / 32), what ggml multiplies each block's m by


def for_blas(x: np.ndarray, weight_type: GGMLQuantizationType | int | str) -> BlasAct:
    """The activations ggml multiplies, as f32, for types this module prepares; others pass as they are."""
    weight_type = quants.ggml_type_of(weight_type)
    if weight_type not in SUPPORTED_TYPES:
        return BlasAct(x, None)
    act = quantize_act(x, weight_type)
    if act.f is not None:
        return BlasAct(act.f, None)
    block = _act_block(act.weight_type)
    n_tokens, n = act.q.shape
    values = act.q.reshape(n_tokens, n // block, block).astype(np.float32) * act.d[..., None]
    return BlasAct(values.reshape(n_tokens, n), act.s)


def block_mins(raw_rows: np.ndarray, weight_type: GGMLQuantizationType) -> np.ndarray:
    """Q4_1/Q5_1: each block's m, f32 (rows, blocks per row)."""
    type_size = GGML_QUANT_SIZES[weight_type][1]
    blocks = np.ascontiguousarray(raw_rows).reshape(raw_rows.shape[0], -1, type_size)
    return _f16(np.ascontiguousarray(blocks[..., 2:4]))


def min_correction(act: BlasAct, mins: np.ndarray) -> np.ndarray:
    """What turns `act.values @ dequantized.T` into ggml's sums for Q4_1/Q5_1: BLAS multiplies each
    block's m by the sum of the block's values, ggml by the block's s (f16(d * sum q))."""
    n_tokens, n = act.values.shape
    block_values = act.values.reshape(n_tokens, n // 32, 32).sum(axis=2, dtype=np.float32)
    return (act.block_sums - block_values) @ mins.T


# --- the integer kernels -----------------------------------------------------------------------


def _f16(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw).view("<f2").astype(np.float32)[..., 0]


def _int_values_32(blocks: np.ndarray, weight_type: GGMLQuantizationType) -> np.ndarray:
    """Integer weight values (rows, blocks, 32) of the 32-element block types."""
    def nibbles(qs: np.ndarray) -> np.ndarray:
        return np.concatenate([qs & 15, qs >> 4], axis=-1).astype(np.int32)

    def fifth_bits(qh: np.ndarray) -> np.ndarray:
        word = np.ascontiguousarray(qh).view("<u4").astype(np.int64)  # (rows, blocks, 1)
        return (((word >> np.arange(32)) & 1) << 4).astype(np.int32)

    if weight_type is _T.Q8_0:
        return blocks[..., 2:].view(np.int8).astype(np.int32)
    if weight_type is _T.Q4_0:
        return nibbles(blocks[..., 2:18]) - 8
    if weight_type is _T.Q4_1:
        return nibbles(blocks[..., 4:20])
    if weight_type is _T.Q5_0:
        return (nibbles(blocks[..., 6:22]) | fifth_bits(blocks[..., 2:6])) - 16
    return nibbles(blocks[..., 8:24]) | fifth_bits(blocks[..., 4:8])  # Q5_1


def _k_scales(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d, m, low = packed[..., 0:4].astype(np.int32), packed[..., 4:8].astype(np.int32), packed[..., 8:12].astype(np.int32)
    scales = np.concatenate([d & 63, (low & 15) | ((d >> 6) << 4)], axis=-1)
    mins = np.concatenate([m & 63, (low >> 4) | ((m >> 6) << 4)], axis=-1)
    return scales, mins


def _k_sums(blocks: np.ndarray, weight_type: GGMLQuantizationType, q: np.ndarray,
            bsums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact (sumi, summs) per (token, row, super-block); q (T, nb, 256), bsums (T, nb, 16)."""
    q = q.astype(np.int64)
    if weight_type is _T.Q6_K:
        ql, qh = blocks[..., :128].astype(np.int32), blocks[..., 128:192].astype(np.int32)
        values = np.empty(blocks.shape[:2] + (256,), np.int32)
        for h in range(2):
            lo, hi = ql[..., 64 * h: 64 * h + 32], ql[..., 64 * h + 32: 64 * h + 64]
            bits = qh[..., 32 * h: 32 * h + 32]
            for t, low in enumerate((lo & 15, hi & 15, lo >> 4, hi >> 4)):
                values[..., 128 * h + 32 * t: 128 * h + 32 * t + 32] = (low | (((bits >> (2 * t)) & 3) << 4)) - 32
        scales = blocks[..., 192:208].view(np.int8).astype(np.int64)  # (R, nb, 16)
        per16 = np.einsum("rbjk,tbjk->trbj", values.reshape(values.shape[:2] + (16, 16)).astype(np.int64),
                          q.reshape(q.shape[:2] + (16, 16)))
        return (per16 * scales[None]).sum(axis=3), None
    scales, mins = _k_scales(blocks[..., 4:16])
    qs = blocks[..., 48:176] if weight_type is _T.Q5_K else blocks[..., 16:144]
    qs = qs.reshape(qs.shape[:2] + (4, 32)).astype(np.int32)
    values = np.stack([qs & 15, qs >> 4], axis=3).reshape(qs.shape[:2] + (8, 32))
    if weight_type is _T.Q5_K:
        qh = blocks[..., 16:48].astype(np.int32)  # (R, nb, 32): bit j of qh[l] for sub-block j
        values = values | (((qh[..., None, :] >> np.arange(8)[:, None]) & 1) << 4)
    per32 = np.einsum("rbjl,tbjl->trbj", values.astype(np.int64), q.reshape(q.shape[:2] + (8, 32)))
    sumi = (per32 * scales[None]).sum(axis=3)
    pair_sums = bsums.astype(np.int64).reshape(bsums.shape[:2] + (8, 2)).sum(axis=3)  # (T, nb, 8)
    summs = np.einsum("rbj,tbj->trb", mins.astype(np.int64), pair_sums)
    return sumi, summs


def matmul(raw_rows: np.ndarray, weight_type: GGMLQuantizationType | int | str, act: PreparedAct) -> np.ndarray:
    """y (n_tokens, rows) = rows of raw GGUF bytes (rows, row bytes) against prepared activations,
    with kernels.h's integer sums and float steps."""
    weight_type = quants.ggml_type_of(weight_type)
    if weight_type not in KERNEL_TYPES:
        raise ValueError(f"no integer kernel for {weight_type.name} weights")
    if act.weight_type is not weight_type:
        raise ValueError(f"activations were prepared for {act.weight_type.name}, not {weight_type.name}")
    n_rows = raw_rows.shape[0]
    n = (act.f if act.f is not None else act.q).shape[1]
    block, type_size = GGML_QUANT_SIZES[weight_type]
    blocks = raw_rows.reshape(n_rows, n // block, type_size)
    if weight_type in FLOAT_TYPES:
        w = quants.dequantize(raw_rows.reshape(-1), weight_type, (n, n_rows))  # (rows, n)
        products = w[None, :, :] * act.f[:, None, :]  # exact for f16/bf16; f32 rounds like the kernels
        acc = np.zeros(products.shape[:2] + (4,), np.float32)
        for i in range(0, n, 4):
            acc[..., : min(4, n - i)] += products[..., i: i + 4]
        return (acc[..., 0] + acc[..., 1]) + (acc[..., 2] + acc[..., 3])
    n_tokens, nb = act.d.shape
    acc = np.zeros((n_tokens, n_rows, 4), np.float32)
    if weight_type in Q8_K_TYPES:
        sumi, summs = _k_sums(blocks, weight_type, act.q.reshape(n_tokens, nb, 256),
                              act.bsums.reshape(n_tokens, nb, 16))
        d = _f16(blocks[..., 208:210] if weight_type is _T.Q6_K else blocks[..., 0:2])  # (R, nb)
        for b in range(nb):
            scale = d[None, :, b] * act.d[:, None, b]
            acc[..., b % 4] += scale * sumi[..., b].astype(np.float32)
            if summs is not None:
                acc[..., b % 4] -= (_f16(blocks[:, b:b + 1, 2:4])[None, :, 0] * act.d[:, None, b]) * \
                    summs[..., b].astype(np.float32)
        return (acc[..., 0] + acc[..., 1]) + (acc[..., 2] + acc[..., 3])
    values = _int_values_32(blocks, weight_type).reshape(n_rows, nb, 4, 4, 2).astype(np.int64)
    q = act.q.reshape(n_tokens, nb, 4, 4, 2).astype(np.int64)
    lanes = np.einsum("rbgle,tbgle->trbl", values, q).astype(np.float32)  # (T, R, nb, 4), exact ints
    dw = _f16(blocks[..., 0:2])
    accm = np.zeros((n_tokens, n_rows), np.float32)
    for b in range(nb):
        acc += (dw[None, :, b] * act.d[:, None, b])[..., None] * lanes[:, :, b]
        if act.s is not None:
            accm += _f16(blocks[:, b:b + 1, 2:4])[None, :, 0] * act.s[:, None, b]
    return ((acc[..., 0] + acc[..., 1]) + (acc[..., 2] + acc[..., 3])) + accm
