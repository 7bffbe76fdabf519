"""Dequantization of raw GGUF tensor bytes to f32.

Supports F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K. Block sizes
and byte sizes come from `gguf.constants`; the block layouts are ggml's (ggml-common.h).

Why our own and not `gguf.quants.dequantize`: canisters that keep weights quantized decode row
blocks on every use, so this is on the hot path. Here any row range decodes straight into a
caller's buffer (no concatenation, no allocation of the whole tensor), in cache-sized chunks, and
the quantized strategy decodes from a planar repacking of the same bytes (see `to_planar`) whose
inner loops run over all blocks at once. benchmarks/bench_kernels.py measures `dequantize` at
1.0x (Q8_0) to 2.5x gguf.quants' throughput, and the planar path of the block types at about 3x
`dequantize`.

Results equal `gguf.quants.dequantize` bit for bit for every supported type: each value is
computed with the same f32 operations in the same order (e.g. Q4_1 is `(d * q) + m`, Q4_K is
`((d * sc) * q) - (dmin * m)`), and f16 is converted by a table built with numpy's own f16 cast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

# Decoding runs over chunks of about this many elements so that the uint8 temporaries and the f32
# output stay in L2 cache between the passes (measured best at 128K to 256K on a 4 MiB L2: smaller
# chunks pay numpy's per-call overhead more often).
_CHUNK_ELEMENTS = 128 * 1024


class UnsupportedTensorType(ValueError):
    """The tensor's GGML type cannot be dequantized here."""


class TensorSizeError(ValueError):
    """A tensor's bytes or shape do not agree with its GGML type."""


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


# numpy's f16->f32 cast is not vectorized in this numpy build (about 1.6 ns per element); a 256 KiB
# table built with that same cast gives identical bits at about 0.6 ns per element.
_F16_TO_F32 = _read_only(np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32))

_SHIFTS_2BIT = _read_only(np.array([0, 2, 4, 6], dtype=np.uint8))
_SHIFTS_1BIT = _read_only(np.arange(8, dtype=np.uint8))

# The decoders below work on *planar* blocks: `fields` is (units per block, n_blocks), so byte k of
# every block is one contiguous row, and `out` is (block size, n_blocks). numpy's per-call overhead
# makes short inner loops slow (a block's 16- or 32-element runs cost 3-5x a long run), and here every
# inner loop runs over all n blocks. The quantized strategy keeps its bytes in this layout (see
# `to_planar`); `dequantize` transposes a cache-sized chunk in and out.
#
# A decoder writes the scaled part of each value into `out` and returns the additive part (Q4_1's m,
# the k-quants' -dmin * m) as offsets (sub-blocks per block, n_blocks), or None for types without
# one. `_decode_exact` adds them, which gives gguf.quants' bits (x - y and x + (-y) are the same
# IEEE operation); a matmul can instead apply them to sums of x, which saves a pass over the block.


def _shift_left(values: np.ndarray, bits: int, out: np.ndarray) -> None:
    """out = values << bits, as a multiplication: numpy's integer left shift is not vectorized
    (about 10x slower than multiply here); the results are identical, wrapping included."""
    np.multiply(values, 1 << bits, out=out, dtype=out.dtype)


def _scale(q: np.ndarray, scale: np.ndarray, out: np.ndarray) -> None:
    """out = f32(q) * scale. Casting first and then multiplying in f32 is about 1.7x faster than one
    mixed-type multiply (which numpy runs through a buffered cast), with the same result."""
    np.copyto(out, q)
    np.multiply(out, scale, out=out)


def _f16_field(fields: np.ndarray, offset: int) -> np.ndarray:
    """The little-endian f16 at byte `offset` of every block, as f32 of shape (n_blocks,)."""
    bits = fields[offset + 1].astype(np.uint16)
    _shift_left(bits, 8, out=bits)
    np.bitwise_or(bits, fields[offset], out=bits)
    return np.take(_F16_TO_F32, bits, mode="wrap")  # 3x faster than fancy indexing


