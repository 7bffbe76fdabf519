"""Request envelopes: decoding, field validation and sender authentication.

Follows the interface spec's "Authentication" and "Signatures" sections. An envelope is a CBOR
map {content, sender_pubkey?, sender_sig?, sender_delegation?}; the request id is the
representation-independent hash of `content`, and a non-anonymous sender signs
b"\\x0Aic-request" + request_id with the key whose DER SubjectPublicKeyInfo is `sender_pubkey`.
The sender must be that key's self-authenticating principal.

Supported signature schemes: Ed25519, ECDSA on secp256k1 and on P-256 (64-byte r||s over
SHA-256 of the message). High-S ECDSA signatures are accepted, as ic-py 1.0.1 produces them.
Delegations, canister signatures and WebAuthn keys are refused with a clear 400.

Every check raises `EnvelopeRejected` (an HTTP status and a message for the client) before
anything reaches the network, so a refused request changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import cbor2
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_der_public_key

from cdk.principal import Principal
from replica.limits import DEFAULT_LIMITS
from replica.request_id import REQUEST_DOMAIN_SEPARATOR, request_id

RequestType = Literal["call", "query", "read_state"]

MAX_INGRESS_TTL_NS = DEFAULT_LIMITS.ingress_expiry_max_ns
# The replica tolerates this much clock difference between the agent and itself.
PERMITTED_DRIFT_NS = 30 * 1_000_000_000
MAX_NONCE_BYTES = 32
MAX_PATHS = 1000
MAX_PATH_LABELS = 127
MAX_PRINCIPAL_BYTES = 29


class EnvelopeRejected(Exception):
    """A request refused before it reaches the network; `message` tells the client why."""

    def __init__(self, http_status: int, message: str):
        super().__init__(message)
        self.http_status = http_status
        self.message = message


@dataclass(frozen=True)
class Request:
    """A decoded, authenticated request."""

    request_type: RequestType
    request_id: bytes
    sender: Principal
    ingress_expiry_ns: int
    nonce: bytes | None
    canister_id: Principal | None  # call and query
    method_name: str | None  # call and query
    arg: bytes | None  # call and query
    paths: tuple[tuple[bytes, ...], ...] | None  # read_state


def _bad(message: str) -> EnvelopeRejected:
    return EnvelopeRejected(400, message)


def _field(content: Mapping, name: str, kind: type, required: bool = True):
    value = content.get(name)
    if value is None:
        if required:
            raise _bad(f"the request content has no '{name}' field; every {content.get('request_type')} "
                       f"request needs one")
        return None
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise _bad(f"'{name}' must be a natural number, got {value!r}")
    if kind is bytes and not isinstance(value, (bytes, bytearray)):
        raise _bad(f"'{name}' must be a CBOR byte string, got {type(value).__name__}")
    if kind is str and not isinstance(value, str):
        raise _bad(f"'{name}' must be a CBOR text string, got {type(value).__name__}")
    return bytes(value) if kind is bytes else value


def _principal(content: Mapping, name: str) -> Principal:
    raw = _field(content, name, bytes)
    if len(raw) > MAX_PRINCIPAL_BYTES:
        raise _bad(f"'{name}' is {len(raw)} bytes long, but a principal has at most {MAX_PRINCIPAL_BYTES}")
    return Principal(raw)


def _paths(content: Mapping) -> tuple[tuple[bytes, ...], ...]:
    paths = content.get("paths")
    if not isinstance(paths, Sequence) or isinstance(paths, (bytes, str)):
        raise _bad("'paths' must be an array of paths, each an array of byte strings")
    if len(paths) > MAX_PATHS:
        raise _bad(f"a read_state request may ask for at most {MAX_PATHS} paths, this one asks for {len(paths)}")
    result = []
    for path in paths:
        if not isinstance(path, Sequence) or isinstance(path, (bytes, str)):
            raise _bad("each path in 'paths' must be an array of byte strings")
        if len(path) > MAX_PATH_LABELS:
            raise _bad(f"a path may have at most {MAX_PATH_LABELS} labels, one has {len(path)}")
        if not all(isinstance(label, (bytes, bytearray)) for label in path):
            raise _bad("path labels must be CBOR byte strings")
        result.append(tuple(bytes(label) for label in path))
    return tuple(result)


def decode_envelope(body: bytes) -> Mapping:
    """The envelope map of a request body, or a 400 saying why the body is not one."""
    try:
        envelope = cbor2.loads(body)
    except Exception as error:  # cbor2 raises several unrelated types for malformed input
        raise _bad(f"the request body is not valid CBOR ({error}); send a CBOR-encoded envelope") from None
    if not isinstance(envelope, Mapping):
        raise _bad(f"the request body must be a CBOR map (an envelope), got {type(envelope).__name__}")
    content = envelope.get("content")
    if not isinstance(content, Mapping):
        raise _bad("the envelope has no 'content' map")
    return envelope


def _verify_signature(der_key: bytes, signature: bytes, message: bytes) -> None:
    try:
        key = load_der_public_key(der_key)
    except (ValueError, UnsupportedAlgorithm):
        raise _bad(
            "sender_pubkey is not a DER-encoded Ed25519, secp256k1 or P-256 public key; "
            "this network supports only those signature schemes"
        ) from None
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, (ec.SECP256K1, ec.SECP256R1)):
            if len(signature) != 64:
                raise _bad(f"an ECDSA sender_sig must be 64 bytes (r || s), got {len(signature)}")
            r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
        else:
            raise _bad("sender_pubkey uses a signature scheme this network does not support "
                       "(supported: Ed25519, ECDSA secp256k1, ECDSA P-256)")
    except InvalidSignature:
        raise _bad(
            "sender_sig does not verify: it must sign b'\\x0Aic-request' + request id with the key "
            "in sender_pubkey"
        ) from None


def authenticate(envelope: Mapping, expected_type: RequestType, now_ns: int) -> Request:
    """Validates an envelope for an endpoint that takes `expected_type` requests at time `now_ns`."""
    content = envelope["content"]
    request_type = content.get("request_type")
    if request_type != expected_type:
        raise _bad(f"this endpoint takes request_type '{expected_type}', but the request has {request_type!r}")
    if "sender_delegation" in envelope:
        raise _bad("sender_delegation is not supported by this network; sign with the identity's own key")
    if "sender_info" in content:
        raise _bad("sender_info (canister-signed sender information) is not supported by this network")

    sender = _principal(content, "sender")
    expiry = _field(content, "ingress_expiry", int)
    nonce = _field(content, "nonce", bytes, required=False)
    if nonce is not None and len(nonce) > MAX_NONCE_BYTES:
        raise _bad(f"the nonce is {len(nonce)} bytes long; at most {MAX_NONCE_BYTES} are allowed")
    if request_type == "read_state":
        canister_id, method_name, arg, paths = None, None, None, _paths(content)
    else:
        canister_id = _principal(content, "canister_id")
        method_name = _field(content, "method_name", str)
        arg = _field(content, "arg", bytes)
        paths = None

    if expiry < now_ns:
        raise _bad(
            f"the request expired: ingress_expiry is {(now_ns - expiry) / 1e9:.1f} s in the past; "
            "check the client's clock and send a fresh request"
        )
    if expiry > now_ns + MAX_INGRESS_TTL_NS + PERMITTED_DRIFT_NS:
        raise _bad(
            f"ingress_expiry is {(expiry - now_ns) / 1e9:.1f} s in the future; it may be at most "
            f"{MAX_INGRESS_TTL_NS // 1_000_000_000} s ahead (check the client's clock)"
        )

    rid = request_id(content)
    public_key = envelope.get("sender_pubkey")
    signature = envelope.get("sender_sig")
    if sender == Principal.anonymous():
        if public_key is not None or signature is not None:
            raise _bad("an anonymous request must not carry sender_pubkey or sender_sig")
    else:
        if not isinstance(public_key, (bytes, bytearray)) or not isinstance(signature, (bytes, bytearray)):
            raise _bad(
                f"the sender {sender.to_text()} is not anonymous, so the envelope needs sender_pubkey and "
                "sender_sig byte strings"
            )
        public_key, signature = bytes(public_key), bytes(signature)
        if Principal.self_authenticating(public_key) != sender:
            raise _bad(
                f"the sender {sender.to_text()} is not the self-authenticating principal of sender_pubkey "
                f"({Principal.self_authenticating(public_key).to_text()}); the sender must be derived from the "
                "signing key"
            )
        _verify_signature(public_key, signature, REQUEST_DOMAIN_SEPARATOR + rid)

    return Request(request_type, rid, sender, expiry, nonce, canister_id, method_name, arg, paths)
