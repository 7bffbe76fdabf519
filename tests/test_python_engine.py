"""The Python-class engine behind the engine interface: an `Execution` of a query goes in as
Candid bytes, an `Outcome` comes out (reply bytes, instructions, trap), and nothing the query
changed is kept; an install hook is one execution, kept only if nothing traps."""

from __future__ import annotations

import pytest

from cdk.candid import T, decode, encode
from replica.config import NetworkConfig
from replica.engines import Execution, Kind, Outcome
from replica.engines.python.engine import PythonInstance, install
from replica.inprocess import LocalClient
from replica.network import Network
from replica.wasm_install import canister_view

COUNTER = "tests.canisters_for_tests.counter:Counter"
NO_ARGS = encode([], [])


@pytest.fixture
def counter() -> tuple[LocalClient, PythonInstance]:
    client = LocalClient(Network(None, NetworkConfig(genesis_time_ns=0)))
    canister = client.install(COUNTER, 5, cycles=10**13)
    subnet = client.network.subnet
    return client, PythonInstance(subnet.canisters[canister], subnet.executor, subnet.candid_cache)


def _query(method: str, arg: bytes = NO_ARGS, limit: int = 5 * 10**9) -> Execution:
    return Execution(Kind.QUERY, limit, 0, method=method, arg=arg, caller=b"\x04", replicated=False)


def _run(client: LocalClient, instance: PythonInstance, message: Execution):
    return instance.execute(message, canister_view(client.network.subnet, instance.state))


def test_a_query_replies_with_candid_bytes_and_counts_its_instructions(counter):
    client, instance = counter
    assert "canister_query get" in instance.exports and "canister_update inc" in instance.exports
    outcome = _run(client, instance, _query("get"))
    assert outcome.trap is None and outcome.calls == []
    assert decode([T.nat], outcome.reply) == [5]
    assert outcome.instructions > 0


def test_what_a_query_changes_is_discarded(counter):
    client, instance = counter
    outcome = _run(client, instance, _query("inc_in_query"))
    assert decode([T.nat], outcome.reply) == [6]
    assert decode([T.nat], _run(client, instance, _query("get")).reply) == [5]


def test_bad_arguments_and_the_instruction_limit_trap(counter):
    client, instance = counter
    bad = _run(client, instance, _query("read_stable", b"DIDL\x00\x01\x7d"))
    assert bad.reply is None and "failed to decode the arguments" in bad.trap.message
    short = _run(client, instance, _query("get", limit=1))
    assert short.reply is None and short.trap.error_code == "IC0522"


def test_an_update_through_the_interface_replies_and_keeps_its_change(counter):
    client, instance = counter
    done = _run(client, instance, Execution(Kind.UPDATE, 10**9, 0, method="inc", arg=NO_ARGS, caller=b"\x04"))
    assert done.trap is None and done.instructions > 0
    assert decode([T.nat], done.reply) == [6] and instance.state.instance.count == 6
    trapped = _run(client, instance, Execution(Kind.UPDATE, 10**9, 0, method="inc_then_trap", arg=NO_ARGS,
                                               caller=b"\x04"))
    assert "always traps after incrementing" in trapped.trap.message and instance.state.instance.count == 6


def test_an_upgrade_is_one_execution_kept_only_if_nothing_traps(counter):
    client, instance = counter
    state, subnet = instance.state, client.network.subnet
    loaded, old = state.loaded, state.instance
    client.update(state.id, "write_stable", 0, b"kept")

    def upgrade(arg: bytes) -> Outcome:
        return install(state, loaded, subnet.executor, subnet.candid_cache,
                       Execution(Kind.POST_UPGRADE, 300 * 10**9, 0, arg=arg, caller=b"\x04"))

    failed = upgrade(b"DIDL\x00\x00")  # no nat: post_upgrade's argument does not decode
    assert "failed to decode the arguments of the init arguments" in failed.trap.message
    assert state.instance is old and old.count == 5
    done = upgrade(encode([T.nat], [9]))
    assert done.trap is None and done.instructions > 0
    assert state.instance is not old and state.instance.count == 9
    assert decode([T.blob], _run(client, PythonInstance(state, subnet.executor, subnet.candid_cache),
                                 _query("read_stable", encode([T.nat64, T.nat64], [0, 4]))).reply) == [b"kept"]
    with pytest.raises(ValueError, match="not update"):
        install(state, loaded, subnet.executor, subnet.candid_cache, Execution(Kind.UPDATE, 10**9, 0))
