"""Candid codec speed, against icp-py-core's `icp_candid`, and icp_candid's score on the official suite.

Run: python benchmarks/bench_candid.py
Prints microseconds per call (best of several timeit repeats) for messages this project sends,
then how many of the suite's binary assertions each codec gets right.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

from icp_candid.candid import Types
from icp_candid.candid import decode as icp_decode
from icp_candid.candid import encode as icp_encode
from icp_candid.did_loader import DIDLoader
from icp_principal import Principal as ReferencePrincipal

from cdk.candid import CandidError, T, decode, encode, parse_did
from cdk.principal import Principal

REPO = Path(__file__).resolve().parent.parent


def best_microseconds(call: Callable[[], object], budget_seconds: float = 0.4) -> float:
    number = max(1, int(budget_seconds / max(timeit.timeit(call, number=1), 1e-7) / 5))
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def compare(label: str, ours_type, theirs_type, ours_value, theirs_value) -> None:
    blob = encode([ours_type], [ours_value])
    theirs_blob = icp_encode([{"type": theirs_type, "value": theirs_value}])
    assert decode([ours_type], theirs_blob) == [ours_value], "the two encoders disagree"
    rows = {
        "cdk.candid": (lambda: encode([ours_type], [ours_value]), lambda: decode([ours_type], blob)),
        "icp_candid": (lambda: icp_encode([{"type": theirs_type, "value": theirs_value}]),
                       lambda: icp_decode(theirs_blob, [theirs_type])),
    }
    print(f"\n{label} ({len(blob)} bytes)")
    for name, (enc, dec) in rows.items():
        e, d = best_microseconds(enc), best_microseconds(dec)
        print(f"  {name:11s} encode {e:9.1f} us   decode {d:9.1f} us   round trip {e + d:9.1f} us")


def principal_text() -> None:
    text = "rrkah-fqaaa-aaaaa-aaaaq-cai"
    ours, theirs = Principal.from_text(text), ReferencePrincipal.from_str(text)
    print("\nPrincipal text form (a canister id)")
    print(f"  cdk.principal   from_text {best_microseconds(lambda: Principal.from_text(text)):6.1f} us   "
          f"to_text {best_microseconds(ours.to_text):6.1f} us")
    print(f"  icp_principal   from_str  {best_microseconds(lambda: ReferencePrincipal.from_str(text)):6.1f} us   "
          f"to_str  {best_microseconds(theirs.to_str):6.1f} us")


def suite_scores() -> None:
    """Each codec on the suite's binary assertions, parsed by the test module's runner."""
    spec = importlib.util.spec_from_file_location("candid_suite", REPO / "tests" / "test_candid_suite.py")
    suite = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = suite  # dataclasses look their module up there
    spec.loader.exec_module(suite)
    print("\nOfficial Candid suite, binary assertions passed (prim / construct / reference):")
    for name, run in (("cdk.candid", _ours), ("icp_candid", _theirs)):
        scores = []
        for file in suite.FILES:
            assertions, did = suite._load(file)
            scores.append(f"{sum(run(a, did, i) for i, a in enumerate(assertions))}/{len(assertions)}")
        print(f"  {name:11s} " + " / ".join(scores))


def _passes(assertion, decoder: Callable[[bytes], list], failure: type[Exception]) -> bool:
    try:
        values = [decoder(blob) for blob in assertion.blobs]
    except failure:
        return assertion.form == "!:"
    except Exception:  # noqa: BLE001 - a crash (IndexError, RecursionError, ...) counts as a failed assertion
        return False
    if assertion.form == "!:":
        return False
    if len(values) == 2:
        return (values[0] == values[1]) == (assertion.form == "==")
    return True


def _ours(assertion, did: str, index: int) -> bool:
    args = parse_did(did).methods[f"t{index}"].args
    return _passes(assertion, lambda blob: decode(args, blob), CandidError)


def _theirs(assertion, did: str, index: int) -> bool:
    try:
        args = DIDLoader().load_did_source(did)["methods"][f"t{index}"].args
    except Exception:  # noqa: BLE001 - a type it cannot load fails the assertion
        return False
    return _passes(assertion, lambda blob: [r["value"] for r in icp_decode(blob, list(args) or None)], ValueError)


def main() -> None:
    activations = os.urandom(16 * 1024)
    compare("forward(session, pos, activations): record { nat64; nat32; 16 KiB blob }",
            T.record({"session": T.nat64, "pos": T.nat32, "activations": T.blob}),
            Types.Record({"session": Types.Nat64, "pos": Types.Nat32, "activations": Types.Vec(Types.Nat8)}),
            {"session": 7, "pos": 12, "activations": activations},
            {"session": 7, "pos": 12, "activations": activations})
    chunk = os.urandom(2 * 1024 * 1024 - 64)
    compare("upload_chunk: record { nat64; 2 MiB blob }",
            T.record({"offset": T.nat64, "data": T.blob}),
            Types.Record({"offset": Types.Nat64, "data": Types.Vec(Types.Nat8)}),
            {"offset": 0, "data": chunk}, {"offset": 0, "data": chunk})
    tokens = list(range(4096))
    compare("token ids: vec nat32 of 4096", T.vec(T.nat32), Types.Vec(Types.Nat32), tokens, tokens)
    request = {"prompt": "Once upon a time", "max_tokens": 64, "temperature": 0.7, "seed": 42}
    compare("generate request: record { text; opt nat32; float64; nat64 }",
            T.record({"prompt": T.text, "max_tokens": T.opt(T.nat32), "temperature": T.float64, "seed": T.nat64}),
            Types.Record({"prompt": Types.Text, "max_tokens": Types.Opt(Types.Nat32),
                          "temperature": Types.Float64, "seed": Types.Nat64}),
            request, {**request, "max_tokens": [64]})
    principal_text()
    suite_scores()


if __name__ == "__main__":
    main()
