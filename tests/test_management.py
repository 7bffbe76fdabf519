"""The management canister against the interface spec (ic.did of ic-management-canister-types
0.8.0): every setting kept, checked and reported; canister_status.version; canister_info and its
history; raw_rand; uninstall_code; fetch_canister_logs as a non-replicated query over each
canister's bounded log; all of it across a restart."""

from __future__ import annotations

import pytest

from cdk.candid import decode, encode
from cdk.principal import Principal
from replica.api_types import IngressRejected
from replica.canister_log import RECORD_OVERHEAD_BYTES
from replica.config import NetworkConfig
from replica.inprocess import LOCAL_USER, CallFailed, LocalClient
from replica.network import Network

MANAGER = "tests.canisters_for_tests.manager:Manager"
COUNTER = "tests.canisters_for_tests.counter:Counter"
RULES = "tests.canisters_for_tests.call_rules:CallRules"
MANAGEMENT = Principal.management()
T = 10**12
VIEWER = Principal.self_authenticating(b"a log viewer")
STRANGER = Principal.self_authenticating(b"a stranger")


@pytest.fixture
def client() -> LocalClient:
    return LocalClient(Network(None, NetworkConfig(genesis_time_ns=1_700_000_000 * 10**9)))


def status(client: LocalClient, canister: Principal, sender: Principal | None = None) -> dict:
    return client.update(MANAGEMENT, "canister_status", {"canister_id": canister}, sender=sender).value


def update_settings(client: LocalClient, canister: Principal, **settings) -> None:
    client.update(MANAGEMENT, "update_settings", {"canister_id": canister, "settings": settings,
                                                  "sender_canister_version": None})


def logs_query(client: LocalClient, canister: Principal, sender: Principal = LOCAL_USER,
               filter_: dict | None = None) -> list[tuple[int, bytes]]:
    """fetch_canister_logs through the query path, as an agent's query call reaches it."""
    method = client.network.subnet.management_interface.methods["fetch_canister_logs"]
    result = client.network.query(sender, MANAGEMENT, "fetch_canister_logs",
                                  encode(method.args, [{"canister_id": canister, "filter": filter_}]))
    if result.reply is None:
        raise CallFailed(result.reject_code or 0, result.reject_message or "", result.error_code)
    (reply,) = decode(method.rets, result.reply)
    return [(r["idx"], r["content"]) for r in reply["canister_log_records"]]


def test_every_setting_is_kept_and_reported(client):
    canister = client.install(COUNTER, 0)
    update_settings(client, canister, compute_allocation=30, memory_allocation=50_000_000, freezing_threshold=86_400,
                    reserved_cycles_limit=7 * T, minimum_incoming_canister_call_cycles=1_000,
                    log_visibility={"allowed_viewers": [VIEWER]}, log_memory_limit=2048,
                    snapshot_visibility={"public": None}, status_visibility={"controllers": None},
                    wasm_memory_limit=1 << 30, wasm_memory_threshold=1 << 20,
                    environment_variables=[{"name": "MODE", "value": "test"}])
    settings = status(client, canister)["settings"]
    assert settings == {
        "controllers": [LOCAL_USER], "compute_allocation": 30, "memory_allocation": 50_000_000,
        "freezing_threshold": 86_400, "reserved_cycles_limit": 7 * T, "minimum_incoming_canister_call_cycles": 1_000,
        "log_visibility": {"allowed_viewers": [VIEWER]}, "log_memory_limit": 2048,
        "snapshot_visibility": {"public": None}, "status_visibility": {"controllers": None},
        "wasm_memory_limit": 1 << 30, "wasm_memory_threshold": 1 << 20,
        "environment_variables": [{"name": "MODE", "value": "test"}],
    }
    update_settings(client, canister, compute_allocation=5)  # absent settings stay as they were
    assert status(client, canister)["settings"] == {**settings, "compute_allocation": 5}


