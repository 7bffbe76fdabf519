"""Canisters compiled by the Motoko compiler (npm `motoko` 4.10.0) from tests/motoko/*.mo.

The fast tests pin what moc emits, which is what the replica must provide: the exact `ic0`
imports with their memory64 signatures, the canister_* exports, and the metadata sections.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess

import cbor2
import pytest
import wasmtime
from icp_agent import system_state
from icp_candid.candid import Types
from icp_canister import Canister
from icp_certificate import certificate as icp_certificate
from icp_core.errors import ReplicaReject
from icp_identity import Identity as AgentIdentity
from icp_principal import Principal as AgentPrincipal

from cdk.principal import Principal
from replica.config import NetworkConfig
from replica.inprocess import LocalClient
from replica.network import Network
from replica.wasm_module import read_module
from tests.agent_envs import blst_binding_dir, ic_py_python
from tests.gateway_support import REPO, agent_for, create_canister, start_network, stop_network
from tests.management_calls import KEEP_HEAP, failure, install_code
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


# --- Motoko's semantics on the simulated IC (in process) ---------------------------------------
@pytest.fixture
def client() -> LocalClient:
    return LocalClient(Network(None, NetworkConfig()))


def deploy(client: LocalClient, module: bytes) -> Principal:
    canister = client.create_canister()
    install_code(client, canister, module)
    return canister


def test_counter_update_and_query(client, modules):
    counter = deploy(client, modules["counter"])
    assert client.query(counter, "get") == 0
    assert client.update(counter, "inc").value == 1
    assert client.update(counter, "add", 41).value == 42
    assert client.query(counter, "get") == 42
    assert client.query(counter, "whoami") == client.sender


def test_throw_rejects_with_code_4_and_changes_nothing(client, modules):
    counter = deploy(client, modules["counter"])
    client.update(counter, "inc")
    refused = failure(lambda: client.update(counter, "refuse", "not today"))
    assert (refused.reject_code, refused.message) == (4, "not today")
    assert client.query(counter, "get") == 1


def test_a_trap_after_a_write_rolls_the_write_back(client, modules):
    counter = deploy(client, modules["counter"])
    client.update(counter, "add", 5)
    trapped = failure(lambda: client.update(counter, "add_then_trap", 100))
    assert (trapped.reject_code, trapped.error_code) == (5, "IC0503")
    assert "add_then_trap: trapping after adding 100" in trapped.message
    assert client.query(counter, "get") == 5


def test_endless_loops_stop_at_the_instruction_limits(client, modules):
    counter = deploy(client, modules["counter"])
    client.update(counter, "inc")
    update = failure(lambda: client.update(counter, "spin"))
    assert (update.reject_code, update.error_code) == (5, "IC0522")
    assert "40000000000" in update.message.replace("_", "").replace(",", "")
    query = failure(lambda: client.query(counter, "spin_query"))
    assert (query.reject_code, query.error_code) == (5, "IC0522")
    assert "5000000000" in query.message.replace("_", "").replace(",", "")
    assert client.query(counter, "get") == 1  # and the canister still works


def test_a_canister_calls_another_and_handles_its_rejects(client, modules):
    counter = deploy(client, modules["counter"])
    caller = deploy(client, modules["caller"])
    assert client.update(caller, "inc_other", counter).value == 1
    assert client.update(caller, "refuse_other", counter, "no").value == ("canister_reject", "no")
    code, message = client.update(caller, "trap_other", counter, 7).value
    assert code == "canister_error" and "add_then_trap: trapping after adding 7" in message
    assert client.query(counter, "get") == 1  # the callee's trap rolled its write back
    assert client.query(caller, "call_count") == 3
    trapped = failure(lambda: client.update(caller, "inc_other_then_trap", counter))
    assert trapped.error_code == "IC0503" and "trapping after the await" in trapped.message
    assert client.query(counter, "get") == 2  # the call was made
    assert client.query(caller, "call_count") == 4  # committed at the await; the +100 after it rolled back


def test_a_python_canister_calls_motoko_typed_by_its_candid_metadata(client, modules):
    counter = deploy(client, modules["counter"])
    caller = client.install("tests.canisters_for_tests.caller:Caller")
    assert client.update(caller, "call_inc", counter).value == 1
    assert client.query(counter, "get") == 1


def test_stable_state_survives_an_upgrade_that_keeps_the_heap(client, modules):
    store = deploy(client, modules["stable_store"])
    client.update(store, "bump")
    assert client.update(store, "bump").value == (2, 2)
    install_code(client, store, modules["stable_store"], mode=KEEP_HEAP)
    assert client.query(store, "read") == (2, 0)  # persistent kept, transient started again
    assert client.update(store, "bump").value == (3, 1)


def test_upgrading_orthogonal_persistence_without_keep_is_refused(client, modules):
    store = deploy(client, modules["stable_store"])
    client.update(store, "bump")
    refused = failure(lambda: install_code(client, store, modules["stable_store"], mode={"upgrade": None}))
    assert refused.message.startswith("Missing upgrade option: Enhanced orthogonal persistence requires the "
                                      "`wasm_memory_persistence` upgrade option.")
    assert client.query(store, "read") == (1, 1)  # nothing changed
    # Naming `opt replace` is the IC's way to discard the heap on purpose: accepted.
    install_code(client, store, modules["stable_store"],
                 mode={"upgrade": {"skip_pre_upgrade": None, "wasm_memory_persistence": {"replace": None}}})
    install_code(client, store, modules["stable_store"], mode={"reinstall": None})
    assert client.query(store, "read") == (0, 0)


# --- over HTTP: `icllama start`, installed through the management canister, called by agents ---
UPGRADE_OPTIONS = Types.Opt(Types.Record({
    "skip_pre_upgrade": Types.Opt(Types.Bool),
    "wasm_memory_persistence": Types.Opt(Types.Variant({"keep": Types.Null, "replace": Types.Null})),
}))
INSTALL_ARG = Types.Record({
    "mode": Types.Variant({"install": Types.Null, "reinstall": Types.Null, "upgrade": UPGRADE_OPTIONS}),
    "canister_id": Types.Principal,
    "wasm_module": Types.Vec(Types.Nat8),
    "arg": Types.Vec(Types.Nat8),
})
CHUNK_HASH = Types.Record({"hash": Types.Vec(Types.Nat8)})
UPLOAD_CHUNK_ARG = Types.Record({"canister_id": Types.Principal, "chunk": Types.Vec(Types.Nat8)})
INSTALL_CHUNKED_ARG = Types.Record({
    "mode": Types.Variant({"install": Types.Null, "reinstall": Types.Null, "upgrade": UPGRADE_OPTIONS}),
    "target_canister": Types.Principal,
    "chunk_hashes_list": Types.Vec(CHUNK_HASH),
    "wasm_module_hash": Types.Vec(Types.Nat8),
    "arg": Types.Vec(Types.Nat8),
})
NO_ARGS = list(b"DIDL\x00\x00")
CHUNK = 100_000  # small chunks, so that even these modules arrive in several


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A network served by `icllama start`, whose certificates icp-py-core verifies (blst, and our
    root key trusted as agent-js users fetchRootKey())."""
    running = start_network(tmp_path_factory.mktemp("motoko-network"))
    root_key = cbor2.loads(agent_for(running.url).client.status())["root_key"]
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(blst_binding_dir()))
        patch.setattr(icp_certificate, "IC_ROOT_KEY", root_key)
        yield running
    stop_network(running)


