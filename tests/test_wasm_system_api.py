"""The ic0 System API: where each function may be called (the interface spec's table, written out
here from the spec, not from the implementation) and what it does."""

from __future__ import annotations

import dataclasses

import pytest

from replica.engines import Callback, Callbacks, Kind
from replica.engines.wasm.engine import WasmEngine
from replica.limits import Limits, MiB
from tests.wasm_support import CANISTER_ID, CONTROLLER, VIEW, call, hand_metered, hand_metered_engine, install

ALL_KINDS = ["I", "G", "U", "RQ", "NRQ", "Ry", "Rt", "C", "F", "T"]

# (call in WAT, the contexts the spec allows it in, among ALL_KINDS)
CONTEXT_CASES = {
    "msg_reply": ("(call $msg_reply)", {"U", "RQ", "NRQ", "Ry", "Rt"}),
    "msg_arg_data_size": ("(drop (call $msg_arg_data_size))", {"I", "U", "RQ", "NRQ", "Ry", "F"}),
    "msg_caller_size": ("(drop (call $msg_caller_size))", set(ALL_KINDS)),
    "accept_message": ("(call $accept_message)", {"F"}),
    "msg_method_name_size": ("(drop (call $msg_method_name_size))", {"F"}),
    "msg_reject_code": ("(drop (call $msg_reject_code))", {"Ry", "Rt", "C"}),
    "msg_reject_msg_size": ("(drop (call $msg_reject_msg_size))", {"Rt"}),
    "call_new": ("(call $call_new (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) "
                 "(i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))", {"U", "Ry", "Rt", "T"}),
    "data_certificate_size": ("(drop (call $data_certificate_size))", {"NRQ"}),
    "certified_data_set": ("(call $certified_data_set (i32.const 0) (i32.const 1))", {"I", "G", "U", "Ry", "Rt", "T"}),
    "global_timer_set": ("(drop (call $global_timer_set (i64.const 5)))", {"I", "G", "U", "Ry", "Rt", "C", "T"}),
    "msg_cycles_available128": ("(call $msg_cycles_available128 (i32.const 0))", {"U", "RQ", "Ry", "Rt"}),
    "msg_cycles_refunded128": ("(call $msg_cycles_refunded128 (i32.const 0))", {"Ry", "Rt"}),
    "time": ("(drop (call $time))", set(ALL_KINDS)),
    "stable64_size": ("(drop (call $stable64_size))", set(ALL_KINDS)),
    "cycles_burn128": ("(call $cycles_burn128 (i64.const 0) (i64.const 1) (i32.const 0))",
                       {"I", "G", "U", "RQ", "Ry", "Rt", "C", "T"}),
    "msg_caller_info_data_size": ("(drop (call $msg_caller_info_data_size))", {"U", "RQ", "NRQ", "Ry", "Rt", "C", "F"}),
}
# The replica's name for each kind of execution in its message.
MODE_NAMES = {"I": "init", "G": "pre upgrade", "U": "update", "RQ": "replicated query",
              "NRQ": "non replicated query", "Ry": "reply callback", "Rt": "reject callback", "C": "cleanup",
              "F": "inspect message", "T": "heartbeat"}
CALLBACKS = Callbacks(Callback(0, 1), Callback(0, 2), Callback(0, 3))


def _probe_module(instruction: str) -> bytes:
    entry_points = ["canister_init", "canister_pre_upgrade", "canister_update probe", "canister_query probe_query",
                    "canister_inspect_message", "canister_heartbeat"]
    exports = "\n".join(f'(export "{name}" (func $probe))' for name in entry_points)
    return hand_metered(f"""
      (table (export "table") 1 funcref)
      (elem (i32.const 0) $callback)
      (func $probe {instruction})
      (func $callback (param i32) {instruction})
      {exports}""")


def _run(instance, kind: str):
    if kind == "I":
        return call(instance, "", kind=Kind.INIT)
    if kind == "G":
        return call(instance, "", kind=Kind.PRE_UPGRADE)
    if kind == "U":
        return call(instance, "probe")
    if kind in ("RQ", "NRQ"):
        return call(instance, "probe_query", kind=Kind.QUERY, replicated=kind == "RQ", certificate=b"cert")
    if kind == "F":
        return call(instance, "probe", kind=Kind.INSPECT_MESSAGE)
    if kind == "T":
        return call(instance, "", kind=Kind.HEARTBEAT)
    callback_kind = {"Ry": Kind.REPLY, "Rt": Kind.REJECT, "C": Kind.CLEANUP}[kind]
    return call(instance, "", kind=callback_kind, callback=CALLBACKS, reject_code=4 if kind == "Rt" else 0)


