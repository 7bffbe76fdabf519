"""The IC's certified hash trees (interface spec, "Certification" and "Encoding of certificates").

A state is a labeled tree: a mapping from labels (bytes) to subtrees or leaf values (bytes).
`StateTree` turns it into a hash tree once, keeping every digest, so that each read_state
request only prunes: `witness(paths)` reveals the requested paths and enough neighbouring
labels to prove that a missing path is absent, and replaces everything else by its digest.

Hash trees leave this module in their CBOR form, the nested lists of the spec:
[0] empty, [1, left, right] fork, [2, label, tree] labeled, [3, value] leaf, [4, digest] pruned.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Union

EMPTY, FORK, LABELED, LEAF, PRUNED = 0, 1, 2, 3, 4

LabeledTree = Mapping[bytes, Union["LabeledTree", bytes, "StateTree"]]
HashTreeCbor = list
Path = Sequence[bytes]


def _domain(name: str) -> bytes:
    return bytes([len(name)]) + name.encode("ascii")


_EMPTY_DIGEST = hashlib.sha256(_domain("ic-hashtree-empty")).digest()
_FORK_PREFIX = _domain("ic-hashtree-fork")
_LABELED_PREFIX = _domain("ic-hashtree-labeled")
_LEAF_PREFIX = _domain("ic-hashtree-leaf")


def _fork_digest(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_FORK_PREFIX + left + right).digest()


def _labeled_digest(label: bytes, subtree: bytes) -> bytes:
    return hashlib.sha256(_LABELED_PREFIX + label + subtree).digest()


def _leaf_digest(value: bytes) -> bytes:
    return hashlib.sha256(_LEAF_PREFIX + value).digest()


def digest(tree: HashTreeCbor) -> bytes:
    """The root hash of a hash tree in CBOR form (what a verifier recomputes)."""
    tag = tree[0]
    if tag == EMPTY:
        return _EMPTY_DIGEST
    if tag == FORK:
        return _fork_digest(digest(tree[1]), digest(tree[2]))
    if tag == LABELED:
        return _labeled_digest(bytes(tree[1]), digest(tree[2]))
    if tag == LEAF:
        return _leaf_digest(bytes(tree[1]))
    if tag == PRUNED:
        if len(tree[1]) != 32:
            raise ValueError("a pruned node must carry a 32-byte digest")
        return bytes(tree[1])
    raise ValueError(f"unknown hash tree node tag {tag!r}")


@dataclass(frozen=True)
class LookupResult:
    """The spec's lookup outcome: a found value, or why there is none."""

    outcome: Literal["found", "absent", "unknown", "error"]
    value: bytes | None = None


def _flatten_forks(tree: HashTreeCbor) -> list[HashTreeCbor]:
    if tree[0] == EMPTY:
        return []
    if tree[0] == FORK:
        return _flatten_forks(tree[1]) + _flatten_forks(tree[2])
    return [tree]


def _find_label(label: bytes, trees: list[HashTreeCbor]) -> LookupResult | HashTreeCbor:
    labeled = [(bytes(t[1]), t) for t in trees if t[0] == LABELED]
    for own, node in labeled:
        if own == label:
            return node[2]
    # Absence is only proven between two revealed neighbours (or beyond the last/first).
    for index, tree in enumerate(trees):
        if tree[0] != LABELED:
            continue
        own = bytes(tree[1])
        nxt = trees[index + 1] if index + 1 < len(trees) else None
        if own < label and nxt is not None and nxt[0] == LABELED and label < bytes(nxt[1]):
            return LookupResult("absent")
        if index == 0 and label < own:
            return LookupResult("absent")
        if nxt is None and own < label:
            return LookupResult("absent")
    if not trees or (len(trees) == 1 and trees[0][0] == LEAF):
        return LookupResult("absent")
    return LookupResult("unknown")


