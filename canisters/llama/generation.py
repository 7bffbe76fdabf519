"""What happens to each generated token: stream its text, check stop conditions.

Shared by the single-process generator below and by the head canister, which receives the
token ids from the last stage and must stop, stream and report exactly as a local run does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from canisters.llama.meter import Meter
from canisters.llama.model import Llama
from canisters.llama.sampler import SamplingParams, StopState, StopStrings, sample
from canisters.llama.tokenizer import DetokenizerState, Tokenizer


@dataclass(frozen=True)
class TokenStream:
    """The generated tokens and text so far, and whether (and why) generation is over."""

    max_tokens: int
    ids: tuple[int, ...] = ()
    text: str = ""
    stop_reason: str | None = None  # "eos", "stop", "max_tokens", or None while running
    detokenizer: DetokenizerState = field(default_factory=DetokenizerState)
    held: StopState = field(default_factory=StopState)

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    def push(self, token_id: int, tokenizer: Tokenizer, stops: StopStrings) -> tuple[TokenStream, str]:
        """Add one sampled token: the new stream and the text it makes safe to show."""
        if self.done:
            raise ValueError("the generation is already over")
        ids = self.ids + (token_id,)
        if tokenizer.is_eog(token_id):  # end of generation: its text is not part of the answer
            tail = tokenizer.detokenize_end(self.detokenizer) + stops.finish(self.held)
            return replace(self, ids=ids, text=self.text + tail, stop_reason="eos",
                           detokenizer=DetokenizerState(), held=StopState()), tail
        piece, detokenizer = tokenizer.detokenize_step(self.detokenizer, token_id)
        shown, held, hit = stops.scan(self.held, piece)
        stream = replace(self, ids=ids, text=self.text + shown, detokenizer=detokenizer, held=held)
        if hit:
            return replace(stream, stop_reason="stop", held=StopState()), shown
        if len(ids) >= self.max_tokens:
            tail = tokenizer.detokenize_end(detokenizer) + stops.finish(held)
            return replace(stream, text=stream.text + tail, stop_reason="max_tokens",
                           detokenizer=DetokenizerState(), held=StopState()), shown + tail
        return stream, shown


def generate_local(model: Llama, tokenizer: Tokenizer, prompt_ids: list[int], params: SamplingParams,
                   max_tokens: int, meter: Meter, prefill_chunk: int = 512) -> Iterator[tuple[TokenStream, str]]:
    """Generate in this process: yields (stream, new text) after every token."""
    n_ctx = len(prompt_ids) + max_tokens
    cache = model.new_cache(n_ctx)
    for start in range(0, len(prompt_ids), prefill_chunk):
        logits = model.forward(prompt_ids[start : start + prefill_chunk], cache, start, meter)
    stream, stops = TokenStream(max_tokens), StopStrings(params.stop)
    while not stream.done:
        token = sample(logits, params, len(stream.ids), list(prompt_ids) + list(stream.ids), meter)
        stream, text = stream.push(token, tokenizer, stops)
        yield stream, text
        if not stream.done:
            logits = model.forward([token], cache, len(prompt_ids) + len(stream.ids) - 1, meter)
