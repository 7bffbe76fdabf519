"""Sharded generation end to end through the simulated IC (client.pipeline): the same tokens as the
unsharded model at every shard count, and the activation message a token costs.

Every run plans, exports, deploys into an in-process network (the head and its yblocks talk only
through the replica, in Candid) and generates; the reference is `Llama` in one process with the
same weight strategy the canisters use.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from canisters.llama.gguf_file import read_gguf
from canisters.llama.meter import NullMeter
from canisters.llama.model import Llama
from client.head_client import GenerationOptions
from client.pipeline import Deployment, run_unsharded
from sharding.partition import Constraints
from tests.synthetic_models import SyntheticSpec, write_synthetic_model

PROMPT = "Once upon a time"
QWEN2 = SyntheticSpec(arch="qwen2", n_layer=8, d_model=64, n_head=4, n_head_kv=2, d_ff=96, seed=3)
# Every layer and the output matrix almost the same size: with a shard bound between the head's
# token_embd (69632 bytes) and the output with its norm (69888), the output no canister holds is
# split by rows into two slices, for 6 + 2 = 8 canisters besides the head.
QWEN2_ROW_SPLIT = SyntheticSpec(arch="qwen2", n_layer=6, d_model=64, n_head=4, n_head_kv=2, d_ff=16, seed=5)
ROW_SPLIT_BYTES = 69700


def sharded(model: Path, shards_dir: Path, options: GenerationOptions, **constraints: int) -> tuple[int, ...]:
    deployment = Deployment.create(model, Constraints(**constraints), shards_dir=shards_dir)
    return deployment.generate(PROMPT, options).generation.ids


@functools.cache
def unsharded(model: Path, options: GenerationOptions) -> tuple[int, ...]:
    return run_unsharded(model, PROMPT, options).ids


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exports by model and plan digest, shared by the tests of this module."""
    return tmp_path_factory.mktemp("shards")


@pytest.fixture(scope="module")
def qwen2_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_model(tmp_path_factory.mktemp("qwen2") / "qwen2.gguf", QWEN2)


@pytest.fixture(scope="module")
def row_split_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_model(tmp_path_factory.mktemp("rows") / "rows.gguf", QWEN2_ROW_SPLIT)


# stories260K has 5 layers and an output matrix smaller than a layer, so 6 canisters (each layer
# and the output on its own) is the most any plan gives it.
@pytest.mark.parametrize(("shards", "prefill_chunk"), [(1, None), (2, None), (4, None), (6, None), (4, 2)])
def test_stories_greedy_ids_at_every_shard_count(stories_path: Path, shards_dir: Path, shards: int,
                                                 prefill_chunk: int | None) -> None:
    options = GenerationOptions(max_tokens=24)
    chunk = {} if prefill_chunk is None else {"prefill_chunk": prefill_chunk}
    assert sharded(stories_path, shards_dir, options, shards=shards, **chunk) == unsharded(stories_path, options)


@pytest.mark.parametrize(("shards", "prefill_chunk"), [(1, None), (2, None), (4, None), (8, None), (8, 1)])
def test_qwen2_greedy_ids_at_every_shard_count(qwen2_path: Path, shards_dir: Path, shards: int,
                                               prefill_chunk: int | None) -> None:
    options = GenerationOptions(max_tokens=16)
    chunk = {} if prefill_chunk is None else {"prefill_chunk": prefill_chunk}
    assert sharded(qwen2_path, shards_dir, options, shards=shards, **chunk) == unsharded(qwen2_path, options)


@pytest.mark.parametrize("options", [
    GenerationOptions(max_tokens=16),
    GenerationOptions(max_tokens=16, temperature=0.9, top_k=0, top_p=1.0, min_p=0.0, seed=7),
    GenerationOptions(max_tokens=16, temperature=0.9, top_k=5, top_p=0.9, min_p=0.05, repeat_penalty=1.3, seed=11),
], ids=["greedy", "full-vocabulary", "top-k-penalty"])
def test_row_split_output_samples_what_one_sampler_samples(row_split_path: Path, shards_dir: Path,
                                                           options: GenerationOptions) -> None:
    deployment = Deployment.create(row_split_path, Constraints(shard_bytes=ROW_SPLIT_BYTES), shards_dir=shards_dir)
    slices = [s.output_rows for s in deployment.plan.shards if s.role == "output"]
    assert len(deployment.plan.shards) == 9 and slices == [(0, 136), (136, 272)]
    assert deployment.generate(PROMPT, options).generation.ids == unsharded(row_split_path, options)


