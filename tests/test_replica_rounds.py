"""Virtual time: how many rounds executions and call chains take, by the delivery rule."""

from __future__ import annotations

import math

import pytest

from replica.config import NetworkConfig
from replica.fees import CURRENT_FEES
from replica.inprocess import LocalClient
from replica.limits import DEFAULT_LIMITS
from replica.network import Network
from replica.subnet import chain_rounds

COUNTER = "tests.canisters_for_tests.counter:Counter"
CALLER = "tests.canisters_for_tests.caller:Caller"
T = 10**12
SLICE = 2_000_000_000
OVERHEAD_MARGIN = 10_000  # the runtime's own per-message instructions stay far below this


@pytest.fixture
def client() -> LocalClient:
    return LocalClient(Network(None, NetworkConfig(genesis_time_ns=0)))


@pytest.mark.parametrize("burn", [0, SLICE - OVERHEAD_MARGIN, SLICE + 1, 7 * SLICE - OVERHEAD_MARGIN,
                                  7 * SLICE + 1, 20 * SLICE - OVERHEAD_MARGIN])
def test_a_message_of_n_instructions_takes_ceil_n_over_2b_rounds(client: LocalClient, burn: int) -> None:
    counter = client.install(COUNTER, 0, cycles=400 * T)
    start = client.network.round_number()
    outcome = client.update(counter, "burn", burn)
    n = outcome.report.instructions
    assert burn <= n < burn + OVERHEAD_MARGIN
    assert outcome.report.rounds == math.ceil(n / SLICE)
    assert client.network.round_number() - start == outcome.report.rounds
    assert outcome.report.seconds == outcome.report.rounds * 1.0


def test_messages_share_a_canisters_slice_and_a_long_one_delays_the_next(client: LocalClient) -> None:
    counter = client.install(COUNTER, 0, cycles=400 * T)
    long = client.submit(counter, "burn", 5_000_000_000)
    short = client.submit(counter, "inc")
    client.network.run_until_idle()
    # Inducted together in round r: the long message runs in rounds r..r+2 (5B + overhead over
    # 2B slices), the short one runs on the remainder of the third round's slice.
    assert client.network.report(long).rounds == 3
    assert client.network.report(short).rounds == 3


@pytest.mark.parametrize("k", [1, 2, 5])
def test_a_chain_of_k_short_sequential_calls_completes_within_the_round(client: LocalClient, k: int) -> None:
    targets = [client.install(COUNTER, i, cycles=400 * T) for i in range(k)]
    caller = client.install(CALLER, cycles=400 * T)
    outcome = client.update(caller, "chain", targets)
    assert outcome.value == sum(i + 1 for i in range(k))
    # Same-subnet requests and responses are delivered in the round's next inner loop, so the
    # ingress message, k requests and k responses all execute in the round of induction.
    assert outcome.report.rounds == 1
    assert outcome.report.messages == 1 + 2 * k  # ingress + k requests + k responses
    assert outcome.report.executions == 1 + 2 * k


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("slices", [2, 7])
def test_a_chain_of_long_calls_advances_one_round_per_slice_after_the_first(client: LocalClient, k: int,
                                                                             slices: int) -> None:
    """Each callee burns between (slices - 1) and `slices` slices: it starts in the round its request
    arrives, ends `slices - 1` rounds later, and the caller continues (and sends the next request)
    in that same round."""
    burn = slices * SLICE - OVERHEAD_MARGIN
    targets = [client.install(COUNTER, i, cycles=400 * T) for i in range(k)]
    caller = client.install(CALLER, cycles=400 * T)
    outcome = client.update(caller, "chain_burn", targets, burn)
    assert outcome.report.rounds == 1 + k * (slices - 1)


@pytest.mark.parametrize("burn", [1_500_000_000, 5_000_000_000])
def test_chain_rounds_predicts_what_the_subnet_does(client: LocalClient, burn: int) -> None:
    """The planner's latency function against a real call chain: 10 callees each burning `burn`,
    the caller's short executions between them (the round budget binds for 1.5B, DTS for 5B)."""
    targets = [client.install(COUNTER, 0, cycles=400 * T) for _ in range(10)]
    caller = client.install(CALLER, cycles=400 * T)
    outcome = client.update(caller, "chain_burn", targets, burn)
    short = OVERHEAD_MARGIN // 10  # the caller's executions: far below any slice
    chain = [short] + [burn, short] * 10
    assert outcome.report.rounds == chain_rounds(chain, DEFAULT_LIMITS)


def test_the_round_budget_spreads_many_short_messages_over_rounds(client: LocalClient) -> None:
    """A new execution starts on a scheduler thread only while that thread has used less than
    4B per round - one 2B slice: each of the 4 threads runs two messages of 1.5B (the second
    starts at 1.5B), so 12 of them need two rounds."""
    counters = [client.install(COUNTER, 0, cycles=400 * T) for _ in range(12)]
    ids = [client.submit(c, "burn", 1_500_000_000) for c in counters]
    client.network.run_until_idle()
    assert sorted(client.network.report(i).rounds for i in ids) == [1] * 8 + [2] * 4


def test_long_executions_leave_a_thread_for_new_ones(client: LocalClient) -> None:
    """Four 19B executions in flight hold at most three of the four scheduler threads
    (round_schedule.rs keeps a core for new executions), so a short message sent while they
    run completes in the round it is inducted, not after them."""
    counters = [client.install(COUNTER, 0, cycles=400 * T) for _ in range(5)]
    long_ids = [client.submit(c, "burn", 19_000_000_000) for c in counters[:4]]
    client.network.execute_round()
    short = client.submit(counters[4], "burn", 1_000)
    client.network.execute_round()
    assert client.network.status(short).status == "replied"
    assert client.network.report(short).rounds == 1
    assert all(client.network.status(i).status == "processing" for i in long_ids)
    client.network.run_until_idle()
    assert [client.network.report(i).rounds for i in long_ids] == [10] * 4


def test_call_reports_add_up_instructions_and_fees(client: LocalClient) -> None:
    counter = client.install(COUNTER, 0, cycles=400 * T)
    caller = client.install(CALLER, cycles=400 * T)
    payload = bytes(16 * 1024)
    outcome = client.update(caller, "ping", counter, payload)
    assert outcome.value == len(payload)
    report = outcome.report
    # Three executions (caller, callee, caller's continuation), each paying the base fee, plus
    # the instruction fee, the ingress fee and the call's fee with its request and reply bytes.
    assert report.executions == 3
    request_bytes = report.bytes - len(payload) - 6  # request and reply both carry the 16 KiB blob
    assert request_bytes > len(payload)
    fees = CURRENT_FEES
    assert report.cycles >= 3 * fees.update_message_execution + report.instructions + fees.xnet_call
    assert report.instructions >= 2 * 2 * len(payload)  # Candid in and out of both canisters
