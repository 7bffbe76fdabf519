"""Semantics of the simulated IC, each against a small test canister (tests/canisters_for_tests)."""

from __future__ import annotations

import time

import pytest

from cdk.principal import Principal
from replica.api_types import IngressMessage, IngressRejected
from replica.config import NetworkConfig
from replica.inprocess import CallFailed, LocalClient
from replica.limits import MiB
from replica.network import Network

COUNTER = "tests.canisters_for_tests.counter:Counter"
CALLER = "tests.canisters_for_tests.caller:Caller"
T = 10**12
GENESIS = 1_700_000_000 * 10**9


@pytest.fixture
def client() -> LocalClient:
    return LocalClient(Network(None, NetworkConfig(genesis_time_ns=GENESIS)))


def test_trap_rolls_back_only_the_trapping_execution(client: LocalClient) -> None:
    counter = client.install(COUNTER, 0, cycles=100 * T)
    caller = client.install(CALLER, cycles=100 * T)

    with pytest.raises(CallFailed) as failed:
        client.update(caller, "inc_local_call_then_trap", counter)
    assert failed.value.error_code == "IC0503" and failed.value.reject_code == 5
    assert "trapping after the await" in failed.value.message
    # The increment before the await was committed there; the one after it was rolled back.
    assert client.query(caller, "local") == 1
    assert client.query(counter, "get") == 1  # the callee's execution is not touched by the trap

    with pytest.raises(CallFailed, match="always traps"):
        client.update(counter, "inc_then_trap")
    assert client.query(counter, "get") == 1


def test_more_than_40b_instructions_traps_with_ic0522(client: LocalClient) -> None:
    counter = client.install(COUNTER, 0, cycles=100 * T)
    with pytest.raises(CallFailed) as failed:
        client.update(counter, "burn", 40_000_000_001)
    assert failed.value.error_code == "IC0522"
    assert "instruction limit" in failed.value.message
    assert client.query(counter, "get") == 0
    assert client.update(counter, "burn", 39_000_000_000).value == 1


def test_oversized_argument_and_reply_are_rejected_and_the_caller_is_intact(client: LocalClient) -> None:
    counter = client.install(COUNTER, 0, cycles=100 * T)
    caller = client.install(CALLER, cycles=100 * T)

    too_big = client.update(caller, "send_blob", counter, 10 * MiB + 1).value
    assert "err" in too_big and "IC0504" in too_big["err"] and "10485760" in too_big["err"]
    assert client.update(caller, "send_blob", counter, 1 * MiB).value == {"ok": 1 * MiB}

    big_reply = client.update(caller, "fetch_reply", counter, 2 * MiB + 1).value
    assert "err" in big_reply and "IC0504" in big_reply["err"] and "2097152" in big_reply["err"]
    # The caller handled both rejects and its own state changes were kept.
    assert client.query(caller, "local") == 3

    before = client.network.round_number()
    with pytest.raises(IngressRejected) as refused:
        client.update(counter, "echo", bytes(2 * MiB))
    assert refused.value.http_status == 413
    assert client.network.round_number() == before


def test_empty_balance_is_rejected_with_ic0207_and_a_top_up_restores_service(client: LocalClient) -> None:
    counter = client.install(COUNTER, 0, cycles=400 * T)
    caller = client.install(CALLER, cycles=400 * T)
    with client.network.lock:
        client.network.subnet.canister(counter).cycles = 0
    with pytest.raises(IngressRejected) as refused:
        client.update(counter, "inc")
    assert refused.value.error_code == "IC0207" and "top up" in refused.value.message
    # An inter-canister call to it is rejected the same way; the caller does not catch it and traps.
    with pytest.raises(CallFailed) as failed:
        client.update(caller, "call_inc", counter)
    assert "IC0207" in failed.value.message and "out of cycles" in failed.value.message

    client.update(caller, "deposit", counter, 50 * T)
    assert client.network.canister_info(counter).cycles >= 50 * T - 10**9
    assert client.update(counter, "inc").value == 1


def test_upgrade_keeps_stable_memory_and_clears_the_heap(client: LocalClient) -> None:
    counter = client.install(COUNTER, 0, cycles=400 * T)
    client.update(counter, "set", 42)
    client.update(counter, "write_stable", 70_000, b"kept across upgrades")
    old_hash = client.network.canister_info(counter).module_hash

    client.install_code(counter, COUNTER, 7, version="2", mode="upgrade")
    assert client.query(counter, "get") == 7  # the heap was rebuilt by post_upgrade(7)
    assert client.query(counter, "read_stable", 70_000, 20) == b"kept across upgrades"
    assert client.network.canister_info(counter).module_hash != old_hash

    client.install_code(counter, COUNTER, 3, version="2", mode="reinstall")
    assert client.query(counter, "get") == 3
    with pytest.raises(CallFailed, match="out of bounds"):
        client.query(counter, "read_stable", 70_000, 20)