def _nibbles(packed: np.ndarray) -> np.ndarray:
    """Bytes (..., k, n) -> (..., 2, k, n): low nibbles first, then high nibbles."""
    split = np.empty((*packed.shape[:-2], 2, *packed.shape[-2:]), dtype=np.uint8)
    np.bitwise_and(packed, 0x0F, out=split[..., 0, :, :])
    np.right_shift(packed, 4, out=split[..., 1, :, :])
    return split


def _crumbs(packed: np.ndarray) -> np.ndarray:
    """Bytes (..., k, n) -> (..., 4, k, n): field t is bits 2t..2t+1."""
    fields = np.empty((*packed.shape[:-2], 4, *packed.shape[-2:]), dtype=np.uint8)  # C order, as in _bits
    np.right_shift(packed[..., None, :, :], _SHIFTS_2BIT[:, None, None], out=fields)
    np.bitwise_and(fields, 0x03, out=fields)
    return fields


def _bits(packed: np.ndarray, shift_to: int, axis: int = 0) -> np.ndarray:
    """Bytes (k, n) -> (8, k, n), or (k, 8, n) for axis=1: bit s of each byte, moved to bit
    position `shift_to`."""
    shifts = _SHIFTS_1BIT.reshape((8,) + (1,) * (packed.ndim - axis))
    spread = np.expand_dims(packed, axis)
    # an explicit C-ordered output: numpy would lay a broadcast result out in the input's order
    bits = np.empty(np.broadcast_shapes(spread.shape, shifts.shape), dtype=np.uint8)
    np.right_shift(spread, shifts, out=bits)
    np.bitwise_and(bits, 0x01, out=bits)
    _shift_left(bits, shift_to, out=bits)
    return bits


def _signed(q: np.ndarray, offset: int) -> np.ndarray:
    """uint8 q -> int8 q - offset, in place (q < 128 + offset, so nothing wraps)."""
    signed = q.view(np.int8)
    np.subtract(signed, offset, out=signed)
    return signed


def _decode_f32(fields: np.ndarray, out: np.ndarray) -> None:
    np.copyto(out, fields)


def _decode_f16(fields: np.ndarray, out: np.ndarray) -> None:
    np.take(_F16_TO_F32, fields, out=out, mode="wrap")


def _decode_bf16(fields: np.ndarray, out: np.ndarray) -> None:
    # bf16 is the top half of an f32
    _shift_left(fields, 16, out=out.view(np.uint32))


def _decode_q8_0(fields: np.ndarray, out: np.ndarray) -> None:
    """Layout: d, qs[32] (int8); value d * q."""
    _scale(fields[2:].view(np.int8), _f16_field(fields, 0), out)


def _scale_and_offset(
    q: np.ndarray, fields: np.ndarray, has_min: bool, zero_point: int, out: np.ndarray
) -> np.ndarray | None:
    """Q4/Q5 (32 elements, f16 d at 0, f16 m at 2 if has_min): d * q + m, or d * (q - zero_point)."""
    if has_min:
        _scale(q, _f16_field(fields, 0), out)
        return _f16_field(fields, 2)[None, :]
    _scale(_signed(q, zero_point), _f16_field(fields, 0), out)
    return None


def _decode_q4(fields: np.ndarray, out: np.ndarray, has_min: bool) -> np.ndarray | None:
    """Q4_0 (d, qs[16]) and Q4_1 (d, m, qs[16]): element j < 16 is qs[j] & 15, j >= 16 is qs[j-16] >> 4."""
    qs = 4 if has_min else 2
    q = _nibbles(fields[qs : qs + 16]).reshape(32, -1)
    return _scale_and_offset(q, fields, has_min, 8, out)


def _decode_q5(fields: np.ndarray, out: np.ndarray, has_min: bool) -> np.ndarray | None:
    """Q5_0 (d, qh[4], qs[16]) and Q5_1 (d, m, qh[4], qs[16]): Q4's nibbles plus a fifth bit, bit j
    of the little-endian u32 qh for element j."""
    qh = 4 if has_min else 2
    q = _nibbles(fields[qh + 4 : qh + 20]).reshape(32, -1)
    # element j = 8 * byte + bit
    np.bitwise_or(q, _bits(fields[qh : qh + 4], 4, axis=1).reshape(32, -1), out=q)
    return _scale_and_offset(q, fields, has_min, 16, out)


