"""A plan's canisters as dfx.json entries, so that dfx-style tooling sees the same names and .did
files: `head` and `yblock_i`, type "custom", and the local network on dfx's port.

A yblock entry also names the wasm module (canisters/yblock/yblock.wasm, built by `pip install`),
so `dfx deploy` or `icp deploy` against a real replica installs the module `icllama deploy` does.
The head is a Python canister on the simulated IC only, so its entry has no wasm."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from replica.state_store import atomic_write
from sharding.partition import Plan

ROOT = Path(__file__).resolve().parents[1]
HEAD_DID = ROOT / "canisters" / "head" / "head.did"
YBLOCK_DID = ROOT / "canisters" / "yblock" / "yblock.did"
YBLOCK_WASM = ROOT / "canisters" / "yblock" / "yblock.wasm"
LOCAL_BIND = "127.0.0.1:4943"  # dfx's local replica address (DESIGN.md, HTTP gateway)
_PLANNED = re.compile(r"yblock_\d+")


class DfxError(ValueError):
    """dfx.json exists but cannot be updated; the message says why."""


def write_dfx(plan: Plan, path: Path) -> list[str]:
    """Create or update dfx.json at `path` with the plan's canisters and returns their names.

    Other canisters and settings are kept; yblock entries of an earlier, larger plan are removed,
    since a yblock_N is always the planner's. The file is replaced atomically."""
    config: dict = {}
    if path.exists():
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DfxError(f"{path} is not readable JSON ({e}); fix or remove it first") from None
        if not isinstance(config, dict) or not isinstance(config.get("canisters", {}), dict):
            raise DfxError(f"{path} is not a dfx.json: expected an object with a 'canisters' object")
    canisters = config.setdefault("canisters", {})
    names = [s.name for s in plan.shards]
    for name in [n for n in canisters if _PLANNED.fullmatch(n) and n not in names]:
        del canisters[name]
    for shard in plan.shards:
        did = HEAD_DID if shard.role == "head" else YBLOCK_DID
        entry = canisters.get(shard.name) if isinstance(canisters.get(shard.name), dict) else {}
        entry = {**entry, "type": "custom", "candid": os.path.relpath(did, path.parent.resolve())}
        if shard.role != "head":
            entry["wasm"] = os.path.relpath(YBLOCK_WASM, path.parent.resolve())
        canisters[shard.name] = entry
    networks = config.setdefault("networks", {})
    networks["local"] = {**networks.get("local", {}), "bind": LOCAL_BIND}
    config.setdefault("version", 1)
    # A project file keeps its mode, or gets dfx's usual 0644 (atomic_write's temporary is 0600).
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    atomic_write(path, (json.dumps(config, indent=2) + "\n").encode())
    path.chmod(mode)
    return names
