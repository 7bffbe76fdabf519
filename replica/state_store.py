"""The network's state directory (`.icllama/` by default, as dfx has `.dfx/`).

Layout:
  registry.json          canisters (class, version, install argument, settings, cycles, status,
                         stable memory size and chunk files), round, virtual time, id allocator
  canister_ids.json      dfx-style {"name": {"local": "<canister id>"}} for named canisters
  stable/<canister id>/  stable memory, one file per written 1 MiB chunk, named <chunk>-<round>.bin
  chunks/<canister id>/  the wasm chunk store, one file per chunk, named <sha256>.bin
  modules/, heap/        wasm canisters' modules and heaps (replica/wasm_state.py)
  keys/                  the network's keys (the HTTP gateway stores its BLS key here)

Every file is written atomically (temp file, fsync, rename, fsync of the directory). A checkpoint
first writes new chunk files under new names, then replaces registry.json, and only then deletes
the chunk files the new registry no longer names, so a crash at any point leaves either the old
or the new checkpoint whole. A checkpoint that fails (disk full, read-only, I/O error) raises
OSError and changes nothing the store or the subnet remembers, so it can simply be tried again.

A restart restores each canister's class, version, settings, cycles, status and stable memory.
A wasm canister's heap and globals are saved too and come back exactly. A Python class's heap
is not saved: it is rebuilt by constructing the class and running its post_upgrade with
the argument of the last install or upgrade, as if the canister had been upgraded to the same
code without running pre_upgrade. Queued messages, calls in flight and the ingress history are
not kept. Unlike a restarted `dfx start` (which keeps the whole replicated state), heap state that
a canister did not put into stable memory is lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cdk.principal import Principal
from replica import management_state, wasm_state
from replica.canister_state import CanisterSettings, CanisterState
from replica.engines import Execution, Kind
from replica.engines.python import engine as python_engine
from replica.errors import RejectError
from replica.execution import CanisterContext
from replica.loader import ModuleRef, load_class
from replica.stable_memory import CHUNK_BYTES, StableMemory

FORMAT_VERSION = 1


class StateDirError(Exception):
    """The state directory cannot be used; the message says what to do."""


def atomic_write(path: Path, data: bytes) -> None:
    """Writes `data` to `path` so that readers see either the old file or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StateStore:
    def __init__(self, root: Path):
        self.root = root
        self._files: dict[Principal, dict[int, str]] = {}
        self._wasm: dict[Principal, dict[str, Any]] = {}  # committed wasm entries (replica/wasm_state.py)
        self._chunks: dict[Principal, list[bytes]] = {}  # committed chunk store hashes
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StateDirError(f"cannot create the state directory {root}: {e}") from None

    @property
    def registry_path(self) -> Path:
        return self.root / "registry.json"

    @property
    def keys_dir(self) -> Path:
        path = self.root / "keys"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _stable_dir(self, canister_id: Principal) -> Path:
        return self.root / "stable" / canister_id.to_text()

    def _chunks_dir(self, canister_id: Principal) -> Path:
        return self.root / "chunks" / canister_id.to_text()

    def _write_chunks(self, state: CanisterState, stale: list[Path]) -> list[bytes]:
        """Files for the chunks uploaded since the last checkpoint; cleared ones become stale.
        A chunk's file is named by its hash, so it never changes once written."""
        hashes = state.chunk_store.hashes()
        committed = self._chunks.get(state.id, [])
        if hashes != committed:
            directory = self._chunks_dir(state.id)
            for digest in set(hashes) - set(committed):
                atomic_write(directory / f"{digest.hex()}.bin", state.chunk_store.chunks[digest])
            stale.extend(directory / f"{digest.hex()}.bin" for digest in set(committed) - set(hashes))
        return hashes

    # --- checkpoint --------------------------------------------------------------------------
    def checkpoint(self, subnet: Any) -> None:
        stale: list[Path] = []
        # Which file holds each chunk, as the registry being written will say; it replaces the
        # store's own record only once that registry is written.
        written = {canister_id: dict(names) for canister_id, names in self._files.items()}
        wasm: dict[Principal, dict[str, Any]] = {}
        chunks = {state.id: self._write_chunks(state, stale) for state in subnet.canisters.values()}
        for state in subnet.canisters.values():
            if state.module is not None:
                wasm[state.id] = wasm_state.checkpoint(self.root, state, subnet.round, self._wasm.get(state.id),
                                                       stale)
            files = written.setdefault(state.id, {})
            for index in sorted(state.stable.dirty):
                old = files.get(index)
                chunk = state.stable.chunks.get(index)
                if chunk is None:
                    files.pop(index, None)
                else:
                    name = f"{index}-{subnet.round}.bin"
                    if name != old:
                        atomic_write(self._stable_dir(state.id) / name, bytes(chunk))
                    files[index] = name
                if old is not None and files.get(index) != old:
                    stale.append(self._stable_dir(state.id) / old)
        registry = {
            "format": FORMAT_VERSION,
            "round": subnet.round,
            "genesis_ns": subnet.genesis_ns,
            "next_canister_index": subnet.next_canister_index,
            "names": {name: p.to_text() for name, p in subnet.names.items()},
            "canisters": [{**self._canister_entry(s, written.get(s.id, {}), wasm.get(s.id)),
                           "wasm_chunks": [digest.hex() for digest in chunks[s.id]]}
                          for s in subnet.canisters.values()],
        }
        ids = {name: {"local": p.to_text()} for name, p in subnet.names.items()}
        atomic_write(self.root / "canister_ids.json", json.dumps(ids, indent=2).encode())
        atomic_write(self.registry_path, json.dumps(registry, indent=1).encode())  # the commit point
        self._files = written
        self._wasm = wasm
        self._chunks = chunks
        for state in subnet.canisters.values():
            state.stable.dirty.clear()
            if state.module is not None:
                wasm_state.committed(state)
        for path in stale:
            with contextlib.suppress(OSError):  # committed already: a leftover file is only unused
                path.unlink(missing_ok=True)
        for canister_id in subnet.deleted:
            shutil.rmtree(self._stable_dir(canister_id), ignore_errors=True)
            shutil.rmtree(self._chunks_dir(canister_id), ignore_errors=True)
            wasm_state.delete(self.root, canister_id.to_text())
            self._files.pop(canister_id, None)
        subnet.deleted.clear()

    def _canister_entry(self, s: CanisterState, files: dict[int, str], wasm: dict[str, Any] | None
                        ) -> dict[str, Any]:
        ref = s.loaded.ref if s.loaded else None
        return {
            "id": s.id.to_text(),
            "class_path": ref.class_path if ref else None,
            "version": ref.version if ref else None,
            "install_arg": s.install_arg.hex(),
            "controllers": [c.to_text() for c in s.settings.controllers],
            "freezing_threshold_s": s.settings.freezing_threshold_s,
            "wasm64": s.settings.wasm64,
            "wasm_memory_limit": s.settings.wasm_memory_limit,
            # Calls in flight are not kept across a restart, so what they reserved is returned.
            "cycles": s.cycles + sum(s.reserved_for_responses.values()),
            "status": "stopped" if s.status == "stopped" else "running",
            "stable_pages": s.stable.pages,
            "stable_chunks": {str(i): name for i, name in sorted(files.items())},
            "wasm": wasm,  # module, heap and globals of a wasm canister
            "management": management_state.to_json(s),  # other settings, version, history, log
        }

    # --- restore -----------------------------------------------------------------------------
    def restore(self, subnet: Any) -> None:
        if not self.registry_path.exists():
            return
        try:
            registry = json.loads(self.registry_path.read_text())
            if registry.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {registry.get('format')!r}, expected {FORMAT_VERSION}")
            subnet.round = registry["round"]
            subnet.genesis_ns = registry["genesis_ns"]
            subnet.next_canister_index = registry["next_canister_index"]
            subnet.names = {n: Principal.from_text(t) for n, t in registry.get("names", {}).items()}
            for entry in registry["canisters"]:
                self._restore_canister(subnet, entry)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StateDirError(
                f"the state directory {self.root} is damaged ({e}); move it away to start a fresh "
                "network, or restore it from a backup") from None

    def _restore_canister(self, subnet: Any, entry: dict[str, Any]) -> None:
        canister_id = Principal.from_text(entry["id"])
        stable = StableMemory(subnet.limits.stable_memory_bytes, pages=entry["stable_pages"])
        files = {int(i): name for i, name in entry["stable_chunks"].items()}
        for index, name in files.items():
            data = (self._stable_dir(canister_id) / name).read_bytes()
            if len(data) != CHUNK_BYTES:
                raise ValueError(f"stable memory chunk {name} of {entry['id']} has {len(data)} bytes")
            stable.chunks[index] = bytearray(data)
        self._files[canister_id] = files
        settings = CanisterSettings(
            controllers=[Principal.from_text(c) for c in entry["controllers"]],
            freezing_threshold_s=entry["freezing_threshold_s"], wasm64=entry["wasm64"],
            wasm_memory_limit=entry["wasm_memory_limit"])
        state = CanisterState(canister_id, settings, entry["cycles"], stable, status=entry["status"],
                              install_arg=bytes.fromhex(entry["install_arg"]))
        management_state.restore(state, entry.get("management"))
        state.ic = CanisterContext(state, subnet)
        subnet.canisters[canister_id] = state
        for name in entry.get("wasm_chunks", []):
            chunk = (self._chunks_dir(canister_id) / f"{name}.bin").read_bytes()
            if hashlib.sha256(chunk).hexdigest() != name:
                raise ValueError(f"wasm chunk {name} of {entry['id']} does not match its hash")
            state.chunk_store.chunks[bytes.fromhex(name)] = chunk
        self._chunks[canister_id] = state.chunk_store.hashes()
        if entry.get("wasm") is not None:
            wasm_state.restore(self.root, subnet, state, entry["wasm"])
            self._wasm[canister_id] = entry["wasm"]
        if entry["class_path"] is not None:
            rebuild_heap(subnet, state, ModuleRef(entry["class_path"], entry["version"]))


def rebuild_heap(subnet: Any, state: CanisterState, ref: ModuleRef) -> None:
    """Reconstructs the heap of a restored canister by running post_upgrade; a failure is kept in
    `state.restore_error` and reported by every call until the canister is reinstalled."""
    try:
        loaded = load_class(ref)
    except RejectError as e:
        state.restore_error = f"restoring its code failed: {e.reject.message}"
        return
    caller = state.settings.controllers[0] if state.settings.controllers else state.id
    result = python_engine.install(state, loaded, subnet.executor, subnet.candid_cache, Execution(
        Kind.POST_UPGRADE, subnet.limits.instructions_per_install, subnet.time_ns(), arg=state.install_arg,
        caller=caller.bytes), pre_upgrade=False, charge=False)
    if result.trap is not None:
        state.restore_error = f"rebuilding its heap with post_upgrade after the restart trapped: {result.trap.message}"
        return
    state.loaded = loaded
