"""Messages between users, canisters and the subnet, and the state of a call in progress."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cdk.principal import Principal
from replica.cost_model import CostReport
from replica.errors import Reject


@dataclass(frozen=True)
class IngressOrigin:
    request_id: bytes


@dataclass(frozen=True)
class CanisterOrigin:
    caller: Principal
    call_context_id: int
    call_id: int


@dataclass
class Request:
    sender: Principal
    receiver: Principal
    method: str
    arg: bytes
    origin: IngressOrigin | CanisterOrigin
    trace: CostReport  # the report of the ingress message whose call tree this belongs to
    cycles: int = 0
    available_round: int = 0


@dataclass
class Response:
    receiver: Principal  # the canister that made the call
    call_context_id: int
    call_id: int
    reply: bytes | None
    reject: Reject | None
    trace: CostReport
    refund: int = 0
    available_round: int = 0


@dataclass
class OutgoingCall:
    """A call made by canister code, with everything needed to decode its response."""

    call_id: int
    callee: Principal
    method: str
    arg: bytes
    reply_types: Any
    cycles: int
    pending: Any  # the cdk PendingCall that the canister code awaits
    reserved: int = 0  # cycles set aside for executing the response, returned when it arrives
    cleanup: Any = None  # canister code to run if the code resuming after this call traps
    system_reject: Reject | None = None  # the system rejects the call (unknown canister or method)


@dataclass
class CallContext:
    """An incoming call being processed: the coroutine of an async method and what it awaits."""

    id: int
    origin: IngressOrigin | CanisterOrigin
    caller: Principal
    method: str
    is_query: bool
    reply_types: Any
    trace: CostReport
    coroutine: Any = None
    awaiting: Any = None  # the cdk PendingCall the coroutine is suspended on
    outstanding: dict[int, OutgoingCall] = field(default_factory=dict)
    cycles_available: int = 0
    started_round: int = 0
    instructions: int = 0  # executed by its finished executions, for performance_counter(1)
    responded: bool = False  # answered (replied or rejected); later executions may not answer
    failure: Reject | None = None  # a callback trapped while other calls were still outstanding