def http_install(agent, canister_id: str, module: bytes, mode: dict) -> None:
    agent.update("aaaaa-aa", "install_code", [{"type": INSTALL_ARG, "value": {
        "mode": mode, "canister_id": AgentPrincipal.from_str(canister_id), "wasm_module": list(module),
        "arg": NO_ARGS}}], effective_canister_id=canister_id)


def http_install_chunked(agent, canister_id: str, module: bytes) -> list[bytes]:
    """upload_chunk for each part, then install_chunked_code, as dfx and icp-cli do; the hashes."""
    target = AgentPrincipal.from_str(canister_id)
    hashes = []
    for offset in range(0, len(module), CHUNK):
        reply = agent.update("aaaaa-aa", "upload_chunk", [{"type": UPLOAD_CHUNK_ARG, "value": {
            "canister_id": target, "chunk": list(module[offset:offset + CHUNK])}}],
            return_type=[CHUNK_HASH], effective_canister_id=canister_id)
        hashes.append(bytes(reply[0]["value"]["hash"]))
    agent.update("aaaaa-aa", "install_chunked_code", [{"type": INSTALL_CHUNKED_ARG, "value": {
        "mode": {"install": None}, "target_canister": target,
        "chunk_hashes_list": [{"hash": list(h)} for h in hashes],
        "wasm_module_hash": list(hashlib.sha256(module).digest()), "arg": NO_ARGS}}],
        effective_canister_id=canister_id)
    return hashes


