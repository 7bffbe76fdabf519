"""The subnet: canisters, their queues, and the rounds that execute and route messages.

Each round (`execute_round`):
1. inducts the ingress messages submitted since the last round, charging ingress fees;
2. runs inner loops, as the IC's scheduler does, until nothing more can run this round:
   - execute queued messages. A canister runs its messages in order; an execution of N
     instructions occupies the canister for ceil(N / slice) rounds (DTS, one slice per round),
     continuing the canister's instruction budget of the current round. Each of the scheduler's
     threads has its own budget (limits.instructions_per_round); a new execution starts on the
     least used thread not given to a long execution, while that thread has used less than the
     round's instructions minus one slice. Long executions get at most all threads but one, so a
     thread is always kept for new executions (the IC's round_schedule.rs);
   - route the outputs of executions that finish in this round: requests and responses go to
     their destination's queue at once (every canister is on this subnet), so a call and its
     response can both complete within the round; ingress replies are recorded;
3. charges storage for the round's duration.

Canister code runs on the host all at once; the rounds only decide when its effects become
visible (outputs are released in the round its last slice ends) and what ic.time() reads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdk.candid import HeaderCache, Interface, parse_did
from cdk.principal import Principal
from replica.api_types import CanisterInfo, IngressMessage, IngressRejected, QueryResult, RequestStatus
from replica.canister_state import CanisterSettings, CanisterState
from replica.config import NetworkConfig
from replica.cost_model import CostReport
from replica.engines import Execution, Kind
from replica.engines.python.engine import PythonInstance
from replica.engines.wasm.engine import WasmEngine, default_cache_dir
from replica.errors import ErrorCode, Reject, RejectCode, RejectError
from replica.execution import CanisterContext, Executor
from replica.limits import Limits
from replica.message_execution import accept_ingress as accept_wasm_ingress
from replica.message_execution import enqueue_system_tasks, execute_request, execute_response
from replica.message_execution import query as wasm_query
from replica.messages import CallContext, CanisterOrigin, IngressOrigin, OutgoingCall, Request, Response
from replica.stable_memory import StableMemory
from replica.wasm_install import canister_view

MANAGEMENT = Principal.management()
_MANAGEMENT_DID = Path(__file__).parent / "management.did"


@dataclass
class IngressRecord:
    message: IngressMessage
    status: str = "received"
    reply: bytes | None = None
    reject: Reject | None = None
    updated_ns: int = 0
    inducted_round: int = 0
    report: CostReport = field(default_factory=CostReport)

    def public(self) -> RequestStatus:
        r = self.reject
        return RequestStatus(self.status, self.reply, int(r.reject_code) if r else None,  # type: ignore[arg-type]
                             r.message if r else None, r.error_code if r else None, self.updated_ns)


@dataclass
class _Released:
    round: int
    message: Request | Response | tuple[IngressOrigin, bytes | None, Reject | None, CostReport]


class Subnet:
    def __init__(self, config: NetworkConfig):
        self.config = config
        self.limits = config.limits
        self.fees = config.fees
        self.subnet_size = config.subnet_size
        self.kernel = config.kernel
        self.executor = Executor(self, config.host_seconds_per_execution)
        self.management_interface: Interface = parse_did(_MANAGEMENT_DID.read_text())
        self.canisters: dict[Principal, CanisterState] = {}
        self.ingress: dict[bytes, IngressRecord] = {}
        self.finished_ingress: list[bytes] = []  # finished requests still remembered, for pruning
        self.pending_ingress: list[bytes] = []
        self.released: list[_Released] = []
        self.deleted: list[Principal] = []  # canisters deleted since the last checkpoint
        self.names: dict[str, Principal] = {}  # dfx-style canister names (canister_ids.json)
        self.round = 0
        self.thread_instructions: list[int] = []  # per scheduler thread, used in the current round
        self.long_execution_threads = 0  # threads given to executions continuing into this round
        self.candid_cache = HeaderCache()
        self.wasm_engine = WasmEngine(default_cache_dir(), self.limits)  # runs wasm canisters
        genesis = config.genesis_time_ns if config.genesis_time_ns is not None else time.time_ns()
        self.genesis_ns = genesis
        self.next_canister_index = config.first_canister_index
        self.changed = False  # something to checkpoint since the last checkpoint
        from replica.management import ManagementCanister  # management needs Subnet's types

        self.management = ManagementCanister(self)

    # --- Environment for executions ----------------------------------------------------------
    def time_ns(self) -> int:
        return self.genesis_ns + self.round * self.config.round_duration_ns

    def method_types(self, canister: Principal, method: str) -> tuple[Any, Any]:
        interface = self.interface_of(canister)
        found = interface.methods.get(method)
        if found is None:
            raise RejectError(ErrorCode.CANISTER_METHOD_NOT_FOUND,
                              f"Canister {canister.to_text()} has no method '{method}' in its Candid interface")
        return found.args, found.rets

    def interface_of(self, canister: Principal) -> Interface:
        if canister == MANAGEMENT:
            return self.management_interface
        state = self.canisters.get(canister)
        if state is None:
            raise RejectError(ErrorCode.CANISTER_NOT_FOUND, f"Canister {canister.to_text()} not found")
        if state.module is not None:
            return state.module.interface(canister)
        if state.loaded is None:
            raise RejectError(ErrorCode.CANISTER_WASM_MODULE_NOT_FOUND,
                              f"Canister {canister.to_text()} has no code installed; install code first")
        return state.loaded.interface

    # --- canisters ---------------------------------------------------------------------------
    def allocate_id(self) -> Principal:
        last = self.config.first_canister_index + self.config.canister_range_size - 1
        if self.next_canister_index > last:
            raise RejectError(ErrorCode.CANISTER_REJECTED_MESSAGE,
                              "this subnet's canister id range is used up; delete canisters or start a "
                              "network with a new state directory")
        index = self.next_canister_index
        self.next_canister_index += 1
        return Principal.from_canister_index(index)

    def create_canister(self, controllers: list[Principal], cycles: int,
                        settings: CanisterSettings | None = None, specified_id: Principal | None = None
                        ) -> CanisterState:
        canister_id = specified_id or self.allocate_id()
        if canister_id in self.canisters:
            raise RejectError(ErrorCode.CANISTER_REJECTED_MESSAGE,
                              f"Canister {canister_id.to_text()} already exists")
        settings = settings or CanisterSettings(controllers=list(controllers))
        state = CanisterState(canister_id, settings, cycles, StableMemory(self.limits.stable_memory_bytes))
        self.canisters[canister_id] = state
        self.changed = True
        return state

    def canister(self, canister_id: Principal) -> CanisterState:
        state = self.canisters.get(canister_id)
        if state is None:
            raise RejectError(ErrorCode.CANISTER_NOT_FOUND, f"Canister {canister_id.to_text()} not found")
        return state

    def freezing_threshold_cycles(self, state: CanisterState) -> int:
        return self.fees.storage_cycles(state.memory_bytes, state.settings.freezing_threshold_s * 10**9,
                                        self.subnet_size)

    def require_cycles(self, state: CanisterState, needed: int) -> None:
        """Rejects with IC0207 unless `state` can pay `needed` cycles above its freezing threshold."""
        threshold = self.freezing_threshold_cycles(state)
        if state.cycles - threshold < needed:
            missing = needed + threshold - state.cycles
            raise RejectError(ErrorCode.CANISTER_OUT_OF_CYCLES,
                              f"Canister {state.id.to_text()} is out of cycles: please top up the canister "
                              f"with at least {missing} additional cycles (it has {state.cycles}, its "
                              f"freezing threshold is {threshold} and this message may cost {needed})")

    def require_running(self, state: CanisterState) -> None:
        """Rejects a call to a stopped or stopping canister (IC0508, IC0509)."""
        if state.status != "running":
            code = ErrorCode.CANISTER_STOPPED if state.status == "stopped" else ErrorCode.CANISTER_STOPPING
            raise RejectError(code, f"Canister {state.id.to_text()} is {state.status}; a controller can "
                              "start it again with start_canister")

    def call_reservation_cycles(self, wasm64: bool = False) -> int:
        """What a call sets aside until its response has executed: the response's execution at
        the message instruction limit (at the caller's wasm64 rate, if it is one) and its largest
        reply (interface spec: a call needs the maximum cost of processing its response above the
        freezing threshold)."""
        return (self.fees.execution_cycles(self.limits.instructions_per_update, self.subnet_size, wasm64)
                + self.fees.response_byte_cycles(self.limits.reply_bytes, self.subnet_size))

    def reject_call_contexts(self, state: CanisterState) -> None:
        """Reinstall and uninstall: every call the canister has not answered is rejected, as the
        IC does, so no caller waits forever (and cycles still available go back to it)."""
        for context in state.call_contexts.values():
            if not context.responded:
                self.release(self.round, self._answer(state.id, context, None, Reject.of(
                    ErrorCode.CANISTER_REJECTED_MESSAGE, "Canister has been uninstalled.")))
        state.call_contexts.clear()

    def info(self, canister_id: Principal) -> CanisterInfo:
        s = self.canister(canister_id)
        ref = s.loaded.ref if s.loaded else None
        return CanisterInfo(s.id, ref.class_path if ref else None, ref.version if ref else None,
                            s.module_hash, list(s.settings.controllers), s.status,
                            s.cycles, s.heap_bytes, s.stable.size_bytes,
                            {name: (m.public, m.content) for name, m in s.metadata.items()}, s.certified_data)

    # --- ingress -----------------------------------------------------------------------------
    def submit(self, msg: IngressMessage) -> None:
        if msg.request_id in self.ingress:
            return  # resubmission of a known request: the IC accepts it again and does nothing
        size = len(msg.arg) + len(msg.method)
        if size > self.limits.ingress_message_bytes:
            raise IngressRejected(413, "IC0504", f"the ingress message is {size} bytes, over the limit of "
                                  f"{self.limits.ingress_message_bytes} bytes; send the data in chunks", 5)
        now = time.time_ns()
        if msg.ingress_expiry_ns < now:
            raise IngressRejected(400, "IC0202", "the ingress_expiry of the request is in the past; check "
                                  "the client's clock and send a fresh request", 2)
        if msg.ingress_expiry_ns > now + self.limits.ingress_expiry_max_ns + 30 * 10**9:
            raise IngressRejected(400, "IC0202", "the ingress_expiry of the request is more than 5 minutes "
                                  "in the future; check the client's clock", 2)
        if msg.canister_id == MANAGEMENT:
            self.management.check_ingress(msg)
        else:
            state = self.canisters.get(msg.canister_id)
            if state is None:
                raise IngressRejected(400, "IC0301", f"Canister {msg.canister_id.to_text()} not found", 3)
            if state.loaded is not None and msg.method not in state.loaded.interface.methods:
                raise IngressRejected(400, "IC0536", f"Canister {msg.canister_id.to_text()} has no update method "
                                      f"'{msg.method}'; its interface has: "
                                      f"{', '.join(sorted(state.loaded.interface.methods))}", 3)
            if state.module is not None:
                accept_wasm_ingress(self, state, msg)
            try:
                self.require_cycles(state, self.fees.ingress_cycles(size, self.subnet_size)
                                    + self.fees.execution_cycles(self.limits.instructions_per_update,
                                                                 self.subnet_size))
            except RejectError as e:
                raise IngressRejected(400, e.reject.error_code or "", e.reject.message, 2) from None
        self.ingress[msg.request_id] = IngressRecord(msg, updated_ns=self.time_ns())
        self.pending_ingress.append(msg.request_id)

    def reject_uninducted(self, message: str) -> int:
        """Rejects the update calls accepted but not yet inducted (none of them ran); returns how many."""
        pending, self.pending_ingress = self.pending_ingress, []
        for request_id in pending:
            self._finish_ingress(self.ingress[request_id], None, Reject(RejectCode.SYS_TRANSIENT, message, None))
        return len(pending)

    def status(self, request_id: bytes) -> RequestStatus | None:
        record = self.ingress.get(request_id)
        return record.public() if record else None

    # --- rounds ------------------------------------------------------------------------------
    def has_work(self) -> bool:
        """Whether a round has something to do. A due global timer counts (so an idle served
        network still fires it); heartbeats do not (they run in the rounds that run anyway)."""
        now = self.time_ns()
        return bool(self.pending_ingress or self.released
                    or any(s.queue or s.status == "stopping" or 0 < s.global_timer_ns <= now
                           for s in self.canisters.values()))

    def execute_round(self) -> None:
        self.round += 1
        r = self.round
        self._induct(r)
        enqueue_system_tasks(self)
        self._schedule_threads(r)
        while True:  # inner loops; each execution costs round budget, so this ends
            self.management.execute(r)
            self.management.finish_stopping(r)  # a canister with no open call context stops at once
            started = 0
            for canister_id in sorted(self.canisters, key=lambda p: p.bytes):
                state = self.canisters.get(canister_id)
                if state is not None:
                    started += self._execute_canister(state, r)
            if not self._route(r) and not started:
                break
        self._charge_storage()
        self.changed = True

    def _induct(self, r: int) -> None:
        for request_id in self.pending_ingress:
            record = self.ingress[request_id]
            msg = record.message
            record.inducted_round = r
            record.updated_ns = self.time_ns()
            record.report.messages += 1
            record.report.bytes += len(msg.arg)
            request = Request(msg.sender, msg.canister_id, msg.method, msg.arg, IngressOrigin(request_id),
                              record.report, available_round=r)
            if msg.canister_id == MANAGEMENT:
                record.status = "processing"
                self.management.enqueue(request)
                continue
            state = self.canisters.get(msg.canister_id)
            try:
                if state is None:
                    raise RejectError(ErrorCode.CANISTER_NOT_FOUND,
                                      f"Canister {msg.canister_id.to_text()} not found")
                fee = self.fees.ingress_cycles(len(msg.arg) + len(msg.method), self.subnet_size)
                self.require_cycles(state, fee)
            except RejectError as e:
                self._finish_ingress(record, None, e.reject)
                continue
            state.cycles -= fee
            record.report.cycles += fee
            record.status = "processing"
            state.queue.append(request)
        self.pending_ingress = []

    def _schedule_threads(self, r: int) -> None:
        """Puts the executions begun in earlier rounds (one slice each in round r) on their own
        threads, at most all but one; any more share those threads, as the IC's round schedule
        runs them opportunistically after the new executions."""
        continuing = sorted((self.limits.instructions_per_slice if s.free_round > r else s.used_in_free_round
                             for s in self.canisters.values() if s.free_round >= r), reverse=True)
        cores = self.limits.scheduler_cores
        self.long_execution_threads = min(len(continuing), cores - 1)
        self.thread_instructions = [0] * cores
        for i, instructions in enumerate(continuing):
            self.thread_instructions[i % self.long_execution_threads] += instructions

    def _thread_for_new_execution(self) -> int | None:
        """The least used thread kept for new executions, if it may start one."""
        threads = range(self.long_execution_threads, self.limits.scheduler_cores)
        thread = min(threads, key=self.thread_instructions.__getitem__)
        limit = self.limits.instructions_per_round - self.limits.instructions_per_slice
        return thread if self.thread_instructions[thread] < limit else None

    def _execute_canister(self, state: CanisterState, r: int) -> int:
        """Runs what this canister can start in round r; returns how many executions started."""
        slice_ = self.limits.instructions_per_slice
        started = 0
        while state.queue and state.id in self.canisters:
            if state.free_round > r or (state.free_round == r and state.used_in_free_round >= slice_):
                break
            if state.queue[0].available_round > r:
                break
            thread = self._thread_for_new_execution()
            if thread is None:
                break
            message = state.queue.popleft()
            used = state.used_in_free_round if state.free_round == r else 0
            if isinstance(state.ic, CanisterContext):  # what a query reads while this runs (DTS)
                state.ic.first_committed = None
            instructions, outputs = self._execute_message(state, message, r)
            total = used + instructions
            finish = r + max(0, total - 1) // slice_
            state.free_round = finish
            state.used_in_free_round = total - (finish - r) * slice_
            self.thread_instructions[thread] += ((min(total, slice_) - used)
                                                 + self.limits.scheduler_overhead_per_execution)
            message.trace.instructions += instructions
            message.trace.executions += 1
            started += 1
            for output in outputs:
                self.released.append(_Released(finish, output))
        return started

    def _execute_message(self, state: CanisterState, message: Request | Response, r: int
                         ) -> tuple[int, list[Any]]:
        if isinstance(message, Response):
            return self._execute_response(state, message)
        return execute_request(self, state, message)

    def _execute_response(self, state: CanisterState, response: Response) -> tuple[int, list[Any]]:
        context = state.call_contexts.get(response.call_context_id)
        call: OutgoingCall | None = context.outstanding.pop(response.call_id, None) if context else None
        state.cycles += response.refund + state.reserved_for_responses.pop(response.call_id, 0)
        if context is None or call is None:
            return 0, []  # the call context is gone (the canister was reinstalled or its caller trapped)
        if context.failure is not None:
            # An earlier continuation trapped, so no code is left to receive this response; the
            # context is answered once its last outstanding call has come back.
            return 0, self._close_failed(state, context)
        return execute_response(self, state, context, call, response)

    def fail_context(self, state: CanisterState, context: CallContext, trap: Reject) -> list[Any]:
        """The spec's rule for a trap: it answers the caller only once no call of the context is
        still outstanding; until then the other responses still arrive."""
        context.failure = trap
        if context.outstanding:
            state.call_contexts[context.id] = context
            return []
        state.call_contexts.pop(context.id, None)
        return [] if context.responded else [self._answer(state.id, context, None, trap)]

    def _close_failed(self, state: CanisterState, context: CallContext) -> list[Any]:
        if context.outstanding:
            return []
        state.call_contexts.pop(context.id, None)
        if context.responded or context.failure is None:
            return []
        return [self._answer(state.id, context, None, Reject.of(
            ErrorCode.CANISTER_DID_NOT_REPLY,
            f"Canister {state.id.to_text()} did not reply to the call: its code after an await trapped "
            f"({context.failure.message})"))]

    def _answer(self, responder: Principal, context: CallContext, reply: bytes | None,
                reject: Reject | None) -> Any:
        """The reply or reject of a call context, with the cycles it did not accept."""
        context.responded = True
        refund, context.cycles_available = context.cycles_available, 0
        return self._reply_output(context.origin, responder, reply, reject, context.trace, refund)

    def _reply_output(self, origin: IngressOrigin | CanisterOrigin, responder: Principal, reply: bytes | None,
                      reject: Reject | None, trace: CostReport, refund: int) -> Any:
        if isinstance(origin, IngressOrigin):
            return (origin, reply, reject, trace)
        trace.messages += 1
        trace.bytes += len(reply or b"")
        return Response(origin.caller, origin.call_context_id, origin.call_id, reply, reject, trace, refund)

    def _route(self, r: int) -> int:
        """Delivers the outputs released by round r; returns how many it moved."""
        keep: list[_Released] = []
        moved = 0
        for item in self.released:
            if item.round > r:
                keep.append(item)
                continue
            moved += 1
            message = item.message
            if isinstance(message, tuple):
                origin, reply, reject, _trace = message
                self._finish_ingress(self.ingress[origin.request_id], reply, reject)
            elif isinstance(message, Request):
                message.available_round = r
                if message.receiver == MANAGEMENT:
                    self.management.enqueue(message)
                elif message.receiver in self.canisters:
                    self.canisters[message.receiver].queue.append(message)
                else:
                    origin = message.origin
                    assert isinstance(origin, CanisterOrigin)
                    keep.append(_Released(r, Response(
                        origin.caller, origin.call_context_id, origin.call_id, None,
                        Reject.of(ErrorCode.CANISTER_NOT_FOUND, f"Canister {message.receiver.to_text()} not found"),
                        message.trace, message.cycles)))
            else:
                message.available_round = r
                caller = self.canisters.get(message.receiver)
                if caller is not None:
                    caller.queue.append(message)
        self.released = keep
        return moved

    def release(self, finish_round: int, output: Any) -> None:
        self.released.append(_Released(finish_round, output))

    def _finish_ingress(self, record: IngressRecord, reply: bytes | None, reject: Reject | None) -> None:
        self.finished_ingress.append(record.message.request_id)
        record.status = "replied" if reject is None else "rejected"
        record.reply = reply
        record.reject = reject
        record.updated_ns = self.time_ns()
        rounds = self.round - record.inducted_round + 1 if record.inducted_round else 0
        record.report.rounds = rounds
        record.report.seconds = rounds * self.config.round_duration_ns / 1e9
        record.report.bytes += len(reply or b"")

    def prune_ingress(self, wall_ns: int) -> None:
        """Forgets finished requests whose ingress_expiry has passed (at least the 5 minutes the
        spec asks): `submit` refuses them as expired from then on, so none can run twice."""
        kept: list[bytes] = []
        for request_id in self.finished_ingress:
            if self.ingress[request_id].message.ingress_expiry_ns >= wall_ns:
                kept.append(request_id)
            else:
                del self.ingress[request_id]
        self.finished_ingress = kept

    def pass_idle_rounds(self, wall_ns: int) -> None:
        """While nothing runs, rounds still pass in real time, as on the IC: the round number and
        the time catch up with the wall clock, and storage is charged for them."""
        behind = (wall_ns - self.time_ns()) // self.config.round_duration_ns
        if behind > 0 and not self.has_work():
            self.round += behind
            self._charge_storage(behind)
            self.changed = True

    def _charge_storage(self, rounds: int = 1) -> None:
        for state in self.canisters.values():
            state.cycles = max(0, state.cycles - self.fees.storage_cycles(
                state.memory_bytes, rounds * self.config.round_duration_ns, self.subnet_size))

    # --- queries -----------------------------------------------------------------------------
    def query(self, sender: Principal, canister_id: Principal, method_name: str, arg: bytes,
              certificate: Callable[[], bytes] | None = None) -> QueryResult:
        """A query from outside; `certificate` makes the data certificate a wasm query may read."""
        try:
            if canister_id == MANAGEMENT:
                return self.management.query(sender, method_name, arg)
            state = self.canister(canister_id)
            if state.status != "running":
                raise RejectError(ErrorCode.CANISTER_STOPPED,
                                  f"Canister {canister_id.to_text()} is {state.status}; it answers no queries")
            if state.module is not None:
                return wasm_query(self, state, sender, method_name, arg, certificate)
            if state.loaded is None or state.instance is None:
                raise RejectError(ErrorCode.CANISTER_WASM_MODULE_NOT_FOUND,
                                  f"Canister {canister_id.to_text()} has no code installed")
            instance = PythonInstance(state, self.executor, self.candid_cache)
            if f"canister_query {method_name}" not in instance.exports:
                raise RejectError(ErrorCode.CANISTER_METHOD_NOT_FOUND,
                                  f"Canister {canister_id.to_text()} has no query method '{method_name}'")
            self.require_cycles(state, 0)
        except RejectError as e:
            return _query_reject(e.reject)
        message = Execution(Kind.QUERY, self.limits.instructions_per_query, self.time_ns(), method=method_name,
                            arg=arg, caller=sender.bytes, replicated=False, reply_limit=self.limits.query_reply_bytes)
        # While its last execution still runs (DTS), a query sees the state from before it.
        run = instance.execute_before_last_commit if state.free_round > self.round else instance.execute
        outcome = run(message, canister_view(self, state))
        if outcome.trap is not None:
            return _query_reject(outcome.trap)
        return QueryResult(outcome.reply, None, None, None)


def _query_reject(reject: Reject) -> QueryResult:
    return QueryResult(None, int(reject.reject_code), reject.message, reject.error_code)


def chain_rounds(executions: Sequence[int], limits: Limits) -> int:
    """Rounds a call chain spans on an otherwise idle subnet: from the round its first execution
    starts (at the round's beginning) to the round its last one ends, each execution starting
    on another canister as soon as the previous ends. These are the rules `execute_round` applies
    (DTS slices, same-round delivery, per-thread round budgets with a thread kept for new
    executions, the scheduler's overhead per execution); the planner predicts latency with it
    instead of running."""
    slice_, cores = limits.instructions_per_slice, limits.scheduler_cores
    limit = limits.instructions_per_round - slice_
    round_, threads, long_threads = 0, [0] * cores, 0
    for instructions in executions:
        thread = min(range(long_threads, cores), key=threads.__getitem__)
        if threads[thread] >= limit:  # no new execution may start this round
            round_, threads, long_threads = round_ + 1, [0] * cores, 0
            thread = 0
        extra = max(0, instructions - 1) // slice_  # rounds past the one it starts in
        if extra:  # it ends in a later round, where its last slice holds a thread of its own
            round_, threads, long_threads = round_ + extra, [0] * cores, 1
            threads[0] = instructions - extra * slice_
        else:
            threads[thread] += instructions + limits.scheduler_overhead_per_execution
    return round_ + 1


def rounds_for(instructions: int, slice_: int) -> int:
    """Rounds an execution of `instructions` occupies when it starts at a fresh round."""
    return max(1, math.ceil(instructions / slice_))
