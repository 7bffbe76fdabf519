"""Envelope validation and sender signatures, on envelopes made by icp-py-core's own signer."""

import time

import cbor2
import pytest
from ecdsa import SECP256k1
from ecdsa.util import sigdecode_string, sigencode_string
from icp_agent.agent import sign_request, to_request_id
from icp_identity import Identity
from icp_principal import Principal as AgentPrincipal

from cdk.principal import Principal
from replica.auth import EnvelopeRejected, authenticate, decode_envelope
from replica.request_id import REQUEST_DOMAIN_SEPARATOR

CANISTER = AgentPrincipal.from_str("rrkah-fqaaa-aaaaa-aaaaq-cai").bytes
MINUTE_NS = 60 * 1_000_000_000


def now_ns() -> int:
    return time.time_ns()


def call_content(identity, expiry_ns=None, **extra):
    return {
        "request_type": "call",
        "sender": identity.sender().bytes,
        "canister_id": CANISTER,
        "method_name": "inc",
        "arg": b"DIDL\x00\x00",
        "ingress_expiry": expiry_ns if expiry_ns is not None else now_ns() + 3 * MINUTE_NS,
        **extra,
    }


def check(body: bytes, expected_type="call"):
    return authenticate(decode_envelope(body), expected_type, now_ns())


def rejected(body: bytes, expected_type="call") -> EnvelopeRejected:
    with pytest.raises(EnvelopeRejected) as caught:
        check(body, expected_type)
    assert caught.value.http_status == 400
    return caught.value


@pytest.mark.parametrize("key_type", ["ed25519", "secp256k1", "p256"])
def test_signed_call_from_icp_py_core_is_accepted(key_type):
    identity = Identity(type=key_type)
    content = call_content(identity)
    request_id, body = sign_request(content, identity)
    request = check(body)
    assert request.request_id == request_id
    assert request.sender == Principal.self_authenticating(identity.der_pubkey)
    assert request.canister_id.to_text() == "rrkah-fqaaa-aaaaa-aaaaq-cai"
    assert (request.method_name, request.arg) == ("inc", b"DIDL\x00\x00")


def test_anonymous_query_and_read_state():
    anonymous = Identity(anonymous=True)
    query = {**call_content(anonymous), "request_type": "query"}
    _, body = sign_request(query, anonymous)
    assert check(body, "query").sender == Principal.anonymous()

    paths = [[b"request_status", b"\x01" * 32], [b"time"]]
    read = {"request_type": "read_state", "sender": b"\x04", "paths": paths, "ingress_expiry": now_ns() + MINUTE_NS}
    _, body = sign_request(read, anonymous)
    request = check(body, "read_state")
    assert request.paths == ((b"request_status", b"\x01" * 32), (b"time",))
    assert request.request_id == to_request_id(read)


def test_self_describe_tag_is_accepted():
    identity = Identity()
    _, body = sign_request(call_content(identity), identity)
    tagged = cbor2.dumps(cbor2.CBORTag(55799, cbor2.loads(body)))
    assert check(tagged).method_name == "inc"


def test_high_s_secp256k1_signature_is_accepted():
    # ic-py 1.0.1 does not normalise s; the IC's own verifier takes both forms.
    identity = Identity(type="secp256k1")
    content = call_content(identity)
    message = REQUEST_DOMAIN_SEPARATOR + to_request_id(content)
    r, s = sigdecode_string(identity.sign(message)[1], SECP256k1.order)
    high_s = sigencode_string(r, SECP256k1.order - s, SECP256k1.order)
    body = cbor2.dumps({"content": content, "sender_pubkey": identity.der_pubkey, "sender_sig": high_s})
    assert check(body).sender == Principal.self_authenticating(identity.der_pubkey)


def test_nonce_makes_a_different_request():
    identity = Identity()
    first, _ = sign_request(call_content(identity, nonce=b"\x01"), identity)
    second, _ = sign_request(call_content(identity, nonce=b"\x02"), identity)
    assert first != second


