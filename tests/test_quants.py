"""canisters/llama/quants.py against gguf.quants.dequantize, the reference, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as reference_dequantize
from gguf.quants import quant_shape_to_byte_shape

from canisters.llama import quants
from tests.synthetic_tensors import (
    ALL_TYPES,
    QUANTIZABLE_TYPES,
    quantize_or_pack,
    random_raw_blocks,
    random_tensor_bytes,
)

T = GGMLQuantizationType
TYPES = sorted(ALL_TYPES, key=lambda t: t.value)


def ids(types):
    return [t.name for t in types]


def reference(raw: np.ndarray, ggml_type: GGMLQuantizationType) -> np.ndarray:
    return np.asarray(reference_dequantize(raw, ggml_type), dtype=np.float32)


def assert_same_bits(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    assert ours.dtype == theirs.dtype == np.float32
    mismatch = ours.view(np.uint32) != theirs.view(np.uint32)
    assert not mismatch.any(), f"{mismatch.sum()} values differ, first at {np.argwhere(mismatch)[0]}"


def matrix_shape(ggml_type: GGMLQuantizationType, blocks_per_row: int, n_rows: int) -> tuple[int, int]:
    return (GGML_QUANT_SIZES[ggml_type][0] * blocks_per_row, n_rows)


def test_supported_types_are_the_designed_ones():
    assert quants.SUPPORTED_TYPES == ALL_TYPES


@pytest.mark.parametrize("ggml_type", TYPES, ids=ids(TYPES))
def test_random_bits_match_reference(ggml_type):
    rng = np.random.default_rng(ggml_type.value)
    shape = matrix_shape(ggml_type, 3, 17)
    raw = random_raw_blocks(ggml_type, shape, rng)
    with np.errstate(all="ignore"):  # huge random scales overflow to inf in both implementations
        assert_same_bits(quants.dequantize(raw, ggml_type, shape), reference(raw, ggml_type))


@pytest.mark.parametrize("ggml_type", TYPES, ids=ids(TYPES))
def test_model_like_tensor_over_several_chunks_matches_reference(ggml_type):
    rng = np.random.default_rng(100 + ggml_type.value)
    # more elements than one decoding chunk, and not a multiple of it
    shape = matrix_shape(ggml_type, max(1, 512 // GGML_QUANT_SIZES[ggml_type][0]), 301)
    assert shape[0] * shape[1] > quants._CHUNK_ELEMENTS
    raw = random_tensor_bytes(ggml_type, shape, rng)
    ours = quants.dequantize(raw, ggml_type, shape)
    assert_same_bits(ours, reference(raw, ggml_type))
    assert np.isfinite(ours).all() and 0 < np.abs(ours).max() < 2


@pytest.mark.parametrize("ggml_type", [T.F16, T.BF16], ids=["F16", "BF16"])
def test_every_16_bit_pattern_matches_reference(ggml_type):
    raw = np.arange(1 << 16, dtype=np.uint16).view(np.uint8)  # includes inf, NaN, -0, subnormals
    assert_same_bits(quants.dequantize(raw, ggml_type, (1 << 16,)), reference(raw, ggml_type))


@pytest.mark.parametrize("ggml_type", sorted(QUANTIZABLE_TYPES, key=lambda t: t.value),
                         ids=ids(sorted(QUANTIZABLE_TYPES, key=lambda t: t.value)))
def test_round_trip_through_gguf_quantize_is_close(ggml_type):
    rng = np.random.default_rng(7)
    values = rng.standard_normal((8, 256), dtype=np.float32)
    raw = quantize_or_pack(values, ggml_type)
    decoded = quants.dequantize(raw, ggml_type, (256, 8))
    tolerance = {T.Q4_0: 0.5, T.Q4_1: 0.5, T.Q5_0: 0.25, T.Q5_1: 0.25, T.Q8_0: 0.03}.get(ggml_type, 0.02)
    np.testing.assert_allclose(decoded, values, atol=tolerance)


@pytest.mark.parametrize("ggml_type", TYPES, ids=ids(TYPES))
def test_row_ranges_equal_the_same_rows_of_the_whole(ggml_type):
    rng = np.random.default_rng(3)
    shape = matrix_shape(ggml_type, 2, 11)
    raw = random_tensor_bytes(ggml_type, shape, rng)
    whole = quants.dequantize(raw, ggml_type, shape)
    for start, stop in [(0, 1), (3, 8), (10, 11), (0, 11)]:
        assert_same_bits(quants.dequantize(raw, ggml_type, shape, rows=(start, stop)), whole[start:stop])


@pytest.mark.parametrize("ggml_type", TYPES, ids=ids(TYPES))
def test_planar_layout_round_trips_and_decodes_to_the_transposed_matrix(ggml_type):
    rng = np.random.default_rng(8)
    blocks_per_row, n_rows = 3, 2
    shape = matrix_shape(ggml_type, blocks_per_row, 5)
    raw = random_tensor_bytes(ggml_type, shape, rng)
    rows = quants.select_rows(raw, ggml_type, shape, rows=(1, 1 + n_rows))
    planar = quants.to_planar(rows, ggml_type)
    np.testing.assert_array_equal(quants.from_planar(planar, ggml_type), rows)
    block_size = GGML_QUANT_SIZES[ggml_type][0]
    out = np.empty(n_rows * shape[0], dtype=np.float32)
    scaled, offsets = quants.decode_planar(planar, ggml_type, out)
    has_offsets = ggml_type in (T.Q4_1, T.Q5_1, T.Q2_K, T.Q4_K, T.Q5_K)
    assert (offsets is not None) == has_offsets
    if has_offsets:  # row k * S + s of offsets covers sub-block k of block s
        n_sub = offsets.shape[0] // blocks_per_row
        spread = scaled.reshape(n_sub, -1, blocks_per_row, n_rows)
        np.add(spread, offsets.reshape(n_sub, 1, blocks_per_row, n_rows), out=spread)
    # planar input order: row j * S + s of W.T is input s * block_size + j
    expected = reference(raw, ggml_type)[1 : 1 + n_rows].reshape(n_rows, -1, block_size).transpose(2, 1, 0)
    assert_same_bits(scaled, np.ascontiguousarray(expected).reshape(-1, n_rows))


def test_decodes_into_a_given_buffer():
    rng = np.random.default_rng(4)
    shape = (256, 6)
    raw = random_tensor_bytes(T.Q4_K, shape, rng)
    out = np.full((4, 256), np.nan, dtype=np.float32)
    result = quants.dequantize(raw, T.Q4_K, shape, rows=(1, 5), out=out)
    assert np.shares_memory(result, out)
    assert_same_bits(out, quants.dequantize(raw, T.Q4_K, shape)[1:5])


def test_reads_a_read_only_memmap_slice(tmp_path):
    rng = np.random.default_rng(5)
    shape = (64, 9)
    raw = random_tensor_bytes(T.Q5_1, shape, rng)
    path = tmp_path / "tensor.bin"
    path.write_bytes(b"\x00" * 13 + raw.tobytes())
    mapped = np.memmap(path, dtype=np.uint8, mode="r")[13:]
    assert not mapped.flags.writeable
    assert_same_bits(quants.dequantize(mapped, T.Q5_1, shape), reference(raw, T.Q5_1))


def test_vector_and_three_dimensional_shapes():
    rng = np.random.default_rng(6)
    vector = random_tensor_bytes(T.F32, (40,), rng)
    assert quants.dequantize(vector, T.F32, (40,)).shape == (40,)
    cube = random_tensor_bytes(T.Q8_0, (32, 3, 2), rng)
    decoded = quants.dequantize(cube, T.Q8_0, (32, 3, 2))
    assert decoded.shape == (2, 3, 32)
    assert_same_bits(decoded.reshape(6, 32), reference(cube.reshape(6, -1), T.Q8_0))


@pytest.mark.parametrize("ggml_type", TYPES, ids=ids(TYPES))
def test_byte_sizes_agree_with_gguf(ggml_type):
    shape = matrix_shape(ggml_type, 5, 7)
    byte_shape = quant_shape_to_byte_shape(shape[::-1], ggml_type)
    assert quants.row_nbytes(ggml_type, shape[0]) == byte_shape[-1]
    assert quants.tensor_nbytes(ggml_type, shape) == byte_shape[0] * byte_shape[1]


def test_type_can_be_named_by_enum_id_or_name():
    assert quants.ggml_type_of(T.Q4_1) is T.Q4_1
    assert quants.ggml_type_of(3) is T.Q4_1
    assert quants.ggml_type_of("q4_1") is T.Q4_1


@pytest.mark.parametrize("bad", [T.IQ2_XXS, 4, 999, "Q9_9"])  # 4 was Q4_2, removed from ggml
def test_unsupported_type_is_a_clear_error(bad):
    with pytest.raises(quants.UnsupportedTensorType, match="supported types: F32, F16"):
        quants.dequantize(np.zeros(64, dtype=np.uint8), bad, (32,))


def test_named_unsupported_type_says_which():
    with pytest.raises(quants.UnsupportedTensorType, match=r"IQ2_XXS \(id 16\) is not supported"):
        quants.ggml_type_of(T.IQ2_XXS)


def test_truncated_bytes_name_type_shape_and_sizes():
    raw = random_tensor_bytes(T.Q6_K, (256, 4), np.random.default_rng(0))
    with pytest.raises(quants.TensorSizeError, match=r"Q6_K tensor of shape \(256, 4\).*needs 840 bytes, got 839"):
        quants.dequantize(raw.reshape(-1)[:-1], T.Q6_K, (256, 4))


def test_row_length_must_be_a_multiple_of_the_block_size():
    with pytest.raises(quants.TensorSizeError, match="multiple of 256.*ne0 = 100"):
        quants.dequantize(np.zeros(1000, dtype=np.uint8), T.Q4_K, (100, 2))


def test_bad_inputs_are_clear_errors():
    raw = np.zeros(quants.tensor_nbytes(T.Q8_0, (32, 4)), dtype=np.uint8)
    with pytest.raises(TypeError, match="uint8 numpy array"):
        quants.dequantize(raw.tobytes(), T.Q8_0, (32, 4))
    with pytest.raises(TypeError, match="got int8 array"):
        quants.dequantize(raw.view(np.int8), T.Q8_0, (32, 4))
    with pytest.raises(ValueError, match=r"row range \[2, 5\) is outside the tensor's 4 rows"):
        quants.dequantize(raw, T.Q8_0, (32, 4), rows=(2, 5))
    with pytest.raises(ValueError, match="C-contiguous"):
        quants.dequantize(np.zeros(2 * raw.size, dtype=np.uint8)[::2], T.Q8_0, (32, 4))
    with pytest.raises(ValueError, match="out must be a C-contiguous float32 array of 128 elements"):
        quants.dequantize(raw, T.Q8_0, (32, 4), out=np.empty(128, dtype=np.float64))
    with pytest.raises(quants.TensorSizeError, match="positive dimensions"):
        quants.dequantize(raw, T.Q8_0, (32, 0))


@pytest.mark.real_model
def test_smollm2_tensors_match_reference(smollm2_path):
    from gguf import GGUFReader

    reader = GGUFReader(smollm2_path)
    seen = set()
    for tensor in reader.tensors:
        if tensor.tensor_type in seen:
            continue
        seen.add(tensor.tensor_type)
        raw = np.asarray(tensor.data).view(np.uint8)
        shape = tuple(int(d) for d in tensor.shape)
        rows = (0, min(64, int(np.prod(shape[1:], dtype=np.int64))))
        ours = quants.dequantize(raw, tensor.tensor_type, shape, rows=rows)
        theirs = reference(raw.reshape(-1)[: quants.row_nbytes(tensor.tensor_type, shape[0]) * rows[1]],
                           tensor.tensor_type).reshape(ours.shape)
        assert_same_bits(ours, theirs)
    assert {T.Q4_1, T.F32} <= seen
