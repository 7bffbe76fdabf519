"""A canister's wasm memory seen from the host: bounds-checked copies in and out, and the journal
that makes a trapping execution leave no trace.

The IC tracks the 4 KiB pages an execution writes (with page protection) and throws them away
when the execution traps. Here the instrumented module tells the host of the first write to a
page in an execution (`__.first_write`, a byte per page in a bitmap memory says whether it did
already), and the host copies the page before it is changed. A rollback writes back only those
pages, so its cost follows the pages written, not the heap size. Host writes (msg_arg_data_copy,
stable_read, ...) go through the same journal.

Pages written by committed executions stay marked dirty until the next checkpoint saves them.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any

import wasmtime

from replica.limits import WASM_PAGE_BYTES

PAGE_BYTES = 4096  # the IC's dirty-page unit (the OS page)


class HeapAccessError(Exception):
    """An access outside the wasm memory: the execution traps, as on the IC."""


@dataclass
class Journal:
    """Pages written by the open execution, with their contents before the first write."""

    pages: dict[int, bytes] = field(default_factory=dict)
    size_pages: int = 0  # the memory's size (in wasm pages) when the execution began
    globals: list[Any] = field(default_factory=list)


class Heap:
    def __init__(self, store: wasmtime.Store, memory: wasmtime.Memory, bitmap: wasmtime.Memory | None,
                 mutable_globals: list[wasmtime.Global]):
        self._store = store
        self._memory = memory
        self._bitmap = bitmap
        self._globals = mutable_globals
        self.journal: Journal | None = None
        self.dirty: set[int] = set()  # pages changed since the last checkpoint
        self.restored_pages = 0  # pages the last rollback wrote back (its cost)

    # --- sizes -------------------------------------------------------------------------------
    @property
    def size_bytes(self) -> int:
        return self._memory.data_len(self._store)

    @property
    def size_pages(self) -> int:
        return self.size_bytes // WASM_PAGE_BYTES

    # --- host access -------------------------------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        self._check(addr, size)
        return ctypes.string_at(ctypes.addressof(self._memory.data_ptr(self._store).contents) + addr, size)

    def write(self, addr: int, data: bytes) -> None:
        self._check(addr, len(data))
        if not data:
            return
        self.first_write_range(addr, len(data))
        ctypes.memmove(ctypes.addressof(self._memory.data_ptr(self._store).contents) + addr, data, len(data))

    def _check(self, addr: int, size: int) -> None:
        if addr < 0 or size < 0 or addr + size > self.size_bytes:
            raise HeapAccessError(f"heap out of bounds: {size} bytes at address {addr} exceed the wasm "
                                  f"memory of {self.size_bytes} bytes")

    # --- the write barrier -------------------------------------------------------------------
    def first_write(self, page: int) -> None:
        """Called before the first write to `page` in an execution: keeps its old contents."""
        journal = self.journal
        if journal is None or page in journal.pages:
            return
        start = page * PAGE_BYTES
        if start >= self.size_bytes:
            return  # the store itself traps out of bounds
        base = ctypes.addressof(self._memory.data_ptr(self._store).contents)
        journal.pages[page] = ctypes.string_at(base + start, min(PAGE_BYTES, self.size_bytes - start))
        if self._bitmap is not None:
            self._bitmap.data_ptr(self._store)[page] = 1

    def first_write_range(self, addr: int, size: int) -> None:
        if size <= 0:
            return
        for page in range(addr // PAGE_BYTES, (addr + size - 1) // PAGE_BYTES + 1):
            self.first_write(page)

    # --- executions --------------------------------------------------------------------------
    def begin(self) -> None:
        self.journal = Journal(size_pages=self.size_pages,
                               globals=[g.value(self._store) for g in self._globals])

    def commit(self) -> int:
        """Keeps the execution's writes; returns how many pages it wrote."""
        journal = self._end()
        self.dirty.update(journal.pages)
        return len(journal.pages)

    def rollback(self) -> int | None:
        """Puts back every page and global the execution changed. If the memory grew, which wasm
        cannot undo in place, returns the size in bytes it had: the caller rebuilds the instance
        with the first that many bytes."""
        journal = self._end()
        base = ctypes.addressof(self._memory.data_ptr(self._store).contents)
        for page, old in journal.pages.items():
            ctypes.memmove(base + page * PAGE_BYTES, old, len(old))
        self.restored_pages = len(journal.pages)
        for g, value in zip(self._globals, journal.globals, strict=True):
            g.set_value(self._store, value)
        return journal.size_pages * WASM_PAGE_BYTES if self.size_pages != journal.size_pages else None

    def _end(self) -> Journal:
        journal = self.journal
        if journal is None:
            raise RuntimeError("no execution is open on this heap")
        self.journal = None
        if self._bitmap is not None:
            bits = self._bitmap.data_ptr(self._store)
            for page in journal.pages:
                bits[page] = 0
        return journal

    # --- outside executions ---------------------------------------------------------------------
    def global_values(self) -> list[Any]:
        return [g.value(self._store) for g in self._globals]

    def place(self, offset: int, data: bytes) -> None:
        """Writes outside any execution (a restored checkpoint, a kept heap): no journal, no
        dirty mark (the caller knows whether the pages match what is saved)."""
        self._check(offset, len(data))
        ctypes.memmove(ctypes.addressof(self._memory.data_ptr(self._store).contents) + offset, data, len(data))

    def set_globals(self, values: list[Any]) -> None:
        for g, value in zip(self._globals, values, strict=True):
            g.set_value(self._store, value)
