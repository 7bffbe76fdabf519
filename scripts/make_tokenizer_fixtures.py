"""Write tests/fixtures/tokenizer/{smollm2,stories}_corpus.json: tokenizers as llama.cpp runs them.

The reference is llama.cpp itself, through llama-cpp-python (0.3.36): for each text of the corpus,
`Llama.tokenize(text, add_bos=False, special=False)`, every token's `llama_token_to_piece`,
`Llama.detokenize(ids)` (the pieces joined) and `llama_detokenize` (with llama.cpp's space handling);
for a few texts with special tokens the same with special parsing; and the vocabulary's special
tokens (BOS, EOS, EOT, end-of-generation set, non-normal token attributes).

SmolLM2 is byte-level BPE (pre-tokenizer smollm); stories260Ktok512 is SentencePiece with only 512
tokens, so most characters fall back to bytes.

Run with an interpreter that has llama_cpp (it needs nothing else of this repository):
    /tmp/llamaref/bin/python scripts/make_tokenizer_fixtures.py \
        --smollm2 path/to/SmolLM2-135M-Instruct.Q4_1.gguf --stories ../shared/models/stories260Ktok512.gguf
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
from pathlib import Path

import llama_cpp

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tokenizer"

CORPUS = (
    "Hello world",
    " Hello world",
    "Hello  world",
    "   leading and trailing   ",
    "Ends with a space ",
    "  multiple   spaces   between  words  ",
    "\t\ttabs\tand\ttabs",
    "Tab\tseparated\tvalues\n1\t2\t3",
    "line one\nline two\n\nline four\n",
    "\r\nWindows\r\nnewlines\r\n",
    "   ",
    "\n\n\n",
    "a",
    "It's, isn't, we'll, they've, I'm, she'd, they're",
    "IT'S LOUD, WE'LL SEE, THEY'RE HERE",
    "'quoted' and \"double quoted\" and `backticks`",
    "0123456789",
    "3.14159 2,718 1e-10 -42 +7 100%",
    "Call 555-0123 or +1 (800) 555-0199.",
    "The year 2024 had 366 days; 2025 has 365.",
    "2024年5月1日",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    '{"key": "value", "list": [1, 2, 3], "nested": {"a": null}}',
    '<html><body class="x">Hi &amp; bye</body></html>',
    "snake_case camelCase PascalCase kebab-case SCREAMING_CASE",
    "https://example.com/path?query=1&b=2#frag user@example.org",
    "!!!???...,,,;;;:::",
    "\u2014\u2013-\u2018\u2019\u201c\u201d\u2026\u2022",
    "naïve café résumé coöperate façade",
    "Größe, Straße, Äpfel, Übung",
    "e\u0301 versus \u00e9 (combining acute)",
    "Ελληνικά και русский язык",
    "日本語のテキストです。",
    "中文分词测试，包括标点符号！",
    "한국어 문장입니다.",
    "مرحبا بالعالم",
    "हिन्दी पाठ",
    "mixed: English, 日本語, Русский, العربية, 123",
    "😀😃😄 emoji 👍🏽 family 👨\u200d👩\u200d👧\u200d👦 flag 🇯🇵",
    "½ ¼ ¾ ² ³ ١٢٣ ٤٥٦ Ⅻ",
    "x²+y²=z²; ∑∫√∞≠≤≥",
    "Ünïcödé 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝒻𝒶𝓃𝒸𝓎",
    "Zero\u200bwidth\u200djoiner and\ufeffBOM",
    "nbsp\u00a0here and\u3000ideographic space",
    "\u2028line separator\u2029paragraph separator\u0085next line",
    "control \x01\x02\x1f characters",
    # SmolLM2 has no token for bytes 0x06 and 0xF1 (the lead byte of U+40000..U+7FFFF): llama.cpp drops them
    "drop\x06ped \U00040000 bytes",
    # letters of Unicode 16 (Tulu-Tigalari) inside a word: unassigned in llama.cpp's Unicode 15.1
    # table, so they split the word there; a newer Unicode table would keep the word whole
    "Tulu\U00011380\U00011381Tigalari script",
    "\ue000 private use \U0010fffd",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "<|im_start|>user\nnot parsed as special here<|im_end|>",
)

SPECIAL_CORPUS = {
    "smollm2": (
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
        "text<|endoftext|>more text",
        "<repo_name>icllama<file_sep>README.md<|im_end|>",
        "<|im_start|><|im_start|>",
    ),
    "stories": (
        "<s>Once upon a time</s>",
        "Once<s>upon</s> a <unk>time",
        " <s> spaced </s> ",
        "<s><s>",
    ),
}


def pieces(vocab: int, ids: list[int], special: bool) -> list[str]:
    """llama_token_to_piece of each token, as hex (a piece may be part of a UTF-8 character)."""
    out = []
    for token in ids:
        buffer = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, special)
        if n < 0:
            raise RuntimeError(f"piece of token {token} is longer than {len(buffer)} bytes")
        out.append(buffer.raw[:n].hex())
    return out


def llama_detokenize(vocab: int, ids: list[int], special: bool) -> str:
    """llama_detokenize(remove_special=False, unparse_special=special): with llama.cpp's space handling."""
    tokens = (llama_cpp.llama_token * len(ids))(*ids)
    buffer = ctypes.create_string_buffer(64 + 32 * len(ids))
    n = llama_cpp.llama_detokenize(vocab, tokens, len(ids), buffer, len(buffer), False, special)
    if n < 0:
        raise RuntimeError(f"detokenized text is longer than {len(buffer)} bytes")
    return buffer.raw[:n].decode("utf-8", "replace")


