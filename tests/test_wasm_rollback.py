"""A trap leaves no trace: heap pages, mutable globals, the heap size and stable memory come back
byte for byte, and the work of a rollback follows the pages written (the IC's dirty pages).

These modules go through the real instrumentation (cost table, write barrier), as installed
canisters do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import wasmtime

from replica.engines import Kind
from replica.engines.wasm.engine import WasmEngine
from replica.engines.wasm.memory import PAGE_BYTES
from tests.toolchains import require_module
from tests.wasm_support import call, install

# `scribble` changes everything a message can change, then traps when its argument says so:
# i32/i64/v128 stores on several pages, a memory.fill across pages, memory.copy, both globals,
# stable memory (grown, then written), and, with argument byte 2, a memory.grow.
SCRIBBLE = """
(module
  (import "ic0" "msg_arg_data_copy" (func $arg_copy (param i32 i32 i32)))
  (import "ic0" "msg_reply" (func $reply))
  (import "ic0" "trap" (func $trap (param i32 i32)))
  (import "ic0" "stable64_grow" (func $stable_grow (param i64) (result i64)))
  (import "ic0" "stable64_write" (func $stable_write (param i64 i64 i64)))
  (memory (export "memory") 64)
  (global $a (mut i32) (i32.const 11))
  (global $b (mut i64) (i64.const 22))
  (data (i32.const 0) "initial contents")
  (func (export "canister_update scribble")
    (call $arg_copy (i32.const 100) (i32.const 0) (i32.const 1))
    (i32.store (i32.const 4096) (i32.const 0xdeadbeef))
    (i64.store (i32.const 40000) (i64.const -1))
    (v128.store (i32.const 131070) (v128.const i32x4 1 2 3 4))
    (memory.fill (i32.const 200000) (i32.const 0xab) (i32.const 10000))
    (memory.copy (i32.const 300000) (i32.const 0) (i32.const 16))
    (global.set $a (i32.const 99))
    (global.set $b (i64.const 77))
    (drop (call $stable_grow (i64.const 2)))
    (call $stable_write (i64.const 65000) (i64.const 4096) (i64.const 8))
    (if (i32.eq (i32.load8_u (i32.const 100)) (i32.const 2))
      (then (drop (memory.grow (i32.const 3)))
            (i32.store (i32.const 4194304) (i32.const 5))))
    (if (i32.load8_u (i32.const 100)) (then (call $trap (i32.const 0) (i32.const 7))))
    (call $reply))
  (export "canister_query write_pages_in_query" (func $write_pages))
  (func $write_pages (export "canister_update write_pages") (local $i i32)
    (loop $l
      (i32.store (i32.mul (local.get $i) (i32.const 1048576)) (local.get $i))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 4))))
    (call $reply)))
"""


@pytest.fixture(scope="module")
def engine() -> WasmEngine:
    return WasmEngine(None)


def _state(instance) -> tuple[bytes, list, bytes, int]:
    heap = instance.heap
    return (heap.read(0, heap.size_bytes), heap.global_values(),
            instance.stable.read(0, instance.stable.size_bytes), instance.stable.pages)


@pytest.mark.parametrize("arg", [b"\x01", b"\x02"], ids=["trap", "grow-then-trap"])
def test_a_trap_restores_heap_globals_and_stable_memory_byte_for_byte(engine, arg):
    instance = install(engine, wasmtime.wat2wasm(SCRIBBLE))
    assert call(instance, "scribble", b"\x00").trap is None  # a first run commits, and grows stable
    before = _state(instance)
    outcome = call(instance, "scribble", arg)
    assert outcome.trap is not None and outcome.trap.error_code == "IC0503"
    after = _state(instance)
    assert after[0] == before[0]  # the whole heap, at its old size
    assert after[1:] == before[1:]
    assert instance.heap.size_bytes == 64 * 65536
    assert call(instance, "scribble", b"\x00").trap is None  # the instance still works


def test_a_successful_message_commits_and_marks_exactly_the_pages_it_wrote(engine):
    instance = install(engine, wasmtime.wat2wasm(SCRIBBLE))
    instance.heap.dirty.clear()  # what installing wrote
    assert call(instance, "scribble", b"\x00").trap is None
    written = {100 // PAGE_BYTES, 4096 // PAGE_BYTES, 40000 // PAGE_BYTES, 131070 // PAGE_BYTES,
               (131070 + 15) // PAGE_BYTES, 300000 // PAGE_BYTES,
               *range(200000 // PAGE_BYTES, (200000 + 10000 - 1) // PAGE_BYTES + 1)}
    assert instance.heap.dirty == written
    assert instance.heap.read(4096, 4) == (0xdeadbeef).to_bytes(4, "little")
    assert instance.heap.read(200000, 10000) == b"\xab" * 10000


def test_rollback_work_follows_the_pages_written_not_the_heap_size(engine):
    instance = install(engine, wasmtime.wat2wasm(SCRIBBLE))
    instance.heap.dirty.clear()
    assert call(instance, "write_pages").trap is None
    assert instance.heap.dirty == {0, 256, 512, 768}  # four 4 KiB pages of a 4 MiB heap
    assert call(instance, "write_pages_in_query", kind=Kind.QUERY).trap is None  # a query is rolled back
    assert instance.heap.restored_pages == 4


@pytest.fixture(scope="module")
def c_canister(tmp_path_factory) -> bytes:
    """tests/wasm_canisters/dot.c built by zig cc (PyPI ziglang) for wasm32 with simd128."""
    require_module("ziglang", "pip install ziglang (it is in the test dependencies)")
    out = tmp_path_factory.mktemp("zig") / "dot.wasm"
    built = subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", "wasm32-freestanding",
                            "-mcpu=generic+simd128", "-O2", "-nostdlib", "-Wl,--no-entry", "-o", str(out),
                            str(Path(__file__).parent / "wasm_canisters" / "dot.c")], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return out.read_bytes()


def test_a_c_canister_built_by_zig_computes_with_simd_and_rolls_back_its_heap(engine, c_canister):
    instance = install(engine, c_canister)
    rng = np.random.default_rng(7)
    a, b = rng.integers(-128, 128, 4096, dtype=np.int8), rng.integers(-128, 128, 4096, dtype=np.int8)
    outcome = call(instance, "dot", a.tobytes() + b.tobytes())
    assert int.from_bytes(outcome.reply, "little", signed=True) == int(a.astype(np.int64) @ b.astype(np.int64))
    assert outcome.instructions > 4096 // 16 * 10  # a few instructions per 16-lane step, metered
    before = call(instance, "state", kind=Kind.QUERY).reply
    assert before == (1).to_bytes(4, "little")  # one dot call, an empty table
    trapped = call(instance, "scribble_then_trap")
    assert trapped.trap.error_code == "IC0503" and trapped.trap.message.endswith("scribbled")
    assert instance.heap.restored_pages >= 256  # the 256 table pages it wrote (and its stack)
    assert call(instance, "state", kind=Kind.QUERY).reply == before
