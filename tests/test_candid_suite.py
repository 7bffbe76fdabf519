"""The official Candid test suite (dfinity/candid test/*.test.did): every binary assertion.

This codec does not parse Candid's textual values, so, as the suite's README allows:
- assertions whose inputs are all textual are not run (they test a text parser);
- a comparison between a blob and a textual value is a plain decoding assertion on the blob;
- a comparison between two blobs decodes both and compares the Python values.
The types in each assertion are parsed with the codec's own .did parser: each file's type
definitions plus one service method per assertion, `t<n> : (<the assertion's types>) -> ()`.

Exemptions: none. Every binary assertion of prim, construct and reference runs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from cdk.candid import CandidError, decode, parse_did

SUITE = Path("/work/shared/candid-tests")
FILES = ("prim", "construct", "reference")


@dataclass(frozen=True)
class Assertion:
    file: str
    line: int
    form: str                # ":", "!:", "==" or "!="
    blobs: tuple[bytes, ...]  # the binary inputs (a textual input is left out)
    types: str               # the argument types, as written: "(nat, opt int)"
    description: str

    @property
    def test_id(self) -> str:
        return f"{self.file}:{self.line}:{self.description or self.types}"


_TOKEN = re.compile(r'\s+|//[^\n]*|/\*.*?\*/|"(?:[^"\\]|\\.)*"|\w+|!:|==|!=|->|[^\s"]', re.S)


def _statements(source: str) -> list[tuple[int, str]]:
    """Split at top-level semicolons, keeping strings (which contain ';') whole; drop comments."""
    statements, current, depth, line, start_line = [], [], 0, 1, None
    for match in _TOKEN.finditer(source):
        token = match.group()
        if token.startswith(("//", "/*")) or token.isspace():
            line += token.count("\n")
            continue
        if start_line is None:
            start_line = line
        line += token.count("\n")
        if token in ("(", "{"):
            depth += 1
        elif token in (")", "}"):
            depth -= 1
        if token == ";" and depth == 0:
            statements.append((start_line, " ".join(current)))
            current, start_line = [], None
        else:
            current.append(token)
    return statements


def _string_bytes(literal: str) -> bytes:
    """The bytes of a Candid string literal: UTF-8 text with \\xx, \\u{...} and the usual escapes."""
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
            end = body.index("}", i)
            out += chr(int(body[i + 3:end].replace("_", ""), 16)).encode("utf-8")
            i = end + 1
        else:
            out.append(int(body[i + 1:i + 3], 16))
            i += 3
    return bytes(out)


_ASSERTION = re.compile(
    r'assert\s+(?P<first>(?:blob\s+)?"(?:[^"\\]|\\.)*")\s*'
    r'(?:(?P<cmp>==|!=)\s*(?P<second>(?:blob\s+)?"(?:[^"\\]|\\.)*")\s*:|(?P<form>!:|:))\s*'
    r'(?P<types>\(.*\))\s*(?P<desc>"(?:[^"\\]|\\.)*")?\s*$', re.S)


def _load(name: str) -> tuple[list[Assertion], str]:
    """The file's binary assertions, and the .did source that gives their types."""
    definitions, assertions = [], []
    for line, statement in _statements((SUITE / f"{name}.test.did").read_text()):
        if statement.startswith("type"):
            definitions.append(statement + ";")
            continue
        match = _ASSERTION.match(statement)
        if match is None:
            raise ValueError(f"{name}.test.did:{line}: unrecognised statement {statement[:80]!r}")
        inputs = [match["first"]] + ([match["second"]] if match["second"] else [])
        blobs = tuple(_string_bytes(i.removeprefix("blob").strip()) for i in inputs if i.startswith("blob"))
        if not blobs:
            continue  # textual only: a test of a text parser, which this codec does not have
        form = match["cmp"] or match["form"]
        description = _string_bytes(match["desc"]).decode() if match["desc"] else ""
        assertions.append(Assertion(name, line, form, blobs, match["types"], description))
    methods = "".join(f"t{i} : {a.types} -> ();\n" for i, a in enumerate(assertions))
    return assertions, "\n".join(definitions) + f"\nservice : {{\n{methods}}}"


def _cases() -> list[Assertion]:
    return [a for name in FILES for a in _load(name)[0]]


_INTERFACES = {name: parse_did(_load(name)[1]) for name in FILES}
CASES = _cases()


def _decode(assertion: Assertion, blob: bytes) -> list:
    index = [a for a in CASES if a.file == assertion.file].index(assertion)
    return decode(_INTERFACES[assertion.file].methods[f"t{index}"].args, blob)


def _same(a, b) -> bool:
    """Python equality, with NaN equal to itself (the suite compares decoded values)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@pytest.mark.parametrize("assertion", CASES, ids=lambda a: a.test_id)
def test_official_assertion(assertion: Assertion) -> None:
    if assertion.form == "!:":
        with pytest.raises(CandidError):
            _decode(assertion, assertion.blobs[0])
        return
    values = [_decode(assertion, blob) for blob in assertion.blobs]
    if len(values) == 2:
        equal = all(_same(a, b) for a, b in zip(values[0], values[1], strict=True))
        assert equal == (assertion.form == "=="), f"{values[0]!r} vs {values[1]!r}"


def test_suite_counts() -> None:
    """Guards the runner itself: a parsing slip that dropped assertions would show here."""
    counts = {name: sum(a.file == name for a in CASES) for name in FILES}
    assert counts == {"prim": 165, "construct": 161, "reference": 49}, counts
