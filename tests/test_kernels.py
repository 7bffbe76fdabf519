"""canisters/kernels: the wasm build (zig cc, run in wasmtime), the native build (_qmatmul) and the
numpy reference (canisters/llama/act_quant.py) give the same bits, for every weight type the
kernels cover, on random blocks with edge scales (subnormal, +-0, up to 65504) and edge
activations (zero blocks, ties of the rounding, tiny and large values); and they agree with
gguf.quants.dequantize to f32 rounding (the outside reference for the weights' values)."""

from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize

from canisters.kernels.build import ZigMissing, build_kernels_wasm
from canisters.llama import act_quant
from tests.synthetic_tensors import random_raw_blocks
from tests.toolchains import missing, require_module

T = GGMLQuantizationType
WASM_TYPES = [T.F32, T.F16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q4_K, T.Q5_K, T.Q6_K]  # the wasm yblock's types
NATIVE_ONLY_TYPES = [T.BF16, T.Q5_0, T.Q5_1]
IDS = [t.name for t in WASM_TYPES]


@pytest.fixture(scope="session")
def wasm_kernels(tmp_path_factory):
    from canisters.kernels.wasm_kernels import WasmKernels

    try:
        path = build_kernels_wasm(tmp_path_factory.mktemp("kernels") / "kernels.wasm")
    except ZigMissing as error:
        missing(str(error))
    return WasmKernels(path.read_bytes())


@pytest.fixture(scope="session")
def native():
    return require_module("canisters.llama._qmatmul", "build the extension: pip install -e .")


def n_for(ggml_type: GGMLQuantizationType, blocks: int = 3) -> int:
    block = GGML_QUANT_SIZES[ggml_type][0]
    return 77 if block == 1 else blocks * max(block, 32)


def edge_activations(n: int, n_tokens: int, rng: np.random.Generator) -> np.ndarray:
    """Random rows, then rows whose 32-blocks are zero, ties of round-half-even, tiny and large."""
    x = rng.standard_normal((n_tokens, n)).astype(np.float32) * np.float32(3.0)
    edge = np.zeros((4, n), np.float32)
    edge[1, :] = np.tile(np.array([127.0, 2.5, -3.5, 0.5, -0.5, 1.5, 126.5, -127.0], np.float32), n // 8 + 1)[:n]
    edge[2, :] = rng.standard_normal(n).astype(np.float32) * np.float32(1e-7)  # scales round to f16 zero
    edge[3, :] = rng.standard_normal(n).astype(np.float32) * np.float32(3e3)
    edge[3, 32:64] = 0.0  # a zero block inside a row
    return np.concatenate([x, edge])


def weight_rows(ggml_type: GGMLQuantizationType, n: int, n_rows: int, seed: int) -> np.ndarray:
    """Random bits with any finite f16 scale; F32 and BF16 values of magnitudes 1e-3 to 1e3 (random
    bits would overflow the sums)."""
    rng = np.random.default_rng(seed)
    if ggml_type in (T.F32, T.BF16):
        values = rng.standard_normal((n_rows, n)) * 10.0 ** rng.uniform(-3, 3, (n_rows, n))
        return np.ascontiguousarray(quantize(values.astype(np.float32), ggml_type)).view(np.uint8).reshape(n_rows, -1)
    return random_raw_blocks(ggml_type, (n, n_rows), rng).reshape(n_rows, -1)


def native_matmul(native, raw: np.ndarray, ggml_type: GGMLQuantizationType, n: int, x: np.ndarray,
                  simd: bool) -> np.ndarray:
    out = np.empty((x.shape[0], raw.shape[0]), np.float32)
    native.matmul(raw, ggml_type.value, n, x, out, 1, simd)
    return out


@pytest.mark.parametrize("ggml_type", WASM_TYPES, ids=IDS)
def test_activations_are_prepared_alike_in_wasm_native_and_numpy(wasm_kernels, native, ggml_type):
    n = n_for(ggml_type, blocks=2)
    x = edge_activations(n, 3, np.random.default_rng(1))
    reference = act_quant.to_bytes(act_quant.quantize_act(x, ggml_type))
    assert len(reference) == x.shape[0] * wasm_kernels.act_row_bytes(ggml_type.value, n)
    assert wasm_kernels.quantize_act(ggml_type.value, x) == reference
    assert native.quantize_act(x, ggml_type.value) == reference


def test_round_half_even_and_the_scales_are_ggmls():
    # x86 ggml: d = amax / 127 rounded to f16, q = round_half_even(x * (127 / amax))
    x = np.tile(np.array([127.0, 2.5, -3.5, 0.5, -0.5, 1.5, 126.5, -127.0], np.float32), 4)[None, :]
    act = act_quant.quantize_act(x, T.Q8_0)
    assert act.q[0, :8].tolist() == [127, 2, -4, 0, 0, 2, 126, -127]
    assert act.d[0, 0] == np.float32(1.0)
    # Q8_K: iscale = -127 / (the value of largest magnitude); d = 1 / iscale, in f32
    xk = np.zeros((1, 256), np.float32)
    xk[0, :4] = [254.0, 5.0, 3.0, -1.0]
    k = act_quant.quantize_act(xk, T.Q4_K)
    assert k.q[0, :4].tolist() == [-127, -2, -2, 0]  # 5 * -0.5 = -2.5 -> -2, 3 * -0.5 = -1.5 -> -2, 0.5 -> 0
    assert k.d[0, 0] == np.float32(-2.0) and k.bsums[0, 0] == -127 - 2 - 2
    # Q8_1's s is f16(d * sum(q)) with d before its rounding to f16
    s = act_quant.quantize_act(np.full((1, 32), 0.1, np.float32), T.Q4_1)
    assert s.s[0, 0] == np.float32(np.float16(np.float32(0.1) / np.float32(127) * np.float32(127 * 32)))


@pytest.mark.parametrize("ggml_type", WASM_TYPES, ids=IDS)
def test_wasm_native_and_numpy_matmuls_are_bit_equal(wasm_kernels, native, ggml_type):
    n, n_rows = n_for(ggml_type), 7
    if ggml_type in (T.F32, T.F16):
        n = 76  # the wasm float kernel runs 4 lanes; 77 (not a multiple of 4) is the portable tail path
    raw = weight_rows(ggml_type, n, n_rows, seed=2)
    x = edge_activations(n, 2, np.random.default_rng(3))
    act = act_quant.quantize_act(x, ggml_type)
    expected = act_quant.matmul(raw, ggml_type, act)
    wasm = wasm_kernels.matmul(ggml_type.value, raw, n, act_quant.to_bytes(act), x.shape[0])
    np.testing.assert_array_equal(wasm.view(np.uint32), expected.view(np.uint32))
    for simd in (True, False):
        got = native_matmul(native, raw, ggml_type, n, x, simd)
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("ggml_type", [T.F32, T.F16], ids=["F32", "F16"])
def test_float_rows_of_any_length(wasm_kernels, native, ggml_type):
    n = 77
    raw = weight_rows(ggml_type, n, 5, seed=4)
    x = edge_activations(n, 1, np.random.default_rng(5))
    act = act_quant.quantize_act(x, ggml_type)
    expected = act_quant.matmul(raw, ggml_type, act)
    wasm = wasm_kernels.matmul(ggml_type.value, raw, n, act_quant.to_bytes(act), x.shape[0])
    np.testing.assert_array_equal(wasm, expected)
    np.testing.assert_array_equal(native_matmul(native, raw, ggml_type, n, x, True), expected)


@pytest.mark.parametrize("ggml_type", NATIVE_ONLY_TYPES, ids=[t.name for t in NATIVE_ONLY_TYPES])
def test_native_only_types_equal_the_numpy_reference(native, ggml_type):
    n = n_for(ggml_type)
    raw = weight_rows(ggml_type, n, 6, seed=6)
    x = edge_activations(n, 2, np.random.default_rng(7))
    expected = act_quant.matmul(raw, ggml_type, act_quant.quantize_act(x, ggml_type))
    assert native.quantize_act(x, ggml_type.value) == act_quant.to_bytes(act_quant.quantize_act(x, ggml_type))
    for simd in (True, False):
        np.testing.assert_array_equal(native_matmul(native, raw, ggml_type, n, x, simd), expected)


@pytest.mark.parametrize("ggml_type", WASM_TYPES + NATIVE_ONLY_TYPES, ids=IDS + [t.name for t in NATIVE_ONLY_TYPES])
def test_integer_sums_agree_with_gguf_dequantize(ggml_type):
    # the outside reference: gguf's own decoding of the weights, times the prepared activations as f32
    n, n_rows = n_for(ggml_type), 9
    raw = weight_rows(ggml_type, n, n_rows, seed=8)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, n)).astype(np.float32)
    dense = np.asarray(gguf_dequantize(raw, ggml_type), np.float64).reshape(n_rows, n)
    prepared = act_quant.for_blas(x, ggml_type)
    expected = prepared.values.astype(np.float64) @ dense.T
    if prepared.block_sums is not None:
        expected += act_quant.min_correction(prepared, act_quant.block_mins(raw, ggml_type))
    scale = np.abs(prepared.values).astype(np.float64) @ np.abs(dense).T
    got = act_quant.matmul(raw, ggml_type, act_quant.quantize_act(x, ggml_type))
    assert (np.abs(got - expected) <= 1e-5 * scale + 1e-30).all()


