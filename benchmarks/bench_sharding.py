"""Host speed of sharded generation against the unsharded model, with what the network measured.

    python benchmarks/bench_sharding.py [--model smollm2] [--shards 1 2 4 8] [--tokens 64] [--repeats 3]

For each shard count the model is planned, exported and deployed into an in-process simulated IC
(client.pipeline), then generates greedily from the same prompt; the unsharded baseline is `Llama`
in this process with the same weight strategy. Runs alternate (sharded, unsharded, ...) and the
fastest of each is kept, so that other load on the machine affects both alike. Prints host
tokens/s and the overhead of sharding (target: at most 15% at 8 shards), and per generated token
the virtual seconds, instructions, cycles and inter-canister messages the network measured, and
the Candid bytes of one activation message.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.catalog import resolve_model  # noqa: E402
from client.head_client import GenerationOptions  # noqa: E402
from client.pipeline import Deployment, ShardedRun, UnshardedRun, run_unsharded  # noqa: E402
from sharding.partition import Constraints  # noqa: E402

PROMPT = "Once upon a time, in a small village by the sea, there lived"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="catalog name or .gguf path (default smollm2)")
    parser.add_argument("--shards", type=int, nargs="+", default=[8], help="shard counts (default 8)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens to generate (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, fastest kept (default 3)")
    args = parser.parse_args()
    model = resolve_model(args.model)
    options = GenerationOptions(max_tokens=args.tokens)
    print(f"{model.name}: {args.tokens} tokens from a {PROMPT!r} prompt, greedy, fastest of {args.repeats}")
    rows = []
    with tempfile.TemporaryDirectory() as shards_dir:
        for shards in args.shards:
            start = time.perf_counter()
            deployment = Deployment.create(model, Constraints(shards=shards), shards_dir=Path(shards_dir))
            deploy_s = time.perf_counter() - start
            deployment.generate(PROMPT, GenerationOptions(max_tokens=4))  # warm up both paths
            run_unsharded(model, PROMPT, GenerationOptions(max_tokens=4))
            best_sharded: ShardedRun | None = None
            best_local: UnshardedRun | None = None
            for _ in range(args.repeats):
                run = deployment.generate(PROMPT, options)
                if best_sharded is None or run.generation.host_seconds < best_sharded.generation.host_seconds:
                    best_sharded = run
                local = run_unsharded(model, PROMPT, options)
                if best_local is None or local.host_seconds < best_local.host_seconds:
                    best_local = local
            assert best_sharded is not None and best_local is not None
            if best_sharded.generation.ids != best_local.ids:
                print(f"  {shards} shards: the sharded ids differ from the unsharded ones", file=sys.stderr)
                return 1
            rows.append((shards, deploy_s, best_sharded, best_local))
    print(f"{'shards':>6} {'canisters':>9} {'deploy s':>8} {'tok/s':>7} {'unsharded':>9} {'overhead':>8} "
          f"{'virt s/tok':>10} {'instr/tok':>10} {'cycles/tok':>10} {'msgs/tok':>8} {'act. msg B':>10}")
    for shards, deploy_s, run, local in rows:
        net = run.network
        overhead = local.host_tokens_per_s / net.host_tokens_per_s - 1
        print(f"{shards:>6} {net.canisters:>9} {deploy_s:>8.1f} {net.host_tokens_per_s:>7.1f} "
              f"{local.host_tokens_per_s:>9.1f} {overhead:>8.1%} {net.virtual_seconds_per_token:>10.2f} "
              f"{net.instructions_per_token:>10.3g} {net.cycles_per_token:>10.3g} {net.messages_per_token:>8.1f} "
              f"{net.activation_message_bytes:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
