"""Speed of the native quantized kernels (canisters/llama/_qmatmul.c) against f32 BLAS.

    python -m benchmarks.bench_qmatmul [--model smollm2] [--llama-cpp-python PYTHON] [--no-model]

1. Matrix-vector products (one token), per weight type, for W of shape (out, in) = 576x1536 (SmolLM2's
   ffn_down) and 4096x4096 (a 7B model's attention): the native kernel on 1 and 2 threads, f32 BLAS
   on the dequantized matrix (numpy's OpenBLAS, its own threads), and the numpy quantized path
   (planar decode + BLAS) that the kernels replace. Best of many runs, in microseconds per product.
   "hot" multiplies the same matrix every time, so it stays in cache where it fits; "cold" cycles
   through copies of it filling COLD_BYTES, so each product reads its weights from memory, as
   decoding a model does.
2. SmolLM2 decode and prefill through benchmarks/bench_model.py: weights `quantized` (native, 2 and 1
   threads; and the numpy fallback, ICLLAMA_NATIVE=0) and `dequantize`, each in its own process
   (printed first).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from gguf.constants import GGMLQuantizationType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from canisters.llama import _qmatmul, quants  # noqa: E402
from canisters.llama.weights import QuantizedWeight  # noqa: E402
from cdk.meter import Work  # noqa: E402
from tests.synthetic_tensors import random_tensor_bytes  # noqa: E402

T = GGMLQuantizationType
TYPES = (T.Q4_0, T.Q4_1, T.Q8_0, T.F16, T.Q4_K, T.Q6_K)
SHAPES = ((576, 1536), (4096, 4096))  # (out, in)
BATCHES = (1, 2, 4, 8, 16, 20, 24, 32, 64)
COLD_BYTES = 512 << 20  # more than this machine's L3 (480 MiB) and than a small model's weights


def best_us(fn, *args, budget_s: float = 0.3, min_runs: int = 5) -> float:
    """Best time of fn(*args) over as many runs as fit the budget: the minimum filters out other
    processes' noise."""
    fn(*args)
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times) * 1e6


def best_cold_us(fn, matrices: list, *args, passes: int = 3) -> float:
    """Best over `passes` of the mean time of fn(matrix, *args) over all the matrices."""
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for m in matrices:
            fn(m, *args)
        best = min(best, (time.perf_counter() - start) / len(matrices))
    return best * 1e6


def copies(array: np.ndarray) -> list[np.ndarray]:
    return [array.copy() for _ in range(max(1, COLD_BYTES // array.nbytes))]


def native(raw, ggml_type, n_in, x, y, n_threads) -> None:
    _qmatmul.matmul(raw, ggml_type.value, n_in, x, y, n_threads)


def blas(dense, x) -> None:
    np.matmul(x, dense.T)


def matrix(ggml_type: GGMLQuantizationType, n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    raw = random_tensor_bytes(ggml_type, (n_in, n_out), np.random.default_rng(0))
    return raw, quants.dequantize(raw, ggml_type, (n_in, n_out))


def bench_matvec() -> None:
    print("matrix-vector product, us (native: _qmatmul.matmul on 1|2 threads; BLAS: x @ W_f32.T; numpy: planar path)")
    print(f"{'':19}{'---------------- hot ----------------':>38}  {'--------- cold ---------':>26}")
    print(f"{'W (out x in)':>13} {'type':>5} {'native 1t':>9} {'2t':>7} {'f32 BLAS':>9} {'numpy':>9}"
          f"  {'native 1t':>9} {'2t':>7} {'f32 BLAS':>9}  {'cold 2t vs BLAS':>15}")
    for n_out, n_in in SHAPES:
        x = np.random.default_rng(1).standard_normal((1, n_in), dtype=np.float32)
        y = np.empty((1, n_out), dtype=np.float32)
        for ggml_type in TYPES:
            raw, dense = matrix(ggml_type, n_out, n_in)
            hot = [best_us(native, raw, ggml_type, n_in, x, y, k) for k in (1, 2)]
            hot.append(best_us(blas, dense, x))
            hot.append(best_us(QuantizedWeight(ggml_type, (n_in, n_out), raw).matmul, x, Work()))
            raws = copies(raw)
            cold = [best_cold_us(native, raws, ggml_type, n_in, x, y, k) for k in (1, 2)]
            del raws
            denses = copies(dense)
            cold.append(best_cold_us(blas, denses, x))
            del denses
            print(f"{n_out:>6}x{n_in:<6} {ggml_type.name:>5} {hot[0]:9.1f} {hot[1]:7.1f} {hot[2]:9.1f} {hot[3]:9.1f}"
                  f"  {cold[0]:9.1f} {cold[1]:7.1f} {cold[2]:9.1f}  {cold[2] / cold[1]:14.2f}x")


def bench_model(model: str, llama_cpp_python: str | None) -> None:
    runs = [
        ("quantized, native, 2 threads", "quantized", {}),
        ("quantized, native, 1 thread", "quantized", {"ICLLAMA_THREADS": "1"}),
        ("quantized, numpy fallback", "quantized", {"ICLLAMA_NATIVE": "0"}),
        ("dequantize (f32 BLAS)", "dequantize", {}),
    ]
    for label, strategy, env in runs:
        command = [sys.executable, "-m", "benchmarks.bench_model", "--model", model, "--weights", strategy]
        if llama_cpp_python and not env and strategy == "quantized":
            command += ["--llama-cpp-python", llama_cpp_python]
        print(f"\n== {label}: {' '.join(f'{k}={v}' for k, v in env.items())} {' '.join(command[1:])}")
        result = subprocess.run(command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True)
        print((result.stdout + result.stderr).rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--llama-cpp-python", help="a Python interpreter that can import llama_cpp (for the ratio)")
    parser.add_argument("--no-model", action="store_true", help="only the kernel figures")
    args = parser.parse_args()
    print(f"_qmatmul SIMD: {_qmatmul.SIMD}; host cores available: {len(os.sched_getaffinity(0))}")
    # the model runs first: a child inherits this process's peak RSS, which the cold copies below raise
    if not args.no_model:
        bench_model(args.model, args.llama_cpp_python)
    bench_matvec()


if __name__ == "__main__":
    main()
