"""Runs a Python canister's code for one execution and turns what happened into instructions,
state changes (committed or rolled back), the calls it made and its debug prints.

An execution is one message's worth of canister code: a method up to its first `await`, a
continuation after a response, a cleanup, an install hook, or a query. Its state changes are
committed when it ends normally and rolled back when it traps, so an `await` is a commit point.
Cycles, call contexts and routing are the subnet's: the Python engine
(replica.engines.python.engine) hands what happened back as an `Outcome`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from cdk.candid import CandidError, HeaderCache, decode, encode
from cdk.canister import IC, CallRejected, PendingCall, Trap
from cdk.meter import Work
from cdk.principal import Principal
from replica import heap
from replica.canister_state import CanisterState
from replica.cost_model import Kernel, message_overhead_instructions, work_instructions
from replica.engines import Callback, Callbacks, OutgoingCall
from replica.errors import ErrorCode, Reject, RejectError
from replica.fees import FeeSchedule
from replica.host_budget import HostBudget, HostBudgetExceeded
from replica.limits import Limits
from replica.stable_memory import StableMemoryError


class Environment(Protocol):
    """What an execution needs from its subnet."""

    limits: Limits
    fees: FeeSchedule
    subnet_size: int
    kernel: Kernel

    candid_cache: HeaderCache  # the headers of the messages its canisters exchange

    def time_ns(self) -> int: ...

    def freezing_threshold_cycles(self, state: CanisterState) -> int: ...

    def call_reservation_cycles(self) -> int:
        """Cycles a call sets aside for its response's execution and largest reply."""

    def method_types(self, canister: Principal, method: str) -> tuple[Any, Any]:
        """(argument types, reply types) of `method` of `canister`; raises RejectError."""


@dataclass
class Conversation:
    """One call context's async method: its coroutine, and the call it is suspended on."""

    reply_types: Any  # the method's, to encode its reply
    coroutine: Any = None
    awaiting: PendingCall | None = None


@dataclass
class AwaitedCall:
    """What a response to a call made by Python code needs: where to put it and how to decode it."""

    pending: PendingCall
    reply_types: Any
    conversation: Conversation
    cleanup: Callable[[], None] | None


@dataclass
class ExecutionResult:
    instructions: int
    cycles: int
    trap: Reject | None = None
    calls: list[OutgoingCall] = field(default_factory=list)
    reject: Reject | None = None  # the canister answered its call with ic.reject
    value: Any = None  # the Python value returned by the step
    cycles_accepted: int = 0
    logs: list[bytes] = field(default_factory=list)  # debug prints (none for a query)


@dataclass
class PreExecutionState:
    """The heap and stable memory as they were before a committed execution: queries read this
    while the execution is still running over several rounds (DTS)."""

    heap: heap.HeapSnapshot | None
    stable_undo: list[tuple[str, int, bytes]]


