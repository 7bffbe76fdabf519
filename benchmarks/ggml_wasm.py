"""ggml's own wasm simd128 kernels, compiled with our toolchain and metered like ours: the numbers
from which llama_cpp_canister's published costs are predicted (replica/kernel_costs.json).

The source is llama.cpp's ggml-cpu/arch/wasm/quants.c as shipped in the llama-cpp-python 0.3.36
sdist (the one tests/refdata.py pins): fetched from PyPI with pip, checked against its sha256, and
its ggml/ directory extracted into $ICLLAMA_CACHE/refdata/ on first use; nothing of it is kept in
this repository. It is compiled whole by zig cc for wasm32-wasi (for libc's headers) with simd128, as
onicai's build compiles it for the IC; ggml's f16 -> f32 lookup table, which ggml_cpu_init fills, is
filled here from numpy's f16 cast. Each dot product is called once per row, as ggml's mul_mat does.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf.constants import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from benchmarks.bench_wasm_kernels import N_IN, N_ROWS, counted, metered
from canisters.kernels.build import zig_command
from client import catalog
from tests.refdata import SDIST_NAME, extract_from_sdist
from tests.synthetic_tensors import random_tensor_bytes

T = GGMLQuantizationType
GGML_DIR = f"{SDIST_NAME}/vendor/llama.cpp/ggml"
QUANTS_C = "src/ggml-cpu/arch/wasm/quants.c"
# weight type -> (ggml's dot product, the activation quantizer, the activation block's bytes per 32 or 256)
KERNELS = {
    T.Q8_0: ("ggml_vec_dot_q8_0_q8_0", "quantize_row_q8_0"),
    T.Q4_K: ("ggml_vec_dot_q4_K_q8_K", "quantize_row_q8_K"),
    T.Q6_K: ("ggml_vec_dot_q6_K_q8_K", "quantize_row_q8_K"),
}
ACT_BLOCK = {"quantize_row_q8_0": (32, 34), "quantize_row_q8_K": (256, 292)}  # block_q8_0, block_q8_K
TABLE = "ggml_table_f32_f16"


def ggml_source() -> Path:
    """llama.cpp's ggml/ directory from the pinned sdist (fetched and extracted once)."""
    root = catalog.cache_dir() / "refdata" / f"ggml-{SDIST_NAME}"
    if not (root / QUANTS_C).is_file():
        extract_from_sdist(root, lambda tar: [(m, m.name[len(GGML_DIR) + 1:]) for m in tar.getmembers()
                                              if m.isfile() and m.name.startswith(GGML_DIR + "/")])
    return root


def build_ggml_wasm(out: Path) -> Path:
    source = ggml_source()
    exports = sorted({name for pair in KERNELS.values() for name in pair} | {TABLE, "__heap_base"})
    table_c = out.with_suffix(".table.c")
    table_c.write_text(f"float {TABLE}[1 << 16];  /* filled by the host, as ggml_cpu_init fills it */\n")
    command = [*zig_command(), "-target", "wasm32-wasi", "-mcpu=generic+simd128", "-O3", "-DNDEBUG",
               "-mexec-model=reactor", f"-I{source / 'include'}", f"-I{source / 'src'}",
               f"-I{source / 'src' / 'ggml-cpu'}", "-Wl,--no-entry", "-Wl,--import-symbols",
               *[f"-Wl,--export={name}" for name in exports], "-o", str(out), str(source / QUANTS_C), str(table_c)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"compiling ggml's wasm kernels failed ({' '.join(command)}):\n{result.stderr.strip()}")
    return out


@dataclass(frozen=True)
class GgmlCost:
    weight_type: str
    decode_per_mac: float  # one ggml_vec_dot_* call per row, one token
    quantize_per_element: float  # quantize_row_q8_* per activation element


def measure_ggml() -> list[GgmlCost]:
    with tempfile.TemporaryDirectory() as tmp:
        wasm = build_ggml_wasm(Path(tmp) / "ggml.wasm").read_bytes()
    kernels = metered(wasm)
    if "_initialize" in kernels.exports:
        kernels.call("_initialize")
    table = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype("<f4").tobytes()
    kernels.memory.write(kernels.store, table, kernels.exports[TABLE].value(kernels.store))
    return [_measure(kernels, t) for t in KERNELS]


def _measure(kernels, ggml_type: GGMLQuantizationType) -> GgmlCost:
    dot, quantize = KERNELS[ggml_type]
    rng = np.random.default_rng(0)
    raw = random_tensor_bytes(ggml_type, (N_IN, N_ROWS), rng).reshape(N_ROWS, -1)
    row_bytes = raw.shape[1]
    block, block_bytes = ACT_BLOCK[quantize]
    x = rng.standard_normal(N_IN).astype("<f4")
    base = kernels.heap_base
    w_at, x_at = base, base + raw.nbytes
    xq_at = x_at + x.nbytes
    s_at = xq_at + N_IN // block * block_bytes
    kernels._reserve(s_at + 4 * N_ROWS - base)
    kernels._write(w_at, raw.tobytes())
    kernels._write(x_at, x.tobytes())
    quantize_instructions = counted(kernels, lambda: kernels.call(quantize, x_at, xq_at, N_IN))

    def rows() -> None:
        for r in range(N_ROWS):
            kernels.call(dot, N_IN, s_at + 4 * r, 0, w_at + r * row_bytes, 0, xq_at, 0, 1)

    instructions = counted(kernels, rows)
    # not a figure: the compiled ggml must compute the product (gguf's values; 8-bit activations
    # and ggml's own rounding allow about 1%)
    y = np.frombuffer(kernels._read(s_at, 4 * N_ROWS), "<f4")
    dense = np.asarray(gguf_dequantize(raw, ggml_type), np.float64).reshape(N_ROWS, N_IN)
    scale = np.abs(dense) @ np.abs(x.astype(np.float64))
    if not (np.abs(y - dense @ x) <= 0.02 * scale).all():
        raise RuntimeError(f"ggml's compiled {dot} does not compute the product; the build is broken")
    return GgmlCost(ggml_type.name, instructions / (N_IN * N_ROWS), quantize_instructions / N_IN)
