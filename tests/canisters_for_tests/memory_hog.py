"""Allocates heap memory on request, refusing politely when the canister would run out."""

from __future__ import annotations

import numpy as np

from cdk.canister import Canister, frozen, query, update


class MemoryHog(Canister):
    DID = "memory_hog.did"

    def init(self) -> None:
        self.table = frozen({f"token{i}": i for i in range(10_000)})  # measured once, never copied
        self.buffers: list[np.ndarray] = []

    @update
    def allocate(self, n_bytes: int) -> int:
        """Allocates n_bytes; returns the heap bytes in use before this message."""
        self.buffers.append(np.zeros(n_bytes, dtype=np.uint8))
        return self.ic.heap_bytes()

    @query
    def available(self) -> int:
        return self.ic.heap_available_bytes()

    @query
    def heap(self) -> int:
        return self.ic.heap_bytes()