def _decode_q2_k(fields: np.ndarray, out: np.ndarray) -> np.ndarray | None:
    """Layout: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin.

    Element 128h + 32t + l is bits 2t..2t+1 of qs[32h + l]; each 16 elements have their own scales[i].
    """
    scales = fields[:16]
    d_scale = np.multiply(_f16_field(fields, 80), scales & 0x0F, dtype=np.float32)
    d_min = np.multiply(_f16_field(fields, 82), scales >> 4, dtype=np.float32)
    q = _crumbs(fields[16:80].reshape(2, 32, -1)).reshape(16, 16, -1)
    _scale(q, d_scale[:, None, :], out.reshape(16, 16, -1))
    return np.negative(d_min, out=d_min)


def _q3_k_scales(packed: np.ndarray) -> np.ndarray:
    """12 bytes -> 16 signed 6-bit scales: low 4 bits are the nibbles of bytes 0..7, high 2 bits the
    2-bit fields of bytes 8..11."""
    low = _nibbles(packed[:8]).reshape(16, -1)
    high = _crumbs(packed[8:12]).reshape(16, -1)
    _shift_left(high, 4, out=high)
    np.bitwise_or(low, high, out=low)
    return _signed(low, 32)


def _decode_q3_k(fields: np.ndarray, out: np.ndarray) -> None:
    """Layout: hmask[32], qs[64], scales[12], d.

    Element 32s + l (s = 4h + t) is (bits 2t..2t+1 of qs[32h + l]) - 4 * (1 - bit s of hmask[l]).
    """
    d_scale = np.multiply(_f16_field(fields, 108), _q3_k_scales(fields[96:108]), dtype=np.float32)
    q = _crumbs(fields[32:96].reshape(2, 32, -1)).reshape(8, 32, -1)
    np.bitwise_or(q, _bits(fields[:32], 2), out=q)  # (low | set_bit << 2) - 4
    _scale(_signed(q, 4).reshape(16, 16, -1), d_scale[:, None, :], out.reshape(16, 16, -1))


def _k_scale_min(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K's 12 bytes -> eight 6-bit scales and eight 6-bit mins (ggml's get_scale_min_k4)."""
    d, m, low = packed[0:4], packed[4:8], packed[8:12]
    scales = np.concatenate([d & 0x3F, (low & 0x0F) | ((d >> 2) & 0x30)])
    mins = np.concatenate([m & 0x3F, (low >> 4) | ((m >> 2) & 0x30)])
    return scales, mins


def _k_scales_apply(fields: np.ndarray, q: np.ndarray, out: np.ndarray) -> np.ndarray:
    """(d * sc) * q - (dmin * m) per 32-element sub-block, for Q4_K and Q5_K."""
    scales, mins = _k_scale_min(fields[4:16])
    d_scale = np.multiply(_f16_field(fields, 0), scales, dtype=np.float32)
    d_min = np.multiply(_f16_field(fields, 2), mins, dtype=np.float32)
    _scale(q, d_scale[:, None, :], out.reshape(8, 32, -1))
    return np.negative(d_min, out=d_min)


def _decode_q4_k(fields: np.ndarray, out: np.ndarray) -> np.ndarray | None:
    """Layout: d, dmin, scales[12], qs[128]; sub-blocks 2c and 2c+1 are the nibbles of qs[32c:32c+32]."""
    q = _nibbles(fields[16:144].reshape(4, 32, -1)).reshape(8, 32, -1)
    return _k_scales_apply(fields, q, out)


def _decode_q5_k(fields: np.ndarray, out: np.ndarray) -> np.ndarray | None:
    """Layout: d, dmin, scales[12], qh[32], qs[128]; Q4_K's nibbles plus bit s of qh[l] for sub-block s."""
    q = _nibbles(fields[48:176].reshape(4, 32, -1)).reshape(8, 32, -1)
    np.bitwise_or(q, _bits(fields[16:48], 4), out=q)
    return _k_scales_apply(fields, q, out)


