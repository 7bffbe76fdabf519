"""SmolLM2's own vocabulary (byte-level BPE, pre-tokenizer `smollm`) against llama.cpp.

The expected values in tests/fixtures/tokenizer/smollm2_corpus.json were written by
scripts/make_tokenizer_fixtures.py with llama.cpp (llama-cpp-python 0.3.36) on the same model file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from canisters.llama.gguf_file import read_gguf
from canisters.llama.tokenizer import DetokenizerState, TokenAttr, Tokenizer

pytestmark = pytest.mark.real_model

FIXTURE = Path(__file__).parent / "fixtures" / "tokenizer" / "smollm2_corpus.json"


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tokenizer(smollm2_path: Path) -> Tokenizer:
    return Tokenizer.from_metadata(read_gguf(smollm2_path).fields)


def test_the_fixture_covers_a_varied_corpus(reference: dict) -> None:
    texts = [case["text"] for case in reference["cases"]]
    assert len(texts) >= 30
    for needle in ("  ", "\n", "\t", "'s", "0", "😀", "日本", "é", "def ", "русский"):
        assert any(needle in t for t in texts), needle


def test_encode_matches_llama_cpp_on_every_text(tokenizer: Tokenizer, reference: dict) -> None:
    failures = [
        f"{case['text']!r}: expected {case['ids']}, got {got}"
        for case in reference["cases"]
        if (got := tokenizer.encode(case["text"])) != case["ids"]
    ]
    assert not failures, f"{len(reference['cases']) - len(failures)}/{len(reference['cases'])} match:\n" + "\n".join(
        failures
    )


def test_pieces_and_decode_match_llama_cpp(tokenizer: Tokenizer, reference: dict) -> None:
    for case in reference["cases"]:
        assert [tokenizer.token_to_piece(t).hex() for t in case["ids"]] == case["pieces"], case["text"]
        assert tokenizer.decode(case["ids"]) == case["detokenized"], case["text"]


def test_streaming_gives_the_same_text_and_never_a_broken_character(tokenizer: Tokenizer, reference: dict) -> None:
    for case in reference["cases"]:
        state = DetokenizerState()
        chunks = []
        for token in case["ids"]:
            chunk, state = tokenizer.detokenize_step(state, token)
            chunks.append(chunk)
        chunks.append(tokenizer.detokenize_end(state))
        assert "".join(chunks) == case["detokenized"], case["text"]
        assert not any("\ufffd" in chunk for chunk in chunks), case["text"]


def test_special_tokens_parse_and_render_as_llama_cpp(tokenizer: Tokenizer, reference: dict) -> None:
    for case in reference["special_cases"]:
        assert tokenizer.encode(case["text"], parse_special=True) == case["ids"], case["text"]
        assert tokenizer.encode(case["text"], add_special=True, parse_special=True) == case["ids_add_special"]
        assert tokenizer.decode(case["ids"]) == case["detokenized"]
        assert tokenizer.decode(case["ids"], special=True) == case["detokenized_special"]


def test_vocabulary_facts_match_llama_cpp(tokenizer: Tokenizer, reference: dict) -> None:
    vocab = reference["vocab"]
    assert tokenizer.n_vocab == vocab["n_tokens"]
    assert (tokenizer.special.bos, tokenizer.special.eos) == (vocab["bos"], vocab["eos"])
    assert sorted(tokenizer.special.eog) == vocab["eog"]
    assert (tokenizer.add_bos, tokenizer.add_eos) == (vocab["add_bos"], vocab["add_eos"])
    # SmolLM2 has two end-of-turn candidates; llama.cpp takes whichever its hash map yields first
    assert tokenizer.special.eot in vocab["eog"]
    attrs = {str(t): int(a) for t, a in enumerate(tokenizer.attrs) if a != TokenAttr.NORMAL}
    assert attrs == vocab["attrs"]
