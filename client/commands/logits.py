"""`icllama logits MODEL --tokens 1,2,3 --out F.npy`: teacher-forced logits, for comparing with
other implementations."""

from __future__ import annotations

import argparse

import numpy as np

from canisters.llama.gguf_file import read_gguf
from canisters.llama.meter import NullMeter
from canisters.llama.model import STRATEGIES, Llama
from client.catalog import resolve_model
from client.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("logits", help="write teacher-forced logits (n_tokens x n_vocab, f32) to .npy")
    parser.add_argument("model", help="catalog name or path to a .gguf file")
    parser.add_argument("--tokens", required=True, help="comma-separated token ids, e.g. 1,2,3")
    parser.add_argument("--out", required=True, help="output .npy file")
    parser.add_argument("--weights", choices=STRATEGIES, default="quantized",
                        help="weight strategy (default quantized)")
    parser.set_defaults(func=run)


def parse_token_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--tokens must be comma-separated integers, got {text!r}") from None
    if not ids:
        raise UserError("--tokens is empty: give at least one token id")
    return ids


def run(args: argparse.Namespace) -> int:
    ids = parse_token_ids(args.tokens)
    model = Llama.load(read_gguf(resolve_model(args.model)), args.weights, n_ctx=len(ids))
    try:
        logits = model.forward(ids, model.new_cache(len(ids)), 0, NullMeter(), all_logits=True)
    except ValueError as e:
        raise UserError(str(e)) from None
    np.save(args.out, logits.astype(np.float32))
    print(f"wrote {args.out}: {logits.shape[0]} x {logits.shape[1]} f32")
    return 0
