"""A Python client of the head canister: `HeadClient(url, canister_id, identity)`.

    client = HeadClient("http://127.0.0.1:4943", head_id, identity)
    result = client.generate("What is the capital of France?", GenerationOptions(max_tokens=32, chat=True))
    for event in client.stream("Once upon a time"):
        print(event.text, end="", flush=True)

`generate` is one update call that returns when the generation is done; `stream` calls `start`
(an update that returns the session at once) and then polls the session with `poll` queries,
yielding the text of each batch of new tokens as the head produces them.

Two real agents can carry the calls:
- icp-py-core (the default), with certificates verified when the blst binding is importable
  (client.agent.connect);
- ic-py 1.0.1 (`agent="ic-py"`), which needs its own environment (cbor2<6), its Agent unchanged
  on a transport with a longer timeout (`_ic_py_client`).
Each encodes and decodes with its own Candid codec. ic-py's .did parser cannot read head.did (it
takes the field name `text` for the type keyword), so the few types this client needs are
written out below (`head_types`) with the agents' common `Types` API, the same for both; a test
checks them against head.did with the project's own Candid codec.

This module imports neither agent nor the replica at module level, so it runs in either
environment.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from client.identity import Identity

HEAD_DID = Path(__file__).resolve().parents[1] / "canisters" / "head" / "head.did"
AgentName = Literal["icp-py-core", "ic-py"]
# Polls back off from the first interval to the last while no new token has arrived: quick
# enough to show tokens as they come, without spinning on a network that computes them.
POLL_INTERVALS_S = (0.02, 0.05, 0.1, 0.2)
IC_PY_POLL_DELAY_S = 0.05
UPDATE_TIMEOUT_S = 3600.0  # a whole generation is one update call


class HeadError(Exception):
    """The head refused or failed a generation, or the call was rejected; the text says why."""


@dataclass(frozen=True)
class GenerationOptions:
    """What GenerateRequest carries besides the prompt; the defaults are `icllama run`'s (greedy)."""

    max_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    chat: bool = False

    def request(self, prompt: str) -> dict[str, Any]:
        return {"prompt": prompt, "max_tokens": self.max_tokens, "temperature": self.temperature,
                "top_k": self.top_k, "top_p": self.top_p, "min_p": self.min_p,
                "repeat_penalty": self.repeat_penalty, "seed": self.seed, "stop": list(self.stop), "chat": self.chat}


