"""Turns reported work into IC instructions and cycles, and aggregates costs into reports.

The canister code really runs on the host, but what it would cost on the IC is computed here
from the work it reports (cdk.meter.Work): multiply-accumulates by weight type and kernel,
other scalar ops, bytes copied, 4 KiB pages touched, plus instructions charged directly.
Every constant names its source; the calibration against published mainnet figures is in
tests/test_replica_cost_model.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from cdk.meter import Work
from replica.fees import CURRENT_FEES, REFERENCE_SUBNET_SIZE, FeeSchedule


class Kernel(str, Enum):
    WASM = "wasm"  # icllama's own wasm simd128 kernels (canisters/kernels), measured: KERNEL_COSTS_PATH
    GGML = "ggml"  # ggml's wasm simd128 kernels as llama_cpp_canister runs them, measured the same way
    SIMD = "simd"  # ggml's kernels described by one constant fitted to llama_cpp_canister (below)
    SCALAR = "scalar"  # plain wasm f32 loops, as yllama.oc runs (no SIMD), fitted to yllama.oc


# --- measured: instructions per MAC of real wasm kernels ---------------------------------------
# scripts/measure_kernel_costs.py compiles the kernels with zig cc, runs them instrumented as the IC
# instruments canisters, and writes this table (per weight type: decode and prefill instructions
# per MAC, and the instructions per activation element of quantizing a token's activations).
KERNEL_COSTS_PATH = Path(__file__).resolve().parent / "kernel_costs.json"
_MEASURED: dict = json.loads(KERNEL_COSTS_PATH.read_text())
WASM_INSTRUCTIONS_PER_MAC: dict[str, float] = {t: v["decode"] for t, v in _MEASURED["icllama"].items()}
GGML_INSTRUCTIONS_PER_MAC: dict[str, float] = {t: v["decode"] for t, v in _MEASURED["ggml"].items()}
# Every matmul quantizes its input first (ggml's vec_dot_type): instructions per activation element,
# the dearest of the kernels' quantizers (Q8_K's, for the k-quants)
QUANTIZE_INSTRUCTIONS_PER_ELEMENT = {
    Kernel.WASM: max(v["quantize_per_element"] for v in _MEASURED["icllama"].values()),
    Kernel.GGML: max(v["quantize_per_element"] for v in _MEASURED["ggml"].values()),
}


# --- instructions per multiply-accumulate ---------------------------------------------------
# SCALAR, fitted to ONE figure: yllama.oc (Llama 3 8B, scalar f32 matmuls) reports "22 cycles
# per multiply/accumulate" at the 2024 fee of 0.4 cycles per instruction (forum.dfinity.org
# topic 33037, "Llama 3 8b is running on-chain!", July 2024): 22 / 0.4 = 55 instructions per MAC.
# yllama.oc converts its F16 weights to f32 on load, so the scalar kernel's cost does not depend
# on the stored type: a plan that dequantizes at load computes in f32 whatever the file holds.
SCALAR_F32_INSTRUCTIONS_PER_MAC = 55.0

# SIMD, fitted to ONE figure: llama_cpp_canister runs Qwen2.5-0.5B q8_0 at 25 generated tokens
# per 40B-instruction update call (onicai/llama_cpp_canister README, per DESIGN.md), i.e. 1.6B
# instructions per token. From the model's shapes (24 layers, d_model 896, 14/2 heads of 64,
# d_ff 4864, 151936-token tied output) a token is 494.0M weight MACs + 4.3M attention MACs
# (context 100) + 2.53M other ops (10.1M instructions at 4 each), so
# (1.6e9 - 10.1e6) / 498.3e6 = 3.19 instructions per MAC.
# One value for every weight type: in ggml's wasm simd128 kernels (ggml/src/ggml-cpu/arch/wasm/
# quants.c of onicai/llama_cpp_onicai_fork) the inner dot product is the same for q8_0, q4_K,
# q5_K and q6_K (i16x8 extends, i32x4.dot_i16x8, i32x4 adds per 32 weights against q8
# activations), and unpacking the weight bits adds work that the published figures do not
# resolve: Qwen3-1.7B Q4_K_M (mostly q4_K with q6_K attn_v/ffn_down/output) is then predicted
# at 5.5B instructions per token against the published 6.4B (-13%; tests/test_replica_cost_model.py).
SIMD_INSTRUCTIONS_PER_MAC_ALL_TYPES = 3.19
SIMD_WEIGHT_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                     "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
SIMD_INSTRUCTIONS_PER_MAC: dict[str, float] = {t: SIMD_INSTRUCTIONS_PER_MAC_ALL_TYPES for t in SIMD_WEIGHT_TYPES}

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


class UnsupportedKernelType(ValueError):
    """No measured kernel for this weight type."""


def instructions_per_mac(weight_type: str, kernel: Kernel) -> float:
    if kernel is Kernel.WASM:
        try:
            return WASM_INSTRUCTIONS_PER_MAC[weight_type]
        except KeyError:
            raise UnsupportedKernelType(
                f"the wasm yblock has no kernel for {weight_type} weights (it multiplies "
                f"{', '.join(WASM_INSTRUCTIONS_PER_MAC)}); run the model on the Python engine (--engine python), "
                f"or re-quantize it to one of those types") from None
    if kernel is Kernel.GGML:
        if weight_type in ("F32", "F16") and weight_type not in GGML_INSTRUCTIONS_PER_MAC:
            # attention's float products: ggml's f16/f32 dot products (vec.cpp) are not measured; our
            # float kernels stand in (about 1% of a token's MACs at a context of 100)
            return WASM_INSTRUCTIONS_PER_MAC[weight_type]
        try:
            return GGML_INSTRUCTIONS_PER_MAC[weight_type]
        except KeyError:
            raise UnsupportedKernelType(
                f"ggml's wasm kernel for {weight_type} was not measured (measured: "
                f"{', '.join(GGML_INSTRUCTIONS_PER_MAC)}); see scripts/measure_kernel_costs.py") from None
    if kernel is Kernel.SIMD:
        try:
            return SIMD_INSTRUCTIONS_PER_MAC[weight_type]
        except KeyError:
            raise ValueError(
                f"no SIMD kernel cost for weight type {weight_type!r}; known types: "
                f"{', '.join(sorted(SIMD_INSTRUCTIONS_PER_MAC))}"
            ) from None
    return SCALAR_F32_INSTRUCTIONS_PER_MAC


def quantize_instructions(kernel: Kernel, n_elements: int) -> int:
    """Instructions to quantize `n_elements` activations before matmuls (none for the fitted kernels,
    whose constants include everything, nor for f32 scalar loops)."""
    return math.ceil(QUANTIZE_INSTRUCTIONS_PER_ELEMENT.get(kernel, 0.0) * n_elements)


def work_instructions(work: Work, kernel: Kernel = Kernel.WASM) -> int:
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
    kernel: Kernel = Kernel.WASM,
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
