"""A canister's wasm chunk store: where modules too large for one message are uploaded in parts.

`upload_chunk` stores a chunk of at most 1 MiB under its sha256, `stored_chunks` lists the
hashes, `clear_chunk_store` empties it, and `install_chunked_code` joins chunks in a given order
into a module whose sha256 must be the one given. Limits and messages are the IC's (dfinity/ic
002d5530aeb1ef1ed362d7f9c3c5529b8ec1cafe,
rs/replicated_state/src/canister_state/system_state/wasm_chunk_store.rs): a chunk occupies a
whole 1 MiB slot whatever its length, the store holds up to the largest module (100 MiB), and a
chunk already stored is accepted again without taking space. Assembling fails as in the IC's
`WasmSource` (7d782b8bd224a20a9a4b431d58dac51aec5b2e74,
rs/execution_environment/src/canister_manager/types.rs), with hashes in hex where the IC prints
byte arrays.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from replica.errors import ErrorCode, RejectError
from replica.limits import MiB
from replica.wasm_module import MAX_DECODED_MODULE_BYTES

CHUNK_BYTES = 1 * MiB
CHUNK_STORE_BYTES = MAX_DECODED_MODULE_BYTES
# What an upload_chunk costs the canister on an application subnet: "1/10th of a round" (dfinity/ic
# 002d5530aeb1ef1ed362d7f9c3c5529b8ec1cafe, rs/config/src/subnet_config.rs,
# DEFAULT_UPLOAD_CHUNK_INSTRUCTIONS), charged as an execution of that many instructions.
UPLOAD_CHUNK_INSTRUCTIONS = 200_000_000


def chunk_store_error(message: str) -> RejectError:
    return RejectError(ErrorCode.CANISTER_CONTRACT_VIOLATION, f"Error from Wasm chunk store: {message}")


@dataclass
class ChunkStore:
    chunks: dict[bytes, bytes] = field(default_factory=dict)  # sha256 -> chunk, in upload order

    @property
    def size_bytes(self) -> int:
        return len(self.chunks) * CHUNK_BYTES

    def insert(self, chunk: bytes) -> bytes:
        digest = hashlib.sha256(chunk).digest()
        if digest in self.chunks:
            return digest
        if len(chunk) > CHUNK_BYTES:
            raise chunk_store_error(f"Wasm chunk size {len(chunk)} exceeds the maximum chunk size of {CHUNK_BYTES}")
        if self.size_bytes >= CHUNK_STORE_BYTES:
            raise chunk_store_error(f"Wasm chunk store has already reached maximum capacity of {CHUNK_STORE_BYTES} "
                                    "bytes; clear_chunk_store frees it")
        self.chunks[digest] = chunk
        return digest

    def hashes(self) -> list[bytes]:
        return list(self.chunks)

    def clear(self) -> None:
        self.chunks.clear()

    def assemble(self, chunk_hashes: list[bytes], module_hash: bytes) -> bytes:
        """The module made of the chunks `chunk_hashes` in that order, checked against `module_hash`."""
        parts = []
        for digest in chunk_hashes:
            chunk = self.chunks.get(digest)
            if chunk is None:
                raise chunk_store_error(f"Chunk hash {digest.hex()} was not found; stored_chunks lists the "
                                        "hashes the store holds")
            parts.append(chunk)
        module = b"".join(parts)
        actual = hashlib.sha256(module).digest()
        if actual != module_hash:
            raise chunk_store_error(f"Wasm module hash {actual.hex()} does not match given hash {module_hash.hex()}")
        return module
