"""`icllama tokenize MODEL [TEXT] [--file JSON_LIST] [--add-special] [--parse-special] [--json]`.

By default no BOS/EOS is added and special-token text is not parsed, as llama.cpp's tokenizer
tests do.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from canisters.llama.gguf_file import read_gguf
from canisters.llama.tokenizer import Tokenizer
from client.catalog import resolve_model
from client.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tokenize", help="print the token ids of a text")
    parser.add_argument("model", help="catalog name or path to a .gguf file")
    parser.add_argument("text", nargs="?", help="the text (or use --file)")
    parser.add_argument("--file", type=Path,
                        help="a JSON file holding a list of strings; prints a list of lists (default: tokenize TEXT)")
    parser.add_argument("--add-special", action="store_true", help="add BOS/EOS as the model's metadata asks")
    parser.add_argument("--parse-special", action="store_true", help="turn special-token text into its token")
    parser.add_argument("--json", action="store_true", help="print JSON (a list, or a list of lists with --file)")
    parser.set_defaults(func=run)


def _texts(args: argparse.Namespace) -> list[str] | str:
    if args.file is None:
        if args.text is None:
            raise UserError("give a TEXT to tokenize, or --file with a JSON list of strings")
        return args.text
    try:
        texts = json.loads(args.file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"could not read {args.file} as JSON: {e}") from None
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise UserError(f"{args.file} must hold a JSON list of strings")
    return texts


def run(args: argparse.Namespace) -> int:
    texts = _texts(args)
    tokenizer = Tokenizer.from_metadata(read_gguf(resolve_model(args.model, quiet=True)).fields)

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special=args.add_special, parse_special=args.parse_special)

    result = [encode(t) for t in texts] if isinstance(texts, list) else encode(texts)
    if args.json:
        json.dump(result, sys.stdout)
        print()
    elif isinstance(texts, list):
        for ids in result:
            print(" ".join(map(str, ids)))
    else:
        print(" ".join(map(str, result)))
    return 0
