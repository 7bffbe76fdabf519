"""Upload throughput and generation speed over the IC HTTP interface, against the same steps
in-process (no HTTP, no agent): what the gateway, the agents and the network process cost.

Starts `icllama start` as a real subprocess on a free port with a fresh state directory for each
HTTP deployment, and measures:
- upload MB/s: the upload step of client.deploy.Deployer (chunks of 2 MiB, per-chunk sha256
  check, load), over HTTP with icp-py-core at --parallel 1 and 4 canisters at a time, and
  in-process through replica.inprocess.LocalClient;
- generation tokens/s (host wall time, greedy): `generate` (one update) and `stream` (start,
  then poll queries) with icp-py-core, `generate` with ic-py 1.0.1 (in its own environment),
  against `icllama run --shards N` in-process (client.pipeline). Each is timed after a 2-token
  warm-up generation.

    python3 -m benchmarks.bench_http [--model smollm2] [--shards 4] [--tokens 32]   (from the repo root)
    python3 -m benchmarks.bench_http --latency 10

`--latency RUNS` instead times the README's `icllama generate -p "What is the capital of
France?" --chat -n 32 --stream` RUNS times, each a new process as a user runs it, against one
deployment, and prints every run's seconds, their median, maximum and max/median.

Certificates are verified by icp-py-core when the blst binding is built (tests/agent_envs.py); the
first row says whether they were.

A served network runs busy rounds as fast as the host computes them (its certificates carry the
wall-clock time, its canisters the virtual time). A canister takes one chunk per round, as on the
IC. `--round-seconds` sets the virtual duration of a round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from client.agent import LocalCanisters, RemoteCanisters, blst_available, connect
from client.catalog import resolve_model
from client.deploy import CanisterIds, Deployer, read_dfx
from client.head_client import GenerationOptions, HeadClient
from client.identity import generate
from client.pipeline import Deployment
from replica.inprocess import LocalClient
from replica.network import Network
from sharding.dfx import write_dfx
from sharding.export import export_shards
from sharding.model_spec import read_model_spec
from sharding.partition import Constraints, make_plan
from tests.agent_envs import blst_binding_dir, ic_py_python
from tests.gateway_support import REPO, start_network, stop_network

IC_PY_TIMING = """
import json, sys, time
from pathlib import Path
from client.head_client import GenerationOptions, HeadClient
from client.identity import parse_pem
url, head, pem, prompt, n = sys.argv[1:6]
client = HeadClient(url, head, parse_pem(pem.encode(), "bench"), agent="ic-py")
start = time.perf_counter()
generation = client.generate(prompt, GenerationOptions(max_tokens=int(n)))
print(json.dumps({"tokens": len(generation.ids), "seconds": time.perf_counter() - start}))
"""


def deploy(canisters, state_dir: Path, dfx_json: Path, plan, export, parallel: int) -> tuple[float, int, str]:
    """(upload seconds, bytes uploaded, head id) of a fresh deployment."""
    deployer = Deployer(canisters, CanisterIds.of(state_dir, "local"), read_dfx(dfx_json), parallel=parallel,
                        progress=False)
    report = deployer.deploy(plan, export)
    return report.upload_seconds, report.bytes_uploaded, report.head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--prompt", default="Once upon a time, in a small village by the sea,")
    parser.add_argument("--round-seconds", default="1.0",
                        help="virtual duration of a round of the served network (icllama start --round-seconds)")
    parser.add_argument("--latency", type=int, metavar="RUNS",
                        help="only time the README's `icllama generate` RUNS times (new processes)")
    args = parser.parse_args()

    sys.path.insert(0, str(blst_binding_dir()))  # icp-py-core verifies certificates when it can
    model = resolve_model(args.model)
    plan = make_plan(read_model_spec(model), Constraints(shards=args.shards))
    identity = generate("bench", "ed25519")
    if args.latency:
        latency(model, plan, identity, args.latency, args.round_seconds)
        return
    options = GenerationOptions(max_tokens=args.tokens)
    rows: list[tuple[str, str]] = [("certificates verified by icp-py-core", str(blst_available())),
                                   ("served network: virtual seconds per round", args.round_seconds)]
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        work = Path(tmp)
        write_dfx(plan, work / "dfx.json")
        export = export_shards(model, plan, work / "shards")
        total = sum(f.size for f in export.files)
        rows.append(("model, shards, bytes to upload", f"{model.name}, {args.shards} + head, {total:,}"))

        seconds, sent, _ = deploy(LocalCanisters(LocalClient(Network(None))), work / "inprocess", work / "dfx.json",
                                  plan, export, 4)
        rows.append(("upload in-process (LocalClient), MB/s", f"{sent / seconds / 1e6:.1f}"))
        for parallel in (1, 4):
            network = start_network(work / f"net-{parallel}" / ".icllama", "--round-seconds", args.round_seconds)
            try:
                canisters = RemoteCanisters(connect(network.url, identity))
                seconds, sent, head = deploy(canisters, work / f"net-{parallel}" / ".icllama", work / "dfx.json", plan,
                                             export, parallel)
                rows.append((f"upload over HTTP, {parallel} canister(s) at a time, MB/s",
                             f"{sent / seconds / 1e6:.1f}"))
                if parallel == 4:
                    rows += generation_rows(network.url, head, identity, args.prompt, options)
            finally:
                stop_network(network)
        deployment = Deployment.create(model, Constraints(shards=args.shards))
        deployment.generate(args.prompt, GenerationOptions(max_tokens=2))  # warm, as over HTTP
        run = deployment.generate(args.prompt, options)
        rows.append((f"generate in-process (icllama run --shards {args.shards}), tok/s",
                     f"{run.network.host_tokens_per_s:.1f}"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def generation_rows(url: str, head: str, identity, prompt: str, options: GenerationOptions) -> list[tuple[str, str]]:
    client = HeadClient(url, head, identity)
    client.generate(prompt, GenerationOptions(max_tokens=2))  # warm: first-call imports and caches
    generation = client.generate(prompt, options)
    rows = [("generate over HTTP, icp-py-core, tok/s", f"{len(generation.ids) / generation.host_seconds:.1f}")]
    started, tokens = time.perf_counter(), 0
    for event in client.stream(prompt, options):
        tokens += len(event.ids)
    seconds = time.perf_counter() - started
    rows.append(("stream over HTTP (start + poll), icp-py-core, tok/s", f"{tokens / seconds:.1f}"))
    result = subprocess.run([str(ic_py_python()), "-c", IC_PY_TIMING, url, head, identity.to_pem().decode(), prompt,
                             str(options.max_tokens)], capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    timing = json.loads(result.stdout.strip().splitlines()[-1])
    rows.append(("generate over HTTP, ic-py 1.0.1, tok/s", f"{timing['tokens'] / timing['seconds']:.1f}"))
    return rows


README_GENERATE = ["generate", "-p", "What is the capital of France?", "--chat", "-n", "32", "--stream"]


def latency(model, plan, identity, runs: int, round_seconds: str) -> None:
    """Wall seconds of `icllama generate` as a user runs it (a new process each time)."""
    with tempfile.TemporaryDirectory(prefix="bench-http-latency-") as tmp:
        work = Path(tmp)
        write_dfx(plan, work / "dfx.json")
        export = export_shards(model, plan, work / "shards")
        network = start_network(work / ".icllama", "--round-seconds", round_seconds)
        try:
            _, _, head = deploy(RemoteCanisters(connect(network.url, identity)), work / ".icllama", work / "dfx.json",
                                plan, export, 4)
            pem = work / "identity.pem"
            pem.write_bytes(identity.to_pem())
            command = [sys.executable, "-m", "client.cli", *README_GENERATE, "--network", network.url,
                       "--canister", head, "--identity", str(pem), "--state-dir", str(work / ".icllama")]
            seconds = []
            for run in range(runs):
                started = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True, cwd=REPO, timeout=600)
                seconds.append(time.perf_counter() - started)
                print(f"run {run + 1}: {seconds[-1]:.2f} s", flush=True)
        finally:
            stop_network(network)
    median, longest = statistics.median(seconds), max(seconds)
    print(f"`icllama {' '.join(README_GENERATE)}` over HTTP, {runs} runs (measured, wall seconds per process): "
          f"median {median:.2f}, min {min(seconds):.2f}, max {longest:.2f}, max/median {longest / median:.2f}")


if __name__ == "__main__":
    main()
