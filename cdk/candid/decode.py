"""Candid bytes to Python values at the types the receiver expects.

The type table is read and checked by wire_types.py, then each value is decoded at its expected
type with the spec's coercions: extra arguments and record fields are skipped (and still
checked), missing opt/null/reserved ones become None, nat widens to int, anything is read as
`reserved`, and under `opt` a value that does not coerce becomes None. Func and service
references additionally need their wire type to be a subtype of the expected one.

Work and memory are bounded for hostile input by `DecodeLimits`: every value decoded or skipped
costs one unit of a budget that grows with the message's length (min_values + values_per_byte
per byte, at most max_values), so the decoded value's size is bounded by the message's (a blob,
or a skipped vector of fixed-width numbers, costs one); a vector must fit in the remaining bytes
before any element is read, and a vector of zero-sized elements is charged its whole length at
once and decoded or skipped by reading one element, so its time does not grow with its count;
nesting is bounded by `max_depth`, and LEB128 numbers by their length. Vectors of bool, nat and
int whose elements each take one byte are read in one slice.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from cdk.candid.cache import HeaderCache, KnownHeader
from cdk.candid.encode import FIXED_WIDTH
from cdk.candid.errors import CandidError, CandidMismatchError
from cdk.candid.reader import STRUCTS, DecodeLimits, Reader
from cdk.candid.subtype import is_subtype
from cdk.candid.types import (
    Field,
    Func,
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
from cdk.candid.wire_types import Future, read_header

_DEFAULT_LIMITS = DecodeLimits()
_MIN_PRIMITIVE_SIZE = {"null": 0, "reserved": 0, "empty": 0, "bool": 1, "nat": 1, "int": 1, "text": 1,
                       "principal": 2, **{name: s.size for name, s in STRUCTS.items()}}


def decode(types: Sequence[Type], data: bytes, limits: DecodeLimits = _DEFAULT_LIMITS,
           cache: HeaderCache | None = None) -> list[Any]:
    """Decode the arguments of a Candid message at the expected `types`; one value per type. A
    `cache` reuses the parsed header of messages that start with one it has seen."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CandidError(f"decode takes the message as bytes, got {type(data).__name__}")
    types = tuple(types)
    for i, t in enumerate(types):
        if not isinstance(t, Type):
            raise CandidError(f"expected type {i} must be a Candid type (e.g. T.nat), got {t!r}")
    try:
        return _Decoder(bytes(data), limits, cache).arguments(types)
    except RecursionError:  # only if the caller's own stack was already deep: the depth limit comes first
        raise CandidError(f"the message nests too deeply for the Python stack left to decode it; lower "
                          f"DecodeLimits.max_depth (now {limits.max_depth}) or decode nearer the top") from None


