"""A canister's stable memory: 64 KiB pages held as sparse chunks, with an undo journal so that
a trapping execution's writes roll back, and dirty-chunk tracking for checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field

from replica.limits import OS_PAGE_BYTES, WASM_PAGE_BYTES

CHUNK_BYTES = 1024 * 1024  # unit of persistence: a dirty chunk is rewritten at the next checkpoint


class StableMemoryError(Exception):
    """An access the IC would trap on (out of bounds)."""


@dataclass
class StableMemory:
    max_bytes: int
    pages: int = 0
    chunks: dict[int, bytearray] = field(default_factory=dict)
    dirty: set[int] = field(default_factory=set)
    _journal: list[tuple[str, int, bytes]] | None = None  # undo records of the open execution

    @property
    def size_bytes(self) -> int:
        return self.pages * WASM_PAGE_BYTES

    def begin(self) -> None:
        self._journal = []

    def commit(self) -> list[tuple[str, int, bytes]]:
        """Ends the execution, keeping its writes; returns its undo records."""
        journal, self._journal = self._journal or [], None
        return journal

    def dirty_pages(self) -> int:
        """4 KiB pages the open execution has written (the IC charges each one)."""
        pages: set[int] = set()
        for kind, offset, old in self._journal or []:
            if kind == "write" and old:
                pages.update(range(offset // OS_PAGE_BYTES, (offset + len(old) - 1) // OS_PAGE_BYTES + 1))
        return len(pages)

    def swap(self, undo: list[tuple[str, int, bytes]]) -> list[tuple[str, int, bytes]]:
        """Applies undo records and returns the records that put the memory back (for a query
        that must see the memory as it was before an execution still running over rounds)."""
        redo: list[tuple[str, int, bytes]] = []
        for kind, a, old in reversed(undo):
            if kind == "grow":
                redo.append(("grow", self.pages, b""))
                self.pages = a
            else:
                redo.append(("write", a, self.read(a, len(old))))
                self._write(a, old, journal=False)
        return redo

    def rollback(self) -> None:
        for kind, a, old in reversed(self._journal or []):
            if kind == "grow":
                self.pages = a
            else:
                self._write(a, old, journal=False)
        self._journal = None

    def grow(self, new_pages: int) -> int:
        previous = self.pages
        if new_pages < 0 or (previous + new_pages) * WASM_PAGE_BYTES > self.max_bytes:
            return -1
        if self._journal is not None:
            self._journal.append(("grow", previous, b""))
        self.pages = previous + new_pages
        return previous

    def read(self, offset: int, size: int) -> bytes:
        self._check_bounds(offset, size, "read")
        out = bytearray(size)
        position = 0
        while position < size:
            index, start = divmod(offset + position, CHUNK_BYTES)
            take = min(CHUNK_BYTES - start, size - position)
            chunk = self.chunks.get(index)
            if chunk is not None:
                out[position : position + take] = chunk[start : start + take]
            position += take
        return bytes(out)

    def write(self, offset: int, data: bytes) -> None:
        self._check_bounds(offset, len(data), "write")
        self._write(offset, data, journal=True)

    def _write(self, offset: int, data: bytes, journal: bool) -> None:
        if journal and self._journal is not None:
            self._journal.append(("write", offset, self.read(offset, len(data))))
        view = memoryview(data)
        position = 0
        while position < len(data):
            index, start = divmod(offset + position, CHUNK_BYTES)
            take = min(CHUNK_BYTES - start, len(data) - position)
            chunk = self.chunks.get(index)
            if chunk is None:
                chunk = self.chunks[index] = bytearray(CHUNK_BYTES)
            chunk[start : start + take] = view[position : position + take]
            self.dirty.add(index)
            position += take

    def clear(self) -> None:
        """Reinstall and delete: stable memory is emptied."""
        self.dirty.update(self.chunks)
        self.chunks.clear()
        self.pages = 0

    def _check_bounds(self, offset: int, size: int, what: str) -> None:
        if offset < 0 or size < 0 or offset + size > self.size_bytes:
            raise StableMemoryError(
                f"stable memory {what} out of bounds: offset {offset} + size {size} exceeds the "
                f"current stable memory size of {self.size_bytes} bytes ({self.pages} pages); "
                "call stable_grow first"
            )