def lookup_path(path: Path, tree: HashTreeCbor) -> LookupResult:
    """The spec's lookup_path: Found value, Absent, Unknown (pruned away) or Error."""
    if not path:
        tag = tree[0]
        if tag == LEAF:
            return LookupResult("found", bytes(tree[1]))
        if tag == EMPTY:
            return LookupResult("absent")
        if tag == PRUNED:
            return LookupResult("unknown")
        return LookupResult("error")
    found = _find_label(bytes(path[0]), _flatten_forks(tree))
    if isinstance(found, LookupResult):
        return found
    return lookup_path(path[1:], found)


@dataclass(frozen=True, slots=True)
class _Node:
    """One node of the labeled tree with its hash-tree digests precomputed.

    The children hang from a balanced fork tree. A joined node (StateTree.joined) instead
    hangs them from a balanced fork over `segments`, each of which keeps its own fork tree.
    """

    digest: bytes
    leaf: bytes | None
    labels: tuple[bytes, ...]
    children: tuple[_Node, ...]
    # Digests of the balanced fork tree (over the children, or over the segments of a joined
    # node), 32 bytes each, at heap positions (the whole range at 1, the halves of position p at
    # 2p and 2p + 1): one bytes object rather than many small ones, as a state holds thousands.
    forks: bytes = b""
    segments: tuple[_Node, ...] = ()
    offsets: tuple[int, ...] = ()  # index of each segment's first child, then the child count
    firsts: tuple[bytes, ...] = ()  # each segment's first label

    def fork_digest(self, position: int) -> bytes:
        return self.forks[32 * position : 32 * position + 32]

    def count(self) -> int:
        return self.offsets[-1] if self.segments else len(self.labels)

    def index_of(self, label: bytes) -> int:
        """Where `label` is, or would be inserted, among the children."""
        if not self.segments:
            return bisect.bisect_left(self.labels, label)
        segment = bisect.bisect_right(self.firsts, label) - 1
        if segment < 0:
            return 0
        return self.offsets[segment] + bisect.bisect_left(self.segments[segment].labels, label)

    def label_at(self, index: int) -> bytes:
        if not self.segments:
            return self.labels[index]
        segment = bisect.bisect_right(self.offsets, index) - 1
        return self.segments[segment].labels[index - self.offsets[segment]]


