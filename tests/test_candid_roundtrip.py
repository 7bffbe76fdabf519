"""Property tests: encode -> decode round trips over random types and values, decoding at
supertypes, and mutated messages that must fail only with CandidError."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdk.candid import (
    CandidError,
    DecodeLimits,
    FuncRef,
    Opt,
    Primitive,
    Record,
    Service,
    Some,
    T,
    Type,
    Variant,
    Vec,
    decode,
    encode,
)
from cdk.candid.types import Func, is_nullable, resolve
from cdk.principal import Principal

PROPERTY = settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])

_INT_RANGES = {"nat8": (0, 2**8 - 1), "nat16": (0, 2**16 - 1), "nat32": (0, 2**32 - 1), "nat64": (0, 2**64 - 1),
               "int8": (-(2**7), 2**7 - 1), "int16": (-(2**15), 2**15 - 1), "int32": (-(2**31), 2**31 - 1),
               "int64": (-(2**63), 2**63 - 1), "nat": (0, 2**300), "int": (-(2**300), 2**300)}
_PRIMITIVES = [p for name, p in vars(T).items() if isinstance(p, Primitive) and name != "empty"]
_LABELS = st.one_of(st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True), st.integers(0, 2**32 - 1))


def _distinct_ids(fields: dict) -> bool:
    return len({T.record({k: T.null}).fields[0].id for k in fields}) == len(fields)


def _compose(children: st.SearchStrategy[Type]) -> st.SearchStrategy[Type]:
    fields = st.dictionaries(_LABELS, children, max_size=4).filter(_distinct_ids)
    funcs = st.tuples(st.lists(children, max_size=2), st.lists(children, max_size=2),
                      st.sampled_from([(), ("query",), ("oneway",), ("composite_query",)])).map(lambda f: T.func(*f))
    return st.one_of(
        children.map(T.opt),
        children.map(T.vec),
        fields.map(T.record),
        st.lists(children, max_size=3).map(lambda ts: T.tuple(*ts)),
        fields.filter(bool).map(T.variant),
        funcs,
        st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True), funcs, max_size=3).map(T.service),
    )


types = st.recursive(st.sampled_from(_PRIMITIVES) | st.just(T.blob), _compose, max_leaves=12)


def values(t: Type) -> st.SearchStrategy[Any]:
    """Python values of type `t`, in the form decoding returns them."""
    t = resolve(t)
    if isinstance(t, Primitive):
        if t.name in _INT_RANGES:
            low, high = _INT_RANGES[t.name]
            return st.integers(low, high)
        return {
            "null": st.none(), "reserved": st.none(), "bool": st.booleans(), "text": st.text(),
            "float32": st.floats(width=32, allow_nan=False), "float64": st.floats(allow_nan=False),
            "principal": st.binary(max_size=29).map(Principal),
        }[t.name]
    if isinstance(t, Opt):
        present = values(t.inner).map(Some) if is_nullable(t.inner) else values(t.inner)
        return st.none() | present
    if isinstance(t, Vec):
        inner = resolve(t.inner)
        if isinstance(inner, Primitive) and inner.name == "nat8":
            return st.binary(max_size=64)
        return st.lists(values(inner), max_size=4)
    if isinstance(t, Record):
        return st.fixed_dictionaries({f.key: values(f.type) for f in t.fields})
    if isinstance(t, Variant):
        return st.one_of([values(f.type).map(lambda v, key=f.key: {key: v}) for f in t.fields])
    if isinstance(t, Func):
        return st.builds(FuncRef, st.binary(max_size=29).map(Principal), st.text(max_size=8))
    assert isinstance(t, Service)
    return st.binary(max_size=29).map(Principal)


typed_values = types.flatmap(lambda t: st.tuples(st.just(t), values(t)))


@PROPERTY
@given(st.lists(typed_values, max_size=3))
def test_encode_then_decode_gives_the_value_back(args):
    ts = [t for t, _ in args]
    vs = [v for _, v in args]
    assert decode(ts, encode(ts, vs)) == vs


@PROPERTY
@given(st.lists(typed_values, max_size=3))
def test_any_message_decodes_as_reserved_and_as_nothing(args):
    ts = [t for t, _ in args]
    blob = encode(ts, [v for _, v in args])
    assert decode([T.reserved] * len(ts), blob) == [None] * len(ts)
    assert decode([], blob) == []   # every argument skipped, and still checked
    assert decode(ts + [T.opt(T.nat)], blob)[-1] is None


@PROPERTY
@given(typed_values, st.from_regex(r"[a-z]{1,8}", fullmatch=True))
def test_a_record_decodes_at_its_extension_with_a_new_opt_field(typed, name):
    t, value = typed
    old = T.record({"payload": t})
    new = T.record({"payload": t, f"new_{name}": T.opt(T.text)})
    assert decode([new], encode([old], [{"payload": value}])) == [{"payload": value, f"new_{name}": None}]


@PROPERTY
@given(st.lists(st.integers(-(2**70), 2**70), max_size=20))
def test_recursive_list_round_trip(items):
    lst = T.recursive("List")
    lst.define(T.opt(T.record({"head": T.int, "tail": lst})))
    value = None
    for item in reversed(items):
        value = {"head": item, "tail": value}
    assert decode([lst], encode([lst], [value])) == [value]


@PROPERTY
@given(typed_values, st.data())
def test_mutated_messages_fail_only_with_candid_error(typed, data):
    t, value = typed
    blob = bytearray(encode([t], [value]))
    for _ in range(data.draw(st.integers(1, 3))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, len(blob)))
        if action == "flip" and at < len(blob):
            blob[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del blob[at:]
        else:
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    limits = DecodeLimits(max_depth=32, max_values=10_000)
    for expected in ([t], [T.reserved], []):
        try:
            decode(expected, bytes(blob), limits)
        except CandidError:
            pass
