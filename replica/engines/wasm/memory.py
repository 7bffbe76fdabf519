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
from wasmtime import _ffi  # the C API (see _RawMemory)

from replica.limits import WASM_PAGE_BYTES

PAGE_BYTES = 4096  # the IC's dirty-page unit (the OS page)


# Private prototypes of two C API functions, returning plain integers: wasmtime-py's own
# `Memory.data_ptr`/`data_len` cost a few microseconds per call, and the host asks for the
# memory's address and size on every System API call that copies.
_memory_data = _ffi.dll["wasmtime_memory_data"]
_memory_data.restype = ctypes.c_void_p
_memory_data.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
_memory_data_size = _ffi.dll["wasmtime_memory_data_size"]
_memory_data_size.restype = ctypes.c_size_t
_memory_data_size.argtypes = [ctypes.c_void_p, ctypes.c_void_p]


class _RawMemory:
    """A wasm memory's current address and size, read fresh on every call (it may grow)."""

    def __init__(self, store: wasmtime.Store, memory: wasmtime.Memory):
        self._context = ctypes.cast(store._context(), ctypes.c_void_p)
        self._memory = ctypes.cast(ctypes.pointer(memory._memory), ctypes.c_void_p)
        self._keep = memory  # the struct the pointer above points into

    def base(self) -> int:
        return _memory_data(self._context, self._memory) or 0

    def size(self) -> int:
        return _memory_data_size(self._context, self._memory)


class _NoMemory:
    """A module that declares no memory (the IC allows it): every access is out of bounds."""

    def base(self) -> int:
        return 0

    def size(self) -> int:
        return 0


class HeapAccessError(Exception):
    """An access outside the wasm memory: the execution traps, as on the IC."""


@dataclass
class Journal:
    """Pages written by the open execution, with their contents before the first write."""

    pages: dict[int, bytes] = field(default_factory=dict)
    size_pages: int = 0  # the memory's size (in wasm pages) when the execution began
    globals: list[Any] = field(default_factory=list)


class Heap:
    def __init__(self, store: wasmtime.Store, memory: wasmtime.Memory | None, bitmap: wasmtime.Memory | None,
                 mutable_globals: list[wasmtime.Global]):
        self._store = store
        self._memory = _RawMemory(store, memory) if memory is not None else _NoMemory()
        self._bitmap = _RawMemory(store, bitmap) if bitmap is not None else None
        self._globals = mutable_globals
        self.journal: Journal | None = None
        self.dirty: set[int] = set()  # pages changed since the last checkpoint
        self.restored_pages = 0  # pages the last rollback wrote back (its cost)

    # --- sizes -------------------------------------------------------------------------------
    @property
    def size_bytes(self) -> int:
        return self._memory.size()

    @property
    def size_pages(self) -> int:
        return self.size_bytes // WASM_PAGE_BYTES

    # --- host access -------------------------------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        self._check(addr, size)
        return ctypes.string_at(self._memory.base() + addr, size)

    def write(self, addr: int, data: bytes) -> None:
        self._check(addr, len(data))
        if not data:
            return
        self.first_write_range(addr, len(data))
        ctypes.memmove(self._memory.base() + addr, data, len(data))

    def _check(self, addr: int, size: int) -> None:
        if addr < 0 or size < 0 or addr + size > self.size_bytes:
            raise HeapAccessError(f"heap out of bounds: {size} bytes at address {addr} exceed the wasm "
                                  f"memory of {self.size_bytes} bytes")

    # --- the write barrier -------------------------------------------------------------------
    def first_write_range(self, addr: int, size: int) -> None:
        """Called before a write of `size` bytes at `addr`: keeps the old contents of each page
        it touches for the first time in this execution, and marks them in the bitmap."""
        journal = self.journal
        if journal is None or size <= 0:
            return
        pages = journal.pages
        heap_size = self._memory.size()
        base = self._memory.base()
        bits = self._bitmap.base() if self._bitmap is not None else 0
        for page in range(addr // PAGE_BYTES, (addr + size - 1) // PAGE_BYTES + 1):
            start = page * PAGE_BYTES
            if page in pages or start >= heap_size:
                continue  # already kept, or past the end (the write itself traps)
            pages[page] = ctypes.string_at(base + start, min(PAGE_BYTES, heap_size - start))
            if bits:
                ctypes.c_uint8.from_address(bits + page).value = 1

    # --- executions --------------------------------------------------------------------------
    def begin(self) -> None:
        self.journal = Journal(size_pages=self.size_pages,
                               globals=[g.value(self._store) for g in self._globals])

    def commit(self) -> Journal:
        """Keeps the execution's writes; returns its journal (the state it started from)."""
        journal = self._end()
        self.dirty.update(journal.pages)
        return journal

    def swap(self, journal: Journal) -> Journal:
        """Puts the pages and globals of `journal` in place outside any execution, and returns
        the journal that puts the current ones back (a query reads the state from before an
        execution still running over rounds)."""
        base = self._memory.base()
        current = Journal({page: ctypes.string_at(base + page * PAGE_BYTES, len(old))
                           for page, old in journal.pages.items()}, self.size_pages, self.global_values())
        for page, old in journal.pages.items():
            ctypes.memmove(base + page * PAGE_BYTES, old, len(old))
        self.set_globals(journal.globals)
        return current

    def rollback(self) -> int | None:
        """Puts back every page and global the execution changed. If the memory grew, which wasm
        cannot undo in place, returns the size in bytes it had: the caller rebuilds the instance
        with the first that many bytes."""
        journal = self._end()
        base = self._memory.base()
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
            bits = self._bitmap.base()
            for page in journal.pages:
                ctypes.c_uint8.from_address(bits + page).value = 0
        return journal

    # --- outside executions ---------------------------------------------------------------------
    def global_values(self) -> list[Any]:
        return [g.value(self._store) for g in self._globals]

    def place(self, offset: int, data: bytes) -> None:
        """Writes outside any execution (a restored checkpoint, a kept heap): no journal, no
        dirty mark (the caller knows whether the pages match what is saved)."""
        self._check(offset, len(data))
        ctypes.memmove(self._memory.base() + offset, data, len(data))

    def set_globals(self, values: list[Any]) -> None:
        for g, value in zip(self._globals, values, strict=True):
            g.set_value(self._store, value)
