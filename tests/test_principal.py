"""Principal: text form, special principals and canister ids, checked against published ids and
against icp-py-core's independent implementation."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from icp_identity import Identity
from icp_principal import Principal as ReferencePrincipal

from cdk.principal import Principal


@pytest.mark.parametrize(("text", "raw_hex"), [
    ("aaaaa-aa", ""),                                  # management canister
    ("2vxsx-fae", "04"),                               # anonymous
    ("rwlgt-iiaaa-aaaaa-aaaaa-cai", "00000000000000000101"),
    ("ryjl3-tyaaa-aaaaa-aaaba-cai", "00000000000000020101"),  # the ICP ledger
    ("w7x7r-cok77-xa", "caffee"),                      # from the Candid test suite
    ("2chl6-4hpzw-vqaaa-aaaaa-c", "efcdab000000000001"),
])
def test_published_principals_round_trip(text, raw_hex):
    principal = Principal.from_text(text)
    assert principal.bytes.hex() == raw_hex
    assert principal.to_text() == text == str(principal)


def test_special_principals():
    assert Principal.management().to_text() == "aaaaa-aa"
    assert Principal.management().is_management
    assert Principal.anonymous().to_text() == "2vxsx-fae"
    assert Principal.anonymous().is_anonymous
    assert not Principal.anonymous().is_management


def test_canister_ids_follow_the_ic_allocation():
    assert Principal.from_canister_index(0).to_text() == "rwlgt-iiaaa-aaaaa-aaaaa-cai"
    assert Principal.from_canister_index(1).to_text() == "rrkah-fqaaa-aaaaa-aaaaq-cai"
    assert Principal.from_canister_index(2).to_text() == "ryjl3-tyaaa-aaaaa-aaaba-cai"
    with pytest.raises(ValueError, match="64-bit"):
        Principal.from_canister_index(-1)


def test_self_authenticating_matches_icp_py_core_identity():
    identity = Identity(privkey="833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42")
    principal = Principal.self_authenticating(identity.der_pubkey)
    assert principal.to_text() == identity.sender().to_str()
    assert principal.is_self_authenticating
    assert not principal.is_anonymous


@pytest.mark.parametrize(("text", "complaint"), [
    ("aaaaa-ab", "canonical"),              # stray bits in the last digit
    ("aaaaaaa", "canonical"),               # missing dash
    ("rrkahfqaaa-aaaaa-aaaaq-cai", "canonical"),
    ("w7x7r-cok77-xb", "canonical"),
    ("rwlgt-iiaaa-aaaaa-aaaaa-cai-", "canonical"),
    ("", "too short"),
    ("rrkah-fqaaa-aaaaa-aaaaq-ca1", "base32"),
    ("rrkah-fqaab-aaaaa-aaaaq-cai", "checksum"),
    ("ryjl3-tyaaa-aaaaa-aaaba-cbi", "checksum"),
])
def test_bad_text_is_refused_with_the_reason(text, complaint):
    with pytest.raises(ValueError, match=complaint):
        Principal.from_text(text)


def test_upper_case_text_is_accepted():
    assert Principal.from_text("RYJL3-TYAAA-AAAAA-AAABA-CAI") == Principal.from_canister_index(2)


def test_value_semantics():
    a, b = Principal(b"a"), Principal(bytearray(b"b"))
    assert sorted([b, a]) == [a, b]
    assert {a: 1}[Principal(b"a")] == 1
    assert b.bytes == b"b" and isinstance(b.bytes, bytes)
    with pytest.raises(AttributeError):
        a.bytes = b"c"  # type: ignore[misc]
    with pytest.raises(ValueError, match="at most 29"):
        Principal(bytes(30))
    with pytest.raises(TypeError, match="from_text"):
        Principal("aaaaa-aa")  # type: ignore[arg-type]


@settings(deadline=None)
@given(st.binary(max_size=29))
def test_text_matches_icp_py_core_and_round_trips(raw):
    principal = Principal(raw)
    assert principal.to_text() == ReferencePrincipal(raw).to_str()
    assert Principal.from_text(principal.to_text()) == principal
