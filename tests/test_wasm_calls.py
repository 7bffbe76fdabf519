"""Wasm canisters on the subnet: calls between wasm canisters and to Python canisters, with reply,
reject and cleanup callbacks; DTS rounds from the measured count; queries that change nothing.
The canisters are installed through the management canister, so they are validated and
instrumented as every installed module is."""

from __future__ import annotations

import os
import time

import cbor2
import pytest
import wasmtime
from icp_agent.agent import sign_request
from icp_identity import Identity

from cdk.candid import decode, encode
from cdk.candid.types import T as CandidT
from cdk.principal import Principal
from replica.api_types import IngressMessage, IngressRejected
from replica.config import NetworkConfig
from replica.gateway_state import _canister_subtree as canister_subtree
from replica.hash_tree import lookup_path
from replica.inprocess import MANAGEMENT, LocalClient
from replica.network import Network
from tests.gateway_support import in_process_endpoints
from tests.wasm_support import ic0_imports

COUNTER = "tests.canisters_for_tests.counter:Counter"
T = 10**12

# The caller's argument: [callee length][callee][method length][method][payload]. It calls
# callee.method(payload); the reply callback answers "got:" + reply + env byte (7), and traps
# when the reply starts with "t"; the reject callback answers "rejected:" + code + message; the
# cleanup callback counts its runs in $cleanups (read by the query `cleanups`).
IMPORTS = ic0_imports(
    "msg_arg_data_size", "msg_arg_data_copy", "msg_reply_data_append", "msg_reply", "msg_reject", "trap",
    "msg_reject_code", "msg_reject_msg_size", "msg_reject_msg_copy", "call_new", "call_on_cleanup",
    "call_data_append", "call_perform", "msg_method_name_size", "msg_method_name_copy", "accept_message", "time",
    "global_timer_set", "certified_data_set", "data_certificate_present", "data_certificate_size",
    "data_certificate_copy")

CALLER = """
(table 3 funcref)
(elem (i32.const 0) $on_reply $on_reject $on_cleanup)
(data (i32.const 300) "got:rejected:")
(global $cleanups (mut i32) (i32.const 0))
(export "canister_composite_query ask" (func $call))
(func $call (export "canister_update call") (local $n i32) (local $callee i32) (local $method i32)
  (local.set $n (call $msg_arg_data_size))
  (call $msg_arg_data_copy (i32.const 0) (i32.const 0) (local.get $n))
  (local.set $callee (i32.load8_u (i32.const 0)))
  (local.set $method (i32.load8_u (i32.add (i32.const 1) (local.get $callee))))
  (call $call_new (i32.const 1) (local.get $callee)
    (i32.add (i32.const 2) (local.get $callee)) (local.get $method)
    (i32.const 0) (i32.const 7) (i32.const 1) (i32.const 8))
  (call $call_on_cleanup (i32.const 2) (i32.const 9))
  (call $call_data_append (i32.add (i32.add (i32.const 2) (local.get $callee)) (local.get $method))
    (i32.sub (local.get $n) (i32.add (i32.add (i32.const 2) (local.get $callee)) (local.get $method))))
  (drop (call $call_perform)))
(func $on_reply (param $env i32) (local $n i32)
  (local.set $n (call $msg_arg_data_size))
  (call $msg_arg_data_copy (i32.const 1000) (i32.const 0) (local.get $n))
  (if (i32.eq (i32.load8_u (i32.const 1000)) (i32.const 116)) (then unreachable))
  (i32.store8 (i32.const 900) (local.get $env))
  (call $msg_reply_data_append (i32.const 300) (i32.const 4))
  (call $msg_reply_data_append (i32.const 1000) (local.get $n))
  (call $msg_reply_data_append (i32.const 900) (i32.const 1))
  (call $msg_reply))
(func $on_reject (param $env i32) (local $n i32)
  (i32.store8 (i32.const 900) (call $msg_reject_code))
  (local.set $n (call $msg_reject_msg_size))
  (call $msg_reject_msg_copy (i32.const 1000) (i32.const 0) (local.get $n))
  (call $msg_reply_data_append (i32.const 304) (i32.const 9))
  (call $msg_reply_data_append (i32.const 900) (i32.const 1))
  (call $msg_reply_data_append (i32.const 1000) (local.get $n))
  (call $msg_reply))
(func $on_cleanup (param $env i32)
  (global.set $cleanups (i32.add (global.get $cleanups) (local.get $env))))
(func (export "canister_query cleanups")
  (i32.store (i32.const 0) (global.get $cleanups))
  (call $msg_reply_data_append (i32.const 0) (i32.const 4))
  (call $msg_reply))
"""

