"""`icllama`: the command line. Each subcommand lives in its own module under client/commands/
and exposes `register(subparsers)`, which adds its parser and sets `func` to a handler taking
the parsed args and returning an exit code."""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import version

from canisters.llama.config import UnsupportedModel
from canisters.llama.gguf_file import GGUFError
from canisters.llama.tokenizer import TokenizerError
from client.errors import UserError

# Order is the order of `icllama --help`.
COMMAND_MODULES = [
    "client.commands.models",
    "client.commands.network",
    "client.commands.tokenize",
    "client.commands.logits",
    "client.commands.run",
    "client.commands.identity",
    "client.commands.plan",
    "client.commands.export",
    "client.commands.deploy",
    "client.commands.generate",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icllama",
        description="LLM inference sharded across simulated Internet Computer canisters.",
    )
    parser.add_argument("--version", action="version", version=f"icllama {version('icllama')}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, GGUFError, UnsupportedModel, TokenizerError) as e:
        print(f"icllama: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("icllama: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
