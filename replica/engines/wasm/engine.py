"""Runs IC wasm modules in wasmtime: one compiled module per module hash (cached on disk), one
persistent instance per canister, each execution metered and rolled back as the IC does.

The module is instrumented first (replica.engines.wasm.instrument): an exported i64 global
`canister counter_instructions` counts down from the execution's limit, and calls
`__.out_of_instructions` when it goes negative, so every loop ends; every `memory.grow` asks
`__.try_grow_wasm_memory`, which enforces wasm_memory_limit; a write barrier tells the host of
the first write to each 4 KiB page (`__.first_write_range`, with a byte per page in the
`canister write_bitmap` memory), which makes rollback cost follow the pages written. System
API charges come off the same counter, so `ic0.performance_counter(0)` is exactly what the
execution is charged.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime

from cdk.principal import Principal
from replica.engines import Callback, CanisterView, Execution, Kind, Outcome
from replica.engines.wasm import instrument
from replica.engines.wasm.instrument import (
    COUNTER_EXPORT,
    FIRST_WRITE_RANGE,
    INJECTED_MODULE,
    OUT_OF_INSTRUCTIONS,
    START_EXPORT,
    TABLE_EXPORT,
    TRY_GROW_WASM_MEMORY,
    WRITE_BITMAP_EXPORT,
)
from replica.engines.wasm.memory import PAGE_BYTES, Heap, Journal
from replica.engines.wasm.system_api import ExecutionTrap, Meter, SystemApi
from replica.errors import ErrorCode, Reject, RejectError
from replica.limits import DEFAULT_LIMITS, WASM_PAGE_BYTES, Limits
from replica.stable_memory import StableMemory

WASMTIME_VERSION = importlib.metadata.version("wasmtime")

# The exported function each kind of execution calls; methods append " <name>".
_ENTRY_POINTS = {
    Kind.INIT: "canister_init", Kind.PRE_UPGRADE: "canister_pre_upgrade",
    Kind.POST_UPGRADE: "canister_post_upgrade", Kind.HEARTBEAT: "canister_heartbeat",
    Kind.GLOBAL_TIMER: "canister_global_timer", Kind.INSPECT_MESSAGE: "canister_inspect_message",
    Kind.START: START_EXPORT,
}
_METHOD_PREFIXES = {Kind.UPDATE: "canister_update ", Kind.QUERY: "canister_query ",
                    Kind.COMPOSITE_QUERY: "canister_composite_query "}
# Executions whose state changes are always discarded.
_READ_ONLY = {Kind.QUERY, Kind.COMPOSITE_QUERY, Kind.INSPECT_MESSAGE}

# What a wasm trap is called in the replica's messages (wasmtime trap code -> IC text).
_TRAP_TEXTS = {
    "UNREACHABLE": "unreachable", "MEMORY_OUT_OF_BOUNDS": "heap out of bounds",
    "INTEGER_DIVISION_BY_ZERO": "integer division by 0", "INTEGER_OVERFLOW": "integer overflow",
    "STACK_OVERFLOW": "stack overflow", "BAD_CONVERSION_TO_INTEGER": "invalid conversion to integer",
    "TABLE_OUT_OF_BOUNDS": "table out of bounds", "INDIRECT_CALL_TO_NULL": "indirect call to null",
    "BAD_SIGNATURE": "indirect call type mismatch",
}


def default_cache_dir() -> Path:
    """Where compiled modules are kept: `$ICLLAMA_CACHE/wasm` (default ~/.cache/icllama/wasm)."""
    return Path(os.environ.get("ICLLAMA_CACHE") or Path.home() / ".cache" / "icllama") / "wasm"


@dataclass(frozen=True)
class CompiledModule:
    module: wasmtime.Module
    wasm64: bool
    exports: frozenset[str]
    ic0_imports: frozenset[str]
    # What the IC charges for compiling it, on every install of it (rs/config/src/embedders.rs:
    # cost_to_compile_wasm_instruction per instruction of the instrumented module, computed by
    # instrument.py); a module compiled before costs the canister the same.
    compilation_instructions: int


@dataclass(frozen=True)
class Instrumentation:
    """Turns a canister module into the metered module the engine runs, with the instructions
    the IC charges for compiling it; `version` is part of the compiled-module cache key, so a
    change of instrumentation compiles again."""

    rewrite: Callable[[bytes], tuple[bytes, int]]
    version: str


def ic_instrumentation() -> Instrumentation:
    def rewrite(wasm: bytes) -> tuple[bytes, int]:
        try:
            instrumented = instrument.instrument(wasm, write_barrier=True)
            return instrumented.wasm, instrumented.compilation_instructions
        except instrument.InstrumentationError as e:
            raise RejectError(ErrorCode.CANISTER_INVALID_WASM, f"Canister's Wasm module is not valid: {e}") from None

    return Instrumentation(rewrite, _source_digest(("instrument.py", "wasm_binary.py", "cost_table.py")))


def _source_digest(names: tuple[str, ...]) -> str:
    """A short hash of the instrumentation's sources: any change to them compiles modules again."""
    digest = hashlib.sha256()
    for name in names:
        path = Path(__file__).parent / name
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class WasmEngine:
    """Compiles modules (once per hash, cached in `cache_dir`) and creates canister instances."""

    def __init__(self, cache_dir: Path | None, limits: Limits = DEFAULT_LIMITS,
                 instrumentation: Instrumentation | None = None):
        config = wasmtime.Config()
        config.wasm_multi_memory = True  # the write barrier's bitmap is a second memory
        config.wasm_memory64 = True  # moc's default output
        config.wasm_simd = True
        config.wasm_bulk_memory = True
        config.cranelift_nan_canonicalization = True  # deterministic floats, as the replica sets
        self.engine = wasmtime.Engine(config)
        self.cache_dir = cache_dir
        self.limits = limits
        self.instrumentation = instrumentation or ic_instrumentation()
        self._compiled: dict[bytes, CompiledModule] = {}

    def compile(self, wasm: bytes) -> CompiledModule:
        key = hashlib.sha256(wasm).digest()
        found = self._compiled.get(key)
        if found is None:
            found = self._compiled[key] = self._compile(wasm, key)
        return found

    def _compile(self, wasm: bytes, key: bytes) -> CompiledModule:
        instrumentation = self.instrumentation
        stem = f"{key.hex()}-i{instrumentation.version}-w{WASMTIME_VERSION}"
        path = self.cache_dir / f"{stem}.cwasm" if self.cache_dir is not None else None
        facts = self.cache_dir / f"{stem}.json" if self.cache_dir is not None else None
        module = None
        if path is not None and facts is not None and path.exists() and facts.exists():
            try:
                module = wasmtime.Module.deserialize_file(self.engine, str(path))
                compilation = json.loads(facts.read_text())["compilation_instructions"]
            except (wasmtime.WasmtimeError, ValueError, KeyError):
                module = None  # written by another wasmtime build, or damaged: compile again
        if module is None:
            instrumented, compilation = instrumentation.rewrite(wasm)
            try:
                module = wasmtime.Module(self.engine, instrumented)
            except wasmtime.WasmtimeError as e:
                raise RejectError(ErrorCode.CANISTER_INVALID_WASM,
                                  f"Wasm module is invalid: wasmtime cannot compile it: {e}") from None
            if path is not None and facts is not None:
                from replica.state_store import atomic_write  # an on-disk cache write, atomic

                atomic_write(facts, json.dumps({"compilation_instructions": compilation}).encode())
                atomic_write(path, module.serialize())
        memories = [e.type for e in module.exports if isinstance(e.type, wasmtime.MemoryType)]
        return CompiledModule(module, bool(memories) and memories[0].is_64,
                              frozenset(e.name for e in module.exports),
                              frozenset(i.name for i in module.imports if i.module == "ic0"), compilation)

    def instantiate(self, wasm: bytes, stable: StableMemory, view: CanisterView,
                    kept_memory: tuple[bytes, list[Any]] | None = None) -> tuple[WasmInstance, Outcome]:
        """A new instance of `wasm` for a canister, and the outcome of its (start) function. With
        `kept_memory` (an upgrade that keeps the heap: memory image and globals) the memory is
        laid in before the start function runs; the globals start as the new module declares
        them. The caller discards the instance if the outcome trapped."""
        compiled = self.compile(wasm)
        heap_limit = self.limits.wasm64_heap_bytes if compiled.wasm64 else self.limits.wasm32_heap_bytes
        instance = WasmInstance(self, compiled, stable, heap_limit)
        if kept_memory is not None:
            instance.load(kept_memory[0], None)
        outcome = instance.execute(Execution(Kind.START, self.limits.instructions_per_install, 0), view)
        return instance, outcome


