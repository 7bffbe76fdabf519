"""Hostile input at the canisters' own door, on a deployed model (in-process): argument bytes that
are not the method's Candid, and well-typed values that are absurd. Each gets a clear refusal
(a reject naming the method and the decoding problem, or the method's `err`), within the message
limits, and changes nothing: the shards, the sessions and what the model generates stay as they
were.

The layers in front of this are tested on their own: the HTTP gateway and its CBOR envelopes
(test_gateway_bad_requests.py, test_auth.py), the Candid decoder's bounds (test_candid_limits.py),
GGUF files (test_gguf_file.py), uploaded chunks (test_upload.py, test_yblock.py), the command
line (test_cli_run.py, test_plan_cli.py, test_gateway_cli.py), and all three parsers under
fuzzing (test_fuzz.py).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest

from cdk.candid import T, encode
from cdk.principal import Principal
from client.agent import LocalCanisters
from replica.api_types import IngressMessage, RequestStatus
from replica.inprocess import CallFailed, LocalClient
from replica.network import Network
from tests.deployed_model import Deployment, ExportedModel, deploy, export_model, greedy

OWNER = Principal.self_authenticating(b"icllama test: the deploying controller")
PROMPT = "the cat sat on the mat"
TOKENS = 8
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> ExportedModel:
    return export_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def network() -> Network:
    return Network(None)


@pytest.fixture(scope="module")
def deployed(network: Network, exported: ExportedModel, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return deploy(LocalCanisters(LocalClient(network, OWNER)), exported, tmp_path_factory.mktemp("client"))


@pytest.fixture(scope="module")
def expected(deployed: Deployment) -> list[int]:
    return deployed.head().update("generate", greedy(PROMPT, TOKENS))["ok"]["ids"]


def submit_raw(network: Network, canister: Principal, method: str, arg: bytes) -> RequestStatus:
    """An update call carrying `arg` as its bytes, whatever they are, as an agent would send them."""
    request_id = hashlib.sha256(arg + method.encode() + str(time.time_ns()).encode()).digest()
    network.submit(IngressMessage(request_id, OWNER, canister, method, arg, time.time_ns() + 60 * 10**9, canister))
    while (status := network.status(request_id)).status not in ("replied", "rejected"):
        network.execute_round()
    return status


def unchanged(deployed: Deployment, expected: list[int]) -> None:
    for name in deployed.ids:
        status = deployed.canister(name).query("upload_status", f"{name}.gguf")
        assert status["loaded"] and status["sha256"] == next(f.sha256 for f in deployed.exported.export.files
                                                              if f.shard == name)
    assert deployed.head().query("status")["running_sessions"] == 0
    assert all(deployed.yblock(n).query("status")["sessions"] == 0 for n in deployed.yblock_names)
    assert deployed.head().update("generate", greedy(PROMPT, TOKENS))["ok"]["ids"] == expected


def _nested_opts(depth: int) -> bytes:
    """A type table of `depth` nested `opt`s and a value as deep: a stack bomb."""
    table = b"".join(b"\x6e" + _leb(i + 1) for i in range(depth - 1)) + b"\x6e\x7f"
    return b"DIDL" + _leb(depth) + table + b"\x01\x00" + b"\x01" * depth


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


NOT_THE_ARGUMENTS = {
    "not Candid": b"GET / HTTP/1.1\r\n\r\n",
    "the magic alone": b"DIDL",
    "no arguments": encode([], []),
    "another type": encode([T.nat, T.text], [7, "x"]),
    "a vector of 2^60 nulls": b"DIDL\x01\x6d\x7f\x01\x00" + _leb(2**60),
    "a blob longer than the message": b"DIDL\x01\x6d\x7b\x01\x00" + _leb(2**40) + b"\x00" * 16,
    "opt nested 100000 deep": _nested_opts(100_000),
    "1.9 MiB of garbage": b"DIDL" + bytes(range(256)) * (19 * MiB // 2560),
}
TARGETS = [("head", "generate"), ("head", "upload_chunk"), ("head", "poll"), ("yblock_0", "upload_chunk"),
           ("yblock_1", "forward"), ("yblock_1", "reset_session")]


@pytest.mark.parametrize("name,method", TARGETS)
def test_bytes_that_are_not_the_arguments_are_refused_and_change_nothing(
        network: Network, deployed: Deployment, expected: list[int], name: str, method: str) -> None:
    canister = deployed.ids[name]
    for label, arg in NOT_THE_ARGUMENTS.items():
        if method == "poll":  # a query: answered without a round
            result = network.query(OWNER, canister, method, arg)
            code, message = result.error_code, result.reject_message
        else:
            status = submit_raw(network, canister, method, arg)
            assert status.status == "rejected", label
            code, message = status.error_code, status.reject_message
        assert code == "IC0503", (label, code, message)
        # The replica decodes a Python canister's arguments; a wasm yblock decodes its own and traps.
        refusal = (f"yblock: the argument of {method} " if name != "head" and deployed.engine == "wasm"
                   else f"failed to decode the arguments of {canister.to_text()}.{method}")
        assert refusal in message, (label, message)
        assert len(message) < 2000, label  # the error says what is wrong, it does not echo the input
    unchanged(deployed, expected)


ABSURD_REQUESTS: dict[str, tuple[dict[str, Any], str | None]] = {
    # field overrides of a greedy request -> the refusal's words (None: a valid request, served)
    "NaN temperature": ({"temperature": float("nan")}, "temperature must be a finite number"),
    "infinite temperature": ({"temperature": float("inf")}, "temperature must be a finite number"),
    "NaN top_p": ({"temperature": 0.7, "top_p": float("nan")}, "top_p"),
    "negative min_p": ({"temperature": 0.7, "min_p": -1.0}, "min_p"),
    "zero repeat penalty": ({"repeat_penalty": 0.0}, "repeat_penalty"),
    "NaN repeat penalty": ({"repeat_penalty": float("nan")}, "repeat_penalty"),
    "no tokens to generate": ({"max_tokens": 0}, "max_tokens must be at least 1"),
    "2^32-1 tokens": ({"max_tokens": 2**32 - 1}, "exceeds the context"),
    "a 1.5 MiB prompt": ({"prompt": "the cat " * (3 * MiB // 16)}, "exceeds the context"),
    "chat without a template": ({"chat": True}, "no chat template"),
    "the largest top_k and seed": ({"temperature": 0.7, "top_k": 2**32 - 1, "seed": 2**64 - 1}, None),
    "a thousand stop strings": ({"stop": [f"stop{i}" for i in range(1000)]}, None),
    "special tokens as text": ({"prompt": "<s></s><unk> and \x00\x01 control"}, None),
}


@pytest.mark.parametrize("label", ABSURD_REQUESTS)
def test_absurd_generate_requests_are_refused_clearly_or_served(deployed: Deployment, expected: list[int],
                                                                 label: str) -> None:
    fields, refusal = ABSURD_REQUESTS[label]
    for method in ("generate", "start"):
        reply = deployed.head().update(method, {**greedy(PROMPT, TOKENS), **fields})
        if refusal is None:
            assert "ok" in reply, reply
        else:
            assert "err" in reply and refusal in reply["err"] and "generate refused" in reply["err"], reply
            assert len(reply["err"]) < 1000
    network_idle(deployed)
    unchanged(deployed, expected)


def test_absurd_query_arguments_are_answered_clearly(deployed: Deployment, expected: list[int]) -> None:
    head = deployed.head()
    for session in (0, 2**64 - 1):
        assert f"has no session {session}" in head.query("poll", session, 0)["err"]
        assert f"has no session {session}" in head.query("result", session)["err"]
    session = head.update("generate", greedy(PROMPT, TOKENS))["ok"]["session"]
    beyond = head.query("poll", session, 2**32 - 1)["ok"]  # past the end: nothing new, and done
    assert beyond["ids"] == [] and beyond["done"] and beyond["generated"] == TOKENS
    n_vocab = deployed.exported.plan.n_vocab
    with pytest.raises(CallFailed, match=f"{2**32 - 1}"):
        head.query("detokenize", [1, 2**32 - 1])
    assert head.query("detokenize", list(range(3, n_vocab)))  # every real token decodes
    unchanged(deployed, expected)


def network_idle(deployed: Deployment) -> None:
    """Runs the network until the started sessions (and their KV releases) are done."""
    client = deployed.owner.client
    client.network.run_until_idle()
