"""The System API (`ic0`) that a canister's wasm imports: what each function does, where it may
be called, and what it costs.

Semantics and the allowed contexts are the interface specification's ("Overview of imports":
dfinity/portal docs/references/ic-interface-spec.md). A function called where the table does not
allow it traps with the replica's message (`"ic0_<name>" cannot be executed in <mode> mode`,
dfinity/ic rs/embedders/src/wasmtime_embedder/system_api.rs `error_for`, commit 5525f9e5).

Costs are the replica's: every call is charged its fixed overhead plus one instruction per byte
it copies, subtracted from the same counter that the instrumented module decrements
(rs/embedders/src/wasmtime_embedder/linker.rs `charge_for_system_api_call`, commit 6b857d45;
overheads from rs/embedders/src/wasmtime_embedder/system_api_complexity.rs `overhead::new`,
commit 023cfe84). Bytes that leave the canister (reply, reject, call arguments) cost
BYTE_TRANSMISSION_COST_FACTOR = 50 instructions each (linker.rs).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import wasmtime
from wasmtime import _ffi  # the C API, for the counter global (see Meter)

from replica.engines import Callback, Callbacks, CanisterView, Execution, Kind, OutgoingCall
from replica.engines.wasm.memory import Heap, HeapAccessError
from replica.errors import ErrorCode, Reject, RejectCode
from replica.limits import Limits
from replica.stable_memory import StableMemory, StableMemoryError

if TYPE_CHECKING:
    from collections.abc import Iterator

BYTE_TRANSMISSION_COST_FACTOR = 50
LOG_CAPACITY_BYTES = 4096  # the canister log's default capacity (interface spec, canister logs)
MAX_CERTIFIED_DATA_BYTES = 32
MAX_PRINCIPAL_BYTES = 29
MAX_32BIT_STABLE_PAGES = 65_536  # 4 GiB: what the 32-bit stable API can address
_U64 = (1 << 64) - 1

# Where each function may be called (the spec's comment column). "*" is every context except
# the (start) function; "s" adds the (start) function.
_EVERYWHERE = "I G U RQ NRQ TQ CQ Ry Rt CRy CRt C CC F T"
_CONTEXTS: dict[str, str] = {
    "msg_arg_data_size": "I U RQ NRQ TQ CQ Ry CRy F",
    "msg_arg_data_copy": "I U RQ NRQ TQ CQ Ry CRy F",
    "msg_caller_size": _EVERYWHERE,
    "msg_caller_copy": _EVERYWHERE,
    "msg_reject_code": "Ry Rt CRy CRt C",
    "msg_reject_msg_size": "Rt CRt",
    "msg_reject_msg_copy": "Rt CRt",
    "msg_deadline": "U RQ NRQ CQ Ry Rt CRy CRt",
    "msg_reply_data_append": "U RQ NRQ TQ CQ Ry Rt CRy CRt",
    "msg_reply": "U RQ NRQ TQ CQ Ry Rt CRy CRt",
    "msg_reject": "U RQ NRQ TQ CQ Ry Rt CRy CRt",
    "msg_cycles_available": "U RQ Rt Ry",
    "msg_cycles_available128": "U RQ Rt Ry",
    "msg_cycles_refunded": "Rt Ry",
    "msg_cycles_refunded128": "Rt Ry",
    "msg_cycles_accept": "U RQ Rt Ry",
    "msg_cycles_accept128": "U RQ Rt Ry",
    "canister_self_size": _EVERYWHERE,
    "canister_self_copy": _EVERYWHERE,
    "canister_cycle_balance": _EVERYWHERE,
    "canister_cycle_balance128": _EVERYWHERE,
    "canister_liquid_cycle_balance128": _EVERYWHERE,
    "canister_status": _EVERYWHERE,
    "canister_version": _EVERYWHERE,
    "msg_method_name_size": "F",
    "msg_method_name_copy": "F",
    "accept_message": "F",
    "call_new": "U CQ Ry Rt CRy CRt T",
    "call_on_cleanup": "U CQ Ry Rt CRy CRt T",
    "call_data_append": "U CQ Ry Rt CRy CRt T",
    "call_with_best_effort_response": "U CQ Ry Rt CRy CRt T",
    "call_cycles_add": "U Ry Rt T",
    "call_cycles_add128": "U Ry Rt T",
    "call_perform": "U CQ Ry Rt CRy CRt T",
    "stable_size": _EVERYWHERE + " s",
    "stable_grow": _EVERYWHERE + " s",
    "stable_read": _EVERYWHERE + " s",
    "stable_write": _EVERYWHERE + " s",
    "stable64_size": _EVERYWHERE + " s",
    "stable64_grow": _EVERYWHERE + " s",
    "stable64_read": _EVERYWHERE + " s",
    "stable64_write": _EVERYWHERE + " s",
    "certified_data_set": "I G U Ry Rt T",
    "data_certificate_present": _EVERYWHERE,
    "data_certificate_size": "NRQ CQ",
    "data_certificate_copy": "NRQ CQ",
    "time": _EVERYWHERE,
    "global_timer_set": "I G U Ry Rt C T",
    "performance_counter": _EVERYWHERE + " s",
    "is_controller": _EVERYWHERE + " s",
    "in_replicated_execution": _EVERYWHERE + " s",
    "debug_print": _EVERYWHERE + " s",
    "trap": _EVERYWHERE + " s",
    "msg_caller_info_data_size": "U RQ NRQ CQ Ry Rt CRy CRt C CC F",
    "msg_caller_info_data_copy": "U RQ NRQ CQ Ry Rt CRy CRt C CC F",
    "msg_caller_info_signer_size": "U RQ NRQ CQ Ry Rt CRy CRt C CC F",
    "msg_caller_info_signer_copy": "U RQ NRQ CQ Ry Rt CRy CRt C CC F",
    "cycles_burn128": "I G U RQ Ry Rt C T",
    "env_var_count": _EVERYWHERE,
    "env_var_name_size": _EVERYWHERE,
    "env_var_name_copy": _EVERYWHERE,
    "env_var_name_exists": _EVERYWHERE,
    "env_var_value_size": _EVERYWHERE,
    "env_var_value_copy": _EVERYWHERE,
}
# Functions the IC provides whose facts this simulation does not have (the subnet's id and
# nodes, the root key, the fee of calls to other subnets' services): a module may import them;
# calling one traps and says so.
_NOT_SIMULATED = {
    "subnet_self_size": _EVERYWHERE, "subnet_self_copy": _EVERYWHERE,
    "root_key_size": "I G U RQ Ry Rt C T", "root_key_copy": "I G U RQ Ry Rt C T",
    "cost_http_request": _EVERYWHERE + " s", "cost_sign_with_ecdsa": _EVERYWHERE + " s",
    "cost_sign_with_schnorr": _EVERYWHERE + " s", "cost_vetkd_derive_key": _EVERYWHERE + " s",
}
_CONTEXTS.update(_NOT_SIMULATED)
_CONTEXTS.update({"cost_call": _EVERYWHERE + " s", "cost_create_canister": _EVERYWHERE + " s",
                  "subnet_self_node_count": _EVERYWHERE})
_ALLOWED = {name: frozenset(codes.split()) for name, codes in _CONTEXTS.items()}

# Fixed overhead per call in instructions (system_api_complexity.rs, overhead::new).
_OVERHEAD: dict[str, int] = {
    "accept_message": 500, "call_cycles_add": 500, "call_cycles_add128": 500, "call_data_append": 500,
    "call_new": 1_500, "call_on_cleanup": 500, "call_perform": 5_000, "canister_cycle_balance": 500,
    "canister_cycle_balance128": 500, "canister_liquid_cycle_balance128": 500,
    "canister_self_copy": 500, "canister_self_size": 500, "canister_status": 500,
    "canister_version": 500, "certified_data_set": 500, "data_certificate_copy": 500,
    "data_certificate_present": 500, "data_certificate_size": 500, "debug_print": 100,
    "global_timer_set": 500, "is_controller": 1_000, "msg_arg_data_copy": 500, "msg_arg_data_size": 500,
    "msg_caller_copy": 500, "msg_caller_size": 500, "msg_cycles_accept": 500, "msg_cycles_accept128": 500,
    "msg_cycles_available": 500, "msg_cycles_available128": 500, "msg_cycles_refunded": 500,
    "msg_cycles_refunded128": 500, "msg_method_name_copy": 500, "msg_method_name_size": 500,
    "msg_reject_code": 500, "msg_reject_msg_copy": 500, "msg_reject_msg_size": 500, "msg_reject": 500,
    "msg_reply_data_append": 500, "msg_reply": 500, "performance_counter": 200, "stable_grow": 500,
    "stable_read": 20, "stable_size": 20, "stable_write": 20, "stable64_grow": 500, "stable64_read": 20,
    "stable64_size": 20, "stable64_write": 20, "time": 500, "trap": 500,
    "cycles_burn128": 100,  # CYCLES_BURN in overhead::old; overhead::new has no entry at 023cfe84
    # Not in the overhead table at 023cfe84: charged like their neighbours.
    "msg_deadline": 500, "call_with_best_effort_response": 500, "in_replicated_execution": 500,
    "msg_caller_info_data_size": 500, "msg_caller_info_data_copy": 500, "msg_caller_info_signer_size": 500,
    "msg_caller_info_signer_copy": 500, "env_var_count": 500, "env_var_name_size": 500, "env_var_name_copy": 500,
    "env_var_name_exists": 500, "env_var_value_size": 500, "env_var_value_copy": 500,
    "cost_call": 500, "cost_create_canister": 500, "subnet_self_node_count": 500,
    **{name: 500 for name in _NOT_SIMULATED},
}

# The replica's name for each kind of execution, in its contract-violation messages.
_MODE_NAMES = {
    "s": "start", "I": "init", "G": "pre upgrade", "U": "update", "RQ": "replicated query",
    "NRQ": "non replicated query", "CQ": "composite query", "Ry": "reply callback",
    "CRy": "composite reply callback", "Rt": "reject callback", "CRt": "composite reject callback",
    "C": "cleanup", "CC": "composite cleanup", "F": "inspect message",
}


# The spec's context code of each kind of execution, (replicated, non-replicated); callbacks
# and cleanups of a composite query are the non-replicated ones.
_CONTEXT_CODES = {
    Kind.START: ("s", "s"), Kind.INIT: ("I", "I"), Kind.POST_UPGRADE: ("I", "I"), Kind.PRE_UPGRADE: ("G", "G"),
    Kind.UPDATE: ("U", "U"), Kind.QUERY: ("RQ", "NRQ"), Kind.COMPOSITE_QUERY: ("CQ", "CQ"),
    Kind.REPLY: ("Ry", "CRy"), Kind.REJECT: ("Rt", "CRt"), Kind.CLEANUP: ("C", "CC"),
    Kind.INSPECT_MESSAGE: ("F", "F"), Kind.HEARTBEAT: ("T", "T"), Kind.GLOBAL_TIMER: ("T", "T"),
}


def context_code(execution: Execution) -> str:
    """The spec's context code of an execution (the key into the allowed-contexts table)."""
    return _CONTEXT_CODES[execution.kind][0 if execution.replicated else 1]


