"""`--engine wasm|python`: how the yblocks of a deployment run (client.deploy.ENGINES)."""

from __future__ import annotations

import argparse

from client.deploy import DEFAULT_ENGINE, ENGINES


def add_engine_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE,
                        help="how the yblocks run: `wasm` (default) installs canisters/yblock/yblock.wasm, built "
                             "from C and metered as the IC meters it; `python` installs the Python class (the "
                             "head is a Python canister either way)")