@pytest.mark.real_model
@pytest.mark.parametrize(("shards", "prefill_chunk"), [(1, None), (2, None), (4, None), (8, None), (8, 3)])
def test_smollm2_greedy_ids_at_every_shard_count(smollm2_path: Path, shards_dir: Path, shards: int,
                                                 prefill_chunk: int | None) -> None:
    options = GenerationOptions(max_tokens=12)
    chunk = {} if prefill_chunk is None else {"prefill_chunk": prefill_chunk}
    assert sharded(smollm2_path, shards_dir, options, shards=shards, **chunk) == unsharded(smollm2_path, options)


def test_streaming_gives_the_generation_and_the_network_measures_it(qwen2_path: Path, shards_dir: Path) -> None:
    deployment = Deployment.create(qwen2_path, Constraints(shards=4), shards_dir=shards_dir)
    options = GenerationOptions(max_tokens=10)
    whole = deployment.generate(PROMPT, options)
    events = []
    streamed = deployment.generate(PROMPT, options, on_text=events.append)
    assert streamed.generation.ids == whole.generation.ids == unsharded(qwen2_path, options)
    assert "".join(e.text for e in events) == streamed.generation.text == whole.generation.text
    assert [i for e in events for i in e.ids] == list(whole.generation.ids) and events[-1].done

    net, head = whole.network, whole.generation.metrics
    tokens = len(whole.generation.ids)
    assert net.canisters == 5 and net.generated_tokens == tokens == head.generated_tokens
    # One forward call (request and reply) per layer stage per pass: one prefill chunk and one
    # pass per generated token after the first, plus the release of the session's KV caches.
    assert net.messages == 2 * 4 * tokens + 2 * 4 == head.messages
    assert net.rounds >= 1 and net.virtual_seconds_per_token == net.virtual_seconds / tokens
    # What the head estimates from the stages' performance counters is what the network charged,
    # up to the runtime's own per-message overhead (Candid decoding, system calls).
    assert 0.9 * net.instructions <= head.instructions <= net.instructions
    assert net.instructions_per_token == net.instructions / tokens and net.cycles_per_token > 0


def test_a_token_crosses_as_d_model_f32_plus_candid_framing(tmp_path: Path) -> None:
    """d_model 4096: one token's activations are 16 KiB. Measured on the network: the bytes of a
    forward call of one token and of two (request and reply each carry the activations)."""
    spec = SyntheticSpec(tensor_type="Q4_0", n_layer=1, d_model=4096, n_head=32, n_head_kv=4, d_ff=64, seed=9)
    model = write_synthetic_model(tmp_path / "wide.gguf", spec)
    deployment = Deployment.create(model, Constraints(shards=2, context=16), shards_dir=tmp_path)
    framing = deployment.activation_message_bytes() - 4096 * 4
    assert 0 < framing < 128

    # A yblock of the same layer whose head is this test, so it can call forward and read the
    # network's report of each call.
    client = deployment.client
    yblock = client.install("canisters.yblock.yblock:YBlock", {"head": client.sender, "n_ctx": 16})
    shard = next(f for f in deployment.export.files if f.shard == "yblock_0")
    data = (deployment.export.directory / shard.file).read_bytes()
    for offset in range(0, len(data), 1 << 20):
        assert "ok" in client.update(yblock, "upload_chunk", shard.file, offset, data[offset:offset + (1 << 20)]).value
    assert client.update(yblock, "upload_commit", shard.file, len(data)).value == {"ok": shard.sha256}
    assert "ok" in client.update(yblock, "load").value

    embedding = Llama.load(read_gguf(model), "quantized", n_ctx=16).embedding
    sizes = []
    for pos, ids in ((0, [1]), (1, [5, 6])):
        activations = embedding(ids, NullMeter()).astype("<f4").tobytes()
        request = {"session": 1, "pos": pos, "activations": activations, "n_tokens": len(ids), "sample": None}
        outcome = client.update(yblock, "forward", request)
        assert len(outcome.value["ok"]["activations"]) == len(activations)
        sizes.append(outcome.report.bytes)  # the request and the reply, as Candid
    one_token, two_tokens = sizes
    assert two_tokens - one_token == 2 * 4096 * 4  # one more token each way: 16 KiB
    assert 2 * 4096 * 4 < one_token < 2 * 4096 * 4 + 256


@pytest.mark.real_model
def test_smollm2_chat_through_the_head_is_the_chat_of_one_process(smollm2_path: Path, shards_dir: Path) -> None:
    question, options = "What is the capital of France?", GenerationOptions(max_tokens=24, chat=True)
    run = Deployment.create(smollm2_path, Constraints(shards=4), shards_dir=shards_dir).generate(question, options)
    local = run_unsharded(smollm2_path, question, options)
    assert run.generation.prompt_ids == local.prompt_ids and run.generation.ids == local.ids
    assert run.generation.text == local.text and run.generation.text.startswith("L'Étoile, la")  # llama.cpp's answer
