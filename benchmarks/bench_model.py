"""SmolLM2 decode and prefill speed of the model core, against llama.cpp in the same run.

    python -m benchmarks.bench_model [--model smollm2] [--weights dequantize|quantized] [--runs 3]
                                     [--llama-cpp-python PYTHON]

Prints tokens/s for prefill and decode (the median of --runs runs, with their range), peak RSS,
and the memory-bandwidth roofline: the bytes
of weights and KV read per decoded token, the measured read bandwidth of this machine, the
ceiling in tokens/s that follows, and the fraction of it reached. llama.cpp runs (same model,
2 threads, same prompt length and token count) when llama-cpp-python is importable here, or in
the interpreter given by --llama-cpp-python (a venv where it was built), and the ratio is
printed.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from canisters.llama.gguf_file import read_gguf  # noqa: E402
from canisters.llama.meter import NullMeter  # noqa: E402
from canisters.llama.model import STRATEGIES, Llama  # noqa: E402
from cdk.meter import Work  # noqa: E402
from client.catalog import resolve_model  # noqa: E402

N_PROMPT, N_DECODE = 64, 64

LLAMA_CPP_SCRIPT = """
import json, sys, time, llama_cpp
path, n_prompt, n_decode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
llm = llama_cpp.Llama(path, n_ctx=512, n_threads=2, n_batch=512, verbose=False)
prompt = list(range(100, 100 + n_prompt))
llm.eval(prompt[:8]); llm.reset()  # warm up
t = time.perf_counter(); llm.eval(prompt); prefill = time.perf_counter() - t
t = time.perf_counter()
for _ in range(n_decode):
    llm.eval([int(llm.scores[llm.n_tokens - 1].argmax())])
decode = time.perf_counter() - t
print(json.dumps({"prefill_tps": n_prompt / prefill, "decode_tps": n_decode / decode}))
"""


def read_bandwidth_gbs() -> float:
    """Streaming read bandwidth, measured the way decode reads weights: a BLAS matrix-vector product
    over a 512 MB f32 matrix, far bigger than the caches."""
    matrix = np.ones((512 * 1024 * 1024 // 4096, 1024), dtype=np.float32)
    vector = np.ones(1024, dtype=np.float32)
    best = min(_timed(lambda: matrix @ vector) for _ in range(5))
    return matrix.nbytes / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_ours(path: Path, strategy: str) -> dict:
    model = Llama.load(read_gguf(path), strategy, n_ctx=N_PROMPT + N_DECODE)
    prompt = list(range(100, 100 + N_PROMPT))
    model.forward(prompt[:8], model.new_cache(16), 0, NullMeter())  # warm up
    cache = model.new_cache(N_PROMPT + N_DECODE)
    start = time.perf_counter()
    logits = model.forward(prompt, cache, 0, NullMeter())
    prefill = time.perf_counter() - start
    work = Work()
    start = time.perf_counter()
    for pos in range(N_PROMPT, N_PROMPT + N_DECODE):
        logits = model.forward([int(np.argmax(logits))], cache, pos, work)
    decode = time.perf_counter() - start
    return {
        "prefill_tps": N_PROMPT / prefill,
        "decode_tps": N_DECODE / decode,
        "bytes_per_token": work.bytes_touched / N_DECODE,
        "resident_bytes": model.nbytes_resident,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def bench_llama_cpp(path: Path, python: str | None, probe: bool = False) -> dict | None:
    """llama.cpp's speeds; None if it is not available. `probe` only checks that it is."""
    if python is None:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            return None
        python = sys.executable
    if probe:
        return {}
    result = subprocess.run([python, "-c", LLAMA_CPP_SCRIPT, str(path), str(N_PROMPT), str(N_DECODE)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--weights", choices=STRATEGIES, default="quantized")
    parser.add_argument("--llama-cpp-python", help="a Python interpreter that can import llama_cpp")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side; medians are printed (default 3)")
    args = parser.parse_args()
    path = resolve_model(args.model)

    runs = [bench_ours(path, args.weights) for _ in range(args.runs)]
    ours = {key: statistics.median(run[key] for run in runs) for key in ("prefill_tps", "decode_tps")}
    bandwidth = read_bandwidth_gbs()
    ceiling = bandwidth * 1e9 / runs[0]["bytes_per_token"]
    print(f"model {path.name}, weights {args.weights} ({runs[0]['resident_bytes'] / 1e6:.0f} MB resident); "
          f"medians of {args.runs} runs (range)")
    print(f"icllama   prefill {_spread(runs, 'prefill_tps')} tok/s   decode {_spread(runs, 'decode_tps')} tok/s   "
          f"peak RSS {max(run['peak_rss_mb'] for run in runs):.0f} MB")
    print(f"roofline  {runs[0]['bytes_per_token'] / 1e6:.0f} MB read per decoded token, read bandwidth "
          f"{bandwidth:.1f} GB/s -> ceiling {ceiling:.1f} tok/s; reached {ours['decode_tps'] / ceiling:.0%}")
    if bench_llama_cpp(path, args.llama_cpp_python, probe=True) is None:
        print("llama.cpp not available (pip install llama-cpp-python, or pass --llama-cpp-python PYTHON)")
        return
    refs = [bench_llama_cpp(path, args.llama_cpp_python) for _ in range(args.runs)]
    print(f"llama.cpp prefill {_spread(refs, 'prefill_tps')} tok/s   decode {_spread(refs, 'decode_tps')} tok/s   "
          "(2 threads)")
    # The ratio of run i of each side, so its range shows how much the machine's load moved it.
    ratios = [{key: ours_run[key] / ref[key] for key in ("prefill_tps", "decode_tps")}
              for ours_run, ref in zip(runs, refs, strict=True)]
    print(f"ratio     prefill {_spread(ratios, 'prefill_tps', '.2f')}x   "
          f"decode {_spread(ratios, 'decode_tps', '.2f')}x of llama.cpp")


def _spread(runs: list[dict], key: str, fmt: str = ".1f") -> str:
    values = [run[key] for run in runs]
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})"


if __name__ == "__main__":
    main()
