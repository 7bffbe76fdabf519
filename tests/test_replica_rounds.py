"""Virtual time: how many rounds executions and call chains take, by the delivery rule."""

from __future__ import annotations

import math

import pytest

from replica.config import NetworkConfig
from replica.fees import CURRENT_FEES
from replica.inprocess import LocalClient
from replica.network import Network

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
def test_a_chain_of_k_sequential_calls_takes_2k_plus_1_rounds(client: LocalClient, k: int) -> None:
    targets = [client.install(COUNTER, i, cycles=400 * T) for i in range(k)]
    caller = client.install(CALLER, cycles=400 * T)
    outcome = client.update(caller, "chain", targets)
    assert outcome.value == sum(i + 1 for i in range(k))
    # Round 1: the ingress message executes and sends the first request. Each call then takes two
    # rounds: the request is delivered and executed in the next round, and its response in the
    # round after that, where the caller continues (and sends the next request).
    assert outcome.report.rounds == 1 + 2 * k
    assert outcome.report.messages == 1 + 2 * k  # ingress + k requests + k responses
    assert outcome.report.executions == 1 + 2 * k


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
