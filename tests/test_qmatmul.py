"""canisters/llama/_qmatmul.c (the native kernels) against quants.dequantize, and its use by weights.py.

Products are compared with float64 `x' @ dequantize(W).T`, x' the activations as ggml prepares
them (canisters/llama/act_quant.py; bit-exactness against its integer reference is
tests/test_kernels.py's): they agree to f32 rounding, within 1e-5 of the output's scale
(|x'| @ |W|.T). `dequantize` must be bit for bit. Skipped when the extension is not built; the
numpy fallback is covered by tests/test_weights.py then (and is compared with the native path here).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from canisters.llama import act_quant, quants, weights
from canisters.llama.weights import NativeQuantizedWeight, QuantizedWeight, Weight
from cdk.meter import Work
from tests.synthetic_tensors import random_raw_blocks, random_tensor_bytes
from tests.toolchains import require_module

qm = require_module("canisters.llama._qmatmul", "build the C extension (it needs a C compiler): pip install -e .")

T = GGMLQuantizationType
TYPES = [T(t) for t in qm.TYPES]
IDS = [t.name for t in TYPES]
REPO = Path(__file__).resolve().parents[1]


def odd_shape(ggml_type: GGMLQuantizationType, n_out: int = 37) -> tuple[int, int]:
    """GGUF (in, out). Element types get 77 inputs: two 32-wide groups, one of 8, and a 5-element tail."""
    block = GGML_QUANT_SIZES[ggml_type][0]
    return (77 if block == 1 else 3 * block), n_out


def make(ggml_type: GGMLQuantizationType, shape: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    raw = random_tensor_bytes(ggml_type, shape, np.random.default_rng(seed))
    return raw, quants.dequantize(raw, ggml_type, shape)


def assert_product_close(y: np.ndarray, x: np.ndarray, dense: np.ndarray, ggml_type: GGMLQuantizationType,
                         raw: np.ndarray | None = None) -> None:
    """y against float64 (x prepared as ggml does) @ dense.T; for Q4_1/Q5_1, whose blocks' m multiply
    Q8_1's f16 block sums, `raw` (the rows' bytes) gives the m."""
    prepared = act_quant.for_blas(np.ascontiguousarray(x), ggml_type)
    expected = prepared.values.astype(np.float64) @ dense.astype(np.float64).T
    if prepared.block_sums is not None:
        expected += act_quant.min_correction(prepared, act_quant.block_mins(raw, ggml_type))
    scale = np.abs(prepared.values).astype(np.float64) @ np.abs(dense).astype(np.float64).T
    assert y.dtype == np.float32 and y.shape == expected.shape
    error = np.abs(y - expected) / np.maximum(scale, 1e-30)
    assert error.max() <= 1e-5, f"relative error {error.max():.2e}"


def native_matmul(raw, ggml_type, n_in, x, **options) -> np.ndarray:
    out = np.empty((x.shape[0], raw.shape[0]), dtype=np.float32)
    qm.matmul(raw, ggml_type.value, n_in, x, out, **options)
    return out


@pytest.mark.parametrize("simd", [True, False], ids=["simd", "portable"])
@pytest.mark.parametrize("ggml_type", TYPES, ids=IDS)
def test_matmul_matches_dequantize_then_matmul(ggml_type, simd):
    shape = odd_shape(ggml_type)
    raw, dense = make(ggml_type, shape)
    rng = np.random.default_rng(1)
    for n_tokens in (1, 2, 3, 4, 5, 9):  # every remainder of the 4-token tile
        x = rng.standard_normal((n_tokens, shape[0]), dtype=np.float32)
        assert_product_close(native_matmul(raw, ggml_type, shape[0], x, simd=simd), x, dense, ggml_type, raw)


@pytest.mark.parametrize("simd", [True, False], ids=["simd", "portable"])
@pytest.mark.parametrize("ggml_type", TYPES, ids=IDS)
def test_dequantize_is_bit_exact_on_every_bit_pattern(ggml_type, simd):
    shape = odd_shape(ggml_type, n_out=9)
    raw = random_raw_blocks(ggml_type, shape, np.random.default_rng(2))  # subnormal scales, +-0, extremes
    out = np.empty(shape[::-1], dtype=np.float32)
    qm.dequantize(raw, ggml_type.value, shape[0], out, simd=simd)
    np.testing.assert_array_equal(out.view(np.uint32), quants.dequantize(raw, ggml_type, shape).view(np.uint32))


def test_simd_is_detected_on_this_machine():
    # the benchmarks' figures are for the AVX2 kernels; say so if they would silently not run
    assert qm.SIMD in ("avx2", "none")
    if sys.platform == "linux" and "avx2" in Path("/proc/cpuinfo").read_text():
        assert qm.SIMD == "avx2"


@pytest.mark.parametrize("ggml_type", [T.Q4_1, T.Q8_0, T.F16], ids=["Q4_1", "Q8_0", "F16"])
def test_threads_give_identical_results(ggml_type):
    # big enough to be cut into chunks for 2 and 3 threads; every row is computed whole by one thread
    shape = (512 if ggml_type is not T.F16 else 500, 1001)
    raw, dense = make(ggml_type, shape)
    x = np.random.default_rng(3).standard_normal((3, shape[0]), dtype=np.float32)
    one = native_matmul(raw, ggml_type, shape[0], x, n_threads=1)
    assert_product_close(one, x, dense, ggml_type, raw)
    for n_threads in (2, 3):
        np.testing.assert_array_equal(native_matmul(raw, ggml_type, shape[0], x, n_threads=n_threads), one)
        out = np.empty(shape[::-1], dtype=np.float32)
        qm.dequantize(raw, ggml_type.value, shape[0], out, n_threads=n_threads)
        np.testing.assert_array_equal(out, dense)


def test_concurrent_callers_share_the_pool_safely():
    # callers that find the pool busy run on their own thread; all must get their own right answer
    shape = (512, 700)
    matrices = [make(T.Q4_0, shape, seed) for seed in range(4)]
    x = np.random.default_rng(4).standard_normal((2, shape[0]), dtype=np.float32)
    expected = [native_matmul(raw, T.Q4_0, shape[0], x) for raw, _ in matrices]
    failures = []

    def work(index: int) -> None:
        raw, _ = matrices[index]
        for _ in range(30):
            if not np.array_equal(native_matmul(raw, T.Q4_0, shape[0], x, n_threads=2), expected[index]):
                failures.append(index)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_pool_works_in_a_forked_child():
    raw, dense = make(T.Q8_0, (512, 600))
    x = np.ones((1, 512), dtype=np.float32)
    native_matmul(raw, T.Q8_0, 512, x, n_threads=2)  # the parent's workers exist now
    pid = os.fork()
    if pid == 0:  # child: its pool must start afresh, not wait for the parent's workers
        ok = np.allclose(native_matmul(raw, T.Q8_0, 512, x, n_threads=2)[0], dense.sum(axis=1), rtol=1e-4)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("ggml_type", [T.Q4_1, T.Q6_K], ids=["Q4_1", "Q6_K"])
def test_row_slices_and_read_only_memmaps(tmp_path, ggml_type):
    shape = odd_shape(ggml_type, n_out=20)
    raw, dense = make(ggml_type, shape)
    path = tmp_path / "tensor.bin"
    raw.tofile(path)
    mapped = np.memmap(path, dtype=np.uint8, mode="r", shape=raw.shape)
    x = np.random.default_rng(5).standard_normal((2, shape[0]), dtype=np.float32)
    x.flags.writeable = False
    assert_product_close(native_matmul(mapped[5:12], ggml_type, shape[0], x), x, dense[5:12], ggml_type, raw[5:12])
    out = np.empty((7, shape[0]), dtype=np.float32)
    qm.dequantize(mapped[5:12], ggml_type.value, shape[0], out)
    np.testing.assert_array_equal(out, dense[5:12])


def test_argument_errors_are_clear():
    shape = (64, 4)
    raw, _ = make(T.Q8_0, shape)
    x = np.ones((2, 64), dtype=np.float32)
    out = np.empty((2, 4), dtype=np.float32)
    cases = [
        ((raw, T.Q8_0.value, 64, np.ones((64, 2), dtype=np.float32).T, out), "x must be a C-contiguous float32"),
        ((raw, T.Q8_0.value, 64, x.astype(np.float64), out), "x must be float32, got buffer format 'd'"),
        ((raw, T.Q8_0.value, 64, x, np.empty((2, 5), dtype=np.float32)), r"out must hold 8 float32"),
        ((raw, T.Q8_0.value, 64, x, np.empty((4, 2), dtype=np.float32)[:, :1]), "out must be a C-contiguous writable"),
        ((raw, T.Q8_0.value, 48, x, out), "n_in must be a positive multiple of the block size 32, got 48"),
        ((raw, T.Q8_0.value, 96, x, out), "w holds 272 bytes, not a whole number of 102-byte rows"),
        ((raw, T.Q8_0.value, 64, np.ones((2, 60), dtype=np.float32), out), "x holds 120 float32, not a whole"),
        ((raw, T.IQ4_NL.value, 64, x, out), "no kernel for GGML type id 20"),
        ((raw[:, :-1], T.Q8_0.value, 64, x, out), "w must be a C-contiguous byte buffer"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            qm.matmul(*args)
    read_only = np.empty((2, 4), dtype=np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="out must be a C-contiguous writable float32"):
        qm.matmul(raw, T.Q8_0.value, 64, x, read_only)
    shared = np.ones(128, dtype=np.float32)
    with pytest.raises(ValueError, match="out must not share memory with w or x"):
        qm.matmul(raw, T.Q8_0.value, 64, shared, shared[120:])
    with pytest.raises(ValueError, match="n_threads must be at least 1, got 0"):
        qm.matmul(raw, T.Q8_0.value, 64, x, out, n_threads=0)
    with pytest.raises(ValueError, match=r"out must hold 256 float32 \(n_rows x n_in\)"):
        qm.dequantize(raw, T.Q8_0.value, 64, out)


# --- weights.py: the quantized strategy's native path and its numpy fallback ---------------------

native_weights = pytest.mark.skipif(weights._native is None, reason="ICLLAMA_NATIVE=0 turns the native path off")


def load_both(monkeypatch, ggml_type, shape, rows=None):
    raw, dense = make(ggml_type, shape)
    native = Weight.load(raw, ggml_type, shape, "quantized", rows=rows)
    with monkeypatch.context() as patch:
        patch.setattr(weights, "_native", None)
        fallback = Weight.load(raw, ggml_type, shape, "quantized", rows=rows)
    assert isinstance(native, NativeQuantizedWeight) and isinstance(fallback, QuantizedWeight)
    return native, fallback, dense if rows is None else dense[rows[0] : rows[1]]


@native_weights
@pytest.mark.parametrize("ggml_type", TYPES, ids=IDS)
def test_native_weight_agrees_with_the_numpy_fallback(monkeypatch, ggml_type):
    native, fallback, dense = load_both(monkeypatch, ggml_type, odd_shape(ggml_type, n_out=45), rows=(3, 42))
    raw, _ = make(ggml_type, odd_shape(ggml_type, n_out=45))
    rng = np.random.default_rng(6)
    for n_tokens in (1, 16, 17, 33):
        x = rng.standard_normal((n_tokens, native.shape[0]), dtype=np.float32)
        work_native, work_fallback = Work(), Work()
        y = native.matmul(x, work_native)
        held = raw[3:42]
        assert_product_close(y, x, dense, ggml_type, held)
        assert_product_close(fallback.matmul(x, work_fallback), x, dense, ggml_type, held)
        assert dict(work_native.mac_counts) == dict(work_fallback.mac_counts)
        assert work_native.bytes_touched == work_fallback.bytes_touched
    ids = np.array([38, 0, 7, 7])
    np.testing.assert_array_equal(native.rows(ids), fallback.rows(ids))
    np.testing.assert_array_equal(native.dense(), fallback.dense())
    assert (native.nbytes_resident, native.nbytes_scratch) == (fallback.nbytes_resident, fallback.nbytes_scratch)


@native_weights
def test_native_weight_takes_non_contiguous_inputs(monkeypatch):
    native, _, dense = load_both(monkeypatch, T.Q4_1, (64, 10))
    wide = np.random.default_rng(7).standard_normal((3, 128), dtype=np.float32)
    x = wide[:, ::2]  # strided view
    assert not x.flags.c_contiguous
    assert_product_close(native.matmul(x, Work()), x, dense, T.Q4_1, make(T.Q4_1, (64, 10))[0])


def test_uncovered_types_use_the_numpy_path():
    raw, _ = make(T.Q3_K, (256, 4))
    assert T.Q3_K not in weights.NATIVE_TYPES
    assert isinstance(Weight.load(raw, T.Q3_K, (256, 4), "quantized"), QuantizedWeight)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True)


def test_environment_turns_the_native_path_off_and_sets_threads():
    code = "from canisters.llama import weights; print(weights._native is None, weights.THREADS)"
    assert run_python(code, ICLLAMA_NATIVE="0", ICLLAMA_THREADS="3").stdout.split() == ["True", "3"]
    result = run_python(code, ICLLAMA_THREADS="two")
    assert result.returncode != 0 and "ICLLAMA_THREADS must be a positive integer, got 'two'" in result.stderr


@native_weights
@pytest.mark.real_model
def test_smollm2_decode_on_the_native_path_gives_the_dequantize_logits(smollm2_path):
    # token by token, the native kernels against `dequantize` (BLAS) in one batch: 8-bit activations
    # turn f32 rounding differences into different roundings of a q now and then (as in llama.cpp,
    # whose batched and stepwise logits differ too), so the logits agree to a fraction of a logit and
    # the top-1 wherever the reference's two best are not a near-tie (measured: 0.99 logits at most,
    # 0.20 on average, one near-tie of 0.016 in 16 positions; dequantize stepwise against batched
    # differs as much, 0.94 at most)
    from canisters.llama.gguf_file import read_gguf
    from canisters.llama.meter import NullMeter
    from canisters.llama.model import Llama

    gguf = read_gguf(smollm2_path)
    dense, native = (Llama.load(gguf, strategy, n_ctx=32) for strategy in ("dequantize", "quantized"))
    tokens = [1, 504, 3458, 282, 4649, 314, 2114, 30, 378, 3458, 282, 4649, 314, 7042, 30, 2]
    expected = dense.forward(tokens, dense.new_cache(32), 0, NullMeter(), all_logits=True)
    cache = native.new_cache(32)
    stepwise = np.stack([native.forward([t], cache, i, NullMeter()) for i, t in enumerate(tokens)])
    assert np.abs(stepwise - expected).max() < 1.5 and np.abs(stepwise - expected).mean() < 0.3
    best_two = np.sort(expected, axis=1)[:, -2:]
    clear = best_two[:, 1] - best_two[:, 0] > 0.1
    assert clear.sum() >= 14
    assert np.array_equal(stepwise.argmax(1)[clear], expected.argmax(1)[clear])
