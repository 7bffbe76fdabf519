"""canisters/llama/weights.py: both strategies against a dense f32 reference from gguf.quants."""

from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as reference_dequantize

from canisters.llama import act_quant, quants, weights
from canisters.llama.weights import Strategy, Weight
from cdk.meter import Work
from tests.synthetic_tensors import ALL_TYPES, random_tensor_bytes

T = GGMLQuantizationType
TYPES = sorted(ALL_TYPES, key=lambda t: t.value)
STRATEGIES = list(Strategy)


def reference(raw: np.ndarray, ggml_type: GGMLQuantizationType) -> np.ndarray:
    return np.asarray(reference_dequantize(raw, ggml_type), dtype=np.float32)


def make_matrix(ggml_type, n_out=24, blocks_per_row=2, seed=0):
    shape = (GGML_QUANT_SIZES[ggml_type][0] * blocks_per_row, n_out)
    raw = random_tensor_bytes(ggml_type, shape, np.random.default_rng(seed))
    return raw, shape, reference(raw, ggml_type)


def assert_matmul_close(y: np.ndarray, x: np.ndarray, dense: np.ndarray, ggml_type: GGMLQuantizationType,
                        raw: np.ndarray) -> None:
    # x as ggml prepares it for the type (8-bit blocks; for Q4_1/Q5_1 the m of each block times Q8_1's sum)
    prepared = act_quant.for_blas(x, ggml_type)
    expected = prepared.values.astype(np.float64) @ dense.astype(np.float64).T
    if prepared.block_sums is not None:
        expected += act_quant.min_correction(prepared, act_quant.block_mins(raw, ggml_type))
    x = prepared.values
    # f32 accumulation over `in` terms of size |x||w|: allow that rounding, nothing more
    bound = 1e-6 * np.sqrt(dense.shape[1]) * (np.abs(x) @ np.abs(dense).T) + 1e-30
    assert y.dtype == np.float32 and y.shape == expected.shape
    assert (np.abs(y - expected) <= bound * 8).all(), np.max(np.abs(y - expected) / bound)


@pytest.mark.parametrize("strategy", STRATEGIES, ids=[s.value for s in STRATEGIES])
@pytest.mark.parametrize("ggml_type", TYPES, ids=[t.name for t in TYPES])
def test_matmul_equals_dense_reference(ggml_type, strategy):
    raw, shape, dense = make_matrix(ggml_type)
    weight = Weight.load(raw, ggml_type, shape, strategy)
    rng = np.random.default_rng(1)
    for n_tokens in (1, 5):
        x = rng.standard_normal((n_tokens, shape[0]), dtype=np.float32)
        assert_matmul_close(weight.matmul(x, Work()), x, dense, ggml_type, raw.reshape(shape[1], -1))


@pytest.mark.parametrize("strategy", STRATEGIES, ids=[s.value for s in STRATEGIES])
def test_matmul_over_many_row_blocks(strategy):
    # 4096 inputs: the quantized strategy decodes 64 rows per block, so 200 rows take 4 blocks
    raw, shape, dense = make_matrix(T.Q4_0, n_out=200, blocks_per_row=128)
    weight = Weight.load(raw, T.Q4_0, shape, strategy)
    x = np.random.default_rng(2).standard_normal((3, shape[0]), dtype=np.float32)
    assert_matmul_close(weight.matmul(x, Work()), x, dense, T.Q4_0, raw.reshape(shape[1], -1))
    ids = np.array([199, 0, 64, 63, 130, 64])
    np.testing.assert_array_equal(weight.rows(ids), dense[ids])
    np.testing.assert_array_equal(weight.dense(), dense)


@pytest.mark.parametrize("strategy", STRATEGIES, ids=[s.value for s in STRATEGIES])
def test_meter_gets_macs_and_weight_bytes(strategy):
    raw, shape, _ = make_matrix(T.Q4_1, n_out=16, blocks_per_row=4)
    weight = Weight.load(raw, T.Q4_1, shape, strategy)
    work = Work()
    weight.matmul(np.ones((3, shape[0]), dtype=np.float32), work)
    assert dict(work.mac_counts) == {weight.kernel_type: 3 * 128 * 16}
    if strategy is Strategy.DEQUANTIZE:
        assert weight.kernel_type == "F32" and work.bytes_touched == 128 * 16 * 4
    else:
        assert weight.kernel_type == "Q4_1" and work.bytes_touched == raw.nbytes


def test_resident_memory_of_each_strategy():
    shape = (2048, 1200)  # 2048 in: 128 rows of scratch
    raw = random_tensor_bytes(T.Q4_K, shape, np.random.default_rng(0))
    dequantized = Weight.load(raw, T.Q4_K, shape, "dequantize")
    quantized = Weight.load(raw, T.Q4_K, shape, "quantized")
    assert (dequantized.nbytes_resident, dequantized.nbytes_scratch) == (2048 * 1200 * 4, 0)
    assert (quantized.nbytes_resident, quantized.nbytes_scratch) == (raw.nbytes, weights.SCRATCH_BYTES)
    assert quantized.nbytes_resident * 5 < dequantized.nbytes_resident


