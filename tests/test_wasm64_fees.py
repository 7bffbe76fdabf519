"""A wasm64 (memory64) canister pays twice the per-instruction fee of a wasm32 one, as the IC
charges it (WASM64_INSTRUCTION_COST_OVERHEAD); the base fee per execution is the same."""

from __future__ import annotations

import pytest
import wasmtime

from replica.config import NetworkConfig
from replica.fees import CURRENT_FEES, FEES_2024
from replica.inprocess import MANAGEMENT, LocalClient
from replica.limits import DEFAULT_LIMITS
from replica.network import Network
from tests.management_calls import install_code
from tests.wasm_support import call, hand_metered, hand_metered_engine, install

# An update that replies with an empty Candid message after a loop of memory stores.
_WAT = """
(module
  (import "ic0" "msg_reply_data_append" (func $append (param {ptr} {ptr})))
  (import "ic0" "msg_reply" (func $reply))
  (@custom "icp:public candid:service" "service : {{ work : () -> () }}")
  (memory (export "memory") {ptr} 1)
  (data ({ptr}.const 0) "DIDL\\00\\00")
  (func (export "canister_update work") (local $i i32)
    (loop $again
      (i32.store ({ptr}.const 64) (i32.const 1))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 10000))))
    (call $append ({ptr}.const 0) ({ptr}.const 6))
    (call $reply)))
"""


def test_the_instruction_fee_doubles_for_wasm64_and_the_base_fee_does_not():
    for fees in (CURRENT_FEES, FEES_2024):
        for n in (13, 34):
            base = fees.execution_cycles(0, n)
            assert fees.execution_cycles(0, n, wasm64=True) == base
            wasm32 = fees.execution_cycles(10**9, n) - base
            # one rounding down of the scaled total, as for wasm32
            assert fees.execution_cycles(10**9, n, wasm64=True) - base - 2 * wasm32 in (-1, 0, 1)
            doubled = fees.instruction_cycles(10**9, n, wasm64=True)
            assert doubled - 2 * fees.instruction_cycles(10**9, n) in (-1, 0, 1)
    assert CURRENT_FEES.execution_cycles(1_000, wasm64=True) == 5_000_000 + 2_000


@pytest.mark.parametrize("ptr", ["i32", "i64"])
def test_a_canister_pays_the_execution_fee_of_its_architecture(ptr):
    client = LocalClient(Network(None, NetworkConfig()))
    canister = client.create_canister()
    install_code(client, canister, bytes(wasmtime.wat2wasm(_WAT.format(ptr=ptr))))
    subnet = client.network.subnet
    before = subnet.canisters[canister].cycles
    result = client.update(canister, "work")
    assert result.value is None
    n = subnet.subnet_size
    ingress = subnet.fees.ingress_cycles(len(b"DIDL\x00\x00") + len("work"), n)
    execution = subnet.fees.execution_cycles(result.report.instructions, n, wasm64=ptr == "i64")
    assert result.report.instructions > 10_000 * 5
    assert result.report.cycles == ingress + execution
    assert before - subnet.canisters[canister].cycles - ingress - execution in range(0, 100)  # + storage
    if ptr == "i64":
        assert execution - subnet.fees.execution_cycles(result.report.instructions, n) \
            == subnet.fees.instruction_cycles(result.report.instructions, n)


@pytest.mark.parametrize("wasm64", [False, True])
def test_cost_call_reserves_the_response_callback_at_the_callers_rate(wasm64):
    ptr = "i64" if wasm64 else "i32"
    body = f"""(func (export "canister_update cost")
      (call $cost_call (i64.const 3) (i64.const 10) ({ptr}.const 0))
      (call $msg_reply_data_append ({ptr}.const 0) ({ptr}.const 16))
      (call $msg_reply))"""
    memory = f'(memory (export "memory") {ptr} 1)'
    instance = install(hand_metered_engine(), hand_metered(body, memory=memory, wasm64=wasm64))
    reply = call(instance, "cost").reply
    limit = DEFAULT_LIMITS.instructions_per_update
    assert int.from_bytes(reply[:16], "little") == (
        260_000 + 1_000 * (3 + 10)  # the call and its 13 bytes of method name and argument
        + CURRENT_FEES.execution_cycles(limit, wasm64=wasm64)  # 5M + 40B cycles, or 5M + 80B in wasm64
        + 1_000 * 2 * 1024 * 1024)  # receiving the largest response
    assert CURRENT_FEES.execution_cycles(limit, wasm64=True) - CURRENT_FEES.execution_cycles(limit) == limit


@pytest.mark.parametrize("ptr", ["i32", "i64"])
def test_an_install_is_charged_at_its_modules_rate(ptr):
    client = LocalClient(Network(None, NetworkConfig()))
    canister = client.create_canister()
    subnet = client.network.subnet
    before = subnet.canisters[canister].cycles
    report = client.update(MANAGEMENT, "install_code", {
        "mode": {"install": None}, "canister_id": canister,
        "wasm_module": bytes(wasmtime.wat2wasm(_WAT.format(ptr=ptr))), "arg": b"",
        "sender_canister_version": None}).report
    charged = subnet.fees.execution_cycles(report.instructions, subnet.subnet_size, wasm64=ptr == "i64")
    assert report.instructions > 0
    assert charged <= before - subnet.canisters[canister].cycles < charged + 100  # + a few cycles of storage
