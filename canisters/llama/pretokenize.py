"""Pre-tokenizers of byte-level BPE: how text is split into words before the merges.

Each pre-tokenizer is llama.cpp's list of regexes for that `tokenizer.ggml.pre` (llama-vocab.cpp),
copied verbatim and applied as llama.cpp applies them: each regex splits every piece left by the
previous one, and text between matches stays a piece of its own.

`\\p{L}`, `\\p{N}`, `\\p{P}`, `\\s` and `\\S` are not left to the regex engine's Unicode tables: they
are replaced by explicit classes from llama.cpp's own table (unicode_classes.json, Unicode 15.1),
so a codepoint is a letter here exactly when it is one for llama.cpp, whichever Unicode version
this Python ships, and every replica splits text the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class _Family:
    regexes: tuple[str, ...]
    ignore_merges: bool = False
    clean_spaces: bool = True
    add_bos: bool = False


# llama.cpp's LLAMA_VOCAB_PRE_TYPE_* families that are supported, with their load-time flags.
_FAMILIES = MappingProxyType({
    "default": _Family((r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]")),
    "llama3": _Family((_LLAMA3,), ignore_merges=True, add_bos=True),
    "qwen2": _Family((_QWEN2,), clean_spaces=False),
    "smollm": _Family((r"\p{N}", _GPT2), clean_spaces=False),
    "gpt2": _Family((_GPT2,)),
})
# tokenizer.ggml.pre -> family, as llama.cpp's llama_vocab::impl::load maps them.
_NAMES = MappingProxyType({
    "default": "default",
    "llama3": "llama3",
    "llama-v3": "llama3",
    "llama-bpe": "llama3",
    "qwen2": "qwen2",
    "deepseek-r1-qwen": "qwen2",
    "smollm": "smollm",
    "gpt-2": "gpt2",
})
SUPPORTED_NAMES = tuple(_NAMES)


def _load_classes() -> Mapping[str, str]:
    """Regex class bodies (the part between brackets) for each escape that llama.cpp tabulates."""
    table = json.loads((Path(__file__).parent / "unicode_classes.json").read_text(encoding="utf-8"))

    def ranges(pairs: list[list[int]]) -> str:
        return "".join(rf"\U{lo:08x}-\U{hi:08x}" if hi > lo else rf"\U{lo:08x}" for lo, hi in pairs)

    whitespace = "".join(rf"\U{cp:08x}" for cp in table["whitespace"])
    return MappingProxyType({
        r"\p{L}": ranges(table["letter"]),
        r"\p{N}": ranges(table["number"]),
        r"\p{P}": ranges(table["punctuation"]),
        r"\s": whitespace,
    })


_CLASSES = _load_classes()
_NOT_WHITESPACE = "[^" + _CLASSES[r"\s"] + "]"
_ESCAPE = re.compile(r"\\p\{[A-Za-z]+\}|\\[sS]|\\.|\[\^?|\]|[^\\\[\]]+")


def translate(regex: str) -> str:
    """A llama.cpp regex with its Unicode escapes replaced by classes from llama.cpp's table."""
    out: list[str] = []
    inside = False
    for token in _ESCAPE.findall(regex):
        if token.startswith("["):
            inside = True
            out.append(token)
        elif token == "]" and inside:
            inside = False
            out.append(token)
        elif token == r"\S":
            if inside:
                raise ValueError(f"\\S inside a character class is not supported: {regex!r}")
            out.append(_NOT_WHITESPACE)
        elif token in _CLASSES:
            out.append(_CLASSES[token] if inside else f"[{_CLASSES[token]}]")
        elif token.startswith(r"\p{"):
            raise ValueError(f"Unicode class {token} is not in llama.cpp's table: {regex!r}")
        else:
            out.append(token)
    return "".join(out)


@dataclass(frozen=True)
class PreTokenizer:
    name: str  # the tokenizer.ggml.pre value
    patterns: tuple[re.Pattern[str], ...] = field(repr=False)
    ignore_merges: bool  # a word that is already a token skips the merges (llama3)
    clean_spaces: bool  # detokenizing removes the space before . , ! ? and some contractions
    add_bos: bool  # llama.cpp's default for add_bos, before tokenizer.ggml.add_bos_token

    def split(self, text: str) -> list[str]:
        """The words of `text`, in order; their concatenation is `text`."""
        words = [text] if text else []
        for pattern in self.patterns:
            words = [piece for word in words for piece in _split(pattern, word)]
        return words


def _split(pattern: re.Pattern[str], text: str) -> list[str]:
    pieces: list[str] = []
    last = 0
    for match in pattern.finditer(text):
        start, end = match.span()
        if start > last:
            pieces.append(text[last:start])
        if end > start:
            pieces.append(text[start:end])
        last = end
    if last < len(text):
        pieces.append(text[last:])
    return pieces


def pre_tokenizer(name: str) -> PreTokenizer:
    """The pre-tokenizer for a `tokenizer.ggml.pre` value ("" means llama.cpp's fallback, default)."""
    family_name = _NAMES.get(name or "default")
    if family_name is None:
        raise ValueError(
            f"unsupported pre-tokenizer tokenizer.ggml.pre={name!r}; supported: {', '.join(SUPPORTED_NAMES)}. "
            "Use a model whose tokenizer is one of these."
        )
    family = _FAMILIES[family_name]
    return PreTokenizer(
        name=name or "default",
        patterns=tuple(re.compile(translate(regex)) for regex in family.regexes),
        ignore_merges=family.ignore_merges,
        clean_spaces=family.clean_spaces,
        add_bos=family.add_bos,
    )
