"""Configuration of a simulated network."""

from __future__ import annotations

from dataclasses import dataclass, field

from replica.cost_model import Kernel
from replica.fees import CURRENT_FEES, FeeSchedule
from replica.limits import DEFAULT_LIMITS, Limits

# A canister id is its 8-byte big-endian index followed by 0x01 0x01 (interface spec,
# "Principals"). A fresh `dfx start` gives its first canister bkyz2-fmaaa-aaaaa-qaaaq-cai, whose
# bytes are 80 00 00 00 00 10 00 01 01 01: index 0x8000000000100001. Starting there makes the
# ids here the ones dfx users know.
DFX_LOCAL_FIRST_CANISTER_INDEX = 0x8000000000100001


@dataclass(frozen=True)
class NetworkConfig:
    round_duration_ns: int = 1_000_000_000  # "a round is about 1 s" (DESIGN.md, IC facts)
    subnet_size: int = 13  # nodes; fees scale with it
    fees: FeeSchedule = CURRENT_FEES
    limits: Limits = field(default=DEFAULT_LIMITS)
    kernel: Kernel = Kernel.SIMD  # matmul kernel the cost model assumes for canister code
    first_canister_index: int = DFX_LOCAL_FIRST_CANISTER_INDEX
    canister_range_size: int = 1 << 20  # a subnet's canister id range holds 2^20 ids
    default_canister_cycles: int = 100_000_000_000_000  # dfx's default for provisional creation
    genesis_time_ns: int | None = None  # virtual time of round 0; None = host time at creation
    # Host time one execution of Python canister code may take before it traps (a loop that never
    # ends would otherwise hold the network); far above any real message's time here.
    host_seconds_per_execution: float = 120.0