def test_scratch_is_bounded_by_the_matrix_or_by_one_row():
    raw, shape, _ = make_matrix(T.Q8_0, n_out=5, blocks_per_row=1)
    assert Weight.load(raw, T.Q8_0, shape, "quantized").nbytes_scratch == 5 * 32 * 4
    wide = (weights.SCRATCH_BYTES // 4 + 32, 2)
    raw = random_tensor_bytes(T.Q8_0, wide, np.random.default_rng(0))
    assert Weight.load(raw, T.Q8_0, wide, "quantized").nbytes_scratch == wide[0] * 4


@pytest.mark.parametrize("strategy", STRATEGIES, ids=[s.value for s in STRATEGIES])
@pytest.mark.parametrize("ggml_type", [T.F16, T.Q5_0, T.Q6_K], ids=["F16", "Q5_0", "Q6_K"])
def test_row_slice_is_those_output_rows(ggml_type, strategy):
    raw, shape, dense = make_matrix(ggml_type, n_out=20)
    part = Weight.load(raw, ggml_type, shape, strategy, rows=(5, 12))
    assert part.shape == (shape[0], 7)
    x = np.random.default_rng(3).standard_normal((2, shape[0]), dtype=np.float32)
    assert_matmul_close(part.matmul(x, Work()), x, dense[5:12], ggml_type, raw.reshape(shape[1], -1)[5:12])
    np.testing.assert_array_equal(part.rows(np.array([0, 6])), dense[[5, 11]])
    np.testing.assert_array_equal(part.dense(), dense[5:12])


@pytest.mark.parametrize("strategy", STRATEGIES, ids=[s.value for s in STRATEGIES])
@pytest.mark.parametrize("ggml_type", [T.Q4_1, T.Q3_K, T.BF16], ids=["Q4_1", "Q3_K", "BF16"])
def test_rows_are_embedding_lookups(ggml_type, strategy):
    raw, shape, dense = make_matrix(ggml_type, n_out=30)
    weight = Weight.load(raw, ggml_type, shape, strategy)
    ids = np.array([7, 0, 29, 7])
    np.testing.assert_array_equal(weight.rows(ids), dense[ids])
    assert weight.rows(np.array([], dtype=np.int64)).shape == (0, shape[0])
    with pytest.raises(IndexError, match=r"row ids \[30, -1\] are outside this matrix's 30 rows"):
        weight.rows(np.array([3, 30, -1]))


@pytest.mark.parametrize("strategy", STRATEGIES, ids=[s.value for s in STRATEGIES])
def test_vector_dense_and_its_limits(strategy):
    values = np.random.default_rng(4).standard_normal(48, dtype=np.float32)
    weight = Weight.load(values.view(np.uint8), T.F32, (48,), strategy)
    dense = weight.dense()
    np.testing.assert_array_equal(dense, values)
    assert weight.shape == (48,) and weight.ggml_type is T.F32
    assert not dense.flags.writeable
    with pytest.raises(ValueError, match="matmul needs a matrix"):
        weight.matmul(np.ones((1, 48), dtype=np.float32), Work())
    with pytest.raises(ValueError, match="row lookup needs a matrix"):
        weight.rows(np.array([0]))


def test_dequantized_weight_does_not_depend_on_the_raw_buffer_afterwards():
    raw, shape, dense = make_matrix(T.Q8_0)
    weight = Weight.load(raw, T.Q8_0, shape, "dequantize")
    raw[:] = 0
    np.testing.assert_array_equal(weight.dense(), dense)
    assert weight.dense().flags.c_contiguous and weight.dense().shape == (shape[1], shape[0])


def test_load_errors_are_clear():
    raw, shape, _ = make_matrix(T.Q4_0)
    with pytest.raises(ValueError, match="unknown weight strategy 'fast'; choose one of dequantize, quantized"):
        Weight.load(raw, T.Q4_0, shape, "fast")
    with pytest.raises(ValueError, match="vector or a matrix"):
        Weight.load(raw, T.Q4_0, (32, 4, 6), "dequantize")
    with pytest.raises(ValueError, match="row range applies to a matrix"):
        Weight.load(raw[0, :18], T.Q4_0, (32,), "quantized", rows=(0, 1))
    with pytest.raises(ValueError, match=r"row range \[20, 30\) is outside the tensor's 24 rows"):
        Weight.load(raw, T.Q4_0, shape, "quantized", rows=(20, 30))
    with pytest.raises(quants.TensorSizeError, match="needs 864 bytes, got 846"):
        Weight.load(raw.reshape(-1)[:-18], T.Q4_0, shape, "quantized")
    with pytest.raises(quants.UnsupportedTensorType, match="IQ4_NL"):
        Weight.load(raw, T.IQ4_NL, shape, "dequantize")


@pytest.mark.parametrize("strategy", STRATEGIES, ids=[s.value for s in STRATEGIES])
def test_matmul_input_errors_are_clear(strategy):
    raw, shape, _ = make_matrix(T.Q8_0)
    weight = Weight.load(raw, T.Q8_0, shape, strategy)
    with pytest.raises(ValueError, match=r"float32 \(n_tokens, 64\), got float32 \(1, 63\)"):
        weight.matmul(np.ones((1, 63), dtype=np.float32), Work())
    with pytest.raises(ValueError, match=r"got float64 \(1, 64\)"):
        weight.matmul(np.ones((1, 64)), Work())
    with pytest.raises(ValueError, match=r"got float32 \(64,\)"):
        weight.matmul(np.ones(64, dtype=np.float32), Work())


@pytest.mark.real_model
@pytest.mark.parametrize("strategy", STRATEGIES, ids=[s.value for s in STRATEGIES])
def test_smollm2_ffn_matrix_both_strategies(smollm2_path, strategy):
    from canisters.llama.gguf_file import read_gguf

    gguf = read_gguf(smollm2_path)
    info = gguf.tensor("blk.0.ffn_down.weight")
    raw = gguf.tensor_bytes("blk.0.ffn_down.weight")
    weight = Weight.load(raw, info.ggml_type, info.shape, strategy)
    dense = reference(raw.reshape(info.shape[1], -1), info.ggml_type)
    x = np.random.default_rng(5).standard_normal((2, info.shape[0]), dtype=np.float32)
    assert_matmul_close(weight.matmul(x, Work()), x, dense, info.ggml_type, raw.reshape(info.shape[1], -1))
