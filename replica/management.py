"""The management canister `aaaaa-aa`: creating, installing, configuring and funding canisters.

Methods and argument types follow the interface spec's ic.did (see management.did). Only a
canister's controllers may manage it; anyone may deposit cycles. `install_code` takes a wasm
module, raw or gzipped (replica.wasm_install), or names a Python canister class and version in its
`wasm_module` blob (replica.loader.ModuleRef); modules over 2 MiB are uploaded to the chunk store
and installed with `install_chunked_code` (replica.chunk_store).
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

from cdk.candid import CandidError, decode, encode
from cdk.principal import Principal
from replica import execution
from replica.api_types import IngressMessage, IngressRejected
from replica.canister_state import CanisterSettings, CanisterState
from replica.chunk_store import UPLOAD_CHUNK_INSTRUCTIONS
from replica.errors import ErrorCode, Reject, RejectError
from replica.loader import LoadedClass, ModuleRef, load_class
from replica.messages import CanisterOrigin, Request
from replica.wasm_install import install_wasm
from replica.wasm_module import is_wasm, read_module

if TYPE_CHECKING:
    from replica.subnet import Subnet

_INGRESS_ALLOWED = {
    "provisional_create_canister_with_cycles", "provisional_top_up_canister", "install_code",
    "update_settings", "start_canister", "stop_canister", "canister_status", "delete_canister",
    "deposit_cycles", "upload_chunk", "stored_chunks", "clear_chunk_store", "install_chunked_code",
}
_CONTROLLERS_ONLY = {"install_code", "update_settings", "start_canister", "stop_canister",
                     "canister_status", "delete_canister"}
# The chunk store is the canister's own too: its controllers and the canister itself may use it.
_CHUNK_STORE_USERS_ONLY = {"upload_chunk", "stored_chunks", "clear_chunk_store"}


class ManagementCanister:
    def __init__(self, subnet: Subnet):
        self.subnet = subnet
        self.queue: deque[Request] = deque()
        self.stopping: dict[Principal, list[Request]] = {}

    def check_ingress(self, msg: IngressMessage) -> None:
        if msg.method == "create_canister":
            raise IngressRejected(400, ErrorCode.CANISTER_REJECTED_MESSAGE.text,
                                  "create_canister can only be called by canisters; from outside use "
                                  "provisional_create_canister_with_cycles", 4)
        if msg.method not in _INGRESS_ALLOWED:
            raise IngressRejected(400, ErrorCode.UNKNOWN_MANAGEMENT_MESSAGE.text,
                                  f"the management canister has no method '{msg.method}' callable by ingress "
                                  f"here; available: {', '.join(sorted(_INGRESS_ALLOWED))}", 4)

    def enqueue(self, request: Request) -> None:
        self.queue.append(request)

    def execute(self, r: int) -> None:
        while self.queue and self.queue[0].available_round <= r:
            request = self.queue.popleft()
            try:
                reply, rounds = self._dispatch(request)
                origin = request.origin
                if reply is _DEFERRED:
                    continue
                self.subnet.release(r + rounds - 1, self.subnet._reply_output(
                    origin, Principal.management(), reply, None, request.trace, 0))
            except RejectError as e:
                refund = request.cycles
                self.subnet.release(r, self.subnet._reply_output(
                    request.origin, Principal.management(), None, e.reject, request.trace, refund))

    def finish_stopping(self, r: int) -> None:
        for canister_id, waiting in list(self.stopping.items()):
            state = self.subnet.canisters.get(canister_id)
            if state is None or state.status != "stopping" or state.call_contexts:
                continue
            state.status = "stopped"
            del self.stopping[canister_id]
            for request in waiting:
                self.subnet.release(r, self.subnet._reply_output(
                    request.origin, Principal.management(), encode([], []), None, request.trace, 0))

    # --- dispatch ----------------------------------------------------------------------------
    def _dispatch(self, request: Request) -> tuple[Any, int]:
        method = self.subnet.management_interface.methods.get(request.method)
        if method is None:
            raise RejectError(ErrorCode.UNKNOWN_MANAGEMENT_MESSAGE,
                              f"the management canister has no method '{request.method}'")
        try:
            (args,) = decode(method.args, request.arg)
        except (CandidError, ValueError) as e:
            raise RejectError(ErrorCode.INVALID_MANAGEMENT_PAYLOAD,
                              f"the argument of {request.method} does not match ic.did: {e}") from None
        caller = request.sender
        target: CanisterState | None = None
        if "canister_id" in args:
            target = self.subnet.canister(args["canister_id"])
            if request.method in _CONTROLLERS_ONLY and caller not in target.settings.controllers:
                raise RejectError(ErrorCode.CANISTER_INVALID_CONTROLLER,
                                  f"Only controllers of canister {target.id.to_text()} can call ic00 method "
                                  f"{request.method}; ask a controller to add {caller.to_text()} with "
                                  "update_settings")
            if request.method in _CHUNK_STORE_USERS_ONLY:
                self._check_chunk_store_user(target, caller, request.method)
        value, rounds = getattr(self, "_" + request.method)(args, caller, request, target)
        if value is _DEFERRED:
            return value, rounds
        reply = [] if len(method.rets) == 0 else [value]
        self.subnet.changed = True
        return encode(method.rets, reply), rounds

    def _provisional_create_canister_with_cycles(self, args: dict, caller: Principal, request: Request,
                                                 _: Any) -> tuple[Any, int]:
        amount = args.get("amount")
        cycles = self.subnet.config.default_canister_cycles if amount is None else amount
        settings = self._settings(args.get("settings"), [caller])
        state = self.subnet.create_canister(settings.controllers, cycles, settings, args.get("specified_id"))
        return {"canister_id": state.id}, 1

    def _create_canister(self, args: dict, caller: Principal, request: Request, _: Any) -> tuple[Any, int]:
        if not isinstance(request.origin, CanisterOrigin):
            raise RejectError(ErrorCode.CANISTER_REJECTED_MESSAGE,
                              "create_canister can only be called by canisters; from outside use "
                              "provisional_create_canister_with_cycles")
        fee = self.subnet.fees.creation_cycles(self.subnet.subnet_size)
        if request.cycles < fee:
            raise RejectError(ErrorCode.INSUFFICIENT_CYCLES_FOR_CREATE_CANISTER,
                              f"create_canister needs at least {fee} cycles attached (the creation fee); "
                              f"{request.cycles} were attached")
        settings = self._settings(args.get("settings"), [caller])
        state = self.subnet.create_canister(settings.controllers, request.cycles - fee, settings)
        request.cycles = 0
        return {"canister_id": state.id}, 1

    def _provisional_top_up_canister(self, args: dict, caller: Principal, request: Request,
                                     target: CanisterState) -> tuple[Any, int]:
        target.cycles += args["amount"]
        return None, 1

    def _deposit_cycles(self, args: dict, caller: Principal, request: Request,
                        target: CanisterState) -> tuple[Any, int]:
        target.cycles += request.cycles
        request.cycles = 0
        return None, 1

    def _update_settings(self, args: dict, caller: Principal, request: Request,
                         target: CanisterState) -> tuple[Any, int]:
        new = self._settings(args["settings"], target.settings.controllers, base=target.settings)
        target.settings = new
        return None, 1

    def _start_canister(self, args: dict, caller: Principal, request: Request,
                        target: CanisterState) -> tuple[Any, int]:
        target.status = "running"
        for waiting in self.stopping.pop(target.id, []):
            self.subnet.release(self.subnet.round, self.subnet._reply_output(
                waiting.origin, Principal.management(), None,
                Reject.of(ErrorCode.CANISTER_STOPPED, f"stop_canister of {target.id.to_text()} was "
                          "cancelled by start_canister"), waiting.trace, 0))
        return None, 1

    def _stop_canister(self, args: dict, caller: Principal, request: Request,
                       target: CanisterState) -> tuple[Any, int]:
        if target.status == "stopped":
            return None, 1
        target.status = "stopping"
        request.arg = b""  # nothing else is needed to reply when the canister has stopped
        self.stopping.setdefault(target.id, []).append(request)
        return _DEFERRED, 1

    def _delete_canister(self, args: dict, caller: Principal, request: Request,
                         target: CanisterState) -> tuple[Any, int]:
        if target.status != "stopped":
            raise RejectError(ErrorCode.CANISTER_NOT_STOPPED,
                              f"Canister {target.id.to_text()} must be stopped before it is deleted; call "
                              "stop_canister first")
        target.stable.clear()
        del self.subnet.canisters[target.id]
        self.subnet.deleted.append(target.id)
        return None, 1

    def _canister_status(self, args: dict, caller: Principal, request: Request,
                         target: CanisterState) -> tuple[Any, int]:
        s = target.settings
        seconds_per_day = 86_400 * 10**9
        return {
            "status": {target.status: None},
            "ready_for_migration": False,
            "version": 0,
            "settings": {
                "controllers": list(s.controllers),
                "compute_allocation": 0,
                "memory_allocation": 0,
                "freezing_threshold": s.freezing_threshold_s,
                "reserved_cycles_limit": 0,
                "log_visibility": {"controllers": None},
                "wasm_memory_limit": s.heap_limit(self.subnet.limits),
                "wasm_memory_threshold": 0,
                "environment_variables": [],
            },
            "module_hash": target.module_hash,
            "memory_size": target.memory_bytes,
            "memory_metrics": {
                "wasm_memory_size": target.heap_bytes,
                "stable_memory_size": target.stable.size_bytes,
                "global_memory_size": 0,
                "wasm_binary_size": len(target.module.given) if target.module else 0,
                "custom_sections_size": sum(len(m.content) for m in target.module.metadata.values())
                if target.module else 0,
                "canister_history_size": 0,
                "wasm_chunk_store_size": target.chunk_store.size_bytes,
                "snapshots_size": 0,
            },
            "cycles": target.cycles,
            "reserved_cycles": 0,
            "idle_cycles_burned_per_day": self.subnet.fees.storage_cycles(
                target.memory_bytes, seconds_per_day, self.subnet.subnet_size),
            "query_stats": {"num_calls_total": 0, "num_instructions_total": 0,
                            "request_payload_bytes_total": 0, "response_payload_bytes_total": 0},
        }, 1

    def _install_code(self, args: dict, caller: Principal, request: Request,
                      target: CanisterState) -> tuple[Any, int]:
        return self._install(target, args["mode"], args["wasm_module"], args["arg"], caller, request)

    def _install(self, target: CanisterState, mode_arg: dict, wasm_module: bytes, arg: bytes, caller: Principal,
                 request: Request) -> tuple[Any, int]:
        """install_code and install_chunked_code: a wasm module (raw or gzipped) or a Python class."""
        (mode,) = mode_arg.keys()
        upgrade_options = (mode_arg.get("upgrade") or {}) if mode == "upgrade" else {}
        module = read_module(wasm_module) if is_wasm(wasm_module) else None
        loaded = load_class(ModuleRef.from_wasm_module(wasm_module)) if module is None else None
        if mode == "install" and (target.loaded is not None or target.module is not None):
            raise RejectError(ErrorCode.CANISTER_NON_EMPTY,
                              f"Canister {target.id.to_text()} cannot be installed because the canister is "
                              "not empty; install with mode reinstall or upgrade instead")
        if mode == "upgrade" and target.loaded is None and target.module is None:
            raise RejectError(ErrorCode.CANISTER_WASM_MODULE_NOT_FOUND,
                              f"Canister {target.id.to_text()} has no code to upgrade; install it first")
        self.subnet.require_cycles(target, self.subnet.fees.execution_cycles(
            self.subnet.limits.instructions_per_install, self.subnet.subnet_size))
        if module is not None:
            instructions = install_wasm(self.subnet, target, module, mode, arg, caller, upgrade_options)
        else:
            assert loaded is not None
            instructions = install(self.subnet, target, loaded, mode, arg, caller,
                                   bool(upgrade_options.get("skip_pre_upgrade")))
        request.trace.instructions += instructions
        return None, max(1, math.ceil(instructions / self.subnet.limits.instructions_per_slice))

    def _upload_chunk(self, args: dict, caller: Principal, request: Request,
                      target: CanisterState) -> tuple[Any, int]:
        # Charged before the store looks at the chunk, also for a chunk it already holds (the IC's order).
        cost = self.subnet.fees.execution_cycles(UPLOAD_CHUNK_INSTRUCTIONS, self.subnet.subnet_size)
        self.subnet.require_cycles(target, cost)
        target.cycles -= cost
        request.trace.instructions += UPLOAD_CHUNK_INSTRUCTIONS
        return {"hash": target.chunk_store.insert(args["chunk"])}, 1

    def _stored_chunks(self, args: dict, caller: Principal, request: Request,
                       target: CanisterState) -> tuple[Any, int]:
        return [{"hash": digest} for digest in target.chunk_store.hashes()], 1

    def _clear_chunk_store(self, args: dict, caller: Principal, request: Request,
                           target: CanisterState) -> tuple[Any, int]:
        target.chunk_store.clear()
        return None, 1

    def _install_chunked_code(self, args: dict, caller: Principal, request: Request, _: Any) -> tuple[Any, int]:
        """install_code with a module assembled from chunks of the store canister's chunk store
        (the target's own when store_canister is absent); the caller must control the target and
        be allowed to use the store."""
        target = self.subnet.canister(args["target_canister"])
        if caller not in target.settings.controllers:
            raise RejectError(ErrorCode.CANISTER_INVALID_CONTROLLER,
                              f"Only controllers of canister {target.id.to_text()} can call ic00 method "
                              f"install_chunked_code; ask a controller to add {caller.to_text()} with update_settings")
        store_id = args.get("store_canister")
        store = target if store_id is None else self.subnet.canister(store_id)
        self._check_chunk_store_user(store, caller, "install_chunked_code")
        module = store.chunk_store.assemble([c["hash"] for c in args["chunk_hashes_list"]], args["wasm_module_hash"])
        return self._install(target, args["mode"], module, args["arg"], caller, request)

    def _check_chunk_store_user(self, store: CanisterState, caller: Principal, method: str) -> None:
        if caller != store.id and caller not in store.settings.controllers:
            raise RejectError(ErrorCode.CANISTER_INVALID_CONTROLLER,
                              f"Only controllers of canister {store.id.to_text()} and the canister itself can use its "
                              f"chunk store (ic00 method {method}); ask a controller to add {caller.to_text()} "
                              "with update_settings")

    def _settings(self, given: dict | None, default_controllers: list[Principal],
                  base: CanisterSettings | None = None) -> CanisterSettings:
        given = given or {}
        base = base or CanisterSettings(controllers=list(default_controllers))
        controllers = given.get("controllers")
        if controllers is not None and len(controllers) > 10:
            raise RejectError(ErrorCode.INVALID_MANAGEMENT_PAYLOAD,
                              f"a canister can have at most 10 controllers, {len(controllers)} were given")
        freezing = given.get("freezing_threshold")
        memory_limit = given.get("wasm_memory_limit")
        return CanisterSettings(
            controllers=list(controllers) if controllers is not None else list(base.controllers),
            freezing_threshold_s=freezing if freezing is not None else base.freezing_threshold_s,
            wasm64=base.wasm64,
            wasm_memory_limit=(memory_limit or None) if memory_limit is not None else base.wasm_memory_limit,
        )


class _Deferred:
    """A management call that replies later (stop_canister replies once the canister stopped)."""


_DEFERRED = _Deferred()


def install(subnet: Subnet, target: CanisterState, loaded: LoadedClass, mode: str, arg: bytes,
            caller: Principal, skip_pre_upgrade: bool = False) -> int:
    """Installs, reinstalls or upgrades `target` to `loaded`, running its init or upgrade hooks
    as one execution that either fully happens or is fully rolled back. Returns its instructions."""
    if mode == "upgrade" and target.module is not None:
        raise RejectError(ErrorCode.CANISTER_CONTRACT_VIOLATION,
                          f"Canister {target.id.to_text()} runs a wasm module, which cannot be upgraded to a Python "
                          "canister class (their heaps have nothing in common); reinstall it instead")
    old_loaded, old_instance, old_arg = target.loaded, target.instance, target.install_arg
    old_chunks, old_pages = dict(target.stable.chunks), target.stable.pages
    if mode == "reinstall":
        target.stable.clear()
    if target.ic is None:
        target.ic = execution.CanisterContext(target, subnet)
    hook_types = loaded.interface.init_args

    def step() -> None:
        args = execution.decode_args(hook_types, arg, f"the init arguments of {loaded.ref.class_path}",
                                     subnet.candid_cache)
        if mode == "upgrade":
            if not skip_pre_upgrade:
                old_instance.pre_upgrade()
            target.instance = subnet.new_instance(target, loaded)
            target.instance.post_upgrade(*args)
        else:
            target.instance = subnet.new_instance(target, loaded)
            target.instance.init(*args)

    result = subnet.executor.run(
        target, step, caller=caller, context=None, mode="init",
        instruction_limit=subnet.limits.instructions_per_install, payload_bytes=len(arg),
        stable_limit=subnet.limits.stable_access_bytes_per_upgrade,
    )
    if result.trap is not None:
        target.loaded, target.instance, target.install_arg = old_loaded, old_instance, old_arg
        if mode == "reinstall":
            target.stable.chunks, target.stable.pages = old_chunks, old_pages
        raise RejectError(ErrorCode(int(result.trap.error_code[2:])) if result.trap.error_code else
                          ErrorCode.CANISTER_CALLED_TRAP,
                          f"install_code ({mode}) of {loaded.ref.class_path} failed and changed nothing: "
                          f"{result.trap.message}")
    target.loaded = loaded
    target.module = None
    target.install_arg = arg
    if mode != "upgrade":
        subnet.reject_call_contexts(target)
    return result.instructions
