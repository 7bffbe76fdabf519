"""Everything the subnet keeps about one canister."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from cdk.canister import Canister
from cdk.principal import Principal
from replica.canister_log import DEFAULT_LOG_MEMORY_LIMIT, CanisterLog
from replica.chunk_store import ChunkStore
from replica.engines.wasm.validation import CustomSection
from replica.limits import DEFAULT_LIMITS, Limits
from replica.loader import LoadedClass
from replica.messages import CallContext, Request, Response
from replica.stable_memory import StableMemory
from replica.wasm_module import CanisterModule

CanisterStatus = Literal["running", "stopping", "stopped"]
DEFAULT_FREEZING_THRESHOLD_S = 2_592_000  # 30 days: the interface spec's default freezing_threshold
DEFAULT_RESERVED_CYCLES_LIMIT = 5_000_000_000_000  # the interface's default reserved_cycles_limit


@dataclass(frozen=True)
class Visibility:
    """Who may read something of a canister (its log, status or snapshots), besides controllers."""

    kind: Literal["controllers", "public", "allowed_viewers"] = "controllers"
    viewers: tuple[Principal, ...] = ()  # under "allowed_viewers"

    def allows(self, reader: Principal, controllers: list[Principal]) -> bool:
        return (self.kind == "public" or reader in controllers
                or (self.kind == "allowed_viewers" and reader in self.viewers))


@dataclass
class CanisterSettings:
    controllers: list[Principal]
    freezing_threshold_s: int = DEFAULT_FREEZING_THRESHOLD_S
    wasm64: bool = False
    wasm_memory_limit: int | None = None  # heap bytes; None means the architecture's maximum
    # Kept and reported as given; this network guarantees every canister a core and memory anyway.
    compute_allocation: int = 0  # percent of a core
    memory_allocation: int = 0  # bytes; 0 is best-effort
    reserved_cycles_limit: int = DEFAULT_RESERVED_CYCLES_LIMIT
    minimum_incoming_canister_call_cycles: int = 0
    log_visibility: Visibility = Visibility()
    log_memory_limit: int = DEFAULT_LOG_MEMORY_LIMIT
    snapshot_visibility: Visibility = Visibility()
    status_visibility: Visibility = Visibility()
    wasm_memory_threshold: int = 0
    environment_variables: tuple[tuple[str, str], ...] = ()  # (name, value), names unique

    def heap_limit(self, limits: Limits = DEFAULT_LIMITS) -> int:
        hard = limits.wasm64_heap_bytes if self.wasm64 else limits.wasm32_heap_bytes
        return min(hard, self.wasm_memory_limit) if self.wasm_memory_limit else hard


@dataclass
class CanisterState:
    id: Principal
    settings: CanisterSettings
    cycles: int
    stable: StableMemory
    status: CanisterStatus = "running"
    loaded: LoadedClass | None = None
    instance: Canister | None = None
    module: CanisterModule | None = None  # the installed wasm module, for a wasm canister
    chunk_store: ChunkStore = field(default_factory=ChunkStore)
    install_arg: bytes = b""  # arg of the last install/upgrade; a restart replays post_upgrade with it
    heap_bytes: int = 0
    global_timer_ns: int = 0  # a wasm canister's timer (ic0.global_timer_set); 0 is inactive
    certified_data: bytes = b""  # a wasm canister's ic0.certified_data_set, published in the state tree
    version: int = 0  # canister_version: counts code, settings and status changes and update executions
    history: list[dict[str, Any]] = field(default_factory=list)  # the last changes, as ic.did `change`s
    changes_total: int = 0  # every change ever recorded, also those dropped from `history`
    log: CanisterLog = field(default_factory=CanisterLog)
    queue: deque[Request | Response] = field(default_factory=deque)
    call_contexts: dict[int, CallContext] = field(default_factory=dict)
    reserved_for_responses: dict[int, int] = field(default_factory=dict)  # call id -> cycles set aside
    next_id: int = 0
    free_round: int = 0  # first round in which the canister can start a new execution
    used_in_free_round: int = 0  # instructions already used in free_round
    storage_remainder_ns: int = 0
    restore_error: str | None = None  # why a restart could not rebuild the heap, if it failed
    ic: Any = None  # the runtime's IC handle, shared by every instance of this canister's code

    def keep_logs(self, messages: list[bytes], timestamp_nanos: int) -> None:
        """An execution's debug_print and trap messages, added to the canister's bounded log."""
        for message in messages:
            self.log.append(timestamp_nanos, message, self.settings.log_memory_limit)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    @property
    def memory_bytes(self) -> int:
        return self.heap_bytes + self.stable.size_bytes + self.chunk_store.size_bytes

    @property
    def module_hash(self) -> bytes | None:
        if self.module is not None:
            return self.module.module_hash
        return self.loaded.ref.module_hash if self.loaded is not None else None

    @property
    def metadata(self) -> dict[str, CustomSection]:
        """The installed code's icp:public/icp:private sections. A Python class has no custom
        sections, so it publishes its .did as public `candid:service`, as moc and dfx do."""
        if self.module is not None:
            return self.module.metadata
        if self.loaded is not None:
            return {"candid:service": CustomSection(True, self.loaded.did_text.encode())}
        return {}