CALLEE = """
(data (i32.const 100) "no waykaputtea")
(global $count (mut i32) (i32.const 0))
(func (export "canister_update echo") (local $n i32)
  (local.set $n (call $msg_arg_data_size))
  (call $msg_arg_data_copy (i32.const 0) (i32.const 0) (local.get $n))
  (call $msg_reply_data_append (i32.const 0) (local.get $n))
  (call $msg_reply))
(func (export "canister_update refuse") (call $msg_reject (i32.const 100) (i32.const 6)))
(func (export "canister_update boom") (call $trap (i32.const 106) (i32.const 5)))
(export "canister_query tee_query" (func $tee))
(func $tee (export "canister_update tee")
  (call $msg_reply_data_append (i32.const 111) (i32.const 3)) (call $msg_reply))
(func (export "canister_update silent"))
(func (export "canister_update burn") (local $i i64)
  (call $msg_arg_data_copy (i32.const 0) (i32.const 0) (i32.const 8))
  (loop $l
    (local.set $i (i64.add (local.get $i) (i64.const 1)))
    (br_if $l (i64.lt_u (local.get $i) (i64.load (i32.const 0)))))
  (call $msg_reply))
(func $bump (export "canister_update bump")
  (global.set $count (i32.add (global.get $count) (i32.const 1)))
  (i32.store (i32.const 64) (global.get $count))
  (call $msg_reply))
(func (export "canister_update bump_then_burn") (local $i i64)
  (call $msg_arg_data_copy (i32.const 0) (i32.const 0) (i32.const 8))
  (loop $l
    (local.set $i (i64.add (local.get $i) (i64.const 1)))
    (br_if $l (i64.lt_u (local.get $i) (i64.load (i32.const 0)))))
  (call $bump))
(func (export "canister_query count")
  (global.set $count (i32.add (global.get $count) (i32.const 100)))
  (i32.store (i32.const 0) (global.get $count))
  (call $msg_reply_data_append (i32.const 0) (i32.const 4))
  (call $msg_reply_data_append (i32.const 64) (i32.const 4))
  (call $msg_reply))
"""


def module(body: str) -> bytes:
    return wasmtime.wat2wasm(f'(module {IMPORTS} (memory (export "memory") 1) {body})')


class Wasm:
    """Installs wasm through the management canister and calls it with raw bytes."""

    def __init__(self):
        self.network = Network(None, NetworkConfig(genesis_time_ns=1_700_000_000 * 10**9))
        self.client = LocalClient(self.network)

    def install(self, body: str) -> Principal:
        canister = self.client.create_canister(100 * T)
        self.client.update(MANAGEMENT, "install_code", {
            "mode": {"install": None}, "canister_id": canister, "wasm_module": module(body), "arg": b"",
            "sender_canister_version": None})
        return canister

    def submit(self, canister: Principal, method: str, arg: bytes) -> bytes:
        request_id = os.urandom(32)
        self.network.submit(IngressMessage(request_id, self.client.sender, canister, method, arg,
                                           time.time_ns() + 60 * 10**9, canister))
        return request_id

    def update(self, canister: Principal, method: str, arg: bytes = b""):
        request_id = self.submit(canister, method, arg)
        self.network.run_until_idle()
        return self.network.status(request_id)


def call_arg(callee: Principal, method: str, payload: bytes = b"") -> bytes:
    return bytes([len(callee.bytes)]) + callee.bytes + bytes([len(method)]) + method.encode() + payload


@pytest.fixture
def wasm() -> Wasm:
    return Wasm()


def test_a_wasm_canister_calls_another_and_its_reply_callback_answers(wasm):
    caller, callee = wasm.install(CALLER), wasm.install(CALLEE)
    status = wasm.update(caller, "call", call_arg(callee, "echo", b"ping"))
    assert status.status == "replied" and status.reply == b"got:ping\x07"


