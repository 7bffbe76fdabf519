"""`icllama run [MODEL] -p PROMPT [-n N] [--temperature T] [--seed S] [--chat] [--json]`: generate."""

from __future__ import annotations

import argparse
import json
import sys
import time

from canisters.llama.chat_template import ChatTemplate, ChatTemplateError
from canisters.llama.generation import generate_local
from canisters.llama.gguf_file import read_gguf
from canisters.llama.model import STRATEGIES, Llama
from canisters.llama.sampler import SamplingError, SamplingParams
from canisters.llama.tokenizer import Tokenizer
from cdk.meter import Work
from client.catalog import DEFAULT_MODEL, resolve_model
from client.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="generate text (downloads the default model if needed)")
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"catalog name or .gguf path ({DEFAULT_MODEL})")
    parser.add_argument("-p", "--prompt", required=True)
    parser.add_argument("-n", "--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-k", type=int, default=40)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--min-p", type=float, default=0.05)
    parser.add_argument("--repeat-penalty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    parser.add_argument("--weights", choices=STRATEGIES, default="dequantize", help="weight strategy")
    parser.add_argument("--json", action="store_true", help='print {"prompt_ids", "ids", "text", "metrics"}')
    parser.set_defaults(func=run)


def sampling_params(args: argparse.Namespace) -> SamplingParams:
    try:
        return SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                              repeat_penalty=args.repeat_penalty, seed=args.seed, stop=tuple(args.stop))
    except SamplingError as e:
        raise UserError(str(e)) from None


def prompt_ids(tokenizer: Tokenizer, fields: dict, prompt: str, chat: bool) -> list[int]:
    """Chat prompts are rendered by the template, whose text already holds any BOS it wants."""
    if not chat:
        return tokenizer.encode(prompt, add_special=True)
    try:
        text = ChatTemplate.from_metadata(fields, tokenizer).render([{"role": "user", "content": prompt}])
    except ChatTemplateError as e:
        raise UserError(str(e)) from None
    return tokenizer.encode(text, add_special=False, parse_special=True)


def run(args: argparse.Namespace) -> int:
    if args.max_tokens < 1:
        raise UserError("-n/--max-tokens must be at least 1")
    params = sampling_params(args)
    gguf = read_gguf(resolve_model(args.model))
    tokenizer = Tokenizer.from_metadata(gguf.fields)
    ids = prompt_ids(tokenizer, dict(gguf.fields), args.prompt, args.chat)
    model = Llama.load(gguf, args.weights, n_ctx=len(ids) + args.max_tokens)
    if len(ids) + args.max_tokens > model.layers.n_ctx:
        raise UserError(f"the prompt ({len(ids)} tokens) plus -n {args.max_tokens} exceeds the model's context "
                        f"of {model.layers.n_ctx} tokens")
    work = Work()
    start = time.perf_counter()
    for stream, text in generate_local(model, tokenizer, ids, params, args.max_tokens, work):  # noqa: B007
        if not args.json:
            print(text, end="", flush=True)
    elapsed = time.perf_counter() - start
    metrics = {"host_seconds": elapsed, "host_tokens_per_s": len(stream.ids) / elapsed,
               "generated_tokens": len(stream.ids), "prompt_tokens": len(ids), "stop_reason": stream.stop_reason,
               "macs": work.total_macs, "weight_strategy": args.weights}
    if args.json:
        json.dump({"prompt_ids": ids, "ids": list(stream.ids), "text": stream.text, "metrics": metrics}, sys.stdout)
        print()
    else:
        print(f"\n[{len(stream.ids)} tokens, {metrics['host_tokens_per_s']:.1f} tok/s, stop: {stream.stop_reason}]",
              file=sys.stderr)
    return 0
