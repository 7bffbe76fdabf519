"""Messages between users, canisters and the subnet, and the state of a call in progress."""

from __future__ import annotations

from dataclasses import dataclass, field

from cdk.principal import Principal
from replica.cost_model import CostReport
from replica.engines import Callbacks
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
    """A call made by canister code and not answered yet."""

    call_id: int
    callee: Principal
    method: str
    arg: bytes
    cycles: int
    callbacks: Callbacks  # what the caller's engine runs with the response


@dataclass
class CallContext:
    """An incoming call being processed, and the calls its executions made."""

    id: int
    origin: IngressOrigin | CanisterOrigin
    caller: Principal
    method: str
    is_query: bool
    trace: CostReport
    outstanding: dict[int, OutgoingCall] = field(default_factory=dict)
    cycles_available: int = 0
    started_round: int = 0
    instructions: int = 0  # executed by its finished executions, for performance_counter(1)
    responded: bool = False  # answered (replied or rejected); later executions may not answer
    failure: Reject | None = None  # a callback trapped while other calls were still outstanding
