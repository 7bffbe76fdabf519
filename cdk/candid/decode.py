"""Candid bytes to Python values at the types the receiver expects.

The type table is read from the wire and checked, then each value is decoded at its expected
type with the spec's coercions: extra arguments and record fields are skipped (and still
checked), missing opt/null/reserved ones become None, nat widens to int, anything is read as
`reserved`, and under `opt` a value that does not coerce becomes None. Func and service
references additionally need their wire type to be a subtype of the expected one.

Work and memory are bounded for hostile input by `DecodeLimits`: every value decoded or skipped
costs one unit of `max_values` (a blob costs one), vectors must fit in the remaining bytes before
any element is read (zero-sized elements must fit in the remaining budget instead), nesting is
bounded by `max_depth`, and LEB128 numbers by their length.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cdk.candid.encode import FIXED_WIDTH, MAGIC
from cdk.candid.errors import CandidError, CandidMismatchError
from cdk.candid.subtype import is_subtype
from cdk.candid.types import (
    FUNC_MODES,
    PRIMITIVES,
    Field,
    Func,
    FuncRef,
    Opt,
    Primitive,
    Record,
    Recursive,
    Service,
    Some,
    Type,
    Variant,
    Vec,
    is_nullable,
    render,
    resolve,
)
from cdk.principal import MAX_LENGTH as PRINCIPAL_MAX_LENGTH
from cdk.principal import Principal

_BY_OPCODE = {p.opcode: p for p in PRIMITIVES.values()}
_OPT, _VEC, _RECORD, _VARIANT, _FUNC, _SERVICE = -18, -19, -20, -21, -22, -23
_CONSTRUCTORS = {_OPT: "opt", _VEC: "vec", _RECORD: "record", _VARIANT: "variant", _FUNC: "func", _SERVICE: "service"}
_FUTURE_BELOW = -24  # codes below the last defined one (principal) are types of later Candid versions
_MODES_BY_BYTE = {byte: name for name, byte in FUNC_MODES.items()}
_STRUCTS = {name: struct.Struct("<" + code) for name, code in FIXED_WIDTH.items()}
_MIN_PRIMITIVE_SIZE = {"null": 0, "reserved": 0, "empty": 0, "bool": 1, "nat": 1, "int": 1, "text": 1,
                       "principal": 2, **{name: s.size for name, s in _STRUCTS.items()}}
_BIGNUM_HINT = " (raise DecodeLimits.max_bignum_bytes if such numbers are legitimate)"
_U32 = 1 << 32
_U64 = 1 << 64


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on the work one message may cause. The defaults admit any sane message of up to 10 MiB."""

    max_depth: int = 128            # nesting of values and types (Python's stack needs ~3 frames a level)
    max_values: int = 1 << 22       # values decoded or skipped; a blob counts as one
    max_bignum_bytes: int = 1024    # LEB128 bytes of one nat or int (7168 bits)
    max_type_entries: int = 10_000  # entries in the type table


@dataclass(frozen=True, eq=False)
class Future(Type):
    """A type of a later Candid version, known only by its code; its values can only be skipped."""

    opcode: int

    @property
    def name(self) -> str:
        return f"<future type {self.opcode}>"


