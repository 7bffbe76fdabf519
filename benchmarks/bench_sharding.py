"""Host speed of sharded generation against the unsharded model, with what the network measured.

    python -m benchmarks.bench_sharding [--model smollm2] [--shards 1 2 4 8] [--tokens 64] [--repeats 3]
                                        [--engine wasm native] [--llama-cpp-python PYTHON]

For each shard count the model is planned, exported and deployed into an in-process simulated IC
(client.pipeline), then generates greedily from the same prompt; the unsharded baseline is `Llama`
in this process with the same weight strategy. Runs alternate (sharded, unsharded, ...), so that
other load on the machine affects both alike, and each figure is the median of the runs with
their range; an overhead compares the runs of one pair. Prints host
tokens/s and the overhead of sharding (target: at most 15% at 8 shards), and per generated token
the virtual seconds, instructions, cycles and inter-canister messages the network measured, and
the Candid bytes of one activation message.

`--engine` picks how the yblocks run, one row per engine and shard count: `wasm` (the C yblock,
whose instructions and cycles are the replica's IC metering of the module) and `native` (the Python
yblock with the native kernel, whose figures are the cost model's). llama.cpp's decode speed on the
same model is printed beside them when llama-cpp-python can be imported (here, or by the
interpreter given with --llama-cpp-python), measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_model import bench_llama_cpp  # noqa: E402
from client.catalog import resolve_model  # noqa: E402
from client.head_client import GenerationOptions  # noqa: E402
from client.pipeline import Deployment, ShardedRun, UnshardedModel, UnshardedRun  # noqa: E402
from sharding.partition import Constraints  # noqa: E402

PROMPT = "Once upon a time, in a small village by the sea, there lived"
ENGINES = {"wasm": "wasm", "native": "python"}  # the benchmark's name -> client.deploy's engine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="catalog name or .gguf path (default smollm2)")
    parser.add_argument("--shards", type=int, nargs="+", default=[8], help="shard counts (default 8)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens to generate (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; medians are printed (default 3)")
    parser.add_argument("--engine", nargs="+", choices=ENGINES, default=["wasm"],
                        help="how the yblocks run: wasm (the C module) and/or native (default wasm)")
    parser.add_argument("--llama-cpp-python", help="a Python interpreter that can import llama_cpp")
    args = parser.parse_args()
    model = resolve_model(args.model)
    options = GenerationOptions(max_tokens=args.tokens)
    print(f"{model.name}: {args.tokens} tokens from a {PROMPT!r} prompt, greedy, median (range) of {args.repeats} runs")
    baseline = UnshardedModel.load(model)
    rows = []
    with tempfile.TemporaryDirectory() as shards_dir:
        for engine, shards in [(e, n) for e in args.engine for n in args.shards]:
            start = time.perf_counter()
            deployment = Deployment.create(model, Constraints(shards=shards), shards_dir=Path(shards_dir),
                                           engine=ENGINES[engine])
            deploy_s = time.perf_counter() - start
            deployment.generate(PROMPT, GenerationOptions(max_tokens=4))  # warm up both paths
            baseline.generate(PROMPT, GenerationOptions(max_tokens=4))
            sharded: list[ShardedRun] = []
            local: list[UnshardedRun] = []
            for _ in range(args.repeats):
                sharded.append(deployment.generate(PROMPT, options))
                local.append(baseline.generate(PROMPT, options))
            if any(run.generation.ids != local[0].ids for run in sharded):
                print(f"  {engine}, {shards} shards: the sharded ids differ from the unsharded ones", file=sys.stderr)
                return 1
            rows.append((engine, shards, deploy_s, sharded, local))
    print(f"{'engine':>6} {'shards':>6} {'canisters':>9} {'deploy s':>8} {'tok/s':>18} {'unsharded tok/s':>18} "
          f"{'overhead':>21} {'CPU overhead':>21} {'virt s/tok':>10} {'instr/tok':>9} {'cycles/tok':>10} "
          f"{'msgs/tok':>8} {'act. msg B':>10}")
    for engine, shards, deploy_s, sharded, local in rows:
        net = sharded[0].network
        tokens = net.generated_tokens
        pairs = list(zip(sharded, local, strict=True))
        print(f"{engine:>6} {shards:>6} {net.canisters:>9} {deploy_s:>8.1f} "
              f"{_spread([tokens / r.network.host_seconds for r in sharded], '.1f'):>18} "
              f"{_spread([tokens / r.host.seconds for r in local], '.1f'):>18} "
              f"{_spread([s.network.host_seconds / u.host.seconds - 1 for s, u in pairs], '.1%'):>21} "
              f"{_spread([s.network.host_cpu_seconds / u.host.cpu_seconds - 1 for s, u in pairs], '.1%'):>21} "
              f"{net.virtual_seconds_per_token:>10.2f} {net.instructions_per_token:>9.3g} "
              f"{net.cycles_per_token:>10.3g} {net.messages_per_token:>8.1f} {net.activation_message_bytes:>10}")
    llama_cpp = [bench_llama_cpp(model, args.llama_cpp_python) for _ in range(args.repeats)]
    if None in llama_cpp:
        print("llama.cpp: not available (pip install llama-cpp-python, or pass --llama-cpp-python PYTHON)")
    else:
        print(f"llama.cpp decode tok/s (2 threads, same model, this run): "
              f"{_spread([r['decode_tps'] for r in llama_cpp], '.1f')}")
    return 0


def _spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})"


if __name__ == "__main__":
    sys.exit(main())
