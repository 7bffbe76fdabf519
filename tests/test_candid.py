"""The Candid codec: bytes checked against the official suite's blobs and icp-py-core's encoder,
the Python value mapping, decoding at supertypes, errors, and .did parsing."""

from __future__ import annotations

import array
import math

import pytest
from icp_candid.candid import Types
from icp_candid.candid import decode as reference_decode
from icp_candid.candid import encode as reference_encode

from cdk.candid import (
    CandidError,
    CandidMismatchError,
    FuncRef,
    Some,
    T,
    decode,
    encode,
    idl_hash,
    parse_did,
)
from cdk.principal import Principal

# --- bytes, against outside references ----------------------------------------------------------

@pytest.mark.parametrize(("types", "values", "blob"), [
    # each blob is one from the official suite, with the value its textual side gives
    ([T.nat], [60000000000000000], b"DIDL\x00\x01\x7d\x80\x80\x98\xf4\xe9\xb5\xca\x6a"),
    ([T.int], [-60000000000000000], b"DIDL\x00\x01\x7c\x80\x80\xe8\x8b\x96\xca\xb5\x95\x7f"),
    ([T.int], [-64], b"DIDL\x00\x01\x7c\x40"),
    ([T.nat16], [256], b"DIDL\x00\x01\x7a\x00\x01"),
    ([T.int64], [-1], b"DIDL\x00\x01\x74" + b"\xff" * 8),
    ([T.float32], [-0.5], b"DIDL\x00\x01\x73\x00\x00\x00\xbf"),
    ([T.float64], [3.0], b"DIDL\x00\x01\x72\x00\x00\x00\x00\x00\x00\x08\x40"),
    ([T.text], ["☃"], b"DIDL\x00\x01\x71\x03\xe2\x98\x83"),
    ([T.opt(T.int)], [42], b"DIDL\x01\x6e\x7c\x01\x00\x01\x2a"),
    ([T.opt(T.opt(T.int))], [Some(42)], b"DIDL\x02\x6e\x01\x6e\x7c\x01\x00\x01\x01\x2a"),
    ([T.vec(T.int)], [[1, 2]], b"DIDL\x01\x6d\x7c\x01\x00\x02\x01\x02"),
    ([T.blob], [b"\x01\x02"], b"DIDL\x01\x6d\x7b\x01\x00\x02\x01\x02"),
    ([T.record({"foo": T.int, "bar": T.bool})], [{"foo": 42, "bar": True}],
     b"DIDL\x01\x6c\x02\xd3\xe3\xaa\x02\x7e\x86\x8e\xb7\x02\x7c\x01\x00\x01\x2a"),
    ([T.tuple(T.int, T.bool)], [(42, True)], b"DIDL\x01\x6c\x02\x00\x7c\x01\x7e\x01\x00\x2a\x01"),
    ([T.variant({"Ok": T.text, "Err": T.text})], [{"Ok": "good"}],
     b"DIDL\x01\x6b\x02\xbc\x8a\x01\x71\xc5\xfe\xd2\x01\x71\x01\x00\x00\x04good"),
    ([T.variant({"Foo": None, "Bar": None})], [{"Bar": None}],
     b"DIDL\x01\x6b\x02\xb3\xd3\xc9\x01\x7f\xe6\xfd\xd5\x01\x7f\x01\x00\x00"),
    ([T.principal], [Principal.from_text("w7x7r-cok77-xa")], b"DIDL\x00\x01\x68\x01\x03\xca\xff\xee"),
    ([T.func([T.text], [T.nat], ["query"])], [FuncRef(Principal.from_text("w7x7r-cok77-xa"), "foo")],
     b"DIDL\x01\x6a\x01\x71\x01\x7d\x01\x01\x01\x00\x01\x01\x03\xca\xff\xee\x03foo"),
    ([T.service({})], [Principal.from_text("w7x7r-cok77-xa")], b"DIDL\x01\x69\x00\x01\x00\x01\x03\xca\xff\xee"),
    ([T.null, T.bool, T.nat, T.int, T.null, T.reserved, T.null, T.nat8, T.nat16, T.nat32],
     [None, True, 42, 42, None, None, None, 42, 42, 42],
     b"DIDL\x00\x0a\x7f\x7e\x7d\x7c\x7f\x70\x7f\x7b\x7a\x79\x01\x2a\x2a\x2a\x2a\x00\x2a\x00\x00\x00"),
])
def test_encoding_matches_the_suite_and_decodes_back(types, values, blob):
    assert encode(types, values) == blob
    assert decode(types, blob) == [dict(enumerate(v)) if isinstance(v, tuple) else v for v in values]


