"""Runs inside the ic-py 1.0.1 venv (tests/agent_envs.py): unchanged ic-py calling the Motoko
counter (tests/motoko/counter.mo) on icllama.

Usage: python ic_py_motoko_client.py URL COUNTER_ID. Prints one JSON object with what each call
returned, or the text of the error ic-py raised.
"""

import json
import sys

from ic.agent import Agent
from ic.candid import Types, encode
from ic.client import Client
from ic.identity import Identity

url, counter = sys.argv[1:3]
identity = Identity()
agent = Agent(identity, Client(url))
results = {
    "sender": identity.sender().to_str(),
    "before": agent.query_raw(counter, "get", encode([]))[0]["value"],
    "inc": agent.update_raw(counter, "inc", encode([]))[0]["value"],
    "add": agent.update_raw(counter, "add", encode([{"type": Types.Nat, "value": 10}]))[0]["value"],
    "after": agent.query_raw(counter, "get", encode([]))[0]["value"],
    "whoami": agent.query_raw(counter, "whoami", encode([]))[0]["value"].to_str(),
}
try:
    agent.update_raw(counter, "refuse", encode([{"type": Types.Text, "value": "refused for ic-py"}]))
    results["refuse"] = "replied"
except Exception as error:  # ic-py raises a plain Exception carrying the reject; the test judges it
    results["refuse"] = str(error)
try:
    agent.update_raw(counter, "add_then_trap", encode([{"type": Types.Nat, "value": 1000}]))
    results["add_then_trap"] = "replied"
except Exception as error:
    results["add_then_trap"] = str(error)
results["final"] = agent.query_raw(counter, "get", encode([]))[0]["value"]
print(json.dumps(results))
