"""The type table of a Candid message, read from the wire into checked types.

Each entry becomes a `Recursive` knot, so entries may refer to each other in any order; the
checks are the spec's: constructors only in the table, primitives only in place, field ids
strictly increasing and below 2**32, method names sorted and unique, methods of func type.
"""

from __future__ import annotations

from dataclasses import dataclass

from cdk.candid.encode import MAGIC
from cdk.candid.errors import CandidError
from cdk.candid.reader import U32, Reader
from cdk.candid.types import (
    FUNC_MODES,
    PRIMITIVES,
    Field,
    Func,
    Opt,
    Record,
    Recursive,
    Service,
    Type,
    Variant,
    Vec,
    render,
    resolve,
)

_BY_OPCODE = {p.opcode: p for p in PRIMITIVES.values()}
_OPT, _VEC, _RECORD, _VARIANT, _FUNC, _SERVICE = -18, -19, -20, -21, -22, -23
_CONSTRUCTORS = {_OPT: "opt", _VEC: "vec", _RECORD: "record", _VARIANT: "variant", _FUNC: "func", _SERVICE: "service"}
_FUTURE_BELOW = -24  # codes below the last defined one (principal) are types of later Candid versions
_MODES_BY_BYTE = {byte: name for name, byte in FUNC_MODES.items()}


@dataclass(frozen=True, eq=False)
class Future(Type):
    """A type of a later Candid version, known only by its code; its values can only be skipped."""

    opcode: int

    @property
    def name(self) -> str:
        return f"<future type {self.opcode}>"


def read_header(reader: Reader) -> list[Type]:
    """Read and check the type table and the argument types; `what` strings stay constant here
    because this runs for every message, and the entry or argument goes into the error's path."""
    if reader.data[:4] != MAGIC:
        raise reader.fail(f"not a Candid message: it must start with b'DIDL', got {reader.data[:4]!r}", 0)
    reader.pos = 4
    n = reader.count("type table length", 1)
    if n > reader.limits.max_type_entries:
        raise reader.fail(f"the type table has {n} entries, over the limit of {reader.limits.max_type_entries} "
                          "(raise DecodeLimits.max_type_entries if it is legitimate)")
    knots = [Recursive(f"table[{i}]") for i in range(n)]
    services = []
    for index, knot in enumerate(knots):
        start = reader.pos
        try:
            entry = _table_entry(reader, knots)
        except CandidError as e:
            e.path.insert(0, f"type table entry {index}")
            raise
        knot.define(entry)
        if type(entry) is Service:
            services.append((index, start, entry))
    for index, start, service in services:
        for name, method in service.methods:
            if type(resolve(method)) is not Func:
                raise CandidError(f"service method {name!r} must refer to a func type, not {render(method)}",
                                  offset=start, path=[f"type table entry {index}"])
    args = []
    for i in range(reader.count("argument count", 1)):
        try:
            args.append(_type_ref(reader, knots, "the argument"))
        except CandidError as e:
            e.path.insert(0, f"type of arg {i}")
            raise
    return args


def _type_ref(reader: Reader, knots: list[Recursive], what: str) -> Type:
    start = reader.pos
    code = reader.sleb(f"type of {what}")
    if code >= 0:
        if code >= len(knots):
            raise reader.fail(f"the type of {what} is table entry {code}, but the table has {len(knots)}", start)
        return knots[code]
    primitive = _BY_OPCODE.get(code)
    if primitive is not None:
        return primitive
    if code in _CONSTRUCTORS:
        raise reader.fail(f"the type of {what} is an inline {_CONSTRUCTORS[code]}; constructed types must "
                          "be table entries", start)
    raise reader.fail(f"the type of {what} has the unknown code {code}", start)


def _table_entry(reader: Reader, knots: list[Recursive]) -> Type:
    start = reader.pos
    code = reader.sleb("type code")
    if code == _OPT:
        return Opt(_type_ref(reader, knots, "the opt"))
    if code == _VEC:
        return Vec(_type_ref(reader, knots, "the vec"))
    if code == _RECORD or code == _VARIANT:
        kind = _CONSTRUCTORS[code]
        fields = []
        previous = -1
        for _ in range(reader.count("field count", 2)):
            field_start = reader.pos
            field_id = reader.leb("field id", bound=U32)
            if field_id <= previous:
                raise reader.fail(f"{kind} fields must have strictly increasing ids "
                                  f"({field_id} follows {previous})", field_start)
            previous = field_id
            fields.append(Field(field_id, _type_ref(reader, knots, "a field")))
        return Record(tuple(fields)) if code == _RECORD else Variant(tuple(fields))
    if code == _FUNC:
        args = tuple(_type_ref(reader, knots, "a func argument") for _ in range(reader.count("argument count", 1)))
        rets = tuple(_type_ref(reader, knots, "a func result") for _ in range(reader.count("result count", 1)))
        modes = set()
        for _ in range(reader.count("annotation count", 1)):
            byte = reader.byte("func annotation")
            if byte not in _MODES_BY_BYTE:
                raise reader.fail(f"unknown func annotation {byte}", reader.pos - 1)
            modes.add(_MODES_BY_BYTE[byte])
        return Func(args, rets, frozenset(modes))
    if code == _SERVICE:
        methods = []
        for _ in range(reader.count("method count", 2)):
            name_start = reader.pos
            name = reader.text("method name")
            if methods and name <= methods[-1][0]:
                raise reader.fail("service methods must be sorted by name without repeats "
                                  f"({name!r} follows {methods[-1][0]!r})", name_start)
            methods.append((name, _type_ref(reader, knots, f"method {name!r}")))
        return Service(tuple(methods))
    if code < _FUTURE_BELOW:
        reader.take(reader.leb("length of a future type"), "future type")
        return Future(code)
    if code >= 0:
        raise reader.fail(f"a reference to entry {code} where a type constructor (opt, vec, record, variant, "
                          "func, service) must start the entry", start)
    raise reader.fail(f"the primitive type {_BY_OPCODE[code].name} is in the type table; primitives are used "
                      "in place and never appear there", start)
