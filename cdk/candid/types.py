"""Candid types as immutable Python objects, and the values that need their own Python class.

Types are frozen dataclasses compared structurally, so equal types share one type-table entry
when encoding. Recursion goes through a `Recursive` knot, defined once after creation and
compared by identity, which is what keeps hashing and printing of recursive types finite.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from cdk.candid.errors import CandidError
from cdk.principal import Principal

FUNC_MODES = {"query": 1, "oneway": 2, "composite_query": 3}  # the wire's annotation bytes
_U32 = 1 << 32


def idl_hash(name: str) -> int:
    """The field id of a named field: the spec's hash over its UTF-8 bytes."""
    h = 0
    for byte in name.encode("utf-8"):
        h = (h * 223 + byte) % _U32
    return h


class Type:
    """Base of all Candid types; str() gives Candid syntax."""

    def __str__(self) -> str:
        return render(self)


def _check_type(t: object, where: str) -> None:
    if not isinstance(t, Type):
        raise CandidError(f"{where} needs a Candid type (e.g. T.nat), got {t!r}")


@dataclass(frozen=True)
class Primitive(Type):
    name: str
    opcode: int  # the wire's type code (a negative SLEB128 value)


@dataclass(frozen=True)
class Opt(Type):
    inner: Type

    def __post_init__(self) -> None:
        _check_type(self.inner, "opt")


@dataclass(frozen=True)
class Vec(Type):
    inner: Type

    def __post_init__(self) -> None:
        _check_type(self.inner, "vec")


@dataclass(frozen=True)
class Field:
    """A record field or variant case; `key` is the Python dict key: the name, or the number."""

    key: str | int
    type: Type
    id: int = field(init=False)

    def __post_init__(self) -> None:
        if isinstance(self.key, bool) or not isinstance(self.key, (str, int)):
            raise CandidError(f"a field is named by a str or numbered by an int, got {self.key!r}")
        if isinstance(self.key, int) and not 0 <= self.key < _U32:
            raise CandidError(f"a field number must be in 0..2**32-1, got {self.key}")
        _check_type(self.type, f"field {self.key!r}")
        object.__setattr__(self, "id", self.key if isinstance(self.key, int) else idl_hash(self.key))

    @property
    def label(self) -> str:
        return str(self.key) if isinstance(self.key, int) or self.key.isidentifier() else f'"{self.key}"'


def _sorted_fields(kind: str, fields: Iterable[Field]) -> tuple[Field, ...]:
    ordered = tuple(sorted(fields, key=lambda f: f.id))
    for before, after in zip(ordered, ordered[1:], strict=False):
        if before.id == after.id:
            raise CandidError(f"{kind} fields {before.key!r} and {after.key!r} have the same id {after.id}; "
                              "rename one of them")
    return ordered


@dataclass(frozen=True)
class Record(Type):
    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", _sorted_fields("record", self.fields))

    @cached_property
    def by_id(self) -> dict[int, Field]:
        return {f.id: f for f in self.fields}

    @cached_property
    def is_tuple(self) -> bool:
        """Fields numbered 0..n-1, as `record { nat; text }` is; such a record also takes a tuple."""
        return all(f.key == i for i, f in enumerate(self.fields))


@dataclass(frozen=True)
class Variant(Type):
    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", _sorted_fields("variant", self.fields))

    @cached_property
    def by_id(self) -> dict[int, Field]:
        return {f.id: f for f in self.fields}

    @cached_property
    def by_key(self) -> dict[str | int, tuple[int, Field]]:
        return {f.key: (index, f) for index, f in enumerate(self.fields)}


@dataclass(frozen=True)
class Func(Type):
    args: tuple[Type, ...]
    rets: tuple[Type, ...]
    modes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "rets", tuple(self.rets))
        object.__setattr__(self, "modes", frozenset(self.modes))
        for t in self.args + self.rets:
            _check_type(t, "a func argument or result")
        unknown = self.modes - FUNC_MODES.keys()
        if unknown:
            raise CandidError(f"unknown func modes {sorted(unknown)}; known: {sorted(FUNC_MODES)}")


@dataclass(frozen=True)
class Service(Type):
    methods: tuple[tuple[str, Type], ...]  # (name, func type) sorted by name, as the wire has them

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.methods, key=lambda method: method[0]))
        for (before, _), (after, _) in zip(ordered, ordered[1:], strict=False):
            if before == after:
                raise CandidError(f"service method {after!r} is declared twice")
        for name, t in ordered:
            _check_type(t, f"service method {name!r}")
        object.__setattr__(self, "methods", ordered)


class Recursive(Type):
    """A named knot that a recursive type refers to; `define` it once, after creating it."""

    __slots__ = ("name", "_target")

    def __init__(self, name: str) -> None:
        self.name = name
        self._target: Type | None = None

    def define(self, target: Type) -> None:
        if self._target is not None:
            raise CandidError(f"type {self.name} is already defined")
        _check_type(target, f"type {self.name}")
        alias = target
        while isinstance(alias, Recursive):  # refuse alias cycles (type A = B; type B = A) here, once
            if alias is self:
                raise CandidError(f"type {self.name} is defined as an alias of itself; it needs a constructor "
                                  "(opt, vec, record, variant, func or service) on the way round")
            alias = alias._target
        self._target = target

    @property
    def target(self) -> Type:
        if self._target is None:
            raise CandidError(f"type {self.name} is used but never defined")
        return self._target

    def __repr__(self) -> str:
        return self.name


