"""Messages to canisters: the subnet's side of an execution, the same for both engines.

Turns a request or a response into an `Execution` for the canister's engine (wasm or Python),
and the engine's `Outcome` into what the subnet keeps: the call context (replied, rejected,
waiting for its calls, or failed), cycles (execution fee, accepted cycles, cycles sent with
calls and reserved for their responses) and the outgoing requests. Arguments and replies are
Candid bytes; nothing is decoded here. The call-context rules are the subnet's own (a trap
answers only once no call is outstanding; a trapping callback runs the call's cleanup callback).
Ingress checks, heartbeats, timers and non-replicated queries here are the wasm engine's (a
Python canister's queries are answered by `Subnet.query`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cdk.principal import Principal
from replica.api_types import IngressMessage, IngressRejected, QueryResult
from replica.cost_model import CostReport
from replica.engines import Execution, Kind, Outcome
from replica.engines.python.engine import PythonInstance
from replica.errors import ErrorCode, Reject, RejectCode, RejectError
from replica.messages import CallContext, CanisterOrigin, OutgoingCall, Request, Response
from replica.wasm_install import canister_view, keep_logs

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


def engine_instance(subnet: Subnet, state: CanisterState) -> Any:
    """The engine instance that runs `state`'s code: its wasm instance or its Python class."""
    if state.module is not None and state.instance is not None:
        return state.instance
    if state.loaded is not None and state.instance is not None:
        return PythonInstance(state, subnet.executor, subnet.candid_cache)
    why = f" ({state.restore_error})" if state.restore_error else ""
    raise RejectError(ErrorCode.CANISTER_WASM_MODULE_NOT_FOUND,
                      f"Canister {state.id.to_text()} has no code installed{why}; install code first")


def _method_kind(instance: Any, state: CanisterState, method: str) -> Kind:
    exports = instance.exports
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
        subnet.require_running(state)
        instance = engine_instance(subnet, state)
        kind = _method_kind(instance, state, request.method)
        subnet.require_cycles(state, subnet.fees.execution_cycles(subnet.limits.instructions_per_update,
                                                                  subnet.subnet_size, instance.wasm64))
    except RejectError as e:
        return 0, [subnet._reply_output(request.origin, request.receiver, None, e.reject, request.trace,
                                        request.cycles)]
    context = CallContext(state.new_id(), request.origin, request.sender, request.method, kind is Kind.QUERY,
                          request.trace, cycles_available=request.cycles)
    outcome = _execute(subnet, state, instance, context, Execution(
        kind, subnet.limits.instructions_per_update, subnet.time_ns(), method=request.method, arg=request.arg,
        caller=request.sender.bytes, cycles_available=request.cycles, reply_limit=subnet.limits.reply_bytes))
    return outcome.instructions, _outputs(subnet, state, instance, context, outcome)


def _system_task(subnet: Subnet, state: CanisterState, task: Request) -> tuple[int, list[Any]]:
    """A heartbeat or timer: it may call other canisters; its context answers no one (responded)."""
    context = CallContext(state.new_id(), task.origin, task.sender, task.method, False, task.trace,
                          responded=True)
    instance = state.instance
    outcome = _execute(subnet, state, instance, context, Execution(
        _SYSTEM_TASKS[task.method], subnet.limits.instructions_per_update, subnet.time_ns(),
        caller=task.sender.bytes))
    return outcome.instructions, _outputs(subnet, state, instance, context, outcome)


def execute_response(subnet: Subnet, state: CanisterState, context: CallContext, call: OutgoingCall,
                     response: Response) -> tuple[int, list[Any]]:
    """Runs the reply or reject callback of `call` (and its cleanup callback if that traps)."""
    callbacks = call.callbacks
    reject = response.reject
    instance = engine_instance(subnet, state)
    fee = subnet.fees.response_byte_cycles(len(response.reply or b""), subnet.subnet_size)
    state.cycles -= fee
    response.trace.cycles += fee
    message = Execution(
        Kind.REJECT if reject is not None else Kind.REPLY, subnet.limits.instructions_per_update,
        subnet.time_ns(), arg=response.reply or b"", caller=context.caller.bytes,
        cycles_available=context.cycles_available, cycles_refunded=response.refund,
        reject_code=int(reject.reject_code) if reject is not None else 0,
        reject_message=reject.message if reject is not None else "",
        reject_error_code=reject.error_code if reject is not None else None, callback=callbacks,
        replied=context.responded, reply_limit=subnet.limits.reply_bytes)
    outcome = _execute(subnet, state, instance, context, message)
    instructions = outcome.instructions
    if outcome.trap is not None and callbacks.cleanup is not None:
        cleanup = _execute(subnet, state, instance, context, Execution(
            Kind.CLEANUP, subnet.limits.instructions_per_update, subnet.time_ns(), caller=context.caller.bytes,
            reject_code=message.reject_code, callback=callbacks, replied=context.responded))
        instructions += cleanup.instructions
    return instructions, _outputs(subnet, state, instance, context, outcome)


