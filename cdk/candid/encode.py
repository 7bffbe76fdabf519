"""Python values to Candid bytes: the type table, then each value as its type says."""

from __future__ import annotations

import numbers
import operator
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cdk.candid.errors import CandidError
from cdk.candid.types import (
    FUNC_MODES,
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
    resolve,
)
from cdk.principal import Principal

MAGIC = b"DIDL"
FIXED_WIDTH = {  # struct codes of the fixed-width primitives, little-endian on the wire
    "nat8": "B", "nat16": "H", "nat32": "I", "nat64": "Q",
    "int8": "b", "int16": "h", "int32": "i", "int64": "q",
    "float32": "f", "float64": "d",
}
_STRUCTS = {name: struct.Struct("<" + code) for name, code in FIXED_WIDTH.items()}
_BYTES_LIKE = (bytes, bytearray, memoryview)
_OPT, _VEC, _RECORD, _VARIANT, _FUNC, _SERVICE = -18, -19, -20, -21, -22, -23

if TYPE_CHECKING:
    from cdk.candid.cache import HeaderCache


def write_leb(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def write_sleb(out: bytearray, n: int) -> None:
    while True:
        byte = n & 0x7F
        n >>= 7
        if (n == 0 and not byte & 0x40) or (n == -1 and byte & 0x40):
            out.append(byte)
            return
        out.append(byte | 0x80)


def encode(types: Sequence[Type], values: Sequence[Any], cache: HeaderCache | None = None) -> bytes:
    """Candid bytes ("DIDL", type table, argument types, values) for `values` of `types`; a
    `cache` keeps the header of types it has seen."""
    types = tuple(types)
    if len(types) != len(values):
        raise CandidError(f"got {len(types)} types but {len(values)} values; give one value per type")
    for i, t in enumerate(types):
        if not isinstance(t, Type):
            raise CandidError(f"argument {i} needs a Candid type (e.g. T.nat), got {t!r}")
    out = bytearray(cache.header(types) if cache is not None else header_bytes(types))
    for i, (t, value) in enumerate(zip(types, values, strict=True)):
        try:
            _write(t, value, out)
        except CandidError as e:
            e.path.insert(0, f"arg {i}")
            raise
        except RecursionError:
            raise CandidError(f"argument {i} nests too deeply for Python's stack (a long recursive list?); "
                              "send long sequences as a vec") from None
    return bytes(out)


def header_bytes(types: tuple[Type, ...]) -> bytes:
    """The magic, type table and argument types of a message with arguments of `types`."""
    table = _TypeTable()
    codes = [table.code(t) for t in types]
    out = bytearray(MAGIC)
    write_leb(out, len(table.entries))
    for entry in table.entries:
        out += entry
    write_leb(out, len(codes))
    for code in codes:
        write_sleb(out, code)
    return bytes(out)


class _TypeTable:
    """Assigns table indices to constructed types; structurally equal types share one entry."""

    def __init__(self) -> None:
        self.indices: dict[Type, int] = {}
        self.entries: list[bytes] = []

    def code(self, t: Type) -> int:
        t = resolve(t)
        if isinstance(t, Primitive):
            return t.opcode
        index = self.indices.get(t)
        if index is None:
            index = self.indices[t] = len(self.entries)
            self.entries.append(b"")  # reserved first, so recursive references find the index
            self.entries[index] = self._entry(t)
        return index

    def _entry(self, t: Type) -> bytes:
        out = bytearray()
        if isinstance(t, (Opt, Vec)):
            write_sleb(out, _OPT if isinstance(t, Opt) else _VEC)
            write_sleb(out, self.code(t.inner))
        elif isinstance(t, (Record, Variant)):
            write_sleb(out, _RECORD if isinstance(t, Record) else _VARIANT)
            write_leb(out, len(t.fields))
            for f in t.fields:
                write_leb(out, f.id)
                write_sleb(out, self.code(f.type))
        elif isinstance(t, Func):
            write_sleb(out, _FUNC)
            for types in (t.args, t.rets):
                write_leb(out, len(types))
                for arg in types:
                    write_sleb(out, self.code(arg))
            write_leb(out, len(t.modes))
            out += bytes(sorted(FUNC_MODES[m] for m in t.modes))
        elif isinstance(t, Service):
            write_sleb(out, _SERVICE)
            write_leb(out, len(t.methods))
            for name, method in t.methods:
                if not isinstance(resolve(method), Func):
                    raise CandidError(f"service method {name!r} must have a func type, got {method}")
                raw = name.encode("utf-8")
                write_leb(out, len(raw))
                out += raw
                write_sleb(out, self.code(method))
        else:
            raise CandidError(f"cannot encode type {t!r}: it is not a Candid type")
        return bytes(out)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '…' if len(text) > 60 else text}"


