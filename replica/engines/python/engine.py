"""Runs executions of the engine interface (replica.engines) on a Python-class canister.

Every execution of a Python canister goes through here: install hooks, updates, queries, and
the reply, reject and cleanup callbacks of the calls it made. Arguments and replies are Candid
bytes, decoded and encoded by the class's .did; instructions are what the code reports to its
meter (replica.cost_model), and a trap rolls the heap and the stable memory back
(replica.execution.Executor does both). An async method's coroutine stays with the canister's
runtime between executions: each call it makes is answered through the callback it was given.
"""

from __future__ import annotations

from typing import Any

from cdk.candid import CandidError, HeaderCache, decode
from cdk.canister import CallRejected, Trap
from cdk.principal import Principal
from replica import heap
from replica.canister_state import CanisterState
from replica.engines import CanisterView, Execution, Kind, Outcome
from replica.errors import ErrorCode, Reject
from replica.execution import (
    CanisterContext,
    Conversation,
    ExecutionResult,
    Executor,
    decode_args,
    encode_reply,
    resume,
    start_method,
)
from replica.loader import LoadedClass


class PythonInstance:
    """A Python canister's code (the class instance in `state.instance`) seen as an engine
    instance: `execute` takes an `Execution` and returns its `Outcome`."""

    wasm64 = False  # Python code is charged at the wasm32 rate

    def __init__(self, state: CanisterState, executor: Executor, candid_cache: HeaderCache):
        if state.loaded is None or state.instance is None:
            raise ValueError(f"canister {state.id.to_text()} has no Python class installed")
        self.state = state
        self.executor = executor
        self.candid_cache = candid_cache

    @property
    def exports(self) -> frozenset[str]:
        """The entry points the class's .did declares, named as a wasm module exports them."""
        methods = self.state.loaded.interface.methods  # type: ignore[union-attr]
        return frozenset(f"canister_{'query' if 'query' in m.modes else 'update'} {name}"
                         for name, m in methods.items())

    @property
    def _runtime(self) -> CanisterContext:
        return self.state.ic  # type: ignore[return-value]

    def execute(self, message: Execution, view: CanisterView) -> Outcome:
        if message.kind is Kind.QUERY:
            return self._query(message)
        if message.kind is Kind.UPDATE:
            return self._update(message)
        if message.kind in (Kind.REPLY, Kind.REJECT):
            return self._callback(message)
        if message.kind is Kind.CLEANUP:
            return self._cleanup(message)
        raise ValueError(f"a Python canister has no {message.kind.value} entry point")

    def _query(self, message: Execution) -> Outcome:
        state = self.state
        method = state.loaded.interface.methods[message.method]  # type: ignore[union-attr]
        what = f"{state.id.to_text()}.{message.method}"

        def step() -> Any:
            args = decode_args(method.args, message.arg, what, self.candid_cache)
            value = getattr(state.instance, message.method)(*args)
            return encode_reply(method.rets, value, message.reply_limit, self.candid_cache)

        result = self.executor.run(
            # A query run replicated (called as an update) keeps its prints; "query" mode drops them.
            state, step, caller=Principal(message.caller), mode="query" if not message.replicated else "replicated",
            instruction_limit=message.instruction_limit, payload_bytes=len(message.arg),
            discard_state=True, charge=False)
        return Outcome(result.instructions, trap=result.trap, reply=result.value if result.trap is None else None,
                       logs=result.logs, heap_bytes=state.heap_bytes)

    def _update(self, message: Execution) -> Outcome:
        state = self.state
        method = state.loaded.interface.methods[message.method]  # type: ignore[union-attr]
        conversation = Conversation(reply_types=method.rets)

        def step() -> Any:
            args = decode_args(method.args, message.arg, f"{state.id.to_text()}.{message.method}",
                               self.candid_cache)
            return start_method(state.instance, conversation, message.method, args)

        return self._run(message, step, conversation)

    def _callback(self, message: Execution) -> Outcome:
        """Hands a call's reply or reject to the code awaiting it, and runs that code on to its
        next await or its end."""
        assert message.callback is not None
        awaited = self._runtime.awaited.get(message.callback.reply.fun)
        if awaited is None:  # nothing awaits it: the code that made the call trapped later
            return Outcome(0, heap_bytes=self.state.heap_bytes)
        conversation = awaited.conversation

        def step() -> Any:
            if message.kind is Kind.REJECT:
                awaited.pending.outcome = ("reject", CallRejected(message.reject_code, message.reject_message,
                                                                  message.reject_error_code))
            else:
                try:
                    awaited.pending.outcome = ("reply", _unwrap(decode(awaited.reply_types, message.arg,
                                                                       cache=self.candid_cache)))
                except CandidError as e:
                    error = Reject.of(ErrorCode.CANISTER_CONTRACT_VIOLATION,
                                      f"the reply to a call of {self.state.id.to_text()} does not match the "
                                      f"callee's .did: {e}")
                    awaited.pending.outcome = ("reject", CallRejected(int(error.reject_code), error.message,
                                                                      error.error_code))
            if conversation.coroutine is None or conversation.awaiting is not awaited.pending:
                return ("buffered", None)  # the code awaits another call first, or has finished
            return resume(conversation)

        outcome = self._run(message, step, conversation)
        if outcome.trap is None or awaited.cleanup is None:  # else its cleanup runs next
            self._runtime.awaited.pop(message.callback.reply.fun, None)
        return outcome

    def _cleanup(self, message: Execution) -> Outcome:
        """The call's cleanup closure, after the code resuming on its response trapped: it runs
        on the state the trap rolled back to, and keeps its changes unless it traps too."""
        assert message.callback is not None
        awaited = self._runtime.awaited.pop(message.callback.reply.fun)
        assert awaited.cleanup is not None
        result = self.executor.run(
            self.state, awaited.cleanup, caller=Principal(message.caller), mode="cleanup",
            instruction_limit=message.instruction_limit, payload_bytes=0, charge=False,
            context_instructions=message.context_instructions)
        return self._outcome(result, None)

    def _run(self, message: Execution, step: Any, conversation: Conversation) -> Outcome:
        """Runs an update or a callback: `step` returns (what happened, value) with what happened
        one of reply, await and buffered; a reply's value is encoded by the method's reply types."""
        state = self.state

        def run_and_encode() -> Any:
            kind, value = step()
            if kind != "reply":
                return None
            if message.replied or self._runtime.rejected is not None:
                if value is not None:
                    raise Trap(f"{message.method or 'the method'} returned a value after its call was already "
                               "answered with ic.reject; return None after rejecting",
                               ErrorCode.CANISTER_CONTRACT_VIOLATION)
                return None
            return encode_reply(conversation.reply_types, value, message.reply_limit, self.candid_cache)

        result = self.executor.run(
            state, run_and_encode, caller=Principal(message.caller), mode="update",
            instruction_limit=message.instruction_limit, payload_bytes=len(message.arg), charge=False,
            conversation=conversation, cycles_available=message.cycles_available,
            context_instructions=message.context_instructions, replied=message.replied)
        if result.trap is not None:
            # Nothing is left to resume: the responses to its other calls only close the context.
            conversation.coroutine = None
            awaited = self._runtime.awaited
            for key in [k for k, a in awaited.items() if a.conversation is conversation and a.cleanup is None]:
                del awaited[key]
        return self._outcome(result, result.value)

    def _outcome(self, result: ExecutionResult, reply: bytes | None) -> Outcome:
        trap = result.trap
        # ic.trap logged its own message (as ic0.trap does); the subnet logs any other trap's.
        explicit = trap is not None and trap.error_code == ErrorCode.CANISTER_CALLED_TRAP.text
        return Outcome(result.instructions, trap=trap, reply=reply if trap is None else None, reject=result.reject,
                       calls=result.calls, cycles_accepted=result.cycles_accepted,
                       logs=result.logs + ([trap.message.encode()] if explicit else []),
                       heap_bytes=self.state.heap_bytes)

    def execute_before_last_commit(self, message: Execution, view: CanisterView) -> Outcome:
        """Runs a query on the state from before the execution still running over rounds (DTS):
        that execution's first committed step kept the heap and stable memory it started from."""
        ic = self.state.ic
        started_from = ic.first_committed if isinstance(ic, CanisterContext) else None
        if started_from is None:
            return self.execute(message, view)
        # The executor puts the execution's own heap back when the query ends (a query's changes
        # are discarded); the stable memory is swapped back here.
        if started_from.heap is not None:
            heap.restore(started_from.heap)
        redo = self.state.stable.swap(started_from.stable_undo)
        try:
            return self.execute(message, view)
        finally:
            self.state.stable.swap(redo)


