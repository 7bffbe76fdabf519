"""Messages to wasm canisters: the subnet's side of an execution by the wasm engine.

Turns a request or a response into an `Execution`, and the engine's `Outcome` into what the
subnet keeps: the call context (replied, rejected, waiting for its calls, or failed), cycles
(execution fee, accepted cycles, cycles sent with calls and reserved for their responses) and
the outgoing requests. Arguments and replies are Candid bytes the canister reads and writes
itself; nothing is decoded here. The call-context rules are the subnet's own (a trap answers only
once no call is outstanding; a trapping callback runs the call's cleanup callback).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cdk.principal import Principal
from replica.api_types import IngressMessage, IngressRejected, QueryResult
from replica.cost_model import CostReport
from replica.engines import Callbacks, Execution, Kind, Outcome
from replica.errors import ErrorCode, Reject, RejectError
from replica.messages import CallContext, CanisterOrigin, OutgoingCall, Request, Response
from replica.wasm_install import canister_view

MANAGEMENT = Principal.management()

if TYPE_CHECKING:
    from replica.canister_state import CanisterState
    from replica.subnet import Subnet


@dataclass(frozen=True)
class SystemTaskOrigin:
    """The origin of a heartbeat or global-timer execution: no one waits for an answer."""


_SYSTEM_TASKS = {"canister_heartbeat": Kind.HEARTBEAT, "canister_global_timer": Kind.GLOBAL_TIMER}


def enqueue_system_tasks(subnet: Subnet) -> None:
    """At the start of a round, as the IC's scheduler does: a heartbeat for every running wasm
    canister that exports one, and the global timer of every canister whose timer is due (the
    timer is deactivated when it fires). A task waits behind an execution still running (DTS)."""
    now = subnet.time_ns()
    for state in subnet.canisters.values():
        if state.module is None or state.status != "running" or state.instance is None:
            continue
        exports = state.instance.compiled.exports
        due = []
        if "canister_heartbeat" in exports:
            due.append("canister_heartbeat")
        if state.global_timer_ns and now >= state.global_timer_ns and "canister_global_timer" in exports:
            state.global_timer_ns = 0
            due.append("canister_global_timer")
        queued = {m.method for m in state.queue if isinstance(m, Request) and isinstance(m.origin, SystemTaskOrigin)}
        for method in due:
            if method not in queued:
                state.queue.appendleft(Request(MANAGEMENT, state.id, method, b"", SystemTaskOrigin(), CostReport(),
                                               available_round=subnet.round))


def _method_kind(state: CanisterState, method: str) -> Kind:
    exports = state.instance.compiled.exports
    if f"canister_update {method}" in exports:
        return Kind.UPDATE
    if f"canister_query {method}" in exports:
        return Kind.QUERY
    raise RejectError(ErrorCode.CANISTER_METHOD_NOT_FOUND,
                      f"Canister {state.id.to_text()} has no update method '{method}'")


def execute_request(subnet: Subnet, state: CanisterState, request: Request) -> tuple[int, list[Any]]:
    if isinstance(request.origin, SystemTaskOrigin):
        return _system_task(subnet, state, request)
    try:
        if state.status != "running":
            code = ErrorCode.CANISTER_STOPPED if state.status == "stopped" else ErrorCode.CANISTER_STOPPING
            raise RejectError(code, f"Canister {state.id.to_text()} is {state.status}; a controller can "
                              "start it again with start_canister")
        kind = _method_kind(state, request.method)
        subnet.require_cycles(state, subnet.fees.execution_cycles(subnet.limits.instructions_per_update,
                                                                  subnet.subnet_size))
    except RejectError as e:
        return 0, [subnet._reply_output(request.origin, request.receiver, None, e.reject, request.trace,
                                        request.cycles)]
    context = CallContext(state.new_id(), request.origin, request.sender, request.method, kind is Kind.QUERY,
                          None, request.trace, cycles_available=request.cycles)
    outcome = _execute(subnet, state, context, Execution(
        kind, subnet.limits.instructions_per_update, subnet.time_ns(), method=request.method, arg=request.arg,
        caller=request.sender.bytes, cycles_available=request.cycles, reply_limit=subnet.limits.reply_bytes))
    return outcome.instructions, _outputs(subnet, state, context, outcome)


def _system_task(subnet: Subnet, state: CanisterState, task: Request) -> tuple[int, list[Any]]:
    """A heartbeat or timer: it may call other canisters; its context answers no one (responded)."""
    context = CallContext(state.new_id(), task.origin, task.sender, task.method, False, None, task.trace,
                          responded=True)
    outcome = _execute(subnet, state, context, Execution(
        _SYSTEM_TASKS[task.method], subnet.limits.instructions_per_update, subnet.time_ns(),
        caller=task.sender.bytes))
    return outcome.instructions, _outputs(subnet, state, context, outcome)


def execute_response(subnet: Subnet, state: CanisterState, context: CallContext, call: OutgoingCall,
                     response: Response) -> tuple[int, list[Any]]:
    """Runs the reply or reject callback of `call` (and its cleanup callback if that traps)."""
    callbacks: Callbacks = call.pending
    reject = response.reject
    fee = subnet.fees.response_byte_cycles(len(response.reply or b""), subnet.subnet_size)
    state.cycles -= fee
    response.trace.cycles += fee
    message = Execution(
        Kind.REJECT if reject is not None else Kind.REPLY, subnet.limits.instructions_per_update,
        subnet.time_ns(), arg=response.reply or b"", caller=context.caller.bytes,
        cycles_available=context.cycles_available, cycles_refunded=response.refund,
        reject_code=int(reject.reject_code) if reject is not None else 0,
        reject_message=reject.message if reject is not None else "", callback=callbacks,
        replied=context.responded, reply_limit=subnet.limits.reply_bytes)
    outcome = _execute(subnet, state, context, message)
    instructions = outcome.instructions
    if outcome.trap is not None and callbacks.cleanup is not None:
        cleanup = _execute(subnet, state, context, Execution(
            Kind.CLEANUP, subnet.limits.instructions_per_update, subnet.time_ns(), caller=context.caller.bytes,
            reject_code=message.reject_code, callback=callbacks, replied=context.responded))
        instructions += cleanup.instructions
    return instructions, _outputs(subnet, state, context, outcome)


def _execute(subnet: Subnet, state: CanisterState, context: CallContext, message: Execution) -> Outcome:
    """Runs `message` and settles its cycles: the execution fee, cycles accepted from the call,
    and the cycles its outgoing calls take with them."""
    message = replace(message, context_instructions=context.instructions)
    outcome = state.instance.execute(message, canister_view(subnet, state))
    cycles = subnet.fees.execution_cycles(outcome.instructions, subnet.subnet_size)
    state.cycles -= cycles
    context.trace.cycles += cycles
    context.instructions += outcome.instructions
    state.heap_bytes = outcome.heap_bytes
    if outcome.trap is None:
        context.cycles_available -= outcome.cycles_accepted
        state.cycles += outcome.cycles_accepted - outcome.cycles_burned
        if outcome.global_timer_ns is not None:
            state.global_timer_ns = outcome.global_timer_ns
    return outcome


def _outputs(subnet: Subnet, state: CanisterState, context: CallContext, outcome: Outcome) -> list[Any]:
    outputs: list[Any] = []
    for call in outcome.calls:
        outputs.append(_send(subnet, state, context, call))
    if outcome.trap is not None:
        return outputs + subnet.fail_context(state, context, outcome.trap)
    if outcome.reply is not None or outcome.reject is not None:
        outputs.append(subnet._answer(state.id, context, outcome.reply, outcome.reject))
    if context.outstanding:
        state.call_contexts[context.id] = context
        return outputs
    state.call_contexts.pop(context.id, None)
    if not context.responded:
        outputs.append(subnet._answer(state.id, context, None, Reject.of(
            ErrorCode.CANISTER_DID_NOT_REPLY,
            f"Canister {state.id.to_text()} did not produce a response to the call to {context.method}")))
    return outputs


def _send(subnet: Subnet, state: CanisterState, context: CallContext, call: Any) -> Request | Response:
    """An outgoing call as a request (or the system's reject of it, when the canister cannot pay
    for it); its fee is charged and its response's cost set aside now."""
    call_id = state.new_id()
    fee = subnet.fees.call_cycles(len(call.arg), subnet.subnet_size)
    reserve = subnet.call_reservation_cycles()
    context.trace.messages += 1
    context.trace.bytes += len(call.arg)
    context.trace.cycles += fee
    sent = OutgoingCall(call_id, Principal(call.callee), call.method, call.arg, None, call.cycles, call.callbacks)
    context.outstanding[call_id] = sent
    state.cycles -= call.cycles
    try:
        subnet.require_cycles(state, fee + reserve)
    except RejectError as e:
        return Response(state.id, context.id, call_id, None, e.reject, context.trace, call.cycles)
    state.cycles -= fee + reserve
    state.reserved_for_responses[call_id] = reserve
    return Request(state.id, sent.callee, call.method, call.arg, CanisterOrigin(state.id, context.id, call_id),
                   context.trace, cycles=call.cycles)


