"""The management canister calls that install code, made through an in-process LocalClient with
the types of replica/management.did (as an agent would send them)."""

from __future__ import annotations

import pytest

from cdk.principal import Principal
from replica.inprocess import MANAGEMENT, CallFailed, LocalClient

KEEP_HEAP = {"upgrade": {"skip_pre_upgrade": None, "wasm_memory_persistence": {"keep": None}}}


def install_code(client: LocalClient, canister: Principal, module: bytes, mode: dict | None = None,
                 arg: bytes = b"DIDL\x00\x00", sender: Principal | None = None) -> None:
    client.update(MANAGEMENT, "install_code", {
        "mode": mode or {"install": None}, "canister_id": canister, "wasm_module": module, "arg": arg,
        "sender_canister_version": None}, sender=sender)


def upload_chunk(client: LocalClient, canister: Principal, chunk: bytes, sender: Principal | None = None) -> bytes:
    return client.update(MANAGEMENT, "upload_chunk", {"canister_id": canister, "chunk": chunk},
                         sender=sender).value["hash"]


def stored_chunks(client: LocalClient, canister: Principal) -> list[bytes]:
    return [c["hash"] for c in client.update(MANAGEMENT, "stored_chunks", {"canister_id": canister}).value]


def install_chunked(client: LocalClient, target: Principal, hashes: list[bytes], module_hash: bytes,
                    store: Principal | None = None, sender: Principal | None = None,
                    arg: bytes = b"DIDL\x00\x00") -> None:
    client.update(MANAGEMENT, "install_chunked_code", {
        "mode": {"install": None}, "target_canister": target, "store_canister": store,
        "chunk_hashes_list": [{"hash": h} for h in hashes], "wasm_module_hash": module_hash, "arg": arg,
        "sender_canister_version": None}, sender=sender)


def canister_status(client: LocalClient, canister: Principal) -> dict:
    return client.update(MANAGEMENT, "canister_status", {"canister_id": canister}).value


def failure(call) -> CallFailed:
    """The reject that `call()` must end in."""
    with pytest.raises(CallFailed) as raised:
        call()
    return raised.value
