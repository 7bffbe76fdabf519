"""Time and memory to decode (or refuse) each hostile Candid message of at most 64 KiB
(tests/candid_hostile.py): the median and spread of several runs per message, and the peak memory
of one run under tracemalloc (measured separately: tracing slows decoding several times).
Target: every message within 50 ms and 20 MB.

    python -m benchmarks.bench_candid_hostile [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import tracemalloc

from cdk.candid import CandidError, decode
from tests.candid_hostile import hostile_messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.runs} runs each (measured)")
    print(f"{'message':34} {'bytes':>6} {'median ms':>10} {'min..max ms':>14} {'peak MB':>8}  outcome")
    worst_ms = worst_mb = 0.0
    for name, types, data in hostile_messages():
        times = []
        outcome = "decoded"
        for _ in range(args.runs):
            start = time.perf_counter()
            try:
                decode(types, data)
            except CandidError as e:
                outcome = f"refused: {str(e)[:40]}..."
            times.append((time.perf_counter() - start) * 1000)
        tracemalloc.start()
        try:
            decode(types, data)
        except CandidError:
            pass
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        median = statistics.median(times)
        worst_ms, worst_mb = max(worst_ms, median), max(worst_mb, peak)
        print(f"{name:34} {len(data):6} {median:10.1f} {min(times):6.1f}..{max(times):<6.1f} {peak:8.2f}  {outcome}")
    print(f"worst median {worst_ms:.1f} ms, worst peak {worst_mb:.2f} MB (targets: 50 ms, 20 MB)")


if __name__ == "__main__":
    main()