class WasmInstance:
    """One canister's live instance: its store, memories, globals and System API."""

    def __init__(self, engine: WasmEngine, compiled: CompiledModule, stable: StableMemory, heap_limit: int):
        self.engine = engine
        self.compiled = compiled
        self.stable = stable
        self.heap_limit = heap_limit
        self.last_commit: tuple[Journal, list[Any]] | None = None  # undo of the last committed execution
        # Whether a checkpoint holds an earlier state of this instance (its dirty pages are then
        # all that changed); False for a new one (install, reinstall, upgrade).
        self.checkpointed = False
        self._composite_scope = False
        self._build()

    @property
    def wasm64(self) -> bool:
        return self.compiled.wasm64

    def _build(self) -> None:
        store = wasmtime.Store(self.engine.engine)
        store.set_limits(memory_size=self.heap_limit)  # a grow past it returns -1, as on the IC
        api = SystemApi(self.stable, self.compiled.wasm64, self.engine.limits)
        linker = wasmtime.Linker(self.engine.engine)
        for name, kind, function in self._host_functions():
            linker.define_func(INJECTED_MODULE, name, kind, function)
        for name, kind, function in api.imports():
            linker.define_func("ic0", name, kind, function)
        try:
            instance = linker.instantiate(store, self.compiled.module)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as e:
            raise RejectError(ErrorCode.CANISTER_INVALID_WASM,
                              f"Wasm module cannot be instantiated: {e}") from None
        exports = {name: item for name, item in instance.exports(store).items()}
        memory = exports.get("memory")  # absent when the module declares no memory, as the IC allows
        counter = exports.get(COUNTER_EXPORT)
        if not isinstance(counter, wasmtime.Global):
            raise RejectError(ErrorCode.CANISTER_INVALID_WASM,
                              f"the instrumented module has no '{COUNTER_EXPORT}' global")
        bitmap = exports.get(WRITE_BITMAP_EXPORT)
        mutable_globals = [e for name, e in exports.items() if isinstance(e, wasmtime.Global)
                           and name != COUNTER_EXPORT and e.type(store).mutable]
        self.store = store
        self.exports = exports
        self.table = exports.get(TABLE_EXPORT)
        self.heap = Heap(store, memory if isinstance(memory, wasmtime.Memory) else None,
                         bitmap if isinstance(bitmap, wasmtime.Memory) else None, mutable_globals)
        self.meter = Meter(store, counter)
        api.attach(self.heap, self.meter)
        self.api = api

    def _host_functions(self) -> list[tuple[str, wasmtime.FuncType, Callable[..., Any]]]:
        """The functions the instrumentation imports from module "__"."""
        i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
        ptr = i64 if self.compiled.wasm64 else i32
        mask = 0xFFFF_FFFF_FFFF_FFFF if self.compiled.wasm64 else 0xFFFF_FFFF

        def out_of_instructions() -> None:
            raise self.api.out_of_instructions()

        def try_grow_wasm_memory(result: int, delta: int) -> int:
            if result != -1:
                self._check_memory_limit()
            return result

        def first_write_range(addr: int, size: int) -> None:
            self.heap.first_write_range(addr & mask, size & mask)

        return [(OUT_OF_INSTRUCTIONS, wasmtime.FuncType([], []), out_of_instructions),
                (TRY_GROW_WASM_MEMORY, wasmtime.FuncType([ptr, ptr], [ptr]), try_grow_wasm_memory),
                (FIRST_WRITE_RANGE, wasmtime.FuncType([i64, i64], []), first_write_range)]

    # --- executions --------------------------------------------------------------------------
    def execute(self, execution: Execution, view: CanisterView) -> Outcome:
        api, heap = self.api, self.heap
        api.begin(execution, view)
        self.meter.start(execution.instruction_limit)
        scoped = self._composite_scope
        if not scoped:
            heap.begin()
            self.stable.begin()
        trap = None
        try:
            self._call(execution, view)
        except ExecutionTrap as e:
            trap = e.reject
        except wasmtime.Trap as e:
            trap = self._wasm_trap(view, e)
        except wasmtime.WasmtimeError as e:
            trap = Reject.of(ErrorCode.CANISTER_TRAPPED, f"Canister {_text(view)} trapped: {e}")
        except Exception as e:  # noqa: BLE001 - a fault of the host side still ends the execution cleanly
            trap = Reject.of(ErrorCode.CANISTER_TRAPPED,
                             f"Canister {_text(view)} trapped: the replica failed to run it ({type(e).__name__}: {e})")
        instructions = self.meter.used
        if scoped:
            pass  # the composite query's whole state is thrown away when its scope ends
        elif trap is not None or execution.kind in _READ_ONLY:
            self._rollback()
            if execution.kind not in _READ_ONLY:
                self.last_commit = None  # the state is what the execution started from
        else:
            self.last_commit = (heap.commit(), self.stable.commit())
        if trap is not None:
            return Outcome(instructions, trap=trap, logs=api.logs, heap_bytes=heap.size_bytes)
        return Outcome(instructions, reply=api.reply, reject=api.reject, calls=api.calls,
                       cycles_accepted=api.cycles_accepted, cycles_burned=api.cycles_burned,
                       certified_data=api.certified_data,
                       global_timer_ns=api.global_timer_ns, message_accepted=api.message_accepted,
                       logs=api.logs, heap_bytes=heap.size_bytes)

    @contextmanager
    def composite_scope(self) -> Iterator[None]:
        """The executions of one composite query (the query and its callbacks) share one state,
        rolled back when the scope ends. (On the IC a trapping callback's own changes are undone
        at once; here they stay until the end of the composite query.)"""
        self.heap.begin()
        self.stable.begin()
        self._composite_scope = True
        try:
            yield
        finally:
            self._composite_scope = False
            self._rollback()

    def execute_before_last_commit(self, execution: Execution, view: CanisterView) -> Outcome:
        """Runs a query on the state from before the last committed execution (one still running
        over rounds, by DTS): its pages, globals and stable memory are swapped back for the query
        and forward again after it. The memory's size stays the grown one, zero-filled."""
        if self.last_commit is None:
            return self.execute(execution, view)
        journal, stable_undo = self.last_commit
        heap_redo = self.heap.swap(journal)
        stable_redo = self.stable.swap(stable_undo)
        try:
            return self.execute(execution, view)
        finally:
            self.stable.swap(stable_redo)
            self.heap.swap(heap_redo)

    def _call(self, execution: Execution, view: CanisterView) -> None:
        kind = execution.kind
        if kind in (Kind.REPLY, Kind.REJECT, Kind.CLEANUP):
            callbacks = execution.callback
            if callbacks is None:
                raise ValueError(f"a {kind.value} execution needs the call's callbacks")
            callback: Callback | None = {Kind.REPLY: callbacks.reply, Kind.REJECT: callbacks.reject,
                                         Kind.CLEANUP: callbacks.cleanup}[kind]
            if callback is None:
                return
            self._callback(callback)(self.store, _signed(callback.env, 64 if self.compiled.wasm64 else 32))
            return
        name = _ENTRY_POINTS.get(kind) or _METHOD_PREFIXES[kind] + execution.method
        function = self.exports.get(name)
        if function is None:
            if kind in _METHOD_PREFIXES:
                raise ExecutionTrap(Reject.of(
                    ErrorCode.CANISTER_METHOD_NOT_FOUND,
                    f"Canister {_text(view)} has no {kind.value.replace('_', ' ')} method '{execution.method}'"))
            return  # an optional entry point the module does not have: nothing runs
        function(self.store)

    def _callback(self, callback: Callback) -> Any:
        if self.table is None:
            raise ExecutionTrap(Reject.of(ErrorCode.CANISTER_CONTRACT_VIOLATION,
                                          "the module has no function table, so it cannot take callbacks"))
        function = self.table.get(self.store, callback.fun)
        if not isinstance(function, wasmtime.Func):
            raise ExecutionTrap(Reject.of(ErrorCode.CANISTER_CONTRACT_VIOLATION,
                                          f"callback {callback.fun} is not a function in the table"))
        return function

    def _wasm_trap(self, view: CanisterView, trap: wasmtime.Trap) -> Reject:
        code = trap.trap_code
        text = _TRAP_TEXTS.get(code.name if code is not None else "") or trap.message.strip().splitlines()[-1]
        return Reject.of(ErrorCode.CANISTER_TRAPPED, f"Canister {_text(view)} trapped: {text}")

    def _check_memory_limit(self) -> None:
        """IC0539 when a memory.grow takes the heap past wasm_memory_limit, as the IC checks it."""
        view = self.api.view
        limit = view.wasm_memory_limit if view is not None else 0
        if limit and self.heap.size_bytes > limit and self.api.code not in ("RQ", "NRQ", "CQ", "F"):
            raise ExecutionTrap(Reject.of(
                ErrorCode.CANISTER_WASM_MEMORY_LIMIT_EXCEEDED,
                f"Canister {_text(view)} exceeded its current Wasm memory limit of {limit} bytes. The peak "
                f"Wasm memory usage was {self.heap.size_bytes} bytes. Raise wasm_memory_limit with "
                "update_settings, or use less memory"))

    def _rollback(self) -> None:
        self.stable.rollback()
        shrink_to = self.heap.rollback()
        if shrink_to is not None:
            # Wasm memory cannot shrink: a new instance takes the restored first `shrink_to` bytes.
            image = self.heap.read(0, shrink_to)
            globals_ = self.heap.global_values()
            dirty = self.heap.dirty
            self._build()
            self.load(image, globals_)
            self.heap.dirty = dirty | self.heap.dirty

    def grow_to(self, size_bytes: int) -> None:
        missing = -(-size_bytes // WASM_PAGE_BYTES) - self.heap.size_pages
        memory = self.exports.get("memory")
        if missing > 0 and (memory is None or memory.grow(self.store, missing) < 0):
            raise RejectError(ErrorCode.CANISTER_OUT_OF_MEMORY,
                              f"a heap of {size_bytes} bytes does not fit this module's memory")

    def load(self, image: bytes, globals_: list[Any] | None) -> None:
        """Sets the heap to `image` (grown to fit) and, if given, the mutable globals; every page
        is then dirty, to be saved at the next checkpoint."""
        self.grow_to(len(image))
        self.heap.place(0, image)
        self.heap.dirty.update(range(-(-len(image) // PAGE_BYTES)))
        if globals_ is not None:
            self.heap.set_globals(globals_)

    def memory_image(self) -> tuple[bytes, list[Any]]:
        """The whole heap and the mutable globals (what an upgrade keeps)."""
        return self.heap.read(0, self.heap.size_bytes), self.heap.global_values()


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _text(view: CanisterView) -> str:
    return Principal(view.canister_id).to_text()


def restore_instance(engine: WasmEngine, wasm: bytes, stable: StableMemory, heap_bytes: int,
                     chunks: dict[int, bytes], chunk_bytes: int, globals_: list[Any]) -> WasmInstance:
    """An instance of a canister saved at a checkpoint: the module instantiated (its data
    segments applied, no code run), grown to `heap_bytes`, the saved chunks written over it and
    the globals set. Nothing is dirty: the memory is what the checkpoint holds."""
    compiled = engine.compile(wasm)
    limits = engine.limits
    instance = WasmInstance(engine, compiled, stable,
                            limits.wasm64_heap_bytes if compiled.wasm64 else limits.wasm32_heap_bytes)
    instance.grow_to(heap_bytes)
    for index, data in chunks.items():
        instance.heap.place(index * chunk_bytes, data)
    instance.heap.set_globals(globals_)
    instance.checkpointed = True
    return instance