def resolve(t: Type) -> Type:
    """Follow knots (and aliases of knots) to the type they stand for; `define` rules out cycles."""
    while isinstance(t, Recursive):
        t = t.target
    return t


def render(t: Type, depth: int = 8) -> str:
    """Candid syntax for `t`, with types nested deeper than `depth` shown as `…`.

    The bound keeps error messages short and finite for hostile type tables that nest
    thousands of levels deep without recursion.
    """
    if isinstance(t, (Primitive, Recursive)):
        return t.name
    if depth == 0:
        return "…"
    inner = depth - 1
    if isinstance(t, (Opt, Vec)):
        return f"{'opt' if isinstance(t, Opt) else 'vec'} {render(t.inner, inner)}"
    if isinstance(t, (Record, Variant)):
        kind = "record" if isinstance(t, Record) else "variant"
        return f"{kind} {{ " + "; ".join(f"{f.label} : {render(f.type, inner)}" for f in t.fields) + " }"
    if isinstance(t, Func):
        args = ", ".join(render(a, inner) for a in t.args)
        rets = ", ".join(render(r, inner) for r in t.rets)
        return f"func ({args}) -> ({rets})" + "".join(" " + m for m in sorted(t.modes))
    if isinstance(t, Service):
        return "service { " + "; ".join(f'"{n}" : {render(m, inner)}' for n, m in t.methods) + " }"
    return type(t).__name__


def is_nullable(t: Type) -> bool:
    """Whether null coerces to `t`: then a missing field or argument of type t is None."""
    t = resolve(t)
    return isinstance(t, Opt) or (isinstance(t, Primitive) and t.name in ("null", "reserved"))


@dataclass(frozen=True)
class Some:
    """Present value of `opt T` when T's own values include None (T null, reserved or opt).

    Only there is None ambiguous, so only there does decoding return `Some(v)`; encoding takes
    `Some(v)` for any opt.
    """

    value: Any


@dataclass(frozen=True)
class FuncRef:
    """A value of a func type: a method of a service."""

    service: Principal
    method: str


PRIMITIVES: dict[str, Primitive] = {p.name: p for p in (
    Primitive("null", -1), Primitive("bool", -2), Primitive("nat", -3), Primitive("int", -4),
    Primitive("nat8", -5), Primitive("nat16", -6), Primitive("nat32", -7), Primitive("nat64", -8),
    Primitive("int8", -9), Primitive("int16", -10), Primitive("int32", -11), Primitive("int64", -12),
    Primitive("float32", -13), Primitive("float64", -14), Primitive("text", -15),
    Primitive("reserved", -16), Primitive("empty", -17), Primitive("principal", -24),
)}


def _fields(fields: Mapping[str | int, Type | None] | Iterable[Type]) -> list[Field]:
    if isinstance(fields, Mapping):
        return [Field(key, PRIMITIVES["null"] if t is None else t) for key, t in fields.items()]
    return [Field(i, t) for i, t in enumerate(fields)]


class T:
    """Short names for building types: `T.nat64`, `T.vec(T.nat8)`, `T.record({"a": T.text})`."""

    null = PRIMITIVES["null"]
    bool = PRIMITIVES["bool"]
    nat = PRIMITIVES["nat"]
    int = PRIMITIVES["int"]
    nat8 = PRIMITIVES["nat8"]
    nat16 = PRIMITIVES["nat16"]
    nat32 = PRIMITIVES["nat32"]
    nat64 = PRIMITIVES["nat64"]
    int8 = PRIMITIVES["int8"]
    int16 = PRIMITIVES["int16"]
    int32 = PRIMITIVES["int32"]
    int64 = PRIMITIVES["int64"]
    float32 = PRIMITIVES["float32"]
    float64 = PRIMITIVES["float64"]
    text = PRIMITIVES["text"]
    reserved = PRIMITIVES["reserved"]
    empty = PRIMITIVES["empty"]
    principal = PRIMITIVES["principal"]
    blob = Vec(PRIMITIVES["nat8"])

    @staticmethod
    def opt(inner: Type) -> Opt:
        return Opt(inner)

    @staticmethod
    def vec(inner: Type) -> Vec:
        return Vec(inner)

    @staticmethod
    def record(fields: Mapping[str | int, Type] | Iterable[Type]) -> Record:
        """A mapping gives named (or numbered) fields; a sequence gives a tuple record {0; 1; ...}."""
        return Record(tuple(_fields(fields)))

    @staticmethod
    def tuple(*types: Type) -> Record:
        return Record(tuple(_fields(types)))

    @staticmethod
    def variant(cases: Mapping[str | int, Type | None]) -> Variant:
        """Cases map to their types; None stands for `null`, as in `variant { ok; err : text }`."""
        return Variant(tuple(_fields(cases)))

    @staticmethod
    def func(args: Iterable[Type], rets: Iterable[Type], modes: Iterable[str] = ()) -> Func:
        return Func(tuple(args), tuple(rets), frozenset(modes))

    @staticmethod
    def service(methods: Mapping[str, Type]) -> Service:
        return Service(tuple(methods.items()))

    @staticmethod
    def recursive(name: str) -> Recursive:
        return Recursive(name)
