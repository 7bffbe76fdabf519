"""The wasm engine: executions, exact metering, limits, traps with the IC's codes, and memory."""

from __future__ import annotations

import pytest
import wasmtime

from replica.engines import Execution, Kind
from replica.engines.wasm import instrument
from replica.engines.wasm.engine import WasmEngine
from replica.limits import DEFAULT_LIMITS, GiB, Limits, MiB
from tests.wasm_support import VIEW, call, hand_metered, hand_metered_engine, install

# echo: replies with its argument. Its own code costs 10 instructions (the literal charge).
ECHO = """
(func (export "canister_update echo") (local $n i32)
  (call $charge (i64.const 10))
  (local.set $n (call $msg_arg_data_size))
  (call $msg_arg_data_copy (i32.const 0) (i32.const 0) (local.get $n))
  (call $msg_reply_data_append (i32.const 0) (local.get $n))
  (call $msg_reply))
(func (export "canister_query echo_query") (local $n i32)
  (local.set $n (call $msg_arg_data_size))
  (call $msg_arg_data_copy (i32.const 0) (i32.const 0) (local.get $n))
  (call $msg_reply_data_append (i32.const 0) (local.get $n))
  (call $msg_reply))
"""


@pytest.fixture(scope="module")
def engine() -> WasmEngine:
    return hand_metered_engine()


def test_echo_is_charged_its_code_plus_the_system_api_as_the_replica_charges(engine):
    outcome = call(install(engine, hand_metered(ECHO)), "echo", b"hello")
    assert outcome.trap is None and outcome.reply == b"hello"
    assert outcome.instructions == (
        10  # the method's own instructions
        + 500  # msg_arg_data_size: overhead
        + 500 + 5  # msg_arg_data_copy: overhead + 1 per byte copied
        + 500 + 50 * 5  # msg_reply_data_append: overhead + 50 per byte sent
        + 500  # msg_reply
    )


def test_performance_counter_returns_exactly_what_is_charged_so_far(engine):
    body = """
    (func (export "canister_update pc")
      (call $charge (i64.const 1234))
      (i64.store (i32.const 0) (call $performance_counter (i32.const 0)))
      (i64.store (i32.const 8) (call $performance_counter (i32.const 1)))
      (call $msg_reply_data_append (i32.const 0) (i32.const 16))
      (call $msg_reply))
    """
    outcome = call(install(engine, hand_metered(body)), "pc", context_instructions=70_000)
    first = int.from_bytes(outcome.reply[:8], "little")
    second = int.from_bytes(outcome.reply[8:], "little")
    assert first == 1234 + 200  # its own overhead is charged before it reads the counter
    assert second == 70_000 + first + 200  # type 1 adds the call context's earlier executions
    assert outcome.instructions == first + 200 + (500 + 50 * 16) + 500


def _burner(instructions: int) -> str:
    return f"""
    (func (export "canister_update burn") (call $charge (i64.const {instructions})))
    (func (export "canister_query spin") (loop $l (call $charge (i64.const 1)) (br $l)))
    (func (export "canister_init") (loop $l (call $charge (i64.const 1000)) (br $l)))
    """


def test_an_update_may_use_exactly_its_limit_and_one_more_traps_with_ic0522(engine):
    limit = DEFAULT_LIMITS.instructions_per_update
    exact = call(install(engine, hand_metered(_burner(limit))), "burn")
    assert exact.trap is None and exact.instructions == limit
    over = call(install(engine, hand_metered(_burner(limit + 1))), "burn")
    assert over.trap is not None and over.trap.error_code == "IC0522"
    assert over.instructions == limit
    assert "exceeded the instruction limit for single message execution" in over.trap.message


def test_an_infinite_loop_traps_at_the_query_and_install_limits(engine):
    instance = install(engine, hand_metered(_burner(0)))
    spun = call(instance, "spin", kind=Kind.QUERY, limit=50_000_000)
    assert spun.trap.error_code == "IC0522" and spun.instructions == 50_000_000
    init = instance.execute(Execution(Kind.INIT, 30_000_000, 0), VIEW)
    assert init.trap.error_code == "IC0522" and init.instructions == 30_000_000


