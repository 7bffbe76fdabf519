"""Faults in the middle of a generation, in-process, at points the test chooses by watching the
session's progress round by round (never by time):

- a yblock that traps (an injected one-off fault, after its layers wrote the KV arrays);
- a yblock that runs out of cycles (IC0207), then is topped up with deposit_cycles;
- a yblock that is stopped (IC0508), then started again;
- a yblock upgraded while a session runs (its heap, so the session's KV cache, is gone).

Each time the client gets an error naming the stage, the position, the IC error and what to do;
no stage keeps a KV cache of the failed session; a session running beside it on the same stages
finishes with exactly the ids it has when run alone; and a retry generates exactly the ids of an
undisturbed run. The network process killed with SIGKILL is in test_faults_sigkill.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from cdk.principal import Principal
from client.agent import LocalCanisters
from replica.inprocess import LocalClient
from replica.network import Network
from tests.canisters_for_tests import faulty_yblock
from tests.deployed_model import BUSY_SUBNET, Deployment, ExportedModel, deploy, export_model, greedy

OWNER = Principal.self_authenticating(b"icllama test: the deploying controller")
WALLET_CLASS = "tests.canisters_for_tests.caller:Caller"  # deposits cycles as a dfx wallet does
PROMPT, OTHER_PROMPT = "the cat sat on the mat", "Once upon a time a dog ran"
TOKENS = 16
SOME_TOKENS = 4  # the fault comes once a session has generated this many
# Canisters made with little more than an install needs (300B instructions' worth above the
# freezing threshold), so that a raised freezing threshold leaves them short of a forward's
# prepaid 40B and a top-up of TOP_UP covers them again.
SMALL_BALANCE = 400_000_000_000
TOP_UP = 100_000_000_000


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> ExportedModel:
    return export_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def network() -> Network:
    return Network(None, BUSY_SUBNET)


@pytest.fixture
def client(network: Network) -> LocalClient:
    return LocalClient(network, OWNER)


@pytest.fixture
def deployed(client: LocalClient, exported: ExportedModel, tmp_path: Path) -> Deployment:
    return deploy(LocalCanisters(client), exported, tmp_path / "client")


@pytest.fixture(scope="module")
def expected(exported: ExportedModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[int]]:
    """Each prompt's ids, generated alone on an undisturbed deployment."""
    alone = deploy(LocalCanisters(LocalClient(Network(None), OWNER)), exported, tmp_path_factory.mktemp("alone"))
    return {prompt: alone.head().update("generate", greedy(prompt, TOKENS))["ok"]["ids"]
            for prompt in (PROMPT, OTHER_PROMPT)}


# --- driving sessions round by round -----------------------------------------------------------------
def start(deployed: Deployment, prompt: str) -> int:
    reply = deployed.head().update("start", greedy(prompt, TOKENS))
    assert "ok" in reply, reply
    return reply["ok"]


def poll(deployed: Deployment, session: int) -> dict[str, Any]:
    return deployed.head().query("poll", session, 0)["ok"]


def run_until(network: Network, deployed: Deployment, session: int, generated: int | None = None,
              failed: bool = False) -> dict[str, Any]:
    """Executes rounds until the session has generated `generated` tokens, or has failed (its
    error is set: the head is still releasing its KV caches), or has ended."""
    while True:
        progress = poll(deployed, session)
        if (progress["done"] or (generated is not None and progress["generated"] >= generated)
                or (failed and progress["error"] is not None)):
            return progress
        network.execute_round()


def kv_sessions(deployed: Deployment) -> dict[str, int]:
    return {name: deployed.yblock(name).query("status")["sessions"] for name in deployed.yblock_names}


