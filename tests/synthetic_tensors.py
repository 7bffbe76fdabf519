"""Random but valid GGUF tensor bytes of every supported type, for tests and synthetic models.

Shapes are in GGUF order (ne0 = in, ne1 = out). Byte arrays come back shaped (out, row bytes),
which is what `gguf.GGUFWriter.add_tensor(name, array, raw_dtype=ggml_type)` takes as is.

Block layouts (f16 field offsets) follow ggml's block structs in ggml-common.h; they are written
out here independently of canisters/llama/quants.py so that a layout mistake there cannot hide in
the test data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import quantize

T = GGMLQuantizationType

# Every f16 field of a block: (byte offset, largest integer the decoder multiplies it by), so a scale
# of magnitude / multiplier keeps decoded values within about +-magnitude.
_F16_FIELDS: dict[GGMLQuantizationType, tuple[tuple[int, int], ...]] = {
    T.Q4_0: ((0, 8),),  # d * (q - 8), q in 0..15
    T.Q4_1: ((0, 15), (2, 1)),  # d * q + m
    T.Q5_0: ((0, 16),),
    T.Q5_1: ((0, 31), (2, 1)),
    T.Q8_0: ((0, 127),),
    T.Q2_K: ((80, 15 * 3), (82, 15)),  # d * sc * q - dmin * m; sc, m 4-bit; q 2-bit
    T.Q3_K: ((108, 32 * 4),),  # d * (sc - 32) * q; q in -4..3
    T.Q4_K: ((0, 63 * 15), (2, 63)),  # 6-bit scales and mins
    T.Q5_K: ((0, 63 * 31), (2, 63)),
    T.Q6_K: ((208, 128 * 32),),  # d * scale(int8) * (q - 32)
}

# Types that gguf.quants can quantize (gguf 0.17+); the k-quants it can only dequantize.
QUANTIZABLE_TYPES = frozenset({T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1})
K_QUANT_TYPES = frozenset({T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K})
ALL_TYPES = QUANTIZABLE_TYPES | K_QUANT_TYPES


def _byte_shape(ggml_type: GGMLQuantizationType, shape: Sequence[int]) -> tuple[int, ...]:
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    if shape[0] % block_size:
        raise ValueError(f"{ggml_type.name} needs ne0 to be a multiple of {block_size}, got shape {tuple(shape)}")
    return (*tuple(shape[1:])[::-1], shape[0] // block_size * type_size)


def quantize_or_pack(values: np.ndarray, ggml_type: GGMLQuantizationType) -> np.ndarray:
    """Encode f32 `values` (numpy order, (out, in)) as `ggml_type` with gguf.quants.

    Returns uint8 (out, row bytes). Only `QUANTIZABLE_TYPES`; gguf has no k-quant quantizer, so for
    those use `random_tensor_bytes`.
    """
    ggml_type = GGMLQuantizationType(ggml_type)
    if ggml_type not in QUANTIZABLE_TYPES:
        raise ValueError(
            f"gguf.quants cannot quantize to {ggml_type.name}; quantizable types: "
            f"{', '.join(sorted(t.name for t in QUANTIZABLE_TYPES))}. Use random_tensor_bytes for k-quants."
        )
    encoded = quantize(np.ascontiguousarray(values, dtype=np.float32), ggml_type)
    return np.ascontiguousarray(encoded).view(np.uint8).reshape(_byte_shape(ggml_type, values.shape[::-1]))


def random_tensor_bytes(
    ggml_type: GGMLQuantizationType, shape: Sequence[int], rng: np.random.Generator, magnitude: float = 1.0
) -> np.ndarray:
    """A random tensor that decodes to values within about +-`magnitude`, as model weights would.

    Quantizable types encode normal noise (std magnitude / 3) with gguf.quants; k-quants get random
    quant bits and scales, with every f16 field a finite value sized by `magnitude`.
    Returns uint8 (out, row bytes).
    """
    ggml_type = GGMLQuantizationType(ggml_type)
    if ggml_type in QUANTIZABLE_TYPES:
        values = rng.standard_normal(tuple(shape)[::-1], dtype=np.float32) * np.float32(magnitude / 3)
        return quantize_or_pack(values, ggml_type)
    raw = _random_bits(ggml_type, shape, rng)
    blocks = raw.reshape(-1, GGML_QUANT_SIZES[ggml_type][1])
    for offset, multiplier in _F16_FIELDS[ggml_type]:
        scale = rng.uniform(0.25, 1.0, blocks.shape[0]) * (magnitude / multiplier)
        _set_f16(blocks, offset, scale.astype(np.float16))
    return raw


def random_raw_blocks(ggml_type: GGMLQuantizationType, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Every bit random except that f16 fields are finite (any finite f16: subnormals, +-0, up to
    65504), to exercise a decoder on all bit patterns. F32/F16/BF16 are random finite values.
    Returns uint8 (out, row bytes)."""
    ggml_type = GGMLQuantizationType(ggml_type)
    raw = _random_bits(ggml_type, shape, rng)
    if ggml_type in (T.F32, T.F16, T.BF16):
        element = raw.view({T.F32: np.float32, T.F16: np.float16, T.BF16: np.uint16}[ggml_type])
        finite = element if ggml_type is not T.BF16 else (element.astype(np.uint32) << 16).view(np.float32)
        element[~np.isfinite(finite)] = 0
        return raw
    blocks = raw.reshape(-1, GGML_QUANT_SIZES[ggml_type][1])
    for offset, _ in _F16_FIELDS[ggml_type]:
        bits = rng.integers(0, 1 << 16, blocks.shape[0], dtype=np.uint16)
        bits[(bits & 0x7C00) == 0x7C00] &= 0x83FF  # an all-ones exponent is inf/NaN: clear it
        _set_f16(blocks, offset, bits.view(np.float16))
    return raw


def _random_bits(ggml_type: GGMLQuantizationType, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, _byte_shape(ggml_type, shape), dtype=np.uint8)


def _set_f16(blocks: np.ndarray, offset: int, values: np.ndarray) -> None:
    blocks[:, offset : offset + 2] = values.astype(np.float16).view(np.uint8).reshape(-1, 2)
