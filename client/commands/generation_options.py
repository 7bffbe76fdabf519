"""The prompt and sampling options shared by `icllama run` and `icllama generate`."""

from __future__ import annotations

import argparse

from canisters.llama.sampler import SamplingError, SamplingParams
from client.errors import UserError
from client.head_client import GenerationOptions

DEFAULTS = GenerationOptions()


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--prompt", required=True, help="the prompt text (required)")
    parser.add_argument("-n", "--max-tokens", type=int, default=DEFAULTS.max_tokens,
                        help=f"tokens to generate at most (default {DEFAULTS.max_tokens})")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    parser.add_argument("--temperature", type=float, default=DEFAULTS.temperature,
                        help=f"sampling temperature; 0 = greedy (default {DEFAULTS.temperature:g})")
    parser.add_argument("--top-k", type=int, default=DEFAULTS.top_k,
                        help=f"sample among the k likeliest tokens; 0 = off (default {DEFAULTS.top_k})")
    parser.add_argument("--top-p", type=float, default=DEFAULTS.top_p,
                        help=f"nucleus sampling, in (0, 1]; 1 = off (default {DEFAULTS.top_p:g})")
    parser.add_argument("--min-p", type=float, default=DEFAULTS.min_p,
                        help=f"drop tokens below min-p x the likeliest's probability, in [0, 1]; 0 = off "
                             f"(default {DEFAULTS.min_p:g})")
    parser.add_argument("--repeat-penalty", type=float, default=DEFAULTS.repeat_penalty,
                        help=f"penalty for repeating recent tokens; 1 = off (default {DEFAULTS.repeat_penalty:g})")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed,
                        help=f"sampling seed; the same seed draws the same tokens (default {DEFAULTS.seed})")
    parser.add_argument("--stop", action="append", default=[],
                        help="stop when this text is generated (repeatable; default none)")


def options_from(args: argparse.Namespace) -> GenerationOptions:
    """The options, checked with the sampler's own rules before any model is read or uploaded."""
    if args.max_tokens < 1:
        raise UserError(f"-n/--max-tokens must be at least 1, got {args.max_tokens}")
    if not all(args.stop):
        raise UserError("--stop needs a non-empty text")
    options = GenerationOptions(max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                                top_p=args.top_p, min_p=args.min_p, repeat_penalty=args.repeat_penalty,
                                seed=args.seed, stop=tuple(args.stop), chat=args.chat)
    try:
        SamplingParams(temperature=options.temperature, top_k=options.top_k, top_p=options.top_p,
                       min_p=options.min_p, repeat_penalty=options.repeat_penalty, seed=options.seed,
                       stop=options.stop)
    except SamplingError as error:
        # "top_p must be in (0, 1] ...; got SamplingParams(...)" -> "--top-p must be in (0, 1] ...; got 2.0"
        rule = str(error).split("; got ")[0]
        name = rule.split()[0]
        value = getattr(args, name, None)
        raise UserError(f"--{name.replace('_', '-')} {rule.removeprefix(name).strip()}"
                        + (f"; got {value!r}" if value is not None else "")) from None
    return options
