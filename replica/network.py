"""The simulated IC network as the HTTP gateway and in-process tools see it.

Thread-safe: every method takes the network's lock, so HTTP threads may submit, poll and query
while the round driver thread executes rounds.

When the state cannot be written (disk full, read-only, I/O error) the network stops executing
rounds and keeps what it has in memory: its last committed state plus the round that could not
be written. It refuses update calls (and rejects the ones not yet inducted) with an error that
names the state directory and what to do, tries the checkpoint again every second, and carries
on by itself once it succeeds. Queries and reads go on being served throughout.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cdk.principal import Principal
from replica.api_types import (
    CanisterInfo,
    IngressMessage,
    IngressRejected,
    QueryResult,
    RequestStatus,
)
from replica.config import NetworkConfig
from replica.cost_model import CostReport
from replica.errors import RejectCode
from replica.state_store import StateStore
from replica.subnet import Subnet

__all__ = [
    "CanisterInfo", "IngressMessage", "IngressRejected", "Network", "NetworkConfig", "QueryResult",
    "RequestStatus", "IdleTimeout", "StorageFault",
]

DEFAULT_CONFIG = NetworkConfig()
_FINAL = ("replied", "rejected", "done")


class IdleTimeout(RuntimeError):
    """run_until_idle gave up: the network still had work after max_rounds rounds."""


class StorageFault(RuntimeError):
    """The network cannot write its state directory; the message says which disk and what to do."""


RETRY_CHECKPOINT_S = 1.0  # how often a network that cannot write its state tries again


class Network:
    def __init__(self, state_dir: Path | None, config: NetworkConfig = DEFAULT_CONFIG):
        self.config = config
        self._lock = threading.RLock()
        self._round_done = threading.Condition(self._lock)
        self._store = StateStore(Path(state_dir)) if state_dir is not None else None
        self._subnet = Subnet(config)
        if self._store is not None:
            self._store.restore(self._subnet)
        self._driver: threading.Thread | None = None
        self._stopping = threading.Event()
        self._storage_fault: str | None = None  # why the last checkpoint failed, until one succeeds

    @property
    def state_dir(self) -> Path | None:
        return self._store.root if self._store else None

    @property
    def subnet(self) -> Subnet:
        """The subnet itself, for in-process tools; hold `lock` while using it from threads."""
        return self._subnet

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    @property
    def storage_fault(self) -> str | None:
        """Why the state cannot be written (rounds are paused), or None when all is well."""
        with self._lock:
            return self._storage_fault

    # --- ingress -----------------------------------------------------------------------------
    def submit(self, msg: IngressMessage) -> None:
        """Accepts an update call for a later round; raises IngressRejected if refused outright."""
        with self._lock:
            if self._storage_fault is not None:
                raise IngressRejected(503, "", self._storage_fault, int(RejectCode.SYS_TRANSIENT))
            self._subnet.submit(msg)
            self._round_done.notify_all()  # wakes the driver if it idles

    def status(self, request_id: bytes) -> RequestStatus | None:
        with self._lock:
            return self._subnet.status(request_id)

    def report(self, request_id: bytes) -> CostReport | None:
        """What the call tree of an ingress message cost so far (final once it is replied)."""
        with self._lock:
            record = self._subnet.ingress.get(request_id)
            return record.report if record else None

    def wait(self, request_id: bytes, timeout_s: float) -> RequestStatus | None:
        """Blocks until the request is replied or rejected, or `timeout_s` of host time passed;
        returns its status then (None if unknown). Needs the round driver (`start`) running."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                status = self._subnet.status(request_id)
                remaining = deadline - time.monotonic()
                if status is None or status.status in _FINAL or remaining <= 0:
                    return status
                self._round_done.wait(remaining)

    def query(self, sender: Principal, canister_id: Principal, method: str, arg: bytes,
              certificate: Callable[[], bytes] | None = None) -> QueryResult:
        with self._lock:
            return self._subnet.query(sender, canister_id, method, arg, certificate)

    # --- time and rounds ---------------------------------------------------------------------
    def time_ns(self) -> int:
        with self._lock:
            return self._subnet.time_ns()

    def round_number(self) -> int:
        with self._lock:
            return self._subnet.round

    def execute_round(self) -> None:
        """Executes one round and checkpoints it; raises StorageFault instead while the state
        cannot be written (after trying the checkpoint again)."""
        with self._lock:
            if self._storage_fault is not None and not self._checkpoint(force=True):
                raise StorageFault(self._storage_fault)
            self._subnet.execute_round()
            self._checkpoint()
            self._round_done.notify_all()

    def run_until_idle(self, max_rounds: int = 100_000) -> int:
        """Executes rounds until nothing is queued or in flight; returns the rounds executed."""
        for executed in range(max_rounds + 1):
            with self._lock:
                if not self._subnet.has_work():
                    return executed
            if executed == max_rounds:
                break
            self.execute_round()
        raise IdleTimeout(f"the network still has work after {max_rounds} rounds; a canister may be "
                          "calling in a loop, or raise max_rounds")

    def start(self, realtime: bool = False) -> None:
        """Starts the background round driver. `realtime` paces rounds to the host clock (one
        round per round duration); otherwise rounds run as fast as the host computes them
        whenever there is work."""
        with self._lock:
            if self._driver is not None:
                return
            self._stopping.clear()
            self._driver = threading.Thread(target=self._drive, args=(realtime,), name="icllama-rounds",
                                            daemon=True)
            self._driver.start()

    def stop(self) -> None:
        driver = self._driver
        if driver is None:
            return
        self._stopping.set()
        with self._lock:
            self._round_done.notify_all()
        driver.join()
        self._driver = None
        with self._lock:
            self._checkpoint(force=True)

    def _drive(self, realtime: bool) -> None:
        """Rounds for a served network: idle rounds pass in real time, and a busy network runs
        rounds as fast as the host computes them. Its virtual time then runs ahead of the wall
        clock (it waits for it while idle); certificates carry the wall-clock time instead
        (replica.gateway_state), so agents that check it against theirs accept them. Holding rounds
        back to keep the virtual time near the wall clock made a generation take its virtual
        seconds of real time whenever the lead was used up (1.5 s or 7 s, by the history)."""
        period_s = self.config.round_duration_ns / 1e9
        next_round = next_prune = time.monotonic()
        while not self._stopping.is_set():
            with self._lock:
                faulted = self._storage_fault is not None and not self._checkpoint(force=True)
            if faulted:
                if self._stopping.wait(RETRY_CHECKPOINT_S):
                    return
                next_round = time.monotonic()
                continue
            if time.monotonic() >= next_prune:
                with self._lock:
                    self._subnet.prune_ingress(time.time_ns())
                next_prune = time.monotonic() + 1.0
            if realtime:
                delay = next_round - time.monotonic()
                if delay > 0 and self._stopping.wait(delay):
                    return
                next_round += period_s
                self._drive_round()
                continue
            with self._lock:
                if not self._subnet.has_work():
                    self._subnet.pass_idle_rounds(time.time_ns())
                    self._checkpoint()
                    self._round_done.wait(0.5)
                    continue
            self._drive_round()

    def _drive_round(self) -> None:
        try:
            self.execute_round()
        except StorageFault:
            pass  # the driver's loop waits and tries the checkpoint again

    def _checkpoint(self, force: bool = False) -> bool:
        """Writes the state if it changed; returns False (and pauses the rounds) if it cannot."""
        if self._store is None or not (self._subnet.changed or force):
            return True
        try:
            self._store.checkpoint(self._subnet)
        except OSError as e:
            self._enter_storage_fault(e)
            return False
        self._subnet.changed = False
        if self._storage_fault is not None:
            self._storage_fault = None
            print(f"icllama: the state is written again to {self._store.root}; rounds resume", file=sys.stderr)
        return True

    def _enter_storage_fault(self, error: OSError) -> None:
        assert self._store is not None
        root = self._store.root
        try:
            free = f"{shutil.disk_usage(root).free:,} bytes free"
        except OSError:
            free = "its free space unknown"
        first = self._storage_fault is None
        self._storage_fault = (
            f"the network cannot write its state to {root} ({error.strerror or error}, errno {error.errno}; "
            f"{free} on that disk). It keeps its last committed state and refuses update calls until it can "
            f"write again: free space on the disk that holds {root} (or make it writable), and the network "
            "resumes by itself within seconds; no restart is needed")
        reject = self._subnet.reject_uninducted(self._storage_fault)
        self._round_done.notify_all()
        if first:
            print(f"icllama: {self._storage_fault} ({reject} waiting update calls rejected)", file=sys.stderr)

    # --- canisters ---------------------------------------------------------------------------
    def canister_ids(self) -> list[Principal]:
        with self._lock:
            return sorted(self._subnet.canisters, key=lambda p: p.bytes)

    def canister_info(self, canister_id: Principal) -> CanisterInfo:
        with self._lock:
            return self._subnet.info(canister_id)
