"""Partitioning strategies: how a model's layers (and its output) are grouped into canisters.

As in exo's topology/ partitioning strategies, each strategy is one small class with one method.
A strategy sees a `Packing`: the pieces in pipeline order (one per transformer layer, then the
output if it goes whole into a canister), the on-chain bytes of each, and two questions the
planner answers for any contiguous run of pieces: does it fit one canister (every limit), and how
many rounds per token would that canister add. It returns contiguous groups, one per canister;
the planner turns them into Shards and checks and costs them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

Group = tuple[int, int]  # pieces [start, stop)


class NoPartition(ValueError):
    """No grouping satisfies the request; the message says which limit binds and what to change."""


@dataclass(frozen=True)
class Packing:
    labels: tuple[str, ...]  # "layer 3", "the output": for messages
    weight_bytes: tuple[int, ...]
    fits: Callable[[int, int], bool]  # pieces [start, stop) fit one canister
    rounds: Callable[[int, int], int]  # rounds per token that canister adds to the pipeline
    instructions: Callable[[int, int], int]  # that canister's instructions per generated token
    shards: int | None  # an exact canister count asked for, or None to choose

    def __post_init__(self) -> None:
        if self.shards is not None and self.shards > self.n:
            raise NoPartition(f"--shards {self.shards} is more than the {self.n} pieces ({_pieces_text(self)}) that "
                              f"canisters can hold one by one; use at most --shards {self.n}")

    @property
    def n(self) -> int:
        return len(self.labels)

    def bytes_of(self, start: int, stop: int) -> int:
        return sum(self.weight_bytes[start:stop])


class PartitionStrategy(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]

    @abstractmethod
    def partition(self, packing: Packing) -> tuple[Group, ...]:
        """Contiguous groups covering every piece in order, each of which fits a canister."""


class BalancedBytes(PartitionStrategy):
    """Contiguous groups whose largest holds the fewest bytes: with --shards N, exactly N groups;
    otherwise the fewest groups that fit, balanced."""

    name = "balanced-bytes"
    summary = "balanced contiguous packing by bytes"

    def partition(self, packing: Packing) -> tuple[Group, ...]:
        groups = _min_max_bytes(packing, packing.shards or fewest_count(packing))
        if groups is None:
            raise _no_partition(packing)
        return groups


class FewestHops(PartitionStrategy):
    """The fewest sequential canisters that still fit every limit (each one is a call per token,
    and a call costs a round each way); of those, the grouping with the fewest rounds per token,
    and then the one whose busiest canister runs the fewest instructions (which lets the prefill
    chunk grow)."""

    name = "fewest-hops"
    summary = "fewest sequential stages, then fewest rounds per token"

    def partition(self, packing: Packing) -> tuple[Group, ...]:
        n = packing.n
        unreached = (float("inf"), float("inf"))
        # best[k][i]: ((rounds, busiest), groups) covering pieces [0, i) with k groups
        max_groups = packing.shards or n
        best: list[list[tuple[tuple[float, float], tuple[Group, ...]]]] = [
            [(unreached, ())] * (n + 1) for _ in range(max_groups + 1)]
        best[0][0] = ((0, 0), ())
        for k in range(1, max_groups + 1):
            for stop in range(1, n + 1):
                for start in range(stop - 1, -1, -1):
                    if not packing.fits(start, stop):
                        break  # a longer run holds more: it cannot fit either
                    (rounds, busiest), groups = best[k - 1][start]
                    key = (rounds + packing.rounds(start, stop), max(busiest, packing.instructions(start, stop)))
                    if key < best[k][stop][0]:
                        best[k][stop] = (key, (*groups, (start, stop)))
            if best[k][n][1] and (packing.shards is None or k == packing.shards):
                return best[k][n][1]
        raise _no_partition(packing)


class OnePerLayer(PartitionStrategy):
    """yllama.oc's layout: one layer per canister, and the output on its own canister."""

    name = "one-per-layer"
    summary = "one layer per yblock, the output on its own (yllama.oc)"

    def partition(self, packing: Packing) -> tuple[Group, ...]:
        if packing.shards is not None and packing.shards != packing.n:
            raise NoPartition(f"--shards {packing.shards} conflicts with the one-per-layer strategy, which uses "
                              f"{packing.n} canisters here; drop --shards or choose another --strategy")
        return tuple((i, i + 1) for i in range(packing.n))


STRATEGIES: dict[str, type[PartitionStrategy]] = {s.name: s for s in (BalancedBytes, FewestHops, OnePerLayer)}


def strategy_named(name: str) -> PartitionStrategy:
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise NoPartition(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}") from None


def _min_max_bytes(packing: Packing, count: int) -> tuple[Group, ...] | None:
    """Exactly `count` fitting groups minimizing the largest group's bytes, or None if none exist."""
    n, inf = packing.n, float("inf")
    best: list[list[tuple[float, tuple[Group, ...]]]] = [[(inf, ())] * (n + 1) for _ in range(count + 1)]
    best[0][0] = (0, ())
    for k in range(1, count + 1):
        for stop in range(k, n - (count - k) + 1):  # leave at least one piece for each later group
            for start in range(stop - 1, k - 2, -1):
                if not packing.fits(start, stop):
                    break
                largest = max(best[k - 1][start][0], packing.bytes_of(start, stop))
                if largest < best[k][stop][0]:
                    best[k][stop] = (largest, (*best[k - 1][start][1], (start, stop)))
    return best[count][n][1] or None


def _no_partition(packing: Packing) -> NoPartition:
    fewest = fewest_count(packing)
    return NoPartition(f"the {_pieces_text(packing)} do not fit {packing.shards} canisters within every limit (bytes, "
                       f"heap, instructions, message sizes); the fewest that fit are {fewest}: use --shards {fewest} "
                       "or more, or a larger --shard-bytes")


def fewest_count(packing: Packing) -> int:
    """The fewest contiguous groups that fit: fill each canister while the next piece still fits
    (optimal, as any run inside a fitting run fits too)."""
    count = start = 0
    while start < packing.n:
        stop = start + 1
        while stop < packing.n and packing.fits(start, stop + 1):
            stop += 1
        count, start = count + 1, stop
    return count


def _pieces_text(packing: Packing) -> str:
    """What the pieces are, for messages: '30 layers and the output'."""
    layers = sum(1 for label in packing.labels if label.startswith("layer"))
    return f"{layers} layers" + (" and the output" if layers < packing.n else "")


def check_groups(groups: Sequence[Group], n: int) -> None:
    """A strategy's result must cover the pieces in order without gaps or overlaps."""
    expected = 0
    for start, stop in groups:
        if start != expected or stop <= start:
            raise AssertionError(f"strategy returned groups {list(groups)}, which do not tile 0..{n}")
        expected = stop
    if expected != n:
        raise AssertionError(f"strategy returned groups {list(groups)}, which do not tile 0..{n}")