# The instructions canister_inspect_message may use (dfinity/ic a0c8c9a1,
# rs/config/src/execution_environment.rs: MAX_INSTRUCTIONS_FOR_MESSAGE_ACCEPTANCE_CALLS).
INSPECT_MESSAGE_INSTRUCTIONS = 200_000_000


def accept_ingress(subnet: Subnet, state: CanisterState, msg: IngressMessage) -> None:
    """What the IC checks before it accepts an ingress message to a wasm canister: that the
    method exists, and that the canister's `canister_inspect_message`, if it exports one, calls
    `ic0.accept_message`. It runs on one node (non-replicated), changes nothing and costs nothing.
    Raises IngressRejected otherwise."""
    try:
        _method_kind(state, msg.method)
    except RejectError as e:
        raise IngressRejected(400, e.reject.error_code or "", e.reject.message, int(e.reject.reject_code)) from None
    if "canister_inspect_message" not in state.instance.compiled.exports:
        return
    outcome = state.instance.execute(Execution(
        Kind.INSPECT_MESSAGE, INSPECT_MESSAGE_INSTRUCTIONS, subnet.time_ns(), method=msg.method, arg=msg.arg,
        caller=msg.sender.bytes, replicated=False), canister_view(subnet, state))
    if outcome.trap is not None:
        raise IngressRejected(400, outcome.trap.error_code or "", outcome.trap.message,
                              int(outcome.trap.reject_code))
    if not outcome.message_accepted:
        raise IngressRejected(400, ErrorCode.CANISTER_REJECTED_MESSAGE.text,
                              f"Canister {state.id.to_text()} rejected the message: its canister_inspect_message "
                              f"did not accept the call to {msg.method}", 4)