@pytest.fixture(scope="module")
def engine() -> WasmEngine:
    return hand_metered_engine()


@pytest.mark.parametrize("function", sorted(CONTEXT_CASES))
def test_each_function_runs_only_where_the_spec_allows_it(engine, function):
    instruction, allowed = CONTEXT_CASES[function]
    instance = install(engine, _probe_module(instruction))
    for kind in ALL_KINDS:
        outcome = _run(instance, kind)
        if kind in allowed:
            assert outcome.trap is None, (function, kind, outcome.trap)
        else:
            assert outcome.trap is not None, (function, kind)
            assert outcome.trap.error_code == "IC0504"
            assert f'"ic0_{function}" cannot be executed in {MODE_NAMES[kind]} mode' in outcome.trap.message


IDENTITY = """
(func $reply_blob (param $at i32) (param $n i32)
  (call $msg_reply_data_append (local.get $at) (local.get $n)) (call $msg_reply))
(func (export "canister_update caller") (local $n i32)
  (local.set $n (call $msg_caller_size))
  (call $msg_caller_copy (i32.const 0) (i32.const 0) (local.get $n))
  (call $reply_blob (i32.const 0) (local.get $n)))
(func (export "canister_update self") (local $n i32)
  (local.set $n (call $canister_self_size))
  (call $canister_self_copy (i32.const 0) (i32.const 0) (local.get $n))
  (call $reply_blob (i32.const 0) (local.get $n)))
(func (export "canister_update controller") (local $n i32)
  (local.set $n (call $msg_arg_data_size))
  (call $msg_arg_data_copy (i32.const 0) (i32.const 0) (local.get $n))
  (i32.store8 (i32.const 100) (call $is_controller (i32.const 0) (local.get $n)))
  (call $reply_blob (i32.const 100) (i32.const 1)))
(func (export "canister_update facts")
  (i64.store (i32.const 0) (call $time))
  (i32.store (i32.const 8) (call $canister_status))
  (i32.store (i32.const 12) (call $in_replicated_execution))
  (i64.store (i32.const 16) (call $global_timer_set (i64.const 123)))
  (call $reply_blob (i32.const 0) (i32.const 24)))
(data (i32.const 200) "hello log")
(func (export "canister_update print") (call $debug_print (i32.const 200) (i32.const 9)) (call $msg_reply))
(func (export "canister_update certify")
  (call $msg_arg_data_copy (i32.const 0) (i32.const 0) (call $msg_arg_data_size))
  (call $certified_data_set (i32.const 0) (call $msg_arg_data_size)) (call $msg_reply))
(func (export "canister_update counter_type") (drop (call $performance_counter (i32.const 2))))
"""


def test_caller_self_controllers_time_status_and_timer(engine):
    instance = install(engine, hand_metered(IDENTITY))
    assert call(instance, "caller").reply == CONTROLLER
    assert call(instance, "self").reply == CANISTER_ID
    assert call(instance, "controller", CONTROLLER).reply == b"\x01"
    assert call(instance, "controller", CANISTER_ID).reply == b"\x00"
    timer_view = dataclasses.replace(VIEW, global_timer_ns=77, status="stopping")
    facts = call(instance, "facts", view=timer_view)
    assert int.from_bytes(facts.reply[:8], "little") == 1_700_000_000_000_000_000  # the execution's time
    assert facts.reply[8:16] == (2).to_bytes(4, "little") + (1).to_bytes(4, "little")  # stopping; replicated
    assert int.from_bytes(facts.reply[16:], "little") == 77  # global_timer_set returns the previous timer
    assert facts.global_timer_ns == 123


def test_debug_print_is_logged_and_charged_as_the_replica_charges_it(engine):
    instance = install(engine, hand_metered(IDENTITY))
    outcome = call(instance, "print")
    assert outcome.logs == [b"hello log"]
    # debug_print: 100 + 2 per byte kept in the log + 50 per byte transmitted; msg_reply: 500
    assert outcome.instructions == 100 + 2 * 9 + 50 * 9 + 500


