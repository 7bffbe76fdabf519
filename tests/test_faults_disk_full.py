"""The state directory's disk fills up in the middle of an upload (`icllama start`, a real
subprocess, its state directory on a 48 MiB tmpfs that a filler file nearly fills).

The deploy fails within 10 s of the last chunk the network acknowledged, with an error that
names the state directory and the full disk; `icllama status` shows the condition; once space is
freed the same network process (no restart) resumes by itself, and a re-deploy sends only the
missing bytes and loads every shard with its sha256. Mounting a tmpfs needs root: elsewhere the
test skips (and fails under CI=true), because only a real filesystem says ENOSPC truthfully.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cdk.principal import Principal
from client.agent import LocalCanisters, RemoteCanisters, connect
from client.errors import UserError
from client.head_client import GenerationOptions, HeadClient
from client.identity import generate
from replica.inprocess import LocalClient
from replica.network import Network
from tests.deployed_model import ExportedModel, deploy, export_model, greedy
from tests.gateway_support import REPO, NetworkProcess, stop_network
from tests.synthetic_models import SyntheticSpec
from tests.toolchains import missing

pytestmark = pytest.mark.network

SPEC = SyntheticSpec(n_layer=4, d_model=256, n_head=4, n_head_kv=2, d_ff=512, n_ctx=256, seed=3)
PROMPT = "the cat sat on the mat"
TOKENS = 8
MOUNT_BYTES = 48 * 1024 * 1024
LEFT_FREE = 3 * 1024 * 1024  # room for the network's start and part of the first shards


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on its own 48 MiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        missing("mounting a tmpfs to fill needs root (mount -t tmpfs)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={MOUNT_BYTES}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        missing(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def start_network_on(state_dir: Path, log: Path) -> NetworkProcess:
    """`icllama start` with its state on `state_dir` and its log elsewhere (a full disk would
    swallow the log)."""
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "client.cli", "start", "--port", "0", "--state-dir",
                                    str(state_dir)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        record = state_dir / "network.json"
        running = json.loads(record.read_text()) if record.is_file() else None
        if running is not None and running["pid"] == process.pid:
            return NetworkProcess(process, running["url"], state_dir)
        assert process.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError(f"the network did not start: {log.read_text()}")


def described(network: NetworkProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"{network.url}/_/icllama/status", timeout=10) as response:
        return json.load(response)


@dataclass
class Timed:
    """The owner's canisters, noting when the network last acknowledged an update."""

    inner: RemoteCanisters
    last_ack: list[float] = field(default_factory=lambda: [time.monotonic()])

    @property
    def sender(self) -> Principal:
        return self.inner.sender

    def canister(self, canister_id: Principal, did: Path) -> Any:
        return _TimedCanister(self, self.inner.canister(canister_id, did))


@dataclass
class _TimedCanister:
    owner: Timed
    inner: Any

    @property
    def canister_id(self) -> Principal:
        return self.inner.canister_id

    def query(self, method: str, *args: Any) -> Any:
        return self.inner.query(method, *args)

    def update(self, method: str, *args: Any) -> Any:
        reply = self.inner.update(method, *args)
        self.owner.last_ack[0] = time.monotonic()
        return reply


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> ExportedModel:
    return export_model(tmp_path_factory.mktemp("model"), SPEC)


def test_a_full_disk_mid_upload_fails_the_deploy_clearly_and_the_same_network_resumes(
        exported: ExportedModel, small_disk: Path, tmp_path: Path) -> None:
    expected = deploy(LocalCanisters(LocalClient(Network(None))), exported, tmp_path / "alone").head().update(
        "generate", greedy(PROMPT, TOKENS))["ok"]
    total = sum(f.size for f in exported.export.files)
    assert total > 2 * LEFT_FREE  # the shards cannot fit in what is left
    state_dir = small_disk / "state"
    network = start_network_on(state_dir, tmp_path / "network.log")
    owner = generate("owner")
    try:
        filler = small_disk / "filler"
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        with open(filler, "wb") as f:
            f.write(bytes(free - LEFT_FREE))

        timed = Timed(RemoteCanisters(connect(network.url, owner)))
        with pytest.raises(UserError) as failed:
            deploy(timed, exported, tmp_path / "client")
        gave_up_after = time.monotonic() - timed.last_ack[0]
        error = str(failed.value)
        assert gave_up_after < 10, f"the deploy took {gave_up_after:.1f} s to give up: {error}"
        assert f"cannot write its state to {state_dir}" in error and "No space left on device" in error
        assert "free space on the disk" in error
        assert network.process.poll() is None  # the network is up, serving
        fault = described(network)["storage_fault"]
        assert fault is not None and str(state_dir) in fault
        status = subprocess.run([sys.executable, "-m", "client.cli", "status", "--state-dir", str(state_dir)],
                                cwd=REPO, capture_output=True, text=True, timeout=60)
        assert "NOT BEING WRITTEN" in status.stdout and "No space left on device" in status.stdout

        filler.unlink()
        deadline = time.monotonic() + 10
        while described(network)["storage_fault"] is not None:
            assert time.monotonic() < deadline, "the network did not resume within 10 s of space being freed"
            time.sleep(0.2)

        deployed = deploy(RemoteCanisters(connect(network.url, owner)), exported, tmp_path / "client")
        assert network.process.poll() is None  # the same process all along
        files = {f.shard: f for f in exported.export.files}
        uploads = {c.name: c.upload for c in deployed.report.canisters}
        assert any(u.bytes_resumed > 0 for u in uploads.values())  # what was acknowledged was kept ...
        for name, upload in uploads.items():  # ... and exactly the rest was sent
            if upload.outcome != "already loaded":
                assert upload.bytes_resumed + upload.bytes_sent == files[name].size
            status_of = deployed.canister(name).query("upload_status", f"{name}.gguf")
            assert status_of["loaded"] and status_of["sha256"] == files[name].sha256
        client = HeadClient(network.url, deployed.ids["head"].to_text(), owner)
        assert list(client.generate(PROMPT, GenerationOptions(max_tokens=TOKENS)).ids) == expected["ids"]
    finally:
        stop_network(network)
