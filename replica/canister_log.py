"""A canister's log: what its executions printed (debug_print) and why they trapped.

The IC keeps each canister's recent log records in a buffer bounded by the canister's
`log_memory_limit` setting (default 4096 bytes, ic-management-canister-types 0.7.1); when a new
record does not fit, the oldest are dropped. Record indexes keep counting across drops, so a
reader sees which records it missed. `fetch_canister_logs` returns them, filtered by index or
time range (both inclusive).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

DEFAULT_LOG_MEMORY_LIMIT = 4096  # bytes (ic-management-canister-types 0.7.1, CanisterSettings)
# A record's fixed part, counted with its content toward the limit: idx and timestamp (nat64 each).
RECORD_OVERHEAD_BYTES = 16


@dataclass(frozen=True)
class LogRecord:
    idx: int
    timestamp_nanos: int
    content: bytes

    @property
    def size_bytes(self) -> int:
        return RECORD_OVERHEAD_BYTES + len(self.content)


@dataclass
class CanisterLog:
    records: deque[LogRecord] = field(default_factory=deque)
    next_idx: int = 0
    size_bytes: int = 0

    def append(self, timestamp_nanos: int, content: bytes, limit: int) -> None:
        """Adds a record, dropping the oldest ones until the log fits in `limit` bytes. A record
        larger than the limit on its own keeps only its first bytes that fit."""
        room = max(0, limit - RECORD_OVERHEAD_BYTES)
        record = LogRecord(self.next_idx, timestamp_nanos, content[:room])
        self.next_idx += 1
        self.records.append(record)
        self.size_bytes += record.size_bytes
        self.shrink(limit)

    def shrink(self, limit: int) -> None:
        """Drops the oldest records until the log fits in `limit` bytes (a lowered log_memory_limit)."""
        while self.records and self.size_bytes > limit:
            self.size_bytes -= self.records.popleft().size_bytes

    def clear(self, before_idx: int | None = None) -> None:
        """Drops every record, or those older than `before_idx`; indexes go on counting (the IC
        never reuses an index)."""
        while self.records and (before_idx is None or self.records[0].idx < before_idx):
            self.size_bytes -= self.records.popleft().size_bytes

    def select(self, by: str | None = None, start: int = 0, end: int = 0) -> list[LogRecord]:
        """The records, all or those whose `by` ("by_idx" or "by_timestamp_nanos") lies in [start, end]."""
        if by is None:
            return list(self.records)
        key = (lambda r: r.idx) if by == "by_idx" else (lambda r: r.timestamp_nanos)
        return [r for r in self.records if start <= key(r) <= end]
