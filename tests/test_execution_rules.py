"""How executions run: queries during a multi-round execution, the dirty-page charge for stable
memory, the host-time budget of Python canister code, fresh code on upgrade, and one heap walk
per execution."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from replica import heap
from replica.config import NetworkConfig
from replica.inprocess import CallFailed, LocalClient
from replica.limits import DEFAULT_LIMITS
from replica.network import Network

COUNTER = "tests.canisters_for_tests.counter:Counter"
RULES = "tests.canisters_for_tests.call_rules:CallRules"
T = 10**12


def make_client(**config: object) -> LocalClient:
    return LocalClient(Network(None, NetworkConfig(genesis_time_ns=1_700_000_000 * 10**9, **config)))


@pytest.fixture
def client() -> LocalClient:
    return make_client()


def test_a_query_sees_the_state_from_before_an_unfinished_multi_round_execution(client: LocalClient) -> None:
    counter = client.install(COUNTER, 0, cycles=100 * T)
    client.update(counter, "write_stable", 0, b"old!")
    request = client.submit(counter, "burn_and_write", 9_000_000_000, b"new!")  # 5 rounds of DTS
    client.network.execute_round()
    assert client.network.status(request).status == "processing"
    for _ in range(3):
        assert client.query(counter, "get") == 0
        assert client.query(counter, "read_stable", 0, 4) == b"old!"
        client.network.execute_round()
    client.network.run_until_idle()
    assert client.network.status(request).status == "replied"
    assert client.query(counter, "get") == 1
    assert client.query(counter, "read_stable", 0, 4) == b"new!"


def test_each_4k_page_of_stable_memory_written_costs_1k_instructions(client: LocalClient) -> None:
    counter = client.install(COUNTER, 0, cycles=100 * T)
    client.update(counter, "write_stable", 0, bytes(65_536))
    aligned = client.update(counter, "write_stable", 4096, bytes(8192)).report.instructions  # 2 pages
    straddling = client.update(counter, "write_stable", 4095, bytes(8192)).report.instructions  # 3 pages
    assert straddling - aligned == DEFAULT_LIMITS.stable_dirty_page_instructions == 1_000


def test_a_message_past_the_host_time_budget_traps_and_the_network_goes_on() -> None:
    client = make_client(host_seconds_per_execution=0.5)
    rules = client.install(RULES, cycles=100 * T)
    with pytest.raises(CallFailed) as failed:
        client.update(rules, "spin_forever")
    assert failed.value.error_code == "IC0522"
    assert "more than 0.5 s of host time" in failed.value.message and "loop" in failed.value.message
    assert client.query(rules, "state")["writes"] == 0  # rolled back
    counter = client.install(COUNTER, 0, cycles=100 * T)
    assert client.update(counter, "inc").value == 1


def test_upgrading_to_an_edited_class_runs_the_new_code(client: LocalClient, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "edited_canisters"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "greeter.did").write_text("service : () -> { greet : () -> (text) query }\n")
    source = ("from cdk.canister import Canister, query\n\n\nclass Greeter(Canister):\n"
              "    DID = 'greeter.did'\n\n    @query\n    def greet(self) -> str:\n        return {!r}\n")
    (package / "greeter.py").write_text(source.format("version one"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    greeter = client.install("edited_canisters.greeter:Greeter", cycles=100 * T)
    assert client.query(greeter, "greet") == "version one"
    (package / "greeter.py").write_text(source.format("version two"))
    client.install_code(greeter, "edited_canisters.greeter:Greeter", version="2", mode="upgrade")
    assert client.query(greeter, "greet") == "version two"


def test_one_heap_walk_per_execution(client: LocalClient, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = client.install(COUNTER, 0, cycles=100 * T)
    client.update(counter, "inc")
    walks: list[bool] = []
    original = heap._walk

    def counting(root: object, save: bool) -> heap.HeapSnapshot:
        walks.append(save)
        return original(root, save)

    monkeypatch.setattr(heap, "_walk", counting)
    for _ in range(3):
        client.update(counter, "inc")
        client.query(counter, "get")
    with pytest.raises(CallFailed):
        client.update(counter, "inc_then_trap")
    assert walks == [True] * 3  # one per committed update; none for queries or the trap
    assert client.query(counter, "get") == 4
