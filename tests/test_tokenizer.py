"""Tokenizer behaviour on small hand-made vocabularies: merge order, byte fallback, special tokens,
streaming, work reporting, and the errors for bad metadata or bad input.

Agreement with llama.cpp on real vocabularies is in test_tokenizer_reference.py and
test_tokenizer_models.py; these tests pin down the rules that those exercise.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canisters.llama.pretokenize import SUPPORTED_NAMES, pre_tokenizer, translate
from canisters.llama.tokenizer import DetokenizerState, TokenAttr, Tokenizer, TokenizerError
from cdk.meter import Work

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]


def spm_fields(words: dict[str, float], **extra: Any) -> dict[str, Any]:
    """An SPM vocabulary: <unk> <s> </s> <|user|>, the 256 byte tokens, then `words` with their scores."""
    tokens = ["<unk>", "<s>", "</s>", "<|user|>", *BYTE_TOKENS, *words]
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": [0.0] * 260 + list(words.values()),
        "tokenizer.ggml.token_type": [UNKNOWN, CONTROL, CONTROL, USER_DEFINED] + [BYTE] * 256 + [NORMAL] * len(words),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        **extra,
    }


def bpe_fields(tokens: list[str], merges: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [NORMAL] * len(tokens),
        "tokenizer.ggml.merges": merges,
        **extra,
    }


def spm(words: dict[str, float], **extra: Any) -> Tokenizer:
    return Tokenizer.from_metadata(spm_fields(words, **extra))


def test_spm_merges_the_best_scoring_pair_first() -> None:
    words = {"▁": -9.0, "a": -9.0, "b": -9.0, "c": -9.0, "ab": -2.0, "bc": -1.0, "▁a": -3.0}
    tokenizer = spm(words)
    ids = {t: tokenizer.token_id(t) for t in words}
    # "▁abc": bc (-1) beats ab (-2) and ▁a (-3); then ▁a merges
    assert tokenizer.encode("abc") == [ids["▁a"], ids["bc"]]
    # equal scores: the leftmost pair merges first
    tied = spm({"▁": -9.0, "a": -9.0, "b": -9.0, "ab": -1.0, "ba": -1.0})
    assert tied.encode("aba") == [tied.token_id("▁"), tied.token_id("ab"), tied.token_id("a")]


def test_spm_falls_back_to_utf8_bytes_and_prefixes_a_space() -> None:
    tokenizer = spm({"▁": -1.0, "a": -1.0})
    assert tokenizer.encode("aé") == [tokenizer.token_id("▁"), tokenizer.token_id("a"), 4 + 0xC3, 4 + 0xA9]
    no_prefix = spm({"▁": -1.0, "a": -1.0}, **{"tokenizer.ggml.add_space_prefix": False})
    assert no_prefix.encode("a") == [no_prefix.token_id("a")]
    assert tokenizer.decode(tokenizer.encode("a a")) == "a a"  # the prefixed space is dropped again


def test_special_tokens_are_cut_out_only_when_asked_except_user_defined_ones() -> None:
    tokenizer = spm({"▁": -1.0, "a": -1.0, "▁a": -0.5})
    space_a = tokenizer.token_id("▁a")
    assert tokenizer.encode("<s>a", parse_special=True) == [1, space_a]  # a space prefix follows a special
    assert 1 not in tokenizer.encode("<s>a")
    assert tokenizer.encode("a<|user|>a") == [space_a, 3, space_a]  # user-defined: always
    assert tokenizer.encode("a", add_special=True) == [1, space_a]
    assert tokenizer.encode("a", add_special=True, parse_special=False)[0] == 1
    eos_too = spm({"▁": -1.0, "a": -1.0}, **{"tokenizer.ggml.add_eos_token": True})
    assert eos_too.encode("", add_special=True) == [1, 2]


def test_pieces_hide_control_tokens_unless_special() -> None:
    tokenizer = spm({"▁hi": -1.0})
    assert tokenizer.token_to_piece(1) == b""
    assert tokenizer.token_to_piece(1, special=True) == b"<s>"
    assert tokenizer.token_to_piece(3) == b"<|user|>"  # user-defined text is always shown
    assert tokenizer.token_to_piece(4 + 0xE2) == b"\xe2"
    assert tokenizer.token_to_piece(tokenizer.token_id("▁hi"), lstrip=1) == b"hi"
    assert tokenizer.attrs[1] == TokenAttr.CONTROL and tokenizer.is_eog(2) and not tokenizer.is_eog(1)


def test_streaming_holds_a_split_character_until_it_is_complete() -> None:
    tokenizer = spm({"▁x": -1.0})
    euro = list(4 + b for b in "€".encode())  # three byte tokens
    state = DetokenizerState()
    texts = []
    for token in [tokenizer.token_id("▁x"), *euro]:
        text, state = tokenizer.detokenize_step(state, token)
        texts.append(text)
    assert texts == [" x", "", "", "€"]
    assert state.pending == b"" and tokenizer.detokenize_end(state) == ""
    # a byte that can never start a character is replaced at once; a cut-off character at the end
    text, state = tokenizer.detokenize_step(DetokenizerState(), 4 + 0xFF)
    assert text == "\ufffd"
    text, state = tokenizer.detokenize_step(state, euro[0])
    assert text == "" and tokenizer.detokenize_end(state) == "\ufffd"


def test_bpe_merges_lowest_rank_first_and_maps_bytes_to_printable_characters() -> None:
    tokens = ["a", "b", "c", "Ġ", "ab", "bc", "Ġa", "Ċ"]
    tokenizer = Tokenizer.from_metadata(bpe_fields(tokens, ["b c", "a b", "Ġ a"]))
    assert tokenizer.encode("abc") == [0, 5]  # "b c" has rank 0
    assert tokenizer.encode(" a\n") == [6, 7]  # space is Ġ and newline Ċ, as GPT-2 maps bytes
    assert tokenizer.decode([6, 7]) == " a\n"
    assert tokenizer.encode("é") == []  # no byte tokens for é: llama.cpp drops what it cannot encode


def test_encoding_reports_work_to_the_meter() -> None:
    tokenizer = spm({"▁": -1.0, "a": -1.0, "▁a": -0.5})
    short, long = Work(), Work()
    tokenizer.encode("a", meter=short)
    tokenizer.encode("a " * 100, meter=long)
    assert 0 < short.elementwise_ops < long.elementwise_ops


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "tokenizer.ggml.model is missing"),
        ({"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"]}, "unsupported tokenizer.ggml.model='bert'"),
        ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": []}, "has no vocabulary"),
        (bpe_fields(["a"], ["a a"], **{"tokenizer.ggml.pre": "jais"}), "unsupported pre-tokenizer"),
        ({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"]}, "tokenizer.ggml.merges is missing"),
        (spm_fields({}, **{"tokenizer.ggml.scores": [0.0]}), "scores has 1 entries for 260 tokens"),
        (spm_fields({}, **{"tokenizer.ggml.add_bos_token": "yes"}), "add_bos_token should be a boolean"),
        (spm_fields({}, **{"tokenizer.ggml.bos_token_id": True}), "bos_token_id should be an integer"),
    ],
)
def test_bad_metadata_is_refused_with_a_clear_error(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(TokenizerError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Tokenizer.from_metadata(fields)


def test_bad_input_is_refused_with_a_clear_error() -> None:
    tokenizer = spm({"▁": -1.0, "a": -1.0})
    with pytest.raises(TokenizerError, match="encode takes a str, got bytes"):
        tokenizer.encode(b"a")  # type: ignore[arg-type]
    with pytest.raises(TokenizerError, match="unpaired surrogate at index 1"):
        tokenizer.encode("a\ud800")
    with pytest.raises(TokenizerError, match=r"token id 9999 is outside the vocabulary \(0..261\)"):
        tokenizer.decode([9999])
    no_bytes = Tokenizer.from_metadata({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["<unk>", "▁"]})
    with pytest.raises(TokenizerError, match="no byte-fallback token <0x61>"):
        no_bytes.encode("a")
    no_bos = Tokenizer.from_metadata(bpe_fields(["a"], [], **{"tokenizer.ggml.add_bos_token": True}))
    with pytest.raises(TokenizerError, match="asks to add the BOS token but names none"):
        no_bos.encode("a", add_special=True)


@settings(derandomize=True, deadline=None, max_examples=200)
@given(st.text(max_size=60))
def test_every_pre_tokenizer_splits_text_into_pieces_that_join_back(text: str) -> None:
    for name in SUPPORTED_NAMES:
        pieces = pre_tokenizer(name).split(text)
        assert "".join(pieces) == text and all(pieces), name


def test_a_regex_with_a_class_outside_llama_cpp_table_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\\p\{Han\} is not in llama.cpp's table"):
        translate(r"\p{Han}+")
    assert translate(r"[^\s\p{N}]").startswith("[^\\U00000009")


@settings(derandomize=True, deadline=None, max_examples=200)
@given(st.text(st.characters(exclude_characters="\u2581"), max_size=60))  # "▁" is SPM's space: it decodes as " "
def test_spm_decodes_back_to_the_text_through_byte_fallback(text: str) -> None:
    tokenizer = spm({"▁": -3.0, "a": -2.0, "▁a": -1.0, "ab": -1.5, "b": -2.0})
    assert tokenizer.decode(tokenizer.encode(text)) == text
