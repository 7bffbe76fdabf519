"""The interface spec's call-context rules, each against a small canister
(tests/canisters_for_tests/call_rules.py): refunds when a callee traps, rejects of open call
contexts on reinstall, system rejects delivered as responses, `ic.reject`, cleanup callbacks, a
trap while other calls are outstanding, and the cycles a call reserves for its response."""

from __future__ import annotations

import pytest

from cdk.principal import Principal
from replica.config import NetworkConfig
from replica.inprocess import CallFailed, LocalClient
from replica.network import Network

RULES = "tests.canisters_for_tests.call_rules:CallRules"
COUNTER = "tests.canisters_for_tests.counter:Counter"
T = 10**12


@pytest.fixture
def client() -> LocalClient:
    return LocalClient(Network(None, NetworkConfig(genesis_time_ns=1_700_000_000 * 10**9)))


def test_cycles_a_trapping_callee_accepted_go_back_to_the_caller(client: LocalClient) -> None:
    caller = client.install(RULES, cycles=100 * T)
    callee = client.install(RULES, cycles=100 * T)
    caller_before, callee_before = client.query(caller, "balance"), client.query(callee, "balance")
    outcome = client.update(caller, "attach", callee, "accept_then_trap", 10 * T).value
    assert outcome["err"].startswith("5 IC0503") and "accepted every cycle" in outcome["err"]
    # The trap rolled back the accept: the 10T came back, and the caller paid only fees (and got
    # back the reservation for the response's execution).
    assert 0 < caller_before - client.query(caller, "balance") < 10**9
    assert client.query(callee, "balance") < callee_before


def test_a_reinstall_rejects_the_calls_the_canister_has_not_answered(client: LocalClient) -> None:
    holder = client.install(RULES, cycles=100 * T)
    counter = client.install(COUNTER, 0, cycles=100 * T)
    held = client.submit(holder, "hold", counter, 9_000_000_000)  # its callee runs for 5 rounds
    client.network.execute_round()
    assert client.network.status(held).status == "processing"
    client.install_code(holder, RULES, mode="reinstall")
    client.network.run_until_idle()
    with pytest.raises(CallFailed) as failed:
        client.result(holder, "hold", held)
    assert (failed.value.reject_code, failed.value.error_code) == (4, "IC0406")
    assert failed.value.message == "Canister has been uninstalled."
    assert client.query(counter, "get") == 1  # the callee finished; its late reply went nowhere


@pytest.mark.parametrize("missing", ["method", "canister"])
def test_system_rejects_arrive_after_the_await_commits(client: LocalClient, missing: str) -> None:
    caller = client.install(RULES, cycles=100 * T)
    counter = client.install(COUNTER, 0, cycles=100 * T)
    target = counter if missing == "method" else Principal.from_canister_index(0x8000000000100999)
    with pytest.raises(CallFailed) as failed:
        client.update(caller, "write_then_call_missing", target, "no_such_method")
    assert failed.value.error_code == "IC0503"
    assert ("method 'no_such_method'" if missing == "method" else "not found") in failed.value.message
    # The write before the await was committed there; the reject came back as a response.
    assert client.query(caller, "state")["writes"] == 1


def test_ic_reject_answers_with_reject_code_4_and_keeps_the_state(client: LocalClient) -> None:
    rules = client.install(RULES, cycles=100 * T)
    with pytest.raises(CallFailed) as failed:
        client.update(rules, "refuse", "not today")
    assert (failed.value.reject_code, failed.value.error_code, failed.value.message) == (4, "IC0406", "not today")
    assert client.query(rules, "state")["writes"] == 1

    other = client.install(RULES, cycles=100 * T)
    assert client.update(other, "call_refuse", rules).value == {"err": "4 IC0406: no thanks"}
    assert client.query(rules, "state")["writes"] == 2


def test_a_rejected_call_goes_on_after_its_await(client: LocalClient) -> None:
    rules = client.install(RULES, cycles=100 * T)
    counter = client.install(COUNTER, 0, cycles=100 * T)
    request = client.submit(rules, "refuse_then_call", counter)
    client.network.execute_round()
    status = client.network.status(request)
    assert (status.status, status.reject_code, status.reject_message) == ("rejected", 4, "answered before the await")
    client.network.run_until_idle()
    assert client.query(counter, "get") == 1 and client.query(rules, "state")["writes"] == 1


def test_the_cleanup_callback_runs_when_the_continuation_traps(client: LocalClient) -> None:
    rules = client.install(RULES, cycles=100 * T)
    counter = client.install(COUNTER, 0, cycles=100 * T)
    with pytest.raises(CallFailed, match="while holding the lock"):
        client.update(rules, "lock_call_then_trap", counter)
    assert client.query(rules, "state") == {"writes": 0, "locked": False, "cleanups": 1}


def test_a_trap_answers_the_caller_only_once_no_call_is_outstanding(client: LocalClient) -> None:
    rules = client.install(RULES, cycles=100 * T)
    fast = client.install(COUNTER, 0, cycles=100 * T)
    slow = client.install(COUNTER, 0, cycles=100 * T)
    request = client.submit(rules, "two_calls_first_traps", fast, slow, 9_000_000_000)
    for _ in range(3):
        client.network.execute_round()
        assert client.network.status(request).status == "processing"  # the slow call is outstanding
    client.network.run_until_idle()
    with pytest.raises(CallFailed) as failed:
        client.result(rules, "two_calls_first_traps", request)
    assert failed.value.error_code == "IC0506" and "still outstanding" in failed.value.message
    assert client.network.report(request).rounds == 5
    assert client.query(slow, "get") == 1 and client.query(fast, "get") == 1


def test_a_call_needs_its_response_reservation_above_the_freezing_threshold(client: LocalClient) -> None:
    caller = client.install(RULES, cycles=100 * T)
    counter = client.install(COUNTER, 0, cycles=100 * T)
    subnet = client.network.subnet
    with client.network.lock:
        state = subnet.canister(caller)
        reserved = subnet.call_reservation_cycles()
        # Enough to execute the method (40B instructions' worth), not enough to also reserve the response.
        state.cycles = subnet.freezing_threshold_cycles(state) + reserved - 10**9
    outcome = client.update(caller, "attach", counter, "inc", 0).value
    assert outcome["err"].startswith("2 IC0207") and f"{reserved} reserved for the response" in outcome["err"]
    assert client.query(counter, "get") == 0
    with client.network.lock:
        state.cycles += 2 * 10**9
    assert client.update(caller, "attach", counter, "inc", 0).value == {"ok": 0}
    assert client.query(counter, "get") == 1