def _decode_q6_k(fields: np.ndarray, out: np.ndarray) -> None:
    """Layout: ql[128], qh[64], scales[16] (int8), d.

    Element 128h + 64k + i has low bits = nibble k of ql[64h + i]; element 128h + 32t + l has high
    bits = bits 2t..2t+1 of qh[32h + l]; value (low | high << 4) - 32, scale per 16 elements.
    """
    q = _nibbles(fields[:128].reshape(2, 64, -1)).reshape(2, 4, 32, -1)
    high = _crumbs(fields[128:192].reshape(2, 32, -1))
    _shift_left(high, 4, out=high)
    np.bitwise_or(q, high, out=q)
    d_scale = np.multiply(_f16_field(fields, 208), fields[192:208].view(np.int8), dtype=np.float32)
    _scale(_signed(q, 32).reshape(16, 16, -1), d_scale[:, None, :], out.reshape(16, 16, -1))


@dataclass(frozen=True)
class _Codec:
    # decode(fields: unit (units per block, n_blocks), out: f32 (block size, n_blocks)) fills `out`
    # with the scaled values and returns the offsets (sub-blocks, n_blocks) or None
    decode: Callable[[np.ndarray, np.ndarray], np.ndarray | None]
    # what a block is made of: bytes for the block formats; the element itself for F32/F16/BF16,
    # whose block is one element, so their planar layout is the plain transpose
    unit: type[np.generic] = np.uint8


_T = GGMLQuantizationType

_CODECS: Mapping[GGMLQuantizationType, _Codec] = MappingProxyType(
    {
        _T.F32: _Codec(_decode_f32, np.float32),
        _T.F16: _Codec(_decode_f16, np.uint16),
        _T.BF16: _Codec(_decode_bf16, np.uint16),
        _T.Q8_0: _Codec(_decode_q8_0),
        _T.Q4_0: _Codec(partial(_decode_q4, has_min=False)),
        _T.Q4_1: _Codec(partial(_decode_q4, has_min=True)),
        _T.Q5_0: _Codec(partial(_decode_q5, has_min=False)),
        _T.Q5_1: _Codec(partial(_decode_q5, has_min=True)),
        _T.Q2_K: _Codec(_decode_q2_k),
        _T.Q3_K: _Codec(_decode_q3_k),
        _T.Q4_K: _Codec(_decode_q4_k),
        _T.Q5_K: _Codec(_decode_q5_k),
        _T.Q6_K: _Codec(_decode_q6_k),
    }
)

SUPPORTED_TYPES: frozenset[GGMLQuantizationType] = frozenset(_CODECS)


def ggml_type_of(value: GGMLQuantizationType | int | str) -> GGMLQuantizationType:
    """The supported GGML type named by an enum member, its numeric id, or its name ("Q4_K")."""
    try:
        if isinstance(value, str):
            ggml_type = GGMLQuantizationType[value.upper()]
        else:
            ggml_type = GGMLQuantizationType(value)
    except (KeyError, ValueError):
        raise UnsupportedTensorType(
            f"unknown GGML tensor type {value!r}; supported types: {_supported_names()}"
        ) from None
    if ggml_type not in _CODECS:
        raise UnsupportedTensorType(
            f"GGML tensor type {ggml_type.name} (id {ggml_type.value}) is not supported; "
            f"supported types: {_supported_names()}. Re-quantize the model to one of them "
            f"(e.g. llama-quantize model.gguf out.gguf Q4_K_M)."
        )
    return ggml_type


def _supported_names() -> str:
    return ", ".join(t.name for t in _CODECS)


def row_nbytes(ggml_type: GGMLQuantizationType | int | str, n_in: int) -> int:
    """Bytes of one row of `n_in` elements (a row is ne0 elements, one output of a matrix)."""
    ggml_type = ggml_type_of(ggml_type)
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    if n_in <= 0 or n_in % block_size:
        raise TensorSizeError(
            f"a {ggml_type.name} row must hold a positive multiple of {block_size} elements "
            f"(its block size), got ne0 = {n_in}"
        )
    return n_in // block_size * type_size


