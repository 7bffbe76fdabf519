"""The certified state tree that read_state and synchronous calls reveal parts of.

Built from the network on demand, following the interface spec's "The system state tree":
/time, /subnet/<id>/{public_key,type,canister_ranges,node/<node>/public_key},
/canister_ranges/<subnet>/<first id>, /request_status/<request id>/..., and
/canister/<id>/{module_hash,controllers,metadata/<name>,certified_data} (read_state may not read the
last: it is for the data certificates of queries). The state changes only in rounds, so a tree is built
and signed once per round and serves every read until the next one (a request submitted since
shows up once a round has inducted it, as on the IC), or for at most a second while the network
idles: /time is the wall clock, which agents check against theirs.

`IngressLedger` remembers the requests the gateway submitted (who sent them and to which
effective canister, since only they may read the status) and keeps each finished status for
at least `retention_s` seconds of wall-clock time after the gateway first saw it finished, then
forgets it, as the IC does after 5 minutes. Wall time, not virtual time: retention exists so
that agents polling in real time can collect their answer, whatever pace the rounds run at.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import cbor2

from cdk.principal import Principal
from replica.api_types import CanisterInfo, RequestStatus
from replica.certification import SELF_DESCRIBE_TAG, CertifiedState, NetworkKeys
from replica.hash_tree import StateTree
from replica.request_id import encode_uleb128

TERMINAL_STATUSES = ("replied", "rejected", "done")
STATUS_RETENTION_S = 5 * 60
CERTIFIED_TIME_REFRESH_NS = 10**9  # an idle network re-signs its state this often, for a fresh /time


class NetworkView(Protocol):
    """What the state tree needs from the network."""

    @property
    def lock(self) -> threading.RLock: ...
    def round_number(self) -> int: ...
    def time_ns(self) -> int: ...
    def status(self, request_id: bytes) -> RequestStatus | None: ...
    def canister_ids(self) -> list[Principal]: ...
    def canister_info(self, canister_id: Principal) -> CanisterInfo: ...


@dataclass(frozen=True)
class SubmittedRequest:
    sender: Principal
    effective_canister_id: Principal


@dataclass
class IngressLedger:
    """The gateway's record of accepted ingress messages and their statuses, grouped by the first
    byte of the request id so that a new certified tree rebuilds only the groups that changed.
    Safe to share between threads."""

    retention_s: float = STATUS_RETENTION_S
    clock: Callable[[], float] = time.monotonic  # wall-clock seconds
    _entries: dict[bytes, SubmittedRequest] = field(default_factory=dict)
    _unfinished: set[bytes] = field(default_factory=set)  # asked about at every refresh
    _finished: deque[tuple[float, bytes]] = field(default_factory=deque)  # (when seen finished, id)
    _groups: dict[int, dict[bytes, RequestStatus]] = field(default_factory=dict)
    _versions: dict[int, int] = field(default_factory=dict)  # per group, bumped on every change
    _changes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, request_id: bytes, sender: Principal, effective_canister_id: Principal) -> None:
        with self._lock:
            if request_id not in self._entries:
                self._entries[request_id] = SubmittedRequest(sender, effective_canister_id)
                self._unfinished.add(request_id)

    def get(self, request_id: bytes) -> SubmittedRequest | None:
        with self._lock:
            return self._entries.get(request_id)

    def refresh(self, network: NetworkView) -> dict[int, int]:
        """Brings the statuses up to date and forgets those past their retention; returns the
        version of every non-empty group. A finished status never changes, so only unfinished
        requests are asked about, and pruning looks only at the oldest finished ones."""
        now = self.clock()
        with self._lock:
            for request_id in list(self._unfinished):
                status = network.status(request_id)
                if status is None:  # the network no longer knows it
                    self._forget(request_id)
                    continue
                group = self._groups.setdefault(request_id[0], {})
                if group.get(request_id) != status:
                    group[request_id] = status
                    self._changed(request_id[0])
                if status.status in TERMINAL_STATUSES:
                    self._unfinished.discard(request_id)
                    self._finished.append((now, request_id))
            while self._finished and now - self._finished[0][0] >= self.retention_s:
                self._forget(self._finished.popleft()[1])
            return dict(self._versions)

    def group(self, first_byte: int) -> dict[bytes, RequestStatus]:
        with self._lock:
            return dict(self._groups.get(first_byte, {}))

    def _forget(self, request_id: bytes) -> None:
        self._entries.pop(request_id, None)
        self._unfinished.discard(request_id)
        group = self._groups.get(request_id[0])
        if group is not None and group.pop(request_id, None) is not None:
            self._changed(request_id[0])

    def _changed(self, first_byte: int) -> None:
        if self._groups.get(first_byte):
            self._changes += 1
            self._versions[first_byte] = self._changes
        else:
            self._groups.pop(first_byte, None)
            self._versions.pop(first_byte, None)


def canister_ranges(first_index: int, size: int, hosted: Sequence[Principal] = ()) -> list[tuple[bytes, bytes]]:
    """The subnet's canister id range, as (lowest, highest) principal bytes, and a range of one
    id for each canister `hosted` outside it (the system canisters at their mainnet ids), sorted."""
    own = (_canister_id(first_index), _canister_id(first_index + size - 1))
    return sorted([own] + [(c.bytes, c.bytes) for c in hosted if not own[0] <= c.bytes <= own[1]])


def _canister_id(index: int) -> bytes:
    # Interface spec, "Principals": a canister id is its 8-byte index followed by 0x01 0x01.
    return index.to_bytes(8, "big") + b"\x01\x01"


def _tagged(value: object) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(SELF_DESCRIBE_TAG, value))


def _status_subtree(status: RequestStatus) -> dict[bytes, bytes]:
    subtree = {b"status": status.status.encode()}
    if status.status == "replied":
        subtree[b"reply"] = status.reply or b""
    elif status.status == "rejected":
        subtree[b"reject_code"] = encode_uleb128(status.reject_code or 0)
        subtree[b"reject_message"] = (status.reject_message or "").encode()
        if status.error_code:
            subtree[b"error_code"] = status.error_code.encode()
    return subtree


def _canister_subtree(info: CanisterInfo) -> dict[bytes, bytes]:
    subtree = {b"controllers": _tagged([controller.bytes for controller in info.controllers])}
    if info.module_hash is not None:
        subtree[b"module_hash"] = info.module_hash
    if info.certified_data:
        subtree[b"certified_data"] = info.certified_data
    if info.metadata:
        # Private sections are in the tree too; read_state refuses them to non-controllers.
        subtree[b"metadata"] = {name.encode(): content for name, (_, content) in info.metadata.items()}
    return subtree


@dataclass
class CertifiedStateSource:
    """Builds, signs and caches the state tree; rebuilds only when its content changed."""

    network: NetworkView
    keys: NetworkKeys
    ledger: IngressLedger
    ranges: list[tuple[bytes, bytes]]
    _cache: tuple[int, CertifiedState, int] | None = None  # (round number, its certified state, its time)
    # The request_status level as runs, one per group of the ledger with the group's version: a
    # round rebuilds only the groups that changed, not all the statuses of the last 5 minutes.
    _runs: dict[int, tuple[int, StateTree]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> CertifiedState:
        """The certified state as of the last round (the state only changes in rounds), signed
        with a wall-clock time at most CERTIFIED_TIME_REFRESH_NS old."""
        # Under the network's lock no round can run, so the round number and everything read
        # with it form one consistent snapshot.
        with self.network.lock:
            round_number = self.network.round_number()
            with self._lock:
                if (self._cache is not None and self._cache[0] == round_number
                        and time.time_ns() - self._cache[2] < CERTIFIED_TIME_REFRESH_NS):
                    return self._cache[1]
                versions = self.ledger.refresh(self.network)
                changed = {first: self.ledger.group(first) for first, version in versions.items()
                           if self._runs.get(first, (None,))[0] != version}
            canisters = [self.network.canister_info(canister_id) for canister_id in self.network.canister_ids()]
            # The wall clock, not the network's virtual time: rounds run faster than real time, so
            # that runs ahead, and agents refuse certificates far from their own clock. Strictly
            # increasing, as the IC's is.
            now = max(time.time_ns(), self._cache[2] + 1 if self._cache else 0)
        with self._lock:
            runs = {first: self._runs[first] for first in versions if first not in changed}
            for first, members in changed.items():
                runs[first] = (versions[first], StateTree({rid: _status_subtree(s) for rid, s in members.items()}))
            self._runs = runs  # forgets the groups that emptied
            request_status = StateTree.joined([runs[first][1] for first in sorted(runs)])
        state = CertifiedState.sign(StateTree(self._state(now, request_status, canisters)), self.keys.network)
        with self._lock:
            self._cache = (round_number, state, now)
        return state

    def _state(self, now: int, request_status: StateTree, canisters: list[CanisterInfo]) -> dict:
        subnet = self.keys.subnet_id.bytes
        ranges = _tagged([list(pair) for pair in self.ranges])
        return {
            b"time": encode_uleb128(now),
            b"subnet": {
                subnet: {
                    b"public_key": self.keys.network.der,
                    b"type": b"application",
                    b"canister_ranges": ranges,
                    b"node": {self.keys.node.node_id.bytes: {b"public_key": self.keys.node.der}},
                }
            },
            b"canister_ranges": {subnet: {self.ranges[0][0]: ranges}},
            b"request_status": request_status,
            b"canister": {info.canister_id.bytes: _canister_subtree(info) for info in canisters},
        }