class CanisterContext(IC):
    """`self.ic` of one canister; `begin` prepares it for each execution."""

    def __init__(self, canister: CanisterState, env: Environment):
        self._canister = canister
        self._env = env
        self._work = Work()
        self._caller: Principal = Principal.anonymous()
        self._conversation: Conversation | None = None  # set while an update or callback may call
        self._cycles_available = 0
        self._context_instructions = 0
        self._replied = False
        self._calls: list[OutgoingCall] = []
        self._debit = 0
        self._stable_access = 0
        self._stable_limit = env.limits.stable_access_bytes_per_message
        self._mode = "update"
        self._time_ns = 0
        self._accepted = 0
        self._rejected: str | None = None
        self.logs: list[bytes] = []  # this execution's debug_print messages
        self._heap: heap.HeapSnapshot | None = None  # the heap as the last execution left it ...
        self._heap_of: object = None  # ... for this instance
        # Set by the first execution of a message whose changes were kept (see Subnet).
        self.first_committed: PreExecutionState | None = None
        # The calls this canister's code awaits a response to, by the callback the subnet returns.
        self.awaited: dict[int, AwaitedCall] = {}

    def heap_before(self, instance: object) -> heap.HeapSnapshot:
        """The heap's snapshot for the next execution. Only executions change the heap, so the
        walk after one (which measures it) is the snapshot of the next: one walk per execution."""
        if self._heap is None or self._heap_of is not instance:
            self._heap, self._heap_of = heap.snapshot(instance), instance
        return self._heap

    def keep_heap(self, instance: object, snapshot: heap.HeapSnapshot) -> None:
        self._heap, self._heap_of = snapshot, instance

    def begin(self, caller: Principal, mode: str, stable_limit: int, conversation: Conversation | None = None,
              cycles_available: int = 0, context_instructions: int = 0, replied: bool = False) -> None:
        self._work = Work()
        self._caller = caller
        self._conversation = conversation
        self._cycles_available = cycles_available
        self._context_instructions = context_instructions
        self._replied = replied
        self._calls = []
        self._debit = 0
        self._stable_access = 0
        self._stable_limit = stable_limit
        self._mode = mode
        self._time_ns = self._env.time_ns()
        self._accepted = 0
        self._rejected = None
        self.logs = []

    # --- the IC API canister code sees -------------------------------------------------------
    def caller(self) -> Principal:
        return self._caller

    def id(self) -> Principal:
        return self._canister.id

    def time(self) -> int:
        return self._time_ns

    def controllers(self) -> list[Principal]:
        return list(self._canister.settings.controllers)

    @property
    def meter(self) -> Work:
        return self._work

    def performance_counter(self, counter_type: int) -> int:
        instructions = work_instructions(self._work, self._env.kernel)
        if counter_type == 0:
            return instructions
        if counter_type == 1:
            return instructions + self._context_instructions
        raise Trap(f"performance_counter({counter_type}): the counter types are 0 (this execution) and 1 "
                   "(the call context)")

    def call(self, canister: Principal, method: str, *args: Any, cycles: int = 0,
             cleanup: Callable[[], None] | None = None) -> PendingCall:
        if self._mode != "update" or self._conversation is None:
            raise Trap(f"{self._mode} code cannot make inter-canister calls (only update methods "
                       "can; composite queries are not simulated)", ErrorCode.CANISTER_CONTRACT_VIOLATION)
        call_id = self._canister.new_id()
        pending = PendingCall(call_id)
        arg, reply_types = b"", None
        known = True
        try:
            arg_types, reply_types = self._env.method_types(canister, method)
        except RejectError as e:
            if e.reject.error_code not in _SYSTEM_REJECTED:  # e.g. no candid:service: nothing to type the call with
                pending.outcome = ("reject", _call_rejected(e.reject))
                return pending
            # An unknown canister or method is rejected by the system as a response, as on the
            # IC: the caller's state up to its await is committed before the reject arrives.
            known = False
        if known:
            try:
                arg = encode(arg_types, list(args), self._env.candid_cache)
            except CandidError as e:
                raise Trap(f"the arguments of the call to {canister.to_text()}.{method} do not match its "
                           f".did types: {e}") from None
        limit = self._env.limits.same_subnet_request_bytes
        if len(arg) > limit:
            pending.outcome = ("reject", _call_rejected(Reject.of(
                ErrorCode.CANISTER_CONTRACT_VIOLATION,
                f"the request to {canister.to_text()}.{method} is {len(arg)} bytes, over the limit of "
                f"{limit} bytes for a call within a subnet ({self._env.limits.xnet_message_bytes} "
                "across subnets); send the data in smaller chunks")))
            return pending
        fee = self._env.fees.call_cycles(len(arg), self._env.subnet_size)
        # The spec's affordability rule: the call fee, the attached cycles and a reservation for
        # executing the response (returned when it arrives) must all fit above the freezing threshold.
        reserved = self._env.call_reservation_cycles()
        threshold = self._env.freezing_threshold_cycles(self._canister)
        if cycles < 0 or fee + cycles + reserved > self.cycles_balance() - threshold:
            pending.outcome = ("reject", _call_rejected(Reject.of(
                ErrorCode.CANISTER_OUT_OF_CYCLES,
                f"Canister {self._canister.id.to_text()} cannot afford the call to {canister.to_text()}.{method}: "
                f"it needs {fee} cycles for the call, {cycles} attached and {reserved} reserved for the "
                f"response above its freezing threshold of {threshold}, and has {self.cycles_balance()}; "
                "top it up with deposit_cycles")))
            return pending
        self._debit += fee + cycles + reserved
        self._work.copied(len(arg))
        # The subnet answers with these callbacks; their function index is this call's key.
        callback = Callback(call_id, 0)
        self._calls.append(OutgoingCall(canister.bytes, method, arg, cycles,
                                        Callbacks(callback, callback, callback if cleanup is not None else None)))
        self.awaited[call_id] = AwaitedCall(pending, reply_types, self._conversation, cleanup)
        return pending

    def stable_size(self) -> int:
        return self._canister.stable.pages

    def stable_grow(self, pages: int) -> int:
        return self._canister.stable.grow(pages)

    def stable_read(self, offset: int, size: int) -> bytes:
        self._access_stable(size)
        try:
            data = self._canister.stable.read(offset, size)
        except StableMemoryError as e:
            raise Trap(str(e), ErrorCode.CANISTER_TRAPPED) from None
        self._work.copied(size)
        return data

    def stable_write(self, offset: int, data: bytes) -> None:
        self._access_stable(len(data))
        try:
            self._canister.stable.write(offset, data)
        except StableMemoryError as e:
            raise Trap(str(e), ErrorCode.CANISTER_TRAPPED) from None
        self._work.copied(len(data))

    def trap(self, message: str) -> NoReturn:
        raise Trap(message)

    def debug_print(self, message: str) -> None:
        """ic0.debug_print: a line for the canister's log (kept even if the execution traps)."""
        data = message.encode()
        self._work.copied(len(data))
        self.logs.append(data)

    def reject(self, message: str) -> None:
        if self._mode != "update" or self._conversation is None or self._rejected is not None \
                or self._replied:
            raise Trap("ic.reject: only an update call that has not been answered yet can be rejected",
                       ErrorCode.CANISTER_CONTRACT_VIOLATION)
        self._rejected = message

    def cycles_balance(self) -> int:
        return self._canister.cycles - self._debit

    def msg_cycles_available(self) -> int:
        return self._cycles_available - self._accepted

    def msg_cycles_accept(self, max_amount: int) -> int:
        accepted = max(0, min(max_amount, self._cycles_available - self._accepted))
        self._accepted += accepted
        self._debit -= accepted
        return accepted

    def heap_bytes(self) -> int:
        return self._canister.heap_bytes

    def heap_limit_bytes(self) -> int:
        return self._canister.settings.heap_limit(self._env.limits)

    # --- used by the executor ----------------------------------------------------------------
    def _access_stable(self, n_bytes: int) -> None:
        self._stable_access += n_bytes
        if self._stable_access > self._stable_limit:
            raise Trap(f"this message read and wrote {self._stable_access} bytes of stable memory, over "
                       f"the limit of {self._stable_limit} bytes per message; split the work across "
                       "several messages", ErrorCode.CANISTER_MEMORY_ACCESS_LIMIT_EXCEEDED)

    @property
    def work(self) -> Work:
        return self._work

    @property
    def calls(self) -> list[OutgoingCall]:
        return self._calls

    @property
    def accepted(self) -> int:
        return self._accepted

    @property
    def rejected(self) -> str | None:
        return self._rejected


