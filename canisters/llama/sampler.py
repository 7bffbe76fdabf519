"""Choosing the next token from logits, and stopping at stop strings.

The sampler follows llama.cpp's default chain and semantics (src/llama-sampler.cpp, common's
default order): repetition penalty, top-k, top-p, min-p, temperature, then a draw from the softmax.
A temperature of 0 or less is greedy (the highest logit; the lowest id on ties).

Every draw comes from numpy's PCG64 seeded with (seed, step), never from a generator carried
between steps: a run that resumes, or whose sampling happens in another canister, draws exactly
what a single uninterrupted run draws. (llama.cpp's own generator is a different one, so seeded
draws do not reproduce llama.cpp's; the probabilities they draw from are llama.cpp's.)

Stop strings are matched on the decoded text, across token boundaries: text that could still
be the start of a stop string is held back until it is resolved, and the text is cut before it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from canisters.llama.meter import Meter, NullMeter

_MAX_SEED = 2**64 - 1


class SamplingError(ValueError):
    """Bad sampling parameters or logits; the message says which and what is allowed."""


@dataclass(frozen=True)
class SamplingParams:
    """llama.cpp's defaults, except the seed, which must be fixed for replicas to agree."""

    temperature: float = 0.8  # <= 0: greedy
    top_k: int = 40  # <= 0: off
    top_p: float = 0.95  # 1.0: off
    min_p: float = 0.05  # 0.0: off
    repeat_penalty: float = 1.0  # 1.0: off
    repeat_last_n: int = 64  # how many of the latest tokens are penalized; 0: off
    seed: int = 0
    stop: tuple[str, ...] = ()  # stop strings, matched on the decoded text

    def __post_init__(self) -> None:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.top_k, self.repeat_last_n, self.seed)):
            raise SamplingError(f"top_k, repeat_last_n and seed must be integers; got {self}")
        numbers = (self.temperature, self.top_p, self.min_p, self.repeat_penalty)
        if not all(isinstance(v, (int, float)) for v in numbers):
            raise SamplingError(f"temperature, top_p, min_p and repeat_penalty must be numbers; got {self}")
        checks = (
            (math.isfinite(self.temperature), "temperature must be a finite number (<= 0 means greedy)"),
            (0.0 < self.top_p <= 1.0, "top_p must be in (0, 1] (1 turns it off)"),
            (0.0 <= self.min_p <= 1.0, "min_p must be in [0, 1] (0 turns it off)"),
            (math.isfinite(self.repeat_penalty) and self.repeat_penalty > 0.0,
             "repeat_penalty must be a positive number (1 turns it off)"),
            (self.repeat_last_n >= 0, "repeat_last_n must be >= 0 (0 turns the penalty off)"),
            (0 <= self.seed <= _MAX_SEED, f"seed must be an integer in [0, {_MAX_SEED}]"),
            (isinstance(self.stop, tuple) and all(isinstance(s, str) and s for s in self.stop),
             "stop must be a tuple of non-empty strings"),
        )
        for ok, message in checks:
            if not ok:
                raise SamplingError(f"{message}; got {self}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def sample(logits: np.ndarray, params: SamplingParams, step: int, recent_tokens: Sequence[int] = (),
           meter: Meter | None = None) -> int:
    """The next token id.

    `step` numbers the draws of one generation (0 for the first generated token); `recent_tokens`
    are the latest token ids (prompt and generated), of which the last `repeat_last_n` are penalized.
    """
    meter = meter or NullMeter()
    logits = _checked_logits(logits)
    n_vocab = logits.shape[0]
    if step < 0:
        raise SamplingError(f"step must be >= 0, got {step}")
    logits = penalize(logits, params, recent_tokens, meter)
    if params.greedy:
        meter.elementwise(n_vocab)
        return int(np.argmax(logits))

    ids = np.arange(n_vocab)
    if 0 < params.top_k < n_vocab:
        ids = top_k_ids(logits, params.top_k)
        meter.elementwise(3 * n_vocab)
    values = logits[ids]
    if params.top_p < 1.0 or ids.shape[0] < n_vocab:
        order = np.lexsort((ids, -values))  # by logit, highest first; lower id first on ties
        ids, values = ids[order], values[order]
        meter.elementwise(ids.shape[0] * max(1, int(math.log2(ids.shape[0] + 1))))
    if params.top_p < 1.0:
        probs = _softmax(values)
        keep = int(np.searchsorted(np.cumsum(probs), params.top_p, side="left")) + 1
        ids, values = ids[:keep], values[:keep]
        meter.elementwise(4 * probs.shape[0])
    if params.min_p > 0.0:
        kept = values >= values.max() + np.float32(math.log(params.min_p))
        ids, values = ids[kept], values[kept]
        meter.elementwise(2 * kept.shape[0])
    probs = _softmax(values / np.float32(params.temperature))
    draw = np.random.Generator(np.random.PCG64([params.seed, step])).random()
    cumulative = np.cumsum(probs)
    index = min(int(np.searchsorted(cumulative, draw * cumulative[-1], side="right")), ids.shape[0] - 1)
    meter.elementwise(5 * ids.shape[0])
    return int(ids[index])


