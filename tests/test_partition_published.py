"""The planner against published mainnet figures (DESIGN.md, cost model), and our best plan.

yllama.oc's figures are computed in one place, sharding/published.py, and the README must show
exactly what it computes, to the printed precision; the values are also written out here.

| figure (source)                                                         | here                      |
|-------------------------------------------------------------------------|---------------------------|
| yllama.oc: Llama 3 8B on 34 canisters, 0.168 TC/token, about 200 s/token | one-per-layer, f32, scalar, 2024 fees |
| yllama.oc: loading the weights cost 33 TC (forum topic 33037)           | upload of the F16 file    |
| llama_cpp_canister: Qwen2.5-0.5B q8_0, 25 tokens per 40B update call      | one canister, SIMD        |
| llama_cpp_canister: Qwen3-1.7B Q4_K_M, 6.4B instructions per token        | one canister, SIMD        |

The cost model's two kernel constants were each fitted to one of these figures (replica/cost_model.py);
the planner counts the work itself, from the presets' shapes. The llama_cpp_canister figures must
land within +-25%. The latency is also checked against the simulator: the same token, run through
simulated rounds, takes the rounds the plan predicts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from replica.config import NetworkConfig
from replica.cost_model import Kernel
from replica.fees import FEES_2024
from replica.inprocess import LocalClient
from replica.network import Network
from sharding.partition import Constraints, Plan, forward_work, make_plan
from sharding.presets import preset_spec
from sharding.published import best_plan, best_plan_paragraph, layer_sentence, yllama_plan, yllama_rows, yllama_table

TOLERANCE = 0.25
README = Path(__file__).resolve().parents[1] / "README.md"


def within(predicted: float, published: float) -> bool:
    return abs(predicted - published) <= TOLERANCE * published


@pytest.fixture(scope="module")
def yllama() -> Plan:
    # yllama.oc uploaded F16 tensors and computed in f32 (forum topic 33037)
    return yllama_plan(2048)


@pytest.fixture(scope="module")
def best() -> Plan:
    return best_plan()


def _words(text: str) -> str:
    return " ".join(text.split())


def test_yllama_layout_is_34_canisters(yllama: Plan) -> None:
    assert yllama.totals.canisters == 34
    head, *layers, output = yllama.shards
    assert head.role == "head" and head.tensors == ("token_embd.weight",)
    assert [s.layers for s in layers] == [(i, i + 1) for i in range(32)]
    assert (output.role, output.tensors, output.samples) == ("output", ("output_norm.weight", "output.weight"), True)
    assert all(s.weight_bytes == 218_103_808 * 4 + 2 * 4096 * 4 for s in layers)  # a layer in f32


def test_yllama_figures_as_the_readme_prints_them() -> None:
    rows = {row.figure: (row.published, row.predicted) for row in yllama_rows()}
    assert rows == {
        "canisters": ("34", ("34", "34", "34")),
        "cost per token, 2024 fees": ("0.168 TC", ("0.167 TC (−1%)", "0.178 TC (+6%)", "0.214 TC (+27%)")),
        "time per token": ("about 200 s", ("206 s (+3%)", "206 s (+3%)", "238 s (+19%)")),
        "weight upload": ("33 TC", ("32.4 TC (−2%)", "32.4 TC (−2%)", "32.4 TC (−2%)")),
    }
    readme = _words(README.read_text())
    for text in (yllama_table(), layer_sentence(), best_plan_paragraph()):
        assert _words(text) in readme, f"README is not up to date; paste `python -m sharding.published`:\n{text}"


def test_yllama_latency_follows_the_simulators_rounds(yllama: Plan) -> None:
    """The same token through the simulator: a head calls 33 stages in turn, each reporting the work
    the plan counted for its canister; the simulated rounds are the plan's, plus the ingress round."""
    network = Network(None, NetworkConfig(fees=FEES_2024, kernel=Kernel.SCALAR, genesis_time_ns=0))
    client = LocalClient(network)
    spec = preset_spec("llama-3-8b", "f16")
    pipeline = client.install("tests.canisters_for_tests.pipeline:Pipeline", cycles=10**15)
    stages = []
    for shard in yllama.shards[1:]:
        work = forward_work(spec, yllama, shard)
        assert set(work.mac_counts) == {"F32"}
        stage = client.install("tests.canisters_for_tests.stage:Stage", cycles=10**15)
        stages.append({"canister": stage, "weight_type": "F32", "macs": work.total_macs,
                       "elementwise_ops": work.elementwise_ops})
    report = client.update(pipeline, "run", stages, bytes(4 * 4096)).report
    assert report.rounds == yllama.totals.rounds_per_token + 1
    assert abs(report.cycles - yllama.totals.cycles_per_token) <= 0.01 * yllama.totals.cycles_per_token


def test_qwen25_05b_q8_0_tokens_per_40b_call_are_predicted() -> None:
    plan = make_plan(preset_spec("qwen2.5-0.5b", "q8_0"), Constraints(context=100, shards=1, kernel="simd"))
    tokens_per_call = 40e9 / plan.totals.instructions_per_token
    assert within(tokens_per_call, 25), tokens_per_call


def test_qwen3_17b_q4_k_m_instructions_per_token_are_predicted() -> None:
    plan = make_plan(preset_spec("qwen3-1.7b", "q4_k_m"), Constraints(context=100, shards=1, kernel="simd"))
    assert within(plan.totals.instructions_per_token, 6.4e9), plan.totals.instructions_per_token


def test_best_plan_is_far_cheaper_and_faster_than_yllama(yllama: Plan, best: Plan) -> None:
    """Q4_K_M weights kept quantized, SIMD kernels, current fees, the fewest hops; the README's
    6.5x and 18x to their printed precision."""
    assert best.totals.canisters == 4  # a head and three yblocks of about 1.4 GiB
    assert f"{0.168 / best.totals.tc_per_token:.1f}" == "6.5"
    assert f"{200 / best.totals.seconds_per_token:.0f}" == "18"
    # current fees charge 2.5x the 2024 rate per instruction, so instructions fall 17x but cycles 6.5x
    assert f"{yllama.totals.instructions_per_token / best.totals.instructions_per_token:.0f}" == "17"