@pytest.fixture(scope="module")
def deployed(served, modules) -> dict[str, str]:
    """The three canisters installed over HTTP by a controller: the counter gzipped (as dfx ships
    modules), the caller through chunks."""
    agent = agent_for(served.url, CONTROLLER)
    ids = {name: create_canister(agent) for name in MOTOKO_CANISTERS}
    http_install(agent, ids["counter"], gzip.compress(modules["counter"], mtime=0), {"install": None})
    http_install(agent, ids["stable_store"], modules["stable_store"], {"install": None})
    hashes = http_install_chunked(agent, ids["caller"], modules["caller"])
    assert hashes == [hashlib.sha256(modules["caller"][i:i + CHUNK]).digest()
                      for i in range(0, len(modules["caller"]), CHUNK)]
    return ids


CONTROLLER = AgentIdentity()


@pytest.mark.network
def test_icp_py_core_calls_motoko_canisters_typed_by_their_metadata(served, deployed, modules):
    agent = agent_for(served.url, AgentIdentity())
    # The agent reads candid:service at read_state /canister/<id>/metadata and types calls with it.
    gzipped = gzip.compress(modules["counter"], mtime=0)
    assert system_state.canister_module_hash(agent, deployed["counter"]) == hashlib.sha256(gzipped).hexdigest()
    counter = Canister(agent, deployed["counter"], auto_fetch_candid=True)
    assert counter.candid_str == read_module(modules["counter"]).metadata["candid:service"].content.decode()
    before = counter.get()[0]["value"]
    assert counter.inc()[0]["value"] == before + 1
    assert counter.add(10)[0]["value"] == before + 11
    assert counter.whoami()[0]["value"].to_str() == agent.get_principal().to_str()
    with pytest.raises(ReplicaReject) as refused:
        counter.refuse("refused over HTTP")
    assert refused.value.reject_code == 4 and "refused over HTTP" in str(refused.value)
    with pytest.raises(ReplicaReject) as trapped:
        counter.add_then_trap(1000)
    assert trapped.value.reject_code == 5 and "IC0503" in str(trapped.value)
    with pytest.raises(ReplicaReject) as looped:
        counter.spin()
    assert looped.value.reject_code == 5 and "IC0522" in str(looped.value)
    assert counter.get()[0]["value"] == before + 11


@pytest.mark.network
def test_icp_py_core_inter_canister_calls_and_rejects(served, deployed):
    agent = agent_for(served.url, AgentIdentity())
    caller = Canister(agent, deployed["caller"], auto_fetch_candid=True)
    counter = AgentPrincipal.from_str(deployed["counter"])
    before = Canister(agent, deployed["counter"], auto_fetch_candid=True).get()[0]["value"]
    assert caller.inc_other(counter)[0]["value"] == before + 1
    assert [v["value"] for v in caller.refuse_other(counter, "no")] == ["canister_reject", "no"]
    code, message = (v["value"] for v in caller.trap_other(counter, 5))
    assert code == "canister_error" and "add_then_trap: trapping after adding 5" in message


@pytest.mark.network
def test_upgrade_over_http_keeps_persistent_state(served, deployed, modules):
    agent = agent_for(served.url, CONTROLLER)
    store = Canister(agent, deployed["stable_store"], auto_fetch_candid=True)
    store.bump()
    counts = [v["value"] for v in store.bump()]
    with pytest.raises(ReplicaReject, match="Missing upgrade option"):
        http_install(agent, deployed["stable_store"], modules["stable_store"], {"upgrade": []})
    http_install(agent, deployed["stable_store"], modules["stable_store"],
                 {"upgrade": [{"skip_pre_upgrade": [], "wasm_memory_persistence": [{"keep": None}]}]})
    assert [v["value"] for v in store.read()] == [counts[0], 0]


@pytest.mark.network
def test_ic_py_calls_the_motoko_counter(served, deployed):
    result = subprocess.run(
        [str(ic_py_python()), str(REPO / "tests" / "ic_py_motoko_client.py"), served.url, deployed["counter"]],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    before = answers["before"]
    assert (answers["inc"], answers["add"], answers["after"]) == (before + 1, before + 11, before + 11)
    assert answers["whoami"] == answers["sender"]
    assert "refused for ic-py" in answers["refuse"]
    # Motoko's debug_show writes 1000 as 1_000.
    assert answers["add_then_trap"].endswith("trapped explicitly: add_then_trap: trapping after adding 1_000")
    assert answers["final"] == before + 11