def test_traps_carry_the_ic_error_codes(engine):
    body = """
    (data (i32.const 100) "boom")
    (func (export "canister_update explicit") (call $trap (i32.const 100) (i32.const 4)))
    (func (export "canister_update unreachable") unreachable)
    (func (export "canister_update oob") (drop (i32.load (i32.const 70000))))
    (func (export "canister_update twice") (call $msg_reply) (call $msg_reply))
    (func (export "canister_update accept") (call $accept_message))
    (func (export "canister_update arg_past_end")
      (call $msg_arg_data_copy (i32.const 0) (i32.const 2) (i32.const 2)))
    (func (export "canister_update copy_past_memory")
      (call $msg_arg_data_copy (i32.const 65535) (i32.const 0) (i32.const 2)))
    """
    instance = install(engine, hand_metered(body))
    explicit = call(instance, "explicit").trap
    assert explicit.error_code == "IC0503" and explicit.message.endswith("trapped explicitly: boom")
    assert call(instance, "unreachable").trap.message.endswith("trapped: unreachable")
    assert call(instance, "unreachable").trap.error_code == "IC0502"
    assert call(instance, "oob").trap.message.endswith("trapped: heap out of bounds")
    twice = call(instance, "twice").trap
    assert twice.error_code == "IC0504" and "the call is already replied" in twice.message
    accept = call(instance, "accept").trap
    assert accept.error_code == "IC0504"
    assert '"ic0_accept_message" cannot be executed in update mode' in accept.message
    assert call(instance, "arg_past_end", b"abc").trap.error_code == "IC0504"
    assert "heap out of bounds" in call(instance, "copy_past_memory", b"ab").trap.message
    missing = call(instance, "nope").trap
    assert missing.error_code == "IC0536" and "has no update method 'nope'" in missing.message


def test_a_query_runs_on_the_state_and_leaves_it_unchanged(engine):
    body = """
    (global $n (export "n") (mut i32) (i32.const 0))
    (func $bump_and_reply
      (global.set $n (i32.add (global.get $n) (i32.const 1)))
      (call $first_write_range (i64.const 0) (i64.const 4))
      (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
      (i32.store (i32.const 4) (global.get $n))
      (call $msg_reply_data_append (i32.const 0) (i32.const 8))
      (call $msg_reply))
    (func (export "canister_update bump") (call $bump_and_reply))
    (func (export "canister_query peek") (call $bump_and_reply))
    """
    instance = install(engine, hand_metered(body))
    assert call(instance, "bump").reply == bytes([1, 0, 0, 0, 1, 0, 0, 0])
    assert call(instance, "peek", kind=Kind.QUERY).reply == bytes([2, 0, 0, 0, 2, 0, 0, 0])
    assert call(instance, "peek", kind=Kind.QUERY).reply == bytes([2, 0, 0, 0, 2, 0, 0, 0])
    assert call(instance, "bump").reply == bytes([2, 0, 0, 0, 2, 0, 0, 0])


GROW = """
(func (export "canister_update grow") (local $r i32)
  (call $msg_arg_data_copy (i32.const 0) (i32.const 0) (call $msg_arg_data_size))
  (local.set $r (call $try_grow (memory.grow (i32.load (i32.const 0))) (i32.load (i32.const 0))))
  (i32.store (i32.const 0) (local.get $r))
  (call $msg_reply_data_append (i32.const 0) (i32.const 4))
  (call $msg_reply))
"""


def test_memory_grow_past_the_heap_maximum_returns_minus_one():
    engine = hand_metered_engine(limits=Limits(wasm32_heap_bytes=4 * MiB))
    instance = install(engine, hand_metered(GROW))
    assert call(instance, "grow", (63).to_bytes(4, "little")).reply == (1).to_bytes(4, "little")
    assert instance.heap.size_bytes == 64 * 65536  # 4 MiB, the maximum
    assert call(instance, "grow", (1).to_bytes(4, "little")).reply == (-1).to_bytes(4, "little", signed=True)


def test_growing_past_wasm_memory_limit_traps_with_ic0539_and_changes_nothing(engine):
    instance = install(engine, hand_metered(GROW))
    limited = VIEW.__class__(**{**VIEW.__dict__, "wasm_memory_limit": 2 * MiB})
    ok = call(instance, "grow", (30).to_bytes(4, "little"), view=limited)
    assert ok.trap is None and instance.heap.size_bytes == 31 * 65536
    over = call(instance, "grow", (2).to_bytes(4, "little"), view=limited)
    assert over.trap.error_code == "IC0539"
    assert "exceeded its current Wasm memory limit of 2097152 bytes" in over.trap.message
    assert instance.heap.size_bytes == 31 * 65536


def test_a_memory64_module_gets_64_bit_pointers(engine):
    body = """
    (func (export "canister_update echo") (local $n i64)
      (local.set $n (call $msg_arg_data_size))
      (call $msg_arg_data_copy (i64.const 65536) (i64.const 0) (local.get $n))
      (call $msg_reply_data_append (i64.const 65536) (local.get $n))
      (call $msg_reply))
    """
    wasm = hand_metered(body, memory='(memory (export "memory") i64 2)', wasm64=True)
    instance = install(engine, wasm)
    assert instance.compiled.wasm64
    assert call(instance, "echo", b"sixty-four").reply == b"sixty-four"


