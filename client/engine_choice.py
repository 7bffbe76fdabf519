"""`--engine wasm|python`: how the yblocks of a deployment run.

"wasm" installs dfx.json's wasm module (canisters/yblock/yblock.wasm, built from C), metered by the
replica as the IC meters it; "python" installs the Python class. The head is a Python canister
either way. Light on imports: `icllama stop` and `status` load this module too.

`icllama start --engine E` records E in the network's state directory once it serves, and
`icllama deploy` without --engine installs what the network it deploys to recorded (wasm when none
did): the engine is a property of the network a project deploys to.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

ENGINES = ("wasm", "python")
DEFAULT_ENGINE = "wasm"
ENGINE_FILE = "yblock_engine"  # in a network's state directory: the engine its deploys install

_HELP = ("how the yblocks run: `wasm` installs canisters/yblock/yblock.wasm, built from C and metered as the IC "
         "meters it; `python` installs the Python class (the head is a Python canister either way)")


def add_engine_argument(parser: argparse.ArgumentParser, default: str | None = DEFAULT_ENGINE,
                        default_text: str = DEFAULT_ENGINE) -> None:
    parser.add_argument("--engine", choices=ENGINES, default=default, help=f"{_HELP} (default: {default_text})")


def network_engine(state_dir: Path) -> str:
    """The engine the network serving from `state_dir` was started with; the default if none."""
    try:
        recorded = (state_dir / ENGINE_FILE).read_text().strip()
    except OSError:
        return DEFAULT_ENGINE
    return recorded if recorded in ENGINES else DEFAULT_ENGINE


def record_engine_once_serving(state_dir: Path, engine: str) -> None:
    """Writes `engine` into `state_dir` once this process serves from it (after a --clean, which
    empties the directory first)."""
    from client.local_network import running_from
    from replica.state_store import atomic_write

    def record() -> None:
        while (running := running_from(state_dir)) is None or running.pid != os.getpid():
            time.sleep(0.05)
        atomic_write(state_dir / ENGINE_FILE, engine.encode())

    threading.Thread(target=record, name="record-engine", daemon=True).start()

