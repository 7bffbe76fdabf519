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
from client.pipeline import Deployment, ShardedRun, UnshardedModel, UnshardedRun  # noqa: E402
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
    baseline = UnshardedModel.load(model)
    rows = []
    with tempfile.TemporaryDirectory() as shards_dir:
        for shards in args.shards:
            start = time.perf_counter()
            deployment = Deployment.create(model, Constraints(shards=shards), shards_dir=Path(shards_dir))
            deploy_s = time.perf_counter() - start
            deployment.generate(PROMPT, GenerationOptions(max_tokens=4))  # warm up both paths
            baseline.generate(PROMPT, GenerationOptions(max_tokens=4))
            sharded: list[ShardedRun] = []
            local: list[UnshardedRun] = []
            for _ in range(args.repeats):
                sharded.append(deployment.generate(PROMPT, options))
                local.append(baseline.generate(PROMPT, options))
            if any(run.generation.ids != local[0].ids for run in sharded):
                print(f"  {shards} shards: the sharded ids differ from the unsharded ones", file=sys.stderr)
                return 1
            rows.append((shards, deploy_s, sharded, local))
    print(f"{'shards':>6} {'canisters':>9} {'deploy s':>8} {'tok/s':>6} {'unsharded':>9} {'overhead':>8} "
          f"{'CPU ovh':>7} {'virt s/tok':>10} {'instr/tok':>9} {'cycles/tok':>10} {'msgs/tok':>8} {'act. msg B':>10}")
    for shards, deploy_s, sharded, local in rows:
        net = sharded[0].network
        wall = min(r.network.host_seconds for r in sharded), min(r.host.seconds for r in local)
        cpu = min(r.network.host_cpu_seconds for r in sharded), min(r.host.cpu_seconds for r in local)
        tokens = net.generated_tokens
        print(f"{shards:>6} {net.canisters:>9} {deploy_s:>8.1f} {tokens / wall[0]:>6.1f} {tokens / wall[1]:>9.1f} "
              f"{wall[0] / wall[1] - 1:>8.1%} {cpu[0] / cpu[1] - 1:>7.1%} {net.virtual_seconds_per_token:>10.2f} "
              f"{net.instructions_per_token:>9.3g} {net.cycles_per_token:>10.3g} {net.messages_per_token:>8.1f} "
              f"{net.activation_message_bytes:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
