"""The sampler: llama.cpp's filters and their order, seeded draws per step, stop strings.

Draws are a pure function of (logits, params, step), so every expectation below is exact for the
seeds used; nothing depends on timing or on luck across runs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from canisters.llama.sampler import SamplingError, SamplingParams, StopState, StopStrings, sample
from cdk.meter import Work

RANDOM = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)  # a plain draw from the softmax


def logits_for(probs: list[float]) -> np.ndarray:
    return np.log(np.asarray(probs, dtype=np.float32))


def draws(logits: np.ndarray, params: SamplingParams, steps: range) -> list[int]:
    return [sample(logits, params, step) for step in steps]


def test_greedy_takes_the_highest_logit_and_the_lowest_id_on_ties() -> None:
    greedy = SamplingParams(temperature=0.0)
    assert sample(np.array([0.1, 3.0, -2.0, 3.0]), greedy, step=0) == 1
    assert {sample(np.array([0.1, 3.0, 2.9]), greedy, step=s) for s in range(20)} == {1}


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    greedy = SamplingParams(temperature=0.0, repeat_penalty=1.1, repeat_last_n=2)
    assert sample(np.array([2.0, 1.9, 0.0]), greedy, 0, recent_tokens=[0]) == 1  # 2.0 / 1.1 < 1.9
    assert sample(np.array([-1.0, -1.05, -9.0]), greedy, 0, recent_tokens=[0]) == 1  # -1.0 * 1.1 < -1.05
    assert sample(np.array([2.0, 1.9, 0.0]), greedy, 0, recent_tokens=[0, 2, 2]) == 0  # 0 left the window
    assert sample(np.array([2.0, 1.9, 0.0]), greedy, 0, recent_tokens=[0, 0]) == 1  # once per distinct token


def test_each_step_draws_the_same_whether_the_run_is_resumed_or_not() -> None:
    logits = logits_for([0.4, 0.3, 0.2, 0.1])
    params = SamplingParams(temperature=1.0, seed=1234)
    full = draws(logits, params, range(10))
    assert draws(logits, params, range(5, 10)) == full[5:]
    assert draws(logits, params, range(10)) == full
    assert draws(logits, SamplingParams(temperature=1.0, seed=1235), range(10)) != full


def test_draws_follow_the_softmax() -> None:
    probs = [0.5, 0.25, 0.15, 0.1]
    picks = np.bincount(draws(logits_for(probs), RANDOM, range(4000)), minlength=4) / 4000
    # 4000 draws: the standard error is at most 0.008; these seeds give errors below 0.025
    assert np.abs(picks - probs).max() < 0.025


def test_top_k_top_p_and_min_p_keep_what_llama_cpp_keeps() -> None:
    logits = logits_for([0.5, 0.3, 0.15, 0.05])
    steps = range(300)
    assert set(draws(logits, SamplingParams(temperature=1.0, top_k=2, top_p=1.0, min_p=0.0), steps)) == {0, 1}
    # top-p keeps the fewest tokens whose probability reaches p: 0.5 + 0.3 >= 0.75
    assert set(draws(logits, SamplingParams(temperature=1.0, top_k=0, top_p=0.75, min_p=0.0), steps)) == {0, 1}
    # min-p keeps tokens with at least min_p times the top probability: 0.15 >= 0.2 * 0.5 > 0.05
    assert set(draws(logits, SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.2), steps)) == {0, 1, 2}
    # top-k ties at the cut keep the lowest ids
    assert set(draws(np.zeros(6), SamplingParams(temperature=1.0, top_k=3, top_p=1.0, min_p=0.0), steps)) == {0, 1, 2}


def test_temperature_comes_after_the_filters_as_in_llama_cpp() -> None:
    logits = logits_for([0.7, 0.2, 0.1])
    hot = SamplingParams(temperature=50.0, top_k=0, top_p=0.6, min_p=0.0)
    assert set(draws(logits, hot, range(200))) == {0}  # top-p saw the untempered 0.7
    cold = SamplingParams(temperature=0.01, top_k=0, top_p=1.0, min_p=0.0)
    assert set(draws(logits, cold, range(200))) == {0}
    flat = np.bincount(draws(logits, SamplingParams(temperature=50.0, top_k=0, top_p=1.0, min_p=0.0),
                             range(3000)), minlength=3)
    assert flat.min() > 800  # nearly uniform at a high temperature


def test_sampling_reports_work_over_the_vocabulary() -> None:
    work = Work()
    sample(np.zeros(1000), SamplingParams(), step=0, meter=work)
    assert work.elementwise_ops >= 1000


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (dict(top_p=0.0), "top_p must be in"),
        (dict(min_p=1.5), "min_p must be in"),
        (dict(temperature=math.nan), "temperature must be a finite number"),
        (dict(repeat_penalty=0.0), "repeat_penalty must be a positive number"),
        (dict(repeat_last_n=-1), "repeat_last_n must be >= 0"),
        (dict(seed=-1), "seed must be an integer"),
        (dict(stop=("",)), "stop must be a tuple of non-empty strings"),
        (dict(stop=["END"]), "stop must be a tuple of non-empty strings"),
        (dict(top_k=2.5), "top_k, repeat_last_n and seed must be integers"),
    ],
)
def test_bad_parameters_are_refused_with_a_clear_error(params: dict, message: str) -> None:
    with pytest.raises(SamplingError, match=message):
        SamplingParams(**params)


def test_bad_logits_are_refused_with_a_clear_error() -> None:
    with pytest.raises(SamplingError, match=r"one non-empty row \(n_vocab,\), got shape \(2, 2\)"):
        sample(np.zeros((2, 2)), RANDOM, 0)
    with pytest.raises(SamplingError, match="NaN"):
        sample(np.array([0.0, np.nan]), RANDOM, 0)
    with pytest.raises(SamplingError, match="every logit is -inf"):
        sample(np.full(3, -np.inf), RANDOM, 0)
    with pytest.raises(SamplingError, match=r"recent token ids must be in \[0, 3\)"):
        sample(np.zeros(3), SamplingParams(repeat_penalty=1.2), 0, recent_tokens=[5])
    with pytest.raises(SamplingError, match="step must be >= 0"):
        sample(np.zeros(3), RANDOM, -1)


def feed(stops: StopStrings, chunks: list[str]) -> tuple[str, bool]:
    state, emitted = StopState(), []
    for chunk in chunks:
        text, state, stopped = stops.scan(state, chunk)
        emitted.append(text)
        if stopped:
            return "".join(emitted), True
    return "".join(emitted) + stops.finish(state), False


def test_stop_strings_are_found_across_tokens_and_the_text_is_cut_before_them() -> None:
    stops = StopStrings(("\nUser:", "###"))
    assert feed(stops, ["Hello", " there", "\nUs", "er", ": hi"]) == ("Hello there", True)
    assert feed(stops, ["a#", "#", "#b"]) == ("a", True)
    assert feed(stops, ["x ###"]) == ("x ", True)
    assert feed(stops, ["one\nU", "nrelated"]) == ("one\nUnrelated", False)
    assert feed(StopStrings(("ab", "b")), ["xab"]) == ("x", True)  # the earliest stop string wins


def test_text_that_may_start_a_stop_string_is_held_until_resolved() -> None:
    stops = StopStrings(("END",))
    text, state, stopped = stops.scan(StopState(), "the EN")
    assert (text, state.held, stopped) == ("the ", "EN", False)
    text, state, stopped = stops.scan(state, "ding")
    assert (text, state.held, stopped) == ("ENding", "", False)
    text, state, _ = stops.scan(state, " E")
    assert stops.finish(state) == "E"
