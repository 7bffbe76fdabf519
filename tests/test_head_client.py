"""The head client's written-out types (for ic-py 1.0.1, whose parser cannot read head.did) agree
with head.did: values cross both ways between them and the project's Candid codec reading
head.did, field for field."""

from __future__ import annotations

import pytest
from icp_candid.candid import Types
from icp_candid.candid import decode as agent_decode
from icp_candid.candid import encode as agent_encode

from cdk.candid import decode, encode, parse_did
from client.head_client import HEAD_DID, GenerationOptions, Metrics, head_types

HEAD = parse_did(HEAD_DID.read_text())
TYPES = head_types(Types)  # icp-py-core's Types has ic-py's API
METRICS = {"instructions": 12_345_678_901, "head_instructions": 4_567, "messages": 64, "activation_bytes": 73_728,
           "virtual_seconds": 12.5, "prompt_tokens": 7, "generated_tokens": 16, "cycles": 9_876_543_210}
REPLIES = {
    "generate": {"ok": {"session": 3, "text": "Paris.", "ids": [4, 5, 6], "prompt_ids": [1, 2, 3],
                        "stop_reason": "eos", "metrics": METRICS}},
    "start": {"ok": 2**40},
    "poll": {"ok": {"session": 3, "ids": [9, 10], "text": " is", "generated": 5, "done": False, "stop_reason": "",
                    "error": "stage 2 trapped", "metrics": METRICS}},
}


@pytest.mark.parametrize("method", sorted(TYPES))
def test_arguments_encoded_by_the_client_decode_as_head_did(method):
    arg_types, _ = TYPES[method]
    request = GenerationOptions(max_tokens=9, temperature=0.5, top_k=3, top_p=0.75, min_p=0.125, repeat_penalty=1.25,
                                seed=2**40, stop=("\n", "END"), chat=True).request("Hello")
    values = [request] if method != "poll" else [2**33, 17]
    wire = agent_encode([{"type": t, "value": v} for t, v in zip(arg_types, values, strict=True)])
    assert decode(HEAD.methods[method].args, wire) == values


@pytest.mark.parametrize("method", sorted(TYPES))
def test_replies_of_head_did_decode_with_the_client_types(method):
    _, ret_types = TYPES[method]
    reply = REPLIES[method]
    (decoded,) = agent_decode(encode(HEAD.methods[method].rets, [reply]), ret_types)
    value = decoded["value"]
    if method == "poll":
        assert value["ok"]["error"] == ["stage 2 trapped"]  # the agents' form of `opt`
        value["ok"]["error"] = "stage 2 trapped"
    assert value == reply
    if method == "generate":
        assert Metrics.from_candid(value["ok"]["metrics"]) == Metrics(**METRICS)