def reference(model: Path, special_corpus: tuple[str, ...]) -> dict:
    llm = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)
    vocab = llm._model.vocab
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

    cases = []
    for text in CORPUS:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        cases.append({
            "text": text,
            "ids": ids,
            "pieces": pieces(vocab, ids, special=False),
            # invalid UTF-8 (only where a dropped byte left a character incomplete) becomes U+FFFD
            "detokenized": llm.detokenize(ids).decode("utf-8", "replace"),
            "llama_detokenize": llama_detokenize(vocab, ids, special=False),
        })
    special_cases = []
    for text in special_corpus:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        special_cases.append({
            "text": text,
            "ids": ids,
            "ids_add_special": llm.tokenize(text.encode("utf-8"), add_bos=True, special=True),
            "detokenized": llm.detokenize(ids).decode("utf-8"),
            "detokenized_special": llm.detokenize(ids, special=True).decode("utf-8"),
            "llama_detokenize": llama_detokenize(vocab, ids, special=False),
            "llama_detokenize_special": llama_detokenize(vocab, ids, special=True),
        })

    def optional(token: int) -> int | None:
        return None if token < 0 else token

    return {
        "source": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}, Llama(vocab_only=True)",
        "model": model.name,
        "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "vocab": {
            "n_tokens": n_vocab,
            "bos": optional(llama_cpp.llama_vocab_bos(vocab)),
            "eos": optional(llama_cpp.llama_vocab_eos(vocab)),
            "eot": optional(llama_cpp.llama_vocab_eot(vocab)),
            "eog": [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)],
            "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
            "add_eos": bool(llama_cpp.llama_vocab_get_add_eos(vocab)),
            # llama_token_attr of every token that is not plain NORMAL (4)
            "attrs": {str(t): a for t in range(n_vocab) if (a := int(llama_cpp.llama_vocab_get_attr(vocab, t))) != 4},
        },
        "cases": cases,
        "special_cases": special_cases,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smollm2", type=Path, help="SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--stories", type=Path, help="stories260Ktok512.gguf")
    args = parser.parse_args()
    models = {name: path for name, path in (("smollm2", args.smollm2), ("stories", args.stories)) if path}
    if not models:
        parser.error("give --smollm2 and/or --stories")
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, path in models.items():
        document = reference(path, SPECIAL_CORPUS[name])
        output = FIXTURES / f"{name}_corpus.json"
        output.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {output}: {len(document['cases'])} texts, {len(document['special_cases'])} with special tokens")


if __name__ == "__main__":
    main()
