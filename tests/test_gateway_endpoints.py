"""The gateway's endpoint logic on a real in-process Network (no HTTP), with envelopes signed by
icp-py-core: replay protection, effective canister ids, read_state permissions and paths,
status retention, query signatures."""

from __future__ import annotations

import time

import cbor2
import pytest
from icp_agent.agent import build_query_response_signable, sign_request
from icp_candid.candid import Types, decode, encode
from icp_identity import Identity
from icp_principal import Principal as AgentPrincipal
from nacl.signing import VerifyKey

from cdk.principal import Principal
from replica.auth import EnvelopeRejected
from replica.config import NetworkConfig
from replica.gateway_state import IngressLedger
from replica.hash_tree import lookup_path
from replica.inprocess import LocalClient
from replica.network import Network
from tests.gateway_support import in_process_endpoints

COUNTER = "tests.canisters_for_tests.counter:Counter"
MINUTE_NS = 60 * 10**9


@pytest.fixture
def gateway(tmp_path):
    network = Network(None, NetworkConfig())
    counter = LocalClient(network).install(COUNTER, 0)
    endpoints = in_process_endpoints(network, tmp_path)
    network.start()
    yield endpoints, counter
    network.stop()


def envelope(identity, request_type="call", **content):
    body = {
        "request_type": request_type,
        "sender": identity.sender().bytes,
        "ingress_expiry": time.time_ns() + 3 * MINUTE_NS,
        **content,
    }
    return sign_request(body, identity)


def call(identity, canister: Principal, method="inc", arg=None, **extra):
    return envelope(identity, canister_id=canister.bytes, method_name=method,
                    arg=arg if arg is not None else encode([]), **extra)


def read_state(endpoints, identity, canister: Principal, paths) -> list:
    _, body = envelope(identity, "read_state", paths=paths)
    response = endpoints.read_state("canister", canister.to_text(), body)
    assert response.status == 200
    return cbor2.loads(cbor2.loads(response.body)["certificate"])["tree"]


def counter_value(endpoints, counter: Principal) -> int:
    _, body = envelope(Identity(anonymous=True), "query", canister_id=counter.bytes, method_name="get",
                       arg=encode([]))
    reply = cbor2.loads(endpoints.query(counter.to_text(), body).body)["reply"]["arg"]
    return decode(reply, [Types.Nat])[0]["value"]


def test_synchronous_call_returns_a_certificate_of_the_reply(gateway):
    endpoints, counter = gateway
    request_id, body = call(Identity(), counter)
    response = cbor2.loads(endpoints.call("v4", counter.to_text(), body).body)
    assert response["status"] == "replied"
    tree = cbor2.loads(response["certificate"])["tree"]
    assert lookup_path([b"request_status", request_id, b"status"], tree).value == b"replied"
    reply = lookup_path([b"request_status", request_id, b"reply"], tree).value
    assert decode(reply, [Types.Nat])[0]["value"] == 1


def test_identical_request_runs_once_and_a_new_nonce_runs_again(gateway):
    endpoints, counter = gateway
    identity = Identity()
    _, body = call(identity, counter, nonce=b"\x01")
    assert endpoints.call("v2", counter.to_text(), body).status == 202
    assert endpoints.call("v3", counter.to_text(), body).status == 200  # replay: same request
    assert counter_value(endpoints, counter) == 1
    _, other = call(identity, counter, nonce=b"\x02")
    endpoints.call("v3", counter.to_text(), other)
    assert counter_value(endpoints, counter) == 2


def test_only_the_sender_may_read_a_request_status(gateway):
    endpoints, counter = gateway
    owner, stranger = Identity(), Identity()
    request_id, body = call(owner, counter)
    endpoints.call("v3", counter.to_text(), body)
    _, read = envelope(stranger, "read_state", paths=[[b"request_status", request_id]])
    with pytest.raises(EnvelopeRejected) as caught:
        endpoints.read_state("canister", counter.to_text(), read)
    assert caught.value.http_status == 403
    tree = read_state(endpoints, owner, counter, [[b"request_status", request_id]])
    assert lookup_path([b"request_status", request_id, b"status"], tree).value == b"replied"


def test_unknown_request_is_proven_absent(gateway):
    endpoints, counter = gateway
    tree = read_state(endpoints, Identity(), counter, [[b"request_status", b"\x07" * 32]])
    assert lookup_path([b"request_status", b"\x07" * 32, b"status"], tree).outcome == "absent"
    assert lookup_path([b"time"], tree).outcome == "found"