def assert_failed_cleanly(progress: dict[str, Any], deployed: Deployment, stage: int, expected_ids: list[int],
                          *phrases: str) -> str:
    """The session ended with an error that names the failing stage, the position and what to do,
    and the tokens it streamed before the fault are those of an undisturbed run."""
    assert progress["done"] and progress["stop_reason"] == "error", progress
    error = progress["error"]
    name = deployed.yblock_names[stage]
    assert f"generation failed in stage {stage} (layers, {deployed.ids[name].to_text()}) at position" in error
    assert "generate again to retry" in error
    for phrase in phrases:
        assert phrase in error, error
    assert SOME_TOKENS <= progress["generated"] < TOKENS
    assert progress["ids"] == expected_ids[: progress["generated"]]
    return error


def assert_recovered(network: Network, deployed: Deployment, expected: dict[str, list[int]]) -> None:
    """Retries generate exactly what undisturbed runs do, and then no stage holds a KV cache."""
    for prompt, ids in expected.items():
        assert deployed.head().update("generate", greedy(prompt, TOKENS))["ok"]["ids"] == ids
    network.run_until_idle()
    assert kv_sessions(deployed) == {name: 0 for name in deployed.yblock_names}
    assert deployed.head().query("status")["running_sessions"] == 0


# --- the faults ---------------------------------------------------------------------------------------
def test_a_trapping_yblock_fails_one_session_and_a_retry_succeeds(network: Network, client: LocalClient,
                                                                   exported: ExportedModel, tmp_path: Path,
                                                                   expected: dict[str, list[int]]) -> None:
    # Python yblocks: the trap comes from a Python subclass of the yblock, which a canister
    # running the wasm module cannot be upgraded to.
    deployed = deploy(LocalCanisters(client), exported, tmp_path / "client", engine="python")
    last = deployed.yblock_names[-1]
    deployed.upgrade(last, faulty_yblock.CLASS_PATH)
    victim, bystander = start(deployed, PROMPT), start(deployed, OTHER_PROMPT)
    progress = run_until(network, deployed, victim, SOME_TOKENS)
    trap_pos = len(progress_prompt(deployed, victim)) + progress["generated"]  # the next forward's position
    faulty_yblock.arm_trap(deployed.ids[last], victim, trap_pos)

    run_until(network, deployed, victim, failed=True)
    assert not faulty_yblock.trap_armed(deployed.ids[last])
    # The trap rolled back the last stage's commit of that position; the stage before it had
    # committed it. The head's resets, sent as it failed the session, have not run yet.
    caches = {name: inspect_cache(network, deployed, name, victim) for name in deployed.yblock_names}
    assert caches == {deployed.yblock_names[0]: trap_pos + 1, last: trap_pos}
    error = assert_failed_cleanly(run_until(network, deployed, victim), deployed, 1, expected[PROMPT],
                                  f"at position {trap_pos} of session {victim}", "IC0503",
                                  f"injected fault in forward of session {victim} at position {trap_pos}")
    assert "trapped explicitly" in error
    assert {name: inspect_cache(network, deployed, name, victim) for name in deployed.yblock_names} == {
        name: None for name in deployed.yblock_names}
    assert run_until(network, deployed, bystander)["ids"] == expected[OTHER_PROMPT]
    assert_recovered(network, deployed, expected)


def test_a_yblock_out_of_cycles_is_a_clear_error_until_topped_up(client: LocalClient, network: Network,
                                                                  exported: ExportedModel, tmp_path: Path,
                                                                  expected: dict[str, list[int]]) -> None:
    deployed = deploy(LocalCanisters(client), exported, tmp_path / "small", cycles=SMALL_BALANCE)
    first = deployed.yblock_names[0]
    victim = start(deployed, PROMPT)
    run_until(network, deployed, victim, SOME_TOKENS)
    # Raising the freezing threshold to all but 10B of its balance leaves it unable to prepay a
    # forward (40B instructions): below the threshold a canister is out of cycles (IC0207).
    status = deployed.management().update("canister_status", {"canister_id": deployed.ids[first]})
    per_second = status["idle_cycles_burned_per_day"] / 86_400
    threshold_s = int((status["cycles"] - 10_000_000_000) / per_second)
    deployed.management().update("update_settings", {"canister_id": deployed.ids[first], "settings": {
        "freezing_threshold": threshold_s}, "sender_canister_version": None})

    error = assert_failed_cleanly(run_until(network, deployed, victim), deployed, 0, expected[PROMPT], "IC0207",
                                  f"Canister {deployed.ids[first].to_text()} is out of cycles",
                                  "please top up the canister with at least")
    missing = int(re.search(r"at least (\d+) additional cycles", error).group(1))
    assert missing < TOP_UP
    refused = deployed.head().update("generate", greedy(PROMPT, TOKENS))
    assert "IC0207" in refused["err"] and "at position 0" in refused["err"]
    wallet = client.install(WALLET_CLASS)
    client.update(wallet, "deposit", deployed.ids[first], TOP_UP)
    assert_recovered(network, deployed, expected)


