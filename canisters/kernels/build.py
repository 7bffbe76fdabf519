"""Builds C for the IC: wasm32 with simd128, by `zig cc` from the PyPI package ziglang (no other
toolchain needed). The yblock canister and the kernel measurements both compile through here."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

KERNELS_DIR = Path(__file__).resolve().parent
KERNELS_SOURCE = KERNELS_DIR / "kernels.c"
KERNEL_EXPORTS = ("icl_row_bytes", "icl_act_row_bytes", "icl_quantize_act", "icl_matmul_rows")
# -ffp-contract=off: the float steps of kernels.h, in order, without fused multiply-adds.
# -disable-lsr: LLVM's loop strength reduction rewrites the kernels' pointers so that wasm loads no
# longer take their constant offsets, and the IC counts each extra add: measured 1.79 -> 1.65
# instructions per MAC for Q8_0, 4.04 -> 3.15 for F32 (benchmarks/bench_wasm_kernels.py).
WASM_FLAGS = ("-target", "wasm32-freestanding", "-mcpu=generic+simd128", "-O3", "-ffp-contract=off", "-nostdlib",
              "-mllvm", "-disable-lsr", "-Wl,--no-entry")


class ZigMissing(RuntimeError):
    """`python -m ziglang` is not installed (pip install ziglang)."""


def zig_command() -> list[str]:
    try:
        import ziglang  # noqa: F401
    except ImportError:
        raise ZigMissing("zig is not installed: pip install ziglang (it is a build dependency of icllama)") from None
    return [sys.executable, "-m", "ziglang", "cc"]


def build_wasm(sources: Sequence[Path], out: Path, exports: Sequence[str], extra_flags: Sequence[str] = ()) -> Path:
    """Compile `sources` into the wasm module `out`, exporting `exports`, its memory and __heap_base."""
    command = [*zig_command(), *WASM_FLAGS, *extra_flags, f"-I{KERNELS_DIR}"]
    command += [f"-Wl,--export={name}" for name in (*exports, "__heap_base")]
    command += ["-o", str(out), *map(str, sources)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"zig cc failed ({' '.join(command)}):\n{result.stderr.strip()}")
    return out


def build_kernels_wasm(out: Path) -> Path:
    """The kernels alone as a wasm module (for tests and measurements)."""
    return build_wasm([KERNELS_SOURCE], out, KERNEL_EXPORTS)
