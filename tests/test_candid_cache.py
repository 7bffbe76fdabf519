"""The header cache never changes what encode or decode produce, only how fast."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdk.candid import CandidError, HeaderCache, T, decode, encode

REQUEST = (T.record({"session": T.nat64, "pos": T.nat32, "activations": T.blob, "sample": T.opt(T.vec(T.nat32))}),)
requests = st.fixed_dictionaries({
    "session": st.integers(0, 2**64 - 1), "pos": st.integers(0, 2**32 - 1), "activations": st.binary(max_size=64),
    "sample": st.none() | st.lists(st.integers(0, 2**32 - 1), max_size=4),
})


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(requests, min_size=1, max_size=8))
def test_cached_encode_and_decode_equal_uncached(values: list[dict]) -> None:
    cache = HeaderCache()
    for value in values:
        data = encode(REQUEST, [value])
        assert encode(REQUEST, [value], cache) == data
        assert decode(REQUEST, data, cache=cache) == decode(REQUEST, data) == [value]


def test_messages_with_other_headers_for_the_same_types_decode_as_without_a_cache() -> None:
    """A sender may use another type table for the same values (here: a wider record, and the
    record's fields as a supertype); each header is parsed on its own."""
    cache = HeaderCache()
    value = {"session": 1, "pos": 2, "activations": b"x", "sample": None}
    wider = (T.record({**{"session": T.nat64, "pos": T.nat32, "activations": T.blob}, "extra": T.text}),)
    messages = [encode(REQUEST, [value]), encode(wider, [{"session": 1, "pos": 2, "activations": b"x", "extra": "e"}])]
    for data in messages * 3:
        assert decode(REQUEST, data, cache=cache) == decode(REQUEST, data)


def test_bad_values_after_a_known_header_fail_as_without_a_cache() -> None:
    cache = HeaderCache()
    data = encode(REQUEST, [{"session": 1, "pos": 2, "activations": b"abc", "sample": [7]}])
    decode(REQUEST, data, cache=cache)  # the header is now known
    for damaged in (data[:-1], data + b"\x00", data[:-4]):
        with pytest.raises(CandidError) as uncached:
            decode(REQUEST, damaged)
        with pytest.raises(CandidError) as cached:
            decode(REQUEST, damaged, cache=cache)
        assert str(cached.value) == str(uncached.value)
