"""The IC's reject codes and user-facing error codes, and the reject that carries them.

Numbers and the reject-code classification are the replica's own (dfinity/ic,
rs/types/error_types/src/lib.rs: `RejectCode`, `ErrorCode`, `impl From<ErrorCode> for RejectCode`);
the interface spec lists the reject codes under "Reject codes".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class RejectCode(IntEnum):
    SYS_FATAL = 1
    SYS_TRANSIENT = 2
    DESTINATION_INVALID = 3
    CANISTER_REJECT = 4
    CANISTER_ERROR = 5


class ErrorCode(IntEnum):
    """The IC0xxx codes this simulation produces; the leading digit is the reject code."""

    CANISTER_OUT_OF_CYCLES = 207
    CANISTER_NOT_FOUND = 301
    INSUFFICIENT_CYCLES_FOR_CREATE_CANISTER = 403
    CANISTER_REJECTED_MESSAGE = 406
    UNKNOWN_MANAGEMENT_MESSAGE = 407
    INVALID_MANAGEMENT_PAYLOAD = 408
    CANISTER_TRAPPED = 502
    CANISTER_CALLED_TRAP = 503
    CANISTER_CONTRACT_VIOLATION = 504
    CANISTER_INVALID_WASM = 505
    CANISTER_DID_NOT_REPLY = 506
    CANISTER_OUT_OF_MEMORY = 507
    CANISTER_STOPPED = 508
    CANISTER_STOPPING = 509
    CANISTER_NOT_STOPPED = 510
    CANISTER_INVALID_CONTROLLER = 512
    CANISTER_NON_EMPTY = 514
    CANISTER_INSTRUCTION_LIMIT_EXCEEDED = 522
    CANISTER_MEMORY_ACCESS_LIMIT_EXCEEDED = 524
    CANISTER_METHOD_NOT_FOUND = 536
    CANISTER_WASM_MODULE_NOT_FOUND = 537
    CANISTER_WASM_MEMORY_LIMIT_EXCEEDED = 539

    @property
    def text(self) -> str:
        return f"IC{self.value:04d}"

    @property
    def reject_code(self) -> RejectCode:
        # Matches the replica's mapping for every code above: the hundreds digit is the reject code.
        return RejectCode(self.value // 100)


@dataclass(frozen=True)
class Reject:
    """A rejected call as the caller sees it."""

    reject_code: RejectCode
    message: str
    error_code: str | None = None  # "IC0503"; None for a reject made by canister code itself

    @classmethod
    def of(cls, code: ErrorCode, message: str) -> Reject:
        return cls(code.reject_code, message, code.text)


class RejectError(Exception):
    """Raised inside the replica to turn the current operation into a reject."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(f"{code.text}: {message}")
        self.reject = Reject.of(code, message)
