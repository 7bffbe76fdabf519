"""The kernels' wasm build run in wasmtime from Python: for tests against the native and numpy
kernels, and for measuring instructions (a metered module is passed in already instrumented, with
its imports; this module knows nothing of the replica)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import wasmtime

WASM_PAGE = 65536


class WasmKernels:
    """One instance of a module exporting kernels.h's functions, memory and __heap_base."""

    def __init__(self, wasm: bytes, imports: Callable[[wasmtime.Store, wasmtime.Module], list] | None = None,
                 engine: wasmtime.Engine | None = None):
        self.engine = engine or wasmtime.Engine()
        self.store = wasmtime.Store(self.engine)
        self.module = wasmtime.Module(self.engine, wasm)
        self.instance = wasmtime.Instance(self.store, self.module, imports(self.store, self.module) if imports else [])
        exports = self.instance.exports(self.store)
        self.exports = exports
        self.memory: wasmtime.Memory = exports["memory"]
        self.heap_base = exports["__heap_base"].value(self.store)

    def call(self, name: str, *args):
        return self.exports[name](self.store, *args)

    def _reserve(self, total: int) -> None:
        needed = self.heap_base + total - self.memory.data_len(self.store)
        if needed > 0:
            self.memory.grow(self.store, -(-needed // WASM_PAGE))

    def _write(self, offset: int, data: bytes) -> None:
        self.memory.write(self.store, data, offset)

    def _read(self, offset: int, size: int) -> bytes:
        return self.memory.read(self.store, offset, offset + size)

    def row_bytes(self, wtype: int, n: int) -> int:
        return self.call("icl_row_bytes", wtype, n)

    def act_row_bytes(self, wtype: int, n: int) -> int:
        return self.call("icl_act_row_bytes", wtype, n)

    def quantize_act(self, wtype: int, x: np.ndarray) -> bytes:
        """Rows of x (n_tokens, n) f32, each prepared by icl_quantize_act; their bytes, concatenated."""
        n_tokens, n = x.shape
        act = self.act_row_bytes(wtype, n)
        x_at = self.heap_base
        out_at = x_at + x.nbytes
        self._reserve(x.nbytes + act * n_tokens)
        self._write(x_at, np.ascontiguousarray(x, dtype="<f4").tobytes())
        for t in range(n_tokens):
            self.call("icl_quantize_act", wtype, x_at + 4 * n * t, n, out_at + act * t)
        return self._read(out_at, act * n_tokens)

    def matmul(self, wtype: int, w_rows: np.ndarray, n: int, xq: bytes, n_tokens: int,
               rows: tuple[int, int] | None = None) -> np.ndarray:
        """y (n_tokens, rows of w) from weight rows (rows, row bytes) and prepared activations."""
        n_rows = w_rows.shape[0]
        r0, r1 = rows or (0, n_rows)
        w_bytes = np.ascontiguousarray(w_rows).tobytes()
        w_at = self.heap_base
        x_at = w_at + len(w_bytes)
        y_at = x_at + len(xq)
        self._reserve(len(w_bytes) + len(xq) + 4 * n_tokens * n_rows)
        self._write(w_at, w_bytes)
        self._write(x_at, xq)
        self._write(y_at, bytes(4 * n_tokens * n_rows))
        self.call("icl_matmul_rows", wtype, w_at, n, x_at, n_tokens, y_at, n_rows, r0, r1)
        return np.frombuffer(self._read(y_at, 4 * n_tokens * n_rows), dtype="<f4").reshape(n_tokens, n_rows).copy()
