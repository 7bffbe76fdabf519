"""The state directory: atomic checkpoints, and a restart that keeps canisters and stable memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdk.principal import Principal
from replica.config import NetworkConfig
from replica.inprocess import LocalClient
from replica.network import Network
from replica.state_store import StateDirError

COUNTER = "tests.canisters_for_tests.counter:Counter"
PERSISTENT = "tests.canisters_for_tests.persistent_counter:PersistentCounter"
T = 10**12


def test_a_restart_keeps_canisters_settings_cycles_and_stable_memory(tmp_path: Path) -> None:
    client = LocalClient(Network(tmp_path, NetworkConfig(genesis_time_ns=0)))
    persistent = client.install(PERSISTENT, cycles=400 * T, name="persistent")
    counter = client.install(COUNTER, 5, cycles=400 * T, version="3")
    for _ in range(3):
        client.update(persistent, "inc")
    client.update(counter, "write_stable", 3 * 1024 * 1024 + 10, b"spans a chunk boundary" * 1000)
    client.update(counter, "set", 99)  # heap only: not kept by a restart
    before = {c: client.network.canister_info(c) for c in (persistent, counter)}
    rounds = client.network.round_number()
    client.network.stop()

    restarted = LocalClient(Network(tmp_path, NetworkConfig(genesis_time_ns=0)))
    assert restarted.network.canister_ids() == [persistent, counter]
    assert restarted.network.round_number() == rounds
    assert restarted.query(persistent, "get") == 3  # rebuilt from stable memory by post_upgrade
    stable = restarted.query(counter, "read_stable", 3 * 1024 * 1024 + 10, 22 * 1000)
    assert stable == b"spans a chunk boundary" * 1000
    assert restarted.query(counter, "get") == 5  # post_upgrade ran with the install argument again
    for canister_id, info in before.items():
        after = restarted.network.canister_info(canister_id)
        assert (after.class_path, after.version, after.module_hash, after.controllers, after.cycles) == (
            info.class_path, info.version, info.module_hash, info.controllers, info.cycles)
    assert restarted.update(persistent, "inc").value == 4
    ids = json.loads((tmp_path / "canister_ids.json").read_text())
    assert ids == {"persistent": {"local": persistent.to_text()}}
    # New canisters continue the id range instead of reusing ids.
    assert restarted.install(COUNTER, 0, cycles=400 * T) not in (persistent, counter)


def test_checkpoints_replace_chunk_files_and_leave_no_temporary_files(tmp_path: Path) -> None:
    client = LocalClient(Network(tmp_path, NetworkConfig(genesis_time_ns=0)))
    counter = client.install(COUNTER, 0, cycles=400 * T)
    for i in range(3):
        client.update(counter, "write_stable", 0, bytes([i]) * 100)
    chunk_dir = tmp_path / "stable" / counter.to_text()
    assert len(list(chunk_dir.iterdir())) == 1  # superseded chunk files were deleted
    assert not [p for p in tmp_path.rglob("*.tmp")]
    client.update(Principal.management(), "stop_canister", {"canister_id": counter})
    client.update(Principal.management(), "delete_canister", {"canister_id": counter})
    assert not chunk_dir.exists()


def test_a_damaged_registry_is_reported_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "registry.json").write_text("{ not json")
    with pytest.raises(StateDirError, match="damaged.*move it away"):
        Network(tmp_path)