def decode(types: Sequence[Type], data: bytes, limits: DecodeLimits = DecodeLimits()) -> list[Any]:
    """Decode the arguments of a Candid message at the expected `types`; one value per type."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CandidError(f"decode takes the message as bytes, got {type(data).__name__}")
    types = tuple(types)
    for i, t in enumerate(types):
        if not isinstance(t, Type):
            raise CandidError(f"expected type {i} must be a Candid type (e.g. T.nat), got {t!r}")
    try:
        return _Decoder(bytes(data), limits).arguments(types)
    except RecursionError:  # only if the caller's own stack was already deep: the depth limit comes first
        raise CandidError(f"the message nests too deeply for the Python stack left to decode it; lower "
                          f"DecodeLimits.max_depth (now {limits.max_depth}) or decode nearer the top") from None


class _Decoder:
    def __init__(self, data: bytes, limits: DecodeLimits) -> None:
        self.data = data
        self.pos = 0
        self.limits = limits
        self.budget = limits.max_values
        self.min_sizes: dict[int, int] = {}
        self.subtypes: dict[tuple[int, int], bool] = {}

    # --- errors -------------------------------------------------------------------------------

    def fail(self, problem: str, offset: int | None = None) -> CandidError:
        return CandidError(problem, offset=self.pos if offset is None else offset)

    def mismatch(self, problem: str) -> CandidMismatchError:
        return CandidMismatchError(problem, offset=self.pos)

    def over_budget(self) -> CandidError:
        return self.fail(f"the message holds more than {self.limits.max_values} values; refusing to decode "
                         "it (raise DecodeLimits.max_values if it is legitimate)")

    def too_deep(self) -> CandidError:
        return self.fail(f"values nest deeper than {self.limits.max_depth} levels; refusing to decode it "
                         "(raise DecodeLimits.max_depth if it is legitimate)")

    # --- reading ------------------------------------------------------------------------------

    def take(self, n: int, what: str) -> bytes:
        start = self.pos
        end = start + n
        if end > len(self.data):
            raise self.fail(f"{what} needs {n} bytes but only {len(self.data) - start} remain")
        self.pos = end
        return self.data[start:end]

    def byte(self, what: str) -> int:
        try:
            value = self.data[self.pos]
        except IndexError:
            raise self.fail(f"{what}: the message ends here") from None
        self.pos += 1
        return value

    def leb(self, what: str, max_bytes: int = 10, bound: int = _U64, hint: str = "") -> int:
        """An unsigned LEB128 number; sizes, counts and ids are bounded to 64 bits (10 bytes)."""
        data, start = self.data, self.pos
        try:
            byte = data[start]
        except IndexError:
            raise self.fail(f"{what}: the message ends here") from None
        if byte < 0x80:
            self.pos = start + 1
            return byte
        result = shift = 0
        pos = start
        while True:
            if pos - start >= max_bytes:
                raise self.fail(f"{what}: LEB128 number longer than {max_bytes} bytes{hint}", start)
            try:
                byte = data[pos]
            except IndexError:
                raise self.fail(f"{what}: LEB128 number runs past the end of the message", start) from None
            result |= (byte & 0x7F) << shift
            pos += 1
            shift += 7
            if byte < 0x80:
                break
        if result >= bound:
            raise self.fail(f"{what}: {result} is out of range (at most {bound - 1})", start)
        self.pos = pos
        return result

    def sleb(self, what: str, max_bytes: int = 10, hint: str = "") -> int:
        data, start = self.data, self.pos
        result = shift = 0
        pos = start
        while True:
            if pos - start >= max_bytes:
                raise self.fail(f"{what}: LEB128 number longer than {max_bytes} bytes{hint}", start)
            try:
                byte = data[pos]
            except IndexError:
                raise self.fail(f"{what}: LEB128 number runs past the end of the message", start) from None
            result |= (byte & 0x7F) << shift
            pos += 1
            shift += 7
            if byte < 0x80:
                break
        if byte & 0x40:
            result -= 1 << shift
        self.pos = pos
        return result

    def count(self, what: str, min_item_size: int) -> int:
        """A count of items that each take at least `min_item_size` bytes of what remains."""
        start = self.pos
        n = self.leb(what)
        if n * min_item_size > len(self.data) - self.pos:
            raise self.fail(f"{what} is {n}, but only {len(self.data) - self.pos} bytes remain", start)
        return n

    def text(self, what: str) -> str:
        n = self.leb(f"length of {what}")
        start = self.pos
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} is not valid UTF-8 ({e.reason})", start + e.start) from None

    def principal(self) -> Principal:
        start = self.pos
        tag = self.byte("principal reference")
        if tag != 1:
            raise self.fail(f"a principal reference must be tagged 1 (an id), got {tag} "
                            "(0 is an opaque reference, which has no use between canisters)", start)
        n = self.leb("principal length")
        if n > PRINCIPAL_MAX_LENGTH:
            raise self.fail(f"a principal has at most {PRINCIPAL_MAX_LENGTH} bytes, this one claims {n}")
        return Principal(self.take(n, "principal"))

    def func_ref(self) -> FuncRef:
        start = self.pos
        tag = self.byte("func reference")
        if tag != 1:
            raise self.fail(f"a func reference must be tagged 1, got {tag} (0 is an opaque reference)", start)
        service = self.principal()
        return FuncRef(service, self.text("method name"))

    def nat(self) -> int:
        data, start = self.data, self.pos
        try:
            byte = data[start]
        except IndexError:
            raise self.fail("nat: the message ends here") from None
        if byte < 0x80:
            self.pos = start + 1
            return byte
        return self.leb("nat", self.limits.max_bignum_bytes, 1 << (7 * self.limits.max_bignum_bytes), _BIGNUM_HINT)

    def int(self) -> int:
        return self.sleb("int", self.limits.max_bignum_bytes, _BIGNUM_HINT)

    def primitive_value(self, name: str) -> Any:
        packer = _STRUCTS.get(name)
        if packer is not None:
            start = self.pos
            end = start + packer.size
            if end > len(self.data):
                raise self.fail(f"{name} needs {packer.size} bytes but only {len(self.data) - start} remain")
            self.pos = end
            return packer.unpack_from(self.data, start)[0]
        if name == "nat":
            return self.nat()
        if name == "int":
            return self.int()
        if name == "text":
            return self.text("text")
        if name == "bool":
            start = self.pos
            flag = self.byte("bool")
            if flag > 1:
                raise self.fail(f"bool must be 0 or 1, got {flag}", start)
            return flag == 1
        if name == "principal":
            return self.principal()
        if name == "empty":
            raise self.fail("the message claims a value of type empty, which has no values")
        return None  # null and reserved take no bytes

    # --- the type table -----------------------------------------------------------------------

    def arguments(self, expected: tuple[Type, ...]) -> list[Any]:
        wire = self.header()
        values = []
        for i, t in enumerate(expected):
            try:
                if i < len(wire):
                    values.append(self.value(wire[i], t, 0))
                elif is_nullable(t):
                    values.append(None)
                else:
                    raise self.mismatch(f"the message has {len(wire)} arguments, and argument {i} of type {t} "
                                        "is not optional")
            except CandidError as e:
                e.path.insert(0, f"arg {i}")
                raise
        for i in range(len(expected), len(wire)):
            try:
                self.skip(wire[i], 0)
            except CandidError as e:
                e.path.insert(0, f"extra arg {i}")
                raise
        if self.pos != len(self.data):
            raise self.fail(f"{len(self.data) - self.pos} bytes are left over after the last argument")
        return values

    def header(self) -> list[Type]:
        """Read and check the type table and the argument types; `what` strings stay constant here
        because this runs for every message, and the entry or argument goes into the error's path."""
        if self.data[:4] != MAGIC:
            raise self.fail(f"not a Candid message: it must start with b'DIDL', got {self.data[:4]!r}", 0)
        self.pos = 4
        n = self.count("type table length", 1)
        if n > self.limits.max_type_entries:
            raise self.fail(f"the type table has {n} entries, over the limit of {self.limits.max_type_entries} "
                            "(raise DecodeLimits.max_type_entries if it is legitimate)")
        knots = [Recursive(f"table[{i}]") for i in range(n)]
        services = []
        for index, knot in enumerate(knots):
            start = self.pos
            try:
                entry = self.table_entry(knots)
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
        for i in range(self.count("argument count", 1)):
            try:
                args.append(self.type_ref(knots, "the argument"))
            except CandidError as e:
                e.path.insert(0, f"type of arg {i}")
                raise
        return args

    def type_ref(self, knots: list[Recursive], what: str) -> Type:
        start = self.pos
        code = self.sleb(f"type of {what}")
        if code >= 0:
            if code >= len(knots):
                raise self.fail(f"the type of {what} is table entry {code}, but the table has {len(knots)}", start)
            return knots[code]
        primitive = _BY_OPCODE.get(code)
        if primitive is not None:
            return primitive
        if code in _CONSTRUCTORS:
            raise self.fail(f"the type of {what} is an inline {_CONSTRUCTORS[code]}; constructed types must "
                            "be table entries", start)
        raise self.fail(f"the type of {what} has the unknown code {code}", start)

    def table_entry(self, knots: list[Recursive]) -> Type:
        start = self.pos
        code = self.sleb("type code")
        if code == _OPT:
            return Opt(self.type_ref(knots, "the opt"))
        if code == _VEC:
            return Vec(self.type_ref(knots, "the vec"))
        if code == _RECORD or code == _VARIANT:
            kind = _CONSTRUCTORS[code]
            fields = []
            previous = -1
            for _ in range(self.count("field count", 2)):
                field_start = self.pos
                field_id = self.leb("field id", bound=_U32)
                if field_id <= previous:
                    raise self.fail(f"{kind} fields must have strictly increasing ids "
                                    f"({field_id} follows {previous})", field_start)
                previous = field_id
                fields.append(Field(field_id, self.type_ref(knots, "a field")))
            return Record(tuple(fields)) if code == _RECORD else Variant(tuple(fields))
        if code == _FUNC:
            args = tuple(self.type_ref(knots, "a func argument") for _ in range(self.count("argument count", 1)))
            rets = tuple(self.type_ref(knots, "a func result") for _ in range(self.count("result count", 1)))
            modes = set()
            for _ in range(self.count("annotation count", 1)):
                byte = self.byte("func annotation")
                if byte not in _MODES_BY_BYTE:
                    raise self.fail(f"unknown func annotation {byte}", self.pos - 1)
                modes.add(_MODES_BY_BYTE[byte])
            return Func(args, rets, frozenset(modes))
        if code == _SERVICE:
            methods = []
            for _ in range(self.count("method count", 2)):
                name_start = self.pos
                name = self.text("method name")
                if methods and name <= methods[-1][0]:
                    raise self.fail("service methods must be sorted by name without repeats "
                                    f"({name!r} follows {methods[-1][0]!r})", name_start)
                methods.append((name, self.type_ref(knots, f"method {name!r}")))
            return Service(tuple(methods))
        if code < _FUTURE_BELOW:
            self.take(self.leb("length of a future type"), "future type")
            return Future(code)
        if code >= 0:
            raise self.fail(f"a reference to entry {code} where a type constructor (opt, vec, record, variant, "
                            "func, service) must start the entry", start)
        raise self.fail(f"the primitive type {_BY_OPCODE[code].name} is in the type table; primitives are used "
                        "in place and never appear there", start)

    def min_size(self, t: Type, depth: int = 0) -> int:
        """A lower bound on the bytes a value of wire type `t` takes."""
        t = resolve(t)
        size = self.min_sizes.get(id(t))
        if size is not None:
            return size
        if depth > self.limits.max_depth:
            return 0  # a lower bound need not be tight
        self.min_sizes[id(t)] = 0  # a cycle back to t adds nothing: still a lower bound
        if isinstance(t, Primitive):
            size = _MIN_PRIMITIVE_SIZE[t.name]
        elif isinstance(t, Record):
            size = sum(self.min_size(f.type, depth + 1) for f in t.fields)
        elif isinstance(t, Future):
            size = 2
        else:
            size = 1  # opt tag, vec length, variant index, reference tag
        self.min_sizes[id(t)] = size
        return size

    # --- values -------------------------------------------------------------------------------

    def value(self, wire: Type, expected: Type, depth: int) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise self.over_budget()
        while type(wire) is Recursive:
            wire = wire.target
        while type(expected) is Recursive:
            expected = expected.target
        kind = type(expected)
        if kind is Primitive:
            return self.primitive_at(wire, expected, depth)
        if depth >= self.limits.max_depth:
            raise self.too_deep()
        reader = _COMPOSITE_READERS.get(kind)
        if reader is None:
            raise CandidError(f"cannot decode at {expected!r}: it is not a Candid type")
        return reader(self, wire, expected, depth + 1)

    def primitive_at(self, wire: Type, expected: Primitive, depth: int) -> Any:
        if type(wire) is Primitive:
            if wire.opcode == expected.opcode:
                return self.primitive_value(expected.name)
            if expected.name == "int" and wire.name == "nat":
                return self.nat()
        if expected.name == "reserved":
            self.skip(wire, depth)
            return None
        if expected.name == "principal" and type(wire) is Service:
            return self.principal()  # a service reference is a principal on the wire
        raise self.mismatch(f"expected {expected}, the message has {render(wire, 3)}")

    def opt_at(self, wire: Type, expected: Opt, depth: int) -> Any:
        kind = type(wire)
        if kind is Primitive and wire.name in ("null", "reserved"):
            return None
        if kind is Opt:
            start = self.pos
            flag = self.byte("opt tag")
            if flag == 0:
                return None
            if flag != 1:
                raise self.fail(f"an opt tag must be 0 or 1, got {flag}", start)
            return self.coerce_present(wire.inner, expected.inner, depth)
        # Spec: any other value v decodes at `opt T` as `opt v` would. At a recursive `opt` such as
        # `type Opt = opt Opt` that regresses forever; the depth limit ends it with an error, which
        # (unlike a mismatch) no enclosing opt turns into null, as the suite requires.
        return self.coerce_present(wire, expected.inner, depth)

    def coerce_present(self, wire: Type, expected: Type, depth: int) -> Any:
        start = self.pos
        try:
            value = self.value(wire, expected, depth)
        except CandidMismatchError:
            self.pos = start  # the spec's coercion gives null; the data must still be well-formed
            self.skip(wire, depth)
            return None
        return Some(value) if is_nullable(expected) else value

    def vec_at(self, wire: Type, expected: Vec, depth: int) -> Any:
        if type(wire) is not Vec:
            raise self.mismatch(f"expected {render(expected, 3)}, the message has {render(wire, 3)}")
        wire_inner, expected_inner = resolve(wire.inner), resolve(expected.inner)
        n = self.vector_length(wire_inner)
        if type(wire_inner) is Primitive and type(expected_inner) is Primitive:
            name = expected_inner.name
            if wire_inner.opcode == expected_inner.opcode and name in _STRUCTS:
                return self.fixed_vector(name, n)
        values: list[Any] = []
        append = values.append
        try:
            for _ in range(n):
                append(self.value(wire_inner, expected_inner, depth))
        except CandidError as e:
            e.path.insert(0, f"[{len(values)}]")
            raise
        return values

    def vector_length(self, wire_inner: Type) -> int:
        start = self.pos
        n = self.leb("vector length")
        size = self.min_size(wire_inner)
        if size == 0:
            if n > self.budget:
                raise self.fail(f"a vector of {n} zero-sized elements exceeds what is left ({self.budget}) of the "
                                f"decoding budget of {self.limits.max_values} values (DecodeLimits.max_values)", start)
        elif n * size > len(self.data) - self.pos:
            raise self.fail(f"a vector of {n} elements of type {render(wire_inner, 2)} needs at least "
                            f"{n * size} bytes, but only {len(self.data) - self.pos} remain", start)
        return n

    def fixed_vector(self, name: str, n: int) -> bytes | list[Any]:
        """A vector of fixed-width numbers in one C call: a blob as bytes, others as a list."""
        start = self.pos
        if name == "nat8":
            self.pos = start + n
            return self.data[start:self.pos]
        self.budget -= n
        if self.budget < 0:
            raise self.over_budget()
        self.pos = start + n * _STRUCTS[name].size
        return list(struct.unpack_from(f"<{n}{FIXED_WIDTH[name]}", self.data, start))

    def record_at(self, wire: Type, expected: Record, depth: int) -> dict[str | int, Any]:
        if type(wire) is not Record:
            raise self.mismatch(f"expected {render(expected, 3)}, the message has {render(wire, 3)}")
        wanted = expected.by_id
        result: dict[str | int, Any] = {}
        for wire_field in wire.fields:
            field = wanted.get(wire_field.id)
            if field is None:
                self.skip(wire_field.type, depth)
                continue
            try:
                result[field.key] = self.value(wire_field.type, field.type, depth)
            except CandidError as e:
                e.path.insert(0, f".{field.key}")
                raise
        if len(result) < len(expected.fields):
            for field in expected.fields:
                if field.key not in result:
                    if not is_nullable(field.type):
                        raise self.mismatch(f"the record in the message has no field {field.label} "
                                            f"(of type {render(field.type, 3)})")
                    result[field.key] = None
        return result

    def variant_at(self, wire: Type, expected: Variant, depth: int) -> dict[str | int, Any]:
        if type(wire) is not Variant:
            raise self.mismatch(f"expected {render(expected, 3)}, the message has {render(wire, 3)}")
        start = self.pos
        index = self.leb("variant index")
        if index >= len(wire.fields):
            raise self.fail(f"variant index {index} is out of range: the variant has {len(wire.fields)} cases",
                            start)
        wire_field = wire.fields[index]
        field = expected.by_id.get(wire_field.id)
        if field is None:
            raise self.mismatch(f"the message holds variant case with id {wire_field.id}, which {render(expected, 3)} "
                                "does not have")
        try:
            return {field.key: self.value(wire_field.type, field.type, depth)}
        except CandidError as e:
            e.path.insert(0, f".{field.key}")
            raise

    def reference_at(self, wire: Type, expected: Func | Service, depth: int) -> Any:
        if type(wire) is not type(expected):
            raise self.mismatch(f"expected {render(expected, 3)}, the message has {render(wire, 3)}")
        key = (id(wire), id(expected))
        holds = self.subtypes.get(key)
        if holds is None:
            holds = self.subtypes[key] = is_subtype(wire, expected, self.limits.max_depth)
        if not holds:
            raise self.mismatch(f"the message's {render(wire, 3)} is not a subtype of {render(expected, 3)}")
        return self.func_ref() if type(expected) is Func else self.principal()

    def skip(self, wire: Type, depth: int) -> None:
        """Read past a value of `wire` type, checking it as thoroughly as decoding would."""
        self.budget -= 1
        if self.budget < 0:
            raise self.over_budget()
        while type(wire) is Recursive:
            wire = wire.target
        kind = type(wire)
        if kind is Primitive:
            self.primitive_value(wire.name)
            return
        if depth >= self.limits.max_depth:
            raise self.too_deep()
        depth += 1
        if kind is Opt:
            start = self.pos
            flag = self.byte("opt tag")
            if flag > 1:
                raise self.fail(f"an opt tag must be 0 or 1, got {flag}", start)
            if flag:
                self.skip(wire.inner, depth)
        elif kind is Vec:
            inner = resolve(wire.inner)
            n = self.vector_length(inner)
            if type(inner) is Primitive and inner.name in _STRUCTS:
                self.pos += n * _STRUCTS[inner.name].size  # vector_length checked that they are there
            else:
                for _ in range(n):
                    self.skip(inner, depth)
        elif kind is Record:
            for field in wire.fields:
                self.skip(field.type, depth)
        elif kind is Variant:
            start = self.pos
            index = self.leb("variant index")
            if index >= len(wire.fields):
                raise self.fail(f"variant index {index} is out of range: the variant has {len(wire.fields)} "
                                "cases", start)
            self.skip(wire.fields[index].type, depth)
        elif kind is Func:
            self.func_ref()
        elif kind is Service:
            self.principal()
        else:  # Future: data length, reference count (references travel elsewhere), then the data
            n = self.leb("length of a future-type value")
            self.leb("reference count of a future-type value")
            self.take(n, "future-type value")


_COMPOSITE_READERS: dict[type, Callable[[_Decoder, Type, Any, int], Any]] = {
    Opt: _Decoder.opt_at, Vec: _Decoder.vec_at, Record: _Decoder.record_at, Variant: _Decoder.variant_at,
    Func: _Decoder.reference_at, Service: _Decoder.reference_at,
}
