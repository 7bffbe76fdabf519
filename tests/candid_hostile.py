"""Hostile Candid messages of at most 64 KiB: the worst cases a decoder meets per byte, for the
test that bounds their work and memory (tests/test_candid_budget.py) and the benchmark that times
them (benchmarks/bench_candid_hostile.py). Each is (name, expected types, message bytes)."""

from __future__ import annotations

from cdk.candid.encode import write_leb
from cdk.candid.types import T, Type

MESSAGE_BYTES = 64 * 1024


def _leb(n: int) -> bytes:
    out = bytearray()
    write_leb(out, n)
    return bytes(out)


def _filled(header: bytes, element: bytes, *, count_bytes: int = 3) -> bytes:
    """`header` + a vector length + as many `element`s as fit in MESSAGE_BYTES."""
    n = (MESSAGE_BYTES - len(header) - count_bytes) // len(element)
    return header + _leb(n) + element * n


def hostile_messages() -> list[tuple[str, list[Type], bytes]]:
    nulls = T.vec(T.null)
    return [
        ("vec record {} x 4M in 15 bytes", [T.vec(T.record({}))],
         b"DIDL\x02\x6d\x01\x6c\x00\x01\x00" + _leb(4_000_000)),
        ("vec null x 2^60", [nulls], b"DIDL\x01\x6d\x7f\x01\x00" + _leb(1 << 60)),
        ("vec vec null, 127 each", [T.vec(nulls)], _filled(b"DIDL\x02\x6d\x01\x6d\x7f\x01\x00", b"\x7f")),
        ("extra arg: vec vec null", [], _filled(b"DIDL\x02\x6d\x01\x6d\x7f\x01\x00", b"\x7f")),
        ("vec opt null", [T.vec(T.opt(T.null))], _filled(b"DIDL\x02\x6d\x01\x6e\x7f\x01\x00", b"\x00")),
        ("vec opt opt null", [T.vec(T.opt(T.opt(T.null)))],
         _filled(b"DIDL\x03\x6d\x01\x6e\x02\x6e\x7f\x01\x00", b"\x01\x00")),
        ("vec bool", [T.vec(T.bool)], _filled(b"DIDL\x01\x6d\x7e\x01\x00", b"\x01")),
        ("vec nat, 1 byte each", [T.vec(T.nat)], _filled(b"DIDL\x01\x6d\x7d\x01\x00", b"\x05")),
        ("vec nat, 2 bytes each", [T.vec(T.nat)], _filled(b"DIDL\x01\x6d\x7d\x01\x00", b"\x85\x01")),
        ("vec int as nat", [T.vec(T.int)], _filled(b"DIDL\x01\x6d\x7d\x01\x00", b"\x85\x01")),
        ("vec text, empty", [T.vec(T.text)], _filled(b"DIDL\x01\x6d\x71\x01\x00", b"\x00")),
        ("vec variant {a; b}", [T.vec(T.variant({"a": T.null, "b": T.null}))],
         _filled(b"DIDL\x02\x6d\x01\x6b\x02\x61\x7f\x62\x7f\x01\x00", b"\x01")),
        ("vec record {a: bool}", [T.vec(T.record({"a": T.bool}))],
         _filled(b"DIDL\x02\x6d\x01\x6c\x01\x61\x7e\x01\x00", b"\x01")),
        ("vec reserved of opt bool", [T.vec(T.reserved)], _filled(b"DIDL\x02\x6d\x01\x6e\x7e\x01\x00", b"\x00")),
        ("deep opt", [T.opt(T.null)], b"DIDL\x01\x6e\x00\x01\x00" + b"\x01" * (MESSAGE_BYTES - 9)),
        ("blob", [T.blob], _filled(b"DIDL\x01\x6d\x7b\x01\x00", b"\xab")),
    ]
