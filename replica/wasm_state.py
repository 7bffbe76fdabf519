"""A wasm canister in the state directory: its module, its heap and its globals, so that a
restarted network runs it on exactly the memory it had (the IC persists the heap too).

Layout, beside the stable memory files (replica/state_store.py):
  modules/<sha256>.wasm     each installed module as given (raw or gzipped), once per hash
  heap/<canister id>/       the wasm memory, one file per 1 MiB chunk that was ever written,
                            named <chunk>-<round>.bin; chunks never written are what the
                            module's data segments make them, which instantiating rebuilds

A checkpoint writes only the chunks holding pages written since the last one (the engine's
dirty pages), under new names, before the registry that names them is committed.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from replica.limits import MiB

if TYPE_CHECKING:
    from replica.canister_state import CanisterState

HEAP_CHUNK_BYTES = MiB
_PAGES_PER_CHUNK = HEAP_CHUNK_BYTES // 4096


def _heap_dir(root: Path, canister_text: str) -> Path:
    return root / "heap" / canister_text


def checkpoint(root: Path, state: CanisterState, round_: int, previous: dict[str, Any] | None,
               stale: list[Path]) -> dict[str, Any]:
    """Writes what changed since `previous` (this canister's last committed entry) and returns
    its new registry entry; files the entry no longer names are added to `stale`."""
    from replica.state_store import atomic_write  # the store's atomic file write

    module = state.module
    instance = state.instance
    module_name = f"modules/{module.module_hash.hex()}.wasm"
    if not (root / module_name).exists():
        atomic_write(root / module_name, module.given)
    # The saved chunks hold an earlier state of this instance only if it was checkpointed before;
    # a new instance (install, reinstall, upgrade) starts from its module, plus its dirty pages.
    chunks: dict[str, str] = dict(previous["heap_chunks"]) if previous is not None else {}
    replaced = set(chunks.values())
    if not instance.checkpointed:
        chunks = {}
    heap = instance.heap
    size = heap.size_bytes
    directory = _heap_dir(root, state.id.to_text())
    for chunk in sorted({page // _PAGES_PER_CHUNK for page in heap.dirty}):
        start = chunk * HEAP_CHUNK_BYTES
        if start < size:
            name = chunks[str(chunk)] = f"{chunk}-{round_}.bin"
            atomic_write(directory / name, heap.read(start, min(HEAP_CHUNK_BYTES, size - start)))
    stale.extend(directory / name for name in replaced - set(chunks.values()))
    return {"module": module_name, "heap_bytes": size, "heap_chunks": chunks,
            "globals": [_encode_value(v) for v in heap.global_values()], "global_timer_ns": state.global_timer_ns,
            "certified_data": state.certified_data.hex()}


def committed(state: CanisterState) -> None:
    """The registry naming the canister's heap files is written: its pages are clean again."""
    state.instance.heap.dirty.clear()
    state.instance.checkpointed = True


def restore(root: Path, subnet: Any, state: CanisterState, entry: dict[str, Any]) -> None:
    """Brings the canister back on its module, heap and globals, without running any of its code."""
    from replica.engines.wasm.engine import restore_instance
    from replica.wasm_module import read_module

    module = read_module((root / entry["module"]).read_bytes())
    chunks: dict[int, bytes] = {}
    for chunk, name in entry["heap_chunks"].items():
        chunks[int(chunk)] = data = (_heap_dir(root, state.id.to_text()) / name).read_bytes()
        if int(chunk) * HEAP_CHUNK_BYTES + len(data) > entry["heap_bytes"]:
            raise ValueError(f"heap chunk {name} of {state.id.to_text()} lies past its heap of "
                             f"{entry['heap_bytes']} bytes")
    state.instance = restore_instance(subnet.wasm_engine, module.wasm, state.stable, entry["heap_bytes"], chunks,
                                      HEAP_CHUNK_BYTES, [_decode_value(v) for v in entry["globals"]])
    state.module = module
    state.heap_bytes = entry["heap_bytes"]
    state.global_timer_ns = entry["global_timer_ns"]
    state.certified_data = bytes.fromhex(entry["certified_data"])


def delete(root: Path, canister_text: str) -> None:
    shutil.rmtree(_heap_dir(root, canister_text), ignore_errors=True)


def _encode_value(value: Any) -> Any:
    """A global's value in JSON, exactly: floats by their IEEE bits (NaN payloads included)."""
    if isinstance(value, float):
        return {"f64": struct.unpack("<Q", struct.pack("<d", value))[0]}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        return struct.unpack("<d", struct.pack("<Q", value["f64"]))[0]
    return value