def _execute(subnet: Subnet, state: CanisterState, instance: Any, context: CallContext, message: Execution
             ) -> Outcome:
    """Runs `message` on `instance` and settles its cycles: the execution fee, cycles accepted
    from the call, and the cycles its outgoing calls take with them."""
    message = replace(message, context_instructions=context.instructions)
    outcome = instance.execute(message, canister_view(subnet, state))
    cycles = subnet.fees.execution_cycles(outcome.instructions, subnet.subnet_size, instance.wasm64)
    state.cycles -= cycles
    context.trace.cycles += cycles
    context.instructions += outcome.instructions
    state.heap_bytes = outcome.heap_bytes
    keep_logs(state, outcome, message.time_ns)
    if outcome.trap is None and message.kind is not Kind.QUERY:
        state.version += 1  # every successful update execution counts (interface spec)
    if outcome.trap is None:
        context.cycles_available -= outcome.cycles_accepted
        state.cycles += outcome.cycles_accepted - outcome.cycles_burned
        if outcome.global_timer_ns is not None:
            state.global_timer_ns = outcome.global_timer_ns
        if outcome.certified_data is not None:
            state.certified_data = outcome.certified_data
    return outcome


def _outputs(subnet: Subnet, state: CanisterState, instance: Any, context: CallContext, outcome: Outcome
             ) -> list[Any]:
    outputs: list[Any] = []
    for call in outcome.calls:
        outputs.append(_send(subnet, state, instance.wasm64, context, call))
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


def _send(subnet: Subnet, state: CanisterState, wasm64: bool, context: CallContext, call: Any
          ) -> Request | Response:
    """An outgoing call as a request (or the system's reject of it, when the canister cannot pay
    for it); its fee is charged and its response's cost set aside now."""
    call_id = state.new_id()
    fee = subnet.fees.call_cycles(len(call.arg), subnet.subnet_size)
    reserve = subnet.call_reservation_cycles(wasm64)
    context.trace.messages += 1
    context.trace.bytes += len(call.arg)
    context.trace.cycles += fee
    sent = OutgoingCall(call_id, Principal(call.callee), call.method, call.arg, call.cycles, call.callbacks)
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


# Source of both: rs/config/src/execution_environment.rs of the IC, read in the ldclabs/ic copy of
# dfinity/ic's history at 27760a5887c513c503bf670e10d79a6eefc18ac3
# (MAX_INSTRUCTIONS_FOR_MESSAGE_ACCEPTANCE_CALLS, MAX_QUERY_CALL_DEPTH).
INSPECT_MESSAGE_INSTRUCTIONS = 200_000_000  # what canister_inspect_message may use
MAX_QUERY_CALL_DEPTH = 6  # how deep composite queries may call


def accept_ingress(subnet: Subnet, state: CanisterState, msg: IngressMessage) -> None:
    """What the IC checks before it accepts an ingress message to a wasm canister: that the
    method exists, and that the canister's `canister_inspect_message`, if it exports one, calls
    `ic0.accept_message`. It runs on one node (non-replicated), changes nothing and costs nothing.
    Raises IngressRejected otherwise."""
    try:
        _method_kind(state.instance, state, msg.method)
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


def query(subnet: Subnet, state: CanisterState, sender: Principal, method: str, arg: bytes,
          certificate: Callable[[], bytes] | None = None) -> QueryResult:
    """A non-replicated query (or composite query): it runs on the canister's current state and
    changes nothing. If the module reads a data certificate, `certificate()` makes it."""
    reads = certificate is not None and "data_certificate_copy" in state.instance.compiled.ic0_imports
    reply, reject = _query_call(subnet, state, sender, method, arg, depth=1,
                                certificate=certificate() if reads else None)
    if reject is not None:
        return QueryResult(None, int(reject.reject_code), reject.message, reject.error_code)
    return QueryResult(reply, None, None, None)


