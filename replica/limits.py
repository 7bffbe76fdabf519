"""Per-message and per-canister limits of the IC, as data.

Source for every value unless noted: the IC's resource-limits table (dfinity/portal
docs/building-apps/canister-management/resource-limits.mdx, mirrored in dfinity/developer-docs
docs/reference/cycles-costs.md "Resource limits", 2026), and ../shared/DESIGN.md "IC facts used".
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

WASM_PAGE_BYTES = 64 * KiB  # stable memory and wasm memory grow in 64 KiB pages (interface spec)
OS_PAGE_BYTES = 4 * KiB  # the replica tracks written ("dirty") memory in pages of this size


@dataclass(frozen=True)
class Limits:
    instructions_per_update: int = 40_000_000_000
    instructions_per_query: int = 5_000_000_000
    instructions_per_install: int = 300_000_000_000
    # DTS: "each round executes a slice of about 2B instructions" (DESIGN.md; the replica's
    # max_instructions_per_slice is 2B).
    instructions_per_slice: int = 2_000_000_000
    # A round runs inner loops: a message to a canister of the same subnet, and its response,
    # execute in the same round while the round has budget. New executions start only while a
    # scheduler thread has used less than instructions_per_round minus one slice (each thread has
    # its own budget; long executions hold at most scheduler_cores - 1 threads, round_schedule.rs),
    # and each execution costs the scheduler an overhead counted against it. Source: dfinity/ic
    # rs/config/src/subnet_config.rs (MAX_INSTRUCTIONS_PER_ROUND = 4B on application subnets:
    # "if messages are short ... about 2B instructions run in a round"; 4 scheduler cores;
    # INSTRUCTION_OVERHEAD_PER_EXECUTION = 2M).
    instructions_per_round: int = 4_000_000_000
    scheduler_cores: int = 4
    scheduler_overhead_per_execution: int = 2_000_000
    ingress_message_bytes: int = 2 * MiB
    xnet_message_bytes: int = 2 * MiB  # cross-subnet request or response
    same_subnet_request_bytes: int = 10 * MiB
    reply_bytes: int = 2 * MiB  # replicated execution
    query_reply_bytes: int = 3 * MiB
    wasm32_heap_bytes: int = 4 * GiB
    wasm64_heap_bytes: int = 6 * GiB
    stable_memory_bytes: int = 500 * GiB
    stable_access_bytes_per_message: int = 2 * GiB  # read + written by one message
    # Upgrades may touch more stable memory than a message: the IC allows 8 GiB per upgrade
    # (resource-limits table, "Stable memory accessed per upgrade").
    stable_access_bytes_per_upgrade: int = 8 * GiB
    ingress_expiry_max_ns: int = 5 * 60 * 1_000_000_000  # interface spec: at most 5 minutes ahead
    # Charged per 4 KiB page of stable memory an execution writes: dfinity/ic
    # rs/config/src/subnet_config.rs, DEFAULT_DIRTY_PAGE_OVERHEAD = 1_000 instructions
    # ("costs for each newly created dirty page in stable memory") on application subnets.
    stable_dirty_page_instructions: int = 1_000


DEFAULT_LIMITS = Limits()