def test_a_row_range_writes_only_those_rows(wasm_kernels):
    ggml_type, n, n_rows = T.Q4_K, 512, 6
    raw = weight_rows(ggml_type, n, n_rows, seed=10)
    x = np.random.default_rng(11).standard_normal((2, n)).astype(np.float32)
    act = act_quant.quantize_act(x, ggml_type)
    full = act_quant.matmul(raw, ggml_type, act)
    part = wasm_kernels.matmul(ggml_type.value, raw, n, act_quant.to_bytes(act), 2, rows=(2, 5))
    np.testing.assert_array_equal(part[:, 2:5], full[:, 2:5])
    assert (part[:, [0, 1, 5]] == 0).all()  # the harness zeroes y; rows outside the range stay so


def test_sizes_and_refusals(wasm_kernels):
    for ggml_type in WASM_TYPES:
        block, type_size = GGML_QUANT_SIZES[ggml_type]
        n = 4 * max(block, 32)
        assert wasm_kernels.row_bytes(ggml_type.value, n) == n // block * type_size
    assert wasm_kernels.row_bytes(T.Q4_K.value, 128) == 0  # not whole super-blocks
    assert wasm_kernels.row_bytes(T.Q2_K.value, 256) == 0  # a type the kernels do not cover
    assert wasm_kernels.act_row_bytes(T.Q8_0.value, 64) == 64 + 2 * 4
    assert wasm_kernels.act_row_bytes(T.Q4_1.value, 64) == 64 + 2 * 8
    assert wasm_kernels.act_row_bytes(T.Q6_K.value, 256) == 256 + 4 + 16 * 2


def test_the_wasm_build_imports_nothing(wasm_kernels):
    # freestanding: no libc, no WASI; the yblock links it without adding imports
    assert [(i.module, i.name) for i in wasm_kernels.module.imports] == []
