"""The cost-meter hook: every op of the model math reports its work here.

The model math knows nothing of the IC. It reports *work* (multiply-accumulates by weight type,
elementwise ops, bytes copied, bytes of memory touched) to any object with these methods; the
simulated replica turns that work into instructions with its cost model, and standalone runs
just count it.
"""

from __future__ import annotations

from typing import Protocol


class Meter(Protocol):
    def macs(self, weight_type: str, count: int) -> None:
        """`count` multiply-accumulates against weights stored as `weight_type` (a GGML type name)."""

    def elementwise(self, count: int) -> None:
        """`count` scalar ops outside matmuls (norms, rope, softmax, activations, adds)."""

    def copied(self, n_bytes: int) -> None:
        """`n_bytes` moved by memcpy-like work (KV cache writes, argument/reply buffers)."""

    def touched(self, n_bytes: int) -> None:
        """`n_bytes` of memory read or written (weights streamed, KV read); costed per 4 KiB page."""


class NullMeter:
    """A meter that discards everything, for callers that do not account."""

    def macs(self, weight_type: str, count: int) -> None:
        pass

    def elementwise(self, count: int) -> None:
        pass

    def copied(self, n_bytes: int) -> None:
        pass

    def touched(self, n_bytes: int) -> None:
        pass
