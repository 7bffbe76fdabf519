"""A shard file uploaded into stable memory in chunks: resumable, idempotent, verified by sha256.

Every canister that holds a shard (the yblocks and the head) inherits `ShardHolder`, which gives
it the upload methods of its .did: `upload_chunk`, `upload_status` and `upload_commit`.

Stable memory layout (it survives upgrades and network restarts; the heap does not):
- page 0: the upload record, as MAGIC, a u32 length and JSON;
- from DATA_OFFSET: the file's bytes.

The sha256 is computed while the chunks arrive (hashing a 2 GiB file at commit would need more
than one message's 40B instructions). The hash state lives on the heap and is never mutated in
place: each chunk replaces it with an updated copy, so a trap rolls it back with the rest of the
heap. After an upgrade or restart `restore_upload` rebuilds it from stable memory, inside the
upgrade's larger budget.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from cdk import IC, Canister, query, update

MAGIC = b"ICLSHRD1"
WASM_PAGE = 64 * 1024
DATA_OFFSET = WASM_PAGE
MAX_CHUNK_BYTES = 2 * 1024 * 1024
MAX_NAME_BYTES = 255
# SHA-256 compresses 64-byte blocks in 64 rounds of roughly 35 wasm ops each, about 2.2K
# instructions per block: 35 per byte (the sha2 crate compiled to wasm32 without SIMD).
SHA256_INSTRUCTIONS_PER_BYTE = 35
REHASH_PIECE_BYTES = 64 * 1024 * 1024  # stable reads while rebuilding the hash after an upgrade


@dataclass(frozen=True)
class UploadRecord:
    name: str = ""
    held: int = 0  # bytes of the file held, from DATA_OFFSET
    sha256: str | None = None  # set by upload_commit, cleared when the bytes change
    loaded: bool = False  # the holder loaded it: reload after an upgrade, refuse to overwrite it


class ShardHolder(Canister):
    """Upload methods over stable memory; subclasses implement `load` from `committed_bytes`."""

    KIND = "canister"  # how errors name this canister kind

    def restore_upload(self) -> None:
        """Reads the upload record from stable memory and rebuilds the hash of the bytes held."""
        self.upload = _read_record(self.ic)
        hasher = hashlib.sha256()
        for start in range(0, self.upload.held, REHASH_PIECE_BYTES):
            size = min(REHASH_PIECE_BYTES, self.upload.held - start)
            hasher.update(self.ic.stable_read(DATA_OFFSET + start, size))
        self.ic.meter.instructions(SHA256_INSTRUCTIONS_PER_BYTE * self.upload.held)
        self.hasher = hasher

    def describe(self) -> str:
        return f"{self.KIND} {self.ic.id().to_text()}"

    # --- the .did methods ----------------------------------------------------------------------
    @update
    def upload_chunk(self, name: str, offset: int, data: bytes) -> dict[str, Any]:
        refusal = self._check_upload(name)
        if refusal is None and len(data) > MAX_CHUNK_BYTES:
            refusal = f"a chunk holds at most {MAX_CHUNK_BYTES} bytes, this one has {len(data)}; send smaller chunks"
        if refusal is not None:
            return {"err": refusal}
        record, hasher = self.upload, self.hasher
        if name != record.name:
            if offset != 0:
                return {"err": f"{self.describe()} holds no bytes of {name!r} (it holds {record.held} bytes of "
                               f"{record.name!r}); start {name!r} at offset 0"}
            if record.loaded:
                return {"err": self._loaded_refusal()}
            record, hasher = UploadRecord(name=name), hashlib.sha256()
        if offset > record.held:
            return {"err": f"chunk of {name!r} at offset {offset} skips past the {record.held} bytes held; "
                           f"resume from offset {record.held} (see upload_status)"}
        overlap = min(offset + len(data), record.held) - offset
        if overlap > 0 and self.ic.stable_read(DATA_OFFSET + offset, overlap) != data[:overlap]:
            if record.loaded:
                return {"err": self._loaded_refusal()}
            if offset != 0:
                return {"err": f"chunk of {name!r} at offset {offset} differs from the bytes already held there; "
                               "to replace the upload, start again at offset 0"}
            record, hasher, overlap = UploadRecord(name=name), hashlib.sha256(), 0  # a new file from offset 0
        fresh = data[overlap:]
        if fresh:
            if record.loaded:
                return {"err": self._loaded_refusal()}
            end = offset + len(data)
            _ensure_stable(self.ic, DATA_OFFSET + end)
            self.ic.stable_write(DATA_OFFSET + record.held, fresh)
            hasher = hasher.copy()  # never mutate the committed hash state: a trap must roll it back
            hasher.update(fresh)
            self.ic.meter.instructions(SHA256_INSTRUCTIONS_PER_BYTE * len(fresh))
            record = replace(record, held=end, sha256=None)
        if record != self.upload:
            _write_record(self.ic, record)
        self.upload, self.hasher = record, hasher
        return {"ok": record.held}

    @query
    def upload_status(self, name: str) -> dict[str, Any]:
        record = self.upload if name == self.upload.name else UploadRecord(name=name)
        return {"name": name, "held": record.held, "sha256": record.sha256, "loaded": record.loaded}

    @update
    def upload_commit(self, name: str, size: int) -> dict[str, Any]:
        refusal = self._check_upload(name)
        if refusal is not None:
            return {"err": refusal}
        record = self.upload
        if name != record.name or record.held != size:
            held = record.held if name == record.name else 0
            return {"err": f"{self.describe()} holds {held} of the {size} bytes of {name!r}; upload the rest "
                           f"from offset {held} before committing"}
        if record.sha256 is None:
            record = replace(record, sha256=self.hasher.hexdigest())
            _write_record(self.ic, record)
            self.upload = record
        return {"ok": record.sha256}

    # --- for subclasses ------------------------------------------------------------------------
    def committed_bytes(self) -> bytes:
        """The committed file; raises ShardNotReady (with what to do) if there is none."""
        record = self.upload
        if not record.name:
            raise ShardNotReady(f"{self.describe()} holds no shard; upload it with upload_chunk and "
                                "upload_commit, then call load")
        if record.sha256 is None:
            raise ShardNotReady(f"{self.describe()} holds {record.held} bytes of {record.name!r} but they are not "
                                "committed; finish the upload and call upload_commit (which verifies the sha256) "
                                "before load")
        return self.ic.stable_read(DATA_OFFSET, record.held)

    def mark_loaded(self) -> None:
        if not self.upload.loaded:
            self.upload = replace(self.upload, loaded=True)
            _write_record(self.ic, self.upload)

    def _check_upload(self, name: str) -> str | None:
        if not self.ic.is_controller(self.ic.caller()):
            return (f"only controllers of {self.describe()} may upload; {self.ic.caller().to_text()} is not one "
                    "(add it with update_settings)")
        if not name or len(name.encode()) > MAX_NAME_BYTES:
            return f"a shard name must have 1 to {MAX_NAME_BYTES} bytes, got {len(name.encode())}"
        return None

    def _loaded_refusal(self) -> str:
        return (f"{self.describe()} has loaded shard {self.upload.name!r}; its bytes cannot change now. "
                "Reinstall the canister to hold another shard")


class ShardNotReady(Exception):
    """`load` was called before a shard was uploaded and committed."""


def _ensure_stable(ic: IC, n_bytes: int) -> None:
    pages = -(-n_bytes // WASM_PAGE)
    if pages > ic.stable_size() and ic.stable_grow(pages - ic.stable_size()) < 0:
        ic.trap(f"stable memory cannot grow to {n_bytes} bytes; the shard is too big for this canister")


def _read_record(ic: IC) -> UploadRecord:
    if ic.stable_size() == 0:
        return UploadRecord()
    header = ic.stable_read(0, len(MAGIC) + 4)
    if header[: len(MAGIC)] != MAGIC:
        return UploadRecord()
    length = int.from_bytes(header[len(MAGIC) :], "little")
    return UploadRecord(**json.loads(ic.stable_read(len(MAGIC) + 4, length)))


def _write_record(ic: IC, record: UploadRecord) -> None:
    payload = json.dumps(asdict(record)).encode()
    _ensure_stable(ic, DATA_OFFSET)
    ic.stable_write(0, MAGIC + len(payload).to_bytes(4, "little") + payload)