@dataclass(frozen=True)
class Metrics:
    """What the generation cost on the (simulated) IC, as the head measured it."""

    instructions: int
    head_instructions: int
    messages: int
    activation_bytes: int
    virtual_seconds: float
    prompt_tokens: int
    generated_tokens: int
    cycles: int

    @classmethod
    def from_candid(cls, value: dict[str, Any]) -> Metrics:
        return cls(**{f.name: value[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Generation:
    session: int
    text: str
    ids: tuple[int, ...]
    prompt_ids: tuple[int, ...]
    stop_reason: str  # "eos", "stop" or "max_tokens"
    metrics: Metrics
    host_seconds: float  # wall time of the call, as this client saw it


@dataclass(frozen=True)
class StreamEvent:
    """New tokens of a started session (or its end, when `done`)."""

    session: int
    ids: tuple[int, ...]  # the ids new since the previous event
    text: str  # the text they complete (it may lag a token that splits a character)
    generated: int  # ids generated so far
    done: bool
    stop_reason: str
    metrics: Metrics


@dataclass(frozen=True)
class HeadClient:
    url: str
    canister_id: str
    identity: Identity | None = None  # None: the anonymous principal
    agent: AgentName = "icp-py-core"
    _backend: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.agent not in ("icp-py-core", "ic-py"):
            raise ValueError(f"agent must be 'icp-py-core' or 'ic-py', got {self.agent!r}")
        object.__setattr__(self, "_backend", _Backend(self.agent, self.url, self.canister_id, self.identity))

    def generate(self, prompt: str, options: GenerationOptions = GenerationOptions()) -> Generation:
        start = time.perf_counter()
        value = _ok(self._backend.update("generate", options.request(prompt)))
        return Generation(value["session"], value["text"], tuple(value["ids"]), tuple(value["prompt_ids"]),
                          value["stop_reason"], Metrics.from_candid(value["metrics"]), time.perf_counter() - start)

    def stream(self, prompt: str, options: GenerationOptions = GenerationOptions()) -> Iterator[StreamEvent]:
        session = _ok(self._backend.update("start", options.request(prompt)))
        received, idle = 0, 0
        while True:
            progress = _ok(self._backend.query("poll", session, received))
            event = StreamEvent(session, tuple(progress["ids"]), progress["text"], progress["generated"],
                                progress["done"], progress["stop_reason"], Metrics.from_candid(progress["metrics"]))
            if progress["error"]:
                raise HeadError(f"generation session {session} failed: {progress['error'][0]}")
            if event.ids or event.done:
                received += len(event.ids)
                idle = 0
                yield event
                if event.done:
                    return
            else:
                time.sleep(POLL_INTERVALS_S[min(idle, len(POLL_INTERVALS_S) - 1)])
                idle += 1


def _ok(reply: dict[str, Any]) -> Any:
    if "err" in reply:
        raise HeadError(reply["err"])
    return reply["ok"]


# --- the agents --------------------------------------------------------------------------------------
def head_types(T: Any) -> dict[str, tuple[list[Any], list[Any]]]:
    """(argument types, result types) of the head methods this client calls, built with an agent's
    `Types` (ic-py's, or icp-py-core's, which has the same API): exactly head.did's."""
    metrics = T.Record({"instructions": T.Nat64, "head_instructions": T.Nat64, "messages": T.Nat64,
                        "activation_bytes": T.Nat64, "virtual_seconds": T.Float64, "prompt_tokens": T.Nat32,
                        "generated_tokens": T.Nat32, "cycles": T.Nat64})
    request = T.Record({"prompt": T.Text, "max_tokens": T.Nat32, "temperature": T.Float32, "top_k": T.Nat32,
                        "top_p": T.Float32, "min_p": T.Float32, "repeat_penalty": T.Float32, "seed": T.Nat64,
                        "stop": T.Vec(T.Text), "chat": T.Bool})
    generation = T.Record({"session": T.Nat64, "text": T.Text, "ids": T.Vec(T.Nat32), "prompt_ids": T.Vec(T.Nat32),
                           "stop_reason": T.Text, "metrics": metrics})
    progress = T.Record({"session": T.Nat64, "ids": T.Vec(T.Nat32), "text": T.Text, "generated": T.Nat32,
                         "done": T.Bool, "stop_reason": T.Text, "error": T.Opt(T.Text), "metrics": metrics})
    return {
        "generate": ([request], [T.Variant({"ok": generation, "err": T.Text})]),
        "start": ([request], [T.Variant({"ok": T.Nat64, "err": T.Text})]),
        "poll": ([T.Nat64, T.Nat32], [T.Variant({"ok": progress, "err": T.Text})]),
    }


class _Backend:
    """One agent library's Agent, Candid codec and error conventions."""

    def __init__(self, agent_name: AgentName, url: str, canister_id: str, identity: Identity | None):
        self.canister_id = canister_id
        if agent_name == "icp-py-core":
            from icp_candid.candid import Types, encode

            from client.agent import connect

            connection = connect(url, identity)
            self.agent, self.verify = connection.agent, connection.verify_certificates
        else:
            from ic.agent import Agent
            from ic.candid import Types, encode
            from ic.identity import Identity as IcPyIdentity

            self.agent = Agent(identity.ic_py() if identity is not None else IcPyIdentity(anonymous=True),
                               _ic_py_client(url))
        self.agent_name, self.types, self.encode = agent_name, head_types(Types), encode

    def _arg(self, method: str, args: tuple[Any, ...]) -> tuple[bytes, list[Any]]:
        arg_types, ret_types = self.types[method]
        return self.encode([{"type": t, "value": v} for t, v in zip(arg_types, args, strict=True)]), ret_types

    def update(self, method: str, *args: Any) -> Any:
        arg, rets = self._arg(method, args)
        try:
            if self.agent_name == "icp-py-core":
                reply = self.agent.update_raw(self.canister_id, method, arg, return_type=rets,
                                              verify_certificate=self.verify, timeout=UPDATE_TIMEOUT_S)
            else:  # ic-py polls an update's status every second unless told otherwise
                reply = self.agent.update_raw(self.canister_id, method, arg, rets, delay=IC_PY_POLL_DELAY_S,
                                              timeout=UPDATE_TIMEOUT_S)
        except Exception as e:  # icp-py-core raises ReplicaReject/TransportError, ic-py a bare Exception
            raise HeadError(f"{method} on the head canister {self.canister_id} failed: {e}") from None
        return reply[0]["value"]

    def query(self, method: str, *args: Any) -> Any:
        arg, rets = self._arg(method, args)
        try:
            if self.agent_name == "icp-py-core":  # its default gives up after 30 s, shorter than a long round
                reply = self.agent.query_raw(self.canister_id, method, arg, rets, timeout=UPDATE_TIMEOUT_S)
            else:
                reply = self.agent.query_raw(self.canister_id, method, arg, rets)
        except Exception as e:
            raise HeadError(f"{method} on the head canister {self.canister_id} failed: {e}") from None
        if isinstance(reply, (str, bytes)):  # ic-py returns a rejected query's message instead of raising
            raise HeadError(f"{method} on the head canister {self.canister_id} was rejected: {reply!r}")
        return reply[0]["value"]


def _ic_py_client(url: str) -> Any:
    """ic-py's Client (its /api/v2 endpoints, its return values) on one keep-alive httpx pool with
    a long timeout. Its own sends each request through `httpx.post` with httpx's default timeout
    of 5 s, which a request waiting out a busy round of a long generation exceeds, and with a new
    TLS context every time."""
    import httpx
    from ic.client import Client

    class PooledClient(Client):
        def __init__(self, url: str):
            super().__init__(url)
            self.http = httpx.Client(timeout=UPDATE_TIMEOUT_S)

        def _post(self, path: str, data: bytes) -> httpx.Response:
            return self.http.post(self.url + path, content=data, headers={"Content-Type": "application/cbor"})

        def query(self, canister_id: str, data: bytes) -> bytes:
            return self._post(f"/api/v2/canister/{canister_id}/query", data).content

        def call(self, canister_id: str, req_id: bytes, data: bytes) -> bytes:
            self._post(f"/api/v2/canister/{canister_id}/call", data)
            return req_id

        def read_state(self, canister_id: str, data: bytes) -> bytes:
            return self._post(f"/api/v2/canister/{canister_id}/read_state", data).content

        def status(self) -> bytes:
            return self.http.get(self.url + "/api/v2/status").content

    return PooledClient(url)
