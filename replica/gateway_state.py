"""The certified state tree that read_state and synchronous calls reveal parts of.

Built from the network on demand, following the interface spec's "The system state tree":
/time, /subnet/<id>/{public_key,type,canister_ranges,node/<node>/public_key},
/canister_ranges/<subnet>/<first id>, /request_status/<request id>/..., and
/canister/<id>/{module_hash,controllers}. The state changes only in rounds, so a tree is built
and signed once per round and serves every read until the next one (a request submitted since
shows up once a round has inducted it, as on the IC).

`IngressLedger` remembers the requests the gateway submitted (who sent them and to which
effective canister, since only they may read the status) and keeps each finished status for
at least `retention_s` seconds of wall-clock time after the gateway first saw it finished, then
forgets it, as the IC does after 5 minutes. Wall time, not virtual time: retention exists so
that agents polling in real time can collect their answer, whatever pace the rounds run at.
"""

from __future__ import annotations

import threading
import time
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
    final: RequestStatus | None = None  # the finished status, once the gateway has seen it
    finished_at_s: float | None = None  # monotonic wall time when the gateway first saw it finished


@dataclass
class IngressLedger:
    """The gateway's record of accepted ingress messages; safe to share between threads."""

    retention_s: float = STATUS_RETENTION_S
    _entries: dict[bytes, SubmittedRequest] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, request_id: bytes, sender: Principal, effective_canister_id: Principal) -> None:
        with self._lock:
            self._entries.setdefault(request_id, SubmittedRequest(sender, effective_canister_id))

    def get(self, request_id: bytes) -> SubmittedRequest | None:
        with self._lock:
            return self._entries.get(request_id)

    def live_statuses(self, network: NetworkView) -> dict[bytes, RequestStatus]:
        """Current statuses of the remembered requests; forgets those past their retention.

        A finished status never changes again, so only unfinished requests are asked about."""
        now = time.monotonic()
        with self._lock:
            result = {}
            for request_id, entry in list(self._entries.items()):
                if entry.final is not None:
                    if now - entry.finished_at_s >= self.retention_s:
                        del self._entries[request_id]
                    else:
                        result[request_id] = entry.final
                    continue
                status = network.status(request_id)
                if status is None:
                    del self._entries[request_id]  # the network no longer knows it
                    continue
                if status.status in TERMINAL_STATUSES:
                    self._entries[request_id] = SubmittedRequest(entry.sender, entry.effective_canister_id, status, now)
                result[request_id] = status
            return result


def canister_ranges(first_index: int, size: int) -> list[tuple[bytes, bytes]]:
    """The subnet's one canister id range, as (lowest, highest) principal bytes."""
    return [(_canister_id(first_index), _canister_id(first_index + size - 1))]


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
    return subtree


@dataclass
class CertifiedStateSource:
    """Builds, signs and caches the state tree; rebuilds only when its content changed."""

    network: NetworkView
    keys: NetworkKeys
    ledger: IngressLedger
    ranges: list[tuple[bytes, bytes]]
    _cache: tuple[int, CertifiedState] | None = None  # (round number, its certified state)
    # Hashed request status subtrees, reused while the status stays the same.
    _status_trees: dict[bytes, tuple[RequestStatus, StateTree]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> CertifiedState:
        """The certified state as of the last round (the state only changes in rounds)."""
        # Under the network's lock no round can run, so the round number and everything read
        # with it form one consistent snapshot.
        with self.network.lock:
            round_number = self.network.round_number()
            with self._lock:
                if self._cache is not None and self._cache[0] == round_number:
                    return self._cache[1]
            statuses = self.ledger.live_statuses(self.network)
            canisters = [self.network.canister_info(canister_id) for canister_id in self.network.canister_ids()]
            now = self.network.time_ns()
        state = CertifiedState.sign(StateTree(self._state(now, statuses, canisters)), self.keys.network)
        with self._lock:
            self._cache = (round_number, state)
        return state

    def _status_trees_for(self, statuses: dict[bytes, RequestStatus]) -> dict[bytes, StateTree]:
        with self._lock:
            trees = {}
            for request_id, status in statuses.items():
                cached = self._status_trees.get(request_id)
                if cached is None or cached[0] != status:
                    cached = (status, StateTree(_status_subtree(status)))
                trees[request_id] = cached[1]
            # Keeping only the live ones forgets the pruned requests here too.
            self._status_trees = {rid: (statuses[rid], tree) for rid, tree in trees.items()}
            return trees

    def _state(self, now: int, statuses: dict[bytes, RequestStatus], canisters: list[CanisterInfo]) -> dict:
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
            b"request_status": self._status_trees_for(statuses),
            b"canister": {info.canister_id.bytes: _canister_subtree(info) for info in canisters},
        }
