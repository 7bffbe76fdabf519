"""Tokenizer from GGUF metadata, matching llama.cpp's src/llama-vocab.cpp.

Two vocabulary types, as `tokenizer.ggml.model` names them:

- `llama`: SentencePiece (SPM). Spaces become "▁", a space is prefixed to text that starts the
  input or follows a special token (`add_space_prefix`), adjacent symbols merge by highest token
  score, and characters that end up as no token fall back to `<0xXX>` byte tokens.
- `gpt2`: byte-level BPE. A pre-tokenizer (pretokenize.py) splits the text into words, each
  word's UTF-8 bytes are mapped to GPT-2's printable characters, and adjacent symbols merge by
  lowest merge rank.

Special tokens (control, user-defined, unknown) are cut out of the text before either, longest
first: user-defined ones always, control and unknown ones only with `parse_special`.

Detokenizing follows llama_token_to_piece (a piece is bytes: a byte-fallback token is one byte,
possibly part of a multi-byte character) and llama_detokenize (SPM drops the prefixed space of
the first token; some BPE pre-tokenizers clean spaces before punctuation). `detokenize_step`
streams text token by token and never splits a character.

All tables are built once, in `from_metadata`, and never change afterwards.
"""

from __future__ import annotations

import codecs
import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntFlag
from itertools import pairwise
from types import MappingProxyType
from typing import Any

from canisters.llama.meter import Meter, NullMeter
from canisters.llama.pretokenize import PreTokenizer, pre_tokenizer


class TokenizerError(ValueError):
    """Bad tokenizer metadata or bad input; the message says what is wrong and what to do."""


class TokenAttr(IntFlag):
    """llama.cpp's llama_token_attr."""

    UNDEFINED = 0
    UNKNOWN = 1 << 0
    UNUSED = 1 << 1
    NORMAL = 1 << 2
    CONTROL = 1 << 3
    USER_DEFINED = 1 << 4
    BYTE = 1 << 5


# GGUF tokenizer.ggml.token_type values -> attributes; anything else is UNDEFINED.
_TYPE_ATTRS = MappingProxyType({
    1: TokenAttr.NORMAL,
    2: TokenAttr.UNKNOWN,
    3: TokenAttr.CONTROL,
    4: TokenAttr.USER_DEFINED,
    5: TokenAttr.UNUSED,
    6: TokenAttr.BYTE,
})
_SPECIAL = TokenAttr.CONTROL | TokenAttr.UNKNOWN  # pieces hidden unless special=True

# Token texts by which llama.cpp recognizes special roles when the metadata does not name them.
# Each recognized token is also made a control token.
_EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
              "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>")
_EOM_TEXTS = ("<|eom_id|>",)
_FIM_TEXTS = MappingProxyType({
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
})
# Tokens that end generation, by text (llama.cpp's special_eog_ids).
_EOG_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
              "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
              "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
              "<｜end▁of▁sentence｜>", "[e~[")

_KEY = "tokenizer.ggml."
_KIND_NAMES = MappingProxyType({str: "a string", int: "an integer", bool: "a boolean", list: "an array"})
_ID_KEYS = MappingProxyType({
    "bos": ("bos_token_id",),
    "eos": ("eos_token_id",),
    "eot": ("eot_token_id",),
    "eom": ("eom_token_id",),
    "unk": ("unknown_token_id",),
    "sep": ("seperator_token_id",),  # sic: the GGUF key is spelled this way
    "pad": ("padding_token_id",),
    "fim_pre": ("fim_pre_token_id", "prefix_token_id"),
    "fim_suf": ("fim_suf_token_id", "suffix_token_id"),
    "fim_mid": ("fim_mid_token_id", "middle_token_id"),
    "fim_pad": ("fim_pad_token_id",),
    "fim_rep": ("fim_rep_token_id",),
    "fim_sep": ("fim_sep_token_id",),
})
_SPM_DEFAULT_IDS = MappingProxyType({"bos": 1, "eos": 2, "unk": 0})
_BPE_DEFAULT_IDS = MappingProxyType({"bos": 11, "eos": 11})


