"""The planner on synthetic models: layouts by strategy, the work it counts against what the model
meters, and a clear error for every limit."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from canisters.llama.gguf_file import read_gguf
from canisters.llama.meter import NullMeter
from canisters.llama.model import LayerStack, OutputHead
from canisters.llama.sampler import SamplingParams, sample
from cdk.meter import Work
from replica.cost_model import Kernel, message_overhead_instructions, quantize_instructions, work_instructions
from replica.limits import DEFAULT_LIMITS, GiB, KiB
from sharding.model_spec import ModelSpec, read_model_spec
from sharding.partition import Constraints, Plan, PlanError, forward_work, make_plan
from sharding.presets import preset_spec
from tests.synthetic_models import SyntheticSpec, write_synthetic_model

STRATEGIES = ("balanced-bytes", "fewest-hops", "one-per-layer")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    specs = {
        "llama": SyntheticSpec(tensor_type="Q8_0", n_layer=8, n_ctx=64),
        "qwen2-tied": SyntheticSpec(arch="qwen2", tensor_type="Q4_1", n_layer=8, n_ctx=64, tied=True),
        "llama-f32-rope-freqs": SyntheticSpec(tensor_type="F32", n_layer=4, n_ctx=64, rope_freqs=True),
    }
    return {name: write_synthetic_model(root / f"{name}.gguf", spec) for name, spec in specs.items()}


def check_layout(plan: Plan, spec: ModelSpec) -> None:
    """What every plan must be: a head, then contiguous layer ranges, then the output, each tensor held."""
    head, *yblocks = plan.shards
    assert (head.name, head.role, head.tensors, head.stage) == ("head", "head", ("token_embd.weight",), 0)
    assert [s.name for s in yblocks] == [f"yblock_{i}" for i in range(len(yblocks))]
    assert [s.index for s in plan.shards] == list(range(len(plan.shards)))
    ranges = [s.layers for s in yblocks if s.layers]
    assert [r[0] for r in ranges] == [0] + [r[1] for r in ranges[:-1]] and ranges[-1][1] == spec.config.n_layer
    holders = [s for s in yblocks if s.output_rows]
    rows = sorted(s.output_rows for s in holders)
    assert rows[0][0] == 0 and rows[-1][1] == spec.config.n_vocab
    assert all(a[1] == b[0] for a, b in itertools.pairwise(rows))
    assert all(s.stage == max(y.stage for y in yblocks) for s in holders)  # the output is the last stage
    assert [s.samples for s in plan.shards].count(True) == 1
    assert (holders[0].samples if len(holders) == 1 else head.samples)
    held = [name for s in yblocks for name in s.tensors if name not in ("rope_freqs.weight",)]
    output = "token_embd.weight" if spec.tied_embeddings else "output.weight"
    expected = [t for t in spec.tensors if t not in ("token_embd.weight", "rope_freqs.weight", "output_norm.weight",
                                                     "output.weight")]
    assert sorted(t for t in held if t.startswith("blk.")) == sorted(expected)
    assert held.count(output) == len(holders) and held.count("output_norm.weight") == len(holders)
    for s in yblocks:
        assert ("rope_freqs.weight" in s.tensors) == bool(s.layers and "rope_freqs.weight" in spec.tensors)
    assert plan.totals.canisters == len(plan.shards)
    assert plan.totals.messages_per_token == 2 * len(yblocks)
    assert plan.totals.stages == len({s.stage for s in yblocks})


@pytest.mark.parametrize("name", ["llama", "qwen2-tied", "llama-f32-rope-freqs"])
@pytest.mark.parametrize("shards", [1, 2, 4])
@pytest.mark.parametrize("strategy", ["balanced-bytes", "fewest-hops"])
def test_shards_n_gives_n_canisters_besides_the_head(models: dict[str, Path], name: str, shards: int,
                                                    strategy: str) -> None:
    spec = read_model_spec(models[name])
    plan = make_plan(spec, Constraints(shards=shards), strategy)
    assert len(plan.shards) == shards + 1
    check_layout(plan, spec)
    # every byte of the model is uploaded once; a tied embedding twice (head and output), and the
    # rope factors to every canister with layers
    copies = spec.tensors["token_embd.weight"].n_bytes if spec.tied_embeddings else 0
    if "rope_freqs.weight" in spec.tensors:
        copies += (sum(1 for s in plan.shards if s.layers) - 1) * spec.tensors["rope_freqs.weight"].n_bytes
    assert plan.totals.upload_bytes == spec.weight_bytes + copies


def test_eight_shards_of_an_eight_layer_model(models: dict[str, Path]) -> None:
    spec = read_model_spec(models["llama"])
    plan = make_plan(spec, Constraints(shards=8), "balanced-bytes")
    check_layout(plan, spec)
    assert [s.layers for s in plan.shards[1:]] == [(i, i + 1) for i in range(8)]
    assert plan.shards[-1].output_rows == (0, spec.config.n_vocab)  # the output joins the last layer


def test_balanced_bytes_minimizes_the_largest_canister(models: dict[str, Path]) -> None:
    spec = read_model_spec(models["llama"])
    plan = make_plan(spec, Constraints(shards=3), "balanced-bytes")
    check_layout(plan, spec)
    # brute force over every way to cut 8 layers + the output into 3 contiguous canisters
    n_layer = spec.config.n_layer
    layer_bytes = [sum(t.n_bytes for t in spec.layer_tensors(i)) for i in range(n_layer)]
    pieces = layer_bytes + [spec.tensors["output.weight"].n_bytes + spec.tensors["output_norm.weight"].n_bytes]
    best = min(max(sum(pieces[a:b]) for a, b in zip((0, i, j), (i, j, len(pieces)), strict=True))
               for i, j in itertools.combinations(range(1, len(pieces)), 2))
    assert max(s.weight_bytes for s in plan.shards[1:]) == best


def test_fewest_hops_packs_as_few_canisters_as_the_bytes_allow(models: dict[str, Path]) -> None:
    spec = read_model_spec(models["llama"])
    layer = sum(t.n_bytes for t in spec.layer_tensors(0))
    output = spec.tensors["output.weight"].n_bytes + spec.tensors["output_norm.weight"].n_bytes
    limit = 3 * layer + layer // 2  # three layers per canister
    plan = make_plan(spec, Constraints(shard_bytes=limit), "fewest-hops")
    check_layout(plan, spec)
    assert all(s.weight_bytes <= limit for s in plan.shards)
    fewest = -(-(8 * layer + output) // limit)
    assert len(plan.shards) - 1 in (fewest, fewest + 1)
    with pytest.raises(PlanError, match=f"do not fit {len(plan.shards) - 2} canisters"):
        make_plan(spec, Constraints(shard_bytes=limit, shards=len(plan.shards) - 2), "fewest-hops")


def test_one_per_layer_puts_the_output_on_its_own(models: dict[str, Path]) -> None:
    spec = read_model_spec(models["qwen2-tied"])
    plan = make_plan(spec, Constraints(), "one-per-layer")
    check_layout(plan, spec)
    assert [s.layers for s in plan.shards[1:-1]] == [(i, i + 1) for i in range(8)]
    last = plan.shards[-1]
    assert (last.role, last.layers, last.tensors) == ("output", None, ("output_norm.weight", "token_embd.weight"))
    assert last.kv_bytes_per_session == 0 and last.samples


@pytest.mark.parametrize(("name", "weight_format", "strategy_name"),
                         [("llama", "gguf", "quantized"), ("llama", "f32", "dequantize"),
                          ("qwen2-tied", "gguf", "quantized"), ("llama-f32-rope-freqs", "gguf", "quantized")])
def test_counted_work_is_what_the_model_meters(models: dict[str, Path], name: str, weight_format: str,
                                               strategy_name: str) -> None:
    """Each canister's forward message, run with canisters/llama at the end of the context, reports
    exactly the work the planner counted (sampling aside, whose work depends on the logits)."""
    path = models[name]
    spec, gguf = read_model_spec(path), read_gguf(path)
    context = 40
    plan = make_plan(spec, Constraints(weight_format=weight_format, shards=3, context=context, prefill_chunk=6),
                     "balanced-bytes")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((context, spec.config.d_model)).astype(np.float32)
    for shard in plan.shards[1:]:
        for n_tokens in (1, plan.totals.prefill_chunk):
            measured, y = Work(), x[context - n_tokens :]
            if shard.layers:
                stack = LayerStack.load(gguf, spec.config, *shard.layers, strategy_name, context)
                cache = stack.new_cache(context)
                stack.forward(x[: context - n_tokens], cache, 0, NullMeter())
                y = stack.forward(y, cache, context - n_tokens, measured)
            counted = forward_work(spec, plan, shard, n_tokens)
            if shard.output_rows:
                head = OutputHead.load(gguf, spec.config, strategy_name, rows=shard.output_rows)
                logits = head(y[-1:], measured)[0]
                sampled = Work()
                sample(logits, SamplingParams(), 0, (), meter=sampled)
                measured.add(sampled)
                # the sampler's work varies with how many candidates survive top-p and min-p
                assert abs(measured.elementwise_ops - counted.elementwise_ops) <= 10 * SamplingParams().top_k
                measured.elementwise_ops = counted.elementwise_ops
            assert measured == counted
            figures = shard.decode if n_tokens == 1 else shard.prefill
            kernel = Kernel(plan.constraints.kernel)
            # the wasm kernels also quantize each matmul's input: per layer h (q, k, v), the attention,
            # h (gate, up) and the ffn; the output's input once
            c = spec.config
            quantized = n_tokens * (2 * c.d_model + c.q_dim + c.d_ff) * (shard.layers[1] - shard.layers[0]
                                                                          if shard.layers else 0)
            quantized += c.d_model if shard.output_rows else 0
            assert figures.instructions == (work_instructions(counted, kernel)
                                            + quantize_instructions(kernel, quantized)
                                            + message_overhead_instructions(figures.request_bytes))


def test_prefill_chunk_is_the_most_tokens_every_message_can_take(models: dict[str, Path]) -> None:
    spec = read_model_spec(models["llama"])
    free = make_plan(spec, Constraints(shards=2, context=64))
    assert free.totals.prefill_chunk == 64  # tiny layers: a whole context fits one message
    limits = replace(DEFAULT_LIMITS, instructions_per_update=free.shards[1].decode.instructions * 5)
    bound = make_plan(spec, Constraints(shards=2, context=64, limits=limits))
    chunk = bound.totals.prefill_chunk
    assert 1 < chunk < 64
    assert all(s.prefill.instructions <= limits.instructions_per_update for s in bound.shards)
    wider = make_plan(spec, Constraints(shards=2, context=64, limits=limits, prefill_chunk=chunk + 1))
    assert wider.totals.prefill_chunk == chunk  # a larger cap is not taken: it would not fit
    assert make_plan(spec, Constraints(shards=2, context=64, prefill_chunk=3)).totals.prefill_chunk == 3


def test_tokens_of_a_tiny_model_share_a_round(models: dict[str, Path]) -> None:
    spec = read_model_spec(models["llama"])
    plan = make_plan(spec, Constraints(shards=4))
    assert all(s.decode.rounds == 1 for s in plan.shards[1:])  # tiny messages: one slice each
    # Same-subnet calls complete within the round, and a tiny token is far from the round budget.
    assert plan.totals.rounds_per_token == 0.0 and plan.totals.seconds_per_token == 0.0
    assert plan.totals.cycles_per_token == sum(s.decode.cycles for s in plan.shards)


def test_plans_are_deterministic_and_their_digest_follows_the_inputs(models: dict[str, Path]) -> None:
    spec = read_model_spec(models["llama"])
    a, b = make_plan(spec, Constraints(shards=2)), make_plan(spec, Constraints(shards=2))
    assert a == b and a.digest == b.digest
    assert make_plan(spec, Constraints(shards=3)).digest != a.digest


def test_output_too_big_for_a_canister_is_split_by_rows_the_head_calls_at_once() -> None:
    # Llama 3 8B with f32 weights: output.weight is 1.96 GiB of f32; against a 1.5 GiB shard limit
    # it goes to two canisters of 64128 rows each, which return logits; the head samples.
    spec = preset_spec("llama-3-8b", "f16")
    plan = make_plan(spec, Constraints(weight_format="f32", shard_bytes=3 * GiB // 2))
    check_layout(plan, spec)
    slices = [s for s in plan.shards if s.output_rows]
    assert [s.output_rows for s in slices] == [(0, 64128), (64128, 128256)]
    assert all(s.role == "output" and s.layers is None and not s.samples for s in slices)
    assert plan.shards[0].samples and slices[0].stage == slices[1].stage
    assert all(s.weight_bytes == 64128 * 4096 * 4 + 4096 * 4 for s in slices)
    assert all(s.file_bytes == 64128 * 4096 * 2 + 4096 * 4 for s in slices)  # the f16 rows that are uploaded
    assert slices[0].decode.reply_bytes > 4 * 64128  # logits come back


def test_activation_message_of_a_4096_wide_model_is_16_kib_plus_framing(tmp_path: Path) -> None:
    path = write_synthetic_model(tmp_path / "wide.gguf",
                                 SyntheticSpec(n_layer=1, d_model=4096, n_head=32, n_head_kv=8, d_ff=128, n_ctx=16))
    plan = make_plan(read_model_spec(path), Constraints(shards=1))
    framing = plan.totals.activation_bytes_per_message - 4096 * 4
    assert 0 < framing < 256, framing  # 16 KiB of f32 plus Candid's type table, fields and lengths
    assert plan.shards[1].decode.request_bytes > plan.totals.activation_bytes_per_message  # it also samples


# --- every limit fails with a message naming it ---------------------------------------------------
@pytest.mark.parametrize(("constraints", "message"), [
    (Constraints(weight_format="q3"), "--weight-format q3 is not one of gguf, f32, f16"),
    (Constraints(kernel="avx"), "--kernel avx is not one of wasm, ggml, simd, scalar"),
    (Constraints(heap="wasm16"), "--heap wasm16 is not one of wasm32, wasm64"),
    (Constraints(fees="2019"), "--fees 2019 is not one of current, 2024"),
    (Constraints(subnet_nodes=7), "--nodes 7 is not one of 13, 34"),
    (Constraints(shard_bytes=5 * GiB), "--shard-bytes 5368709120 must be positive and at most the wasm32 heap of "
                                       "4.00 GiB; use --heap wasm64"),
    (Constraints(shards=0), "--shards 0 must be at least 1"),
    (Constraints(context=65), "--context 65 must be between 1 and the 64 positions"),
    (Constraints(prefill_chunk=0), "--prefill-chunk 0 must be at least 1 token"),
    (Constraints(shards=10), r"--shards 10 is more than the 9 pieces \(8 layers and the output\)"),
    (Constraints(shards=4, shard_bytes=50 * KiB), r"the 8 layers and the output do not fit 4 canisters within every "
                                                  r"limit \(bytes, heap, instructions, message sizes\); the fewest "
                                                  r"that fit are 9: use --shards 9 or more"),
])
def test_bad_requests_name_the_option(models: dict[str, Path], constraints: Constraints, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        make_plan(read_model_spec(models["llama"]), constraints)


def test_unknown_strategy_and_shards_with_one_per_layer(models: dict[str, Path]) -> None:
    spec = read_model_spec(models["llama"])
    with pytest.raises(PlanError, match="unknown strategy 'round-robin'; choose one of balanced-bytes, fewest-hops"):
        make_plan(spec, Constraints(), "round-robin")
    with pytest.raises(PlanError, match="--shards 3 conflicts with the one-per-layer strategy, which uses 9"):
        make_plan(spec, Constraints(shards=3), "one-per-layer")


def test_a_layer_too_big_for_the_shard_limit() -> None:
    with pytest.raises(PlanError, match=r"layer 0 alone needs 3\.19 GiB of f32 weights; the shard limit is "
                                        r"2\.00 GiB: use --weight-format gguf or f16, or a larger --shard-bytes"):
        make_plan(preset_spec("llama-3-70b", "f16"), Constraints(weight_format="f32"))


def test_a_head_too_big_for_the_shard_limit() -> None:
    with pytest.raises(PlanError, match=r"the head's token_embd.weight needs 3\.91 GiB; the shard limit is 2\.00 GiB"):
        make_plan(preset_spec("llama-3-70b", "f32"))


def test_a_layer_whose_kv_cache_does_not_fit_the_heap() -> None:
    limits = replace(DEFAULT_LIMITS, wasm32_heap_bytes=GiB)
    with pytest.raises(PlanError, match=r"layer 0 alone needs .* of heap \(832\.03 MiB of weights, a KV cache of "
                                        r"1\.00 GiB for one session at context 131072, .* of working buffers\); the "
                                        r"wasm32 heap holds 1\.00 GiB: use --heap wasm64, a smaller --context, or "
                                        r"--weight-format gguf or f16$"):
        make_plan(preset_spec("llama-3.1-8b", "f16"),
                  Constraints(weight_format="f32", context=131072, shard_bytes=GiB, limits=limits))


def test_a_layer_over_the_instruction_limit() -> None:
    with pytest.raises(PlanError, match=r"layer 0 alone needs 4\d\.\dB instructions per message \(position 2047, "
                                        r"scalar kernels\); an update message may run 40B: use --kernel simd, a "
                                        r"smaller --context, or more shards"):
        make_plan(preset_spec("llama-3-70b", "q4_k_m"), Constraints(kernel="scalar"))


def test_messages_over_the_size_limits(models: dict[str, Path]) -> None:
    spec = read_model_spec(models["llama"])  # 64 wide: 256 bytes of activations per token
    small_request = replace(DEFAULT_LIMITS, same_subnet_request_bytes=200)
    with pytest.raises(PlanError, match=r"a forward request of 1 token to layer 0 alone is .*; a call within a "
                                        r"subnet carries at most 200 B"):
        make_plan(spec, Constraints(limits=small_request))
    small_reply = replace(DEFAULT_LIMITS, reply_bytes=200)
    with pytest.raises(PlanError, match=r"the reply of layer 0 alone to 1 token is .*; a reply carries at most "
                                        r"200 B"):
        make_plan(spec, Constraints(limits=small_reply))


def test_shards_that_leave_no_canister_for_the_layers() -> None:
    # Llama 3 8B at f32 under a 1.5 GiB limit needs two output slices: --shards 2 leaves no room
    with pytest.raises(PlanError, match=r"--shards 2 leaves no canister for the layers: the output alone needs 2 "
                                        r"row slices; use --shards 3 or more"):
        make_plan(preset_spec("llama-3-8b", "f16"), Constraints(weight_format="f32", shard_bytes=3 * GiB // 2,
                                                                shards=2))


def test_a_model_without_its_output_norm(tmp_path: Path, models: dict[str, Path]) -> None:
    spec = read_model_spec(models["llama"])
    broken = replace(spec, tensors={k: v for k, v in spec.tensors.items() if k != "output_norm.weight"})
    with pytest.raises(PlanError, match="has no output_norm.weight; it is not a complete model"):
        make_plan(broken)


def test_an_output_no_row_slice_can_hold(models: dict[str, Path]) -> None:
    spec = read_model_spec(models["llama"])
    tiny = replace(DEFAULT_LIMITS, reply_bytes=64)  # not even the reply of one row's logits fits
    with pytest.raises(PlanError, match="a reply carries at most 64 B"):
        make_plan(spec, Constraints(limits=tiny))
