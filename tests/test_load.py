"""Many sessions at once, and what happens when the yblocks' KV memory runs out.

- 16 clients, each with its own identity, generate 32 greedy tokens at once over HTTP (half with
  `generate`, half streaming with `start` and `poll`): every one completes, with exactly the ids
  its prompt gets when run alone, in a session of its own.
- A yblock whose heap holds the KV caches of only a few sessions refuses the next one with a
  clear "full" error, which reaches that client; the sessions already running finish exactly as
  they would alone, and once they end the refused prompt generates normally.

Only correctness is asserted, never timing; the throughput figures are benchmarks/bench_load.py's.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from client.agent import LocalCanisters, RemoteCanisters, connect
from client.head_client import GenerationOptions, HeadClient
from client.identity import generate
from replica.inprocess import LocalClient
from replica.network import Network
from tests.deployed_model import BUSY_SUBNET, Deployment, ExportedModel, deploy, export_model, greedy
from tests.gateway_support import start_network, stop_network

SESSIONS = 16
TOKENS = 32
# Sixteen different prompts, each of which generates 32 tokens before any end-of-sequence (prompt
# and generation fit the context of 64 positions).
PROMPTS = ["a sat", "cat and", "dog time", "sat cat", "on on", "mat ran", "and the", "ran dog upon",
           "upon mat dog", "time upon ran", "the a cat", "a sat and", "cat and a", "dog time mat", "sat cat the",
           "the dog sat"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> ExportedModel:
    return export_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def alone(exported: ExportedModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each prompt's generation, one at a time on a deployment of its own."""
    deployed = deploy(LocalCanisters(LocalClient(Network(None))), exported, tmp_path_factory.mktemp("alone"))
    return {prompt: deployed.head().update("generate", greedy(prompt, TOKENS))["ok"] for prompt in PROMPTS}


def test_prompts_are_distinct(alone: dict[str, dict[str, Any]]) -> None:
    assert len({tuple(g["prompt_ids"]) for g in alone.values()}) == SESSIONS
    assert all(len(g["ids"]) == TOKENS for g in alone.values())  # max_tokens, no early EOS


@pytest.mark.network
def test_sixteen_concurrent_sessions_over_http_are_exact_and_isolated(
        exported: ExportedModel, alone: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    network = start_network(tmp_path / "network")
    try:
        owner = generate("owner")
        deployed = deploy(RemoteCanisters(connect(network.url, owner)), exported, tmp_path / "client")
        head = deployed.ids["head"].to_text()
        clients = [HeadClient(network.url, head, generate(f"user{i}")) for i in range(SESSIONS)]
        options = GenerationOptions(max_tokens=TOKENS)
        results: list[dict[str, Any] | BaseException | None] = [None] * SESSIONS
        barrier = threading.Barrier(SESSIONS)

        def run(i: int) -> None:
            try:
                barrier.wait()
                if i % 2 == 0:
                    g = clients[i].generate(PROMPTS[i], options)
                    results[i] = {"session": g.session, "ids": list(g.ids), "prompt_ids": list(g.prompt_ids),
                                  "stop_reason": g.stop_reason}
                else:
                    events = list(clients[i].stream(PROMPTS[i], options))
                    results[i] = {"session": events[-1].session, "ids": [t for e in events for t in e.ids],
                                  "stop_reason": events[-1].stop_reason}
            except BaseException as e:  # noqa: BLE001 - reported below with the session it belongs to
                results[i] = e

        threads = [threading.Thread(target=run, args=(i,)) for i in range(SESSIONS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        failures = {PROMPTS[i]: r for i, r in enumerate(results) if not isinstance(r, dict)}
        assert not failures
        for prompt, result in zip(PROMPTS, results, strict=True):
            assert result["ids"] == alone[prompt]["ids"], prompt
            assert result["stop_reason"] == "max_tokens"
            if "prompt_ids" in result:
                assert result["prompt_ids"] == alone[prompt]["prompt_ids"]
        assert len({r["session"] for r in results}) == SESSIONS  # a session each
        status = deployed.head().query("status")
        assert status["running_sessions"] == 0 and status["kept_sessions"] == SESSIONS
        for name in deployed.yblock_names:
            assert deployed.yblock(name).query("status")["sessions"] == 0
    finally:
        stop_network(network)


FIT = 3  # sessions whose KV caches the limited yblock holds


def test_a_full_yblock_refuses_a_new_session_and_harms_nobody(
        exported: ExportedModel, alone: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """Python yblocks: they read their wasm_memory_limit and refuse a session that would pass it as
    "full". A wasm yblock cannot read the limit (no System API call gives it) and reuses the memory its
    freed prefill scratch leaves, so it meets the limit only when memory.grow fails (IC0539, rolled back;
    tests/test_wasm_engine.py covers that path)."""
    network = Network(None, BUSY_SUBNET)
    deployed = deploy(LocalCanisters(LocalClient(network)), exported, tmp_path / "client", engine="python")
    last = deployed.yblock_names[-1]
    limit_heap(deployed, last, FIT)
    running = [start(deployed, prompt) for prompt in PROMPTS[:FIT]]
    while not all(poll(deployed, s)["generated"] >= 1 for s in running):  # each holds its KV caches
        network.execute_round()
    assert not any(poll(deployed, s)["done"] for s in running)
    assert deployed.yblock(last).query("status")["sessions"] == FIT

    refused = start(deployed, PROMPTS[FIT])
    while poll(deployed, refused)["error"] is None:
        network.execute_round()
    error = poll(deployed, refused)["error"]
    assert f"generation failed in stage 1 (layers, {deployed.ids[last].to_text()}) at position 0" in error
    assert "is full: a new session needs" in error and f"({FIT} sessions hold" in error
    assert "retry when a session ends" in error and "generate again to retry" in error

    network.run_until_idle()
    for session, prompt in zip(running, PROMPTS[:FIT], strict=True):
        assert deployed.head().query("result", session)["ok"]["ids"] == alone[prompt]["ids"]
    assert {n: deployed.yblock(n).query("status")["sessions"] for n in deployed.yblock_names} == {
        n: 0 for n in deployed.yblock_names}
    retried = deployed.head().update("generate", greedy(PROMPTS[FIT], TOKENS))
    assert retried["ok"]["ids"] == alone[PROMPTS[FIT]]["ids"]


def limit_heap(deployed: Deployment, name: str, sessions: int) -> None:
    """Sets the yblock's wasm_memory_limit to what it holds now plus the KV caches of `sessions`
    sessions and half of another's: a controller's setting, as on the IC."""
    status = deployed.yblock(name).query("status")
    per_session = status["kv_bytes_per_session"] + 4096  # the yblock's own per-session allowance
    limit = status["heap_bytes"] + sessions * per_session + per_session // 2
    deployed.management().update("update_settings", {"canister_id": deployed.ids[name], "settings": {
        "wasm_memory_limit": limit}, "sender_canister_version": None})
    assert deployed.yblock(name).query("status")["heap_limit_bytes"] == limit


def start(deployed: Deployment, prompt: str) -> int:
    return deployed.head().update("start", greedy(prompt, TOKENS))["ok"]


def poll(deployed: Deployment, session: int) -> dict[str, Any]:
    return deployed.head().query("poll", session, 0)["ok"]