def test_bytes_agree_with_icp_py_core():
    ours = T.record({"prompt": T.text, "max_tokens": T.opt(T.nat32), "tokens": T.vec(T.nat32),
                     "status": T.variant({"ok": T.text, "err": None}), "temperature": T.float64, "seed": T.int,
                     "weights": T.blob})
    theirs = Types.Record({"prompt": Types.Text, "max_tokens": Types.Opt(Types.Nat32), "tokens": Types.Vec(Types.Nat32),
                           "status": Types.Variant({"ok": Types.Text, "err": Types.Null}),
                           "temperature": Types.Float64, "seed": Types.Int, "weights": Types.Vec(Types.Nat8)})
    value = {"prompt": "héllo ☃", "max_tokens": 7, "tokens": [1, 2, 300000], "status": {"err": None},
             "temperature": 0.7, "seed": -(10**20), "weights": bytes(range(256))}
    blob = encode([ours], [value])
    assert blob == reference_encode([{"type": theirs, "value": {**value, "max_tokens": [7]}}])
    assert reference_decode(blob, [theirs])[0]["value"] == {**value, "max_tokens": [7]}
    assert decode([ours], blob) == [value]


def test_idl_hash_matches_the_spec_examples():
    assert idl_hash("foo") == 5097222
    assert idl_hash("bar") == 4895187
    assert idl_hash("☃") == 11272781


# --- the Python value mapping -------------------------------------------------------------------

def test_blob_takes_any_bytes_like_and_decodes_to_bytes():
    floats = array.array("f", [1.0, -2.5])
    for value in (b"\x00\x00\x80\x3f\x00\x00\x20\xc0", bytearray(floats.tobytes()), memoryview(floats)):
        blob = encode([T.blob], [value])
        assert decode([T.blob], blob) == [floats.tobytes()]
    assert encode([T.blob], [[0, 0, 128, 63, 0, 0, 32, 192]]) == encode([T.blob], [floats.tobytes()])


def test_opt_of_a_type_without_none_is_the_bare_value():
    assert decode([T.opt(T.nat)], encode([T.opt(T.nat)], [5])) == [5]
    assert decode([T.opt(T.nat)], encode([T.opt(T.nat)], [None])) == [None]
    assert encode([T.opt(T.nat)], [Some(5)]) == encode([T.opt(T.nat)], [5])


@pytest.mark.parametrize(("t", "value"), [
    (T.opt(T.opt(T.nat)), Some(None)),
    (T.opt(T.opt(T.nat)), Some(3)),
    (T.opt(T.opt(T.nat)), None),
    (T.opt(T.null), Some(None)),
    (T.opt(T.null), None),
    (T.opt(T.reserved), Some(None)),
    (T.opt(T.opt(T.opt(T.bool))), Some(Some(False))),
])
def test_opt_of_a_type_with_none_wraps_present_values_in_some(t, value):
    assert decode([t], encode([t], [value])) == [value]


def test_opt_disambiguation_on_the_wire():
    opt_opt = T.opt(T.opt(T.nat))
    assert encode([opt_opt], [None]).endswith(b"\x00")           # absent
    assert encode([opt_opt], [Some(None)]).endswith(b"\x01\x00")  # present, holding an absent opt nat
    assert encode([opt_opt], [3]) == encode([opt_opt], [Some(Some(3))])


def test_records_variants_and_tuples():
    t = T.record({"name": T.text, 7: T.nat8, "note": T.opt(T.text), "mark": T.null})
    assert decode([t], encode([t], [{"name": "x", 7: 1}])) == [{"name": "x", 7: 1, "note": None, "mark": None}]
    pair = T.tuple(T.text, T.nat)
    assert decode([pair], encode([pair], [["a", 1]])) == [{0: "a", 1: 1}]
    result = T.variant({"ok": T.nat, "err": T.text})
    assert decode([result], encode([result], [{"err": "no"}])) == [{"err": "no"}]


def test_recursive_types_round_trip():
    tree = T.recursive("Tree")
    tree.define(T.variant({"leaf": T.nat, "node": T.record({"left": tree, "right": tree})}))
    value = {"node": {"left": {"leaf": 1}, "right": {"node": {"left": {"leaf": 2}, "right": {"leaf": 3}}}}}
    blob = encode([tree], [value])
    assert blob.startswith(b"DIDL\x02")  # one entry for the variant, one for the record: recursion by index
    assert decode([tree], blob) == [value]