# What the callee's subnet rejects once the call arrives, rather than the caller's own CDK.
_SYSTEM_REJECTED = {code.text for code in (ErrorCode.CANISTER_NOT_FOUND, ErrorCode.CANISTER_METHOD_NOT_FOUND,
                                           ErrorCode.CANISTER_WASM_MODULE_NOT_FOUND)}


def _call_rejected(reject: Reject) -> CallRejected:
    return CallRejected(int(reject.reject_code), reject.message, reject.error_code)


def trap_reject(canister: Principal, trap: Trap) -> Reject:
    code = ErrorCode(trap.error_code)
    if code is ErrorCode.CANISTER_CALLED_TRAP:
        return Reject.of(code, f"Canister {canister.to_text()} trapped explicitly: {trap.message}")
    return Reject.of(code, f"Canister {canister.to_text()} trapped: {trap.message}")


class Executor:
    """Runs executions of one canister against its subnet environment."""

    def __init__(self, env: Environment, host_seconds: float):
        self.env = env
        self.host_budget = HostBudget(host_seconds)

    def run(
        self,
        canister: CanisterState,
        step: Callable[[], Any],
        *,
        caller: Principal,
        mode: str,
        instruction_limit: int,
        payload_bytes: int,
        discard_state: bool = False,
        stable_limit: int | None = None,
        charge: bool = True,
        conversation: Conversation | None = None,
        cycles_available: int = 0,
        context_instructions: int = 0,
        replied: bool = False,
    ) -> ExecutionResult:
        """Runs `step` (which calls into canister code) as one execution.

        The state changes are rolled back if it traps, and also when `discard_state` (queries,
        and query methods called as updates). Cycles for the instructions are charged either way
        if `charge` (install hooks); the subnet settles the cycles of updates and callbacks.
        Code may call other canisters only with a `conversation` (an update or a callback)."""
        ctx = _context_of(canister)
        ctx.begin(caller, mode, stable_limit or self.env.limits.stable_access_bytes_per_message, conversation,
                  cycles_available, context_instructions, replied)
        snap = ctx.heap_before(canister.instance) if canister.instance is not None else None
        canister.stable.begin()
        trap: Reject | None = None
        value: Any = None
        try:
            with self.host_budget.running():
                if discard_state and snap is not None:
                    with heap.ReadOnlyArrays(snap.writable_arrays):
                        value = step()
                else:
                    value = step()
        except HostBudgetExceeded:
            trap = Reject.of(
                ErrorCode.CANISTER_INSTRUCTION_LIMIT_EXCEEDED,
                f"Canister {canister.id.to_text()} ran for more than {self.host_budget.seconds:g} s of host "
                "time in one message, the host's budget for Python canister code; the network interrupted "
                "it so it could go on. Look for a loop that does not end, or split the work into messages")
        except Trap as t:
            trap = trap_reject(canister.id, t)
        except RejectError as e:
            trap = e.reject
        except Exception as e:  # noqa: BLE001 - any exception in canister code is a trap, as a panic is
            trap = trap_reject(canister.id, Trap(f"{type(e).__name__}: {e}"))
        instructions = (work_instructions(ctx.work, self.env.kernel) + message_overhead_instructions(payload_bytes)
                        + canister.stable.dirty_pages() * self.env.limits.stable_dirty_page_instructions)
        heap_after = canister.heap_bytes
        after: heap.HeapSnapshot | None = None
        if trap is None and instructions > instruction_limit:
            trap = Reject.of(
                ErrorCode.CANISTER_INSTRUCTION_LIMIT_EXCEEDED,
                f"Canister {canister.id.to_text()} exceeded the instruction limit for single message "
                f"execution: it needed {instructions} instructions, the limit is {instruction_limit}; "
                "split the work into several messages")
        if trap is None and canister.instance is not None and not discard_state:
            after = heap.snapshot(canister.instance)
            heap_after = after.heap_bytes
            limit = canister.settings.heap_limit(self.env.limits)
            if heap_after > limit:
                trap = Reject.of(
                    ErrorCode.CANISTER_WASM_MEMORY_LIMIT_EXCEEDED,
                    f"Canister {canister.id.to_text()} exceeded its Wasm memory limit of {limit} bytes "
                    f"(it would use {heap_after}); free state, or raise wasm_memory_limit with "
                    "update_settings (at most 4 GiB for wasm32, 6 GiB for wasm64)")
        logs = [] if mode == "query" else ctx.logs  # a non-replicated query's prints are not kept (spec)
        rejected: Reject | None = None
        if trap is not None or discard_state:
            if snap is not None:
                heap.restore(snap)
            canister.stable.rollback()
            for call in ctx.calls:  # the calls are rolled back with the rest
                ctx.awaited.pop(call.callbacks.reply.fun, None)
            calls: list[OutgoingCall] = []
            accepted = 0
        else:
            before = PreExecutionState(snap, canister.stable.commit())
            if ctx.first_committed is None:
                ctx.first_committed = before
            if after is not None:
                ctx.keep_heap(canister.instance, after)
            canister.heap_bytes = heap_after
            calls = ctx.calls
            accepted = ctx.accepted
            if ctx.rejected is not None:
                rejected = Reject.of(ErrorCode.CANISTER_REJECTED_MESSAGE, ctx.rejected)
        cycles = self.env.fees.execution_cycles(instructions, self.env.subnet_size) if charge else 0
        canister.cycles -= cycles
        return ExecutionResult(instructions, cycles, trap, calls, reject=rejected, value=value,
                               cycles_accepted=accepted, logs=logs)