def test_a_non_controllers_management_calls_are_rejected(client: LocalClient) -> None:
    counter = client.install(COUNTER, 0, cycles=400 * T)
    caller = client.install(CALLER, cycles=400 * T)
    stranger = Principal.self_authenticating(b"someone else")

    for method, arg in [
        ("canister_status", {"canister_id": counter}),
        ("stop_canister", {"canister_id": counter}),
        ("update_settings", {"canister_id": counter, "settings": {"controllers": [stranger]},
                             "sender_canister_version": None}),
    ]:
        with pytest.raises(CallFailed) as failed:
            client.update(Principal.management(), method, arg, sender=stranger)
        assert failed.value.error_code == "IC0512", method
        assert "Only controllers" in failed.value.message
    with pytest.raises(CallFailed) as failed:
        client.install_code(counter, COUNTER, 0, mode="reinstall", sender=stranger)
    assert failed.value.error_code == "IC0512"
    assert "IC0512" in client.update(caller, "status_of", counter).value["err"]
    assert client.query(counter, "get") == 0

    # The controller can hand control over; then the new controller manages it.
    client.update(Principal.management(), "update_settings", {
        "canister_id": counter, "settings": {"controllers": [caller]}, "sender_canister_version": None})
    assert "ok" in client.update(caller, "status_of", counter).value


def test_a_querys_changes_are_discarded(client: LocalClient) -> None:
    counter = client.install(COUNTER, 10, cycles=400 * T)
    assert client.query(counter, "inc_in_query") == 11
    assert client.query(counter, "inc_in_query") == 11
    assert client.query(counter, "get") == 10
    # Called as an update, a query method runs replicated but still keeps no changes.
    assert client.update(counter, "inc_in_query").value == 11
    assert client.query(counter, "get") == 10


def test_stop_start_and_delete(client: LocalClient) -> None:
    counter = client.install(COUNTER, 0, cycles=400 * T)
    mgmt = Principal.management()
    client.update(mgmt, "stop_canister", {"canister_id": counter})
    assert client.network.canister_info(counter).status == "stopped"
    with pytest.raises(CallFailed) as failed:
        client.update(counter, "inc")
    assert failed.value.error_code == "IC0508"
    client.update(mgmt, "start_canister", {"canister_id": counter})
    assert client.update(counter, "inc").value == 1
    with pytest.raises(CallFailed) as failed:
        client.update(mgmt, "delete_canister", {"canister_id": counter})
    assert failed.value.error_code == "IC0510"
    client.update(mgmt, "stop_canister", {"canister_id": counter})
    client.update(mgmt, "delete_canister", {"canister_id": counter})
    assert counter not in client.network.canister_ids()


def test_caller_time_and_canister_ids(client: LocalClient) -> None:
    counter = client.install(COUNTER, 0, cycles=400 * T)
    assert counter.to_text() == "bkyz2-fmaaa-aaaaa-qaaaq-cai"  # dfx's first local canister id
    assert client.query(counter, "whoami") == client.sender
    assert client.network.time_ns() == GENESIS + client.network.round_number() * 10**9


def test_expired_ingress_is_refused(client: LocalClient) -> None:
    counter = client.install(COUNTER, 0, cycles=400 * T)
    message = IngressMessage(b"\x01" * 32, client.sender, counter, "inc", b"DIDL\x00\x00",
                             time.time_ns() - 10**9, counter)
    with pytest.raises(IngressRejected) as refused:
        client.network.submit(message)
    assert refused.value.http_status == 400 and "past" in refused.value.message
    assert client.network.status(message.request_id) is None


def test_heap_is_accounted_against_the_memory_limit(client: LocalClient) -> None:
    hog = client.install("tests.canisters_for_tests.memory_hog:MemoryHog", cycles=400 * T)
    start = client.query(hog, "heap")
    assert start > 10_000 * 50  # the frozen table is counted
    client.update(Principal.management(), "update_settings", {
        "canister_id": hog, "settings": {"wasm_memory_limit": start + 3 * MiB}, "sender_canister_version": None})
    client.update(hog, "allocate", 2 * MiB)
    assert client.query(hog, "heap") >= start + 2 * MiB - 1024  # numpy buffer plus small objects
    assert client.query(hog, "available") < 1 * MiB + 1024
    with pytest.raises(CallFailed) as failed:
        client.update(hog, "allocate", 2 * MiB)
    assert failed.value.error_code == "IC0539" and "wasm_memory_limit" in failed.value.message
    assert client.query(hog, "heap") < start + 3 * MiB  # the failed allocation was rolled back