class ExecutionTrap(Exception):
    """Raised by a System API function to end the execution with a trap."""

    def __init__(self, reject: Reject):
        super().__init__(reject.message)
        self.reject = reject


@dataclass
class _PendingCall:
    callee: bytes
    method: str
    callbacks: Callbacks
    arg: bytearray = field(default_factory=bytearray)
    cycles: int = 0


class Meter:
    """The instruction counter of one execution: the instrumented module's exported global,
    counting down from the limit, which System API charges decrement too.

    The global is read and written through wasmtime's C API directly (wasmtime-py's own
    `Global.set_value` looks the type up on every call, which alone took ~10 us per System API
    call); the value is a plain i64, so nothing else is needed."""

    def __init__(self, store: wasmtime.Store, counter: wasmtime.Global):
        self._context = store._context()
        self._global = ctypes.byref(counter._global)
        self._raw = _ffi.wasmtime_val_t()
        self._raw.kind = _ffi.WASMTIME_I64.value
        self._raw_ref = ctypes.byref(self._raw)
        self.limit = 0

    def _get(self) -> int:
        _ffi.wasmtime_global_get(self._context, self._global, self._raw_ref)
        return self._raw.of.i64

    def _set(self, value: int) -> None:
        self._raw.kind = _ffi.WASMTIME_I64.value
        self._raw.of.i64 = value
        error = _ffi.wasmtime_global_set(self._context, self._global, self._raw_ref)
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)

    def start(self, limit: int) -> None:
        self.limit = limit
        self._set(limit)

    @property
    def used(self) -> int:
        return min(self.limit, self.limit - self._get())

    def charge(self, instructions: int) -> bool:
        """Subtracts `instructions`; False when the counter went below zero (out of instructions)."""
        remaining = self._get()
        if remaining < 0:
            return False
        remaining -= instructions
        self._set(remaining)
        return remaining >= 0


