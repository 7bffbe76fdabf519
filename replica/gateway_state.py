"""The certified state tree that read_state and synchronous calls reveal parts of.

Built from the network on demand, following the interface spec's "The system state tree":
/time, /subnet/<id>/{public_key,type,canister_ranges,node/<node>/public_key},
/canister_ranges/<subnet>/<first id>, /request_status/<request id>/..., and
/canister/<id>/{module_hash,controllers}. A built tree is reused until what it shows changes,
so one BLS signature serves every read of the same state.

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

    def time_ns(self) -> int: ...
    def status(self, request_id: bytes) -> RequestStatus | None: ...
    def canister_ids(self) -> list[Principal]: ...
    def canister_info(self, canister_id: Principal) -> CanisterInfo: ...


@dataclass(frozen=True)
class SubmittedRequest:
    sender: Principal
    effective_canister_id: Principal
    finished_at_s: float | None = None  # wall time when the gateway first saw it finished


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
        """Current statuses of the remembered requests; forgets those past their retention."""
        now = time.monotonic()
        with self._lock:
            result = {}
            for request_id, entry in list(self._entries.items()):
                status = network.status(request_id)
                if status is None:
                    continue  # accepted but not yet inducted: not in the state tree yet
                if status.status in TERMINAL_STATUSES:
                    if entry.finished_at_s is None:
                        entry = SubmittedRequest(entry.sender, entry.effective_canister_id, now)
                        self._entries[request_id] = entry
                    elif now - entry.finished_at_s >= self.retention_s:
                        del self._entries[request_id]
                        continue
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
    _cache: tuple[object, CertifiedState] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> CertifiedState:
        statuses = self.ledger.live_statuses(self.network)
        canisters = [self.network.canister_info(canister_id) for canister_id in self.network.canister_ids()]
        now = self.network.time_ns()
        fingerprint = (now, tuple(statuses.items()), tuple(canisters))
        with self._lock:
            if self._cache is not None and self._cache[0] == fingerprint:
                return self._cache[1]
            state = CertifiedState.sign(StateTree(self._state(now, statuses, canisters)), self.keys.network)
            self._cache = (fingerprint, state)
            return state

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
            b"request_status": {request_id: _status_subtree(status) for request_id, status in statuses.items()},
            b"canister": {info.canister_id.bytes: _canister_subtree(info) for info in canisters},
        }
