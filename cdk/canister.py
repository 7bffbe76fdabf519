"""The programming model that canister code is written against.

A canister is a subclass of `Canister` whose `@update` and `@query` methods are typed by its
`.did` file. The runtime constructs it with an `IC` handle (`self.ic`) and encodes and decodes
every argument and reply as Candid, so canister code only sees Python values.

Heap state is the object's attributes. The runtime snapshots the mutable Python part of that
state before each execution and restores it if the execution traps; numpy arrays are shared, not
copied. Wrap state that never changes once set in `frozen(...)`: snapshots share it and the
memory accounting measures it once.

One simplification follows from sharing numpy arrays: an in-place write into an existing array
(`self.kv[pos] = x`) is not rolled back by a trap. Canisters commit such writes the way a
careful wasm canister would: write the array first, then advance a Python-level length or
counter last, so a trap before that point leaves the written slots unused.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, NoReturn, TypeVar

if TYPE_CHECKING:
    from cdk.meter import Work
    from cdk.principal import Principal

T = TypeVar("T")
MethodMode = Literal["update", "query"]
_MODE_ATTRIBUTE = "__ic_method_mode__"


def update(method: Callable) -> Callable:
    """Marks a method as an update: it may change state and may `await self.ic.call(...)`."""
    setattr(method, _MODE_ATTRIBUTE, "update")
    return method


def query(method: Callable) -> Callable:
    """Marks a method as a query: it runs on a copy of the state and its changes are discarded."""
    if inspect.iscoroutinefunction(method):
        raise TypeError(f"query {method.__qualname__} cannot be async: queries cannot make calls")
    setattr(method, _MODE_ATTRIBUTE, "query")
    return method


def method_mode(method: Callable) -> MethodMode | None:
    return getattr(method, _MODE_ATTRIBUTE, None)


class Frozen(Generic[T]):
    """State that is immutable once set (weights, a tokenizer): shared by every snapshot, and its
    size is measured once. Read it through `.value`; never mutate what it holds."""

    __slots__ = ("value", "_measured_bytes")

    def __init__(self, value: T, size_bytes: int | None = None):
        self.value = value
        self._measured_bytes = size_bytes

    @property
    def size_bytes(self) -> int | None:
        """Its heap bytes, once the runtime measured them (or the code that made it knew them)."""
        return self._measured_bytes


def frozen(value: T, size_bytes: int | None = None) -> Frozen[T]:
    """Wraps `value`. Pass `size_bytes` when they are known without a walk, e.g. a new version of
    a value whose old version was measured, plus what grew: the runtime then never walks it."""
    return Frozen(value, size_bytes)


class Trap(BaseException):
    """The current execution traps: its state changes are rolled back.

    A BaseException so that a canister's `except Exception` cannot swallow a trap, as a wasm
    trap cannot be caught either."""

    def __init__(self, message: str, error_code: int = 503):
        super().__init__(message)
        self.message = message
        self.error_code = error_code  # the IC0xxx number this trap reports


class CallRejected(Exception):
    """An inter-canister call was rejected (by the system or by the callee)."""

    def __init__(self, reject_code: int, message: str, error_code: str | None = None):
        super().__init__(f"call rejected (reject code {reject_code}"
                         f"{', ' + error_code if error_code else ''}): {message}")
        self.reject_code = reject_code
        self.message = message
        self.error_code = error_code


@dataclass
class PendingCall:
    """What `IC.call` returns: the request is enqueued at once (as `ic0.call_perform` does) and
    awaiting it ends the current execution until the response arrives."""

    call_id: int
    outcome: Any = None  # set by the runtime: ("reply", value) or ("reject", CallRejected)

    def __await__(self) -> Generator[PendingCall, Any, Any]:
        if self.outcome is None:
            yield self  # hands control back to the runtime; it resumes us with the outcome set
        kind, value = self.outcome
        if kind == "reject":
            raise value
        return value


class IC:
    """What canister code sees as `self.ic`; the replica supplies the implementation."""

    def caller(self) -> Principal:
        raise NotImplementedError

    def id(self) -> Principal:
        raise NotImplementedError

    def time(self) -> int:
        """Nanoseconds since the Unix epoch, constant within one execution (the round's time)."""
        raise NotImplementedError

    def controllers(self) -> list[Principal]:
        raise NotImplementedError

    def is_controller(self, principal: Principal) -> bool:
        return principal in self.controllers()

    def call(self, canister: Principal, method: str, *args: Any, cycles: int = 0,
             cleanup: Callable[[], None] | None = None) -> PendingCall:
        """Calls `method` of `canister` with `args` encoded by the callee's .did types;
        `await` the result for the decoded reply or a `CallRejected`.

        `cleanup`, if given, runs when the code that resumes after this call's response traps
        (the IC's cleanup callback): it sees the state as of before that trap and its changes are
        kept, so it can release locks or undo bookkeeping the failed continuation left behind.
        An unknown canister or method is rejected by the system as a response, like any reject."""
        raise NotImplementedError

    @property
    def meter(self) -> Work:
        raise NotImplementedError

    def performance_counter(self, counter_type: int) -> int:
        """Instructions executed so far (ic0.performance_counter): type 0 counts this execution,
        type 1 the whole call context, across its awaits."""
        raise NotImplementedError

    def stable_size(self) -> int:
        """Stable memory size in 64 KiB pages."""
        raise NotImplementedError

    def stable_grow(self, pages: int) -> int:
        """Grows stable memory; returns the previous size in pages, or -1 if it cannot grow."""
        raise NotImplementedError

    def stable_read(self, offset: int, size: int) -> bytes:
        raise NotImplementedError

    def stable_write(self, offset: int, data: bytes) -> None:
        raise NotImplementedError

    def trap(self, message: str) -> NoReturn:
        raise Trap(message)

    def debug_print(self, message: str) -> None:
        """A line for the canister's log (ic0.debug_print); kept even if the execution traps,
        and not kept for a non-replicated query."""
        raise NotImplementedError

    def reject(self, message: str) -> None:
        """Answers the current call with a reject (ic0.msg_reject: reject code 4, CANISTER_REJECT)
        instead of a reply. Unlike `trap`, the execution goes on and its state changes are kept;
        the method must then return None."""
        raise NotImplementedError

    def cycles_balance(self) -> int:
        raise NotImplementedError

    def msg_cycles_available(self) -> int:
        raise NotImplementedError

    def msg_cycles_accept(self, max_amount: int) -> int:
        raise NotImplementedError

    def heap_bytes(self) -> int:
        """Heap bytes in use as of the start of this execution."""
        raise NotImplementedError

    def heap_limit_bytes(self) -> int:
        raise NotImplementedError

    def heap_available_bytes(self) -> int:
        """How much more this canister may allocate before it traps out of memory."""
        return self.heap_limit_bytes() - self.heap_bytes()


class Canister:
    """Base class of every canister. Subclasses set `DID` and define `@update`/`@query` methods."""

    DID: ClassVar[str]  # path of the .did file, relative to the subclass's module file

    def __init__(self, ic: IC):
        self.ic = ic

    def init(self, *args: Any) -> None:
        """Runs on install and reinstall with the init arguments of the .did's service type."""

    def pre_upgrade(self) -> None:
        """Runs on the old code before an upgrade: save what must survive into stable memory."""

    def post_upgrade(self, *args: Any) -> None:
        """Runs on the new code after an upgrade, and when a restarted network rebuilds the heap."""
