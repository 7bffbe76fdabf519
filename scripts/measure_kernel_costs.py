"""Measures the instructions per multiply-accumulate of the wasm kernels, ours and ggml's, under the
replica's IC metering, and writes them to replica/kernel_costs.json, the table `icllama plan`
costs matmuls with (replica/cost_model.py).

    python scripts/measure_kernel_costs.py

Ours: canisters/kernels/kernels.c built by zig cc (benchmarks/bench_wasm_kernels.py). ggml's: its
wasm simd128 dot products from the llama-cpp-python 0.3.36 sdist, built the same way
(benchmarks/ggml_wasm.py). The counts are deterministic; rerun after changing the kernels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_wasm_kernels import N_IN, N_ROWS, PREFILL_TOKENS, measure_all  # noqa: E402
from benchmarks.ggml_wasm import measure_ggml  # noqa: E402
from replica.state_store import atomic_write  # noqa: E402

TABLE = REPO / "replica" / "kernel_costs.json"  # read by replica/cost_model.py


def main() -> None:
    ours, ggml = measure_all(), measure_ggml()
    table = {
        "about": "IC instructions per multiply-accumulate, measured by scripts/measure_kernel_costs.py under "
                 "the replica's IC metering (replica/engines/wasm/instrument.py); a matrix of "
                 f"{N_IN} inputs x {N_ROWS} rows, decode 1 token, prefill {PREFILL_TOKENS}; "
                 "quantize_per_element: preparing the activations (ggml's vec_dot_type), per element",
        "icllama": {c.weight_type: {"decode": round(c.decode_per_mac, 4), "prefill": round(c.prefill_per_mac, 4),
                                    "quantize_per_element": round(c.quantize_per_element, 3)} for c in ours},
        "ggml": {c.weight_type: {"decode": round(c.decode_per_mac, 4),
                                 "quantize_per_element": round(c.quantize_per_element, 3)} for c in ggml},
    }
    atomic_write(TABLE, (json.dumps(table, indent=1) + "\n").encode())
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