def test_references_round_trip():
    service = Principal.from_canister_index(3)
    method = T.func([T.text], [T.nat], ["query"])
    assert decode([method], encode([method], [FuncRef(service, "m")])) == [FuncRef(service, "m")]
    actor = T.service({"m": method})
    assert decode([actor], encode([actor], [service])) == [service]
    assert decode([T.principal], encode([actor], [service])) == [service]  # service <: principal


def test_floats_round_trip_exactly():
    values = [0.0, -0.0, 1e-310, math.inf, -math.inf, 1.7976931348623157e308]
    assert decode([T.vec(T.float64)], encode([T.vec(T.float64)], [values])) == [values]
    assert math.isnan(decode([T.float32], encode([T.float32], [math.nan]))[0])


# --- decoding at other types (the spec's subtyping) ---------------------------------------------

def test_decoding_at_supertypes():
    old = T.record({"a": T.nat, "b": T.text, "c": T.vec(T.nat)})
    blob = encode([old, T.nat], [{"a": 1, "b": "x", "c": [1]}, 9])
    new = T.record({"a": T.int, "c": T.vec(T.int), "added": T.opt(T.text)})
    assert decode([new], blob) == [{"a": 1, "c": [1], "added": None}]   # field dropped, one added, nat <: int
    assert decode([old, T.nat, T.opt(T.nat)], blob)[2] is None          # a missing opt argument
    assert decode([T.reserved, T.reserved], blob) == [None, None]


def test_opt_coercion_gives_none_where_a_value_does_not_fit():
    blob = encode([T.opt(T.bool)], [True])
    assert decode([T.opt(T.nat)], blob) == [None]
    assert decode([T.opt(T.opt(T.bool))], encode([T.bool], [True])) == [Some(True)]  # bool read as opt bool
    enum = encode([T.variant({"a": None, "b": None})], [{"b": None}])
    assert decode([T.opt(T.variant({"a": None}))], enum) == [None]   # a case the receiver lacks


def test_mismatches_are_errors_that_say_where():
    blob = encode([T.record({"inner": T.vec(T.text)})], [{"inner": ["x", "y"]}])
    with pytest.raises(CandidMismatchError) as caught:
        decode([T.record({"inner": T.vec(T.nat)})], blob)
    assert str(caught.value).startswith("expected nat, the message has text (in arg 0.inner[0], at byte ")
    with pytest.raises(CandidMismatchError, match="has no field b"):
        decode([T.record({"b": T.nat})], encode([T.record({"a": T.nat})], [{"a": 1}]))
    with pytest.raises(CandidMismatchError, match=f"variant case with id {idl_hash('a')}, which variant"):
        decode([T.variant({"b": None})], encode([T.variant({"a": None})], [{"a": None}]))
    with pytest.raises(CandidMismatchError, match="argument 1 of type nat is not optional"):
        decode([T.nat, T.nat], encode([T.nat], [1]))


def test_decoding_reports_the_byte_offset():
    with pytest.raises(CandidError) as caught:
        decode([T.text], b"DIDL\x00\x01\x71\x03\xe2\x28\xa1")
    assert caught.value.offset == 8
    assert "not valid UTF-8" in str(caught.value) and "at byte 8" in str(caught.value)


def test_decode_refuses_what_is_not_bytes_or_not_a_type():
    with pytest.raises(CandidError, match="as bytes"):
        decode([T.nat], "DIDL")  # type: ignore[arg-type]
    with pytest.raises(CandidError, match="must be a Candid type"):
        decode(["nat"], b"DIDL\x00\x00")  # type: ignore[list-item]


# --- encoding errors ----------------------------------------------------------------------------

