"""The prompt and sampling options shared by `icllama run` and `icllama generate`."""

from __future__ import annotations

import argparse

from client.errors import UserError
from client.head_client import GenerationOptions


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--prompt", required=True)
    parser.add_argument("-n", "--max-tokens", type=int, default=64)
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-k", type=int, default=40)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--min-p", type=float, default=0.05)
    parser.add_argument("--repeat-penalty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")


def options_from(args: argparse.Namespace) -> GenerationOptions:
    if args.max_tokens < 1:
        raise UserError("-n/--max-tokens must be at least 1")
    return GenerationOptions(max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                             top_p=args.top_p, min_p=args.min_p, repeat_penalty=args.repeat_penalty, seed=args.seed,
                             stop=tuple(args.stop), chat=args.chat)
