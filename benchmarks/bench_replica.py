"""Host time the simulated IC spends per inter-canister call round trip (the runtime's own
overhead: Candid encoding and decoding, snapshots, routing, rounds), with a 16 KiB blob.

Each ingress message makes the Caller canister call Counter.echo with the blob and await the
reply: one ingress execution, one request, one response execution. The figure divides the
wall time of many such round trips, rounds included, by their number. Target: under 200 us.

    python benchmarks/bench_replica.py [--calls N]
"""

from __future__ import annotations

import argparse
import time

from cdk.candid import decode, encode
from replica.config import NetworkConfig
from replica.inprocess import LocalClient
from replica.network import Network

T = 10**12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--blob-kib", type=int, default=16)
    args = parser.parse_args()

    network = Network(None, NetworkConfig(genesis_time_ns=0))
    client = LocalClient(network)
    counter = client.install("tests.canisters_for_tests.counter:Counter", 0, cycles=10**16)
    caller = client.install("tests.canisters_for_tests.caller:Caller", cycles=10**16)
    blob = bytes(args.blob_kib * 1024)
    client.update(caller, "ping", counter, blob)  # warm up imports and caches

    # Many calls in flight at once, so the per-round fixed costs are shared as on a busy subnet.
    start = time.perf_counter()
    request_ids = [client.submit(caller, "ping", counter, blob) for _ in range(args.calls)]
    rounds = network.run_until_idle()
    elapsed = time.perf_counter() - start
    assert all(network.status(r).status == "replied" for r in request_ids)
    batched_us = elapsed / args.calls * 1e6

    # One call at a time: every round trip pays its three rounds alone.
    sequential = max(1, args.calls // 10)
    start = time.perf_counter()
    for _ in range(sequential):
        client.update(caller, "ping", counter, blob)
    sequential_us = (time.perf_counter() - start) / sequential * 1e6

    codec_us = candid_us_per_round_trip(network, caller, counter, blob, repeats=min(args.calls, 500))

    print(f"blob {args.blob_kib} KiB, {args.calls} concurrent round trips in {rounds} rounds: "
          f"{batched_us:.1f} us host time per round trip (ingress + call + reply, encode/decode included)")
    print(f"{sequential} sequential round trips: {sequential_us:.1f} us host time each")
    print(f"of which Candid (cdk.candid encode + decode of the same messages): {codec_us:.1f} us; "
          f"the runtime's own share: {batched_us - codec_us:.1f} us")
    print(f"target: < 200 us per round trip -> {'met' if batched_us < 200 else 'NOT met'} (concurrent)")


def candid_us_per_round_trip(network: Network, caller: object, counter: object, blob: bytes,
                             repeats: int) -> float:
    """Host time of the Candid work in one ping round trip, done directly: the ingress argument,
    the request and the reply are each encoded once and decoded once, and so is the final reply."""
    with network.lock:
        ping_args, ping_rets = network.subnet.method_types(caller, "ping")
        echo_args, echo_rets = network.subnet.method_types(counter, "echo")
    start = time.perf_counter()
    for _ in range(repeats):
        decode(ping_args, encode(ping_args, [counter, blob]))
        decode(echo_args, encode(echo_args, [blob]))
        decode(echo_rets, encode(echo_rets, [blob]))
        decode(ping_rets, encode(ping_rets, [len(blob)]))
    return (time.perf_counter() - start) / repeats * 1e6


if __name__ == "__main__":
    main()
