"""Request ids against the interface spec's worked examples and the real agents' own hashing."""

import hashlib

import pytest
from icp_agent.agent import to_request_id as icp_py_core_request_id

from replica.request_id import (
    decode_uleb128,
    encode_sleb128,
    encode_uleb128,
    hash_of_map,
    request_id,
)

SPEC_CALL = {
    "request_type": "call",
    "sender": b"\x04",
    "ingress_expiry": 1685570400000000000,
    "canister_id": b"\x00\x00\x00\x00\x00\x00\x04\xd2",
    "method_name": "hello",
    "arg": b"DIDL\x00\xfd*",
}


def test_spec_worked_example_hashes_to_published_id():
    assert request_id(SPEC_CALL).hex() == "1d1091364d6bb8a6c16b203ee75467d59ead468f523eb058880ae8ec80e2b101"


def test_spec_field_hashes():
    # The intermediate hashes printed in the spec's example.
    assert hashlib.sha256(encode_uleb128(1685570400000000000)).hexdigest() == (
        "db8e57abc8cda1525d45fdd2637af091bc1f28b35819a40df71517d1501f2c76"
    )


def test_spec_nested_map_example():
    nested = {"reply": {"arg": b"DIDL\x00\x00"}}
    inner = hashlib.sha256(hashlib.sha256(b"arg").digest() + hashlib.sha256(b"DIDL\x00\x00").digest()).digest()
    assert hash_of_map(nested) == hashlib.sha256(hashlib.sha256(b"reply").digest() + inner).digest()


@pytest.mark.parametrize(
    ("value", "encoded"), [(0, b"\x00"), (624485, b"\xe5\x8e\x26"), (127, b"\x7f"), (128, b"\x80\x01")]
)
def test_uleb128_spec_examples(value, encoded):
    assert encode_uleb128(value) == encoded
    assert decode_uleb128(encoded) == value


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (-123456, b"\xc0\xbb\x78"), (-1, b"\x7f"), (63, b"\x3f"), (64, b"\xc0\x00")],
)
def test_sleb128_spec_examples(value, encoded):
    assert encode_sleb128(value) == encoded


def test_uleb128_rejects_trailing_and_truncated():
    with pytest.raises(ValueError, match="trailing"):
        decode_uleb128(b"\x01\x02")
    with pytest.raises(ValueError, match="truncated"):
        decode_uleb128(b"\x80")


def test_nonce_changes_the_id():
    assert request_id({**SPEC_CALL, "nonce": b"\x01"}) != request_id({**SPEC_CALL, "nonce": b"\x02"})
    assert request_id({**SPEC_CALL, "nonce": b"\x01"}) != request_id(SPEC_CALL)


def test_read_state_paths_match_icp_py_core():
    content = {
        "request_type": "read_state",
        "sender": b"\x04",
        "ingress_expiry": 1685570400000000000,
        "paths": [[b"request_status", request_id(SPEC_CALL)], [b"time"]],
    }
    assert request_id(content) == icp_py_core_request_id(content)


def test_rejects_values_the_spec_cannot_hash():
    with pytest.raises(TypeError, match="no encoding"):
        request_id({"flag": True})