def test_certified_data_is_at_most_32_bytes(engine):
    instance = install(engine, hand_metered(IDENTITY))
    assert call(instance, "certify", bytes(range(32))).certified_data == bytes(range(32))
    over = call(instance, "certify", bytes(33)).trap
    assert over.error_code == "IC0504" and "no larger than 32 bytes. Found 33 bytes." in over.message
    assert call(instance, "counter_type").trap.error_code == "IC0504"


CYCLES = """
(func (export "canister_update take") (local $n i32)
  (call $msg_cycles_available128 (i32.const 0))
  (call $msg_cycles_accept128 (i64.const 0) (i64.const 300) (i32.const 16))
  (call $canister_cycle_balance128 (i32.const 32))
  (call $msg_cycles_available128 (i32.const 48))
  (call $msg_reply_data_append (i32.const 0) (i32.const 64))
  (call $msg_reply))
(data (i32.const 100) "\\01\\02\\03callee-method")
(func (export "canister_update send")
  (call $call_new (i32.const 100) (i32.const 3) (i32.const 103) (i32.const 13)
                  (i32.const 5) (i32.const 6) (i32.const 7) (i32.const 8))
  (call $call_on_cleanup (i32.const 9) (i32.const 10))
  (call $call_data_append (i32.const 100) (i32.const 3))
  (call $call_cycles_add128 (i64.const 0) (i64.const 1000))
  (drop (call $call_perform))
  (call $msg_reply))
(func (export "canister_update overspend")
  (call $call_new (i32.const 100) (i32.const 3) (i32.const 103) (i32.const 13)
                  (i32.const 5) (i32.const 6) (i32.const 7) (i32.const 8))
  (call $call_cycles_add128 (i64.const 1) (i64.const 0)))
(func (export "canister_update append_alone") (call $call_data_append (i32.const 0) (i32.const 1)))
"""


def _u128(blob: bytes, at: int) -> int:
    return int.from_bytes(blob[at:at + 16], "little")


def test_cycles_available_accepted_and_the_balance(engine):
    instance = install(engine, hand_metered(CYCLES))
    outcome = call(instance, "take", cycles_available=1000)
    reply = outcome.reply
    assert (_u128(reply, 0), _u128(reply, 16), _u128(reply, 48)) == (1000, 300, 700)
    assert _u128(reply, 32) == VIEW.cycle_balance + 300
    assert outcome.cycles_accepted == 300
    assert call(instance, "take", cycles_available=100).cycles_accepted == 100  # no more than there is


def test_calls_carry_callee_method_data_cycles_and_callbacks(engine):
    instance = install(engine, hand_metered(CYCLES))
    outcome = call(instance, "send")
    (sent,) = outcome.calls
    assert (sent.callee, sent.method, sent.arg, sent.cycles) == (b"\x01\x02\x03", "callee-method",
                                                                 b"\x01\x02\x03", 1000)
    assert sent.callbacks == Callbacks(Callback(5, 6), Callback(7, 8), Callback(9, 10))
    over = call(instance, "overspend").trap
    assert over.error_code == "IC0207" and "cannot attach" in over.message
    alone = call(instance, "append_alone").trap
    assert alone.error_code == "IC0504" and "call ic0.call_new first" in alone.message


STABLE = """
(func (export "canister_update stable32") (local $n i32)
  (i32.store (i32.const 0) (call $stable_grow (i32.const 2)))
  (i32.store (i32.const 4) (call $stable_size))
  (i32.store (i32.const 8) (i32.const 0x01020304))
  (call $stable_write (i32.const 131068) (i32.const 8) (i32.const 4))
  (call $stable_read (i32.const 12) (i32.const 131068) (i32.const 4))
  (i64.store (i32.const 16) (call $stable64_grow (i64.const 1)))
  (i64.store (i32.const 24) (call $stable64_size))
  (call $msg_reply_data_append (i32.const 0) (i32.const 32))
  (call $msg_reply))
(func (export "canister_update read_past_end")
  (call $stable64_read (i64.const 0) (i64.const 196604) (i64.const 8)))
(func (export "canister_update grow_past_4gib") (local $r i32)
  (i32.store (i32.const 0) (call $stable_grow (i32.const 65536)))
  (call $msg_reply_data_append (i32.const 0) (i32.const 4))
  (call $msg_reply))
"""