def _as_int(value: Any, type_name: str) -> int:
    if not isinstance(value, bool):
        try:
            return operator.index(value)  # int, and numpy's integers
        except TypeError:
            pass
    raise CandidError(f"{type_name} takes an int, got {_describe(value)}")


def _write_nat(value: Any, out: bytearray) -> None:
    n = _as_int(value, "nat")
    if n < 0:
        raise CandidError(f"nat cannot be negative, got {n}; use int for signed numbers")
    write_leb(out, n)


def _write_int(value: Any, out: bytearray) -> None:
    write_sleb(out, _as_int(value, "int"))


def _fixed_writer(name: str) -> Callable[[Any, bytearray], None]:
    packer = _STRUCTS[name]
    floating = name.startswith("float")

    def write(value: Any, out: bytearray) -> None:
        if floating:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise CandidError(f"{name} takes a float, got {_describe(value)}")
        else:
            value = _as_int(value, name)
        try:
            out += packer.pack(value)
        except (struct.error, OverflowError):
            raise CandidError(f"{value!r} is out of range for {name}") from None
    return write


def _write_null(value: Any, out: bytearray) -> None:
    if value is not None:
        raise CandidError(f"null takes None, got {_describe(value)}")


def _write_reserved(value: Any, out: bytearray) -> None:
    if value is not None:
        raise CandidError(f"reserved takes None (its value is dropped), got {_describe(value)}")


def _write_bool(value: Any, out: bytearray) -> None:
    if not isinstance(value, bool):
        raise CandidError(f"bool takes True or False, got {_describe(value)}")
    out.append(value)


def _write_text(value: Any, out: bytearray) -> None:
    if not isinstance(value, str):
        raise CandidError(f"text takes a str, got {_describe(value)}")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise CandidError(f"text must be valid Unicode: {e.reason} at character {e.start}") from None
    write_leb(out, len(raw))
    out += raw


def _write_empty(value: Any, out: bytearray) -> None:
    raise CandidError("no value has type empty; it can only stand where nothing is sent")


def _write_principal(value: Any, out: bytearray) -> None:
    if not isinstance(value, Principal):
        raise CandidError(f"principal takes a cdk.principal.Principal, got {_describe(value)}; "
                          "for text use Principal.from_text")
    out.append(1)  # 1 = the id is given (0 would be an opaque reference)
    write_leb(out, len(value.bytes))
    out += value.bytes


_PRIMITIVE_WRITERS: dict[str, Callable[[Any, bytearray], None]] = {
    "null": _write_null, "reserved": _write_reserved, "bool": _write_bool, "nat": _write_nat,
    "int": _write_int, "text": _write_text, "empty": _write_empty, "principal": _write_principal,
    **{name: _fixed_writer(name) for name in FIXED_WIDTH},
}


def _write(t: Type, value: Any, out: bytearray) -> None:
    while type(t) is Recursive:
        t = t.target
    writer = _WRITERS.get(type(t))
    if writer is None:
        raise CandidError(f"cannot encode a value of {t!r}: it is not a Candid type")
    writer(t, value, out)


def _write_primitive(t: Primitive, value: Any, out: bytearray) -> None:
    _PRIMITIVE_WRITERS[t.name](value, out)


