"""Bad requests over real HTTP to `icllama start`: each gets the right status and a clear message,
none changes any state, and the gateway keeps serving."""

from __future__ import annotations

import time

import cbor2
import httpx
import pytest
from icp_agent.agent import sign_request, to_request_id
from icp_candid.candid import Types, encode
from icp_identity import Identity
from icp_principal import Principal

from replica.request_id import REQUEST_DOMAIN_SEPARATOR
from tests.gateway_support import agent_for, install_counter, start_network, stop_network

pytestmark = pytest.mark.network
MINUTE_NS = 60 * 10**9
# In the subnet's canister range, but never created.
MISSING_CANISTER = Principal(bytes.fromhex("80000000001fffff0101"))


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    running = start_network(tmp_path_factory.mktemp("bad-requests-network"))
    yield running
    stop_network(running)


@pytest.fixture(scope="module")
def counter(network) -> str:
    return install_counter(agent_for(network.url, Identity()))


def content(identity, canister: str, method="inc", expiry_ns=None):
    return {
        "request_type": "call",
        "sender": identity.sender().bytes,
        "canister_id": Principal.from_str(canister).bytes,
        "method_name": method,
        "arg": encode([]),
        "ingress_expiry": expiry_ns if expiry_ns is not None else time.time_ns() + 3 * MINUTE_NS,
    }


def post(network, canister: str, body: bytes, version="v3", kind="call") -> httpx.Response:
    return httpx.post(f"{network.url}/api/{version}/canister/{canister}/{kind}", content=body,
                      headers={"Content-Type": "application/cbor"}, timeout=30)


def counter_value(network, counter: str) -> int:
    return agent_for(network.url).query(counter, "get", encode([]), return_type=[Types.Nat])[0]["value"]


def request_status(network, counter: str, identity, request_id: bytes) -> str:
    certificate = agent_for(network.url, identity).read_state_raw(
        counter, [[b"request_status", request_id]], verify_certificate=False)
    status = certificate.lookup_request_status(request_id)
    return "absent" if status is None else status.decode()


def assert_refused(network, counter, response: httpx.Response, status: int, words: str,
                   identity=None, request_id: bytes | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert words in response.text
    assert counter_value(network, counter) == 0  # nothing executed
    if request_id is not None:
        assert request_status(network, counter, identity, request_id) == "absent"
    assert httpx.get(f"{network.url}/api/v2/status").status_code == 200  # still serving


def test_malformed_cbor(network, counter):
    assert_refused(network, counter, post(network, counter, b"\xa1\x67content\xff"), 400, "not valid CBOR")


def test_wrong_signature(network, counter):
    identity = Identity()
    request_id, body = sign_request(content(identity, counter), identity)
    envelope = dict(cbor2.loads(body))
    envelope["sender_sig"] = bytes([envelope["sender_sig"][0] ^ 1]) + envelope["sender_sig"][1:]
    response = post(network, counter, cbor2.dumps(envelope))
    assert_refused(network, counter, response, 400, "does not verify", identity, request_id)


def test_sender_does_not_match_key(network, counter):
    alice, mallory = Identity(), Identity(type="secp256k1")
    body = content(alice, counter)
    request_id = to_request_id(body)
    pubkey, signature = mallory.sign(REQUEST_DOMAIN_SEPARATOR + request_id)
    envelope = cbor2.dumps({"content": body, "sender_pubkey": pubkey, "sender_sig": signature})
    assert_refused(network, counter, post(network, counter, envelope), 400, "self-authenticating", alice, request_id)


def test_expired(network, counter):
    identity = Identity()
    request_id, body = sign_request(content(identity, counter, expiry_ns=time.time_ns() - MINUTE_NS), identity)
    assert_refused(network, counter, post(network, counter, body, "v2"), 400, "expired", identity, request_id)


def test_oversized_body(network, counter):
    assert_refused(network, counter, post(network, counter, bytes(6 * 1024 * 1024)), 413, "at most")


def test_unknown_canister(network, counter):
    identity = Identity()
    _, body = sign_request(content(identity, MISSING_CANISTER.to_str()), identity)
    response = post(network, MISSING_CANISTER.to_str(), body, "v4")
    assert response.status_code == 200
    answer = cbor2.loads(response.content)
    assert answer["status"] == "non_replicated_rejection"
    assert (answer["reject_code"], answer["error_code"]) == (3, "IC0301")
    assert "not found" in answer["reject_message"]
    v2 = cbor2.loads(post(network, MISSING_CANISTER.to_str(), body, "v2").content)
    assert v2["error_code"] == "IC0301"
    assert counter_value(network, counter) == 0


def test_unknown_method(network, counter):
    identity = Identity()
    request_id, body = sign_request(content(identity, counter, method="no_such_method"), identity)
    response = post(network, counter, body, "v4")
    assert response.status_code == 200
    answer = cbor2.loads(response.content)
    if answer["status"] == "non_replicated_rejection":
        assert "no_such_method" in answer["reject_message"]
    else:  # refused in the round it was inducted: a certified reject
        certificate = agent_for(network.url, identity).read_state_raw(
            counter, [[b"request_status", request_id]], verify_certificate=False)
        rejection = certificate.lookup_request_rejection(request_id)
        assert "no_such_method" in rejection["reject_message"]
    _, query_body = sign_request({**content(Identity(anonymous=True), counter, "no_such_query"),
                                  "request_type": "query"}, Identity(anonymous=True))
    rejected = cbor2.loads(post(network, counter, query_body, kind="query").content)
    assert rejected["status"] == "rejected" and "no_such_query" in rejected["reject_message"]
    assert counter_value(network, counter) == 0


def test_unknown_endpoint_and_method(network, counter):
    assert httpx.get(f"{network.url}/api/v2/nothing").status_code == 404
    assert post(network, counter, b"", kind="nothing").status_code == 404
    assert httpx.get(f"{network.url}/api/v2/status").status_code == 200