class SystemApi:
    """The `ic0` functions of one canister instance. `begin` prepares it for an execution and
    `end` hands over what the execution produced."""

    def __init__(self, stable: StableMemory, wasm64: bool, limits: Limits):
        self.stable = stable
        self.wasm64 = wasm64
        self.limits = limits
        self._reset(Execution(Kind.START, 0, 0), None)

    def attach(self, heap: Heap, meter: Meter) -> None:
        """Connects the instance's memory and counter, which exist once it is instantiated."""
        self.heap = heap
        self.meter = meter

    def _reset(self, execution: Execution, view: CanisterView | None) -> None:
        self.execution = execution
        self.view = view
        self.code = context_code(execution)
        self.mode_name = {Kind.HEARTBEAT: "heartbeat", Kind.GLOBAL_TIMER: "global timer"}.get(execution.kind) \
            or _MODE_NAMES[self.code]
        self.replied = execution.replied
        self.reply_data = bytearray()
        self.reply: bytes | None = None
        self.reject: Reject | None = None
        self.pending: _PendingCall | None = None
        self.calls: list[OutgoingCall] = []
        self.cycles_available = execution.cycles_available
        self.cycles_accepted = 0
        self.cycles_sent = 0
        self.cycles_burned = 0
        self.certified_data: bytes | None = None
        self.global_timer_ns: int | None = None
        self.message_accepted = False
        self.logs: list[bytes] = []
        self.log_bytes = 0
        self.stable_accessed = 0
        self.stable_dirty: set[int] = set()  # 4 KiB stable pages written by this execution
        # Upgrades may touch more stable memory than messages (the IC's resource limits).
        self.stable_access_limit = (self.limits.stable_access_bytes_per_upgrade
                                    if execution.kind in (Kind.PRE_UPGRADE, Kind.POST_UPGRADE)
                                    else self.limits.stable_access_bytes_per_message)

    def begin(self, execution: Execution, view: CanisterView) -> None:
        self._reset(execution, view)

    # --- helpers -----------------------------------------------------------------------------
    @property
    def _canister(self) -> str:
        from cdk.principal import Principal  # the text form is only needed in messages

        return Principal(self.view.canister_id).to_text() if self.view else "(starting)"

    def _trap(self, code: ErrorCode, message: str) -> ExecutionTrap:
        return ExecutionTrap(Reject.of(code, message))

    def _violation(self, message: str) -> ExecutionTrap:
        return self._trap(ErrorCode.CANISTER_CONTRACT_VIOLATION,
                          f"Canister {self._canister} violated contract: {message}")

    def _enter(self, name: str, copied_bytes: int = 0) -> None:
        """Checks that `name` may run here, then charges it (as the replica: charge first)."""
        if self.code not in _ALLOWED[name]:
            raise self._violation(f'"ic0_{name}" cannot be executed in {self.mode_name} mode')
        self._charge(_OVERHEAD[name] + copied_bytes)

    def _charge(self, instructions: int) -> None:
        if not self.meter.charge(instructions):
            raise self.out_of_instructions()

    def out_of_instructions(self) -> ExecutionTrap:
        return self._trap(ErrorCode.CANISTER_INSTRUCTION_LIMIT_EXCEEDED,
                          f"Canister {self._canister} exceeded the instruction limit for single message "
                          f"execution (the limit is {self.meter.limit} instructions); split the work into "
                          "several messages")

    def _read(self, name: str, src: int, size: int) -> bytes:
        try:
            return self.heap.read(src, size)
        except HeapAccessError as e:
            raise self._violation(f"ic0_{name}: {e}") from None

    def _write(self, name: str, dst: int, data: bytes) -> None:
        try:
            self.heap.write(dst, data)
        except HeapAccessError as e:
            raise self._violation(f"ic0_{name}: {e}") from None

    def _copy_out(self, name: str, blob: bytes, dst: int, offset: int, size: int) -> None:
        """The spec's `_copy` idiom: blob[offset:offset+size] into memory at dst."""
        self._enter(name, size)
        if offset + size > len(blob):
            raise self._violation(f"ic0_{name}: offset {offset} + size {size} exceeds the {len(blob)} bytes "
                                  "available")
        self._write(name, dst, blob[offset:offset + size])

    def _write_u128(self, name: str, dst: int, value: int) -> None:
        self._write(name, dst, value.to_bytes(16, "little"))

    def _not_replied(self, name: str) -> None:
        if self.replied:
            raise self._violation(f"ic0_{name}: the call is already replied")

    # --- message ------------------------------------------------------------------------------
    def msg_arg_data_size(self) -> int:
        self._enter("msg_arg_data_size")
        return len(self.execution.arg)

    def msg_arg_data_copy(self, dst: int, offset: int, size: int) -> None:
        self._copy_out("msg_arg_data_copy", self.execution.arg, dst, offset, size)

    def msg_caller_size(self) -> int:
        self._enter("msg_caller_size")
        return len(self.execution.caller)

    def msg_caller_copy(self, dst: int, offset: int, size: int) -> None:
        self._copy_out("msg_caller_copy", self.execution.caller, dst, offset, size)

    def msg_reject_code(self) -> int:
        self._enter("msg_reject_code")
        return self.execution.reject_code

    def msg_reject_msg_size(self) -> int:
        self._enter("msg_reject_msg_size")
        return len(self.execution.reject_message.encode())

    def msg_reject_msg_copy(self, dst: int, offset: int, size: int) -> None:
        self._copy_out("msg_reject_msg_copy", self.execution.reject_message.encode(), dst, offset, size)

    def msg_deadline(self) -> int:
        self._enter("msg_deadline")
        return self.execution.deadline_ns

    def msg_reply_data_append(self, src: int, size: int) -> None:
        self._enter("msg_reply_data_append", BYTE_TRANSMISSION_COST_FACTOR * size)
        self._not_replied("msg_reply_data_append")
        limit = self.execution.reply_limit
        if len(self.reply_data) + size > limit:
            raise self._violation(f"ic0.msg_reply_data_append: application payload size "
                                  f"({len(self.reply_data) + size}) cannot be larger than {limit}")
        self.reply_data += self._read("msg_reply_data_append", src, size)

    def msg_reply(self) -> None:
        self._enter("msg_reply")
        self._not_replied("msg_reply")
        self.replied = True
        self.reply = bytes(self.reply_data)

    def msg_reject(self, src: int, size: int) -> None:
        self._enter("msg_reject", BYTE_TRANSMISSION_COST_FACTOR * size)
        self._not_replied("msg_reject")
        message = self._read("msg_reject", src, size).decode("utf-8", errors="replace")
        self.replied = True
        self.reject = Reject(RejectCode.CANISTER_REJECT, message, None)

    # --- cycles -------------------------------------------------------------------------------
    def msg_cycles_available(self) -> int:
        self._enter("msg_cycles_available")
        return min(self.cycles_available, _U64)

    def msg_cycles_available128(self, dst: int) -> None:
        self._enter("msg_cycles_available128")
        self._write_u128("msg_cycles_available128", dst, self.cycles_available)

    def msg_cycles_refunded(self) -> int:
        self._enter("msg_cycles_refunded")
        return min(self.execution.cycles_refunded, _U64)

    def msg_cycles_refunded128(self, dst: int) -> None:
        self._enter("msg_cycles_refunded128")
        self._write_u128("msg_cycles_refunded128", dst, self.execution.cycles_refunded)

    def _accept(self, amount: int) -> int:
        taken = min(amount, self.cycles_available)
        self.cycles_available -= taken
        self.cycles_accepted += taken
        return taken

    def msg_cycles_accept(self, max_amount: int) -> int:
        self._enter("msg_cycles_accept")
        return self._accept(max_amount)

    def msg_cycles_accept128(self, high: int, low: int, dst: int) -> None:
        self._enter("msg_cycles_accept128")
        self._write_u128("msg_cycles_accept128", dst, self._accept((high << 64) | low))

    def _balance(self) -> int:
        assert self.view is not None
        return self.view.cycle_balance + self.cycles_accepted - self.cycles_sent - self.cycles_burned

    def canister_cycle_balance(self) -> int:
        self._enter("canister_cycle_balance")
        return min(self._balance(), _U64)

    def canister_cycle_balance128(self, dst: int) -> None:
        self._enter("canister_cycle_balance128")
        self._write_u128("canister_cycle_balance128", dst, self._balance())

    def canister_liquid_cycle_balance128(self, dst: int) -> None:
        self._enter("canister_liquid_cycle_balance128")
        self._write_u128("canister_liquid_cycle_balance128", dst, self._balance())

    def cycles_burn128(self, high: int, low: int, dst: int) -> None:
        """Burns up to the amount (never more than the balance; the IC also keeps the freezing
        reserve, which the engine does not know) and writes what it burned."""
        self._enter("cycles_burn128")
        burned = min((high << 64) | low, max(0, self._balance()))
        self.cycles_burned += burned
        self._write_u128("cycles_burn128", dst, burned)

    # --- the canister -------------------------------------------------------------------------
    def canister_self_size(self) -> int:
        self._enter("canister_self_size")
        return len(self.view.canister_id) if self.view else 0

    def canister_self_copy(self, dst: int, offset: int, size: int) -> None:
        self._copy_out("canister_self_copy", self.view.canister_id if self.view else b"", dst, offset, size)

    def canister_status(self) -> int:
        self._enter("canister_status")
        return {"running": 1, "stopping": 2, "stopped": 3}[self.view.status if self.view else "running"]

    def canister_version(self) -> int:
        self._enter("canister_version")
        return self.view.version if self.view else 0

    def msg_method_name_size(self) -> int:
        self._enter("msg_method_name_size")
        return len(self.execution.method.encode())

    def msg_method_name_copy(self, dst: int, offset: int, size: int) -> None:
        self._copy_out("msg_method_name_copy", self.execution.method.encode(), dst, offset, size)

    def accept_message(self) -> None:
        self._enter("accept_message")
        if self.message_accepted:
            raise self._violation("ic0.accept_message: the function was already called.")
        self.message_accepted = True

    # Callers here are never principals of canister signatures, so there is no caller info.
    def msg_caller_info_data_size(self) -> int:
        self._enter("msg_caller_info_data_size")
        return 0

    def msg_caller_info_data_copy(self, dst: int, offset: int, size: int) -> None:
        self._copy_out("msg_caller_info_data_copy", b"", dst, offset, size)

    def msg_caller_info_signer_size(self) -> int:
        self._enter("msg_caller_info_signer_size")
        return 0

    def msg_caller_info_signer_copy(self, dst: int, offset: int, size: int) -> None:
        self._copy_out("msg_caller_info_signer_copy", b"", dst, offset, size)

    # Canister settings here have no environment variables (canister_status reports none).
    def env_var_count(self) -> int:
        self._enter("env_var_count")
        return 0

    def env_var_name_size(self, index: int) -> int:
        self._enter("env_var_name_size")
        raise self._violation(f"ic0.env_var_name_size: index {index} is out of bounds (0 variables)")

    def env_var_name_copy(self, index: int, dst: int, offset: int, size: int) -> None:
        self._enter("env_var_name_copy")
        raise self._violation(f"ic0.env_var_name_copy: index {index} is out of bounds (0 variables)")

    def env_var_name_exists(self, src: int, size: int) -> int:
        self._enter("env_var_name_exists")
        self._read("env_var_name_exists", src, size)
        return 0

    def env_var_value_size(self, src: int, size: int) -> int:
        self._enter("env_var_value_size")
        raise self._violation(f"ic0.env_var_value_size: no environment variable "
                              f"{self._read('env_var_value_size', src, size)!r} is set")

    def env_var_value_copy(self, src: int, size: int, dst: int, offset: int, length: int) -> None:
        self._enter("env_var_value_copy")
        raise self._violation(f"ic0.env_var_value_copy: no environment variable "
                              f"{self._read('env_var_value_copy', src, size)!r} is set")

    # --- what things cost -----------------------------------------------------------------------
    def _fees(self, name: str) -> Any:
        if self.view is None or self.view.fees is None:
            raise self._trap(ErrorCode.CANISTER_TRAPPED,
                             f"Canister {self._canister} trapped: ic0.{name}: this execution was given no fees")
        return self.view.fees

    def cost_call(self, method_name_size: int, payload_size: int, dst: int) -> None:
        """What a canister must have above its freezing threshold to make a call: the call fee
        with its request bytes, and the reservation for the largest response and its callback,
        the callback at the wasm64 rate in a memory64 module (the IC's SystemApi::ic0_cost_call,
        rs/interfaces/src/execution_environment.rs, and CyclesAccountManager's
        prepayment_for_response_execution, which takes the execution mode)."""
        self._enter("cost_call")
        fees, n = self._fees("cost_call"), self.view.subnet_size
        cost = (fees.call_cycles(method_name_size + payload_size, n)
                + fees.execution_cycles(self.limits.instructions_per_update, n, self.wasm64)
                + fees.response_byte_cycles(self.limits.reply_bytes, n))
        self._write_u128("cost_call", dst, cost)

    def cost_create_canister(self, dst: int) -> None:
        self._enter("cost_create_canister")
        self._write_u128("cost_create_canister", dst,
                         self._fees("cost_create_canister").creation_cycles(self.view.subnet_size))

    def subnet_self_node_count(self) -> int:
        self._enter("subnet_self_node_count")
        return self.view.subnet_size if self.view else 0

    def _not_simulated(self, name: str) -> Callable[..., Any]:
        def function(*_: int) -> Any:
            self._enter(name)
            raise self._trap(ErrorCode.CANISTER_TRAPPED,
                             f"Canister {self._canister} trapped: ic0.{name} is not available on this simulated "
                             "IC (it has no subnet id, root key or fees of HTTP outcalls and threshold keys)")

        return function

    # --- calls --------------------------------------------------------------------------------
    def call_new(self, callee_src: int, callee_size: int, name_src: int, name_size: int,
                 reply_fun: int, reply_env: int, reject_fun: int, reject_env: int) -> None:
        self._enter("call_new", callee_size + name_size)
        callee = self._read("call_new", callee_src, callee_size)
        name = self._read("call_new", name_src, name_size)
        try:
            method = name.decode()
        except UnicodeDecodeError:
            raise self._violation("ic0.call_new: the method name is not valid UTF-8") from None
        # A call still under construction is discarded (interface spec, ic0.call_new).
        self.pending = _PendingCall(callee, method, Callbacks(Callback(reply_fun, reply_env),
                                                              Callback(reject_fun, reject_env)))

    def _pending_call(self, name: str) -> _PendingCall:
        if self.pending is None:
            raise self._violation(f"ic0.{name}: there is no call under construction; call ic0.call_new first")
        return self.pending

    def call_on_cleanup(self, fun: int, env: int) -> None:
        self._enter("call_on_cleanup")
        pending = self._pending_call("call_on_cleanup")
        if pending.callbacks.cleanup is not None:
            raise self._violation("ic0.call_on_cleanup: the cleanup callback was already set")
        pending.callbacks = Callbacks(pending.callbacks.reply, pending.callbacks.reject, Callback(fun, env))

    def call_data_append(self, src: int, size: int) -> None:
        self._enter("call_data_append", BYTE_TRANSMISSION_COST_FACTOR * size)
        self._pending_call("call_data_append").arg += self._read("call_data_append", src, size)

    def call_with_best_effort_response(self, timeout_seconds: int) -> None:
        self._enter("call_with_best_effort_response")
        self._pending_call("call_with_best_effort_response")

    def _add_cycles(self, name: str, amount: int) -> None:
        pending = self._pending_call(name)
        if amount > self._balance():
            raise self._trap(ErrorCode.CANISTER_OUT_OF_CYCLES,
                             f"Canister {self._canister} cannot attach {amount} cycles to a call: its balance "
                             f"is {self._balance()}; top it up with deposit_cycles")
        pending.cycles += amount
        self.cycles_sent += amount

    def call_cycles_add(self, amount: int) -> None:
        self._enter("call_cycles_add")
        self._add_cycles("call_cycles_add", amount)

    def call_cycles_add128(self, high: int, low: int) -> None:
        self._enter("call_cycles_add128")
        self._add_cycles("call_cycles_add128", (high << 64) | low)

    def call_perform(self) -> int:
        self._enter("call_perform")
        pending = self._pending_call("call_perform")
        self.pending = None
        self.calls.append(OutgoingCall(pending.callee, pending.method, bytes(pending.arg), pending.cycles,
                                       pending.callbacks))
        return 0

    # --- stable memory ------------------------------------------------------------------------
    def _stable_access(self, size: int) -> None:
        self.stable_accessed += size
        if self.stable_accessed > self.stable_access_limit:
            raise self._trap(ErrorCode.CANISTER_MEMORY_ACCESS_LIMIT_EXCEEDED,
                             f"Canister {self._canister} read and wrote {self.stable_accessed} bytes of stable "
                             f"memory in one message, over the limit of {self.stable_access_limit}; split the "
                             "work across several messages")

    def _stable_read(self, name: str, dst: int, offset: int, size: int) -> None:
        self._enter(name, size)
        self._stable_access(size)
        try:
            data = self.stable.read(offset, size)
        except StableMemoryError as e:
            raise self._trap(ErrorCode.CANISTER_TRAPPED, f"Canister {self._canister} trapped: {e}") from None
        self._write(name, dst, data)

    def _stable_write(self, name: str, offset: int, src: int, size: int) -> None:
        # The replica also charges each 4 KiB stable page this execution writes for the first time
        # (charge_for_stable_write in linker.rs; DEFAULT_DIRTY_PAGE_OVERHEAD, see replica/limits.py).
        pages = set(range(offset // 4096, (offset + size - 1) // 4096 + 1)) - self.stable_dirty if size else set()
        self._enter(name, size + len(pages) * self.limits.stable_dirty_page_instructions)
        self.stable_dirty |= pages
        self._stable_access(size)
        data = self._read(name, src, size)
        try:
            self.stable.write(offset, data)
        except StableMemoryError as e:
            raise self._trap(ErrorCode.CANISTER_TRAPPED, f"Canister {self._canister} trapped: {e}") from None

    def stable_size(self) -> int:
        self._enter("stable_size")
        if self.stable.pages > MAX_32BIT_STABLE_PAGES:
            raise self._trap(ErrorCode.CANISTER_TRAPPED,
                             f"Canister {self._canister} trapped: 32 bit stable memory api used on a memory "
                             "larger than 4GB; use the stable64 functions")
        return self.stable.pages

    def stable_grow(self, new_pages: int) -> int:
        self._enter("stable_grow")
        if self.stable.pages + new_pages > MAX_32BIT_STABLE_PAGES:
            return -1
        return self.stable.grow(new_pages)

    def stable_read(self, dst: int, offset: int, size: int) -> None:
        self._stable_read("stable_read", dst, offset, size)

    def stable_write(self, offset: int, src: int, size: int) -> None:
        self._stable_write("stable_write", offset, src, size)

    def stable64_size(self) -> int:
        self._enter("stable64_size")
        return self.stable.pages

    def stable64_grow(self, new_pages: int) -> int:
        self._enter("stable64_grow")
        return self.stable.grow(new_pages)

    def stable64_read(self, dst: int, offset: int, size: int) -> None:
        self._stable_read("stable64_read", dst, offset, size)

    def stable64_write(self, offset: int, src: int, size: int) -> None:
        self._stable_write("stable64_write", offset, src, size)

    # --- certification, time, timers ----------------------------------------------------------
    def certified_data_set(self, src: int, size: int) -> None:
        self._enter("certified_data_set", size)
        if size > MAX_CERTIFIED_DATA_BYTES:
            raise self._violation(f"ic0_certified_data_set failed because the passed data must be no larger "
                                  f"than {MAX_CERTIFIED_DATA_BYTES} bytes. Found {size} bytes.")
        self.certified_data = self._read("certified_data_set", src, size)

    def data_certificate_present(self) -> int:
        self._enter("data_certificate_present")
        return int(self.execution.certificate is not None)

    def data_certificate_size(self) -> int:
        self._enter("data_certificate_size")
        return len(self._certificate("data_certificate_size"))

    def data_certificate_copy(self, dst: int, offset: int, size: int) -> None:
        self._copy_out("data_certificate_copy", self._certificate("data_certificate_copy"), dst, offset, size)

    def _certificate(self, name: str) -> bytes:
        if self.execution.certificate is None:
            raise self._violation(f"ic0_{name}: no data certificate is available in this execution")
        return self.execution.certificate

    def time(self) -> int:
        self._enter("time")
        return self.execution.time_ns

    def global_timer_set(self, timestamp: int) -> int:
        self._enter("global_timer_set")
        previous = self.global_timer_ns if self.global_timer_ns is not None else (
            self.view.global_timer_ns if self.view else 0)
        self.global_timer_ns = timestamp
        return previous

    def performance_counter(self, counter_type: int) -> int:
        self._enter("performance_counter")
        if counter_type == 0:
            return self.meter.used
        if counter_type == 1:
            return self.execution.context_instructions + self.meter.used
        raise self._violation(f"Error getting performance counter type {counter_type}")

    def is_controller(self, src: int, size: int) -> int:
        self._enter("is_controller", size)
        if size > MAX_PRINCIPAL_BYTES:
            raise self._violation(f"ic0.is_controller: {size} bytes is not a valid principal (at most "
                                  f"{MAX_PRINCIPAL_BYTES} bytes)")
        principal = self._read("is_controller", src, size)
        return int(self.view is not None and principal in self.view.controllers)

    def in_replicated_execution(self) -> int:
        self._enter("in_replicated_execution")
        return int(self.execution.replicated)

    # --- logs and traps -----------------------------------------------------------------------
    def _logging_bytes(self, size: int) -> int:
        """The replica's charge for adding `size` bytes to the canister log (linker.rs,
        `logging_charge_bytes`); the log is this execution's, counted from empty."""
        remaining = max(0, LOG_CAPACITY_BYTES - self.log_bytes)
        return 2 * min(size, LOG_CAPACITY_BYTES) + BYTE_TRANSMISSION_COST_FACTOR * min(size, remaining)

    def debug_print(self, src: int, size: int) -> None:
        self._enter("debug_print", self._logging_bytes(size))
        self._log(self._read("debug_print", src, size))

    def _log(self, message: bytes) -> None:
        self.logs.append(message)
        self.log_bytes += len(message)

    def trap(self, src: int, size: int) -> None:
        self._enter("trap", size + self._logging_bytes(size))
        message = self._read("trap", src, size)
        self._log(message)
        raise self._trap(ErrorCode.CANISTER_CALLED_TRAP,
                         f"Canister {self._canister} trapped explicitly: "
                         f"{message.decode('utf-8', errors='replace')}")

    # --- binding to wasmtime ------------------------------------------------------------------
    def imports(self) -> Iterator[tuple[str, wasmtime.FuncType, Callable[..., Any]]]:
        """(name, wasm type, host function) of every ic0 function, with the pointer width of this
        module (`I` is i64 in a memory64 module)."""
        for name, (params, results) in _signatures(self.wasm64).items():
            method = self._not_simulated(name) if name in _NOT_SIMULATED else getattr(self, name)
            yield name, wasmtime.FuncType(params, results), _bind(method, params, results)


def _signatures(wasm64: bool) -> dict[str, tuple[list[wasmtime.ValType], list[wasmtime.ValType]]]:
    i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
    ptr = i64 if wasm64 else i32
    table = {
        "msg_arg_data_size": ([], [ptr]), "msg_arg_data_copy": ([ptr] * 3, []),
        "msg_caller_size": ([], [ptr]), "msg_caller_copy": ([ptr] * 3, []),
        "msg_reject_code": ([], [i32]), "msg_reject_msg_size": ([], [ptr]),
        "msg_reject_msg_copy": ([ptr] * 3, []), "msg_deadline": ([], [i64]),
        "msg_reply_data_append": ([ptr] * 2, []), "msg_reply": ([], []), "msg_reject": ([ptr] * 2, []),
        "msg_cycles_available128": ([ptr], []), "msg_cycles_refunded128": ([ptr], []),
        "msg_cycles_accept128": ([i64, i64, ptr], []),
        "canister_self_size": ([], [ptr]), "canister_self_copy": ([ptr] * 3, []),
        "canister_cycle_balance128": ([ptr], []), "canister_liquid_cycle_balance128": ([ptr], []),
        "canister_status": ([], [i32]), "canister_version": ([], [i64]),
        "msg_method_name_size": ([], [ptr]), "msg_method_name_copy": ([ptr] * 3, []),
        "accept_message": ([], []),
        "call_new": ([ptr] * 8, []), "call_on_cleanup": ([ptr] * 2, []), "call_data_append": ([ptr] * 2, []),
        "call_with_best_effort_response": ([i32], []), "call_cycles_add128": ([i64, i64], []),
        "call_perform": ([], [i32]),
        "stable64_size": ([], [i64]), "stable64_grow": ([i64], [i64]), "stable64_write": ([i64] * 3, []),
        "stable64_read": ([i64] * 3, []),
        "certified_data_set": ([ptr] * 2, []), "data_certificate_present": ([], [i32]),
        "data_certificate_size": ([], [ptr]), "data_certificate_copy": ([ptr] * 3, []),
        "time": ([], [i64]), "global_timer_set": ([i64], [i64]), "performance_counter": ([i32], [i64]),
        "is_controller": ([ptr] * 2, [i32]), "in_replicated_execution": ([], [i32]),
        "debug_print": ([ptr] * 2, []), "trap": ([ptr] * 2, []),
        "msg_caller_info_data_size": ([], [ptr]), "msg_caller_info_data_copy": ([ptr] * 3, []),
        "msg_caller_info_signer_size": ([], [ptr]), "msg_caller_info_signer_copy": ([ptr] * 3, []),
        "cycles_burn128": ([i64, i64, ptr], []),
        "env_var_count": ([], [ptr]), "env_var_name_size": ([ptr], [ptr]), "env_var_name_copy": ([ptr] * 4, []),
        "env_var_name_exists": ([ptr] * 2, [i32]), "env_var_value_size": ([ptr] * 2, [ptr]),
        "env_var_value_copy": ([ptr] * 5, []),
        "subnet_self_size": ([], [ptr]), "subnet_self_copy": ([ptr] * 3, []), "subnet_self_node_count": ([], [i32]),
        "root_key_size": ([], [ptr]), "root_key_copy": ([ptr] * 3, []),
        "cost_call": ([i64, i64, ptr], []), "cost_create_canister": ([ptr], []),
        "cost_http_request": ([i64, i64, ptr], []), "cost_sign_with_ecdsa": ([ptr, ptr, i32, ptr], [i32]),
        "cost_sign_with_schnorr": ([ptr, ptr, i32, ptr], [i32]), "cost_vetkd_derive_key": ([ptr, ptr, i32, ptr], [i32]),
    }
    if not wasm64:  # only for 32-bit memories (interface spec)
        table.update({
            "msg_cycles_available": ([], [i64]), "msg_cycles_refunded": ([], [i64]),
            "msg_cycles_accept": ([i64], [i64]), "canister_cycle_balance": ([], [i64]),
            "call_cycles_add": ([i64], []), "stable_size": ([], [i32]), "stable_grow": ([i32], [i32]),
            "stable_write": ([i32] * 3, []), "stable_read": ([i32] * 3, []),
        })
    return table


def _bind(method: Callable[..., Any], params: list[wasmtime.ValType],
          results: list[wasmtime.ValType]) -> Callable[..., Any]:
    """Wraps `method` so that it sees unsigned integers (wasm passes i32/i64 as signed) and
    returns what wasmtime expects (a signed value of the result's width)."""
    masks = [0xFFFF_FFFF if p == wasmtime.ValType.i32() else _U64 for p in params]
    result_bits = (32 if results[0] == wasmtime.ValType.i32() else 64) if results else 0

    def host(*args: int) -> Any:
        value = method(*(a & m for a, m in zip(args, masks, strict=True)))
        if result_bits and value >= 1 << (result_bits - 1):
            value -= 1 << result_bits
        return value

    return host

