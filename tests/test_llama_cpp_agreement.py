"""SmolLM2 Q4_1 against llama.cpp (fixtures recorded by scripts/make_llama_cpp_fixtures.py) with
ggml's numerics: 8-bit activations and integer dot products (canisters/kernels/kernels.h), an f16 KV
cache, f16 q and attention probabilities; the default (quantized, native) strategy.

What these numerics reach is measured here, and bounded where it was measured. 8-bit activations
make the model chaotic at the scale of f32 rounding: a last-bit difference flips the rounding of a
q now and then, and two computations that differ only in float order part ways. Ours no longer
differ from each other (prefilled at once or token by token, the logits are the same bits: the
integer kernel at every batch size, the other ops in the C yblock's order), but they still differ
from llama.cpp's float order, hence the bounds below rather than equality.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from canisters.llama.gguf_file import read_gguf
from canisters.llama.meter import NullMeter
from canisters.llama.model import Llama

FIXTURES = Path(__file__).parent / "fixtures" / "llama_cpp"
pytestmark = pytest.mark.real_model


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - (np.log(np.exp(x - m).sum(axis=-1, keepdims=True)) + m)


@pytest.fixture(scope="module")
def model(smollm2_path: Path) -> Llama:
    return Llama.load(read_gguf(smollm2_path), "quantized", n_ctx=128)


def teacher_forced(model: Llama) -> tuple[int, list[float]]:
    """(positions whose top-1 is llama.cpp's, KL(llama.cpp || ours) per position) over the fixture."""
    ref = np.load(FIXTURES / "smollm2_logits.npz")
    agree, kls = 0, []
    for i in range(int(ref["n_prompts"])):
        ids = ref[f"ids_{i}"].tolist()
        lq = log_softmax(model.forward(ids, model.new_cache(64), 0, NullMeter(), all_logits=True))
        top, lp = ref[f"top_ids_{i}"], ref[f"top_logits_{i}"] - ref[f"logsumexp_{i}"][:, None]
        lq_top = np.take_along_axis(lq, top, 1)
        # llama.cpp's mass outside its top 2048 enters by the log-sum inequality (see tests/test_model.py)
        p_tail, q_tail = ref[f"tail_mass_{i}"], np.maximum(1.0 - np.exp(lq_top).sum(1), 1e-30)
        tail = np.where(p_tail > 0, p_tail * np.log(np.maximum(p_tail, 1e-30) / q_tail), 0.0)
        kls.extend((np.exp(lp) * (lp - lq_top)).sum(1) + tail)
        agree += int((lq.argmax(1) == top[:, 0]).sum())
    return agree, kls


def test_teacher_forced_logits(model: Llama) -> None:
    # measured: 155/160 top-1 (96.9%), mean KL 0.0042 (f32 activations, before: 157/160, 0.0044)
    agree, kls = teacher_forced(model)
    assert len(kls) == 160
    assert agree >= 152, f"top-1 agreement {agree}/160"
    assert float(np.mean(kls)) <= 0.005, f"mean KL {np.mean(kls):.4f}"


def test_greedy_follows_llama_cpp_until_a_near_tie(model: Llama) -> None:
    # measured: the first 7 of 32 tokens are llama.cpp's (with f32 activations: none, the first
    # token was a near-tie the other way); at token 8 our choice is 0.186 logits above llama.cpp's.
    # (15 tokens in numpy's float order with a float prefill; every op in one order gives 7.)
    ref = json.loads((FIXTURES / "smollm2_greedy.json").read_text())
    prompt, theirs = ref["prompt_ids"], ref["ids"]
    cache = model.new_cache(len(prompt) + len(theirs))
    logits = model.forward(prompt, cache, 0, NullMeter())
    ours: list[int] = []
    for pos in range(len(prompt), len(prompt) + len(theirs)):
        ours.append(int(np.argmax(logits)))
        logits = model.forward(ours[-1:], cache, pos, NullMeter())
    assert ours[:7] == theirs[:7]
    # fed llama.cpp's own tokens, our argmax is llama.cpp's at all but one of the 32 steps
    forced = model.forward(prompt + theirs, model.new_cache(len(prompt) + len(theirs)), 0, NullMeter(),
                           all_logits=True)
    steps = forced[len(prompt) - 1: -1].argmax(1)
    assert int((steps == np.array(theirs)).sum()) >= 31


def test_prefill_at_once_and_token_by_token_are_the_same_bits(model: Llama) -> None:
    # nothing in our own computation depends on the batch, so no 8-bit rounding can flip between them
    ref = np.load(FIXTURES / "smollm2_logits.npz")
    for i in range(int(ref["n_prompts"])):
        ids = ref[f"ids_{i}"].tolist()
        batch = model.forward(ids, model.new_cache(64), 0, NullMeter(), all_logits=True)
        cache = model.new_cache(64)
        step = np.stack([model.forward([t], cache, p, NullMeter()) for p, t in enumerate(ids)])
        np.testing.assert_array_equal(batch.view(np.uint32), step.view(np.uint32))
