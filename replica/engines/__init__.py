"""How a canister's code runs: one interface for every kind of canister code.

An engine executes one message (an `Execution`) against a canister's code and state and
returns what happened (an `Outcome`). Both are plain data: bytes, integers and strings, so an
execution could run in another process or on another host. The subnet decides what the outcome
means for the call context, cycles and routing; the engine knows nothing of rounds or queues.

Two engines exist: `replica.engines.wasm` runs IC wasm modules in wasmtime, metered as the IC
meters them, and `replica.engines.python` runs Python-class canisters, the quick way to write a
test canister. Every execution of either kind goes through this interface: install hooks,
updates, queries and callbacks; the subnet's flow for them (replica.message_execution) is one
for both engines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from replica.errors import Reject
from replica.fees import FeeSchedule


class Kind(str, Enum):
    """What an execution runs; the names follow the interface spec's entry points."""

    START = "start"  # the module's (start) function, run when an instance is created
    INIT = "init"
    PRE_UPGRADE = "pre_upgrade"
    POST_UPGRADE = "post_upgrade"
    UPDATE = "update"
    QUERY = "query"
    COMPOSITE_QUERY = "composite_query"
    REPLY = "reply"  # the reply callback of a call this canister made
    REJECT = "reject"  # its reject callback
    CLEANUP = "cleanup"  # its cleanup callback, after a reply or reject callback trapped
    HEARTBEAT = "heartbeat"
    GLOBAL_TIMER = "global_timer"
    INSPECT_MESSAGE = "inspect_message"


@dataclass(frozen=True)
class Callback:
    """A callback as the canister registered it: a table index and an environment value."""

    fun: int
    env: int


@dataclass(frozen=True)
class Callbacks:
    reply: Callback
    reject: Callback
    cleanup: Callback | None = None


@dataclass(frozen=True)
class CanisterView:
    """What canister code may read of its canister's system state during one execution."""

    canister_id: bytes
    controllers: tuple[bytes, ...]
    cycle_balance: int
    status: str = "running"  # running, stopping or stopped
    version: int = 0
    wasm_memory_limit: int = 0  # bytes of heap; 0 means only the architecture's maximum
    global_timer_ns: int = 0  # the timer as set before this execution; 0 is inactive
    fees: FeeSchedule | None = None  # the subnet's fees, for ic0.cost_*; None: not known
    subnet_size: int = 13  # nodes of the subnet (fees scale with it)


@dataclass(frozen=True)
class Execution:
    kind: Kind
    instruction_limit: int
    time_ns: int
    method: str = ""
    arg: bytes = b""  # the method's argument, or the reply data in a reply callback
    caller: bytes = b""
    cycles_available: int = 0  # cycles attached to the call and not accepted yet
    cycles_refunded: int = 0  # in a reply or reject callback: the cycles the callee did not take
    reject_code: int = 0  # in a reject callback (and its cleanup)
    reject_message: str = ""
    reject_error_code: str | None = None  # the IC0xxx code of that reject (Python canisters see it)
    callback: Callbacks | None = None  # for REPLY, REJECT and CLEANUP: the call's callbacks
    replied: bool = False  # the call context was already answered (a callback cannot reply again)
    deadline_ns: int = 0  # ic0.msg_deadline: 0 for a guaranteed-response call
    replicated: bool = True  # a query run by one node is not replicated
    context_instructions: int = 0  # what earlier executions of the call context used
    certificate: bytes | None = None  # data certificate, for non-replicated queries
    reply_limit: int = 2 * 1024 * 1024  # bytes a reply may have (3 MiB for a query)


@dataclass(frozen=True)
class OutgoingCall:
    callee: bytes
    method: str
    arg: bytes
    cycles: int
    callbacks: Callbacks


@dataclass
class Outcome:
    instructions: int
    trap: Reject | None = None  # the execution trapped: its state changes were rolled back
    reply: bytes | None = None  # the call context was answered with this reply ...
    reject: Reject | None = None  # ... or with this reject made by the canister (msg_reject)
    calls: list[OutgoingCall] = field(default_factory=list)
    cycles_accepted: int = 0
    cycles_burned: int = 0  # by ic0.cycles_burn128
    certified_data: bytes | None = None  # set by certified_data_set
    global_timer_ns: int | None = None  # set by global_timer_set (0 deactivates the timer)
    message_accepted: bool = False  # inspect_message called accept_message
    logs: list[bytes] = field(default_factory=list)  # debug_print and trap messages
    heap_bytes: int = 0  # the wasm memory's size after the execution