def tensor_nbytes(ggml_type: GGMLQuantizationType | int | str, shape: Sequence[int]) -> int:
    """Bytes of a whole tensor with `shape` in GGUF order (ne0, ne1, ...)."""
    if len(shape) == 0 or any(dim <= 0 for dim in shape):
        raise TensorSizeError(f"tensor shape must be non-empty with positive dimensions, got {tuple(shape)}")
    return row_nbytes(ggml_type, shape[0]) * int(np.prod(shape[1:], dtype=np.int64))


def select_rows(
    raw: np.ndarray,
    ggml_type: GGMLQuantizationType | int | str,
    shape: Sequence[int],
    rows: tuple[int, int] | None = None,
) -> np.ndarray:
    """Check a tensor's raw bytes against its type and shape, and view rows [start, stop) of them.

    raw: the whole tensor's bytes, a C-contiguous uint8 array of any shape (e.g. a memmap slice).
    shape: GGUF order (ne0 = in, ne1 = out, ...); a row is ne0 elements, and the rows are all the
        dimensions after ne0, flattened.
    Returns a uint8 view (no copy) shaped (stop - start, row bytes); all rows if `rows` is None.
    """
    ggml_type = ggml_type_of(ggml_type)
    shape = tuple(int(dim) for dim in shape)
    expected = tensor_nbytes(ggml_type, shape)
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8:
        got = f"{raw.dtype} array" if isinstance(raw, np.ndarray) else type(raw).__name__
        raise TypeError(f"raw tensor bytes must be a uint8 numpy array (np.frombuffer(data, np.uint8)), got {got}")
    if raw.nbytes != expected:
        raise TensorSizeError(
            f"{ggml_type.name} tensor of shape {shape} (GGUF order) needs {expected} bytes, "
            f"got {raw.nbytes}; the file is truncated or the tensor info is wrong"
        )
    if not raw.flags.c_contiguous:
        raise ValueError("raw tensor bytes must be C-contiguous (pass a slice of the file, not a strided view)")
    row_bytes = row_nbytes(ggml_type, shape[0])
    n_rows = expected // row_bytes
    start, stop = (0, n_rows) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= start < stop <= n_rows:
        raise ValueError(f"row range [{start}, {stop}) is outside the tensor's {n_rows} rows")
    return raw.reshape(n_rows, row_bytes)[start:stop]