def test_status_is_pruned_after_retention():
    network = Network(None)
    client = LocalClient(network)
    counter = client.install(COUNTER, 0)
    request_id = client.submit(counter, "inc")
    client.result(counter, "inc", request_id)
    now = [1000.0]
    ledger = IngressLedger(clock=lambda: now[0])
    ledger.add(request_id, client.sender, counter)
    assert ledger.refresh(network)  # first seen finished: kept for the retention time
    now[0] += 299.0
    assert ledger.group(request_id[0])[request_id].status == "replied"
    assert ledger.refresh(network) and ledger.get(request_id) is not None
    now[0] += 1.0
    assert ledger.refresh(network) == {}  # five minutes after it finished: forgotten
    assert ledger.get(request_id) is None and ledger.group(request_id[0]) == {}


def test_effective_canister_id_must_match(gateway):
    endpoints, counter = gateway
    _, body = call(Identity(), counter)
    with pytest.raises(EnvelopeRejected, match="must be the canister being called"):
        endpoints.call("v4", Principal.management().to_text(), body)


def test_management_call_must_go_to_the_managed_canister(gateway):
    endpoints, counter = gateway
    arg = encode([{"type": Types.Record({"canister_id": Types.Principal}),
                   "value": {"canister_id": AgentPrincipal.from_str(counter.to_text())}}])
    _, body = call(Identity(), Principal.management(), "canister_status", arg)
    with pytest.raises(EnvelopeRejected, match=f"canister/{counter.to_text()}/call"):
        endpoints.call("v4", "aaaaa-aa", body)


def test_ingress_message_size_limit(gateway):
    endpoints, counter = gateway
    arg = encode([{"type": Types.Vec(Types.Nat8), "value": bytes(2 * 1024 * 1024)}])
    _, body = call(Identity(), counter, "echo", arg)
    with pytest.raises(EnvelopeRejected) as caught:
        endpoints.call("v2", counter.to_text(), body)
    assert caught.value.http_status == 413 and "smaller calls" in caught.value.message
    assert counter_value(endpoints, counter) == 0


def test_invalid_paths(gateway):
    endpoints, counter = gateway
    for path in ([b"canister", b"\x00" * 10, b"module_hash"], [b"nonsense"], [b"canister", counter.bytes, b"x"]):
        _, body = envelope(Identity(), "read_state", paths=[path])
        with pytest.raises(EnvelopeRejected) as caught:
            endpoints.read_state("canister", counter.to_text(), body)
        assert caught.value.http_status in (400, 404)


def test_subnet_read_state(gateway):
    endpoints, counter = gateway
    subnet = endpoints.keys.subnet_id
    path = [b"subnet", subnet.bytes, b"node", endpoints.keys.node.node_id.bytes, b"public_key"]
    _, body = envelope(Identity(), "read_state", paths=[path, [b"canister_ranges", subnet.bytes]])
    tree = cbor2.loads(cbor2.loads(endpoints.read_state("subnet", subnet.to_text(), body).body)["certificate"])["tree"]
    assert lookup_path(path, tree).value == endpoints.keys.node.der
    with pytest.raises(EnvelopeRejected) as caught:
        endpoints.read_state("subnet", counter.to_text(), body)
    assert caught.value.http_status == 404


def test_query_is_signed_by_the_node(gateway):
    endpoints, counter = gateway
    request_id, body = envelope(Identity(), "query", canister_id=counter.bytes, method_name="get", arg=encode([]))
    response = cbor2.loads(endpoints.query(counter.to_text(), body).body)
    (signature,) = response["signatures"]
    assert signature["identity"] == endpoints.keys.node.node_id.bytes
    signable = build_query_response_signable("replied", request_id, signature["timestamp"], reply=response["reply"])
    VerifyKey(endpoints.keys.node.der[-32:]).verify(signable, signature["signature"])


def test_query_reject_carries_codes(gateway):
    endpoints, counter = gateway
    _, body = envelope(Identity(), "query", canister_id=counter.bytes, method_name="nope", arg=encode([]))
    response = cbor2.loads(endpoints.query(counter.to_text(), body).body)
    assert response["status"] == "rejected" and response["error_code"].startswith("IC0")
    assert "nope" in response["reject_message"]
