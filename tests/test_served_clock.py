"""A served network whose virtual time runs ahead of the wall clock (rounds run faster than real
time) still runs rounds at once, and certifies the wall-clock time agents check theirs against.

Rounds used to be held back once the virtual time led the wall clock by a minute, which made a
generation over HTTP take its virtual seconds of real time after any busy stretch (1.5 s or 7 s
for the same request)."""

from __future__ import annotations

import time

import cbor2
import pytest
from icp_agent.agent import sign_request
from icp_candid.candid import encode
from icp_identity import Identity

from replica.config import NetworkConfig
from replica.gateway_state import CERTIFIED_TIME_REFRESH_NS
from replica.hash_tree import lookup_path
from replica.inprocess import LocalClient
from replica.network import Network
from replica.request_id import decode_uleb128
from tests.gateway_support import in_process_endpoints

COUNTER = "tests.canisters_for_tests.counter:Counter"
MINUTE_NS = 60 * 10**9
LEAD_NS = 10 * MINUTE_NS  # far past what agents accept between a certificate's time and theirs


@pytest.fixture
def ahead(tmp_path):
    network = Network(None, NetworkConfig(genesis_time_ns=time.time_ns() + LEAD_NS))
    counter = LocalClient(network).install(COUNTER, 0)
    endpoints = in_process_endpoints(network, tmp_path)
    network.start()
    yield network, endpoints, counter
    network.stop()


def certified_time(certificate: bytes) -> int:
    return decode_uleb128(lookup_path([b"time"], cbor2.loads(certificate)["tree"]).value)


def test_a_network_ahead_of_the_clock_runs_calls_at_once_and_certifies_wall_time(ahead) -> None:
    network, endpoints, counter = ahead
    identity = Identity()
    body = {"request_type": "call", "sender": identity.sender().bytes, "canister_id": counter.bytes,
            "method_name": "inc", "arg": encode([]), "ingress_expiry": time.time_ns() + 3 * MINUTE_NS}
    _, envelope = sign_request(body, identity)
    response = endpoints.call("v4", counter.to_text(), envelope)
    reply = cbor2.loads(response.body)
    assert response.status == 200 and reply["status"] == "replied"  # not 202 after the 10 s wait

    wall = time.time_ns()
    assert abs(certified_time(reply["certificate"]) - wall) < 5 * 10**9
    assert network.time_ns() - wall > LEAD_NS - MINUTE_NS  # canisters keep the virtual time


def test_an_idle_network_resigns_its_state_with_a_later_time(ahead) -> None:
    network, endpoints, _ = ahead
    source = endpoints.state
    first = certified_time(source.current().certificate([[b"time"]]))
    assert source.current() is source.current()  # within the second: one signature serves
    time.sleep(CERTIFIED_TIME_REFRESH_NS / 1e9 + 0.1)
    later = certified_time(source.current().certificate([[b"time"]]))
    assert first < later <= time.time_ns()