def test_a_stopped_yblock_is_a_clear_error_until_started(network: Network, deployed: Deployment,
                                                          expected: dict[str, list[int]]) -> None:
    last = deployed.yblock_names[-1]
    victim = start(deployed, PROMPT)
    run_until(network, deployed, victim, SOME_TOKENS)
    deployed.management().update("stop_canister", {"canister_id": deployed.ids[last]})  # it stops between calls
    assert_failed_cleanly(run_until(network, deployed, victim), deployed, 1, expected[PROMPT], "IC0508",
                          f"Canister {deployed.ids[last].to_text()} is stopped",
                          "a controller can start it again with start_canister")
    deployed.management().update("start_canister", {"canister_id": deployed.ids[last]})
    assert_recovered(network, deployed, expected)


def test_a_yblock_upgraded_mid_generation_fails_the_session_it_forgot(network: Network, deployed: Deployment,
                                                                      expected: dict[str, list[int]]) -> None:
    first = deployed.yblock_names[0]
    victim = start(deployed, PROMPT)
    run_until(network, deployed, victim, SOME_TOKENS)
    deployed.upgrade(first)  # the heap, and the session's KV cache with it, starts over
    assert_failed_cleanly(run_until(network, deployed, victim), deployed, 0, expected[PROMPT],
                          "skips past the 0 cached positions")
    assert_recovered(network, deployed, expected)


# --- looking inside --------------------------------------------------------------------------------
def progress_prompt(deployed: Deployment, session: int) -> list[int]:
    return deployed.head().query("result", session)["ok"]["prompt_ids"]


def inspect_cache(network: Network, deployed: Deployment, name: str, session: int) -> int | None:
    """The committed length of a yblock's KV cache for `session` (None: it holds none). Read from
    the canister's heap directly: no method exposes another session's cache, nor should one."""
    with network.lock:
        cache = network.subnet.canisters[deployed.ids[name]].instance.sessions.get(session)
    return None if cache is None else cache.length


def test_a_restarted_network_serves_at_once_and_never_reissues_a_session_id(
        exported: ExportedModel, expected: dict[str, list[int]], tmp_path: Path) -> None:
    network = Network(tmp_path / "network")
    deployed = deploy(LocalCanisters(LocalClient(network, OWNER)), exported, tmp_path / "client")
    held = [deployed.head().update("generate", greedy(prompt, TOKENS))["ok"]["session"] for prompt in expected]
    network.stop()  # the state directory as a crash leaves it: restored from the last checkpoint
    restarted = Network(tmp_path / "network")
    again = Deployment(LocalCanisters(LocalClient(restarted, OWNER)), exported, deployed.ids, deployed.report,
                       deployed.version)
    # Finished sessions lived on the heap: a client polling one it holds is told so, and is never
    # shown another session's tokens under the same id.
    for session in held:
        assert f"has no session {session}" in again.head().query("poll", session, 0)["err"]
    new = [again.head().update("generate", greedy(prompt, TOKENS))["ok"] for prompt in expected]  # no re-wiring
    assert [g["ids"] for g in new] == list(expected.values())
    assert min(g["session"] for g in new) > max(held)
