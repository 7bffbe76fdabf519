"""Candid service descriptions (.did) to types, parsed by the Rust `ic_candid_parser`.

The parser (installed with icp-py-core) returns the definitions as JSON, which is mapped here to
our types. Two of its blind spots are handled here:
- it does not reject undefined type names or alias cycles (`type A = B; type B = A`); we do;
- a method declared through a named func type (`m : F`) comes out as `() -> ()`; we look the
  name up in the source and use F's signature.
It prints a quoted all-digit field name ("7") the same as the field number 7; we read it as the
number, which differs only in such a name's field id.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from _ic_candid_core import _ic_candid_core as ic_candid_parser

from cdk.candid.errors import CandidError
from cdk.candid.types import PRIMITIVES, Field, Func, Opt, Record, Recursive, Service, Type, Variant, Vec, resolve

_MODE_NAMES = {"query": "query", "oneway": "oneway", "composite_query": "composite_query",
               "compositequery": "composite_query"}  # older parser wheels print the last one squashed


@dataclass(frozen=True)
class Method:
    args: tuple[Type, ...]
    rets: tuple[Type, ...]
    modes: frozenset[str] = frozenset()

    @property
    def is_query(self) -> bool:
        return bool(self.modes & {"query", "composite_query"})

    @property
    def is_oneway(self) -> bool:
        return "oneway" in self.modes

    @property
    def func(self) -> Func:
        return Func(self.args, self.rets, self.modes)


@dataclass(frozen=True)
class Interface:
    methods: dict[str, Method]
    types: dict[str, Type]
    init_args: tuple[Type, ...] = ()


def parse_did(source: str) -> Interface:
    """Parse a .did file: its named types, its service's methods and the service's init arguments."""
    try:
        parsed = json.loads(ic_candid_parser.parse_did(source))
    except ValueError as e:
        raise CandidError(f"the .did source does not parse: {e}") from None
    builder = _TypeBuilder(source, {entry["name"]: Recursive(entry["name"]) for entry in parsed["env"]})
    for entry in parsed["env"]:
        builder.knots[entry["name"]].define(builder.type(entry["datatype"]))
    actor = parsed.get("actor") or {}
    methods = {m["name"]: builder.method(m) for m in actor.get("methods", [])}
    init_args = tuple(builder.type(t) for t in actor.get("init") or ())
    return Interface(methods, dict(builder.knots), init_args)


@dataclass(frozen=True)
class _TypeBuilder:
    source: str
    knots: dict[str, Recursive]

    def type(self, node: dict[str, Any]) -> Type:
        kind, value = node["type"], node.get("value")
        if kind == "Prim":
            if value not in PRIMITIVES:
                raise CandidError(f"unknown primitive type {value!r} in the .did source")
            return PRIMITIVES[value]
        if kind == "Principal":
            return PRIMITIVES["principal"]
        if kind == "Id":
            if value not in self.knots:
                raise CandidError(f"type {value!r} is used in the .did source but never defined")
            return self.knots[value]
        if kind == "Opt":
            return Opt(self.type(value))
        if kind == "Vec":
            return Vec(self.type(value))
        if kind in ("Record", "Variant"):
            fields = tuple(Field(int(label) if label.isdigit() else label, self.type(t)) for label, t in value)
            return Record(fields) if kind == "Record" else Variant(fields)
        if kind == "Func":
            return self.signature(value).func
        if kind == "Service":
            return Service(tuple((m["name"], self.service_method(m)) for m in value))
        raise CandidError(f"the .did source uses {kind}, which this codec does not support")

    def signature(self, node: dict[str, Any]) -> Method:
        modes = frozenset(_MODE_NAMES.get(m, m) for m in node["modes"])
        return Method(tuple(map(self.type, node["args"])), tuple(map(self.type, node["rets"])), modes)

    def service_method(self, node: dict[str, Any]) -> Type:
        """A method of a service type; a named func type stays a reference, as it may be defined later."""
        lost = self._lost_func_name(node)
        return self.knots[lost] if lost else self.signature(node).func

    def method(self, node: dict[str, Any]) -> Method:
        """A method of the service; all named types are defined by the time this is called."""
        lost = self._lost_func_name(node)
        if lost is None:
            return self.signature(node)
        func = resolve(self.knots[lost])
        if not isinstance(func, Func):
            raise CandidError(f"method {node['name']!r} is declared with type {func}, which is not a func type")
        return Method(func.args, func.rets, func.modes)

    def _lost_func_name(self, node: dict[str, Any]) -> str | None:
        """F when the source declares `name : F` (which the parser reports as `() -> ()`), else None."""
        if node["args"] or node["rets"] or node["modes"]:
            return None
        label = re.escape(node["name"]) if node["name"].isidentifier() else f'"{re.escape(node["name"])}"'
        pattern = rf'(?<![\w"]){label}\s*:\s*([A-Za-z_][A-Za-z0-9_]*)\s*[;}}]'
        names = {m.group(1) for m in re.finditer(pattern, self.source)} & self.knots.keys()
        if len(names) > 1:
            raise CandidError(f"method {node['name']!r} is declared with different named func types "
                              f"{sorted(names)}; write its signature inline")
        return names.pop() if names else None
