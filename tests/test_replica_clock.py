"""The served network's clock and ingress history: idle rounds pass in real time, finished
requests are forgotten only once their expiry has passed, and unknown methods are refused at
the boundary."""

from __future__ import annotations

import time

import pytest

from cdk.candid import encode
from replica.api_types import IngressMessage, IngressRejected
from replica.config import NetworkConfig
from replica.inprocess import LocalClient
from replica.network import Network

COUNTER = "tests.canisters_for_tests.counter:Counter"
T = 10**12


@pytest.fixture
def client() -> LocalClient:
    return LocalClient(Network(None, NetworkConfig(genesis_time_ns=time.time_ns() - 3600 * 10**9)))


def test_idle_rounds_catch_up_with_the_wall_clock_and_charge_storage(client: LocalClient) -> None:
    counter = client.install(COUNTER, 0, cycles=400 * T)
    subnet = client.network.subnet
    round_before, cycles_before = subnet.round, subnet.canister(counter).cycles
    subnet.pass_idle_rounds(time.time_ns())
    assert subnet.round - round_before >= 3590  # an hour of 1-second rounds
    assert abs(subnet.time_ns() - time.time_ns()) < 2 * 10**9
    assert subnet.canister(counter).cycles < cycles_before  # an idle hour of storage


def test_idle_rounds_never_pass_while_there_is_work(client: LocalClient) -> None:
    counter = client.install(COUNTER, 0, cycles=400 * T)
    client.submit(counter, "inc")
    round_before = client.network.subnet.round
    client.network.subnet.pass_idle_rounds(time.time_ns())
    assert client.network.subnet.round == round_before


def test_a_finished_request_is_kept_until_it_expires_and_a_replay_is_refused(client: LocalClient) -> None:
    counter = client.install(COUNTER, 0, cycles=400 * T)
    network = client.network
    expiry = time.time_ns() + 500_000_000
    message = IngressMessage(b"r" * 32, client.sender, counter, "inc", encode([], []), expiry, counter)
    network.submit(message)
    network.run_until_idle()
    network.subnet.prune_ingress(time.time_ns())
    assert network.status(message.request_id).status == "replied"  # not expired yet: kept
    network.submit(message)  # a replay while it is kept is recognized and does nothing
    network.run_until_idle()
    while time.time_ns() <= expiry:  # the wall clock only moves forward: no timing luck involved
        time.sleep(0.05)
    network.subnet.prune_ingress(time.time_ns())
    assert network.status(message.request_id) is None
    # Once forgotten, the request's own expiry refuses a replay: it can never run twice.
    with pytest.raises(IngressRejected, match="in the past"):
        network.submit(message)
    assert client.query(counter, "get") == 1


def test_an_unknown_method_is_refused_at_the_boundary(client: LocalClient) -> None:
    counter = client.install(COUNTER, 0, cycles=400 * T)
    message = IngressMessage(b"u" * 32, client.sender, counter, "no_such_method", encode([], []),
                             time.time_ns() + 60 * 10**9, counter)
    with pytest.raises(IngressRejected) as refused:
        client.network.submit(message)
    assert refused.value.error_code == "IC0536" and "has no update method 'no_such_method'" in refused.value.message
    assert client.network.status(message.request_id) is None  # nothing was recorded
