"""What the IC's instrumentation (replica/engines/wasm/instrument.py) costs.

1. Speed of instrumented code: a compute-bound C kernel (int16 dot products with SIMD, scalar
   arithmetic and stores into an output array), built by `zig cc` for wasm32 + simd128, run in
   wasmtime uninstrumented, metered as the IC meters it, and metered with the write barrier.
   Figure: the instrumented speed as a fraction of the uninstrumented one (target >= 50%).
   A store-heavy loop (one i32 store per iteration) shows the barrier's worst case.
2. Time to instrument a module of about 1 MB of code: generated C (many functions with loops and
   branches) built by `zig cc`, and the moc-built canisters of tests/motoko if they are cached.

Every figure is measured: the median of --runs runs (default 3) with min and max. The three
variants run interleaved and each run's ratio compares variants timed moments apart, so a
change of load on a shared machine moves them together; the spread says how much it disturbed.

    python -m benchmarks.bench_wasm_instrument [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import wasmtime

from replica.engines.wasm import wasm_binary as wb
from replica.engines.wasm.instrument import COUNTER_EXPORT, WRITE_BITMAP_EXPORT, instrument

KERNEL_C = r"""
#include <wasm_simd128.h>
#include <stdint.h>
#define N 4096
static int16_t a[N], b[N];
static int32_t out[N / 8];
__attribute__((export_name("setup"))) void setup(int unused) {
  for (int i = 0; i < N; i++) { a[i] = (int16_t)(i * 7 - 3000); b[i] = (int16_t)(i % 251 - 125); }
}
// rows x (N / 8) blocks of 8-lane dot products, plus scalar mixing and one store per block
__attribute__((export_name("kernel"))) int32_t kernel(int rows) {
  int32_t total = 0;
  for (int r = 0; r < rows; r++) {
    for (int j = 0; j < N / 8; j++) {
      v128_t p = wasm_i32x4_dot_i16x8(wasm_v128_load(a + 8 * j), wasm_v128_load(b + 8 * j));
      int32_t s = wasm_i32x4_extract_lane(p, 0) + wasm_i32x4_extract_lane(p, 1)
                + wasm_i32x4_extract_lane(p, 2) + wasm_i32x4_extract_lane(p, 3);
      s = (s ^ (s >> 7)) * 31 + r;
      out[j] = s;
      total += s;
    }
  }
  return total;
}
// the write barrier's worst case: nothing but a store per iteration
__attribute__((export_name("stores"))) int32_t stores(int rounds) {
  for (int r = 0; r < rounds; r++)
    for (int j = 0; j < N / 8; j++) out[(j * 7 + r) & (N / 8 - 1)] += j;  // each round's stores are live
  return out[5];
}
"""


def zig_build(source: str, directory: Path, name: str, optimize: str = "-O2") -> bytes:
    c_file, wasm_file = directory / f"{name}.c", directory / f"{name}.wasm"
    c_file.write_text(source)
    subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", "wasm32-freestanding",
                    "-mcpu=generic+simd128+bulk_memory", optimize, "-s", "-nostdlib", "-Wl,--no-entry",
                    "-o", str(wasm_file), str(c_file)], check=True)
    return wasm_file.read_bytes()


def generated_module_source(functions: int) -> str:
    """C whose wasm is about 1 MB: functions with loops, branches and arithmetic."""
    parts = ["#include <stdint.h>\nstatic int32_t table[1024];\n"]
    for i in range(functions):
        parts.append(f"""