def top_k_ids(logits: np.ndarray, k: int) -> np.ndarray:
    """The ids of the k highest logits; of equal logits at the cut, the lowest ids."""
    kth_highest = np.partition(logits, logits.shape[0] - k)[logits.shape[0] - k]
    above = np.flatnonzero(logits > kth_highest)
    tied = np.flatnonzero(logits == kth_highest)[: k - above.shape[0]]
    return np.concatenate([above, tied])


def _checked_logits(logits: np.ndarray) -> np.ndarray:
    array = np.asarray(logits, dtype=np.float32)
    if array.ndim != 1 or array.shape[0] == 0:
        raise SamplingError(f"logits must be one non-empty row (n_vocab,), got shape {array.shape}")
    if np.isnan(array).any() or np.isposinf(array).any():
        raise SamplingError("logits contain NaN or +inf; the forward pass diverged (check the weights and inputs)")
    if np.isneginf(array).all():
        raise SamplingError("every logit is -inf; no token can be sampled")
    return array


def penalize(logits: np.ndarray, params: SamplingParams, recent_tokens: Sequence[int], meter: Meter) -> np.ndarray:
    """llama.cpp's repetition penalty: divide positive logits, multiply the others, once per distinct token."""
    if params.repeat_penalty == 1.0 or params.repeat_last_n == 0 or not len(recent_tokens):
        return logits
    window = np.unique(np.asarray(recent_tokens[-params.repeat_last_n :], dtype=np.int64))
    if window[0] < 0 or window[-1] >= logits.shape[0]:
        raise SamplingError(f"recent token ids must be in [0, {logits.shape[0]}), got {window[0]}..{window[-1]}")
    penalized = logits.copy()
    values = penalized[window]
    penalty = np.float32(params.repeat_penalty)
    penalized[window] = np.where(values <= 0, values * penalty, values / penalty)
    meter.elementwise(3 * window.shape[0])
    return penalized


def _softmax(values: np.ndarray) -> np.ndarray:
    exps = np.exp(values.astype(np.float64) - values.max())
    return exps / exps.sum()


@dataclass(frozen=True)
class StopState:
    """Text held back because it may be the start of a stop string."""

    held: str = ""


@dataclass(frozen=True)
class StopStrings:
    strings: tuple[str, ...]

    def scan(self, state: StopState, text: str) -> tuple[str, StopState, bool]:
        """Feed newly decoded text: (text that is safe to emit, next state, whether a stop string was hit).

        On a hit the text is cut before the stop string, and generation should end.
        """
        buffer = state.held + text
        hits = [i for i in (buffer.find(s) for s in self.strings) if i >= 0]
        if hits:
            return buffer[: min(hits)], StopState(), True
        held = max((k for s in self.strings for k in range(1, min(len(s), len(buffer) + 1))
                    if buffer.endswith(s[:k])), default=0)
        return buffer[: len(buffer) - held], StopState(buffer[len(buffer) - held :]), False

    def finish(self, state: StopState) -> str:
        """At the end of generation (no stop string hit): the text still held back."""
        return state.held
