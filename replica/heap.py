"""Heap snapshots for trap rollback and query isolation, and heap accounting in bytes.

A canister's heap is its object's attributes. `snapshot` walks the mutable Python part once:
it records, for every reachable container, a shallow copy of its contents (so `restore` puts the
contents back into the *same* objects, which keeps references held by suspended calls valid)
and it adds up the bytes in use. numpy arrays and `Frozen` values are shared, never copied, so
the cost of a snapshot is proportional to the number of Python containers, not to the bytes
of weights or KV caches. Hand-written because `copy.deepcopy` copies numpy arrays and cannot
restore in place.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from cdk.canister import Frozen

_ATOMS = (int, float, complex, bool, str, bytes, type(None), range, type)
_NOT_STATE = ("ic",)  # attributes of the canister object that are the runtime's, not the heap's


class UnsupportedState(TypeError):
    """Heap state holds an object the runtime cannot snapshot (a file, a lock, a generator)."""


@dataclass
class HeapSnapshot:
    saved: list[tuple[Any, Any]]
    heap_bytes: int
    writable_arrays: list[np.ndarray]


def snapshot(root: object) -> HeapSnapshot:
    return _walk(root, save=True)


def measure(obj: object) -> int:
    """Bytes held by `obj` and everything it reaches (numpy buffers counted once)."""
    return _walk(obj, save=False).heap_bytes


def _walk(root: object, save: bool) -> HeapSnapshot:
    """One pass over the state: its bytes, and with `save` the contents of every container (the
    walk after each execution only needs the bytes, and copying nothing makes it cheaper)."""
    saved: list[tuple[Any, Any]] = []
    arrays: list[np.ndarray] = []
    seen: set[int] = set()
    buffers: set[int] = set()
    total = 0
    stack: list[Any] = [root]
    while stack:
        obj = stack.pop()
        key = id(obj)
        if key in seen:
            continue
        seen.add(key)
        if isinstance(obj, _ATOMS):
            total += sys.getsizeof(obj)
        elif isinstance(obj, np.ndarray):
            total += _array_bytes(obj, buffers)
            if obj.flags.writeable:
                arrays.append(obj)
        elif isinstance(obj, Frozen):
            total += _frozen_bytes(obj)
        elif isinstance(obj, dict):
            if save:
                saved.append((obj, dict(obj)))
            total += sys.getsizeof(obj)
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list):
            if save:
                saved.append((obj, list(obj)))
            total += sys.getsizeof(obj)
            stack.extend(obj)
        elif isinstance(obj, tuple | frozenset):
            total += sys.getsizeof(obj)
            stack.extend(obj)
        elif isinstance(obj, set):
            if save:
                saved.append((obj, set(obj)))
            total += sys.getsizeof(obj)
            stack.extend(obj)
        elif isinstance(obj, bytearray):
            if save:
                saved.append((obj, bytes(obj)))
            total += sys.getsizeof(obj)
        elif callable(obj):
            total += sys.getsizeof(obj)  # functions and classes are code, not mutable state
        elif hasattr(obj, "__dict__"):
            state = {k: v for k, v in vars(obj).items() if not (obj is root and k in _NOT_STATE)}
            if save:
                saved.append((obj, state))
            total += sys.getsizeof(obj) + sys.getsizeof(vars(obj))
            stack.extend(state.values())
        elif hasattr(type(obj), "__slots__"):
            slots = _slot_values(obj)
            if save:
                saved.append((obj, slots))
            total += sys.getsizeof(obj)
            stack.extend(slots.values())
        elif _is_immutable_leaf(obj):
            total += sys.getsizeof(obj)
        else:
            raise UnsupportedState(
                f"canister state holds a {type(obj).__name__}, which cannot be snapshotted for "
                "rollback; keep only plain data (dicts, lists, numbers, strings, numpy arrays, "
                "dataclasses) in canister attributes"
            )
    return HeapSnapshot(saved, total, arrays)


def restore(snap: HeapSnapshot) -> None:
    """Puts back the contents of every container recorded by `snapshot`, in place."""
    for obj, state in snap.saved:
        if isinstance(obj, dict):
            obj.clear()
            obj.update(state)
        elif isinstance(obj, list):
            obj[:] = state
        elif isinstance(obj, set):
            obj.clear()
            obj.update(state)
        elif isinstance(obj, bytearray):
            obj[:] = state
        elif hasattr(obj, "__dict__"):
            keep = {k: v for k, v in vars(obj).items() if k in _NOT_STATE and k not in state}
            vars(obj).clear()
            vars(obj).update(state)
            vars(obj).update(keep)
        else:
            for name in _slot_names(type(obj)):
                if name in state:
                    object.__setattr__(obj, name, state[name])
                elif hasattr(obj, name):
                    object.__delattr__(obj, name)


class ReadOnlyArrays:
    """Makes the writable arrays of a snapshot read-only for the duration of a query, so that an
    in-place write in a query fails loudly instead of leaking into the canister's state."""

    def __init__(self, arrays: list[np.ndarray]):
        # Owners before views: a view can only be made writable again once its base is.
        self._arrays = sorted(arrays, key=_view_depth)

    def __enter__(self) -> ReadOnlyArrays:
        for array in self._arrays:
            array.flags.writeable = False
        return self

    def __exit__(self, *exc: object) -> None:
        for array in self._arrays:
            array.flags.writeable = True


def _array_bytes(array: np.ndarray, buffers: set[int]) -> int:
    owner = array
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    if id(owner) in buffers:
        return 0
    buffers.add(id(owner))
    return owner.nbytes


def _frozen_bytes(value: Frozen) -> int:
    if value._measured_bytes is None:
        value._measured_bytes = sys.getsizeof(value) + measure(value.value)
    return value._measured_bytes


def _view_depth(array: np.ndarray) -> int:
    depth = 0
    while isinstance(array.base, np.ndarray):
        array = array.base
        depth += 1
    return depth


def _slot_names(cls: type) -> list[str]:
    names: list[str] = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.extend([slots] if isinstance(slots, str) else slots)
    return [n for n in names if n not in ("__dict__", "__weakref__")]


def _slot_values(obj: object) -> dict[str, Any]:
    return {n: getattr(obj, n) for n in _slot_names(type(obj)) if hasattr(obj, n)}


def _is_immutable_leaf(obj: object) -> bool:
    # Principals, enums, numpy scalars, Decimal, Fraction and similar value types.
    return isinstance(obj, np.generic) or type(obj).__hash__ is not None and not hasattr(obj, "__dict__")