def test_compiled_modules_are_cached_on_disk_by_hash(tmp_path):
    wasm = hand_metered(ECHO)
    install(hand_metered_engine(tmp_path), wasm)
    cached = sorted(tmp_path.iterdir())
    assert [p.suffix for p in cached] == [".cwasm", ".json"] and all("hand-metered" in p.name for p in cached)
    fresh = hand_metered_engine(tmp_path)  # a new engine (a restarted network) loads, not compiles
    assert call(install(fresh, wasm), "echo", b"again").reply == b"again"
    assert sorted(tmp_path.iterdir()) == cached


def test_an_instrumented_module_is_charged_the_ic_cost_table_plus_the_system_api():
    wat = """(module
      (import "ic0" "msg_reply" (func $reply))
      (memory (export "memory") 1)
      (func (export "canister_update count") (local $i i32)
        (loop $l
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 1000))))
        (call $reply))
      (func (export "canister_query spin") (loop $l (br $l))))"""
    instance = install(WasmEngine(None), wasmtime.wat2wasm(wat))
    outcome = call(instance, "count")
    assert outcome.trap is None and outcome.reply == b""
    assert outcome.instructions == (
        1  # the function's entry block: the IC's minimum of 1 (its `loop` costs 0)
        + 1000 * (1 + 1 + 1 + 1 + 1 + 1 + 1 + 2)  # loop body: local.get, const, add, local.set, get, const, lt_u, br_if
        + 0 + 5 + 0  # after the loop: end, call, end
        + 500  # ic0.msg_reply
    )
    spun = call(instance, "spin", kind=Kind.QUERY, limit=10_000_000)
    assert spun.trap.error_code == "IC0522" and spun.instructions == 10_000_000


def test_a_module_without_memory_runs_and_any_copy_into_it_traps():
    wat = """(module
      (import "ic0" "msg_reply" (func $reply))
      (import "ic0" "msg_arg_data_copy" (func $copy (param i32 i32 i32)))
      (func (export "canister_update nothing") (call $reply))
      (func (export "canister_update copy") (call $copy (i32.const 0) (i32.const 0) (i32.const 1))))"""
    instance = install(WasmEngine(None), wasmtime.wat2wasm(wat))
    assert call(instance, "nothing").reply == b"" and instance.heap.size_bytes == 0
    copy = call(instance, "copy", b"x").trap
    assert copy.error_code == "IC0504" and "heap out of bounds" in copy.message


def test_a_memory64_heap_grows_to_6_gib_and_no_further(engine):
    body = """
    (func (export "canister_update grow") (local $r i64)
      (call $msg_arg_data_copy (i64.const 0) (i64.const 0) (i64.const 8))
      (local.set $r (call $try_grow (memory.grow (i64.load (i64.const 0))) (i64.load (i64.const 0))))
      (i64.store (i64.const 0) (local.get $r))
      (call $msg_reply_data_append (i64.const 0) (i64.const 8))
      (call $msg_reply))"""
    instance = install(engine, hand_metered(body, memory='(memory (export "memory") i64 1)', wasm64=True))
    pages = 6 * 16384  # 6 GiB in 64 KiB pages

    def grow(by: int) -> int:
        return int.from_bytes(call(instance, "grow", by.to_bytes(8, "little")).reply, "little", signed=True)

    assert grow(pages - 2) == 1  # to one page short of 6 GiB: memory.grow returns the old size
    assert grow(1) == pages - 1 and instance.heap.size_bytes == 6 * GiB
    assert grow(1) == -1 and instance.heap.size_bytes == 6 * GiB


def test_a_host_side_failure_ends_the_execution_as_a_rolled_back_trap(engine):
    instance = install(engine, hand_metered(ECHO))
    broken = call(instance, "", kind=Kind.REPLY)  # a callback execution without the call's callbacks
    assert broken.trap.error_code == "IC0502" and "the replica failed to run it (ValueError" in broken.trap.message
    assert instance.heap.journal is None  # closed: the next execution starts clean
    assert call(instance, "echo", b"still fine").reply == b"still fine"


def test_the_compilation_charge_is_the_instrumentations_and_survives_the_disk_cache(tmp_path):
    wasm = wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "canister_update f")))')
    compiled = WasmEngine(tmp_path).compile(wasm)
    assert compiled.compilation_instructions == instrument.instrument(wasm, write_barrier=True).compilation_instructions
    assert compiled.compilation_instructions > 0
    assert WasmEngine(tmp_path).compile(wasm).compilation_instructions == compiled.compilation_instructions
