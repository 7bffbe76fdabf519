"""Instructions per multiply-accumulate of the wasm kernels (canisters/kernels), measured under the
replica's IC metering: the module built by zig cc is instrumented as the IC instruments canisters
(replica/engines/wasm/instrument.py, the IC's cost table), and the counter is read around each call.

    python -m benchmarks.bench_wasm_kernels            # all types, decode (1 token) and prefill (32)
    python -m benchmarks.bench_wasm_kernels --ggml     # also ggml's own wasm kernels (benchmarks/ggml_wasm.py)

The counts are deterministic (the same module and inputs always count the same), so one run is the
figure; nothing here is timed.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wasmtime
from gguf.constants import GGMLQuantizationType

from canisters.kernels.build import build_kernels_wasm
from canisters.kernels.wasm_kernels import WasmKernels
from replica.engines.wasm.instrument import COUNTER_EXPORT, instrument
from tests.synthetic_tensors import random_tensor_bytes

T = GGMLQuantizationType
WASM_TYPES = (T.F32, T.F16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q4_K, T.Q5_K, T.Q6_K)
# A matrix of Llama-3-8B's width: rows long enough that per-row overhead is what it is in a model
N_IN, N_ROWS = 4096, 64
PREFILL_TOKENS = 32
START = 1 << 62


def metered(wasm: bytes) -> WasmKernels:
    """The module instrumented as the IC does, with the imports the instrumentation adds."""
    out = instrument(wasm)
    config = wasmtime.Config()
    config.wasm_multi_memory = True
    engine = wasmtime.Engine(config)

    def imports(store: wasmtime.Store, module: wasmtime.Module) -> list:
        provided = []
        for item in module.imports:
            if (item.module, item.name) == ("__", "out_of_instructions"):
                def out_of_instructions() -> None:
                    raise RuntimeError("out of instructions")  # the counter starts at 2^62: never reached
                provided.append(wasmtime.Func(store, item.type, out_of_instructions))
            elif (item.module, item.name) == ("__", "try_grow_wasm_memory"):
                provided.append(wasmtime.Func(store, item.type, lambda result, _pages: result))
            else:
                raise ValueError(f"unexpected import {item.module}.{item.name} of the kernels module")
        return provided

    kernels = WasmKernels(out.wasm, imports, engine)
    kernels.exports[COUNTER_EXPORT].set_value(kernels.store, wasmtime.Val.i64(START))
    return kernels


def counted(kernels: WasmKernels, call) -> int:
    """The instructions `call()` executes, as the IC counts them."""
    counter = kernels.exports[COUNTER_EXPORT]
    counter.set_value(kernels.store, wasmtime.Val.i64(START))
    call()
    return START - counter.value(kernels.store)


@dataclass(frozen=True)
class KernelCost:
    weight_type: str
    decode_per_mac: float  # matmul of one token
    prefill_per_mac: float  # matmul of PREFILL_TOKENS tokens
    quantize_per_element: float  # icl_quantize_act, per activation element


def measure(kernels: WasmKernels, ggml_type: GGMLQuantizationType, n_in: int = N_IN, n_rows: int = N_ROWS,
            seed: int = 0) -> KernelCost:
    rng = np.random.default_rng(seed)
    raw = random_tensor_bytes(ggml_type, (n_in, n_rows), rng).reshape(n_rows, -1)
    per_mac = []
    quantize = 0.0
    for n_tokens in (1, PREFILL_TOKENS):
        x = rng.standard_normal((n_tokens, n_in)).astype(np.float32)
        xq = kernels.quantize_act(ggml_type.value, x)
        # the inputs are in memory now; count the calls alone (the harness writes the same offsets)
        quantize = counted(kernels, lambda x=x: kernels.quantize_act(ggml_type.value, x)) / x.size
        instructions = counted(kernels, lambda xq=xq, n=n_tokens: kernels.matmul(ggml_type.value, raw, n_in, xq, n))
        per_mac.append(instructions / (n_tokens * n_in * n_rows))
    return KernelCost(ggml_type.name, per_mac[0], per_mac[1], quantize)


def measure_all(types=WASM_TYPES) -> list[KernelCost]:
    with tempfile.TemporaryDirectory() as tmp:
        wasm = build_kernels_wasm(Path(tmp) / "kernels.wasm").read_bytes()
    kernels = metered(wasm)
    return [measure(kernels, t) for t in types]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ggml", action="store_true", help="also meter ggml's wasm simd128 dot products")
    args = parser.parse_args()
    print(f"measured under the IC's metering; matrix {N_IN} x {N_ROWS}, prefill {PREFILL_TOKENS} tokens")
    print(f"{'type':6} {'decode instr/MAC':>17} {'prefill instr/MAC':>18} {'quantize instr/elem':>20}")
    for cost in measure_all():
        print(f"{cost.weight_type:6} {cost.decode_per_mac:17.3f} {cost.prefill_per_mac:18.3f} "
              f"{cost.quantize_per_element:20.2f}")
    if args.ggml:
        from benchmarks.ggml_wasm import measure_ggml

        for cost in measure_ggml():
            print(f"ggml {cost.weight_type:6} decode {cost.decode_per_mac:.3f} instr/MAC, quantize "
                  f"{cost.quantize_per_element:.2f} instr/elem")


if __name__ == "__main__":
    main()
