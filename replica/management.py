"""The management canister `aaaaa-aa`: creating, installing, configuring and funding canisters.

Methods and argument types follow the interface spec's ic.did (see management.did). Only a
canister's controllers may manage it; anyone may deposit cycles. `install_code` takes a wasm
module, raw or gzipped (replica.wasm_install), or names a Python canister class and version in its
`wasm_module` blob (replica.loader.ModuleRef); modules over 2 MiB are uploaded to the chunk store
and installed with `install_chunked_code` (replica.chunk_store).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import deque
from typing import TYPE_CHECKING, Any

from cdk.candid import CandidError, decode, encode
from cdk.principal import Principal
from replica.api_types import IngressMessage, IngressRejected, QueryResult
from replica.canister_log import RECORD_OVERHEAD_BYTES
from replica.canister_state import CanisterSettings, CanisterState, Visibility
from replica.chunk_store import UPLOAD_CHUNK_INSTRUCTIONS
from replica.engines import Execution, Kind
from replica.engines.python import engine as python_engine
from replica.errors import ErrorCode, Reject, RejectError
from replica.loader import LoadedClass, ModuleRef, load_class
from replica.management_state import history_size
from replica.messages import CanisterOrigin, Request
from replica.wasm_install import install_wasm
from replica.wasm_module import is_wasm, read_module

if TYPE_CHECKING:
    from replica.subnet import Subnet

# The interface spec says which methods users may call by ingress; canister_info, raw_rand and
# deposit_cycles are for canisters only, fetch_canister_logs only for non-replicated queries.
_INGRESS_ALLOWED = {
    "provisional_create_canister_with_cycles", "provisional_top_up_canister", "install_code",
    "update_settings", "start_canister", "stop_canister", "canister_status", "delete_canister",
    "upload_chunk", "stored_chunks", "clear_chunk_store", "install_chunked_code", "uninstall_code",
}
_QUERIES = {"canister_status", "fetch_canister_logs"}
_CONTROLLERS_ONLY = {"install_code", "update_settings", "start_canister", "stop_canister",
                     "delete_canister", "uninstall_code"}
MAX_HISTORY_CHANGES = 20  # the interface spec: at least the 20 most recent changes remain
MAX_ALLOWED_VIEWERS = 10  # the interface spec's longest allowed_viewers list
MAX_COMPUTE_ALLOCATION = 100  # percent
MAX_MEMORY_ALLOCATION = 2**48  # bytes (ic-management-canister-types 0.7.1, CanisterSettings)
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
        if msg.method == "fetch_canister_logs":
            raise IngressRejected(400, ErrorCode.CANISTER_REJECTED_MESSAGE.text,
                                  "fetch_canister_logs can only be called as a query (a non-replicated call); "
                                  "send it to the query endpoint", 4)
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

    # --- non-replicated queries ---------------------------------------------------------------
    def query(self, sender: Principal, method_name: str, arg: bytes) -> QueryResult:
        """canister_status and fetch_canister_logs sent to the query endpoint: answered from the
        current state by this node alone, changing nothing."""
        try:
            if method_name not in _QUERIES:
                raise RejectError(ErrorCode.CANISTER_METHOD_NOT_FOUND,
                                  f"the management canister answers only {' and '.join(sorted(_QUERIES))} as "
                                  f"queries; call {method_name} with an update")
            method = self.subnet.management_interface.methods[method_name]
            args = self._decode(method_name, arg)
            target = self.subnet.canister(args["canister_id"])
            if method_name == "canister_status":
                _check_status_reader(target, sender)
                value = self._status_of(target)
            else:
                value = self._logs_of(target, sender, args.get("filter"))
            return QueryResult(encode(method.rets, [value]), None, None, None)
        except RejectError as e:
            return QueryResult(None, int(e.reject.reject_code), e.reject.message, e.reject.error_code)

    def _logs_of(self, target: CanisterState, reader: Principal, filter_arg: dict | None) -> dict:
        if not target.settings.log_visibility.allows(reader, target.settings.controllers):
            raise RejectError(ErrorCode.CANISTER_REJECTED_MESSAGE,
                              f"Caller {reader.to_text()} is not allowed to query ic00 method fetch_canister_logs "
                              f"of canister {target.id.to_text()}: its log_visibility is "
                              f"{target.settings.log_visibility.kind}; a controller can change that with "
                              "update_settings")
        if filter_arg is None:
            records = target.log.select()
        else:
            ((by, bounds),) = filter_arg.items()
            records = target.log.select(by, bounds["start"], bounds["end"])
        return {"canister_log_records": [{"idx": r.idx, "timestamp_nanos": r.timestamp_nanos, "content": r.content}
                                         for r in records]}

    # --- dispatch ----------------------------------------------------------------------------
    def _decode(self, method_name: str, arg: bytes) -> dict:
        try:
            (args,) = decode(self.subnet.management_interface.methods[method_name].args, arg)
        except (CandidError, ValueError) as e:
            raise RejectError(ErrorCode.INVALID_MANAGEMENT_PAYLOAD,
                              f"the argument of {method_name} does not match ic.did: {e}") from None
        return args

    def _dispatch(self, request: Request) -> tuple[Any, int]:
        method = self.subnet.management_interface.methods.get(request.method)
        if method is None:
            raise RejectError(ErrorCode.UNKNOWN_MANAGEMENT_MESSAGE,
                              f"the management canister has no method '{request.method}'")
        args = self._decode(request.method, request.arg) if method.args else {}
        caller = request.sender
        target: CanisterState | None = None
        if "canister_id" in args:
            target = self.subnet.canister(args["canister_id"])
            if request.method == "canister_status" and caller != target.id:
                _check_status_reader(target, caller)
            if request.method in _CONTROLLERS_ONLY and caller not in target.settings.controllers:
                raise RejectError(ErrorCode.CANISTER_INVALID_CONTROLLER,
                                  f"Only controllers of canister {target.id.to_text()} can call ic00 method "
                                  f"{request.method}; ask a controller to add {caller.to_text()} with "
                                  "update_settings")
            if request.method in _CHUNK_STORE_USERS_ONLY:
                self._check_chunk_store_user(target, caller, request.method)
        if request.method == "fetch_canister_logs":
            raise RejectError(ErrorCode.CANISTER_REJECTED_MESSAGE,
                              "fetch_canister_logs can only be called by users as a query (a non-replicated call), "
                              "not by canisters nor as an update")
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
        self._record(state, request, args, {"creation": _creation_details(settings)}, bump=False)
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
        self._record(state, request, args, {"creation": _creation_details(settings)}, bump=False)
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
        if new.memory_allocation and new.memory_allocation < target.memory_bytes:
            raise RejectError(ErrorCode.INVALID_MANAGEMENT_PAYLOAD,
                              f"Canister {target.id.to_text()} was given a memory allocation of "
                              f"{new.memory_allocation} bytes but it already uses {target.memory_bytes}; give "
                              "it at least that much, or 0 for best-effort memory")
        target.settings = new
        target.log.shrink(new.log_memory_limit)
        if args["settings"].get("controllers") is not None:
            self._record(target, request, args, {"controllers_change": {"controllers": list(new.controllers)}})
        else:
            target.version += 1
        return None, 1

    def _start_canister(self, args: dict, caller: Principal, request: Request,
                        target: CanisterState) -> tuple[Any, int]:
        if target.status != "running":
            target.version += 1
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
        if target.status == "running":
            target.version += 1
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
        return self._status_of(target), 1

    def _status_of(self, target: CanisterState) -> dict:
        s = target.settings
        seconds_per_day = 86_400 * 10**9
        module = target.module
        metrics = {
            "wasm_memory_size": target.heap_bytes,
            "stable_memory_size": target.stable.size_bytes,
            "global_memory_size": 0,
            "wasm_binary_size": len(module.given) if module else 0,
            "custom_sections_size": sum(len(m.content) for m in module.metadata.values()) if module else 0,
            "canister_history_size": history_size(target),
            "wasm_chunk_store_size": target.chunk_store.size_bytes,
            "snapshots_size": 0,
            "log_memory_store_size": target.log.size_bytes,
        }
        return {
            "status": {target.status: None},
            "ready_for_migration": False,
            "version": target.version,
            "settings": {
                "controllers": list(s.controllers),
                "compute_allocation": s.compute_allocation,
                "memory_allocation": s.memory_allocation,
                "freezing_threshold": s.freezing_threshold_s,
                "reserved_cycles_limit": s.reserved_cycles_limit,
                "minimum_incoming_canister_call_cycles": s.minimum_incoming_canister_call_cycles,
                "log_visibility": _visibility_value(s.log_visibility),
                "log_memory_limit": s.log_memory_limit,
                "snapshot_visibility": _visibility_value(s.snapshot_visibility),
                "status_visibility": _visibility_value(s.status_visibility),
                "wasm_memory_limit": s.heap_limit(self.subnet.limits),
                "wasm_memory_threshold": s.wasm_memory_threshold,
                "environment_variables": [{"name": n, "value": v} for n, v in s.environment_variables],
            },
            "module_hash": target.module_hash,
            "memory_size": sum(metrics.values()),  # the IC's memory_size is the sum of its metrics
            "memory_metrics": metrics,
            "cycles": target.cycles,
            "reserved_cycles": 0,
            "idle_cycles_burned_per_day": self.subnet.fees.storage_cycles(
                target.memory_bytes, seconds_per_day, self.subnet.subnet_size),
            "query_stats": {"num_calls_total": 0, "num_instructions_total": 0,
                            "request_payload_bytes_total": 0, "response_payload_bytes_total": 0},
        }

    def _canister_info(self, args: dict, caller: Principal, request: Request,
                       target: CanisterState) -> tuple[Any, int]:
        if not isinstance(request.origin, CanisterOrigin):
            raise RejectError(ErrorCode.CANISTER_REJECTED_MESSAGE,
                              "canister_info can only be called by canisters (interface spec)")
        wanted = min(args.get("num_requested_changes") or 0, len(target.history))
        return {
            "total_num_changes": target.changes_total,
            "recent_changes": target.history[len(target.history) - wanted:],
            "module_hash": target.module_hash,
            "controllers": list(target.settings.controllers),
        }, 1

    def _raw_rand(self, args: dict, caller: Principal, request: Request, _: Any) -> tuple[Any, int]:
        if not isinstance(request.origin, CanisterOrigin):
            raise RejectError(ErrorCode.CANISTER_REJECTED_MESSAGE,
                              "raw_rand can only be called by canisters (interface spec)")
        # Fresh bytes no one knew when the call was made; the IC answers from the next round's
        # random tape, so the reply comes a round later.
        return os.urandom(32), 2

    def _uninstall_code(self, args: dict, caller: Principal, request: Request,
                        target: CanisterState) -> tuple[Any, int]:
        """The canister becomes empty: calls it has not answered are rejected, its code, heap,
        stable memory, certified data, timer and log are dropped; it keeps its cycles,
        controllers, settings, history, status and chunk store (interface spec, uninstall_code)."""
        self.subnet.reject_call_contexts(target)
        target.loaded = target.instance = target.module = None
        target.install_arg = b""
        target.heap_bytes = 0
        target.stable.clear()
        target.certified_data = b""
        target.global_timer_ns = 0
        target.log.clear()
        self._record(target, request, args, {"code_uninstall": None})
        return None, 1

    def _install_code(self, args: dict, caller: Principal, request: Request,
                      target: CanisterState) -> tuple[Any, int]:
        return self._install(target, args["mode"], args["wasm_module"], args["arg"], caller, request, args)

    def _install(self, target: CanisterState, mode_arg: dict, wasm_module: bytes, arg: bytes, caller: Principal,
                 request: Request, request_args: dict) -> tuple[Any, int]:
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
        first_new_log = target.log.next_idx
        if module is not None:
            instructions = install_wasm(self.subnet, target, module, mode, arg, caller, upgrade_options)
        else:
            assert loaded is not None
            instructions = install(self.subnet, target, loaded, mode, arg, caller,
                                   bool(upgrade_options.get("skip_pre_upgrade")))
        if mode == "reinstall":  # the interface spec: logs persist across upgrades, not reinstalls
            target.log.clear(before_idx=first_new_log)  # what the new code's init printed stays
        self._record(target, request, request_args, {"code_deployment": {
            "mode": {mode: None}, "module_hash": target.module_hash}})
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
        return self._install(target, args["mode"], module, args["arg"], caller, request, args)

    def _check_chunk_store_user(self, store: CanisterState, caller: Principal, method: str) -> None:
        if caller != store.id and caller not in store.settings.controllers:
            raise RejectError(ErrorCode.CANISTER_INVALID_CONTROLLER,
                              f"Only controllers of canister {store.id.to_text()} and the canister itself can use its "
                              f"chunk store (ic00 method {method}); ask a controller to add {caller.to_text()} "
                              "with update_settings")

    def _record(self, target: CanisterState, request: Request, args: dict, details: dict, bump: bool = True) -> None:
        """Adds a change to the canister's history (the newest MAX_HISTORY_CHANGES are kept), after
        counting it in the canister's version unless it is the creation (version 0)."""
        if bump:
            target.version += 1
        if isinstance(request.origin, CanisterOrigin):
            origin = {"from_canister": {"canister_id": request.sender,
                                        "canister_version": args.get("sender_canister_version")}}
        else:
            origin = {"from_user": {"user_id": request.sender}}
        target.history.append({"timestamp_nanos": self.subnet.time_ns(), "canister_version": target.version,
                               "origin": origin, "details": details})
        del target.history[:-MAX_HISTORY_CHANGES]
        target.changes_total += 1

    def _settings(self, given: dict | None, default_controllers: list[Principal],
                  base: CanisterSettings | None = None) -> CanisterSettings:
        """The settings `given` (ic.did canister_settings) over `base`, each checked against the
        interface's bounds; a bad value rejects the whole call and changes nothing."""
        given = given or {}
        base = base or CanisterSettings(controllers=list(default_controllers))
        controllers = given.get("controllers")
        if controllers is not None and len(controllers) > 10:
            raise RejectError(ErrorCode.INVALID_MANAGEMENT_PAYLOAD,
                              f"a canister can have at most 10 controllers, {len(controllers)} were given")
        _bounded(given, "compute_allocation", MAX_COMPUTE_ALLOCATION, "percent of a core")
        _bounded(given, "memory_allocation", MAX_MEMORY_ALLOCATION, "bytes")
        _bounded(given, "freezing_threshold", 2**64 - 1, "seconds")
        _bounded(given, "reserved_cycles_limit", 2**128 - 1, "cycles")
        _bounded(given, "minimum_incoming_canister_call_cycles", 2**128 - 1, "cycles")
        _bounded(given, "wasm_memory_limit", 2**48 - 1, "bytes")
        _bounded(given, "wasm_memory_threshold", 2**64 - 1, "bytes")
        log_memory_limit = given.get("log_memory_limit")
        if log_memory_limit is not None and log_memory_limit < RECORD_OVERHEAD_BYTES:
            raise RejectError(ErrorCode.INVALID_MANAGEMENT_PAYLOAD,
                              f"log_memory_limit {log_memory_limit} cannot hold a single log record; give at "
                              f"least {RECORD_OVERHEAD_BYTES} bytes (the default is 4096)")
        variables = base.environment_variables
        if given.get("environment_variables") is not None:
            variables = tuple((v["name"], v["value"]) for v in given["environment_variables"])
            names = [name for name, _ in variables]
            if len(set(names)) != len(names):
                raise RejectError(ErrorCode.INVALID_MANAGEMENT_PAYLOAD,
                                  "environment_variables names must be unique; "
                                  f"{sorted({n for n in names if names.count(n) > 1})} appear more than once")
        memory_limit = given.get("wasm_memory_limit")

        def pick(name: str, current: Any) -> Any:
            return given[name] if given.get(name) is not None else current

        return CanisterSettings(
            controllers=list(controllers) if controllers is not None else list(base.controllers),
            freezing_threshold_s=pick("freezing_threshold", base.freezing_threshold_s),
            wasm64=base.wasm64,
            wasm_memory_limit=(memory_limit or None) if memory_limit is not None else base.wasm_memory_limit,
            compute_allocation=pick("compute_allocation", base.compute_allocation),
            memory_allocation=pick("memory_allocation", base.memory_allocation),
            reserved_cycles_limit=pick("reserved_cycles_limit", base.reserved_cycles_limit),
            minimum_incoming_canister_call_cycles=pick("minimum_incoming_canister_call_cycles",
                                                       base.minimum_incoming_canister_call_cycles),
            log_visibility=_visibility(given, "log_visibility", base.log_visibility),
            log_memory_limit=pick("log_memory_limit", base.log_memory_limit),
            snapshot_visibility=_visibility(given, "snapshot_visibility", base.snapshot_visibility),
            status_visibility=_visibility(given, "status_visibility", base.status_visibility),
            wasm_memory_threshold=pick("wasm_memory_threshold", base.wasm_memory_threshold),
            environment_variables=variables,
        )


