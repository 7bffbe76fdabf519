"""The official Candid test suite (dfinity/candid test/*.test.did, copied in tests/fixtures/candid/
with its NOTICE): every assertion, with values compared.

- `blob : (types)` and `blob !: (types)`: the blob decodes, or is refused with a CandidError;
- `a == b` and `a != b`: both sides are read at the types and the Python values compared; a
  blob side goes through `cdk.candid.decode`, a textual side through tests/candid_text.py, an
  independent reader of Candid's value syntax;
- textual `: / !:` assertions: the text reads, or is refused, at the types.

The types in each assertion are parsed with the codec's own .did parser: each file's type
definitions plus one service method per assertion, `t<n> : (<the assertion's types>) -> ()`.
A test below breaks the decoder (bool inverted, nat read as n+1) and checks the suite catches it.

Exemptions: none.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cdk.candid import CandidError, Some, decode, parse_did
from cdk.candid import reader as candid_reader
from tests.candid_text import CandidTextError, parse_arguments, string_bytes

SUITE = Path(__file__).parent / "fixtures" / "candid"
FILES = ("prim", "construct", "reference")


@dataclass(frozen=True)
class Assertion:
    file: str
    line: int
    form: str                              # ":", "!:", "==" or "!="
    inputs: tuple[tuple[str, Any], ...]    # ("blob", bytes) or ("text", the textual value)
    types: str                             # the argument types, as written: "(nat, opt int)"
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


_ASSERTION = re.compile(
    r'assert\s+(?P<first>(?:blob\s+)?"(?:[^"\\]|\\.)*")\s*'
    r'(?:(?P<cmp>==|!=)\s*(?P<second>(?:blob\s+)?"(?:[^"\\]|\\.)*")\s*:|(?P<form>!:|:))\s*'
    r'(?P<types>\(.*\))\s*(?P<desc>"(?:[^"\\]|\\.)*")?\s*$', re.S)


def _input(literal: str) -> tuple[str, Any]:
    if literal.startswith("blob"):
        return "blob", string_bytes(literal.removeprefix("blob").strip())
    return "text", string_bytes(literal).decode("utf-8")


def _load(name: str) -> tuple[list[Assertion], str]:
    """The file's assertions, and the .did source that gives their types."""
    definitions, assertions = [], []
    for line, statement in _statements((SUITE / f"{name}.test.did").read_text()):
        if statement.startswith("type"):
            definitions.append(statement + ";")
            continue
        match = _ASSERTION.match(statement)
        if match is None:
            raise ValueError(f"{name}.test.did:{line}: unrecognised statement {statement[:80]!r}")
        inputs = tuple(_input(i) for i in [match["first"]] + ([match["second"]] if match["second"] else []))
        form = match["cmp"] or match["form"]
        description = string_bytes(match["desc"]).decode() if match["desc"] else ""
        assertions.append(Assertion(name, line, form, inputs, match["types"], description))
    methods = "".join(f"t{i} : {a.types} -> ();\n" for i, a in enumerate(assertions))
    return assertions, "\n".join(definitions) + f"\nservice : {{\n{methods}}}"


_LOADED = {name: _load(name) for name in FILES}
_INTERFACES = {name: parse_did(source) for name, (_, source) in _LOADED.items()}
CASES = [a for name in FILES for a in _LOADED[name][0]]


def _read(assertion: Assertion, kind: str, payload: Any) -> list:
    """One side of an assertion as Python values: decoded (blob) or parsed (text)."""
    index = _LOADED[assertion.file][0].index(assertion)
    types = _INTERFACES[assertion.file].methods[f"t{index}"].args
    return decode(types, payload) if kind == "blob" else parse_arguments(payload, types)


def _same(a: Any, b: Any) -> bool:
    """Equality of decoded values, with NaN equal to itself and float signs compared."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Some) and isinstance(b, Some):
        return _same(a.value, b.value)
    return type(a) is type(b) and a == b


def check(assertion: Assertion) -> None:
    """Raise AssertionError unless the codec does what the assertion says."""
    errors = (CandidError, CandidTextError)
    if assertion.form == "!:":
        kind, payload = assertion.inputs[0]
        try:
            value = _read(assertion, kind, payload)
        except errors:
            return
        raise AssertionError(f"{kind} should be refused at {assertion.types}, read as {value!r}")
    values = [_read(assertion, kind, payload) for kind, payload in assertion.inputs]
    if len(values) == 2:
        equal = _same(values[0], values[1])
        assert equal == (assertion.form == "=="), f"{values[0]!r} {'!=' if equal else '=='} {values[1]!r}"


@pytest.mark.parametrize("assertion", CASES, ids=lambda a: a.test_id)
def test_official_assertion(assertion: Assertion) -> None:
    check(assertion)


def test_suite_counts() -> None:
    """Guards the runner itself: a parsing slip that dropped assertions would show here."""
    counts = {name: {form: sum(a.file == name and a.form == form for a in CASES) for form in (":", "!:", "==", "!=")}
              for name in FILES}
    assert counts == {"prim": {":": 9, "!:": 66, "==": 93, "!=": 0},
                      "construct": {":": 12, "!:": 66, "==": 86, "!=": 0},
                      "reference": {":": 0, "!:": 30, "==": 19, "!=": 1}}, counts
    # 190 comparisons of a blob with a text value, 3 of two texts; 4 texts that must not parse.
    with_text = [a for a in CASES if any(kind == "text" for kind, _ in a.inputs)]
    assert sum(a.form in ("==", "!=") for a in with_text) == 193
    assert sum(a.form == "!:" for a in with_text) == 4


def _failures() -> list[str]:
    failed = []
    for assertion in CASES:
        try:
            check(assertion)
        except (AssertionError, CandidError, CandidTextError):
            failed.append(assertion.test_id)
    return failed


def test_a_broken_decoder_fails_the_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding bool inverted, or nat as n+1, must fail the value comparisons, not slip through."""
    assert _failures() == []
    honest = candid_reader.Reader.primitive_value

    def inverted_bool(self: candid_reader.Reader, name: str) -> Any:
        value = honest(self, name)
        return (not value) if name == "bool" else value

    monkeypatch.setattr(candid_reader.Reader, "primitive_value", inverted_bool)
    failed = _failures()
    assert {"prim:36:bool: false", "prim:37:bool: true"} <= set(failed), failed
    assert len(failed) == 18, failed  # every comparison with a bool in its value

    def nat_plus_one(self: candid_reader.Reader, name: str) -> Any:
        value = honest(self, name)
        return value + 1 if name == "nat" else value

    monkeypatch.setattr(candid_reader.Reader, "primitive_value", nat_plus_one)
    failed = _failures()
    assert "prim:50:nat: big number" in failed, failed
    assert len(failed) == 10, failed  # every comparison with a nat in its value