def install(state: CanisterState, loaded: LoadedClass, executor: Executor, candid_cache: HeaderCache,
            message: Execution, *, pre_upgrade: bool = True, charge: bool = True) -> Outcome:
    """Installs `loaded` on `state` by one execution of `message` (Kind.INIT, or
    Kind.POST_UPGRADE): for an upgrade the old instance's pre_upgrade first (unless
    `pre_upgrade` is False), then the class's construction and its init or post_upgrade with
    the argument decoded by the .did's init types. Its changes are kept, and `state.instance` is
    the new instance, only if nothing traps; `charge` False runs it free (a restart's rebuild)."""
    if message.kind not in (Kind.INIT, Kind.POST_UPGRADE):
        raise ValueError(f"a Python canister is installed by an init or post_upgrade execution, not "
                         f"{message.kind.value}")
    if state.ic is None:
        state.ic = CanisterContext(state, executor.env)
    old_instance = state.instance

    def step() -> None:
        args = decode_args(loaded.interface.init_args, message.arg,
                           f"the init arguments of {loaded.ref.class_path}", candid_cache)
        if message.kind is Kind.POST_UPGRADE and pre_upgrade and old_instance is not None:
            old_instance.pre_upgrade()
        state.instance = loaded.cls(state.ic)
        if message.kind is Kind.POST_UPGRADE:
            state.instance.post_upgrade(*args)
        else:
            state.instance.init(*args)

    result = executor.run(
        state, step, caller=Principal(message.caller), mode="init",
        instruction_limit=message.instruction_limit, payload_bytes=len(message.arg),
        stable_limit=executor.env.limits.stable_access_bytes_per_upgrade, charge=charge)
    state.keep_logs(result.logs + ([result.trap.message.encode()] if result.trap is not None else []),
                    message.time_ns)
    if result.trap is not None:
        state.instance = old_instance
    return Outcome(result.instructions, trap=result.trap, heap_bytes=state.heap_bytes)


def _unwrap(values: list[Any]) -> Any:
    return None if len(values) == 0 else values[0] if len(values) == 1 else tuple(values)
