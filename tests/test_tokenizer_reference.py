"""The tokenizer against llama.cpp's own test vectors and Unicode table (from the llama-cpp-python sdist).

The vectors are applied as llama.cpp's tests/test-tokenizer-0.cpp applies them: no BOS, no special
parsing. Every vector must pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from canisters.llama.gguf_file import read_gguf
from canisters.llama.tokenizer import Tokenizer
from tests.refdata import VOCAB_NAMES, unicode_table, vocab_test

UNICODE_CLASSES = Path(__file__).parent.parent / "canisters" / "llama" / "unicode_classes.json"


@pytest.mark.parametrize("name", VOCAB_NAMES)
def test_all_llama_cpp_vectors_pass(name: str) -> None:
    vectors = vocab_test(name)
    tokenizer = Tokenizer.from_metadata(read_gguf(vectors.gguf).fields)
    failures = [
        f"{case.text!r}: expected {list(case.ids)}, got {got}"
        for case in vectors.cases
        if tuple(got := tokenizer.encode(case.text, add_special=False, parse_special=False)) != case.ids
    ]
    passed = len(vectors.cases) - len(failures)
    assert not failures, f"{name}: {passed}/{len(vectors.cases)} vectors pass; failing:\n" + "\n".join(failures)
    assert len(vectors.cases) >= 40  # the sdist's files hold 46 cases each; fewer means a parsing fault


def test_pinned_unicode_classes_equal_llama_cpp_table() -> None:
    """canisters/llama/unicode_classes.json is what scripts/make_unicode_table.py derives from the sdist."""
    pinned = json.loads(UNICODE_CLASSES.read_text(encoding="utf-8"))
    table = unicode_table()
    assert [tuple(r) for r in pinned["letter"]] == list(table.letter)
    assert [tuple(r) for r in pinned["number"]] == list(table.number)
    assert [tuple(r) for r in pinned["punctuation"]] == list(table.punctuation)
    assert pinned["whitespace"] == list(table.whitespace)
