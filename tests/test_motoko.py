"""Canisters compiled by the Motoko compiler (npm `motoko` 4.10.0) from tests/motoko/*.mo.

The fast tests pin what moc emits, which is what the replica must provide: the exact `ic0`
imports with their memory64 signatures, the canister_* exports, and the metadata sections.
"""

from __future__ import annotations

import pytest
import wasmtime

from replica.wasm_module import read_module
from tests.toolchains import compile_motoko

MOTOKO_CANISTERS = ["counter", "caller", "stable_store"]

# Every ic0 function moc 4.10's output imports (the same 30 for each canister here), with its
# memory64 signature: (params, results). The wasm engine must provide each of them.
MOC_IC0_IMPORTS = {
    "call_cycles_add128": (["i64", "i64"], []),
    "call_data_append": (["i64", "i64"], []),
    "call_new": (["i64"] * 8, []),
    "call_on_cleanup": (["i64", "i64"], []),
    "call_perform": ([], ["i32"]),
    "call_with_best_effort_response": (["i32"], []),
    "canister_self_copy": (["i64", "i64", "i64"], []),
    "canister_self_size": ([], ["i64"]),
    "canister_status": ([], ["i32"]),
    "debug_print": (["i64", "i64"], []),
    "global_timer_set": (["i64"], ["i64"]),
    "is_controller": (["i64", "i64"], ["i32"]),
    "msg_arg_data_copy": (["i64", "i64", "i64"], []),
    "msg_arg_data_size": ([], ["i64"]),
    "msg_caller_copy": (["i64", "i64", "i64"], []),
    "msg_caller_size": ([], ["i64"]),
    "msg_cycles_refunded128": (["i64"], []),
    "msg_reject": (["i64", "i64"], []),
    "msg_reject_code": ([], ["i32"]),
    "msg_reject_msg_copy": (["i64", "i64", "i64"], []),
    "msg_reject_msg_size": ([], ["i64"]),
    "msg_reply": ([], []),
    "msg_reply_data_append": (["i64", "i64"], []),
    "performance_counter": (["i32"], ["i64"]),
    "stable64_grow": (["i64"], ["i64"]),
    "stable64_read": (["i64", "i64", "i64"], []),
    "stable64_size": ([], ["i64"]),
    "stable64_write": (["i64", "i64", "i64"], []),
    "time": ([], ["i64"]),
    "trap": (["i64", "i64"], []),
}
# The system exports moc adds to every canister, beside the actor's own methods.
MOC_SYSTEM_EXPORTS = {
    "canister_init", "canister_pre_upgrade", "canister_post_upgrade", "canister_global_timer",
    "canister_update __motoko_async_helper", "canister_update __motoko_gc_trigger",
    "canister_update @motoko_async_stabilization", "canister_update __motoko_stabilize_before_upgrade",
    "canister_update @motoko_async_destabilization", "canister_update __motoko_destabilize_after_upgrade",
    "canister_query __motoko_stable_var_info", "canister_query __motoko_runtime_information",
}


@pytest.fixture(scope="module")
def modules() -> dict[str, bytes]:
    return compile_motoko(MOTOKO_CANISTERS)


def _module(wasm: bytes) -> wasmtime.Module:
    config = wasmtime.Config()
    config.wasm_memory64 = True
    return wasmtime.Module(wasmtime.Engine(config), wasm)


@pytest.mark.parametrize("name", MOTOKO_CANISTERS)
def test_moc_imports_exactly_these_ic0_functions(modules, name):
    imports = {(i.module, i.name): ([str(t) for t in i.type.params], [str(t) for t in i.type.results])
               for i in _module(modules[name]).imports}
    assert imports == {("ic0", function): signature for function, signature in MOC_IC0_IMPORTS.items()}


def test_moc_output_is_memory64_with_enhanced_orthogonal_persistence(modules):
    module = _module(modules["counter"])
    (memory,) = [e.type for e in module.exports if isinstance(e.type, wasmtime.MemoryType)]
    assert memory.is_64
    metadata = read_module(modules["counter"]).metadata
    assert metadata["enhanced-orthogonal-persistence"].public is False
    assert metadata["enhanced-orthogonal-persistence"].content == b"64-bit, layout version 1"
    assert metadata["motoko:stable-types"].content.decode().splitlines()[1:] == [
        "actor {", "  stable var count : Nat", "};"]


def test_counter_exports_its_methods_by_kind(modules):
    exports = {e.name for e in _module(modules["counter"]).exports if e.name.startswith("canister_")}
    assert exports - MOC_SYSTEM_EXPORTS == {
        "canister_update inc", "canister_update add", "canister_query get", "canister_query whoami",
        "canister_update refuse", "canister_update add_then_trap", "canister_update spin",
        "canister_query spin_query",
    }


def test_public_metadata_flag_publishes_the_candid_interface():
    public = read_module(compile_motoko(["counter"])["counter"]).metadata["candid:service"]
    private = read_module(compile_motoko(["counter"], public_metadata=())["counter"]).metadata["candid:service"]
    assert public.public is True and private.public is False
    assert public.content == private.content
    assert "inc: () -> (nat);" in public.content.decode()
    assert "get: () -> (nat) query;" in public.content.decode()
