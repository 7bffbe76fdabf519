"""Clients facing a network that has gone: the upload gives up within seconds and says so, and
Ctrl-C stops it at once even while a call is in flight."""

from __future__ import annotations

import _thread
import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from cdk.principal import Principal
from client.agent import RemoteCanisters, connect
from client.identity import generate
from client.upload import CanisterShardTarget, HeldUpload, ShardFile, UploadError, upload_shards
from replica.loader import ModuleRef
from tests.gateway_support import REPO, start_network, stop_network

BLOB_CLASS = "tests.canisters_for_tests.shard_blob:ShardBlob"
BLOB_DID = REPO / "tests" / "canisters_for_tests" / "shard_blob.did"


def shard_file(tmp_path: Path, size: int) -> ShardFile:
    data = hashlib.shake_256(b"dead network").digest(size)
    path = tmp_path / "yblock_0.gguf"
    path.write_bytes(data)
    return ShardFile("yblock_0", path.name, path, size, hashlib.sha256(data).hexdigest())


@dataclass
class Hanging:
    """A target whose upload_chunk never comes back (a network that stopped answering)."""

    canister_id: str = "bkyz2-fmaaa-aaaaa-qaaaq-cai"

    def upload_status(self, name: str) -> HeldUpload:
        return HeldUpload(0, None, False)

    def upload_chunk(self, name: str, offset: int, data: bytes) -> int:
        threading.Event().wait(60)
        raise AssertionError("never answers")

    def upload_commit(self, name: str, size: int) -> str:
        raise AssertionError("not reached")

    def load(self) -> None:
        raise AssertionError("not reached")


def test_ctrl_c_stops_an_upload_at_once_while_a_call_hangs(tmp_path: Path) -> None:
    shard = shard_file(tmp_path, 3 * 1024 * 1024)
    threading.Timer(0.3, _thread.interrupt_main).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        upload_shards([(shard, Hanging())], progress=False)
    assert time.monotonic() - start < 1.5


@pytest.mark.network
def test_an_upload_gives_up_within_seconds_when_the_network_dies(tmp_path: Path) -> None:
    owner = generate("owner")
    network = start_network(tmp_path / "network")
    try:
        canisters = RemoteCanisters(connect(network.url, owner))
        management = canisters.canister(Principal.management(),
                                        REPO / "replica" / "management.did")
        created = management.update("provisional_create_canister_with_cycles",
                                    {"amount": None, "settings": None, "specified_id": None,
                                     "sender_canister_version": None})["canister_id"]
        module = ModuleRef(BLOB_CLASS, "1").to_wasm_module()
        management.update("install_code", {"mode": {"install": None}, "canister_id": created, "wasm_module": module,
                                           "arg": b"DIDL\x00\x00", "sender_canister_version": None})
        target = CanisterShardTarget(canisters.canister(created, BLOB_DID))
    finally:
        stop_network(network)  # the network is gone before the upload starts sending
    start = time.monotonic()
    with pytest.raises(UploadError) as failed:
        upload_shards([(shard_file(tmp_path, 3 * 1024 * 1024), target)], progress=False)
    assert time.monotonic() - start < 10
    error = str(failed.value)
    assert "no answer from" in error and "re-run the upload when the network is healthy" in error