def _gpt2_byte_chars() -> tuple[str, ...]:
    """GPT-2's map from each byte to a printable character (bytes_to_unicode)."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return tuple(chars[b] for b in range(256))


_BYTE_CHARS = _gpt2_byte_chars()
_BYTES_TO_CHARS = MappingProxyType(dict(enumerate(_BYTE_CHARS)))  # str.translate table over latin-1 text
_CHAR_TO_BYTE = MappingProxyType({c: b for b, c in enumerate(_BYTE_CHARS)})
_SPM_SPACE = "\u2581"  # "▁"


@dataclass(frozen=True)
class SpecialIds:
    bos: int | None
    eos: int | None
    eot: int | None
    eom: int | None
    unk: int | None
    sep: int | None
    pad: int | None
    fim_pre: int | None
    fim_suf: int | None
    fim_mid: int | None
    fim_pad: int | None
    fim_rep: int | None
    fim_sep: int | None
    eog: frozenset[int]  # tokens that end generation


@dataclass(frozen=True)
class DetokenizerState:
    """Where a token stream stands: the first bytes of a character whose other bytes are still to come."""

    pending: bytes = b""


@dataclass(frozen=True, eq=False)
class Tokenizer:
    model: str  # tokenizer.ggml.model: "llama" (SPM) or "gpt2" (byte-level BPE)
    tokens: tuple[str, ...] = field(repr=False)
    scores: tuple[float, ...] = field(repr=False)
    attrs: tuple[TokenAttr, ...] = field(repr=False)
    special: SpecialIds
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    pre: PreTokenizer | None  # BPE only
    _token_ids: Mapping[str, int] = field(repr=False)
    _merge_ranks: Mapping[tuple[str, str], int] = field(repr=False)
    _byte_tokens: tuple[int | None, ...] = field(repr=False)  # SPM byte fallback, by byte value
    _pieces: tuple[bytes, ...] = field(repr=False)  # llama_token_to_piece(id, special=True) for every id
    _specials_all: tuple[int, ...] = field(repr=False)  # cut out with parse_special, longest text first
    _specials_user: tuple[int, ...] = field(repr=False)  # cut out always (user-defined), longest text first

    # construction

    @classmethod
    def from_metadata(cls, fields: Mapping[str, Any]) -> Tokenizer:
        """Build from GGUF metadata (key -> value), as llama.cpp's llama_vocab::impl::load does."""
        model = _get(fields, "model", str)
        if model is None:
            raise TokenizerError("the model has no tokenizer (tokenizer.ggml.model is missing); "
                                 "use a GGUF file converted with its tokenizer")
        if model not in ("llama", "gpt2"):
            raise TokenizerError(f"unsupported tokenizer.ggml.model={model!r}: supported are 'llama' "
                                 "(SentencePiece) and 'gpt2' (byte-level BPE)")
        raw_tokens = _get(fields, "tokens", list)
        if not raw_tokens:
            raise TokenizerError("tokenizer.ggml.tokens is missing or empty; the GGUF file has no vocabulary")
        n = len(raw_tokens)
        _check_items(raw_tokens, str, "tokens")
        tokens = tuple(t if t else f"[EMPTY_{i}]" for i, t in enumerate(raw_tokens))
        scores = _get(fields, "scores", list)
        types = _get(fields, "token_type", list)
        for name, values in (("scores", scores), ("token_type", types)):
            if values is not None and len(values) < n:
                raise TokenizerError(f"tokenizer.ggml.{name} has {len(values)} entries for {n} tokens; "
                                     "the GGUF file is corrupt")
        token_ids = {text: i for i, text in enumerate(tokens)}  # a repeated text maps to its last id
        attrs = [_TYPE_ATTRS.get(t, TokenAttr.UNDEFINED) for t in types[:n]] if types else [TokenAttr.NORMAL] * n

        is_spm = model == "llama"
        pre = None
        merge_ranks: dict[tuple[str, str], int] = {}
        if is_spm:
            add_bos, add_space_prefix, default_ids = True, True, _SPM_DEFAULT_IDS
        else:
            try:
                pre = pre_tokenizer(_get(fields, "pre", str) or "")
            except ValueError as e:
                raise TokenizerError(str(e)) from None
            add_bos, add_space_prefix, default_ids = pre.add_bos, False, _BPE_DEFAULT_IDS
            merge_ranks = _merge_ranks(fields)
        add_space_prefix = _get(fields, "add_space_prefix", bool, add_space_prefix)

        ids = _special_ids(fields, n, default_ids)
        add_bos = _get(fields, "add_bos_token", bool, add_bos)
        add_eos = _get(fields, "add_eos_token", bool, False)

        _recognize_roles(token_ids, attrs, ids)
        eog = {ids[r] for r in ("fim_pad", "fim_rep", "fim_sep") if ids[r] is not None}
        for text in _EOG_TEXTS:
            if text in token_ids:
                eog.add(token_ids[text])
                attrs[token_ids[text]] |= TokenAttr.CONTROL
        eog.update(ids[r] for r in ("eos", "eot", "eom") if ids[r] is not None)

        byte_tokens = tuple(
            token_ids.get(f"<0x{b:02X}>", token_ids.get(chr(b)) if b < 0x80 else None) for b in range(256)
        )
        specials = sorted((i for i in range(n) if attrs[i] & (_SPECIAL | TokenAttr.USER_DEFINED)),
                          key=lambda i: -len(tokens[i].encode("utf-8")))
        final_attrs = tuple(attrs)
        return cls(
            model=model,
            tokens=tokens,
            scores=tuple(float(s) for s in scores[:n]) if scores else (0.0,) * n,
            attrs=final_attrs,
            special=SpecialIds(**ids, eog=frozenset(eog)),
            add_bos=add_bos,
            add_eos=add_eos,
            add_space_prefix=add_space_prefix,
            pre=pre,
            _token_ids=token_ids,
            _merge_ranks=merge_ranks,
            _byte_tokens=byte_tokens,
            _pieces=tuple(_piece(text, attr, is_spm) for text, attr in zip(tokens, final_attrs, strict=True)),
            _specials_all=tuple(specials),
            _specials_user=tuple(i for i in specials if not attrs[i] & _SPECIAL),
        )

    # queries

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    def token_id(self, text: str) -> int | None:
        """The id of the token whose text is exactly `text`, if there is one."""
        return self._token_ids.get(text)

    def is_eog(self, token_id: int) -> bool:
        """Whether the token ends generation (end of sequence, end of turn, ...)."""
        return token_id in self.special.eog

    # encoding

    def encode(self, text: str, add_special: bool = False, parse_special: bool = False,
               meter: Meter | None = None) -> list[int]:
        """Token ids of `text`, as llama_tokenize(text, add_special, parse_special).

        add_special adds BOS/EOS as the metadata asks (add_bos_token, add_eos_token); parse_special
        turns the texts of control tokens (e.g. "<|im_start|>") into those tokens.
        """
        if not isinstance(text, str):
            raise TokenizerError(f"encode takes a str, got {type(text).__name__}; decode bytes as UTF-8 first")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise TokenizerError(f"the text has an unpaired surrogate at index {e.start} and is not valid "
                                 "Unicode; pass text decoded from valid UTF-8") from None
        meter = meter or NullMeter()
        out: list[int] = []
        if add_special and self.add_bos:
            out.append(self._required("bos"))
        fragments = self._cut_specials(text, parse_special, meter)
        if self.pre is None:
            after_special = True  # the input's start counts as following a special token
            for fragment in fragments:
                if isinstance(fragment, int):
                    out.append(fragment)
                    after_special = True
                else:
                    prefix = " " if self.add_space_prefix and after_special else ""
                    self._encode_spm((prefix + fragment).replace(" ", _SPM_SPACE), out, meter)
                    after_special = False
        else:
            for fragment in fragments:
                if isinstance(fragment, int):
                    out.append(fragment)
                else:
                    for word in self.pre.split(fragment):
                        self._encode_bpe_word(word, out, meter)
                    meter.elementwise(len(fragment))
        if add_special and self.add_eos:
            out.append(self._required("eos"))
        return out

    def _required(self, role: str) -> int:
        token = getattr(self.special, role)
        if token is None:
            raise TokenizerError(f"the metadata asks to add the {role.upper()} token but names none "
                                 f"(tokenizer.ggml.{_ID_KEYS[role][0]}); encode with add_special=False")
        return token

    def _cut_specials(self, text: str, parse_special: bool, meter: Meter) -> list[str | int]:
        """Split text into raw fragments and special token ids (llama.cpp's tokenizer_st_partition)."""
        fragments: list[str | int] = [text] if text else []
        for token in self._specials_all if parse_special else self._specials_user:
            needle = self.tokens[token]
            meter.elementwise(len(text))
            if not any(isinstance(f, str) and needle in f for f in fragments):
                continue
            cut: list[str | int] = []
            for fragment in fragments:
                if isinstance(fragment, int) or needle not in fragment:
                    cut.append(fragment)
                    continue
                for k, part in enumerate(fragment.split(needle)):
                    if k:
                        cut.append(token)
                    if part:
                        cut.append(part)
            fragments = cut
        return fragments

    def _encode_spm(self, text: str, out: list[int], meter: Meter) -> None:
        """llama.cpp's llm_tokenizer_spm_session: merge the best-scoring adjacent pair first."""
        n = len(text)
        start = list(range(n))
        size = [1] * n
        prev = list(range(-1, n - 1))
        nxt = [*range(1, n), -1]
        ids, scores = self._token_ids, self.scores
        queue: list[tuple[float, int, int, int]] = []  # (-score, left, right, merged size)

        def push(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            token = ids.get(text[start[left] : start[left] + size[left] + size[right]])
            if token is not None:
                heapq.heappush(queue, (-scores[token], left, right, size[left] + size[right]))

        for i in range(1, n):
            push(i - 1, i)
        work = n
        while queue:
            _, left, right, merged = heapq.heappop(queue)
            work += 1
            if size[left] == 0 or size[right] == 0 or size[left] + size[right] != merged:
                continue  # one side was merged since this pair was queued
            size[left] = merged
            size[right] = 0
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            push(prev[left], left)
            push(left, nxt[left])
        meter.elementwise(work)

        i = 0 if n else -1
        while i != -1:
            symbol = text[start[i] : start[i] + size[i]]
            token = ids.get(symbol)
            if token is not None:
                out.append(token)
            else:
                out.extend(self._byte_token(b, symbol) for b in symbol.encode("utf-8"))
            i = nxt[i]

    def _byte_token(self, byte: int, symbol: str) -> int:
        token = self._byte_tokens[byte]
        if token is None:
            raise TokenizerError(f"cannot encode {symbol!r}: it is no token and the vocabulary has no "
                                 f"byte-fallback token <0x{byte:02X}>")
        return token

    def _encode_bpe_word(self, word: str, out: list[int], meter: Meter) -> None:
        """llama.cpp's llm_tokenizer_bpe_session for one word: merge the lowest-ranked pair first."""
        ids = self._token_ids
        encoded = word.encode("utf-8").decode("latin-1").translate(_BYTES_TO_CHARS)
        if self.pre.ignore_merges and encoded in ids:
            out.append(ids[encoded])
            return
        parts = list(encoded)
        ranks = self._merge_ranks
        never = len(ranks)
        pair_ranks = [ranks.get(pair, never) for pair in pairwise(parts)]
        work = len(parts)
        while pair_ranks:
            best_rank = min(pair_ranks)
            if best_rank == never:
                break
            best = pair_ranks.index(best_rank)  # the leftmost of equal ranks
            parts[best : best + 2] = [parts[best] + parts[best + 1]]
            del pair_ranks[best]
            if best > 0:
                pair_ranks[best - 1] = ranks.get((parts[best - 1], parts[best]), never)
            if best < len(pair_ranks):
                pair_ranks[best] = ranks.get((parts[best], parts[best + 1]), never)
            work += len(pair_ranks) + 2
        meter.elementwise(work)
        for part in parts:
            token = ids.get(part)
            if token is not None:
                out.append(token)
            else:  # as llama.cpp: fall back to single-byte tokens, which only ASCII can have
                out.extend(ids[chr(b)] for b in part.encode("utf-8") if b < 0x80 and chr(b) in ids)

    # decoding

    def token_to_piece(self, token_id: int, special: bool = False, lstrip: int = 0) -> bytes:
        """The bytes of one token, as llama_token_to_piece(token, lstrip, special).

        Control and unknown tokens give b"" unless `special`; up to `lstrip` leading spaces are dropped.
        """
        if not 0 <= token_id < len(self._pieces):
            raise TokenizerError(f"token id {token_id} is outside the vocabulary (0..{len(self._pieces) - 1})")
        if not special and self.attrs[token_id] & _SPECIAL:
            return b""
        piece = self._pieces[token_id]
        for _ in range(lstrip):
            if not piece.startswith(b" "):
                break
            piece = piece[1:]
        return piece

    def decode(self, ids: Iterable[int], special: bool = False) -> str:
        """Text of the ids, as llama_detokenize(remove_special=False, unparse_special=special).

        SPM vocabularies drop the leading space of the first piece (the one add_space_prefix put
        there); pre-tokenizers with clean_spaces remove spaces before punctuation as llama.cpp
        does. Bytes that are not valid UTF-8 become U+FFFD.
        """
        pieces = []
        strip_first = 1 if self.add_space_prefix else 0
        for k, token in enumerate(ids):
            pieces.append(self.token_to_piece(token, special, strip_first if k == 0 else 0))
        text = b"".join(pieces).decode("utf-8", "replace")
        return _clean_spaces(text) if self.pre is not None and self.pre.clean_spaces else text

    def detokenize_step(self, state: DetokenizerState, token_id: int,
                        special: bool = False) -> tuple[str, DetokenizerState]:
        """Stream decoding: the text one more token completes, and the state to pass next time.

        Pieces are concatenated as llama.cpp streams them (token_to_piece, no space handling). A
        character split across tokens (byte fallback, partial UTF-8) is held until it is complete;
        bytes that can never form a character become U+FFFD at once.
        """
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        text = decoder.decode(state.pending + self.token_to_piece(token_id, special), final=False)
        pending, _ = decoder.getstate()
        return text, DetokenizerState(pending)

    def detokenize_end(self, state: DetokenizerState) -> str:
        """What is left of the stream at its end (an incomplete character becomes U+FFFD)."""
        return state.pending.decode("utf-8", "replace")


def _get(fields: Mapping[str, Any], name: str, kind: type, default: Any = None) -> Any:
    key = name if name.startswith("tokenizer.") else _KEY + name
    value = fields.get(key)
    if value is None:
        return default
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise TokenizerError(f"{key} should be {_KIND_NAMES[kind]}, got {type(value).__name__}; "
                             "the GGUF metadata is malformed")
    return value


def _merge_ranks(fields: Mapping[str, Any]) -> dict[tuple[str, str], int]:
    """(left, right) -> rank, split at the first space after the first character as llama.cpp does."""
    merges = _get(fields, "merges", list)
    if merges is None:
        raise TokenizerError("tokenizer.ggml.merges is missing; a gpt2 (BPE) tokenizer needs its merges")
    _check_items(merges, str, "merges")
    ranks: dict[tuple[str, str], int] = {}
    for rank, merge in enumerate(merges):
        cut = merge.find(" ", 1)
        ranks.setdefault((merge[:cut], merge[cut + 1 :]) if cut >= 0 else ("", ""), rank)
    return ranks


def _special_ids(fields: Mapping[str, Any], n: int, defaults: Mapping[str, int]) -> dict[str, int | None]:
    """Special token ids from the metadata; an id outside the vocabulary keeps the default."""
    ids: dict[str, int | None] = {}
    for role, keys in _ID_KEYS.items():
        default = defaults.get(role)
        ids[role] = default if default is not None and default < n else None
        for key in keys:
            value = _get(fields, key, int)
            if value is not None and 0 <= value < n:
                ids[role] = value
                break
    return ids


def _check_items(values: list[Any], kind: type, name: str) -> None:
    wrong = next((v for v in values if not isinstance(v, kind)), None)
    if wrong is not None:
        raise TokenizerError(f"tokenizer.ggml.{name} should hold {_KIND_NAMES[kind]} in each item, found "
                             f"{type(wrong).__name__} {wrong!r}; the GGUF metadata is malformed")


def _recognize_roles(token_ids: Mapping[str, int], attrs: list[TokenAttr],
                     ids: dict[str, int | None]) -> None:
    """Find end-of-turn and fill-in-the-middle tokens by text when the metadata names none."""
    candidates = {"eot": _EOT_TEXTS, "eom": _EOM_TEXTS, **_FIM_TEXTS}
    for role, texts in candidates.items():
        if ids[role] is not None:
            continue
        # llama.cpp takes whichever candidate its hash map yields first; here the first one listed
        found = next((token_ids[t] for t in texts if t in token_ids), None)
        if found is not None:
            ids[role] = found
            attrs[found] |= TokenAttr.CONTROL


def _piece(text: str, attr: TokenAttr, is_spm: bool) -> bytes:
    """llama_token_to_piece(special=True) for one token."""
    if attr & (_SPECIAL | TokenAttr.USER_DEFINED):
        return text.encode("utf-8")
    if attr & TokenAttr.NORMAL:
        if is_spm:
            return text.replace(_SPM_SPACE, " ").encode("utf-8")
        return _decode_byte_chars(text)
    if attr & TokenAttr.BYTE:
        if len(text) != 6 or not text.startswith("<0x") or not text.endswith(">"):
            raise TokenizerError(f"byte token {text!r} is not of the form <0xXX>; the GGUF vocabulary is corrupt")
        return bytes([int(text[3:5], 16)])
    return b""


def _decode_byte_chars(text: str) -> bytes:
    """GPT-2 printable characters back to bytes (llama.cpp's llama_decode_text)."""
    out = bytearray()
    for ch in text:
        byte = _CHAR_TO_BYTE.get(ch)
        if byte is not None:
            out.append(byte)
        else:  # llama.cpp's marker for a character outside the byte map
            out += f"[UNK_BYTE_0x{ch.encode('utf-8').hex()}{text}]".encode()
    return bytes(out)


def _clean_spaces(text: str) -> str:
    """llama_detokenize's clean_spaces passes, ported loop for loop (their quirks included)."""
    chars = list(text)

    def first_pass(t: list[str]) -> list[str]:  # " ?", " !", " .", " ,": drop the space
        out = t[:1]
        for i in range(1, len(t)):
            if t[i - 1] == " " and t[i] in "?!.,":
                out.pop()
            out.append(t[i])
        return out

    def second_pass(t: list[str]) -> list[str]:  # " ' ": drop both spaces
        t = list(t)
        out = t[:1]
        i = 1
        while i < len(t):
            x = t[i]
            if x == "'" and i + 1 < len(t) and t[i - 1] == " " and t[i + 1] == " ":
                out.pop()
                i += 1
                t[i] = "\0"  # as in llama.cpp, the next comparison sees this, not the space
            out.append(x)
            i += 1
        return out

    def third_pass(t: list[str]) -> list[str]:  # " 's", " 'm", " 're", " 've": drop the space
        out = t[:1]
        for i in range(1, len(t)):
            x = t[i]
            if t[i - 1] == " " and x == "'" and i + 1 < len(t):
                x1 = t[i + 1]
                x2 = t[i + 2] if i + 2 < len(t) else ""
                if x1 in ("s", "m") or (x1 not in ("t", "d") and x2 and x1 + x2 in ("re", "ve")):
                    out.pop()
            out.append(x)
        return out

    return "".join(third_pass(second_pass(first_pass(chars))))