class _Decoder(Reader):
    """Values at expected types, from a reader positioned after the type table."""

    def __init__(self, data: bytes, limits: DecodeLimits, cache: HeaderCache | None = None) -> None:
        super().__init__(data, limits)
        self.allowed = min(limits.max_values, limits.min_values + limits.values_per_byte * len(data))
        self.budget = self.allowed
        self.cache = cache
        self.min_sizes: dict[int, int] = {}
        self.subtypes: dict[tuple[int, int], bool] = {}
        self.record_plans: dict[tuple[int, int], Any] = {}

    # --- errors -------------------------------------------------------------------------------

    def mismatch(self, problem: str) -> CandidMismatchError:
        return CandidMismatchError(problem, offset=self.pos)

    def over_budget(self) -> CandidError:
        return self.fail(f"the message holds more than {self.allowed} values, the budget of a {len(self.data)}-byte "
                         "message; refusing to decode it (raise DecodeLimits.max_values, min_values or "
                         "values_per_byte if it is legitimate)")

    def charge(self, n: int) -> None:
        """Takes `n` values from the budget at once (a vector's elements)."""
        self.budget -= n
        if self.budget < 0:
            raise self.over_budget()

    def too_deep(self) -> CandidError:
        return self.fail(f"values nest deeper than {self.limits.max_depth} levels; refusing to decode it "
                         "(raise DecodeLimits.max_depth if it is legitimate)")

    # --- values -------------------------------------------------------------------------------

    def arguments(self, expected: tuple[Type, ...]) -> list[Any]:
        known = self.cache.known(expected, self.limits, self.data) if self.cache is not None else None
        if known is not None:
            wire, self.pos = known.wire, len(known.header)
            self.subtypes, self.min_sizes = known.subtypes, known.min_sizes
        else:
            wire = read_header(self)
            if self.cache is not None:
                self.cache.remember(expected, self.limits,
                                    KnownHeader(self.data[: self.pos], wire, self.subtypes, self.min_sizes))
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
            return self.coerce_present(wire.inner, expected.inner, depth) if self.opt_tag() else None
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
        if n and self.min_size(wire_inner) == 0:  # charged already; every element is the same
            try:
                first = self.value(wire_inner, expected_inner, depth)
            except CandidError as e:
                e.path.insert(0, "[0]")
                raise
            return [None] * n if first is None else [_fresh(first) for _ in range(n)]
        if type(wire_inner) is Primitive and type(expected_inner) is Primitive:
            name = expected_inner.name
            if wire_inner.opcode == expected_inner.opcode:
                if name in STRUCTS:
                    return self.fixed_vector(name, n)
                one_byte = self.one_byte_vector(name, n)
                if one_byte is not None:
                    return one_byte
        # The elements' share of the budget is charged at once, and each element is read by its
        # type's reader directly: the per-element work of `value` is done once for the vector.
        self.charge(n)
        while type(wire_inner) is Recursive:
            wire_inner = wire_inner.target
        kind = type(expected_inner)
        if kind is Primitive:
            if type(wire_inner) is Primitive and wire_inner.opcode == expected_inner.opcode:
                name = expected_inner.name
                read, args = (self.text, ("text",)) if name == "text" else (self.primitive_value, (name,))
            else:
                read, args = self.primitive_at, (wire_inner, expected_inner, depth)
        else:
            if depth >= self.limits.max_depth:
                raise self.too_deep()
            reader = _COMPOSITE_READERS.get(kind)
            if reader is None:
                raise CandidError(f"cannot decode at {expected_inner!r}: it is not a Candid type")
            read, args = reader.__get__(self), (wire_inner, expected_inner, depth + 1)
        values: list[Any] = []
        append = values.append
        try:
            for _ in range(n):
                append(read(*args))
        except CandidError as e:
            e.path.insert(0, f"[{len(values)}]")
            raise
        return values

    def opt_tag(self) -> bool:
        """Whether an opt value is present."""
        flag = self.byte("opt tag")
        if flag > 1:
            raise self.fail(f"an opt tag must be 0 or 1, got {flag}", self.pos - 1)
        return flag == 1

    def variant_case(self, wire: Variant) -> Field:
        """The case of the variant value here, as the wire's type lists it."""
        start = self.pos
        index = self.leb("variant index")
        if index >= len(wire.fields):
            raise self.fail(f"variant index {index} is out of range: the variant has {len(wire.fields)} cases",
                            start)
        return wire.fields[index]

    def vector_length(self, wire_inner: Type) -> int:
        start = self.pos
        n = self.leb("vector length")
        size = self.min_size(wire_inner)
        if size == 0:
            if n > self.budget:
                raise self.fail(f"a vector of {n} zero-sized elements exceeds what is left ({self.budget}) of the "
                                f"decoding budget of {self.allowed} values for a {len(self.data)}-byte message "
                                "(DecodeLimits)", start)
            self.budget -= max(0, n - 1)  # the one element read stands for the rest
        elif n * size > len(self.data) - self.pos:
            raise self.fail(f"a vector of {n} elements of type {render(wire_inner, 2)} needs at least "
                            f"{n * size} bytes, but only {len(self.data) - self.pos} remain", start)
        return n

    def one_byte_vector(self, name: str, n: int) -> list[Any] | None:
        """A vector of bool, nat or int whose elements all take one byte, in one slice (None if
        they do not: then they are read one by one)."""
        if name not in ("bool", "nat", "int") or n == 0:
            return None
        chunk = self.data[self.pos:self.pos + n]
        if len(chunk) < n or max(chunk) > (1 if name == "bool" else 0x7F):
            return None
        self.charge(n)
        self.pos += n
        if name == "bool":
            return list(map(bool, chunk))
        if name == "nat":
            return list(chunk)
        return [b - 0x80 if b & 0x40 else b for b in chunk]  # one-byte SLEB128: bit 6 is the sign

    def fixed_vector(self, name: str, n: int) -> bytes | list[Any]:
        """A vector of fixed-width numbers in one C call: a blob as bytes, others as a list."""
        start = self.pos
        if name == "nat8":
            self.pos = start + n
            return self.data[start:self.pos]
        self.charge(n)
        self.pos = start + n * STRUCTS[name].size
        return list(struct.unpack_from(f"<{n}{FIXED_WIDTH[name]}", self.data, start))

    def record_at(self, wire: Type, expected: Record, depth: int) -> dict[str | int, Any]:
        if type(wire) is not Record:
            raise self.mismatch(f"expected {render(expected, 3)}, the message has {render(wire, 3)}")
        plan = self.record_plans.get((id(wire), id(expected)))
        if plan is None:
            plan = self.record_plans[(id(wire), id(expected))] = self.record_plan(wire, expected)
        fields, absent = plan
        result: dict[str | int, Any] = {}
        key: str | int | None = None
        try:
            for key, wire_type, expected_type, primitive in fields:
                if key is None:
                    self.skip(wire_type, depth)
                elif primitive is not None:  # the same primitive on both sides: read it directly
                    self.budget -= 1
                    result[key] = self.primitive_value(primitive)
                else:
                    result[key] = self.value(wire_type, expected_type, depth)
        except CandidError as e:
            if key is not None:
                e.path.insert(0, f".{key}")
            raise
        if self.budget < 0:
            raise self.over_budget()
        for key in absent:
            result[key] = None
        return result

    def record_plan(self, wire: Record, expected: Record) -> tuple[list[tuple[Any, Type, Any, str | None]], list[Any]]:
        """How to read a record of `wire` type at `expected`: per wire field its key (None: skip
        it), types, and the primitive to read directly; then the absent fields that read as null."""
        wanted = expected.by_id
        fields: list[tuple[Any, Type, Any, str | None]] = []
        for wire_field in wire.fields:
            field = wanted.get(wire_field.id)
            if field is None:
                fields.append((None, wire_field.type, None, None))
                continue
            w, e = resolve(wire_field.type), resolve(field.type)
            same = type(w) is Primitive and type(e) is Primitive and w.opcode == e.opcode and e.name != "empty"
            fields.append((field.key, wire_field.type, field.type, e.name if same else None))
        present = {wire_field.id for wire_field in wire.fields}
        absent = []
        for field in expected.fields:
            if field.id not in present:
                if not is_nullable(field.type):
                    raise self.mismatch(f"the record in the message has no field {field.label} "
                                        f"(of type {render(field.type, 3)})")
                absent.append(field.key)
        return fields, absent

    def variant_at(self, wire: Type, expected: Variant, depth: int) -> dict[str | int, Any]:
        if type(wire) is not Variant:
            raise self.mismatch(f"expected {render(expected, 3)}, the message has {render(wire, 3)}")
        data, pos, cases = self.data, self.pos, wire.fields
        if pos < len(data) and data[pos] < len(cases):  # a one-byte index in range: the usual case
            wire_field, self.pos = cases[data[pos]], pos + 1
        else:
            wire_field = self.variant_case(wire)
        field = expected.by_id.get(wire_field.id)
        if field is None:
            raise self.mismatch(f"the message holds variant case with id {wire_field.id}, which {render(expected, 3)} "
                                "does not have")
        if type(field.type) is Primitive and field.type.name == "null" and type(wire_field.type) is Primitive \
                and wire_field.type.name == "null":
            self.budget -= 1  # an enumeration's case: nothing to read
            return {field.key: None}
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
            if self.opt_tag():
                self.skip(wire.inner, depth)
        elif kind is Vec:
            inner = resolve(wire.inner)
            n = self.vector_length(inner)
            if n and self.min_size(inner) == 0:
                self.skip(inner, depth)  # charged already; the others are the same
            elif type(inner) is Primitive and inner.name in STRUCTS:
                self.pos += n * STRUCTS[inner.name].size  # vector_length checked that they are there
            else:
                for _ in range(n):
                    self.skip(inner, depth)
        elif kind is Record:
            for field in wire.fields:
                self.skip(field.type, depth)
        elif kind is Variant:
            self.skip(self.variant_case(wire).type, depth)
        elif kind is Func:
            self.func_ref()
        elif kind is Service:
            self.principal()
        else:  # Future: data length, reference count (references travel elsewhere), then the data
            n = self.leb("length of a future-type value")
            self.leb("reference count of a future-type value")
            self.take(n, "future-type value")


def _fresh(value: Any) -> Any:
    """A copy of a zero-sized value (None, or records of them), so elements share no dict."""
    return None if value is None else {k: _fresh(v) for k, v in value.items()}


_COMPOSITE_READERS: dict[type, Callable[[_Decoder, Type, Any, int], Any]] = {
    Opt: _Decoder.opt_at, Vec: _Decoder.vec_at, Record: _Decoder.record_at, Variant: _Decoder.variant_at,
    Func: _Decoder.reference_at, Service: _Decoder.reference_at,
}