def test_a_reject_by_the_callee_reaches_the_reject_callback(wasm):
    caller, callee = wasm.install(CALLER), wasm.install(CALLEE)
    assert wasm.update(caller, "call", call_arg(callee, "refuse")).reply == b"rejected:\x04no way"
    trapped = wasm.update(caller, "call", call_arg(callee, "boom")).reply
    assert trapped.startswith(b"rejected:\x05") and trapped.endswith(b"trapped explicitly: kaput")
    missing = wasm.update(caller, "call", call_arg(callee, "nope")).reply
    assert missing.startswith(b"rejected:\x05") and b"has no update method 'nope'" in missing
    nobody = wasm.update(caller, "call", call_arg(Principal.from_canister_index(0x8000000000100999), "x")).reply
    assert nobody.startswith(b"rejected:\x03") and nobody.endswith(b"not found")


def test_a_trapping_reply_callback_runs_cleanup_and_the_caller_sees_the_trap(wasm):
    caller, callee = wasm.install(CALLER), wasm.install(CALLEE)
    status = wasm.update(caller, "call", call_arg(callee, "tee"))
    assert status.status == "rejected" and status.error_code == "IC0502"
    assert "trapped: unreachable" in status.reject_message
    assert wasm.network.query(wasm.client.sender, caller, "cleanups", b"").reply == (9).to_bytes(4, "little")


def test_a_call_context_left_without_a_reply_is_rejected_with_ic0506(wasm):
    callee = wasm.install(CALLEE)
    status = wasm.update(callee, "silent")
    assert (status.status, status.error_code) == ("rejected", "IC0506")


def test_wasm_calls_a_python_canister_with_candid_bytes(wasm):
    caller = wasm.install(CALLER)
    counter = wasm.client.install(COUNTER, 41, cycles=100 * T)
    reply = wasm.update(caller, "call", call_arg(counter, "inc", encode([], []))).reply
    assert reply.startswith(b"got:") and reply.endswith(b"\x07")
    assert decode([CandidT.nat], reply[4:-1]) == [42]
    assert wasm.client.query(counter, "get") == 42