def query(subnet: Subnet, state: CanisterState, sender: Principal, method: str, arg: bytes) -> QueryResult:
    """A non-replicated query: it runs on the canister's current state and changes nothing."""
    if f"canister_query {method}" not in state.instance.compiled.exports:
        reject = Reject.of(ErrorCode.CANISTER_METHOD_NOT_FOUND,
                           f"Canister {state.id.to_text()} has no query method '{method}'")
        return QueryResult(None, int(reject.reject_code), reject.message, reject.error_code)
    message = Execution(Kind.QUERY, subnet.limits.instructions_per_query, subnet.time_ns(), method=method,
                        arg=arg, caller=sender.bytes, replicated=False, reply_limit=subnet.limits.query_reply_bytes)
    if state.free_round > subnet.round:  # its last execution still runs (DTS): the query sees the state before it
        outcome = state.instance.execute_before_last_commit(message, canister_view(subnet, state))
    else:
        outcome = state.instance.execute(message, canister_view(subnet, state))
    answer = outcome.trap or outcome.reject
    if answer is not None:
        return QueryResult(None, int(answer.reject_code), answer.message, answer.error_code)
    if outcome.reply is None:
        reject = Reject.of(ErrorCode.CANISTER_DID_NOT_REPLY,
                           f"Canister {state.id.to_text()} did not produce a response to the query {method}")
        return QueryResult(None, int(reject.reject_code), reject.message, reject.error_code)
    return QueryResult(outcome.reply, None, None, None)