def _write_opt(t: Opt, value: Any, out: bytearray) -> None:
    if value is None:
        out.append(0)
        return
    if type(value) is Some:
        value = value.value
    out.append(1)
    _write(t.inner, value, out)


def _write_vec(t: Vec, value: Any, out: bytearray) -> None:
    inner = resolve(t.inner)
    name = inner.name if isinstance(inner, Primitive) else None
    if isinstance(value, _BYTES_LIKE):
        if name != "nat8":
            raise CandidError(f"bytes encode only vec nat8 (blob), not vec {inner}; give a list")
        try:
            raw = memoryview(value).cast("B")  # any contiguous buffer, taken as its raw bytes
        except TypeError:
            raise CandidError("a blob from a memoryview needs contiguous memory; pass bytes(view)") from None
        write_leb(out, raw.nbytes)
        out += raw
        return
    if not isinstance(value, (list, tuple)):
        raise CandidError(f"vec {inner} takes a list or tuple, got {_describe(value)}")
    write_leb(out, len(value))
    if name in FIXED_WIDTH and value:
        try:  # one C call for the whole vector; on failure the per-element path names the culprit
            out += struct.pack(f"<{len(value)}{FIXED_WIDTH[name]}", *value)
            return
        except (struct.error, OverflowError, TypeError):
            pass
    for i, element in enumerate(value):
        try:
            _write(inner, element, out)
        except CandidError as e:
            e.path.insert(0, f"[{i}]")
            raise


def _write_record(t: Record, value: Any, out: bytearray) -> None:
    if isinstance(value, (tuple, list)) and t.is_tuple:
        if len(value) != len(t.fields):
            raise CandidError(f"{t} takes {len(t.fields)} values, got {len(value)}")
        items = value
    elif isinstance(value, Mapping):
        unknown = value.keys() - {f.key for f in t.fields}
        if unknown:
            raise CandidError(f"{t} has no field {sorted(map(str, unknown))[0]!r}; "
                              f"its fields are {[f.key for f in t.fields]}")
        items = []
        for f in t.fields:
            if f.key in value:
                items.append(value[f.key])
            elif is_nullable(f.type):
                items.append(None)
            else:
                raise CandidError(f"missing field {f.key!r} of type {f.type} (only opt, null and reserved "
                                  "fields may be left out)")
    else:
        raise CandidError(f"{t} takes a dict keyed by field name, got {_describe(value)}")
    for f, item in zip(t.fields, items, strict=True):
        try:
            _write(f.type, item, out)
        except CandidError as e:
            e.path.insert(0, f".{f.key}")
            raise


def _write_variant(t: Variant, value: Any, out: bytearray) -> None:
    if not isinstance(value, Mapping) or len(value) != 1:
        raise CandidError(f"{t} takes a dict with one entry {{case: value}}, got {_describe(value)}")
    ((key, item),) = value.items()
    found = t.by_key.get(key)
    if found is None:
        raise CandidError(f"{t} has no case {key!r}; its cases are {[f.key for f in t.fields]}")
    index, f = found
    write_leb(out, index)
    try:
        _write(f.type, item, out)
    except CandidError as e:
        e.path.insert(0, f".{key}")
        raise


def _write_func(t: Func, value: Any, out: bytearray) -> None:
    if not isinstance(value, FuncRef):
        raise CandidError(f"a func value is a FuncRef(service, method), got {_describe(value)}")
    out.append(1)  # 1 = the reference is given (0 would be opaque)
    _write_principal(value.service, out)
    _write_text(value.method, out)


def _write_service(t: Service, value: Any, out: bytearray) -> None:
    _write_principal(value, out)


_WRITERS: dict[type, Callable[[Any, Any, bytearray], None]] = {
    Primitive: _write_primitive, Opt: _write_opt, Vec: _write_vec, Record: _write_record,
    Variant: _write_variant, Func: _write_func, Service: _write_service,
}
