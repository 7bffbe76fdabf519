"""`icllama generate -p PROMPT [-n N] [--chat] [--stream] [--json]`: generate with the deployed head
canister over the IC HTTP interface, then show what the generation cost on the IC."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from client.commands.generation_options import add_generation_arguments, options_from
from client.errors import UserError
from client.head_client import HeadClient, HeadError, Metrics
from replica.fees import USD_PER_TRILLION_CYCLES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="generate with the deployed model over the IC HTTP interface")
    add_generation_arguments(parser)
    parser.add_argument("--stream", action="store_true",
                        help="start the generation and poll it, printing tokens as they arrive")
    parser.add_argument("--json", action="store_true", help='print {"ids", "text", "stop_reason", "metrics", ...}')
    parser.add_argument("--network", default="local", help="`local` (default) or the URL of an IC HTTP interface")
    parser.add_argument("--identity", help="identity name or PEM path (default: the selected identity)")
    parser.add_argument("--canister", default="head",
                        help="the head canister: its name in canister_ids.json (default head) or its id")
    parser.add_argument("--state-dir", type=Path,
                        help="where <network>/canister_ids.json is (default: .icllama, or the state directory of "
                             "the local network running elsewhere)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from client.agent import resolve_network
    from client.deploy import head_canister_id
    from client.identity import IdentityStore

    options = options_from(args)
    target = resolve_network(args.network, args.state_dir)
    head = head_canister_id(args.canister, target.state_dir, target.name)
    print(f"generating with head {head} on {target.describe()}", file=sys.stderr)
    client = HeadClient(target.url, head, IdentityStore.from_environment().resolve(args.identity))
    start = time.perf_counter()
    try:
        if args.stream:
            ids: list[int] = []
            text = []
            for event in client.stream(args.prompt, options):
                ids += event.ids
                text.append(event.text)
                if not args.json:
                    print(event.text, end="", flush=True)
            result = {"ids": ids, "text": "".join(text), "stop_reason": event.stop_reason, "session": event.session}
            metrics = event.metrics
        else:
            generation = client.generate(args.prompt, options)
            if not args.json:
                print(generation.text, end="", flush=True)
            result = {"ids": list(generation.ids), "prompt_ids": list(generation.prompt_ids), "text": generation.text,
                      "stop_reason": generation.stop_reason, "session": generation.session}
            metrics = generation.metrics
    except HeadError as e:
        raise UserError(str(e)) from None
    host_seconds = time.perf_counter() - start
    if args.json:
        json.dump({**result, "metrics": {**asdict(metrics), "host_seconds": host_seconds,
                                         "host_tokens_per_s": len(result["ids"]) / host_seconds,
                                         "usd": metrics.cycles / 1e12 * USD_PER_TRILLION_CYCLES}}, sys.stdout)
        print()
    else:
        print(file=sys.stderr)
        print(describe(metrics, len(result["ids"]), host_seconds, result["stop_reason"]), file=sys.stderr)
    return 0


def describe(metrics: Metrics, tokens: int, host_seconds: float, stop_reason: str) -> str:
    usd = metrics.cycles / 1e12 * USD_PER_TRILLION_CYCLES
    return (f"[{tokens} tokens in {host_seconds:.2f} s ({tokens / host_seconds:.1f} tok/s), stop: {stop_reason}]\n"
            f"[IC: {metrics.instructions:,} instructions, {metrics.cycles:,} cycles (${usd:.6f}), "
            f"{metrics.virtual_seconds:.1f} virtual s, {metrics.messages} inter-canister messages, "
            f"{metrics.prompt_tokens} prompt + {metrics.generated_tokens} generated tokens]")
