"""The yblock's model compute built to wasm32 + simd128 and run in wasmtime, outside a canister.

`build_model_wasm` compiles canisters/yblock/wasm/model.c and the kernels with `zig cc` (PyPI
ziglang), as the canister is built, around benchmarks/yblock_model_driver.c. `WasmModel` runs one
shard in it: tests compare its activations and logits with the native build, and benchmarks
count each call's instructions under the replica's IC metering (`CompiledModel.of(..., metered=True)`
instruments the module as the IC does: replica/engines/wasm/instrument.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wasmtime

from canisters.kernels.build import KERNELS_SOURCE, build_wasm
from replica.engines.wasm.instrument import COUNTER_EXPORT, OUT_OF_INSTRUCTIONS, TRY_GROW_WASM_MEMORY, instrument

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [
    ROOT / "benchmarks/yblock_model_driver.c",
    *(ROOT / "canisters/yblock/wasm" / name for name in ("model.c", "gguf.c", "icl_math.c")),
    KERNELS_SOURCE,
]
EXPORTS = ["driver_alloc", "driver_parse", "driver_output_rows", "icl_kv_bytes", "icl_scratch_bytes",
           "icl_forward_layers", "icl_output_logits",
           # single ops, for counting their instructions
           "icl_rms_norm", "icl_swiglu", "icl_softmax_f16_scaled", "icl_act_row_bytes", "icl_quantize_act",
           "icl_matmul_rows"]
ERR_CAP = 512
BUDGET = 1 << 62  # a metered call's instructions: far more than any call here uses


def build_model_wasm(out: Path) -> bytes:
    """Compile the driver module to `out` (as the kernels are built) and return its bytes."""
    return build_wasm(SOURCES, out, EXPORTS).read_bytes()


@dataclass(frozen=True)
class CompiledModel:
    """The driver module compiled once by wasmtime, for many instances."""

    engine: wasmtime.Engine
    module: wasmtime.Module
    metered: bool

    @classmethod
    def of(cls, wasm: bytes, metered: bool = False) -> CompiledModel:
        config = wasmtime.Config()
        if metered:
            config.wasm_multi_memory = True
            wasm = instrument(wasm).wasm
        engine = wasmtime.Engine(config)
        return cls(engine, wasmtime.Module(engine, wasm), metered)


class OutOfInstructions(RuntimeError):
    """A metered call used its whole budget."""


class WasmModel:
    """One shard parsed inside a fresh instance of the driver module, with one session.
    `instructions` is what the last call counted (metered modules only)."""

    def __init__(self, compiled: CompiledModel, shard: bytes, n_ctx: int):
        self.store = wasmtime.Store(compiled.engine)
        imports = []
        if compiled.metered:
            pages = wasmtime.ValType.i32()
            out_of_instructions = wasmtime.Func(self.store, wasmtime.FuncType([], []), self._out_of_instructions)
            grow = wasmtime.Func(self.store, wasmtime.FuncType([pages, pages], [pages]), lambda result, _pages: result)
            host = {OUT_OF_INSTRUCTIONS: out_of_instructions, TRY_GROW_WASM_MEMORY: grow}
            imports = [host[item.name] for item in compiled.module.imports]
        self.instance = wasmtime.Instance(self.store, compiled.module, imports)
        exports = self.instance.exports(self.store)
        self.counter: wasmtime.Global | None = exports[COUNTER_EXPORT] if compiled.metered else None
        self.instructions = 0
        self.memory: wasmtime.Memory = exports["memory"]
        self._exports = {name: exports[name] for name in EXPORTS}
        self.n_ctx = n_ctx
        self.file = self._put(shard)
        out, err = self._alloc(4), self._alloc(ERR_CAP)
        if self.call("driver_parse", self.file, len(shard), n_ctx, out, err, ERR_CAP):
            raise ValueError(self._text(err))
        self.shard = struct.unpack("<I", self._read(out, 4))[0]
        self.rows = self.call("driver_output_rows", self.shard)
        self.kv = self._alloc(self.call("icl_kv_bytes", self.shard, n_ctx))
        self.length = self._alloc(4)
        self._write(self.length, struct.pack("<i", 0))
        self.err = err
        self._buffers: dict[tuple[str, int], int] = {}  # the bump allocator never frees: reuse by size

    def _out_of_instructions(self) -> None:
        raise OutOfInstructions(f"a call used more than its budget of {BUDGET} instructions")

    def call(self, name: str, *args: int | float) -> int:
        """Calls export `name`; on a metered module, `instructions` is then what it counted."""
        if self.counter is not None:
            self.counter.set_value(self.store, wasmtime.Val.i64(BUDGET))
        result = self._exports[name](self.store, *args)
        if self.counter is not None:
            self.instructions = BUDGET - self.counter.value(self.store)
        return result

    def _buffer(self, purpose: str, n: int) -> int:
        if (purpose, n) not in self._buffers:
            self._buffers[purpose, n] = self._alloc(n)
        return self._buffers[purpose, n]

    def put_array(self, purpose: str, values: np.ndarray) -> int:
        """`values` written into a buffer of this module kept for `purpose`; returns its address."""
        data = np.ascontiguousarray(values).tobytes()
        address = self._buffer(purpose, len(data))
        self._write(address, data)
        return address

    def _alloc(self, n: int) -> int:
        address = self.call("driver_alloc", n)
        if address == 0:
            raise MemoryError(f"the wasm module cannot grow its memory by {n} bytes")
        return address

    def _put(self, data: bytes) -> int:
        address = self._alloc(len(data))
        self._write(address, data)
        return address

    def _write(self, address: int, data: bytes) -> None:
        self.memory.write(self.store, data, address)

    def _read(self, address: int, n: int) -> bytes:
        return bytes(self.memory.read(self.store, address, address + n))

    def _text(self, address: int) -> str:
        return self._read(address, ERR_CAP).split(b"\0", 1)[0].decode()

    def forward(self, x: np.ndarray, pos: int) -> np.ndarray:
        """x (n_tokens, d_model) through the shard's layers at positions pos.. of the session."""
        n_tokens = x.shape[0]
        data = self._buffer("x", x.size * 4)
        self._write(data, np.ascontiguousarray(x, dtype="<f4").tobytes())
        scratch = self._buffer("scratch", self.call("icl_scratch_bytes", self.shard, n_tokens))
        if self.call("icl_forward_layers", self.shard, self.kv, self.n_ctx, self.length, pos, data, n_tokens, scratch,
                     self.err, ERR_CAP):
            raise ValueError(self._text(self.err))
        return np.frombuffer(self._read(data, x.size * 4), dtype="<f4").reshape(x.shape).copy()

    def logits(self, x: np.ndarray) -> np.ndarray:
        n_tokens = x.shape[0]
        data = self._buffer("x", x.size * 4)
        self._write(data, np.ascontiguousarray(x, dtype="<f4").tobytes())
        out = self._buffer("logits", n_tokens * self.rows * 4)
        scratch = self._buffer("scratch", self.call("icl_scratch_bytes", self.shard, n_tokens))
        self.call("icl_output_logits", self.shard, data, n_tokens, out, scratch)
        return np.frombuffer(self._read(out, n_tokens * self.rows * 4), dtype="<f4").reshape(n_tokens, self.rows)
