"""`icllama plan MODEL|--preset NAME[:TYPE] [--shards N | --shard-bytes B] [--strategy S]
[--weight-format gguf|f32|f16] [--kernel scalar|simd] [--fees current|2024] [--nodes 13|34]
[--heap wasm32|wasm64] [--context N] [--prefill-chunk N] [--json] [--write-dfx [PATH]]`.

Prints one row per canister and what a token costs on the IC. The plan options are shared with
`icllama export`, which must shard by the same plan.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from canisters.llama.quants import UnsupportedTensorType
from client.catalog import resolve_model
from client.errors import UserError
from replica.cost_model import Kernel
from replica.fees import FEE_SCHEDULES
from sharding.dfx import DfxError, write_dfx
from sharding.model_spec import ModelSpec, read_model_spec
from sharding.partition import HEAPS, SUBNET_SIZES, WEIGHT_FORMATS, Constraints, Plan, PlanError, make_plan
from sharding.plan_report import plan_json, plan_table
from sharding.presets import PRESETS, preset_spec
from sharding.strategies import STRATEGIES

_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plan", help="split a model into canisters and predict what a token costs")
    add_plan_arguments(parser, presets=True)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--write-dfx", nargs="?", const=Path("dfx.json"), type=Path, metavar="PATH",
                        help="write the canisters into dfx.json (default ./dfx.json), keeping its other entries")
    parser.set_defaults(func=run)


def add_plan_arguments(parser: argparse.ArgumentParser, presets: bool) -> None:
    parser.add_argument("model", nargs="?", help="catalog name or path to a .gguf file")
    if presets:
        parser.add_argument("--preset", metavar="NAME[:TYPE]",
                            help=f"plan a model from header facts alone: {', '.join(PRESETS)}; TYPE is one of "
                                 f"{', '.join(next(iter(PRESETS.values())).file_types)} (the preset's usual one if "
                                 "omitted); default: plan MODEL")
    add_constraint_arguments(parser)


def add_constraint_arguments(parser: argparse.ArgumentParser) -> None:
    """The planner's constraints and strategy, for every command that plans."""
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--shards", type=int,
                      help="exactly N canisters besides the head (default: as many as --shard-bytes needs)")
    size.add_argument("--shard-bytes", type=parse_bytes, default=Constraints.shard_bytes,
                      help="on-chain weight bytes per canister, e.g. 2GiB (default), 1536MiB")
    parser.add_argument("--strategy", choices=list(STRATEGIES), default="balanced-bytes",
                        help="; ".join(f"{name}: {cls.summary}" for name, cls in STRATEGIES.items())
                        + " (default balanced-bytes)")
    parser.add_argument("--weight-format", choices=WEIGHT_FORMATS, default=Constraints.weight_format,
                        help="on-chain weights: gguf keeps the file's types (default); f32 or f16 converts at load")
    parser.add_argument("--kernel", choices=[k.value for k in Kernel], default=Constraints.kernel,
                        help="matmul kernels the cost model assumes (default simd)")
    parser.add_argument("--fees", choices=list(FEE_SCHEDULES), default=Constraints.fees,
                        help=f"fee schedule (default {Constraints.fees})")
    parser.add_argument("--nodes", type=int, choices=SUBNET_SIZES, default=Constraints.subnet_nodes,
                        help=f"subnet size; fees scale with it (default {Constraints.subnet_nodes})")
    parser.add_argument("--heap", choices=HEAPS, default=Constraints.heap,
                        help=f"4 GiB (wasm32) or 6 GiB (wasm64) (default {Constraints.heap})")
    parser.add_argument("--context", type=int, help="KV positions per session (default: 2048 or the model's)")
    parser.add_argument("--prefill-chunk", type=int,
                        help="at most this many prompt tokens per message (default: as many as fit a message)")


def parse_bytes(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 2GiB, 1536MiB or 2147483648")
    return int(float(match.group(1)) * _UNITS[unit])


def constraints_from(args: argparse.Namespace) -> Constraints:
    return Constraints(
        shard_bytes=args.shard_bytes, shards=args.shards, weight_format=args.weight_format, kernel=args.kernel,
        heap=args.heap, context=args.context, fees=args.fees, subnet_nodes=args.nodes,
        prefill_chunk=args.prefill_chunk,
    )


def plan_from_args(args: argparse.Namespace) -> tuple[ModelSpec, Plan]:
    spec = spec_from_args(args)
    try:
        return spec, make_plan(spec, constraints_from(args), args.strategy)
    except PlanError as e:
        raise UserError(str(e)) from None


def spec_from_args(args: argparse.Namespace) -> ModelSpec:
    preset = getattr(args, "preset", None)
    if (args.model is None) == (preset is None):
        raise UserError("give a MODEL (catalog name or .gguf path) or --preset NAME, not both and not neither"
                        if preset else "give a MODEL: a catalog name or a .gguf path")
    if preset is None:
        try:
            return read_model_spec(resolve_model(args.model))
        except UnsupportedTensorType as e:
            raise UserError(str(e)) from None
    name, _, file_type = preset.partition(":")
    try:
        return preset_spec(name, file_type or None)
    except ValueError as e:
        raise UserError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    _, plan = plan_from_args(args)
    print(plan_json(plan) if args.json else plan_table(plan))
    if args.write_dfx is not None:
        try:
            names = write_dfx(plan, args.write_dfx)
        except (DfxError, OSError) as e:
            raise UserError(str(e)) from None
        print(f"wrote {len(names)} canisters ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}) to "
              f"{args.write_dfx}", file=sys.stderr)
    return 0
