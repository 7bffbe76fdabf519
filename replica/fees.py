"""Cycle fee schedules of the IC, as dated data.

Fees are quoted for a 13-node application subnet; on an n-node subnet every fee is scaled by
n/13 (IC docs, "Cycles costs": "For a 34-node (fiduciary) subnet, costs scale as 34 * (cost / 13)").
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from replica.limits import GiB

REFERENCE_SUBNET_SIZE = 13
NS_PER_S = 1_000_000_000


# 1T cycles = 1 XDR (cycles are bought at that rate), about $1.37 (DESIGN.md, "IC facts used").
USD_PER_TRILLION_CYCLES = 1.37

# The IC charges wasm64 (memory64) canisters twice the per-instruction fee of wasm32 ones, for
# their bounds checks and larger working sets; the base fee per message is the same
# (WASM64_INSTRUCTION_COST_OVERHEAD and ten_update_instructions_execution_fee_wasm64 in dfinity/ic
# rs/config/src/subnet_config.rs at 002d5530aeb1ef1ed362d7f9c3c5529b8ec1cafe).
WASM64_INSTRUCTION_COST_OVERHEAD = 2

@dataclass(frozen=True)
class FeeSchedule:
    name: str
    effective: str  # ISO date the schedule took effect (or was documented)
    update_message_execution: int  # base fee per executed message (request or response)
    cycles_per_instruction: Fraction
    xnet_call: int  # per inter-canister call (request + response), paid by the caller
    xnet_byte: int  # per byte of request and response, paid by the caller
    ingress_message_reception: int  # per ingress message, paid by the receiving canister
    ingress_byte_reception: int
    gib_storage_per_second: int
    canister_creation: int

    # Integer arithmetic throughout (Fraction is too slow for per-message use): a fee in cycles
    # times subnet_size / 13, rounded down as the replica's integer cycle arithmetic does.
    def _scaled(self, cycles: int, subnet_size: int) -> int:
        return cycles * subnet_size // REFERENCE_SUBNET_SIZE

    def _per_instruction(self, instructions: int, base: int, subnet_size: int, wasm64: bool) -> int:
        rate = self.cycles_per_instruction
        numerator = rate.numerator * (WASM64_INSTRUCTION_COST_OVERHEAD if wasm64 else 1)
        return ((base * rate.denominator + numerator * instructions) * subnet_size
                // (rate.denominator * REFERENCE_SUBNET_SIZE))

    def execution_cycles(self, instructions: int, subnet_size: int = REFERENCE_SUBNET_SIZE,
                         wasm64: bool = False) -> int:
        """The fee for one execution of `instructions`; `wasm64` for a memory64 module."""
        return self._per_instruction(instructions, self.update_message_execution, subnet_size, wasm64)

    def instruction_cycles(self, instructions: int, subnet_size: int = REFERENCE_SUBNET_SIZE,
                           wasm64: bool = False) -> int:
        return self._per_instruction(instructions, 0, subnet_size, wasm64)

    def call_cycles(self, request_bytes: int, subnet_size: int = REFERENCE_SUBNET_SIZE) -> int:
        return self._scaled(self.xnet_call + self.xnet_byte * request_bytes, subnet_size)

    def response_byte_cycles(self, response_bytes: int, subnet_size: int = REFERENCE_SUBNET_SIZE) -> int:
        return self._scaled(self.xnet_byte * response_bytes, subnet_size)

    def ingress_cycles(self, message_bytes: int, subnet_size: int = REFERENCE_SUBNET_SIZE) -> int:
        return self._scaled(self.ingress_message_reception + self.ingress_byte_reception * message_bytes,
                            subnet_size)

    def storage_cycles(self, n_bytes: int, duration_ns: int, subnet_size: int = REFERENCE_SUBNET_SIZE) -> int:
        return (self.gib_storage_per_second * n_bytes * duration_ns * subnet_size
                // (GiB * NS_PER_S * REFERENCE_SUBNET_SIZE))

    def creation_cycles(self, subnet_size: int = REFERENCE_SUBNET_SIZE) -> int:
        return self._scaled(self.canister_creation, subnet_size)


# The schedule in force: dfinity/developer-docs docs/reference/cycles-costs.md "Cost table"
# (adapted from dfinity/portal docs/building-apps/essentials/gas-cost.mdx), 13-node column.
CURRENT_FEES = FeeSchedule(
    name="current",
    effective="2025-05-22",
    update_message_execution=5_000_000,
    cycles_per_instruction=Fraction(1),
    xnet_call=260_000,
    xnet_byte=1_000,
    ingress_message_reception=1_200_000,
    ingress_byte_reception=2_000,
    gib_storage_per_second=127_000,
    canister_creation=500_000_000_000,
)

# The schedule of 2024, under which yllama.oc's 0.168 TC/token was measured (July 2024).
# Execution: 590K per update and "Ten Update Instructions Execution" = 4 cycles, i.e. 0.4 cycles
# per instruction (forum.dfinity.org topic 19345, "Temporary Canister Cycles Balance Drop when
# upgrading a canister": 200B instructions reserved = 80_000_590_000 cycles; and the DESIGN.md
# fee facts). Calls, ingress and their byte fees: wiki.internetcomputer.org "Comparing Canister
# Cycles vs Performance Counter" (ingress -1.2M -1KiB*2K, call -260K -2KiB*1K, execution
# -5B/10*4, receiving execution -590K). Storage 127K per GiB-second and creation 100B: the IC
# docs' gas-cost table before the 2025 execution-fee change, which kept storage and raised
# creation to 500B.
FEES_2024 = FeeSchedule(
    name="2024",
    effective="2024-07-01",
    update_message_execution=590_000,
    cycles_per_instruction=Fraction(4, 10),
    xnet_call=260_000,
    xnet_byte=1_000,
    ingress_message_reception=1_200_000,
    ingress_byte_reception=2_000,
    gib_storage_per_second=127_000,
    canister_creation=100_000_000_000,
)

FEE_SCHEDULES = {s.name: s for s in (CURRENT_FEES, FEES_2024)}