def dequantize(
    raw: np.ndarray,
    ggml_type: GGMLQuantizationType | int | str,
    shape: Sequence[int],
    rows: tuple[int, int] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode a GGUF tensor's raw bytes (or rows [start, stop) of them) to f32.

    raw, shape, rows: as for `select_rows`; only the selected rows' bytes are read, and a
        read-only buffer is fine (it is never written).
    out: optional C-contiguous f32 array to write into, with as many elements as the result.

    Returns f32 in numpy order: the reversed `shape` ((ne1, ne0) for a matrix, (ne0,) for a
    vector), or (stop - start, ne0) when `rows` is given.
    """
    ggml_type = ggml_type_of(ggml_type)
    selected = select_rows(raw, ggml_type, shape, rows)
    n_in = int(shape[0])
    result_shape = tuple(int(dim) for dim in shape[::-1]) if rows is None else (selected.shape[0], n_in)
    if out is None:
        out = np.empty(result_shape, dtype=np.float32)
    elif out.dtype != np.float32 or not out.flags.c_contiguous or out.size != selected.shape[0] * n_in:
        raise ValueError(
            f"out must be a C-contiguous float32 array of {selected.shape[0] * n_in} elements, "
            f"got a {'' if out.flags.c_contiguous else 'non-contiguous '}{out.dtype} array of {out.size}"
        )
    else:
        out = out.reshape(result_shape)

    codec = _CODECS[ggml_type]
    block_size = GGML_QUANT_SIZES[ggml_type][0]
    blocks = selected.reshape(-1).view(codec.unit).reshape(-1, _units_per_block(ggml_type))
    out_blocks = out.reshape(-1, block_size)
    chunk = max(1, _CHUNK_ELEMENTS // block_size)
    planar_out = np.empty((block_size, min(chunk, blocks.shape[0])), dtype=np.float32)
    for first in range(0, blocks.shape[0], chunk):
        chunk_blocks, chunk_out = blocks[first : first + chunk], out_blocks[first : first + chunk]
        if block_size == 1:  # one element per block: block-major and planar are the same flat run
            codec.decode(chunk_blocks.T, chunk_out.T)
        else:
            chunk_planar_out = planar_out[:, : chunk_blocks.shape[0]]
            _decode_exact(codec, np.ascontiguousarray(chunk_blocks.T), chunk_planar_out)
            np.copyto(chunk_out, chunk_planar_out.T)
    return out


def to_planar(rows: np.ndarray, ggml_type: GGMLQuantizationType | int | str) -> np.ndarray:
    """Repack rows of raw bytes (n_rows, row bytes), as from `select_rows`, into the planar layout
    (units per block, blocks per row, n_rows): the same bytes, with block field k of every block
    contiguous, so that `decode_planar` runs long inner loops. Returns a new C-contiguous array."""
    ggml_type = ggml_type_of(ggml_type)
    units = rows.reshape(rows.shape[0], -1).view(_CODECS[ggml_type].unit)
    blocks = units.reshape(rows.shape[0], -1, _units_per_block(ggml_type))
    return np.ascontiguousarray(blocks.transpose(2, 1, 0))


def from_planar(planar: np.ndarray, ggml_type: GGMLQuantizationType | int | str) -> np.ndarray:
    """The inverse of `to_planar`: uint8 raw bytes (n_rows, row bytes)."""
    n_rows = planar.shape[2]
    return np.ascontiguousarray(planar.transpose(2, 1, 0)).reshape(n_rows, -1).view(np.uint8)


def decode_planar(
    planar: np.ndarray, ggml_type: GGMLQuantizationType | int | str, out: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode planar rows (units per block, S blocks per row, R rows) into `out`, a C-contiguous f32
    array of block_size * S * R elements.

    Returns (scaled, offsets) with the input dimension in planar order, where W.T for those rows
    is `scaled` plus `offsets` spread over sub-blocks:
    - scaled: `out` shaped (block_size * S, R); row j * S + s holds input s * block_size + j;
    - offsets: None, or (n_sub * S, R) for types with an additive term (Q4_1, Q5_1, Q2_K, Q4_K,
      Q5_K): row k * S + s applies to inputs s * block_size + k * L ... + L - 1, L = block_size / n_sub.
    Adding them as f32 gives `dequantize`'s bits; a matmul adds `sums_of_x @ offsets` instead.
    """
    ggml_type = ggml_type_of(ggml_type)
    units, blocks_per_row, n_rows = planar.shape
    block_size = GGML_QUANT_SIZES[ggml_type][0]
    if not planar.flags.c_contiguous or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError("decode_planar needs C-contiguous planar bytes and a C-contiguous float32 out")
    out = out.reshape(block_size, blocks_per_row * n_rows)
    offsets = _CODECS[ggml_type].decode(planar.reshape(units, -1), out)
    scaled = out.reshape(block_size * blocks_per_row, n_rows)
    return scaled, None if offsets is None else offsets.reshape(-1, n_rows)


def _decode_exact(codec: _Codec, fields: np.ndarray, out: np.ndarray) -> None:
    offsets = codec.decode(fields, out)
    if offsets is not None:
        by_sub_block = out.reshape(offsets.shape[0], -1, out.shape[1])
        np.add(by_sub_block, offsets[:, None, :], out=by_sub_block)

def _units_per_block(ggml_type: GGMLQuantizationType) -> int:
    return GGML_QUANT_SIZES[ggml_type][1] // np.dtype(_CODECS[ggml_type].unit).itemsize