@pytest.mark.parametrize(("types", "values", "complaint"), [
    ([T.nat], [-1], "nat cannot be negative"),
    ([T.nat], [True], "nat takes an int, got bool"),
    ([T.nat], ["1"], "nat takes an int, got str"),
    ([T.nat8], [256], "256 is out of range for nat8"),
    ([T.int32], [2**31], "out of range for int32"),
    ([T.float32], [1e39], "out of range for float32"),
    ([T.float64], ["1.0"], "float64 takes a float"),
    ([T.text], [b"x"], "text takes a str"),
    ([T.text], ["\ud800"], "valid Unicode"),
    ([T.bool], [1], "bool takes True or False"),
    ([T.null], [0], "null takes None"),
    ([T.reserved], [1], "reserved takes None"),
    ([T.empty], [None], "no value has type empty"),
    ([T.principal], ["aaaaa-aa"], "Principal.from_text"),
    ([T.vec(T.nat)], [{1, 2}], "takes a list or tuple"),
    ([T.vec(T.nat)], [b"\x01"], "bytes encode only vec nat8"),
    ([T.vec(T.nat16)], [[1, 2, 70000]], r"out of range for nat16 \(in arg 0\[2\]\)"),
    ([T.vec(T.nat32)], [[1, "2"]], r"nat32 takes an int, got str '2' \(in arg 0\[1\]\)"),
    ([T.record({"a": T.nat})], [{}], "missing field 'a'"),
    ([T.record({"a": T.nat})], [{"a": 1, "b": 2}], "has no field 'b'"),
    ([T.record({"a": T.record({"b": T.nat})})], [{"a": {"b": -1}}], r"\(in arg 0\.a\.b\)"),
    ([T.tuple(T.nat, T.nat)], [(1,)], "takes 2 values, got 1"),
    ([T.variant({"a": None})], [{"a": None, "b": None}], "one entry"),
    ([T.variant({"a": None})], [{"c": None}], "has no case 'c'"),
    ([T.variant({"a": T.nat})], [{"a": "x"}], r"\(in arg 0\.a\)"),
    ([T.func([], [])], [Principal.anonymous()], "FuncRef"),
    ([T.nat], [], "1 types but 0 values"),
    (["nat"], [1], "needs a Candid type"),
])
def test_encoding_errors_say_what_and_where(types, values, complaint):
    with pytest.raises(CandidError, match=complaint):
        encode(types, values)


def test_type_construction_errors():
    with pytest.raises(CandidError, match="same id"):
        T.record({"a": T.nat, idl_hash("a"): T.text})
    with pytest.raises(CandidError, match="needs a Candid type"):
        T.vec("nat")  # type: ignore[arg-type]
    with pytest.raises(CandidError, match="unknown func modes"):
        T.func([], [], ["update"])
    knot = T.recursive("A")
    other = T.recursive("B")
    other.define(knot)
    with pytest.raises(CandidError, match="alias of itself"):
        knot.define(other)
    with pytest.raises(CandidError, match="never defined"):
        encode([T.recursive("Undefined")], [1])


def test_types_print_as_candid():
    t = T.record({"a": T.opt(T.vec(T.nat8)), 1: T.variant({"x": None}), "☃": T.func([T.text], [], ["query"])})
    assert str(t) == 'record { 1 : variant { x : null }; a : opt vec nat8; "☃" : func (text) -> () query }'


# --- .did files ---------------------------------------------------------------------------------

DID = """
type List = opt record { head : int; tail : List };
type Result = variant { ok : text; err : text };
type Callback = func (nat) -> (text) query;
type Peer = service { ping : () -> () oneway; call : Callback };
service : (init : record { owner : principal; name : text }) -> {
  generate : (record { prompt : text; max : opt nat32 }) -> (Result);
  walk : (List) -> (nat) query;
  nearby : (Peer) -> (vec Peer) composite_query;
  callback : Callback;
  "quoted name" : () -> ();
}
"""


def test_parse_did_methods_types_and_init():
    interface = parse_did(DID)
    assert set(interface.methods) == {"generate", "walk", "nearby", "callback", "quoted name"}
    generate = interface.methods["generate"]
    assert generate.args == (T.record({"prompt": T.text, "max": T.opt(T.nat32)}),)
    assert generate.rets == (interface.types["Result"],) and generate.modes == frozenset()
    assert interface.methods["walk"].is_query and interface.methods["nearby"].modes == {"composite_query"}
    assert interface.init_args == (T.record({"owner": T.principal, "name": T.text}),)
    assert interface.methods["quoted name"].args == ()


def test_parse_did_types_encode_and_decode():
    interface = parse_did(DID)
    walk = interface.methods["walk"]
    value = {"head": 1, "tail": {"head": 2, "tail": None}}
    assert decode(walk.args, encode(walk.args, [value])) == [value]
    peer = interface.methods["nearby"].args[0]
    assert decode([peer], encode([peer], [Principal.anonymous()])) == [Principal.anonymous()]


def test_parse_did_recovers_methods_declared_by_a_named_func_type():
    # ic_candid_parser reports `callback : Callback` as () -> (); the codec looks the name up
    method = parse_did(DID).methods["callback"]
    assert (method.args, method.rets, method.modes) == ((T.nat,), (T.text,), frozenset({"query"}))


@pytest.mark.parametrize(("source", "complaint"), [
    ("service : { f : (nat) -> (; }", "does not parse"),
    ("service : { f : (Missing) -> () }", "'Missing' is used .* but never defined"),
    ("type A = B; type B = A;", "alias of itself"),
    ("type R = record { a : int; a : nat };", "does not parse"),
])
def test_parse_did_errors(source, complaint):
    with pytest.raises(CandidError, match=complaint):
        parse_did(source)
