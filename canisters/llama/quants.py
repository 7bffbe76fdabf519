"""Dequantization of raw GGUF tensor bytes to f32.

Supports F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K. Block sizes
and byte sizes come from `gguf.constants`; the block layouts are ggml's (ggml-common.h).

Why our own and not `gguf.quants.dequantize`: canisters that keep weights quantized dequantize row
blocks on every use, so this is on the hot path. Here any row range can be decoded straight into a
caller's buffer (no concatenation, no per-call allocation of the whole tensor), the work runs in
cache-sized chunks, and bits are unpacked on uint8 with the int-to-f32 cast fused into the scale
multiply. benchmarks/bench_kernels.py measures it at about 1.5x to 4x gguf.quants (see its output).

Results equal `gguf.quants.dequantize` bit for bit for every supported type: each value is
computed with the same f32 operations in the same order (e.g. Q4_1 is `(d * q) + m`, Q4_K is
`((d * sc) * q) - (dmin * m)`), and f16 is converted by a table built with numpy's own f16 cast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

QK_K = 256  # elements per k-quant super-block

# Decoding runs over chunks of about this many elements so that the uint8 temporaries and the f32
# output stay in L2 cache between the passes (measured best around 32K to 128K on a 4 MiB L2).
_CHUNK_ELEMENTS = 64 * 1024


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


def _f16_field(blocks: np.ndarray, offset: int) -> np.ndarray:
    """The f16 at `offset` of every block, as f32 with shape (n_blocks, 1)."""
    return _F16_TO_F32[blocks[:, offset : offset + 2].view(np.uint16)]


def _nibbles(packed: np.ndarray, out: np.ndarray) -> None:
    """Split bytes (..., k) into low nibbles -> out[..., 0, :] and high nibbles -> out[..., 1, :]."""
    np.bitwise_and(packed, 0x0F, out=out[..., 0, :])
    np.right_shift(packed, 4, out=out[..., 1, :])


def _crumbs(packed: np.ndarray) -> np.ndarray:
    """Split bytes (..., k) into their four 2-bit fields: (..., 4, k), field t = bits 2t..2t+1."""
    fields = np.right_shift(packed[..., None, :], _SHIFTS_2BIT[:, None])
    np.bitwise_and(fields, 0x03, out=fields)
    return fields


def _bits(packed: np.ndarray, shift_to: int) -> np.ndarray:
    """Bytes (n, k) -> (n, 8, k): bit s of each byte, moved to bit position `shift_to`."""
    bits = np.right_shift(packed[:, None, :], _SHIFTS_1BIT[:, None])
    np.bitwise_and(bits, 0x01, out=bits)
    np.left_shift(bits, shift_to, out=bits)
    return bits


def _decode_f32(blocks: np.ndarray, out: np.ndarray) -> None:
    np.copyto(out, blocks.view(np.float32))


def _decode_f16(blocks: np.ndarray, out: np.ndarray) -> None:
    np.take(_F16_TO_F32, blocks.view(np.uint16), out=out, mode="wrap")


def _decode_bf16(blocks: np.ndarray, out: np.ndarray) -> None:
    # bf16 is the top half of an f32
    np.left_shift(blocks.view(np.uint16), 16, out=out.view(np.uint32), dtype=np.uint32)


def _decode_q8_0(blocks: np.ndarray, out: np.ndarray) -> None:
    np.multiply(blocks[:, 2:].view(np.int8), _f16_field(blocks, 0), out=out)


def _decode_q4(blocks: np.ndarray, out: np.ndarray, qs_offset: int, has_min: bool) -> None:
    """Q4_0 (d * (q - 8)) and Q4_1 (d * q + m); element j < 16 is qs[j] & 15, j >= 16 is qs[j-16] >> 4."""
    n = blocks.shape[0]
    q = np.empty((n, 2, 16), dtype=np.uint8)
    _nibbles(blocks[:, qs_offset:], q)
    q = q.reshape(n, 32)
    if has_min:
        np.multiply(q, _f16_field(blocks, 0), out=out)
        np.add(out, _f16_field(blocks, 2), out=out)
    else:
        signed = q.view(np.int8)
        np.subtract(signed, 8, out=signed)
        np.multiply(signed, _f16_field(blocks, 0), out=out)


def _decode_q5(blocks: np.ndarray, out: np.ndarray, qh_offset: int, has_min: bool) -> None:
    """Q5_0 (d * (q - 16)) and Q5_1 (d * q + m): Q4's nibbles plus a fifth bit, bit j of the u32 qh."""
    n = blocks.shape[0]
    q = np.empty((n, 2, 16), dtype=np.uint8)
    _nibbles(blocks[:, qh_offset + 4 :], q)
    q = q.reshape(n, 32)
    high = np.unpackbits(blocks[:, qh_offset : qh_offset + 4], axis=1, bitorder="little")
    np.left_shift(high, 4, out=high)
    np.bitwise_or(q, high, out=q)
    if has_min:
        np.multiply(q, _f16_field(blocks, 0), out=out)
        np.add(out, _f16_field(blocks, 2), out=out)
    else:
        signed = q.view(np.int8)
        np.subtract(signed, 16, out=signed)
        np.multiply(signed, _f16_field(blocks, 0), out=out)


