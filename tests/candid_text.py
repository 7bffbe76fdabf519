"""Candid's textual value syntax, read into the Python values `cdk.candid.decode` returns.

The codec itself has no text format (canisters only exchange bytes); the official test suite
states its expected values as text, so the suite's runner reads them here, independently of the
decoder, and compares. Values are read at an expected type, as the spec's textual annotations
are: `(42)` at `nat8` is 42, missing opt/null/reserved record fields and arguments are None,
fields the type does not have are dropped, and `opt T` values are `Some(v)` exactly where the
decoder returns them.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cdk.candid import Func, FuncRef, Opt, Primitive, Record, Service, Some, Type, Variant, Vec, idl_hash
from cdk.candid.types import is_nullable, resolve
from cdk.principal import Principal

_TOKEN = re.compile(r'(?P<space>\s+)|"(?:[^"\\]|\\.)*"'
                    r'|[+-]?(?:0x[0-9a-fA-F_]+|[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9_]+)?)'
                    r'|[A-Za-z_][A-Za-z0-9_]*|[(){};,=.:]|(?P<bad>.)', re.S)
_INT_RANGES = {"nat8": (0, 1 << 8), "nat16": (0, 1 << 16), "nat32": (0, 1 << 32), "nat64": (0, 1 << 64),
               "int8": (-(1 << 7), 1 << 7), "int16": (-(1 << 15), 1 << 15), "int32": (-(1 << 31), 1 << 31),
               "int64": (-(1 << 63), 1 << 63)}


class CandidTextError(ValueError):
    """The text is not a Candid value, or not one of the expected type."""


def string_bytes(literal: str) -> bytes:
    """The bytes of a Candid string literal (quotes included): UTF-8 text with \\xx, \\u{...}, \\n etc."""
    out = bytearray()
    body = literal[1:-1]
    i = 0
    simple = {"n": b"\n", "r": b"\r", "t": b"\t", "\\": b"\\", '"': b'"', "'": b"'"}
    while i < len(body):
        char = body[i]
        if char != "\\":
            out += char.encode("utf-8")
            i += 1
        elif body[i + 1] in simple:
            out += simple[body[i + 1]]
            i += 2
        elif body[i + 1] == "u":
            end = body.find("}", i)
            if body[i + 2:i + 3] != "{" or end < 0:
                raise CandidTextError(f"unclosed unicode escape in {literal}")
            out += chr(int(body[i + 3:end].replace("_", ""), 16)).encode("utf-8")
            i = end + 1
        else:
            out.append(int(body[i + 1:i + 3], 16))
            i += 3
    return bytes(out)


# The untyped syntax tree: what the text says, before a type gives it meaning.
@dataclass(frozen=True)
class Node:
    kind: str   # number, text, bool, null, opt, vec, blob, record, variant, principal, service, func
    value: Any = None


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = []
        for match in _TOKEN.finditer(text):
            if match["bad"]:
                raise CandidTextError(f"unexpected {match['bad']!r} at character {match.start()} of {text!r}")
            if not match["space"]:
                self.tokens.append(match.group())
        self.at = 0

    def peek(self) -> str:
        return self.tokens[self.at] if self.at < len(self.tokens) else ""

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if not token or (expected is not None and token != expected):
            raise CandidTextError(f"expected {expected or 'a value'} at token {self.at}, got {token!r}")
        self.at += 1
        return token

    def arguments(self) -> list[Node]:
        self.take("(")
        values = []
        while self.peek() != ")":
            values.append(self.value())
            if self.peek() != ")":
                self.take(",")
        self.take(")")
        if self.peek():
            raise CandidTextError(f"text after the arguments: {self.tokens[self.at:]}")
        return values

    def value(self) -> Node:
        token = self.take()
        if token[0] == '"':
            return Node("text", string_bytes(token))
        if token[0].isdigit() or token[0] in "+-":
            return Node("number", token)
        if token in ("true", "false"):
            return Node("bool", token == "true")
        if token == "null":
            return Node("null")
        if token == "opt":
            return Node("opt", self.value())
        if token == "blob":
            return Node("blob", string_bytes(self.take()))
        if token in ("principal", "service"):
            return Node(token, string_bytes(self.take()).decode())
        if token == "func":
            service = string_bytes(self.take()).decode()
            self.take(".")
            method = self.take()
            return Node("func", (service, string_bytes(method).decode() if method[0] == '"' else method))
        if token == "vec":
            return Node("vec", [item for _, item in self.fields(named=False)])
        if token == "record":
            return Node("record", self.fields(named=True))
        if token == "variant":
            cases = self.fields(named=True, bare_labels=True)
            if len(cases) != 1:
                raise CandidTextError(f"a variant value has exactly one case, got {len(cases)}")
            return Node("variant", cases[0])
        if token == "(":  # a parenthesised value; the suite's values carry no type annotations
            inner = self.value()
            self.take(")")
            return inner
        raise CandidTextError(f"unexpected token {token!r}")

    def fields(self, named: bool, bare_labels: bool = False) -> list[tuple[int | None, Node]]:
        """`{ a = v; 1 = v; v; }`: (field id or None for a positional field, value)."""
        self.take("{")
        out: list[tuple[int | None, Node]] = []
        while self.peek() != "}":
            following = self.tokens[self.at + 1] if self.at + 1 < len(self.tokens) else ""
            label: int | None = None
            if named and (following == "=" or (bare_labels and following in (";", "}"))):
                token = self.take()
                label = int(token.replace("_", "")) if token[0].isdigit() else idl_hash(
                    string_bytes(token).decode() if token[0] == '"' else token)
                if following == "=":
                    self.take("=")
                    value = self.value()
                else:
                    value = Node("null")  # `variant { ok }` is `variant { ok = null }`
            else:
                value = self.value()
            out.append((label, value))
            if self.peek() != "}":
                self.take(";")
        self.take("}")
        return out


def _number(node: Node, name: str) -> int | float:
    if node.kind != "number":
        raise CandidTextError(f"expected a number for {name}, got {node.kind}")
    text = node.value.replace("_", "")
    if name in ("float32", "float64"):
        value = float(text)
        return struct.unpack("<f", struct.pack("<f", value))[0] if name == "float32" else value
    if "." in text or ("e" in text.lower() and not text.lower().lstrip("+-").startswith("0x")):
        raise CandidTextError(f"{node.value} is not an integer, as {name} needs")
    value = int(text, 16) if text.lstrip("+-").lower().startswith("0x") else int(text)
    low, high = _INT_RANGES.get(name, (0, None) if name == "nat" else (None, None))
    if (low is not None and value < low) or (high is not None and value >= high):
        raise CandidTextError(f"{value} is out of the range of {name}")
    return value


def _at(node: Node, t: Type) -> Any:
    t = resolve(t)
    if isinstance(t, Primitive):
        return _primitive(node, t.name)
    if isinstance(t, Opt):
        if node.kind == "null":
            return None
        if node.kind != "opt":
            raise CandidTextError(f"expected opt or null, got {node.kind}")
        value = _at(node.value, t.inner)
        return Some(value) if is_nullable(t.inner) else value
    if isinstance(t, Vec):
        inner = resolve(t.inner)
        if node.kind == "blob" and isinstance(inner, Primitive) and inner.name == "nat8":
            return node.value
        if node.kind != "vec":
            raise CandidTextError(f"expected vec, got {node.kind}")
        items = [_at(item, inner) for item in node.value]
        return bytes(items) if isinstance(inner, Primitive) and inner.name == "nat8" else items
    if isinstance(t, Record):
        if node.kind != "record":
            raise CandidTextError(f"expected record, got {node.kind}")
        given, position = {}, 0
        for label, value in node.value:
            if label is None:
                label, position = position, position + 1
            given[label] = value
        result = {}
        for field in t.fields:
            if field.id in given:
                result[field.key] = _at(given[field.id], field.type)
            elif is_nullable(field.type):
                result[field.key] = None
            else:
                raise CandidTextError(f"the record has no field {field.label}")
        return result
    if isinstance(t, Variant):
        if node.kind != "variant":
            raise CandidTextError(f"expected variant, got {node.kind}")
        label, value = node.value
        field = t.by_id.get(label)
        if field is None:
            raise CandidTextError(f"the variant has no case with id {label}")
        return {field.key: _at(value, field.type)}
    if isinstance(t, Service):
        if node.kind != "service":
            raise CandidTextError(f"expected service, got {node.kind}")
        return Principal.from_text(node.value)
    if isinstance(t, Func):
        if node.kind != "func":
            raise CandidTextError(f"expected func, got {node.kind}")
        return FuncRef(Principal.from_text(node.value[0]), node.value[1])
    raise CandidTextError(f"cannot read a value of type {t}")


def _primitive(node: Node, name: str) -> Any:
    if name == "reserved":
        return None
    if name == "null":
        if node.kind != "null":
            raise CandidTextError(f"expected null, got {node.kind}")
        return None
    if name == "bool":
        if node.kind != "bool":
            raise CandidTextError(f"expected bool, got {node.kind}")
        return node.value
    if name == "text":
        if node.kind != "text":
            raise CandidTextError(f"expected text, got {node.kind}")
        return node.value.decode("utf-8")
    if name == "principal":
        if node.kind != "principal":
            raise CandidTextError(f"expected principal, got {node.kind}")
        return Principal.from_text(node.value)
    if name == "empty":
        raise CandidTextError("empty has no values")
    return _number(node, name)


def parse_arguments(text: str, types: Sequence[Type]) -> list[Any]:
    """The values of the argument list `text` (e.g. '(42, opt "a")') at `types`, as decode returns them.

    Extra values are dropped and missing ones must be nullable, as for binary arguments.
    """
    nodes = _Parser(text).arguments()
    values = []
    for i, t in enumerate(types):
        if i < len(nodes):
            values.append(_at(nodes[i], t))
        elif is_nullable(t):
            values.append(None)
        else:
            raise CandidTextError(f"argument {i} of type {t} is missing")
    return values
