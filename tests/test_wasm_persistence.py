"""A restarted network brings wasm canisters back exactly: module, heap (written pages and the
module's untouched data segments), grown memory, globals and stable memory; no code runs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import wasmtime

from replica.api_types import IngressMessage
from replica.config import NetworkConfig
from replica.inprocess import MANAGEMENT, LocalClient
from replica.network import Network

T = 10**12
FIVE_MIB = 5 * 1024 * 1024

# `bump` adds to a counter in a page past the first MiB, to a global and to stable memory, and
# counts its runs of canister_init in another global; `read` replies with all of them and with
# the data segment that no message ever writes.
CANISTER = """(module
  (import "ic0" "msg_reply_data_append" (func $append (param i32 i32)))
  (import "ic0" "msg_reply" (func $reply))
  (import "ic0" "stable64_grow" (func $stable_grow (param i64) (result i64)))
  (import "ic0" "stable64_read" (func $stable_read (param i64 i64 i64)))
  (import "ic0" "stable64_write" (func $stable_write (param i64 i64 i64)))
  (memory (export "memory") 1)
  (global $count (mut i64) (i64.const 0))
  (global $inits (mut i32) (i32.const 0))
  (data (i32.const 16) "seed")
  (func (export "canister_init")
    (drop (memory.grow (i32.const 99)))
    (drop (call $stable_grow (i64.const 1)))
    (global.set $inits (i32.add (global.get $inits) (i32.const 1))))
  (func (export "canister_update bump")
    (i64.store (i32.const 5242880) (i64.add (i64.load (i32.const 5242880)) (i64.const 1)))
    (global.set $count (i64.add (global.get $count) (i64.const 10)))
    (call $stable_read (i64.const 5242888) (i64.const 0) (i64.const 8))
    (i64.store (i32.const 5242888) (i64.add (i64.load (i32.const 5242888)) (i64.const 100)))
    (call $stable_write (i64.const 0) (i64.const 5242888) (i64.const 8))
    (call $reply))
  (func (export "canister_query read")
    (i64.store (i32.const 5242896) (global.get $count))
    (i32.store (i32.const 5242904) (global.get $inits))
    (i32.store (i32.const 5242908) (memory.size))
    (call $append (i32.const 5242880) (i32.const 32))
    (call $append (i32.const 16) (i32.const 4))
    (call $reply)))"""


def _network(state_dir: Path) -> Network:
    return Network(state_dir, NetworkConfig(genesis_time_ns=0))


def _update(network: Network, client: LocalClient, canister, method: str) -> bytes:
    request_id = os.urandom(32)
    network.submit(IngressMessage(request_id, client.sender, canister, method, b"", time.time_ns() + 60 * 10**9,
                                  canister))
    network.run_until_idle()
    status = network.status(request_id)
    assert status.status == "replied", status
    return status.reply


def _read(network: Network, client: LocalClient, canister) -> tuple[int, ...]:
    reply = network.query(client.sender, canister, "read", b"").reply
    assert reply[32:] == b"seed"
    return tuple(int.from_bytes(reply[i:i + 8], "little") for i in range(0, 32, 8))


def test_a_restart_restores_a_wasm_canister_exactly(tmp_path: Path) -> None:
    network = _network(tmp_path)
    client = LocalClient(network)
    canister = client.create_canister(100 * T)
    client.update(MANAGEMENT, "install_code", {
        "mode": {"install": None}, "canister_id": canister, "wasm_module": wasmtime.wat2wasm(CANISTER),
        "arg": b"", "sender_canister_version": None})
    for _ in range(3):
        _update(network, client, canister, "bump")
    before = _read(network, client, canister)
    assert before == (3, 300, 30, 1 | (100 << 32))  # counter, stable copy, global; inits and pages
    network.stop()

    restarted = _network(tmp_path)
    client = LocalClient(restarted)
    assert _read(restarted, client, canister) == before
    _update(restarted, client, canister, "bump")
    assert _read(restarted, client, canister) == (4, 400, 40, 1 | (100 << 32))
    restarted.stop()

    again = _network(tmp_path)  # only the pages written since the last checkpoint were saved
    assert _read(again, LocalClient(again), canister) == (4, 400, 40, 1 | (100 << 32))
    again.stop()


def test_a_reinstall_is_what_a_restart_brings_back_not_the_heap_before_it(tmp_path: Path) -> None:
    network = _network(tmp_path)
    client = LocalClient(network)
    canister = client.create_canister(100 * T)

    def install(mode: str) -> None:
        client.update(MANAGEMENT, "install_code", {
            "mode": {mode: None}, "canister_id": canister, "wasm_module": wasmtime.wat2wasm(CANISTER),
            "arg": b"", "sender_canister_version": None})

    install("install")
    _update(network, client, canister, "bump")
    network.stop()  # the bumped heap is saved

    network = _network(tmp_path)
    client = LocalClient(network)
    install("reinstall")  # the same module: a fresh heap (stable memory emptied too)
    assert _read(network, client, canister) == (0, 0, 0, 1 | (100 << 32))
    network.stop()

    again = _network(tmp_path)
    assert _read(again, LocalClient(again), canister) == (0, 0, 0, 1 | (100 << 32))
    again.stop()
