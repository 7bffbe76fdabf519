"""A budget of host time per execution of Python canister code.

Python canister code runs on the host, and a loop that never ends would hold the network's lock
forever. A watchdog thread raises `HostBudgetExceeded` in the executing thread once an execution
has run past its budget (CPython's PyThreadState_SetAsyncExc), and the execution traps like any
other. Arming and disarming only set two fields, so the hot path pays next to nothing; the
watchdog polls a few times per budget and exits when idle. The exception arrives at the next
Python bytecode, so a single long numpy call finishes first.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from cdk.canister import Trap
from replica.errors import ErrorCode

_IDLE_EXIT_S = 5.0  # the watchdog thread ends after this long without an execution


class HostBudgetExceeded(Trap):
    """Raised asynchronously in canister code that ran past its host-time budget."""

    def __init__(self) -> None:
        super().__init__("the execution ran past its host-time budget",
                         ErrorCode.CANISTER_INSTRUCTION_LIMIT_EXCEEDED)


def _raise_in(thread_id: int, exception: type[BaseException] | None) -> None:
    # None clears an exception set earlier and not yet raised.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exception) if exception else None)


class HostBudget:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self._poll_s = min(0.25, seconds / 4)
        self._lock = threading.Lock()
        self._armed: tuple[int, float] | None = None  # (thread id, deadline)
        self._fired = False
        self._watchdog: threading.Thread | None = None

    @contextmanager
    def running(self) -> Iterator[None]:
        """Canister code run inside this block is interrupted past the budget."""
        with self._lock:
            self._armed = (threading.get_ident(), time.monotonic() + self.seconds)
            self._fired = False
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="icllama-host-budget", daemon=True)
                self._watchdog.start()
        try:
            yield
        finally:
            with self._lock:
                self._armed = None
                if self._fired:
                    _raise_in(threading.get_ident(), None)
                    self._fired = False

    def _watch(self) -> None:
        idle_since = time.monotonic()
        while True:
            time.sleep(self._poll_s)
            with self._lock:
                now = time.monotonic()
                if self._armed is None:
                    if now - idle_since > _IDLE_EXIT_S:
                        self._watchdog = None
                        return
                    continue
                idle_since = now
                thread_id, deadline = self._armed
                if now >= deadline and not self._fired:
                    self._fired = True
                    _raise_in(thread_id, HostBudgetExceeded)