def _query_call(subnet: Subnet, state: CanisterState, sender: Principal, method: str, arg: bytes,
                depth: int, certificate: bytes | None = None) -> tuple[bytes | None, Reject | None]:
    exports = state.instance.compiled.exports
    if f"canister_composite_query {method}" in exports:
        return _composite_query(subnet, state, sender, method, arg, depth, certificate)
    if f"canister_query {method}" not in exports:
        return None, Reject.of(ErrorCode.CANISTER_METHOD_NOT_FOUND,
                               f"Canister {state.id.to_text()} has no query method '{method}'")
    message = Execution(Kind.QUERY, subnet.limits.instructions_per_query, subnet.time_ns(), method=method,
                        arg=arg, caller=sender.bytes, replicated=False, certificate=certificate,
                        reply_limit=subnet.limits.query_reply_bytes)
    if state.free_round > subnet.round:  # its last execution still runs (DTS): the query sees the state before it
        outcome = state.instance.execute_before_last_commit(message, canister_view(subnet, state))
    else:
        outcome = state.instance.execute(message, canister_view(subnet, state))
    return _answer_of(state, method, outcome.reply, outcome.trap or outcome.reject)


def _answer_of(state: CanisterState, method: str, reply: bytes | None, reject: Reject | None
               ) -> tuple[bytes | None, Reject | None]:
    if reply is None and reject is None:
        reject = Reject.of(ErrorCode.CANISTER_DID_NOT_REPLY,
                           f"Canister {state.id.to_text()} did not produce a response to the query {method}")
    return reply, reject


def _composite_query(subnet: Subnet, state: CanisterState, sender: Principal, method: str, arg: bytes,
                     depth: int, certificate: bytes | None) -> tuple[bytes | None, Reject | None]:
    """A composite query: it calls queries of other canisters and its callbacks run at once, as
    they answer, all on one state of this canister that is thrown away at the end."""
    instance = state.instance
    view = canister_view(subnet, state)
    limit = subnet.limits.instructions_per_query

    def run(message: Execution) -> Outcome:
        return instance.execute(replace(message, time_ns=subnet.time_ns(), replicated=False, caller=sender.bytes,
                                        reply_limit=subnet.limits.query_reply_bytes), view)

    reply: bytes | None = None
    reject: Reject | None = None
    with instance.composite_scope():
        outcome = run(Execution(Kind.COMPOSITE_QUERY, limit, 0, method=method, arg=arg, certificate=certificate))
        pending = list(outcome.calls)
        while True:
            if outcome.trap is not None and reply is None and reject is None:
                reject = outcome.trap
            elif reply is None and reject is None:
                reply, reject = outcome.reply, outcome.reject
            if not pending:
                break
            call = pending.pop(0)
            answer, refused = _call_from_query(subnet, state, call, depth)
            kind = Kind.REJECT if refused is not None else Kind.REPLY
            answered = reply is not None or reject is not None
            outcome = run(Execution(kind, limit, 0, arg=answer or b"", callback=call.callbacks, replied=answered,
                                    reject_code=int(refused.reject_code) if refused else 0,
                                    reject_message=refused.message if refused else ""))
            if outcome.trap is not None and call.callbacks.cleanup is not None:
                run(Execution(Kind.CLEANUP, limit, 0, callback=call.callbacks, replied=answered))
            pending.extend(outcome.calls if outcome.trap is None else [])
    return _answer_of(state, method, reply, reject)


def _call_from_query(subnet: Subnet, caller: CanisterState, call: Any, depth: int
                     ) -> tuple[bytes | None, Reject | None]:
    """A call made by a composite query: to a query of another canister, answered at once."""
    callee_id = Principal(call.callee)
    callee = subnet.canisters.get(callee_id)
    if callee is None:
        return None, Reject.of(ErrorCode.CANISTER_NOT_FOUND, f"Canister {callee_id.to_text()} not found")
    if depth >= MAX_QUERY_CALL_DEPTH:
        return None, Reject.of(ErrorCode.CANISTER_CONTRACT_VIOLATION,
                               f"Composite query call graph is deeper than {MAX_QUERY_CALL_DEPTH} calls")
    if callee.module is not None:
        return _query_call(subnet, callee, caller.id, call.method, call.arg, depth + 1)
    result = subnet.query(caller.id, callee_id, call.method, call.arg)  # a Python canister's query
    if result.reply is not None:
        return result.reply, None
    return None, Reject(RejectCode(result.reject_code or 5), result.reject_message or "", result.error_code)
