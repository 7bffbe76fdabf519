"""Runs inside the ic-py 1.0.1 venv (tests/agent_envs.py), unchanged ic-py against icllama.

Usage: python ic_py_client.py URL COUNTER_ID COUNTER_DID_PATH. Prints one JSON object: per
identity kind, what its update and query calls returned.
"""

import json
import sys

from ic.agent import Agent
from ic.candid import Types, encode
from ic.canister import Canister
from ic.client import Client
from ic.identity import Identity

url, counter, did_path = sys.argv[1:4]
identities = {
    "ed25519": Identity(),
    "secp256k1": Identity(type="secp256k1"),
    "anonymous": Identity(anonymous=True),
}
results = {}
for kind, identity in identities.items():
    agent = Agent(identity, Client(url))
    before = agent.query_raw(counter, "get", encode([]))[0]["value"]
    incremented = agent.update_raw(counter, "inc", encode([]))[0]["value"]
    after = agent.query_raw(counter, "get", encode([]))[0]["value"]
    whoami = agent.query_raw(counter, "whoami", encode([]))[0]["value"]
    created = agent.update_raw(
        "aaaaa-aa", "provisional_create_canister_with_cycles",
        encode([{"type": Types.Record({"amount": Types.Opt(Types.Nat)}), "value": {"amount": []}}]),
        [Types.Record({"canister_id": Types.Principal})],
    )[0]["value"]["canister_id"]
    results[kind] = {
        "before": before,
        "incremented": incremented,
        "after": after,
        "whoami": whoami.to_str(),
        "sender": identity.sender().to_str(),
        "created": created.to_str(),
    }
try:
    canister = Canister(Agent(Identity(), Client(url)), counter, open(did_path).read())
    results["canister_class"] = {"inc": canister.inc()[0], "get": canister.get()[0]}
except Exception as error:  # reported, and judged by the test
    results["canister_class"] = {"error": repr(error)}
print(json.dumps(results))