def _decode_q2_k(blocks: np.ndarray, out: np.ndarray) -> None:
    """Layout: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin.

    Element 128h + 32t + l is bits 2t..2t+1 of qs[32h + l]; sub-block of 16 uses scales[i].
    """
    n = blocks.shape[0]
    scales = blocks[:, :16]
    d_scale = np.multiply(_f16_field(blocks, 80), scales & 0x0F, dtype=np.float32)
    d_min = np.multiply(_f16_field(blocks, 82), scales >> 4, dtype=np.float32)
    q = _crumbs(blocks[:, 16:80].reshape(n, 2, 32)).reshape(n, 16, 16)
    out = out.reshape(n, 16, 16)
    np.multiply(q, d_scale[:, :, None], out=out)
    np.subtract(out, d_min[:, :, None], out=out)


def _q3_k_scales(packed: np.ndarray) -> np.ndarray:
    """12 bytes -> 16 signed 6-bit scales: low 4 bits from bytes 0..7 (both nibbles), high 2 bits
    from bytes 8..11 (four 2-bit fields each)."""
    n = packed.shape[0]
    low = np.empty((n, 2, 8), dtype=np.uint8)
    _nibbles(packed[:, :8], low)
    high = _crumbs(packed[:, 8:12])
    np.left_shift(high, 4, out=high)
    scales = (low.reshape(n, 16) | high.reshape(n, 16)).view(np.int8)
    np.subtract(scales, 32, out=scales)
    return scales


def _decode_q3_k(blocks: np.ndarray, out: np.ndarray) -> None:
    """Layout: hmask[32], qs[64], scales[12], d.

    Element 32s + l (s = 4h + t) is (bits 2t..2t+1 of qs[32h + l]) - 4 * (1 - bit s of hmask[l]).
    """
    n = blocks.shape[0]
    d_scale = np.multiply(_f16_field(blocks, 108), _q3_k_scales(blocks[:, 96:108]), dtype=np.float32)
    q = _crumbs(blocks[:, 32:96].reshape(n, 2, 32)).reshape(n, 8, 32)
    np.bitwise_or(q, _bits(blocks[:, :32], 2), out=q)  # (low | set_bit << 2) - 4
    signed = q.view(np.int8)
    np.subtract(signed, 4, out=signed)
    np.multiply(signed.reshape(n, 16, 16), d_scale[:, :, None], out=out.reshape(n, 16, 16))


def _k_scale_min(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K's 12 bytes -> eight 6-bit scales and eight 6-bit mins (ggml's get_scale_min_k4)."""
    d, m, low = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = np.concatenate([d & 0x3F, (low & 0x0F) | ((d >> 2) & 0x30)], axis=1)
    mins = np.concatenate([m & 0x3F, (low >> 4) | ((m >> 2) & 0x30)], axis=1)
    return scales, mins


def _k_scales_apply(blocks: np.ndarray, q: np.ndarray, out: np.ndarray) -> None:
    """out = (d * sc) * q - (dmin * m) per 32-element sub-block, for Q4_K and Q5_K."""
    n = blocks.shape[0]
    scales, mins = _k_scale_min(blocks[:, 4:16])
    d_scale = np.multiply(_f16_field(blocks, 0), scales, dtype=np.float32)
    d_min = np.multiply(_f16_field(blocks, 2), mins, dtype=np.float32)
    out = out.reshape(n, 8, 32)
    np.multiply(q.reshape(n, 8, 32), d_scale[:, :, None], out=out)
    np.subtract(out, d_min[:, :, None], out=out)


def _decode_q4_k(blocks: np.ndarray, out: np.ndarray) -> None:
    """Layout: d, dmin, scales[12], qs[128]; sub-blocks 2c and 2c+1 are the nibbles of qs[32c:32c+32]."""
    n = blocks.shape[0]
    q = np.empty((n, 4, 2, 32), dtype=np.uint8)
    _nibbles(blocks[:, 16:].reshape(n, 4, 32), q)
    _k_scales_apply(blocks, q, out)


def _decode_q5_k(blocks: np.ndarray, out: np.ndarray) -> None:
    """Layout: d, dmin, scales[12], qh[32], qs[128]; Q4_K's nibbles plus bit s of qh[l] for sub-block s."""
    n = blocks.shape[0]
    q = np.empty((n, 4, 2, 32), dtype=np.uint8)
    _nibbles(blocks[:, 48:].reshape(n, 4, 32), q)
    q = q.reshape(n, 8, 32)
    np.bitwise_or(q, _bits(blocks[:, 16:48], 4), out=q)
    _k_scales_apply(blocks, q, out)