def test_stable_memory_32_and_64_bit(engine):
    instance = install(engine, hand_metered(STABLE))
    outcome = call(instance, "stable32")
    reply = outcome.reply
    assert outcome.instructions == (
        500 + 20  # stable_grow, stable_size
        + 20 + 4 + 1000  # stable_write: overhead, 1 per byte, one new dirty 4 KiB page
        + 20 + 4  # stable_read
        + 500 + 20  # stable64_grow, stable64_size
        + 500 + 32 * 50 + 500)  # msg_reply_data_append, msg_reply
    assert reply[:8] == (0).to_bytes(4, "little") + (2).to_bytes(4, "little")
    assert reply[12:16] == (0x01020304).to_bytes(4, "little")
    assert reply[16:32] == (2).to_bytes(8, "little") + (3).to_bytes(8, "little")
    past = call(instance, "read_past_end").trap
    assert past.error_code == "IC0502" and "stable memory read out of bounds" in past.message
    # 3 pages now: 65536 more would pass what the 32-bit API can address
    assert call(instance, "grow_past_4gib").reply == (-1).to_bytes(4, "little", signed=True)


OTHERS = """
(func (export "canister_update burn")
  (call $cycles_burn128 (i64.const 0) (i64.const 5000) (i32.const 0))
  (call $canister_cycle_balance128 (i32.const 16))
  (i32.store (i32.const 32) (call $env_var_count))
  (i32.store (i32.const 36) (call $msg_caller_info_data_size))
  (call $msg_reply_data_append (i32.const 0) (i32.const 40))
  (call $msg_reply))
(data (i32.const 100) "HOME")
(func (export "canister_update env") (drop (call $env_var_value_size (i32.const 100) (i32.const 4))))
(func (export "canister_update cost")
  (call $cost_call (i64.const 3) (i64.const 10) (i32.const 0))
  (call $cost_create_canister (i32.const 16))
  (i32.store (i32.const 32) (call $subnet_self_node_count))
  (call $msg_reply_data_append (i32.const 0) (i32.const 36))
  (call $msg_reply))
(func (export "canister_update root_key") (drop (call $root_key_size)))
"""


def test_cycles_burn_costs_no_environment_variables_no_caller_info_and_unsimulated_functions(engine):
    instance = install(engine, hand_metered(OTHERS))
    outcome = call(instance, "burn")
    reply = outcome.reply
    assert _u128(reply, 0) == 5000 == outcome.cycles_burned
    assert _u128(reply, 16) == VIEW.cycle_balance - 5000
    assert reply[32:40] == bytes(8)  # no environment variables, no caller info
    env = call(instance, "env").trap
    assert env.error_code == "IC0504" and "no environment variable b'HOME' is set" in env.message
    costs = call(instance, "cost").reply
    assert _u128(costs, 0) == (
        260_000 + 1_000 * (3 + 10)  # a call and its 13 bytes of method name and argument
        + 5_000_000 + 40_000_000_000  # reserved: executing the largest response callback ...
        + 1_000 * 2 * 1024 * 1024)  # ... and receiving the largest response (2 MiB)
    assert _u128(costs, 16) == 500_000_000_000  # create_canister, on 13 nodes
    assert costs[32:] == (13).to_bytes(4, "little")
    root_key = call(instance, "root_key").trap  # the module installed; the call says what is missing
    assert root_key.error_code == "IC0502" and "ic0.root_key_size is not available" in root_key.message


def test_stable_memory_a_message_may_touch_is_limited_and_upgrades_may_touch_more():
    engine = hand_metered_engine(limits=Limits(stable_access_bytes_per_message=MiB,
                                               stable_access_bytes_per_upgrade=4 * MiB))
    body = """
    (func $write_2_mib
      (drop (call $stable64_grow (i64.const 32)))
      (call $stable64_write (i64.const 0) (i64.const 0) (i64.const 1048576))
      (call $stable64_write (i64.const 1048576) (i64.const 0) (i64.const 1048576)))
    (export "canister_post_upgrade" (func $write_2_mib))
    (func (export "canister_update write") (call $write_2_mib) (call $msg_reply))
    """
    instance = install(engine, hand_metered(body, memory='(memory (export "memory") 17)'))
    assert call(instance, "", kind=Kind.POST_UPGRADE).trap is None
    over = call(instance, "write").trap
    assert over.error_code == "IC0524" and "over the limit of 1048576" in over.message