__attribute__((export_name("f{i}"))) int32_t f{i}(int32_t x, int32_t y) {{
  int32_t s = x * {i + 3};
  for (int32_t k = 0; k < y; k++) {{
    if ((s ^ k) & {1 + i % 7}) s = s * {i % 13 + 2} + table[(k + {i}) & 1023];
    else s -= (k << {i % 5}) ^ {i * 17};
    switch ((s + k) & 7) {{
      case 0: s += {i}; break; case 1: s ^= {i * 3}; break; case 2: s -= y; break;
      case 3: s = s / ({i % 9 + 2}); break; case 4: table[k & 1023] = s; break;
      default: s += k * {i % 11};
    }}
  }}
  return s;
}}""")
    return "".join(parts)


def instantiate(wasm: bytes, write_barrier: bool | None):
    """A callable running one export once and returning its wall time; write_barrier None runs
    the module uninstrumented."""
    config = wasmtime.Config()
    config.wasm_multi_memory = True
    store = wasmtime.Store(wasmtime.Engine(config))
    if write_barrier is not None:
        wasm = instrument(wasm, write_barrier=write_barrier).wasm
    module = wasmtime.Module(store.engine, wasm)

    def out_of_instructions() -> None:
        raise RuntimeError("out of instructions")

    def first_write_range(address: int, length: int) -> None:
        bitmap = exports[WRITE_BITMAP_EXPORT]
        for page in range(address // 4096, (address + length - 1) // 4096 + 1):
            bitmap.data_ptr(store)[page] = 1

    i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
    host = {"out_of_instructions": wasmtime.Func(store, wasmtime.FuncType([], []), out_of_instructions),
            "try_grow_wasm_memory": wasmtime.Func(store, wasmtime.FuncType([i32, i32], [i32]), lambda r, _: r),
            "first_write_range": wasmtime.Func(store, wasmtime.FuncType([i64, i64], []), first_write_range)}
    instance = wasmtime.Instance(store, module, [host[i.name] for i in module.imports])
    exports = instance.exports(store)

    def run(function: str, argument: int) -> float:
        if write_barrier is not None:
            exports[COUNTER_EXPORT].set_value(store, wasmtime.Val.i64(10**15))
        if write_barrier:  # a new execution: no page is marked yet (the module uses the first 1024)
            pointer = exports[WRITE_BITMAP_EXPORT].data_ptr(store)
            for page in range(1024):
                pointer[page] = 0
        start = time.perf_counter()
        exports[function](store, argument)
        return time.perf_counter() - start

    run("setup", 0)
    return run


def summary(values: list[float], unit: str, scale: float = 1.0) -> str:
    scaled = [v * scale for v in values]
    return (f"median {statistics.median(scaled):.3f} {unit} (min {min(scaled):.3f}, max {max(scaled):.3f}; "
            f"{len(values)} runs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=200_000, help="kernel rows per call")
    parser.add_argument("--functions", type=int, default=4500, help="functions in the generated module")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        kernel = zig_build(KERNEL_C, Path(directory), "kernel")
        print(f"measured (the machine may be shared; see the spread); {args.runs} runs each\n")
        variants = {label: instantiate(kernel, barrier)
                    for label, barrier in (("plain", None), ("metered", False), ("metered+barrier", True))}
        for function, argument in (("kernel", args.rows), ("stores", args.rows)):
            times: dict[str, list[float]] = {label: [] for label in variants}
            for _ in range(args.runs):  # interleaved, so load changes on the machine hit every variant
                for label, run in variants.items():
                    times[label].append(run(function, argument))
            print(f"{function}({argument}):")
            for label, values in times.items():
                ratios = [plain / value for plain, value in zip(times["plain"], values, strict=True)]
                print(f"  {label:16s} {summary(values, 's')}; speed vs plain, same run: median "
                      f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")
        big = zig_build(generated_module_source(args.functions), Path(directory), "generated", "-O1")
        modules = {f"generated C ({args.functions} functions)": big}
        from client.catalog import cache_dir
        for path in sorted((cache_dir() / "motoko-builds").glob("*.wasm"))[:2]:
            modules[f"moc {path.stem}"] = path.read_bytes()
        print("\ninstrumentation time:")
        for label, wasm in modules.items():
            for barrier in (False, True):
                seconds = []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    instrument(wasm, write_barrier=barrier)
                    seconds.append(time.perf_counter() - start)
                code = wb.parse_module(wasm).section(wb.CODE)
                print(f"  {label}, {len(wasm) / 1e6:.2f} MB ({len(code.payload) / 1e6:.2f} MB of code), "
                      f"barrier={barrier}: {summary(seconds, 's')}")


if __name__ == "__main__":
    main()
