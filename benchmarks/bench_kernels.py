"""Speed of the quantized tensor kernels (canisters/llama/quants.py, weights.py).

Prints:
1. dequantization throughput per type, ours vs gguf.quants.dequantize (M weights/s);
2. single-token matvec time per strategy, for a 576x1536 and a 4096x4096 matrix;
3. the matmul time of one decoded token of SmolLM2-135M (its 211 matrix shapes, Q4_1), per
   strategy, to compare with the 0.5x llama.cpp target (about 35 tokens/s), and the same with f16
   or int8 storage cast to f32 in row blocks (an investigation: both lossy);
4. single cache-resident matrices: f32 BLAS against f16 and int8 formulations.

Timings are the best of several runs (the machine is shared). Run: python3 benchmarks/bench_kernels.py
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from canisters.llama import quants
from canisters.llama.meter import NullMeter
from canisters.llama.weights import Strategy, Weight
from tests.synthetic_tensors import random_tensor_bytes

T = GGMLQuantizationType
TYPES = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
MATVEC_TYPES = [T.F16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_1, T.Q4_K, T.Q6_K]


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def dequantize_throughput(repeats: int) -> None:
    shape = (1536, 576)  # GGUF order: 576 rows of 1536 (SmolLM2's ffn_down), 0.88 M weights
    n = shape[0] * shape[1]
    rng = np.random.default_rng(0)
    print(f"\n1. Dequantize throughput, {shape[1]} rows x {shape[0]} (M weights/s, best of {repeats})")
    print(f"{'type':6} {'ours':>8} {'gguf':>8} {'ratio':>6}")
    for ggml_type in TYPES:
        raw = random_tensor_bytes(ggml_type, shape, rng)
        out = np.empty((shape[1], shape[0]), dtype=np.float32)
        ours = best_seconds(lambda: quants.dequantize(raw, ggml_type, shape, out=out), repeats)  # noqa: B023
        theirs = best_seconds(lambda: gguf_dequantize(raw, ggml_type), repeats)  # noqa: B023
        if ggml_type is T.F32:  # gguf returns a view of the bytes for F32, we copy: not comparable
            print(f"{ggml_type.name:6} {n / ours / 1e6:8.0f} {'(view)':>8}")
            continue
        print(f"{ggml_type.name:6} {n / ours / 1e6:8.0f} {n / theirs / 1e6:8.0f} {theirs / ours:6.2f}")


def matvec_times(repeats: int) -> None:
    print(f"\n2. Single-token matvec x @ W.T (ms, best of {repeats}); in x out")
    rng = np.random.default_rng(1)
    header = f"{'type':6} {'shape':>11} {'dequantize':>11} {'quantized':>10} {'resident MiB deq/quant':>24}"
    print(header)
    for n_in, n_out in [(576, 1536), (1536, 576), (4096, 4096)]:
        x = rng.standard_normal((1, n_in), dtype=np.float32)
        for ggml_type in MATVEC_TYPES:
            if n_in % GGML_QUANT_SIZES[ggml_type][0]:
                continue  # k-quants need rows of a multiple of 256
            raw = random_tensor_bytes(ggml_type, (n_in, n_out), rng)
            loaded = {s: Weight.load(raw, ggml_type, (n_in, n_out), s) for s in Strategy}
            ms = {s: 1e3 * best_seconds(lambda: w.matmul(x, NullMeter()), repeats) for s, w in loaded.items()}  # noqa: B023
            mib = "/".join(f"{loaded[s].nbytes_resident / 2**20:.2f}" for s in Strategy)
            print(f"{ggml_type.name:6} {f'{n_in}x{n_out}':>11} {ms[Strategy.DEQUANTIZE]:11.3f} "
                  f"{ms[Strategy.QUANTIZED]:10.3f} {mib:>24}")


class ChunkedCastMatrix:
    """Investigation only: a matrix stored narrow (f16, or int8 with one scale per row) and cast to
    f32 one cache-sized row block at a time before BLAS. int8 per row is a lossy re-quantization,
    and f16 rounds Q4_1's f32 values, so neither is exact; they are here to see whether narrower
    storage would beat streaming f32 from memory."""

    def __init__(self, dense: np.ndarray, kind: str):
        self.kind = kind
        if kind == "f16":
            self.stored, self.row_scale = dense.astype(np.float16), None
        else:
            self.row_scale = np.abs(dense).max(axis=1) / 127
            self.stored = np.round(dense / self.row_scale[:, None]).astype(np.int8)
        self.block_rows = max(1, (1 << 18) // dense.shape[1])
        self.scratch = np.empty((self.block_rows, dense.shape[1]), dtype=np.float32)

    def matmul(self, x: np.ndarray) -> np.ndarray:
        y = np.empty((x.shape[0], self.stored.shape[0]), dtype=np.float32)
        for start in range(0, self.stored.shape[0], self.block_rows):
            rows = self.stored[start : start + self.block_rows]
            block = self.scratch[: rows.shape[0]]
            np.copyto(block, rows)
            np.matmul(x, block.T, out=y[:, start : start + rows.shape[0]])
        return y if self.row_scale is None else y * self.row_scale


def smollm2_token(repeats: int) -> None:
    """SmolLM2-135M: d_model 576, 30 layers, 9 heads / 3 KV heads of 64, d_ff 1536, vocab 49152 (tied)."""
    d, d_kv, d_ff, vocab, layers = 576, 192, 1536, 49152, 30
    shapes = [(d, d), (d, d_kv), (d, d_kv), (d, d), (d, d_ff), (d, d_ff), (d_ff, d)] * layers + [(d, vocab)]
    rng = np.random.default_rng(2)
    # Distinct weights per matrix, as in the model, so nothing stays cached from one matrix to the next.
    raws = [random_tensor_bytes(T.Q4_1, shape, rng) for shape in shapes]
    xs = {n_in: rng.standard_normal((1, n_in), dtype=np.float32) for n_in in (d, d_ff)}
    runs = max(2, repeats // 3)
    print(f"\n3. SmolLM2-135M shapes (211 matrices, 134.5 M weights), Q4_1: matmuls of one decoded token, "
          f"best of {runs}")

    def report(label: str, resident: int, token: Callable[[], None]) -> None:
        seconds = best_seconds(token, runs)
        print(f"  {label:44} {1e3 * seconds:7.1f} ms/token {1 / seconds:6.1f} tokens/s  "
              f"resident {resident / 2**20:5.0f} MiB")

    for strategy in Strategy:
        start = time.perf_counter()
        matrices = [Weight.load(raw, T.Q4_1, shape, strategy) for raw, shape in zip(raws, shapes, strict=True)]
        label = f"{strategy.value} strategy (load {time.perf_counter() - start:.1f} s)"
        report(label, sum(w.nbytes_resident for w in matrices),
               lambda matrices=matrices: [w.matmul(xs[w.shape[0]], NullMeter()) for w in matrices])
        if strategy is Strategy.DEQUANTIZE:
            dense = [w.dense() for w in matrices]
        del matrices
    for kind in ("f16", "int8"):
        narrow = [ChunkedCastMatrix(w, kind) for w in dense]
        report(f"{kind} storage, chunked cast + BLAS (lossy)", sum(m.stored.nbytes for m in narrow),
               lambda narrow=narrow: [m.matmul(xs[m.stored.shape[1]]) for m in narrow])


def alternatives(repeats: int) -> None:
    """Single cache-resident matrices: is anything cheaper than f32 BLAS per matvec?"""
    print(f"\n4. One cache-resident matrix, alternatives to f32 BLAS for a single token (ms, best of {repeats})")
    rng = np.random.default_rng(3)
    for n_in, n_out in [(576, 1536), (4096, 4096)]:
        w = rng.standard_normal((n_out, n_in), dtype=np.float32)
        x = rng.standard_normal((1, n_in), dtype=np.float32)
        w16, x16 = w.astype(np.float16), x.astype(np.float16)
        x_int = np.round(x * 127 / np.abs(x).max()).astype(np.int32)
        as_f16, as_int8 = ChunkedCastMatrix(w, "f16"), ChunkedCastMatrix(w, "int8")
        candidates = {
            "f32 BLAS x @ W.T": partial(np.matmul, x, w.T),
            "f16 numpy matmul (no BLAS)": partial(np.matmul, x16, w16.T),
            "f16 chunked cast + BLAS": partial(as_f16.matmul, x),
            "int8 chunked cast + BLAS": partial(as_int8.matmul, x),
            "int8 x int32 numpy matmul (no BLAS)": partial(np.matmul, x_int, as_int8.stored.T),
        }
        print(f"  {n_in}x{n_out}:")
        for name, run in candidates.items():
            print(f"    {name:42} {1e3 * best_seconds(run, repeats):9.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--skip-model", action="store_true", help="skip the SmolLM2-shaped token (needs ~0.6 GB)")
    args = parser.parse_args()
    dequantize_throughput(args.repeats)
    matvec_times(args.repeats)
    if not args.skip_model:
        smollm2_token(args.repeats)
    alternatives(args.repeats)


if __name__ == "__main__":
    main()
