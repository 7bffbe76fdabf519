"""One generation as the head keeps it: the request, the token stream, and what it cost.

A `Session` is immutable: the head replaces it with each generated token, wrapped in `frozen`,
so the runtime's heap snapshot of every message does not walk its growing ids and text again;
each new version's size is the last one's plus what the token added (`session_bytes_after_token`),
so the runtime does not walk them even once per token.
Its `Costs` change with every message and are kept apart while it runs. What is committed at
each await (what `poll` sees) is the progress so far.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from canisters.llama.generation import TokenStream
from canisters.llama.sampler import SamplingParams
from cdk import Frozen

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class Fees:
    """The fee schedule the head prices its metrics with, scaled to its subnet."""

    execution_base: int
    cycles_per_billion_instructions: int
    call: int
    call_byte: int

    @classmethod
    def from_candid(cls, value: dict[str, int]) -> Fees:
        return cls(value["execution_base"], value["cycles_per_billion_instructions"], value["call"],
                   value["call_byte"])


@dataclass(frozen=True)
class Request:
    prompt: str
    max_tokens: int
    params: SamplingParams
    chat: bool

    @classmethod
    def from_candid(cls, value: dict[str, Any]) -> Request:
        """Raises SamplingError or ValueError with what is wrong."""
        if value["max_tokens"] < 1:
            raise ValueError("max_tokens must be at least 1")
        params = SamplingParams(
            temperature=value["temperature"], top_k=value["top_k"], top_p=value["top_p"], min_p=value["min_p"],
            repeat_penalty=value["repeat_penalty"], seed=value["seed"], stop=tuple(value["stop"]))
        return cls(value["prompt"], value["max_tokens"], params, value["chat"])


@dataclass
class Costs:
    stage_instructions: int = 0
    head_instructions: int = 0
    messages: int = 0  # inter-canister requests and replies
    executions: int = 0  # messages executed, by the stages and by the head
    activation_bytes: int = 0

    def priced(self, fees: Fees) -> int:
        instructions = self.stage_instructions + self.head_instructions
        return (self.executions * fees.execution_base
                + instructions * fees.cycles_per_billion_instructions // NS_PER_S
                + self.messages // 2 * fees.call + self.activation_bytes * fees.call_byte)


@dataclass(frozen=True)
class Session:
    id: int
    request: Request
    prompt_ids: tuple[int, ...]
    started_ns: int
    stream: TokenStream
    pieces: tuple[str, ...] = ()  # the text each generated token made safe to show
    costs: Costs = field(default_factory=Costs)  # final once it ended; while it runs the head keeps them
    ended_ns: int | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.ended_ns is not None

    @property
    def stop_reason(self) -> str:
        if self.error is not None:
            return "error"
        return self.stream.stop_reason or ""

    def metrics(self, fees: Fees, now_ns: int) -> dict[str, Any]:
        c = self.costs
        return {
            "instructions": c.stage_instructions + c.head_instructions,
            "head_instructions": c.head_instructions,
            "messages": c.messages,
            "activation_bytes": c.activation_bytes,
            "virtual_seconds": ((self.ended_ns or now_ns) - self.started_ns) / NS_PER_S,
            "prompt_tokens": len(self.prompt_ids),
            "generated_tokens": len(self.stream.ids),
            "cycles": c.priced(fees),
        }

    def progress(self, start: int, fees: Fees, now_ns: int) -> dict[str, Any]:
        return {
            "session": self.id,
            "ids": list(self.stream.ids[start:]),
            "text": "".join(self.pieces[start:]),
            "generated": len(self.stream.ids),
            "done": self.done,
            "stop_reason": self.stop_reason,
            "error": self.error,
            "metrics": self.metrics(fees, now_ns),
        }

    def generation(self, fees: Fees, now_ns: int) -> dict[str, Any]:
        return {
            "session": self.id,
            "text": self.stream.text,
            "ids": list(self.stream.ids),
            "prompt_ids": list(self.prompt_ids),
            "stop_reason": self.stop_reason,
            "metrics": self.metrics(fees, now_ns),
        }


def session_bytes_after_token(before: Frozen[Session], after: Session) -> int | None:
    """The heap bytes of `after`, one token past `before`: the measured size of `before` plus the
    growth of its ids, text and pieces and the new token's objects (None while `before` has not
    been measured: the runtime then measures `after` itself). The stream's small fixed-size parts
    (detokenizer and stop-string state) are taken as unchanged in size."""
    if before.size_bytes is None:
        return None
    old, new = before.value, after
    size = sys.getsizeof
    return (before.size_bytes
            + size(new.stream.ids) - size(old.stream.ids) + size(new.stream.ids[-1])
            + size(new.stream.text) - size(old.stream.text)
            + size(new.pieces) - size(old.pieces) + size(new.pieces[-1]))
