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


# llama_detokenize's clean_spaces on the gpt-2 vocabulary; the expected texts are what llama.cpp
# (llama-cpp-python 0.3.36) returned for these inputs, quirks included (" ' ' " keeps a space).
CLEAN_SPACES = {
    "Hi , there ! Yes . No ? a ' b": "Hi, there! Yes. No? a'b",
    "a ' ' b": "a'' b",
    "It 's , I 'm , we 're , they 've , don 't , I 'd , we 'll": "It's, I'm, we're, they've, don 't, I 'd, we 'll",
    " ' x": "'x",
    "x '": "x '",
    "end ,": "end,",
}


def test_decode_cleans_spaces_as_llama_detokenize() -> None:
    tokenizer = Tokenizer.from_metadata(read_gguf(vocab_test("gpt-2").gguf).fields)
    assert tokenizer.pre is not None and tokenizer.pre.clean_spaces
    for text, cleaned in CLEAN_SPACES.items():
        assert tokenizer.decode(tokenizer.encode(text)) == cleaned, text