def _context_of(canister: CanisterState) -> CanisterContext:
    ctx = canister.ic
    if not isinstance(ctx, CanisterContext):
        raise RuntimeError(f"canister {canister.id.to_text()} has no runtime context")
    return ctx


def start_method(instance: Any, conversation: Conversation, method: str, args: list[Any]) -> tuple[str, Any]:
    """Calls `method`; drives it to its first await if it is async. Returns ("reply", value) or
    ("await", pending)."""
    result = getattr(instance, method)(*args)
    if inspect.iscoroutine(result):
        conversation.coroutine = result
        return resume(conversation)
    return "reply", result


def resume(conversation: Conversation) -> tuple[str, Any]:
    try:
        awaited = conversation.coroutine.send(None)
    except StopIteration as stop:
        conversation.coroutine = None
        conversation.awaiting = None
        return "reply", stop.value
    if not isinstance(awaited, PendingCall):
        raise Trap(f"canister code awaited {type(awaited).__name__}; only self.ic.call(...) can be awaited")
    conversation.awaiting = awaited
    return "await", awaited


def encode_reply(types: Any, value: Any, limit: int, cache: HeaderCache) -> bytes:
    values = [] if len(types) == 0 else [value] if len(types) == 1 else list(value)
    try:
        data = encode(types, values, cache)
    except CandidError as e:
        raise Trap(f"the method's return value does not match its .did reply types: {e}") from None
    if len(data) > limit:
        raise Trap(f"ic0.msg_reply_data_append: application payload size ({len(data)}) cannot be larger "
                   f"than {limit}; return the data in smaller pieces", ErrorCode.CANISTER_CONTRACT_VIOLATION)
    return data


def decode_args(types: Any, data: bytes, what: str, cache: HeaderCache) -> list[Any]:
    try:
        return list(decode(types, data, cache=cache))
    except CandidError as e:
        raise Trap(f"failed to decode the arguments of {what}: {e}") from None


def reject_to_error(reject: Reject) -> CallRejected:
    return _call_rejected(reject)