def _decode_q6_k(blocks: np.ndarray, out: np.ndarray) -> None:
    """Layout: ql[128], qh[64], scales[16] (int8), d.

    Element 128h + 64k + i has low bits = nibble k of ql[64h + i]; element 128h + 32t + l has high
    bits = bits 2t..2t+1 of qh[32h + l]; value (low | high << 4) - 32, scale per 16 elements.
    """
    n = blocks.shape[0]
    q = np.empty((n, 2, 2, 64), dtype=np.uint8)
    _nibbles(blocks[:, :128].reshape(n, 2, 64), q)
    high = _crumbs(blocks[:, 128:192].reshape(n, 2, 32))
    np.left_shift(high, 4, out=high)
    q = q.reshape(n, 2, 4, 32)
    np.bitwise_or(q, high, out=q)
    signed = q.view(np.int8)
    np.subtract(signed, 32, out=signed)
    d_scale = np.multiply(_f16_field(blocks, 208), blocks[:, 192:208].view(np.int8), dtype=np.float32)
    np.multiply(signed.reshape(n, 16, 16), d_scale[:, :, None], out=out.reshape(n, 16, 16))


_T = GGMLQuantizationType

# decoder(blocks: uint8 (n_blocks, type_size), out: f32 (n_blocks, block_size)) fills `out`.
_DECODERS: Mapping[GGMLQuantizationType, Callable[[np.ndarray, np.ndarray], None]] = MappingProxyType(
    {
        _T.F32: _decode_f32,
        _T.F16: _decode_f16,
        _T.BF16: _decode_bf16,
        _T.Q8_0: _decode_q8_0,
        _T.Q4_0: lambda blocks, out: _decode_q4(blocks, out, qs_offset=2, has_min=False),
        _T.Q4_1: lambda blocks, out: _decode_q4(blocks, out, qs_offset=4, has_min=True),
        _T.Q5_0: lambda blocks, out: _decode_q5(blocks, out, qh_offset=2, has_min=False),
        _T.Q5_1: lambda blocks, out: _decode_q5(blocks, out, qh_offset=4, has_min=True),
        _T.Q2_K: _decode_q2_k,
        _T.Q3_K: _decode_q3_k,
        _T.Q4_K: _decode_q4_k,
        _T.Q5_K: _decode_q5_k,
        _T.Q6_K: _decode_q6_k,
    }
)

SUPPORTED_TYPES: frozenset[GGMLQuantizationType] = frozenset(_DECODERS)


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
    if ggml_type not in _DECODERS:
        raise UnsupportedTensorType(
            f"GGML tensor type {ggml_type.name} (id {ggml_type.value}) is not supported; "
            f"supported types: {_supported_names()}. Re-quantize the model to one of them "
            f"(e.g. llama-quantize model.gguf out.gguf Q4_K_M)."
        )
    return ggml_type


def _supported_names() -> str:
    return ", ".join(t.name for t in _DECODERS)


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

    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    blocks = selected.reshape(-1, type_size)
    out_blocks = out.reshape(-1, block_size)
    decode = _DECODERS[ggml_type]
    chunk = max(1, _CHUNK_ELEMENTS // block_size)
    for first in range(0, blocks.shape[0], chunk):
        decode(blocks[first : first + chunk], out_blocks[first : first + chunk])
    return out
