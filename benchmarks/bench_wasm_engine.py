"""Host costs of the wasm engine, measured through the engine with instrumented modules.

1. Host overhead per message: an update that copies a 16 KiB argument into its heap and replies
   with it (the module's own code is a few instructions). Target: at most 100 us.
2. Rollback in a 1 GiB heap: a message writes 4 pages (4 KiB each) and traps; the time to put
   them back (timed around the heap's rollback), and the whole trapping message.
3. The overhead of a successful message in the same heap: the commit (timed around it) and the
   whole message.
4. A compute-bound loop, instrumented (with the write barrier, as installed canisters are) and
   run through the engine, against the same loop uninstrumented in plain wasmtime: the ratio of
   their speeds (each the fastest of three alternating calls), for an arithmetic loop and for
   one that also stores every iteration. Target: at least 50%.

Every figure is measured: the median of --runs runs (default 3) with min and max.

    python -m benchmarks.bench_wasm_engine [--runs 3] [--messages 2000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import wasmtime

from replica.engines import CanisterView, Execution, Kind, Outcome
from replica.engines.wasm.engine import WasmEngine, WasmInstance
from replica.limits import DEFAULT_LIMITS
from replica.stable_memory import StableMemory

VIEW = CanisterView(bytes(10), (), cycle_balance=10**15)

ECHO = """(module
  (import "ic0" "msg_arg_data_size" (func $size (result i32)))
  (import "ic0" "msg_arg_data_copy" (func $copy (param i32 i32 i32)))
  (import "ic0" "msg_reply_data_append" (func $append (param i32 i32)))
  (import "ic0" "msg_reply" (func $reply))
  (memory (export "memory") 1)
  (func (export "canister_update echo") (local $n i32)
    (local.set $n (call $size))
    (call $copy (i32.const 0) (i32.const 0) (local.get $n))
    (call $append (i32.const 0) (local.get $n))
    (call $reply)))"""

# A 1 GiB heap (grown at init); `touch` writes 4 pages 256 MiB apart, and traps if asked.
BIG_HEAP = """(module
  (import "ic0" "msg_arg_data_copy" (func $copy (param i32 i32 i32)))
  (import "ic0" "msg_reply" (func $reply))
  (import "ic0" "trap" (func $trap (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "canister_init") (drop (memory.grow (i32.const 16383))))
  (func (export "canister_update touch") (local $i i32)
    (call $copy (i32.const 0) (i32.const 0) (i32.const 1))
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (i64.store (i32.mul (local.get $i) (i32.const 0x10000000)) (i64.extend_i32_u (local.get $i)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 3))))
    (i64.store (i32.const 8) (i64.const 1))
    (if (i32.load8_u (i32.const 0)) (then (call $trap (i32.const 0) (i32.const 1))))
    (call $reply)))"""

# The same arithmetic loop, exported for the engine and for plain wasmtime; STORE_LOOP also
# stores its accumulator every iteration (the write barrier's share of the cost).
LOOP = """(module
  (import "ic0" "msg_reply" (func $reply))
  (memory (export "memory") 1)
  (func $work (export "work") (result i64) (local $i i64) (local $acc i64)
    (loop $l
      (local.set $acc (i64.add (i64.mul (local.get $acc) (i64.const 6364136223846793005))
                               (i64.xor (local.get $i) (i64.shr_u (local.get $acc) (i64.const 7)))))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $l (i64.lt_u (local.get $i) (i64.const 50000000))))
    (local.get $acc))
  (func (export "canister_update work") (drop (call $work)) (call $reply)))"""
STORE_LOOP = LOOP.replace(
    "(local.set $i (i64.add",
    "(i64.store (i32.and (i32.wrap_i64 (local.get $i)) (i32.const 0xfff8)) (local.get $acc))\n"
    "      (local.set $i (i64.add")


def install(engine: WasmEngine, wasm: bytes) -> WasmInstance:
    instance, outcome = engine.instantiate(wasm, StableMemory(DEFAULT_LIMITS.stable_memory_bytes), VIEW)
    assert outcome.trap is None
    return instance


def call(instance: WasmInstance, method: str, arg: bytes = b"", kind: Kind = Kind.UPDATE) -> Outcome:
    return instance.execute(Execution(kind, DEFAULT_LIMITS.instructions_per_update, 0, method=method, arg=arg),
                            VIEW)


def _summary(values: list[float], unit: str) -> str:
    return (f"median {statistics.median(values):.1f} {unit} (min {min(values):.1f}, max {max(values):.1f}; "
            f"runs: {', '.join(f'{v:.1f}' for v in values)})")


def _timed(method: Callable, sink: list[float]) -> Callable:
    def wrapper(*args):
        start = time.perf_counter()
        try:
            return method(*args)
        finally:
            sink.append(time.perf_counter() - start)

    return wrapper


def host_overhead(engine: WasmEngine, messages: int) -> tuple[float, float]:
    """Wall time and CPU time of this process per message, in us (on a busy machine the CPU time
    is what the engine costs; the wall time adds the waits for a core)."""
    instance = install(engine, wasmtime.wat2wasm(ECHO))
    arg = bytes(range(256)) * 64  # 16 KiB
    assert call(instance, "echo", arg).reply == arg
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(messages):
        call(instance, "echo", arg)
    return (time.perf_counter() - start) / messages * 1e6, (time.process_time() - cpu) / messages * 1e6


def big_heap(engine: WasmEngine, messages: int) -> tuple[float, float, float, float]:
    instance = install(engine, wasmtime.wat2wasm(BIG_HEAP))
    init = call(instance, "", kind=Kind.INIT)
    assert init.trap is None and instance.heap.size_bytes == 1 << 30
    rollbacks: list[float] = []
    commits: list[float] = []
    instance.heap.rollback = _timed(instance.heap.rollback, rollbacks)
    instance.heap.commit = _timed(instance.heap.commit, commits)
    trapped = ok = 0.0
    for _ in range(messages):
        start = time.perf_counter()
        outcome = call(instance, "touch", b"\x01")
        trapped += time.perf_counter() - start
        assert outcome.trap is not None and instance.heap.restored_pages == 4
        start = time.perf_counter()
        assert call(instance, "touch", b"\x00").trap is None
        ok += time.perf_counter() - start
    scale = 1e6 / messages
    return statistics.mean(rollbacks) * 1e6, trapped * scale, statistics.mean(commits) * 1e6, ok * scale


def loop_ratio(engine: WasmEngine, wat: str) -> tuple[float, float]:
    wasm = wasmtime.wat2wasm(wat)
    instance = install(engine, wasm)
    start = time.perf_counter()
    outcome = call(instance, "work")
    instrumented = time.perf_counter() - start
    assert outcome.trap is None
    store = wasmtime.Store(engine.engine)
    linker = wasmtime.Linker(engine.engine)
    linker.define_func("ic0", "msg_reply", wasmtime.FuncType([], []), lambda: None)
    plain = linker.instantiate(store, wasmtime.Module(engine.engine, wasm)).exports(store)["work"]
    uninstrumented = float("inf")
    for _ in range(3):  # each the fastest of three, alternating, so a busy moment hits both alike
        start = time.perf_counter()
        plain(store)
        uninstrumented = min(uninstrumented, time.perf_counter() - start)
        start = time.perf_counter()
        outcome = call(instance, "work")
        instrumented = min(instrumented, time.perf_counter() - start)
    return uninstrumented / instrumented * 100, outcome.instructions / instrumented / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    engine = WasmEngine(None)
    overheads, cpus, restores, traps, commits, oks, ratios, rates, store_ratios = [], [], [], [], [], [], [], [], []
    for _ in range(args.runs):
        wall, cpu = host_overhead(engine, args.messages)
        overheads.append(wall)
        cpus.append(cpu)
        restore, trapped, commit, ok = big_heap(engine, max(1, args.messages // 10))
        restores.append(restore)
        traps.append(trapped)
        commits.append(commit)
        oks.append(ok)
        ratio, rate = loop_ratio(engine, LOOP)
        ratios.append(ratio)
        rates.append(rate)
        store_ratios.append(loop_ratio(engine, STORE_LOOP)[0])
    print("measured (the machine may be shared; see the spread):")
    print(f"  host time per message, 16 KiB argument echoed, no trap: {_summary(overheads, 'us')}")
    print(f"    of which CPU time of this process: {_summary(cpus, 'us')}")
    print(f"  1 GiB heap, 4 pages written then trap: restore {_summary(restores, 'us')}")
    print(f"    the whole trapping message: {_summary(traps, 'us')}")
    print(f"  1 GiB heap, 4 pages written, success: commit {_summary(commits, 'us')}")
    print(f"    the whole message: {_summary(oks, 'us')}")
    print(f"  instrumented loop through the engine vs plain wasmtime: {_summary(ratios, '%')} of the speed")
    print(f"    at {_summary(rates, 'G instructions/s')} (IC-counted instructions per host second)")
    print(f"  the same loop with a store per iteration: {_summary(store_ratios, '%')} of the speed")


if __name__ == "__main__":
    main()
