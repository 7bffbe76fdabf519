"""Hostile input: every attack is refused with a CandidError, within a small budget of work and memory.

Each test uses small DecodeLimits (or the message's own shortness) so that a regression shows
as a failed assertion or a wrong error, never as a hang: the work a decode may do is bounded by
the budget, whatever the message claims.
"""

from __future__ import annotations

import sys
import tracemalloc

import pytest

from cdk.candid import CandidError, DecodeLimits, Some, T, decode, encode, idl_hash
from cdk.candid.encode import write_leb, write_sleb

SMALL = DecodeLimits(max_depth=32, max_values=1000, max_bignum_bytes=64, max_type_entries=100)


def leb(n: int) -> bytes:
    out = bytearray()
    write_leb(out, n)
    return bytes(out)


def sleb(n: int) -> bytes:
    out = bytearray()
    write_sleb(out, n)
    return bytes(out)


def refuse(types, data: bytes, complaint: str, limits: DecodeLimits = SMALL) -> CandidError:
    """Decode must fail with `complaint` in the message, allocating little on the way."""
    tracemalloc.start()
    try:
        with pytest.raises(CandidError, match=complaint) as caught:
            decode(types, data, limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"refusing took {peak} bytes of memory"
    return caught.value


VEC_NULL = b"DIDL\x01\x6d\x7f\x01\x00"


# --- vector-length bombs ------------------------------------------------------------------------

@pytest.mark.parametrize("types", [[T.blob], [T.vec(T.nat)], [T.vec(T.text)], [T.reserved], []])
def test_huge_blob_length_without_data(types):
    data = b"DIDL\x01\x6d\x7b\x01\x00" + leb(1 << 60)
    error = refuse(types, data, "needs at least 1152921504606846976 bytes, but only 0 remain")
    assert error.offset == 9


@pytest.mark.parametrize("element", [b"\x7f", b"\x70"])  # null, reserved
@pytest.mark.parametrize("types", [[T.vec(T.null)], [T.vec(T.reserved)], [T.reserved], [T.vec(T.opt(T.nat))], []])
def test_huge_vector_of_zero_sized_elements_is_refused_up_front(element, types):
    data = b"DIDL\x01\x6d" + element + b"\x01\x00" + leb(1 << 62)
    refuse(types, data, "zero-sized elements exceeds what is left", DecodeLimits())


def test_zero_sized_records_count_against_the_budget():
    # vec record {} and vec record { null; reserved }: both take no bytes per element
    empty_record = b"DIDL\x02\x6d\x01\x6c\x00\x01\x00" + leb(10**9)
    refuse([T.vec(T.record({}))], empty_record, "decoding budget")
    nulls = b"DIDL\x02\x6d\x01\x6c\x02\x00\x7f\x01\x70\x01\x00" + leb(10**9)
    refuse([T.vec(T.tuple(T.null, T.reserved))], nulls, "decoding budget")


def test_zero_sized_elements_within_the_budget_decode():
    assert decode([T.vec(T.null)], VEC_NULL + leb(999), SMALL) == [[None] * 999]
    refuse([T.vec(T.null)], VEC_NULL + leb(1000), "decoding budget")  # the vector itself costs one


def test_the_budget_covers_all_vectors_together():
    # vec vec null: 100 inner vectors of 50 nulls: each fits, together they exceed 1000 values
    data = b"DIDL\x02\x6d\x01\x6d\x7f\x01\x00" + leb(100) + leb(50) * 100
    refuse([T.vec(T.vec(T.null))], data, r"exceeds what is left \(\d+\) of the decoding budget of 1000")
    refuse([], data, r"exceeds what is left \(\d+\) of the decoding budget of 1000")  # skipping costs the same


def test_many_small_values_exceed_the_budget():
    data = b"DIDL\x01\x6d\x7d\x01\x00" + leb(2000) + b"\x01" * 2000
    refuse([T.vec(T.nat)], data, "more than 1000 values")
    data = b"DIDL\x01\x6d\x7a\x01\x00" + leb(2000) + b"\x01\x00" * 2000  # the nat16 fast path too
    refuse([T.vec(T.nat16)], data, "more than 1000 values")


# --- lengths that overshoot the input -----------------------------------------------------------

@pytest.mark.parametrize(("types", "data", "complaint"), [
    ([T.text], b"DIDL\x00\x01\x71" + leb(1 << 40) + b"abc", "text needs 1099511627776 bytes but only 3 remain"),
    ([T.blob], b"DIDL\x01\x6d\x7b\x01\x00" + leb(1000) + bytes(10), "needs at least 1000 bytes, but only 10"),
    ([T.vec(T.nat64)], b"DIDL\x01\x6d\x78\x01\x00" + leb(3) + bytes(16), "needs at least 24 bytes"),
    ([T.principal], b"DIDL\x00\x01\x68\x01" + leb(200) + bytes(200), "at most 29 bytes"),
    ([T.principal], b"DIDL\x00\x01\x68\x01\x10" + bytes(3), "principal needs 16 bytes but only 3"),
    ([], b"DIDL\x01\x6c" + leb(1 << 40), r"field count is 1099511627776, .* \(in type table entry 0, at byte 6"),
    ([], b"DIDL\x01\x6b" + leb(1 << 40), r"field count is 1099511627776, .* \(in type table entry 0"),
    ([], b"DIDL\x01\x6a" + leb(1 << 40), r"argument count is 1099511627776, .* \(in type table entry 0"),
    ([], b"DIDL\x01\x69" + leb(1 << 40), r"method count is 1099511627776, .* \(in type table entry 0"),
    ([], b"DIDL\x00" + leb(1 << 40), "argument count is 1099511627776"),
    ([], b"DIDL\x01\x67" + leb(1 << 40), r"future type needs 1099511627776 bytes.*\(in type table entry 0"),
])
def test_lengths_beyond_the_message(types, data, complaint):
    refuse(types, data, complaint)


# --- nesting ------------------------------------------------------------------------------------

def test_deep_recursive_value_is_refused_at_the_depth_limit():
    # type Opt = opt Opt, with 100,000 "some" tags: far deeper than Python's own stack allows
    data = b"DIDL\x01\x6e\x00\x01\x00" + b"\x01" * 100_000 + b"\x00"
    opt = T.recursive("Opt")
    opt.define(T.opt(opt))
    for types in ([opt], [T.reserved], []):
        refuse(types, data, "nest deeper than 32 levels")


def test_recursive_vectors_are_refused_at_the_depth_limit():
    data = b"DIDL\x01\x6d\x00\x01\x00" + b"\x01" * 10_000 + b"\x00"
    refuse([T.reserved], data, "nest deeper than 32 levels")


def test_deep_non_recursive_type_table():
    # 100 entries, each an opt of the next: legal, but its values nest 100 deep
    table = b"".join(b"\x6e" + sleb(i + 1) for i in range(99)) + b"\x6e\x7d"
    data = b"DIDL" + leb(100) + table + b"\x01\x00" + b"\x01" * 100 + b"\x05"
    refuse([T.reserved], data, "nest deeper than 32 levels")
    error = refuse([T.vec(T.nat)], data, "expected vec nat, the message has opt")
    assert len(str(error)) < 300  # the type in the message is shown to a bounded depth


def test_deep_types_in_a_subtype_check():
    # the wire's func takes vec vec ... nat (200 deep); the expected one takes `type V = vec V`
    table = b"\x6a\x01\x01\x00\x00" + b"".join(b"\x6d" + sleb(i + 2) for i in range(199)) + b"\x6d\x7d"
    data = b"DIDL" + leb(201) + table + b"\x01\x00" + b"\x01\x01\x01\x00\x01m"
    v = T.recursive("V")
    v.define(T.vec(v))
    refuse([T.func([v], [])], data, "nest deeper than the limit of 32", DecodeLimits(max_depth=32))


def test_empty_recursive_record_is_refused():
    # type R = record { R }: no value can exist, and a vector of them costs nothing per element
    data = b"DIDL\x02\x6d\x01\x6c\x01\x00\x01\x01\x00" + leb(1 << 40)
    refuse([T.reserved], data, "decoding budget")
    data = b"DIDL\x02\x6d\x01\x6c\x01\x00\x01\x01\x00" + leb(5)
    refuse([T.reserved], data, "nest deeper than 32 levels")


# --- overlong LEB128 ----------------------------------------------------------------------------

def test_overlong_lengths_are_refused():
    refuse([], b"DIDL" + b"\x80" * 20 + b"\x00\x00", "type table length: LEB128 number longer than 10 bytes")
    refuse([T.text], b"DIDL\x00\x01\x71" + b"\x80" * 11 + b"\x00", "longer than 10 bytes")
    refuse([T.text], b"DIDL\x00\x01\x71" + b"\xff" * 9 + b"\x7f", "out of range")  # 2**70 - 1 > u64
    refuse([], b"DIDL\x00\x01" + b"\xff" * 11 + b"\x7f", "longer than 10 bytes")  # a type code


def test_overlong_numbers_are_bounded():
    refuse([T.nat], b"DIDL\x00\x01\x7d" + b"\xff" * 5000 + b"\x01", "longer than 64 bytes.*max_bignum_bytes")
    refuse([T.int], b"DIDL\x00\x01\x7c" + b"\x80" * 5000 + b"\x00", "longer than 64 bytes")
    refuse([T.nat], b"DIDL\x00\x01\x7d" + b"\x80" * 5000, "longer than 64 bytes")
    # within the bound, overlong encodings are legal and decode to their value
    assert decode([T.nat], b"DIDL\x00\x01\x7d" + b"\x80" * 63 + b"\x00", SMALL) == [0]
    assert decode([T.nat], b"DIDL\x00\x01\x7d" + b"\xff" * 63 + b"\x01", SMALL) == [(1 << 442) - 1]


# --- type tables with absurd counts -------------------------------------------------------------

def test_absurd_type_table_counts():
    refuse([], b"DIDL" + leb(1 << 50), "type table length is 1125899906842624, but only 0 bytes remain")
    table = b"\x6e\x7f" * 200  # 200 legal entries, over the limit of 100
    refuse([], b"DIDL" + leb(200) + table + b"\x00", "200 entries, over the limit of 100")


def test_messages_that_are_not_candid():
    refuse([], b"", "must start with b'DIDL'")
    refuse([], b"\x00\x00", "must start with b'DIDL'")
    refuse([], b"DIDL", "the message ends here")
    refuse([], b"DIDL\x00\x00\x00", "1 bytes are left over")


@pytest.fixture
def default_recursion_limit():
    """Python's default stack depth: some libraries raise it process-wide on import (py_ecc sets
    100,000), and these tests must run out of stack quickly and safely, not 100,000 frames deep."""
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    yield
    sys.setrecursionlimit(previous)


@pytest.mark.usefixtures("default_recursion_limit")
def test_python_stack_exhaustion_becomes_a_candid_error():
    # with the depth limit raised past what Python's stack holds, the stack runs out first
    data = b"DIDL\x01\x6e\x00\x01\x00" + b"\x01" * 100_000 + b"\x00"
    refuse([T.reserved], data, "too deeply for the Python stack", DecodeLimits(max_depth=1_000_000))


@pytest.mark.usefixtures("default_recursion_limit")
def test_encoding_a_value_too_deep_for_the_stack():
    chain = T.recursive("Chain")
    chain.define(T.opt(chain))
    value = None
    for _ in range(100_000):
        value = Some(value)
    with pytest.raises(CandidError, match="nests too deeply.*send long sequences as a vec"):
        encode([chain], [value])


def test_long_error_paths_are_shortened():
    chain = T.recursive("Chain")
    chain.define(T.record({"next": T.opt(chain)}))
    data = b"DIDL\x02\x6c\x01" + leb(idl_hash("next")) + b"\x01\x6e\x00\x01\x00" + b"\x01" * 100 + b"\x00"
    error = refuse([chain], data, "nest deeper than 32 levels")
    assert "….next" in str(error) and len(str(error)) < 250
