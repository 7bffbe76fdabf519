"""Load on the IC HTTP gateway: concurrent icp-py-core clients making update calls to a counter.

Starts `icllama start` as a real subprocess on a free port with a fresh state directory,
installs the test counter canister through the management canister over HTTP, then runs
CLIENTS concurrent clients (threads spread over a few processes), each with its own Ed25519
identity and Agent, making CALLS update calls each: icp-py-core's default path, a synchronous
/api/v4 call answered with a certificate (or 202, then read_state polling). It checks that every
call was answered and that the counter equals the number of calls, and prints calls/s, the
network process's CPU time per call and its resident memory after each load round.

Memory: finished request statuses are kept 5 minutes (as on the IC), so within that window the
process holds about a kilobyte per call for them; past it they are pruned.

    python3 -m benchmarks.bench_gateway [--clients 32] [--calls 25] [--rounds 2] [--processes 4]
    (from the repository root)

Certificate verification is off in the clients so that the figure is the gateway's, not the
clients' BLS verification; tests/test_gateway_icp_py_core.py covers verification.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from multiprocessing import Barrier, Process, Queue
from pathlib import Path

from icp_candid.candid import Types, encode
from icp_identity import Identity

from tests.gateway_support import agent_for, install_counter, start_network, stop_network


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _client_process(url: str, canister_id: str, threads: int, calls: int, start: Barrier, results: Queue) -> None:
    """One process of client threads (several processes, so the clients are not bound by one GIL)."""
    answered = 0
    failures: list[str] = []
    lock = threading.Lock()
    agents = [agent_for(url, Identity()) for _ in range(threads)]

    def client(agent) -> None:
        nonlocal answered
        for _ in range(calls):
            try:
                agent.update(canister_id, "inc", encode([]), verify_certificate=False)
                with lock:
                    answered += 1
            except Exception as error:  # counted and reported, the run goes on
                with lock:
                    failures.append(repr(error))

    workers = [threading.Thread(target=client, args=(agent,)) for agent in agents]
    start.wait()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put((answered, failures))


def load(url: str, canister_id: str, clients: int, calls: int, processes: int) -> tuple[int, list[str], float]:
    """`clients` concurrent clients making `calls` update calls each; returns (answered, failures, s)."""
    start = Barrier(processes + 1)
    results: Queue = Queue()
    shares = [clients // processes + (index < clients % processes) for index in range(processes)]
    children = [Process(target=_client_process, args=(url, canister_id, share, calls, start, results))
                for share in shares]
    for child in children:
        child.start()
    start.wait()
    began = time.perf_counter()
    answered, failures = 0, []
    for _ in children:
        done, failed = results.get()
        answered += done
        failures += failed
    seconds = time.perf_counter() - began
    for child in children:
        child.join()
    return answered, failures, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--calls", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=2, help="load rounds, to see whether memory grows")
    parser.add_argument("--processes", type=int, default=4, help="client processes sharing the clients")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as state:
        network = start_network(Path(state))
        url, pid = network.url, network.process.pid
        try:
            canister_id = install_counter(agent_for(url, Identity()))
            reader = agent_for(url)
            print(f"network {url} (pid {pid}); counter {canister_id}; "
                  f"{args.clients} clients x {args.calls} update calls per load round")
            print(f"gateway RSS before load: {rss_kib(pid) / 1024:.1f} MiB")
            total_calls = 0
            for load_round in range(1, args.rounds + 1):
                cpu_before = cpu_seconds(pid)
                answered, failures, seconds = load(url, canister_id, args.clients, args.calls, args.processes)
                gateway_cpu_ms = (cpu_seconds(pid) - cpu_before) / max(answered, 1) * 1000
                total_calls += args.clients * args.calls
                counter = reader.query(canister_id, "get", encode([]), return_type=[Types.Nat])[0]["value"]
                print(f"load round {load_round}: {answered}/{args.clients * args.calls} answered in "
                      f"{seconds:.1f} s = {answered / seconds:.1f} calls/s; counter {counter} "
                      f"(expected {total_calls}); network process: {gateway_cpu_ms:.1f} ms CPU per call, "
                      f"RSS {rss_kib(pid) / 1024:.1f} MiB")
                for failure in failures[:5]:
                    print(f"  failure: {failure}")
                if failures or counter != total_calls:
                    return 1
        finally:
            stop_network(network)
    return 0


if __name__ == "__main__":
    sys.exit(main())