@pytest.mark.parametrize("bad, words", [
    ({"compute_allocation": 101}, "compute_allocation must be at most 100"),
    ({"memory_allocation": 1}, "already uses"),
    ({"log_visibility": {"allowed_viewers": [VIEWER] * 11}}, "at most 10 principals"),
    ({"environment_variables": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "must be unique"),
    ({"log_memory_limit": RECORD_OVERHEAD_BYTES - 1}, "cannot hold a single log record"),
])
def test_a_bad_setting_rejects_the_call_and_changes_nothing(client, bad, words):
    canister = client.install(COUNTER, 0)
    before = status(client, canister)
    with pytest.raises(CallFailed) as failed:
        update_settings(client, canister, freezing_threshold=7, **bad)  # a good setting with the bad one
    assert failed.value.error_code == "IC0408" and words in failed.value.message
    after = status(client, canister)
    assert (after["settings"], after["version"]) == (before["settings"], before["version"])


def test_version_counts_code_settings_status_and_update_executions(client):
    canister = client.create_canister()
    assert status(client, canister)["version"] == 0
    client.install_code(canister, COUNTER, 0)  # +1
    client.update(canister, "inc")  # +1: a successful update execution
    client.query(canister, "get")  # a query changes nothing
    with pytest.raises(CallFailed):
        client.update(canister, "inc_then_trap")  # a trapped execution does not count
    update_settings(client, canister, freezing_threshold=100)  # +1
    client.update(MANAGEMENT, "stop_canister", {"canister_id": canister})  # +1
    client.update(MANAGEMENT, "start_canister", {"canister_id": canister})  # +1
    client.update(MANAGEMENT, "uninstall_code", {"canister_id": canister, "sender_canister_version": None})  # +1
    assert status(client, canister)["version"] == 6


def test_canister_info_tells_the_history_to_canisters_only(client):
    manager = client.install(MANAGER)
    target = client.create_canister()
    client.install_code(target, COUNTER, 0)
    update_settings(client, target, controllers=[LOCAL_USER, manager])
    client.install_code(target, COUNTER, 0, mode="reinstall")
    client.update(MANAGEMENT, "uninstall_code", {"canister_id": target, "sender_canister_version": None})
    total, changes, module_hash, controllers = client.update(manager, "info", target, 10).value
    assert total == 5 and controllers == [LOCAL_USER, manager] and module_hash is None
    assert changes == ["0:from_user:creation", "1:from_user:code_deployment install",
                       f"2:from_user:controllers_change {LOCAL_USER.to_text()},{manager.to_text()}",
                       "3:from_user:code_deployment reinstall", "4:from_user:code_uninstall"]
    assert client.update(manager, "info", target, 2).value[1] == changes[-2:]
    assert client.update(manager, "info", target, None).value[1] == []  # none asked for, none given
    with pytest.raises(IngressRejected, match="canister_info"):
        client.update(MANAGEMENT, "canister_info", {"canister_id": target, "num_requested_changes": None})


def test_history_keeps_the_last_20_changes_and_counts_all(client):
    manager = client.install(MANAGER)
    target = client.install(COUNTER, 0)
    for _ in range(25):
        update_settings(client, target, controllers=[LOCAL_USER])
    total, changes, _, _ = client.update(manager, "info", target, 100).value
    assert total == 27 and len(changes) == 20 and changes[-1].startswith("26:")


def test_raw_rand_gives_fresh_32_bytes_to_canisters(client):
    manager = client.install(MANAGER)
    first, second = client.update(manager, "rand").value, client.update(manager, "rand").value
    assert len(first) == len(second) == 32 and first != second
    with pytest.raises(IngressRejected, match="raw_rand"):
        client.update(MANAGEMENT, "raw_rand")


def test_uninstall_code_rejects_open_calls_and_empties_the_canister(client):
    holder = client.install(RULES, cycles=100 * T)
    counter = client.install(COUNTER, 0, cycles=100 * T)
    held = client.submit(holder, "hold", counter, 9_000_000_000)  # its callee runs for 5 rounds
    client.network.execute_round()
    assert client.network.status(held).status == "processing"
    client.update(MANAGEMENT, "uninstall_code", {"canister_id": holder, "sender_canister_version": None})
    client.network.run_until_idle()
    with pytest.raises(CallFailed) as failed:
        client.result(holder, "hold", held)
    assert (failed.value.reject_code, failed.value.error_code) == (4, "IC0406")
    after = status(client, holder)
    assert after["module_hash"] is None and after["memory_metrics"]["wasm_memory_size"] == 0
    assert after["settings"]["controllers"] == [LOCAL_USER] and after["cycles"] > 0  # kept
    with pytest.raises(CallFailed) as empty:
        client.update(holder, "state")
    assert empty.value.error_code == "IC0537"  # an empty canister has no code to run


def test_uninstall_code_drops_stable_memory_and_keeps_the_chunk_store(client):
    counter = client.install(COUNTER, 0)
    client.update(counter, "write_stable", 0, b"state")
    client.update(MANAGEMENT, "upload_chunk", {"canister_id": counter, "chunk": b"a chunk"})
    client.update(MANAGEMENT, "uninstall_code", {"canister_id": counter, "sender_canister_version": None})
    metrics = status(client, counter)["memory_metrics"]
    assert metrics["stable_memory_size"] == 0 and metrics["wasm_chunk_store_size"] > 0


def test_logs_keep_prints_and_traps_of_replicated_executions_only(client):
    manager = client.install(MANAGER)
    client.update(manager, "log", "first", False)
    with pytest.raises(CallFailed):
        client.update(manager, "log", "second", True)  # printed, then trapped: both kept
    client.query(manager, "log_query", "not kept")  # a non-replicated query's print is not kept
    client.update(manager, "log_query", "kept")  # the same query run replicated is
    assert logs_query(client, manager) == [(0, b"installed"), (1, b"first"), (2, b"second"),
                                            (3, f"Canister {manager.to_text()} trapped explicitly: "
                                                "trapped after 'second'".encode()), (4, b"kept")]
    assert logs_query(client, manager, filter_={"by_idx": {"start": 1, "end": 2}})[0][0] == 1
    assert len(logs_query(client, manager, filter_={"by_idx": {"start": 1, "end": 2}})) == 2


def test_the_log_is_bounded_by_log_memory_limit_dropping_the_oldest(client):
    manager = client.install(MANAGER)
    update_settings(client, manager, log_memory_limit=100)
    for i in range(10):
        client.update(manager, "log", f"line {i:02d} " + "x" * 20, False)  # 16 + 28 bytes each
    kept = logs_query(client, manager)
    assert [idx for idx, _ in kept] == [9, 10]  # the newest that fit in 100 bytes; idx goes on counting
    assert status(client, manager)["memory_metrics"]["log_memory_store_size"] == 2 * (RECORD_OVERHEAD_BYTES + 28)


def test_log_visibility_decides_who_reads_the_log(client):
    manager = client.install(MANAGER)
    client.update(manager, "log", "secret", False)
    with pytest.raises(CallFailed, match="not allowed to query ic00 method fetch_canister_logs"):
        logs_query(client, manager, sender=VIEWER)
    update_settings(client, manager, log_visibility={"allowed_viewers": [VIEWER]})
    assert logs_query(client, manager, sender=VIEWER) == [(0, b"installed"), (1, b"secret")]
    with pytest.raises(CallFailed):
        logs_query(client, manager, sender=STRANGER)
    update_settings(client, manager, log_visibility={"public": None})
    assert logs_query(client, manager, sender=STRANGER)[-1] == (1, b"secret")


def test_logs_survive_upgrades_not_reinstalls(client):
    manager = client.install(MANAGER)
    client.update(manager, "log", "before", False)
    client.install_code(manager, MANAGER, mode="upgrade")
    assert logs_query(client, manager) == [(0, b"installed"), (1, b"before")]
    client.install_code(manager, MANAGER, mode="reinstall")
    assert logs_query(client, manager) == [(2, b"installed")]  # only what the new code's init printed


def test_fetch_canister_logs_is_a_query_only(client):
    manager = client.install(MANAGER)
    with pytest.raises(IngressRejected, match="can only be called as a query"):
        client.update(MANAGEMENT, "fetch_canister_logs", {"canister_id": manager, "filter": None})


def test_status_visibility_and_the_status_query(client):
    canister = client.install(COUNTER, 0)
    with pytest.raises(CallFailed, match="Only controllers"):
        status(client, canister, sender=STRANGER)
    update_settings(client, canister, status_visibility={"allowed_viewers": [STRANGER]})
    assert status(client, canister, sender=STRANGER)["status"] == {"running": None}
    method = client.network.subnet.management_interface.methods["canister_status"]
    arg = encode(method.args, [{"canister_id": canister}])
    result = client.network.query(STRANGER, MANAGEMENT, "canister_status", arg)
    (reply,) = decode(method.rets, result.reply)
    metrics = reply["memory_metrics"]
    assert reply["memory_size"] == sum(metrics.values())  # the IC's identity: the size is the sum of its parts


def test_settings_version_history_and_logs_survive_a_restart(tmp_path):
    client = LocalClient(Network(tmp_path, NetworkConfig(genesis_time_ns=1_700_000_000 * 10**9)))
    manager = client.install(MANAGER)
    update_settings(client, manager, compute_allocation=12, log_visibility={"allowed_viewers": [VIEWER]},
                    environment_variables=[{"name": "K", "value": "V"}])
    client.update(manager, "log", "remember me", False)
    before = status(client, manager)
    before_info = client.update(client.install(MANAGER), "info", manager, 5).value
    client.network.stop()
    restarted = LocalClient(Network(tmp_path, NetworkConfig(genesis_time_ns=1_700_000_000 * 10**9)))
    after = status(restarted, manager)
    assert after["settings"] == before["settings"] and after["version"] == before["version"]
    assert logs_query(restarted, manager, sender=VIEWER) == [(0, b"installed"), (1, b"remember me")]
    assert restarted.update(restarted.install(MANAGER), "info", manager, 5).value[:2] == before_info[:2]