def _bounded(given: dict, name: str, maximum: int, unit: str) -> None:
    value = given.get(name)
    if value is not None and value > maximum:
        raise RejectError(ErrorCode.INVALID_MANAGEMENT_PAYLOAD,
                          f"{name} must be at most {maximum} {unit}; {value} was given")


def _visibility(given: dict, name: str, current: Visibility) -> Visibility:
    if given.get(name) is None:
        return current
    ((kind, listed),) = given[name].items()
    viewers = tuple(listed or ())
    if len(viewers) > MAX_ALLOWED_VIEWERS:
        raise RejectError(ErrorCode.INVALID_MANAGEMENT_PAYLOAD,
                          f"{name} allowed_viewers can list at most {MAX_ALLOWED_VIEWERS} principals, "
                          f"{len(viewers)} were given")
    return Visibility(kind, viewers)


def _visibility_value(visibility: Visibility) -> dict:
    if visibility.kind == "allowed_viewers":
        return {"allowed_viewers": list(visibility.viewers)}
    return {visibility.kind: None}


def _check_status_reader(target: CanisterState, reader: Principal) -> None:
    if not target.settings.status_visibility.allows(reader, target.settings.controllers):
        raise RejectError(ErrorCode.CANISTER_INVALID_CONTROLLER,
                          f"Only controllers of canister {target.id.to_text()} can call ic00 method canister_status "
                          f"(its status_visibility is {target.settings.status_visibility.kind}); ask a controller to "
                          f"add {reader.to_text()} with update_settings")


def _creation_details(settings: CanisterSettings) -> dict:
    # The IC hashes the environment variables as the HTTP interface hashes a map; this network
    # records the sha256 of their sorted name=value lines instead (documented in the README).
    variables = settings.environment_variables
    digest = hashlib.sha256("\n".join(f"{n}={v}" for n, v in sorted(variables)).encode()).digest()
    return {"controllers": list(settings.controllers), "environment_variables_hash": digest if variables else None}


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
    old_chunks, old_pages = dict(target.stable.chunks), target.stable.pages
    if mode == "reinstall":
        target.stable.clear()
    hook = Kind.POST_UPGRADE if mode == "upgrade" else Kind.INIT
    result = python_engine.install(target, loaded, subnet.executor, subnet.candid_cache, Execution(
        hook, subnet.limits.instructions_per_install, subnet.time_ns(), arg=arg, caller=caller.bytes),
        pre_upgrade=not skip_pre_upgrade)
    if result.trap is not None:
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
