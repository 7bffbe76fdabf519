"""Building blocks for the wasm engine tests: hand-written WAT canisters and engines to run them.

A "hand-metered" module does what the IC's instrumentation would: it exports the i64 counter
`canister counter_instructions`, decrements it by literal amounts, and calls
`__.out_of_instructions` when it goes negative. Running it with `hand_metered_engine()` (whose
instrumentation leaves the bytes as they are) tests the engine's own part of the metering
exactly: System API charges, limits and `performance_counter`, independent of the cost table.
Modules without the counter go through the real instrumentation (`ic_engine()`).
"""

from __future__ import annotations

from pathlib import Path

import wasmtime

from replica.engines import CanisterView, Execution, Kind, Outcome
from replica.engines.wasm.engine import Instrumentation, WasmEngine, WasmInstance
from replica.fees import CURRENT_FEES
from replica.limits import DEFAULT_LIMITS, Limits
from replica.stable_memory import StableMemory

CANISTER_ID = bytes.fromhex("00000000000000010101")
CONTROLLER = bytes.fromhex("0a0b0c")
VIEW = CanisterView(CANISTER_ID, (CONTROLLER,), cycle_balance=10**13, fees=CURRENT_FEES, subnet_size=13)
UPDATE_LIMIT = DEFAULT_LIMITS.instructions_per_update
QUERY_LIMIT = DEFAULT_LIMITS.instructions_per_query

# ic0 imports (wasm32 signatures) that hand-written canisters may use, by name.
IC0_32 = {
    "msg_arg_data_size": "(result i32)", "msg_arg_data_copy": "(param i32 i32 i32)",
    "msg_caller_size": "(result i32)", "msg_caller_copy": "(param i32 i32 i32)",
    "msg_reply_data_append": "(param i32 i32)", "msg_reply": "", "msg_reject": "(param i32 i32)",
    "msg_reject_code": "(result i32)", "msg_reject_msg_size": "(result i32)",
    "msg_reject_msg_copy": "(param i32 i32 i32)", "msg_method_name_size": "(result i32)",
    "msg_method_name_copy": "(param i32 i32 i32)", "accept_message": "",
    "msg_cycles_available128": "(param i32)", "msg_cycles_accept128": "(param i64 i64 i32)",
    "msg_cycles_refunded128": "(param i32)", "canister_cycle_balance128": "(param i32)",
    "canister_self_size": "(result i32)", "canister_self_copy": "(param i32 i32 i32)",
    "canister_status": "(result i32)", "canister_version": "(result i64)",
    "call_new": "(param i32 i32 i32 i32 i32 i32 i32 i32)", "call_on_cleanup": "(param i32 i32)",
    "call_data_append": "(param i32 i32)", "call_cycles_add128": "(param i64 i64)",
    "call_perform": "(result i32)", "stable_size": "(result i32)", "stable_grow": "(param i32) (result i32)",
    "stable_read": "(param i32 i32 i32)", "stable_write": "(param i32 i32 i32)",
    "stable64_size": "(result i64)", "stable64_grow": "(param i64) (result i64)",
    "stable64_read": "(param i64 i64 i64)", "stable64_write": "(param i64 i64 i64)",
    "certified_data_set": "(param i32 i32)", "data_certificate_present": "(result i32)",
    "data_certificate_size": "(result i32)", "data_certificate_copy": "(param i32 i32 i32)",
    "time": "(result i64)", "global_timer_set": "(param i64) (result i64)",
    "performance_counter": "(param i32) (result i64)", "is_controller": "(param i32 i32) (result i32)",
    "in_replicated_execution": "(result i32)", "debug_print": "(param i32 i32)", "trap": "(param i32 i32)",
    "cycles_burn128": "(param i64 i64 i32)", "msg_caller_info_data_size": "(result i32)",
    "env_var_count": "(result i32)", "env_var_value_size": "(param i32 i32) (result i32)",
    "cost_call": "(param i64 i64 i32)", "cost_create_canister": "(param i32)",
    "subnet_self_node_count": "(result i32)", "root_key_size": "(result i32)",
}


def ic0_imports(*names: str) -> str:
    """WAT import lines for the named ic0 functions (wasm32), each as $<name>."""
    return "\n".join(f'(import "ic0" "{n}" (func ${n} {IC0_32[n]}))' for n in names)


def hand_metered(body: str, *, memory: str = "(memory (export \"memory\") 1)", wasm64: bool = False) -> bytes:
    """A module importing every ic0 function (as $name) and what the instrumentation imports:
    `__.out_of_instructions` ($oot), `__.try_grow_wasm_memory` ($try_grow: call it after a
    memory.grow with its result and argument) and `__.first_write_range` ($first_write_range:
    call it with the address and length before writing, as the write barrier does), with the
    counter global $c and `body` (functions, tables, data) after them."""
    signatures = IC0_32 if not wasm64 else {n: s.replace("i32", "i64") for n, s in IC0_32.items()
                                            if n not in ("stable_size", "stable_grow", "stable_read",
                                                         "stable_write")}
    if wasm64:  # results that stay i32 in memory64 modules
        for name in ("msg_reject_code", "canister_status", "call_perform", "data_certificate_present",
                     "in_replicated_execution", "subnet_self_node_count"):
            signatures[name] = "(result i32)"
        signatures["is_controller"] = "(param i64 i64) (result i32)"
        signatures["performance_counter"] = "(param i32) (result i64)"
        signatures["msg_cycles_accept128"] = "(param i64 i64 i64)"
        signatures["cycles_burn128"] = signatures["cost_call"] = "(param i64 i64 i64)"
    ptr = "i64" if wasm64 else "i32"
    imports = "\n".join(f'(import "ic0" "{n}" (func ${n} {s}))' for n, s in signatures.items())
    wat = f"""(module
      {imports}
      (import "__" "out_of_instructions" (func $oot))
      (import "__" "try_grow_wasm_memory" (func $try_grow (param {ptr} {ptr}) (result {ptr})))
      (import "__" "first_write_range" (func $first_write_range (param i64 i64)))
      {memory}
      (global $c (export "canister counter_instructions") (mut i64) (i64.const 0))
      (func $charge (param $n i64)
        (global.set $c (i64.sub (global.get $c) (local.get $n)))
        (if (i64.lt_s (global.get $c) (i64.const 0)) (then (call $oot))))
      {body})"""
    return wasmtime.wat2wasm(wat)


def hand_metered_engine(cache_dir: Path | None = None, limits: Limits = DEFAULT_LIMITS) -> WasmEngine:
    return WasmEngine(cache_dir, limits, Instrumentation(lambda wasm: (wasm, 0), "hand-metered"))


def install(engine: WasmEngine, wasm: bytes, stable: StableMemory | None = None) -> WasmInstance:
    instance, outcome = engine.instantiate(wasm, stable or StableMemory(DEFAULT_LIMITS.stable_memory_bytes), VIEW)
    assert outcome.trap is None, outcome.trap
    return instance


def call(instance: WasmInstance, method: str, arg: bytes = b"", *, kind: Kind = Kind.UPDATE,
         limit: int | None = None, view: CanisterView = VIEW, **fields) -> Outcome:
    if limit is None:
        limit = QUERY_LIMIT if kind in (Kind.QUERY, Kind.COMPOSITE_QUERY) else UPDATE_LIMIT
    return instance.execute(Execution(kind, limit, 1_700_000_000_000_000_000, method=method, arg=arg,
                                      caller=CONTROLLER, **fields), view)
