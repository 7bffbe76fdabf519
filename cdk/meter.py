"""Work accounting shared by canisters and the replica's cost model.

`Work` satisfies the model math's `Meter` protocol (canisters/llama/meter.py) structurally, so the
model math reports into it without importing anything of the IC. The replica's cost model turns a
`Work` into instructions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Work:
    mac_counts: Counter[str] = field(default_factory=Counter)  # by GGML weight type name
    elementwise_ops: int = 0
    bytes_copied: int = 0
    bytes_touched: int = 0
    raw_instructions: int = 0  # charged directly, e.g. by test canisters or the runtime itself

    def macs(self, weight_type: str, count: int) -> None:
        self.mac_counts[weight_type] += count

    def elementwise(self, count: int) -> None:
        self.elementwise_ops += count

    def copied(self, n_bytes: int) -> None:
        self.bytes_copied += n_bytes

    def touched(self, n_bytes: int) -> None:
        self.bytes_touched += n_bytes

    def instructions(self, count: int) -> None:
        self.raw_instructions += count

    def add(self, other: Work) -> None:
        self.mac_counts.update(other.mac_counts)
        self.elementwise_ops += other.elementwise_ops
        self.bytes_copied += other.bytes_copied
        self.bytes_touched += other.bytes_touched
        self.raw_instructions += other.raw_instructions

    @property
    def total_macs(self) -> int:
        return sum(self.mac_counts.values())