def test_malformed_cbor():
    error = rejected(b"\xa1\x67content")
    assert "not valid CBOR" in error.message
    assert "must be a CBOR map" in rejected(cbor2.dumps([1, 2])).message
    assert "no 'content' map" in rejected(cbor2.dumps({"contents": {}})).message


def test_wrong_signature():
    identity = Identity()
    _, body = sign_request(call_content(identity), identity)
    envelope = dict(cbor2.loads(body))
    signature = bytearray(envelope["sender_sig"])
    signature[0] ^= 1
    envelope["sender_sig"] = bytes(signature)
    assert "does not verify" in rejected(cbor2.dumps(envelope)).message


def test_content_changed_after_signing():
    identity = Identity()
    _, body = sign_request(call_content(identity), identity)
    envelope = cbor2.loads(body)
    envelope = {**envelope, "content": {**envelope["content"], "method_name": "dec"}}
    assert "does not verify" in rejected(cbor2.dumps(envelope)).message


def test_sender_not_derived_from_key():
    alice, mallory = Identity(), Identity()
    content = call_content(alice)
    _, signature = mallory.sign(REQUEST_DOMAIN_SEPARATOR + to_request_id(content))
    body = cbor2.dumps({"content": content, "sender_pubkey": mallory.der_pubkey, "sender_sig": signature})
    assert "not the self-authenticating principal" in rejected(body).message


def test_non_anonymous_sender_without_signature():
    identity = Identity()
    body = cbor2.dumps({"content": call_content(identity)})
    assert "needs sender_pubkey and sender_sig" in rejected(body).message


def test_anonymous_sender_with_signature():
    identity = Identity()
    content = call_content(Identity(anonymous=True))
    pubkey, signature = identity.sign(REQUEST_DOMAIN_SEPARATOR + to_request_id(content))
    body = cbor2.dumps({"content": content, "sender_pubkey": pubkey, "sender_sig": signature})
    assert "anonymous request must not carry" in rejected(body).message


def test_expired_and_too_far_ahead():
    identity = Identity()
    _, body = sign_request(call_content(identity, expiry_ns=now_ns() - MINUTE_NS), identity)
    assert "expired" in rejected(body).message
    _, body = sign_request(call_content(identity, expiry_ns=now_ns() + 10 * MINUTE_NS), identity)
    assert "in the future" in rejected(body).message


def test_request_type_must_match_endpoint():
    identity = Identity()
    _, body = sign_request(call_content(identity), identity)
    assert "takes request_type 'query'" in rejected(body, "query").message


def test_delegation_is_refused_clearly():
    identity = Identity()
    _, body = sign_request(call_content(identity), identity)
    envelope = {**cbor2.loads(body), "sender_delegation": []}
    assert "sender_delegation is not supported" in rejected(cbor2.dumps(envelope)).message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"nonce": b"\x00" * 33}, "at most 32"),
        ({"arg": "text"}, "'arg' must be a CBOR byte string"),
        ({"ingress_expiry": -1}, "natural number"),
        ({"canister_id": b"\x00" * 30}, "at most 29"),
    ],
)
def test_bad_fields(change, expected):
    identity = Identity(anonymous=True)
    body = cbor2.dumps({"content": {**call_content(identity), **change}})
    assert expected in rejected(body).message


def test_missing_method_name():
    content = call_content(Identity(anonymous=True))
    del content["method_name"]
    assert "no 'method_name' field" in rejected(cbor2.dumps({"content": content})).message


def test_unsupported_key_type():
    content = call_content(Identity(anonymous=True))
    content["sender"] = Principal.self_authenticating(b"\x30\x03\x02\x01\x01").bytes
    body = cbor2.dumps({"content": content, "sender_pubkey": b"\x30\x03\x02\x01\x01", "sender_sig": b"x"})
    assert "supports only those signature schemes" in rejected(body).message