def _fork_digests(count: int, digest_of: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    """Root digest and heap-ordered fork digests of a balanced fork over `count` items."""
    forks = bytearray(32 * 4 * count)

    def fork(lo: int, hi: int, position: int) -> bytes:
        if hi - lo == 1:
            result = digest_of(lo)
        else:
            mid = (lo + hi) // 2
            result = _fork_digest(fork(lo, mid, 2 * position), fork(mid, hi, 2 * position + 1))
        forks[32 * position : 32 * position + 32] = result
        return result

    return fork(0, count, 1), bytes(forks)


def _build(value: LabeledTree | bytes | StateTree) -> _Node:
    if isinstance(value, StateTree):
        return value._root
    if isinstance(value, (bytes, bytearray)):
        leaf = bytes(value)
        return _Node(_leaf_digest(leaf), leaf, (), ())
    items = sorted((bytes(label), child) for label, child in value.items())
    if not items:
        return _Node(_EMPTY_DIGEST, None, (), ())
    labels = tuple(label for label, _ in items)
    children = tuple(_build(child) for _, child in items)
    root, forks = _fork_digests(len(items), lambda i: _labeled_digest(labels[i], children[i].digest))
    return _Node(root, None, labels, children, forks)


def _join(runs: Sequence[_Node]) -> _Node:
    segments = tuple(run for run in runs if run.count())
    for run in runs:
        if run.leaf is not None or run.segments:
            raise ValueError("only plain labeled levels (not leaves or joined levels) can be joined")
    for left, right in zip(segments, segments[1:], strict=False):
        if not left.labels[-1] < right.labels[0]:
            raise ValueError("joined runs must hold increasing, disjoint ranges of labels")
    if not segments:
        return _Node(_EMPTY_DIGEST, None, (), ())
    offsets = [0]
    for segment in segments:
        offsets.append(offsets[-1] + len(segment.labels))
    root, forks = _fork_digests(len(segments), lambda i: segments[i].digest)
    firsts = tuple(segment.labels[0] for segment in segments)
    return _Node(root, None, (), (), forks, segments, tuple(offsets), firsts)


def _witness(node: _Node, paths: list[tuple[bytes, ...]]) -> HashTreeCbor:
    if any(not path for path in paths):
        return _reveal(node)
    if node.leaf is not None:
        # A path that runs past a leaf: the leaf itself answers it (lookup ends there).
        return [LEAF, node.leaf]
    count = node.count()
    if not count:
        return [EMPTY]
    wanted: dict[int, list[tuple[bytes, ...]]] = {}
    for path in paths:
        index = node.index_of(path[0])
        if index < count and node.label_at(index) == path[0]:
            wanted.setdefault(index, []).append(path[1:])
        else:
            # Reveal the neighbours' labels so the verifier can conclude Absent.
            for neighbour in (index - 1, index):
                if 0 <= neighbour < count:
                    wanted.setdefault(neighbour, [])
    return _forks(node, wanted)


def _reveal(node: _Node) -> HashTreeCbor:
    if node.leaf is not None:
        return [LEAF, node.leaf]
    if not node.count():
        return [EMPTY]
    return _forks(node, {index: [()] for index in range(node.count())})


def _forks(node: _Node, wanted: Mapping[int, list[tuple[bytes, ...]]]) -> HashTreeCbor:
    """The node's fork tree with the `wanted` children (by index) revealed to their subpaths,
    their labels alone revealed if they have none, and every fork without one pruned."""
    marked = sorted(wanted)

    def any_marked(lo: int, hi: int) -> bool:
        first = bisect.bisect_left(marked, lo)
        return first < len(marked) and marked[first] < hi

    def children(owner: _Node, offset: int, lo: int, hi: int, position: int) -> HashTreeCbor:
        if not any_marked(offset + lo, offset + hi):
            return [PRUNED, owner.fork_digest(position)]
        if hi - lo == 1:
            child = owner.children[lo]
            subpaths = wanted[offset + lo]
            inner = _witness(child, subpaths) if subpaths else [PRUNED, child.digest]
            return [LABELED, owner.labels[lo], inner]
        mid = (lo + hi) // 2
        return [FORK, children(owner, offset, lo, mid, 2 * position),
                children(owner, offset, mid, hi, 2 * position + 1)]

    def segments(lo: int, hi: int, position: int) -> HashTreeCbor:
        if not any_marked(node.offsets[lo], node.offsets[hi]):
            return [PRUNED, node.fork_digest(position)]
        if hi - lo == 1:
            segment = node.segments[lo]
            return children(segment, node.offsets[lo], 0, len(segment.labels), 1)
        mid = (lo + hi) // 2
        return [FORK, segments(lo, mid, 2 * position), segments(mid, hi, 2 * position + 1)]

    if node.segments:
        return segments(0, len(node.segments), 1)
    return children(node, 0, 0, node.count(), 1)


class StateTree:
    """A labeled tree with its hash tree; immutable once built.

    A subtree given as a StateTree is taken as it is, digests included, so the parts of a state
    that did not change since the last build cost nothing to build again.
    """

    def __init__(self, state: LabeledTree) -> None:
        self._root = _build(state)

    @classmethod
    def joined(cls, runs: Sequence[StateTree]) -> StateTree:
        """One level holding the children of all `runs` (levels with increasing, disjoint labels).

        Each run keeps its own fork tree and digests, and a balanced fork joins them, so a large
        level kept as runs costs only its changed runs to rebuild."""
        tree = cls.__new__(cls)
        tree._root = _join([run._root for run in runs])
        return tree

    @property
    def root_hash(self) -> bytes:
        return self._root.digest

    def witness(self, paths: Sequence[Path]) -> HashTreeCbor:
        """A pruned hash tree with the same root hash that reveals every requested path."""
        return _witness(self._root, [tuple(bytes(label) for label in path) for path in paths])

    def reveal_all(self) -> HashTreeCbor:
        return _reveal(self._root)
