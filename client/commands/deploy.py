"""`icllama deploy [MODEL] [--shards N | --shard-bytes B] [--network local|URL] [--identity NAME]`:
plan, export, create and install the canisters, upload the shards and wire the head, over the IC
HTTP interface (client.deploy does the steps). Re-running it is idempotent."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from client.catalog import DEFAULT_MODEL
from client.commands.plan import add_plan_arguments, plan_from_args
from client.engine_choice import add_engine_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "deploy", help="deploy a model to the network: canisters, code, shards (resumable), pipeline")
    add_plan_arguments(parser, presets=False)
    parser.set_defaults(model=DEFAULT_MODEL)
    parser.add_argument("--network", default="local", help="`local` (default) or the URL of an IC HTTP interface")
    parser.add_argument("--identity", help="identity name or PEM path (default: the selected identity)")
    parser.add_argument("--with-cycles", type=int, metavar="CYCLES",
                        help="cycles for each canister created (default: the network's, 100T on a local one)")
    parser.add_argument("--parallel", type=int, default=4, help="canisters uploading at once (default 4)")
    parser.add_argument("--allow", action="append", metavar="PRINCIPAL",
                        help="only this principal (repeat for several) and the controllers may generate (default: "
                             "anyone may, and re-deploying without --allow opens the head again)")
    parser.add_argument("--state-dir", type=Path,
                        help="keeps <network>/canister_ids.json and <network>/shards/ (default: .icllama, or the "
                             "state directory of the local network running elsewhere)")
    parser.add_argument("--dfx-json", type=Path,
                        help="the dfx.json the plan's canisters are written into (default: ./dfx.json if it exists, "
                             "else <state dir>/<network>/dfx.json)")
    add_engine_argument(parser, default=None, default_text="what `icllama start --engine` chose for the local "
                                                          "network, else wasm")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from client.agent import RemoteCanisters, connect, resolve_network
    from client.catalog import resolve_model
    from client.deploy import CanisterIds, Deployer, code_version, read_dfx
    from client.engine_choice import network_engine
    from client.errors import UserError
    from client.identity import IdentityStore
    from sharding.dfx import DfxError, write_dfx
    from sharding.export import ExportError, export_shards

    if args.parallel < 1:
        raise UserError("--parallel must be at least 1")
    allowlist = None if args.allow is None else tuple(_principal(text) for text in args.allow)
    start = time.perf_counter()
    target = resolve_network(args.network, args.state_dir, args.dfx_json or Path("dfx.json"))
    identity = IdentityStore.from_environment().resolve(args.identity)
    canisters = RemoteCanisters(connect(target.url, identity))
    model = resolve_model(args.model)
    _, plan = plan_from_args(args)
    dfx_json = dfx_json_path(args.dfx_json, target)
    try:
        names = write_dfx(plan, dfx_json)
    except (DfxError, OSError) as e:
        raise UserError(str(e)) from None
    print(f"deploying {model.name} to {target.describe()} as {identity.principal}: head and "
          f"{len(plan.shards) - 1} yblocks; canisters {names[0]}..{names[-1]} written into {dfx_json}", file=sys.stderr)
    try:
        export = export_shards(model, plan, target.state_dir / target.name / "shards" / model.stem, progress=True)
    except ExportError as e:
        raise UserError(str(e)) from None
    deployer = Deployer(canisters, CanisterIds.of(target.state_dir, target.name), read_dfx(dfx_json),
                        cycles=args.with_cycles, version=code_version(), parallel=args.parallel,
                        generate_allowlist=allowlist, engine=args.engine or network_engine(target.state_dir))
    report = deployer.deploy(plan, export)
    for c in report.canisters:
        upload = c.upload
        sent = f"{upload.outcome}, {upload.bytes_sent:,} B sent" if upload else "-"
        print(f"{c.name:10} {c.canister_id}  {'created' if c.created else 'reused':8} code {c.code:12} shard {sent}")
    print(f"deployed in {time.perf_counter() - start:.1f} s ({report.bytes_uploaded:,} bytes uploaded); ids in "
          f"{deployer.ids.path}. Generate with: icllama generate -p \"...\"", file=sys.stderr)
    return 0


def dfx_json_path(given: Path | None, target) -> Path:
    """Where deploy writes the plan's canisters: the given file; a project's ./dfx.json; else beside
    the canister ids, never into a new file in whatever directory deploy runs from."""
    if given is not None:
        return given
    return Path("dfx.json") if Path("dfx.json").is_file() else target.state_dir / target.name / "dfx.json"


def _principal(text: str):
    from cdk.principal import Principal
    from client.errors import UserError

    try:
        return Principal.from_text(text)
    except ValueError as e:
        raise UserError(f"--allow {text!r} is not a principal: {e}") from None
