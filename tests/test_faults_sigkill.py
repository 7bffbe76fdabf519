"""The network process (`icllama start`, a real subprocess) killed with SIGKILL in the middle of an
upload and in the middle of a generation, then restarted on its state directory.

The kills come at deterministic points, never after a guessed sleep:
- mid-upload: right after the network acknowledged a chosen upload_chunk, before the uploader
  verified it with upload_commit;
- mid-generation: inside the round, as the forward of a chosen position reaches the last yblock
  (tests/canisters_for_tests/faulty_yblock.py kills its own process there).

After the restart no state is corrupt (each canister holds exactly the bytes it acknowledged, a
verified prefix of its file; loaded shards are loaded, with their sha256), a re-run of deploy
sends only the missing bytes, and new generations give exactly the ids of an undisturbed
deployment. (The uploading client killed instead of the network is in test_deploy.py.)
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cdk.principal import Principal
from client.agent import LocalCanisters, RemoteCanisters, connect
from client.deploy import CanisterIds
from client.head_client import GenerationOptions, HeadClient, HeadError
from client.identity import Identity, generate
from client.upload import CHUNK_BYTES
from replica.inprocess import LocalClient
from replica.network import Network
from tests.canisters_for_tests import faulty_yblock
from tests.deployed_model import HEAD_DID, NETWORK, YBLOCK_DID, Deployment, ExportedModel, deploy, export_model, greedy
from tests.gateway_support import NetworkProcess, start_network, stop_network
from tests.synthetic_models import SyntheticSpec

pytestmark = pytest.mark.network

# Shards of 2 to 3 upload chunks each (the head's is one), so a kill can fall inside a shard.
SPEC = SyntheticSpec(n_layer=4, d_model=256, n_head=4, n_head_kv=2, d_ff=512, n_ctx=256, seed=3)
PROMPT = "the cat sat on the mat"
TOKENS = 12


class NetworkKilled(BaseException):
    """The deploying client stops with the network it was talking to. (A BaseException, so no
    retry loop of the uploader takes it for a transient failure and waits for a network that is
    not coming back; retries and their limit are test_upload.py's subject.)"""


@dataclass
class KillAfterChunks:
    """The owner's view of the network, which SIGKILLs the network process right after it
    acknowledged the `after`-th upload_chunk call; every later call raises NetworkKilled."""

    inner: RemoteCanisters
    network: NetworkProcess
    after: int
    acknowledged: dict[Principal, int] = field(default_factory=dict)  # bytes held per canister, as acked
    chunks: int = 0
    killed: bool = False

    @property
    def sender(self) -> Principal:
        return self.inner.sender

    def canister(self, canister_id: Principal, did: Path) -> _Killing:
        return _Killing(self, self.inner.canister(canister_id, did))


@dataclass
class _Killing:
    owner: KillAfterChunks
    inner: Any

    @property
    def canister_id(self) -> Principal:
        return self.inner.canister_id

    def query(self, method: str, *args: Any) -> Any:
        if self.owner.killed:
            raise NetworkKilled
        return self.inner.query(method, *args)

    def update(self, method: str, *args: Any) -> Any:
        owner = self.owner
        if owner.killed:
            raise NetworkKilled
        reply = self.inner.update(method, *args)
        if method == "upload_chunk" and "ok" in reply:
            owner.acknowledged[self.canister_id] = reply["ok"]
            owner.chunks += 1
            if owner.chunks == owner.after:
                owner.network.process.send_signal(signal.SIGKILL)
                owner.network.process.wait(timeout=60)
                owner.killed = True
        return reply


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> ExportedModel:
    return export_model(tmp_path_factory.mktemp("model"), SPEC)


@pytest.fixture(scope="module")
def expected(exported: ExportedModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The generation of an undisturbed deployment of the same shards, in-process."""
    alone = deploy(LocalCanisters(LocalClient(Network(None))), exported, tmp_path_factory.mktemp("alone"))
    return alone.head().update("generate", greedy(PROMPT, TOKENS))["ok"]


@pytest.fixture
def owner() -> Identity:
    return generate("owner")


def remote(network: NetworkProcess, identity: Identity) -> RemoteCanisters:
    return RemoteCanisters(connect(network.url, identity))


def sizes(exported: ExportedModel) -> dict[str, tuple[int, str]]:
    return {f.shard: (f.size, f.sha256) for f in exported.export.files}


def assert_killed(network: NetworkProcess) -> None:
    assert network.process.wait(timeout=60) == -signal.SIGKILL


def test_sigkill_mid_upload_then_restart_resumes_only_the_missing_bytes(
        exported: ExportedModel, expected: dict[str, Any], owner: Identity, tmp_path: Path) -> None:
    files = sizes(exported)
    assert files["head"][0] <= CHUNK_BYTES < 2 * CHUNK_BYTES < files["yblock_0"][0]
    network = start_network(tmp_path / "network")
    try:
        # One chunk of the head's shard, then two of yblock_0's (deploy uploads one shard at a time).
        killer = KillAfterChunks(remote(network, owner), network, after=3)
        with pytest.raises(NetworkKilled):
            deploy(killer, exported, tmp_path / "client")
        assert_killed(network)
        held_at_kill = {name: killer.acknowledged.get(canister_id, 0)
                        for name, canister_id in _ids(tmp_path / "client").items()}
        assert held_at_kill == {"head": files["head"][0], "yblock_0": 2 * CHUNK_BYTES, "yblock_1": 0}

        network = start_network(tmp_path / "network")
        canisters = remote(network, owner)
        for name, canister_id in _ids(tmp_path / "client").items():
            status = canisters.canister(canister_id, HEAD_DID if name == "head" else YBLOCK_DID).query(
                "upload_status", f"{name}.gguf")
            # Exactly what the network acknowledged before it died: the head's shard loaded and
            # verified, yblock_0's first two chunks, nothing of yblock_1.
            assert status["held"] == held_at_kill[name]
            assert status["loaded"] == (name == "head")
            if name == "head":
                assert status["sha256"] == files["head"][1]

        deployed = deploy(canisters, exported, tmp_path / "client")
        uploads = {c.name: c for c in deployed.report.canisters}
        assert not any(c.created for c in uploads.values())  # the canisters made before the kill
        assert uploads["head"].upload.outcome == "already loaded" and uploads["head"].upload.bytes_sent == 0
        resumed = uploads["yblock_0"].upload
        assert (resumed.outcome, resumed.bytes_resumed) == ("resumed", 2 * CHUNK_BYTES)
        assert resumed.bytes_sent == files["yblock_0"][0] - 2 * CHUNK_BYTES  # only the missing bytes
        assert uploads["yblock_1"].upload.bytes_sent == files["yblock_1"][0]
        client = HeadClient(network.url, deployed.ids["head"].to_text(), owner)
        assert list(client.generate(PROMPT, GenerationOptions(max_tokens=TOKENS)).ids) == expected["ids"]
    finally:
        stop_network(network)


def test_sigkill_mid_generation_then_restart_serves_new_generations(
        exported: ExportedModel, expected: dict[str, Any], owner: Identity, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    kill_at = len(expected["prompt_ids"]) + 3  # the forward of the fourth generated token's position
    monkeypatch.setenv(faulty_yblock.KILL_AT_POS_ENV, str(kill_at))  # inherited by the network process
    network = start_network(tmp_path / "network")
    try:
        # Python yblocks: the trap comes from a Python subclass of the yblock (see test_faults).
        deployed = deploy(remote(network, owner), exported, tmp_path / "client", engine="python")
        last = deployed.yblock_names[-1]
        deployed.upgrade(last, faulty_yblock.CLASS_PATH)
        client = HeadClient(network.url, deployed.ids["head"].to_text(), owner)
        received: list[int] = []
        with pytest.raises(HeadError, match="failed"):
            for event in client.stream(PROMPT, GenerationOptions(max_tokens=TOKENS)):
                received += event.ids
        assert_killed(network)
        # Whatever reached the client before the kill is what an undisturbed run generates.
        assert received == expected["ids"][: len(received)] and len(received) <= kill_at - len(expected["prompt_ids"])

        monkeypatch.delenv(faulty_yblock.KILL_AT_POS_ENV)
        network = start_network(tmp_path / "network")
        canisters = remote(network, owner)
        deployed = Deployment(canisters, exported, deployed.ids, deployed.report, deployed.version)
        files = sizes(exported)
        for name in deployed.ids:
            status = deployed.canister(name).query("upload_status", f"{name}.gguf")
            assert status["loaded"] and status["sha256"] == files[name][1] and status["held"] == files[name][0]
        head = deployed.head().query("status")
        assert head["loaded"] and head["running_sessions"] == 0 and len(head["stages"]) == len(deployed.yblock_names)
        for name in deployed.yblock_names:  # the heap was rebuilt: no KV cache survives, none leaks
            assert deployed.yblock(name).query("status")["sessions"] == 0
        client = HeadClient(network.url, deployed.ids["head"].to_text(), owner)
        assert list(client.generate(PROMPT, GenerationOptions(max_tokens=TOKENS)).ids) == expected["ids"]
        streamed = [i for event in client.stream(PROMPT, GenerationOptions(max_tokens=TOKENS)) for i in event.ids]
        assert streamed == expected["ids"]
    finally:
        stop_network(network)


def _ids(state_dir: Path) -> dict[str, Principal]:
    return CanisterIds.of(state_dir, NETWORK).read()
