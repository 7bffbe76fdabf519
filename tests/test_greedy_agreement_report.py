"""Greedy generation against llama.cpp's recorded output, reported as it is, agreement or not.

tests/fixtures/llama_cpp/smollm2_greedy.json holds llama.cpp's 32 greedy tokens for the README's
chat prompt. The test measures how many leading tokens we share, where we part and by how much
our own logits separated the two candidates there, records that (printed, and as junit
properties), and checks that the README's agreement table states exactly that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from canisters.llama.gguf_file import read_gguf
from canisters.llama.meter import NullMeter
from canisters.llama.model import Llama
from canisters.llama.tokenizer import Tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "llama_cpp" / "smollm2_greedy.json"
README = Path(__file__).resolve().parents[1] / "README.md"


@dataclass(frozen=True)
class GreedyAgreement:
    n_tokens: int
    identical_prefix: int          # leading tokens equal to llama.cpp's
    ours: str                      # our greedy text
    theirs: str                    # llama.cpp's greedy text
    logit_gap: float | None        # at the first difference: our logit of our token minus of theirs

    def summary(self) -> str:
        if self.logit_gap is None:
            return f"identical ({self.n_tokens}/{self.n_tokens} tokens)"
        return (f"{self.identical_prefix}/{self.n_tokens} tokens identical; at token {self.identical_prefix + 1} "
                f"our logits put our choice {self.logit_gap:.3f} above llama.cpp's")


def measure(model: Llama, tokenizer: Tokenizer, prompt_ids: list[int], theirs: list[int]) -> GreedyAgreement:
    cache = model.new_cache(len(prompt_ids) + len(theirs))
    logits = model.forward(prompt_ids, cache, 0, NullMeter())
    ours: list[int] = []
    gap = None
    for pos in range(len(prompt_ids), len(prompt_ids) + len(theirs)):
        ours.append(int(np.argmax(logits)))
        if gap is None and ours[-1] != theirs[len(ours) - 1]:
            gap = float(logits[ours[-1]] - logits[theirs[len(ours) - 1]])
        logits = model.forward(ours[-1:], cache, pos, NullMeter())
    prefix = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b), len(theirs))
    return GreedyAgreement(len(theirs), prefix, tokenizer.decode(ours), tokenizer.decode(theirs), gap)


@pytest.mark.real_model
def test_smollm2_greedy_agreement_is_reported_as_the_readme_states(
        smollm2_path: Path, record_property: pytest.RecordProperty) -> None:
    ref = json.loads(FIXTURE.read_text())
    gguf = read_gguf(smollm2_path)
    tokenizer = Tokenizer.from_metadata(gguf.fields)
    # The fixture's prompt ids are what our tokenizer makes of its prompt, so only the model differs.
    assert tokenizer.encode(ref["prompt"], add_special=ref["add_bos"], parse_special=ref["parse_special"]) == \
        ref["prompt_ids"]
    assert tokenizer.decode(ref["ids"]) == ref["text"]

    agreement = measure(Llama.load(gguf), tokenizer, ref["prompt_ids"], ref["ids"])
    record_property("smollm2_greedy_agreement", agreement.summary())
    print(f"\nSmolLM2 greedy vs llama.cpp: {agreement.summary()}\n  ours:   {agreement.ours!r}\n"
          f"  theirs: {agreement.theirs!r}")
    assert agreement.summary() in README.read_text(), (
        f"README's agreement table does not say {agreement.summary()!r}; update its SmolLM2 greedy row")
