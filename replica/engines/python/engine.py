"""Runs executions of the engine interface (replica.engines) on a Python-class canister.

Arguments and replies are Candid bytes, decoded and encoded by the class's .did; instructions
are what the code reports to its meter (replica.cost_model), and a trap rolls the heap and the
stable memory back (replica.execution.Executor does both).
"""

from __future__ import annotations

from typing import Any

from cdk.candid import HeaderCache
from cdk.principal import Principal
from replica import heap
from replica.canister_state import CanisterState
from replica.engines import CanisterView, Execution, Kind, Outcome
from replica.execution import CanisterContext, Executor, decode_args, encode_reply
from replica.loader import LoadedClass


class PythonInstance:
    """A Python canister's code (the class instance in `state.instance`) seen as an engine
    instance: `execute` takes an `Execution` and returns its `Outcome`."""

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

    def execute(self, message: Execution, view: CanisterView) -> Outcome:
        if message.kind is not Kind.QUERY:
            raise ValueError(f"the Python engine runs {message.kind.value} executions through the subnet's "
                             "call contexts, not here")
        state = self.state
        method = state.loaded.interface.methods[message.method]  # type: ignore[union-attr]
        what = f"{state.id.to_text()}.{message.method}"

        def step() -> Any:
            args = decode_args(method.args, message.arg, what, self.candid_cache)
            value = getattr(state.instance, message.method)(*args)
            return encode_reply(method.rets, value, message.reply_limit, self.candid_cache)

        result = self.executor.run(
            state, step, caller=Principal(message.caller), context=None, mode="query",
            instruction_limit=message.instruction_limit, payload_bytes=len(message.arg),
            discard_state=True, charge=False)
        return Outcome(result.instructions, trap=result.trap, reply=result.value if result.trap is None else None,
                       heap_bytes=state.heap_bytes)

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
        state, step, caller=Principal(message.caller), context=None, mode="init",
        instruction_limit=message.instruction_limit, payload_bytes=len(message.arg),
        stable_limit=executor.env.limits.stable_access_bytes_per_upgrade, charge=charge)
    if result.trap is not None:
        state.instance = old_instance
    return Outcome(result.instructions, trap=result.trap, heap_bytes=state.heap_bytes)
