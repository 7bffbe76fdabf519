"""The decoder's budget against hostile messages of at most 64 KiB (tests/candid_hostile.py):
each decodes or is refused within a bounded work and 20 MB, vectors of zero-sized elements cost
the same whatever their count, and a small message cannot build a huge value. (Their times are
benchmarks/bench_candid_hostile.py's subject, never asserted here.)"""

from __future__ import annotations

import importlib
import tracemalloc

import pytest

from cdk.candid import CandidError, DecodeLimits, T, decode
from cdk.candid.encode import write_leb
from tests.candid_hostile import MESSAGE_BYTES, hostile_messages

decode_module = importlib.import_module("cdk.candid.decode")

LIMITS = DecodeLimits()


def leb128(n: int) -> bytes:
    out = bytearray()
    write_leb(out, n)
    return bytes(out)


@pytest.mark.parametrize(("name", "types", "data"), hostile_messages(), ids=[m[0] for m in hostile_messages()])
def test_every_hostile_message_decodes_or_is_refused_within_20_mb(name: str, types: list, data: bytes) -> None:
    assert len(data) <= MESSAGE_BYTES
    tracemalloc.start()
    try:
        try:
            decode(types, data)
        except CandidError as e:
            assert "budget" in str(e) or "nest deeper" in str(e), (name, e)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, (name, peak)


def count_values(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    value, skip = decode_module._Decoder.value, decode_module._Decoder.skip

    def counted_value(self, *args):  # noqa: ANN001, ANN202
        calls[0] += 1
        return value(self, *args)

    def counted_skip(self, *args):  # noqa: ANN001, ANN202
        calls[0] += 1
        return skip(self, *args)

    monkeypatch.setattr(decode_module._Decoder, "value", counted_value)
    monkeypatch.setattr(decode_module._Decoder, "skip", counted_skip)
    return calls


@pytest.mark.parametrize("n", [10, 30_000])
def test_zero_sized_vectors_cost_the_same_whatever_their_count(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    leb = leb128(n)
    message = b"DIDL\x02\x6d\x01\x6c\x00\x02\x00\x00" + leb + leb  # vec record {} twice: decoded, then skipped
    calls = count_values(monkeypatch)
    (records,) = decode([T.vec(T.record({}))], message)
    assert calls[0] == 4  # the vector and one element, decoded then skipped: not n of anything
    assert records == [{}] * n and records[0] is not records[-1]  # elements share no dict


def test_the_count_of_zero_sized_elements_is_charged_to_the_budget_at_once() -> None:
    limits = DecodeLimits(min_values=1000, values_per_byte=0)
    decode([T.vec(T.null)], b"DIDL\x01\x6d\x7f\x01\x00" + bytes([0xE6, 0x07]), limits)  # 998 + the vector
    with pytest.raises(CandidError, match="a vector of 1000 zero-sized elements exceeds what is left"):
        decode([T.vec(T.null)], b"DIDL\x01\x6d\x7f\x01\x00" + bytes([0xE8, 0x07]), limits)


def test_a_small_message_cannot_build_a_huge_value() -> None:
    """15 bytes that declare 4,000,000 empty records: over the budget of a 15-byte message
    (min_values + values_per_byte per byte), refused before anything is built."""
    message = b"DIDL\x02\x6d\x01\x6c\x00\x01\x00" + leb128(4_000_000)
    assert len(message) == 15
    with pytest.raises(CandidError, match=r"exceeds what is left \(65595\) of the decoding budget of 65596 values "
                                          r"for a 15-byte message"):
        decode([T.vec(T.record({}))], message)
    # The same elements are fine where the message is large enough to carry that many values.
    roomy = DecodeLimits(values_per_byte=LIMITS.values_per_byte, min_values=4_000_001)
    assert len(decode([T.vec(T.record({}))], message, roomy)[0]) == 4_000_000
