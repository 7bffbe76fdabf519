"""Speed of the native quantized kernels (canisters/llama/_qmatmul.c) against f32 BLAS.

    python -m benchmarks.bench_qmatmul [--model smollm2] [--llama-cpp-python PYTHON] [--no-model]

1. Matrix-vector products (one token), per weight type, for W of shape (out, in) = 576x1536 (SmolLM2's
   ffn_down) and 4096x4096 (a 7B model's attention): the native kernel on 1 and 2 threads, f32 BLAS
   on the dequantized matrix (numpy's OpenBLAS, its own threads), and the numpy quantized path
   (planar decode + BLAS) that the kernels replace. Best of many runs, in microseconds. The matrix
   is the same on every run, so it is cache-resident where it fits; the model figures below are the
   ones that include reading weights from memory.
2. Batches: the native kernel against decoding to f32 once for BLAS, by number of tokens, which is
   where weights.NATIVE_MAX_TOKENS comes from.
3. SmolLM2 decode and prefill through benchmarks/bench_model.py: weights `quantized` (native, 2 and 1
   threads; and the numpy fallback, ICLLAMA_NATIVE=0) and `dequantize`, each in its own process.
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
BATCHES = (1, 2, 4, 8, 12, 16, 32, 64)


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


def via_blas(raw, ggml_type, n_in, x, y, scratch) -> None:
    """y = x @ W.T by decoding W to f32 once (one thread, as weights.py does), then one BLAS call."""
    _qmatmul.dequantize(raw, ggml_type.value, n_in, scratch)
    np.matmul(x, scratch.T, out=y)


def matrix(ggml_type: GGMLQuantizationType, n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    raw = random_tensor_bytes(ggml_type, (n_in, n_out), np.random.default_rng(0))
    return raw, quants.dequantize(raw, ggml_type, (n_in, n_out))


def bench_matvec() -> None:
    print("matrix-vector product, best of runs, us  (native: _qmatmul.matmul; BLAS: x @ W_f32.T; numpy: planar path)")
    print(f"{'W (out x in)':>13} {'type':>5} {'native 1t':>10} {'native 2t':>10} {'f32 BLAS':>9} {'numpy':>9}"
          f" {'2t vs BLAS':>11}")
    for n_out, n_in in SHAPES:
        x = np.random.default_rng(1).standard_normal((1, n_in), dtype=np.float32)
        y = np.empty((1, n_out), dtype=np.float32)
        for ggml_type in TYPES:
            raw, dense = matrix(ggml_type, n_out, n_in)
            one, two = (best_us(_qmatmul.matmul, raw, ggml_type.value, n_in, x, y, k) for k in (1, 2))
            blas = best_us(np.matmul, x, dense.T)
            planar = QuantizedWeight(ggml_type, (n_in, n_out), raw)
            numpy_path = best_us(planar.matmul, x, Work())
            print(f"{n_out:>6}x{n_in:<6} {ggml_type.name:>5} {one:10.1f} {two:10.1f} {blas:9.1f} {numpy_path:9.1f}"
                  f" {blas / two:10.2f}x")


def bench_batches(ggml_type: GGMLQuantizationType = T.Q4_1, n_out: int = 1536, n_in: int = 576) -> None:
    raw, _ = matrix(ggml_type, n_out, n_in)
    scratch = np.empty((n_out, n_in), dtype=np.float32)
    print(f"\nbatches, {ggml_type.name} {n_out}x{n_in}, 2 threads, us: native kernel vs dequantize to f32 + BLAS")
    for n in BATCHES:
        x = np.random.default_rng(2).standard_normal((n, n_in), dtype=np.float32)
        y = np.empty((n, n_out), dtype=np.float32)
        native = best_us(_qmatmul.matmul, raw, ggml_type.value, n_in, x, y, 2)
        blas = best_us(via_blas, raw, ggml_type, n_in, x, y, scratch)
        faster = "native" if native < blas else "BLAS"
        print(f"  n={n:3}  native {native:9.1f}  dequantize+BLAS {blas:9.1f}  -> {faster}")


def bench_model(model: str, llama_cpp_python: str | None) -> None:
    runs = [
        ("quantized, native, 2 threads", "quantized", {}),
        ("quantized, native, 1 thread", "quantized", {"ICLLAMA_THREADS": "1"}),
        ("quantized, numpy fallback", "quantized", {"ICLLAMA_NATIVE": "0"}),
        ("dequantize (f32 BLAS)", "dequantize", {}),
    ]
    for label, weights, env in runs:
        command = [sys.executable, "-m", "benchmarks.bench_model", "--model", model, "--weights", weights]
        if llama_cpp_python and not env and weights == "quantized":
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
    bench_matvec()
    bench_batches()
    if not args.no_model:
        bench_model(args.model, args.llama_cpp_python)


if __name__ == "__main__":
    main()
