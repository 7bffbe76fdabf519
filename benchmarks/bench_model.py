"""SmolLM2 decode and prefill speed of the model core, against llama.cpp in the same run.

    python benchmarks/bench_model.py [--model smollm2] [--weights dequantize|quantized]
                                     [--llama-cpp-python PYTHON]

Prints tokens/s for prefill and decode, peak RSS, and the memory-bandwidth roofline: the bytes
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


def bench_llama_cpp(path: Path, python: str | None) -> dict | None:
    if python is None:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            return None
        python = sys.executable
    result = subprocess.run([python, "-c", LLAMA_CPP_SCRIPT, str(path), str(N_PROMPT), str(N_DECODE)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--weights", choices=STRATEGIES, default="quantized")
    parser.add_argument("--llama-cpp-python", help="a Python interpreter that can import llama_cpp")
    args = parser.parse_args()
    path = resolve_model(args.model)

    ours = bench_ours(path, args.weights)
    bandwidth = read_bandwidth_gbs()
    ceiling = bandwidth * 1e9 / ours["bytes_per_token"]
    print(f"model {path.name}, weights {args.weights} ({ours['resident_bytes'] / 1e6:.0f} MB resident)")
    print(f"icllama   prefill {ours['prefill_tps']:7.1f} tok/s   decode {ours['decode_tps']:6.1f} tok/s   "
          f"peak RSS {ours['peak_rss_mb']:.0f} MB")
    print(f"roofline  {ours['bytes_per_token'] / 1e6:.0f} MB read per decoded token, read bandwidth "
          f"{bandwidth:.1f} GB/s -> ceiling {ceiling:.1f} tok/s; reached {ours['decode_tps'] / ceiling:.0%}")
    ref = bench_llama_cpp(path, args.llama_cpp_python)
    if ref is None:
        print("llama.cpp not available (pip install llama-cpp-python, or pass --llama-cpp-python PYTHON)")
        return
    print(f"llama.cpp prefill {ref['prefill_tps']:7.1f} tok/s   decode {ref['decode_tps']:6.1f} tok/s   (2 threads)")
    print(f"ratio     prefill {ours['prefill_tps'] / ref['prefill_tps']:.2f}x   "
          f"decode {ours['decode_tps'] / ref['decode_tps']:.2f}x of llama.cpp")


if __name__ == "__main__":
    main()
