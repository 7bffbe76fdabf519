"""The head canister, deployed with its yblocks in-process (client.pipeline): its queries, the
checks of set_pipeline and generate, streaming with start and poll, and what the client sees when
a stage is full or traps in the middle of a generation (a clear error, and a retry that works).

Faults injected into a yblock, stopped and out-of-cycles stages, and a killed network are in
test_faults.py; this file uses only conditions a controller can cause with update_settings.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from canisters.llama.gguf_file import read_gguf
from canisters.llama.tokenizer import Tokenizer
from cdk.principal import Principal
from client.head_client import GenerationOptions
from client.pipeline import Deployment, run_unsharded
from replica.config import NetworkConfig
from replica.inprocess import LocalClient
from replica.limits import DEFAULT_LIMITS
from replica.network import Network
from sharding.partition import Constraints
from tests.synthetic_models import SyntheticSpec, write_synthetic_model

SPEC = SyntheticSpec(n_layer=4, d_model=64, n_head=4, n_head_kv=2, d_ff=96, seed=31)
PROMPT, OTHER_PROMPT = "the cat sat on the mat", "Once upon a time a dog ran"
TOKENS = 12
# A subnet busy with other work: each round starts about one execution, so a generation spans
# many rounds and a test can act between two of its messages. (An idle subnet runs a small
# model's whole generation within one round.)
BUSY = NetworkConfig(limits=replace(DEFAULT_LIMITS, instructions_per_round=DEFAULT_LIMITS.instructions_per_slice + 1))
STRANGER = Principal.self_authenticating(b"icllama test: not a controller")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_model(tmp_path_factory.mktemp("head") / "model.gguf", SPEC)


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shards")


@pytest.fixture
def deployment(model: Path, shards_dir: Path) -> Deployment:
    # Python yblocks: the memory-limit tests below need the Python yblock's "full" refusal and its
    # trap when its heap is over the limit; a wasm canister cannot read its limit and traps only
    # when it grows past it (tests/test_yblock.py tests both engines there).
    return Deployment.create(model, Constraints(shards=2, context=64), config=BUSY, shards_dir=shards_dir,
                             engine="python")


def request(prompt: str = PROMPT, **options: Any) -> dict[str, Any]:
    return GenerationOptions(**{"max_tokens": TOKENS, **options}).request(prompt)


def expected_ids(model: Path, prompt: str = PROMPT) -> tuple[int, ...]:
    return run_unsharded(model, prompt, GenerationOptions(max_tokens=TOKENS)).ids


def head(deployment: Deployment, method: str, *args: Any) -> Any:
    return deployment.client.update(deployment.head, method, *args).value


def progress(deployment: Deployment, session: int) -> dict[str, Any]:
    return deployment.client.query(deployment.head, "poll", session, 0)["ok"]


def run_until(deployment: Deployment, session: int, predicate: Any) -> dict[str, Any]:
    while not predicate(state := progress(deployment, session)):
        deployment.network.execute_round()
    return state


def set_memory_limit(deployment: Deployment, canister: Principal, limit: int) -> None:
    deployment.client.update(Principal.management(), "update_settings", {
        "canister_id": canister, "settings": {"wasm_memory_limit": limit}, "sender_canister_version": None})


def test_tokenize_and_detokenize_are_the_models_tokenizer(deployment: Deployment, model: Path) -> None:
    tokenizer = Tokenizer.from_metadata(read_gguf(model).fields)
    text = "Once upon a time the cat sat"
    ids = deployment.client.query(deployment.head, "tokenize", text, True, False)
    assert ids == tokenizer.encode(text, add_special=True)
    assert deployment.client.query(deployment.head, "detokenize", ids) == tokenizer.decode(ids)


def test_set_pipeline_refuses_pipelines_that_do_not_compute_the_model(deployment: Deployment, model: Path) -> None:
    status = deployment.client.query(deployment.head, "status")
    stages, chunk = status["stages"], status["prefill_chunk"]
    first, last = stages

    def refused(new_stages: list[dict[str, Any]], sender: Principal | None = None) -> str:
        value = {"stages": new_stages, "prefill_chunk": chunk}
        return deployment.client.update(deployment.head, "set_pipeline", value, sender=sender).value["err"]

    assert "only controllers" in refused(stages, sender=STRANGER)
    assert "starts at layer 2, but the layers before it end at 0" in refused([last])
    assert "layers 0..1 of 4" in refused([{**first, "role": "layers"}])
    assert "holds layers after an output stage" in refused([first, last, first])
    assert "no stage holds the output" in refused([first, {**last, "output_rows": None}])
    assert "holds layers and a slice of the output rows" in refused(
        [first, {**last, "output_rows": {"start": 0, "stop": 136}}])
    assert "role 'layers'" in refused([first, {**last, "role": "output"}])
    # Nothing changed: the pipeline still generates what the model does.
    assert head(deployment, "generate", request())["ok"]["ids"] == list(expected_ids(model))


def test_generate_refuses_clearly_and_changes_nothing(deployment: Deployment, model: Path) -> None:
    too_long = head(deployment, "generate", request(max_tokens=64))["err"]
    assert "plus max_tokens 64 exceeds the context of 64 positions" in too_long
    assert "top_p must be in (0, 1]" in head(deployment, "generate", request(top_p=0.0))["err"]
    assert "max_tokens must be at least 1" in head(deployment, "generate", request(max_tokens=0))["err"]
    assert "no chat template" in head(deployment, "generate", request(chat=True))["err"]
    status = deployment.client.query(deployment.head, "status")
    assert status["running_sessions"] == 0 and status["kept_sessions"] == 0

    fresh = LocalClient(Network(None))
    bare_head = fresh.install("canisters.head.head:Head", {"n_ctx": 64, "fees": {
        "execution_base": 0, "cycles_per_billion_instructions": 0, "call": 0, "call_byte": 0},
        "generate_allowlist": None})
    assert "is not ready" in fresh.update(bare_head, "generate", request()).value["err"]


def test_start_and_poll_stream_what_generate_returns(deployment: Deployment, model: Path) -> None:
    whole = head(deployment, "generate", request())["ok"]
    assert tuple(whole["ids"]) == expected_ids(model)
    session = head(deployment, "start", request())["ok"]

    midway = run_until(deployment, session, lambda p: p["generated"] >= TOKENS // 2)
    assert not midway["done"] and midway["stop_reason"] == "" and midway["error"] is None
    assert midway["ids"] == whole["ids"][: midway["generated"]]
    later = deployment.client.query(deployment.head, "poll", session, midway["generated"])["ok"]
    assert later["ids"] == whole["ids"][midway["generated"] : later["generated"]]

    done = run_until(deployment, session, lambda p: p["done"])
    assert done["ids"] == whole["ids"] and done["text"] == whole["text"] and done["stop_reason"] == "max_tokens"
    result = deployment.client.query(deployment.head, "result", session)["ok"]
    assert (result["ids"], result["text"], result["prompt_ids"]) == (whole["ids"], whole["text"], whole["prompt_ids"])
    assert result["metrics"]["generated_tokens"] == TOKENS and result["metrics"]["cycles"] > 0
    assert "no session 999" in deployment.client.query(deployment.head, "poll", 999, 0)["err"]


def test_a_full_stage_fails_only_the_session_it_cannot_hold(deployment: Deployment, model: Path) -> None:
    first = deployment.stages[0]
    idle = deployment.client.query(first, "status")
    set_memory_limit(deployment, first, idle["heap_bytes"] + idle["kv_bytes_per_session"] * 3 // 2)
    holder = head(deployment, "start", request())["ok"]
    run_until(deployment, holder, lambda p: p["generated"] >= 1)
    refused = head(deployment, "generate", request(OTHER_PROMPT))["err"]
    assert "stage 0 (layers" in refused and "is full: a new session needs" in refused and first.to_text() in refused
    assert "generate again to retry" in refused

    done = run_until(deployment, holder, lambda p: p["done"])
    assert tuple(done["ids"]) == expected_ids(model)  # the session it held went on unharmed
    deployment.network.run_until_idle()
    assert head(deployment, "generate", request(OTHER_PROMPT))["ok"]["ids"] == list(expected_ids(model, OTHER_PROMPT))


def test_a_stage_trapping_mid_generation_gives_a_clear_error_and_a_retry_works(deployment: Deployment,
                                                                             model: Path) -> None:
    last = deployment.stages[-1]
    session = head(deployment, "start", request())["ok"]
    run_until(deployment, session, lambda p: p["generated"] >= 3)
    # A controller lowers the stage's memory limit below what it holds: its next execution
    # traps (IC0539) and is rolled back.
    set_memory_limit(deployment, last, deployment.client.query(last, "status")["heap_bytes"] - 1)
    failed = run_until(deployment, session, lambda p: p["error"] is not None)
    assert "stage 1 (layers" in failed["error"] and "IC0539" in failed["error"]
    assert "generate again to retry" in failed["error"]
    assert failed["ids"] == list(expected_ids(model)[: failed["generated"]])

    set_memory_limit(deployment, last, 0)
    assert tuple(head(deployment, "generate", request())["ok"]["ids"]) == expected_ids(model)
    deployment.network.run_until_idle()
    assert [deployment.client.query(s, "status")["sessions"] for s in deployment.stages] == [0, 0]
