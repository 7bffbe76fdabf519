"""`icllama export MODEL --out DIR [plan options]`: one GGUF per canister of the plan, and
DIR/manifest.json with each file's sha256 and the plan. The plan options are `icllama plan`'s."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from client.commands.plan import add_plan_arguments, plan_from_args
from client.errors import UserError
from sharding.export import ExportError, export_shards
from sharding.partition import format_bytes

# Below this, a progress bar would only flash by.
PROGRESS_BYTES = 256 << 20


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="write one GGUF shard per canister of a plan, with a manifest")
    add_plan_arguments(parser, presets=False)
    parser.add_argument("--out", type=Path, required=True, help="directory for the shard files and manifest.json")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    spec, plan = plan_from_args(args)
    progress = plan.totals.upload_bytes >= PROGRESS_BYTES and sys.stderr.isatty()
    try:
        export = export_shards(Path(spec.source), plan, args.out, progress=progress)
    except (ExportError, OSError) as e:
        raise UserError(str(e)) from None
    what = "wrote" if export.written else "unchanged (same plan, files intact):"
    print(f"{what} {len(export.files)} shards of {plan.model} in {export.directory} (plan {plan.digest[:12]})")
    for f in export.files:
        print(f"  {f.file:<16} {format_bytes(f.size):>12}  sha256 {f.sha256}")
    return 0
