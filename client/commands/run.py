"""`icllama run [MODEL] -p PROMPT [-n N] [--temperature T] [--seed S] [--chat] [--json]`: generate
through a simulated IC in this process (plan, export, deploy, upload, generate), or directly with
`--unsharded`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from client.catalog import DEFAULT_MODEL, resolve_model
from client.commands.generation_options import add_generation_arguments, options_from
from client.commands.plan import add_constraint_arguments, constraints_from
from client.engine_choice import add_engine_argument
from client.head_client import StreamEvent
from client.pipeline import run_sharded, run_unsharded


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="generate through a simulated IC in this process (downloads the default model if needed)")
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"catalog name or .gguf path ({DEFAULT_MODEL})")
    add_generation_arguments(parser)
    parser.add_argument("--unsharded", action="store_true",
                        help="run the model directly in this process, without the simulated IC (a baseline)")
    parser.add_argument("--json", action="store_true", help='print {"prompt_ids", "ids", "text", "metrics"}')
    add_constraint_arguments(parser)
    add_engine_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = options_from(args)
    path = resolve_model(args.model)
    if args.unsharded:
        local = run_unsharded(path, args.prompt, options)
        prefill, decode = local.prefill_and_decode_tokens_per_s
        metrics = {"host_seconds": local.host.seconds, "host_tokens_per_s": local.host_tokens_per_s,
                   "prefill_tokens_per_s": prefill, "decode_tokens_per_s": decode,
                   "generated_tokens": len(local.ids), "stop_reason": local.stop_reason}
        return _print(args, list(local.prompt_ids), list(local.ids), local.text, metrics, show_text=True)

    def show(event: StreamEvent) -> None:
        if not args.json:
            print(event.text, end="", flush=True)

    # Streamed in both cases: the first token's arrival splits prefill from decode speed.
    sharded = run_sharded(path, constraints_from(args), args.prompt, options, strategy=args.strategy,
                          on_text=show, progress=not args.json, engine=args.engine)
    generation = sharded.generation
    metrics = {**dataclasses.asdict(sharded.network), "stop_reason": generation.stop_reason,
               "head": dataclasses.asdict(generation.metrics)}
    return _print(args, list(generation.prompt_ids), list(generation.ids), generation.text, metrics, show_text=False)


def _print(args: argparse.Namespace, prompt_ids: list[int], ids: list[int], text: str, metrics: dict,
           show_text: bool) -> int:
    if args.json:
        json.dump({"prompt_ids": prompt_ids, "ids": ids, "text": text, "metrics": metrics}, sys.stdout)
        print()
        return 0
    if show_text:
        print(text, end="")
    summary = [f"{len(ids)} tokens", f"{metrics['host_tokens_per_s']:.1f} tok/s on this host"]
    split = [f"{phase} {metrics[f'{phase}_tokens_per_s']:.1f} tok/s" for phase in ("prefill", "decode")
             if metrics[f"{phase}_tokens_per_s"] is not None]
    if split:
        summary[-1] += f" ({', '.join(split)})"
    summary.append(f"stop: {metrics['stop_reason']}")
    if "virtual_seconds_per_token" in metrics:
        summary += [f"{metrics['canisters']} canisters",
                    f"{metrics['virtual_seconds_per_token']:.2f} s/token on the IC (virtual)",
                    f"{metrics['instructions_per_token'] / 1e9:.2f}B instructions/token",
                    f"{metrics['cycles_per_token'] / 1e9:.2f}B cycles/token",
                    f"{metrics['messages_per_token']:.1f} messages/token",
                    f"{metrics['activation_message_bytes']} B per activation message"]
    print("\n[" + ", ".join(summary) + "]", file=sys.stderr)
    return 0