def test_an_execution_spans_rounds_by_its_measured_instructions(wasm):
    callee = wasm.install(CALLEE)
    slice_ = wasm.network.subnet.limits.instructions_per_slice
    request_id = wasm.submit(callee, "burn", (500_000_000).to_bytes(8, "little"))  # ~5B instructions
    rounds = 0
    while wasm.network.status(request_id).status not in ("replied", "rejected"):
        wasm.network.execute_round()
        rounds += 1
    assert wasm.network.status(request_id).status == "replied"
    measured = wasm.network.report(request_id).instructions
    # 10 per iteration by the IC's table: local.get, i64.const, i64.add, local.set, local.get,
    # i32.const, i64.load, i64.lt_u (1 each) and br_if (2).
    assert 500_000_000 * 10 < measured < 500_000_000 * 10 + 10_000
    assert rounds == -(-measured // slice_) == 3


def test_a_query_changes_nothing_and_a_query_method_called_as_update_neither(wasm):
    callee = wasm.install(CALLEE)
    assert wasm.update(callee, "bump").status == "replied"
    first = wasm.network.query(wasm.client.sender, callee, "count", b"").reply
    again = wasm.network.query(wasm.client.sender, callee, "count", b"").reply
    assert first == again == _count(101, 1)
    assert wasm.update(callee, "count").reply == _count(101, 1)
    assert wasm.network.query(wasm.client.sender, callee, "count", b"").reply == _count(101, 1)


def _count(global_value: int, memory_value: int) -> bytes:
    return global_value.to_bytes(4, "little") + memory_value.to_bytes(4, "little")


def test_queries_see_the_state_from_before_an_execution_still_running(wasm):
    callee = wasm.install(CALLEE)
    assert wasm.update(callee, "bump").status == "replied"
    request_id = wasm.submit(callee, "bump_then_burn", (500_000_000).to_bytes(8, "little"))  # 3 rounds
    wasm.network.execute_round()
    assert wasm.network.status(request_id).status == "processing"
    # The execution ran on the host and wrote (global 2, memory 2), but its rounds are not over.
    assert wasm.network.query(wasm.client.sender, callee, "count", b"").reply == _count(101, 1)
    wasm.network.run_until_idle()
    assert wasm.network.status(request_id).status == "replied"
    assert wasm.network.query(wasm.client.sender, callee, "count", b"").reply == _count(102, 2)


INSPECTED = """
(data (i32.const 0) "allowed")
(func (export "canister_inspect_message")
  (call $msg_method_name_copy (i32.const 100) (i32.const 0) (call $msg_method_name_size))
  (if (i64.eq (i64.load (i32.const 0)) (i64.load (i32.const 100))) (then (call $accept_message))))
(func (export "canister_update allowed") (call $msg_reply))
(func (export "canister_update blocked") (call $msg_reply))
"""


def test_inspect_message_and_unknown_methods_refuse_ingress_before_it_is_accepted(wasm):
    canister = wasm.install(INSPECTED)
    assert wasm.update(canister, "allowed").status == "replied"
    with pytest.raises(IngressRejected) as refused:
        wasm.submit(canister, "blocked", b"")
    assert (refused.value.error_code, refused.value.reject_code) == ("IC0406", 4)
    assert "did not accept the call to blocked" in refused.value.message
    with pytest.raises(IngressRejected) as unknown:
        wasm.submit(canister, "nope", b"")
    assert unknown.value.error_code == "IC0536" and "has no update method 'nope'" in unknown.value.message


# init sets the timer 3 rounds ahead; the timer counts its runs and sets itself again once;
# the heartbeat counts rounds. `counts` answers both.
TIMERS = """
(global $heartbeats (mut i32) (i32.const 0))
(global $timers (mut i32) (i32.const 0))
(func (export "canister_init") (drop (call $global_timer_set (i64.add (call $time) (i64.const 3000000000)))))
(func (export "canister_global_timer")
  (global.set $timers (i32.add (global.get $timers) (i32.const 1)))
  (if (i32.eq (global.get $timers) (i32.const 1))
    (then (drop (call $global_timer_set (i64.add (call $time) (i64.const 1)))))))
(func (export "canister_heartbeat") (global.set $heartbeats (i32.add (global.get $heartbeats) (i32.const 1))))
(func (export "canister_query counts")
  (i32.store (i32.const 0) (global.get $heartbeats))
  (i32.store (i32.const 4) (global.get $timers))
  (call $msg_reply_data_append (i32.const 0) (i32.const 8))
  (call $msg_reply))
"""


def test_heartbeats_run_every_round_and_the_global_timer_when_due(wasm):
    canister = wasm.install(TIMERS)
    network = wasm.network

    def counts() -> tuple[int, int]:
        reply = network.query(wasm.client.sender, canister, "counts", b"").reply
        return int.from_bytes(reply[:4], "little"), int.from_bytes(reply[4:], "little")

    start = counts()
    network.execute_round()
    network.execute_round()
    assert counts() == (start[0] + 2, 0)  # the timer is 3 rounds (3 s) after the install
    for _ in range(4):
        network.execute_round()
    assert counts() == (start[0] + 6, 2)  # fired when due, and once more when it set itself again
    for _ in range(3):
        network.execute_round()
    assert counts()[1] == 2  # a fired timer stays off until set again


def test_a_composite_query_calls_queries_of_wasm_and_python_canisters_and_changes_nothing(wasm):
    asker, callee = wasm.install(CALLER), wasm.install(CALLEE)
    counter = wasm.client.install(COUNTER, 7, cycles=100 * T)
    wasm.update(callee, "bump")

    def ask(target, method: str, payload: bytes = b"") -> bytes:
        result = wasm.network.query(wasm.client.sender, asker, "ask", call_arg(target, method, payload))
        assert result.reply is not None, result
        return result.reply

    assert ask(callee, "count") == b"got:" + _count(101, 1) + b"\x07"  # the callee's query ran
    python = ask(counter, "get", encode([], []))
    assert decode([CandidT.nat], python[4:-1]) == [7]
    refused = ask(callee, "echo")  # an update method cannot be called from a query
    assert refused.startswith(b"rejected:\x05") and b"has no query method 'echo'" in refused
    trapped = wasm.network.query(wasm.client.sender, asker, "ask", call_arg(callee, "tee_query"))
    assert trapped.error_code == "IC0502" and "trapped: unreachable" in trapped.reject_message
    # Whatever the callbacks changed went with the composite query's state.
    assert wasm.network.query(wasm.client.sender, asker, "cleanups", b"").reply == bytes(4)
    assert wasm.network.query(wasm.client.sender, callee, "count", b"").reply == _count(101, 1)


def test_certified_data_set_by_an_update_is_in_the_state_tree_and_a_trap_keeps_the_old(wasm):
    canister = wasm.install("""
      (func (export "canister_update certify")
        (call $msg_arg_data_copy (i32.const 0) (i32.const 0) (call $msg_arg_data_size))
        (call $certified_data_set (i32.const 0) (call $msg_arg_data_size))
        (if (i32.eq (i32.load8_u (i32.const 0)) (i32.const 0xff)) (then unreachable))
        (call $msg_reply))""")
    assert wasm.update(canister, "certify", b"root hash").status == "replied"
    info = wasm.network.canister_info(canister)
    assert info.certified_data == b"root hash"
    assert canister_subtree(info)[b"certified_data"] == b"root hash"
    assert wasm.update(canister, "certify", b"\xffrolled back").status == "rejected"
    assert wasm.network.canister_info(canister).certified_data == b"root hash"


def test_a_python_canister_calls_a_wasm_canister_typed_by_its_candid_service(wasm):
    counter = wasm.install("""
      (@custom "icp:public candid:service" "service : { inc : () -> (nat) }")
      (data (i32.const 0) "DIDL\\00\\01\\7d")
      (global $count (mut i32) (i32.const 0))
      (func (export "canister_update inc")
        (global.set $count (i32.add (global.get $count) (i32.const 1)))
        (i32.store8 (i32.const 7) (global.get $count))  ;; nat as LEB128: one byte below 128
        (call $msg_reply_data_append (i32.const 0) (i32.const 8))
        (call $msg_reply))""")
    caller = wasm.client.install("tests.canisters_for_tests.caller:Caller", cycles=100 * T)
    assert wasm.client.update(caller, "call_inc", counter).value == 1
    assert wasm.client.update(caller, "call_inc", counter).value == 2


def test_a_due_timer_is_work_for_an_idle_network(wasm):
    canister = wasm.install(TIMERS)
    network = wasm.network
    assert network.run_until_idle() == 0  # the timer is 3 s ahead: nothing to do yet
    with network.lock:
        network.subnet.pass_idle_rounds(network.subnet.time_ns() + 5 * 10**9)  # idle time passes
    assert network.run_until_idle() >= 1  # the due timer runs a round by itself
    reply = network.query(wasm.client.sender, canister, "counts", b"").reply
    assert int.from_bytes(reply[4:], "little") >= 1


def test_a_query_through_the_gateway_reads_a_data_certificate_of_its_certified_data(wasm, tmp_path):
    canister = wasm.install("""
      (func (export "canister_update certify")
        (call $msg_arg_data_copy (i32.const 0) (i32.const 0) (call $msg_arg_data_size))
        (call $certified_data_set (i32.const 0) (call $msg_arg_data_size))
        (call $msg_reply))
      (func (export "canister_query certificate") (local $n i32)
        (if (i32.eqz (call $data_certificate_present)) (then (call $msg_reply) (return)))
        (local.set $n (call $data_certificate_size))
        (call $data_certificate_copy (i32.const 0) (i32.const 0) (local.get $n))
        (call $msg_reply_data_append (i32.const 0) (local.get $n))
        (call $msg_reply))""")
    assert wasm.update(canister, "certify", b"root hash").status == "replied"
    assert wasm.network.query(wasm.client.sender, canister, "certificate", b"").reply == b""  # none given
    endpoints = in_process_endpoints(wasm.network, tmp_path)
    identity = Identity(anonymous=True)
    _, body = sign_request({"request_type": "query", "sender": identity.sender().bytes,
                            "ingress_expiry": time.time_ns() + 60 * 10**9, "canister_id": canister.bytes,
                            "method_name": "certificate", "arg": b""}, identity)
    reply = cbor2.loads(endpoints.query(canister.to_text(), body).body)["reply"]["arg"]
    certificate = cbor2.loads(reply)
    assert lookup_path([b"canister", canister.bytes, b"certified_data"], certificate["tree"]).value == b"root hash"
    assert lookup_path([b"time"], certificate["tree"]).outcome == "found" and len(certificate["signature"]) == 48
