"""Which network a command talks to, said and agreed on; and a failed `start --background` that
says why first, prints no log, and leaves the running network's log alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from client.agent import NetworkTarget, resolve_network
from client.commands.deploy import dfx_json_path
from tests.gateway_support import REPO

pytestmark = pytest.mark.network


def icllama(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "client.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


@pytest.fixture
def running(tmp_path: Path):
    """A background network started from tmp_path/project (state dir project/.icllama)."""
    project = tmp_path / "project"
    project.mkdir()
    started = icllama("start", "--background", "--port", "0", cwd=project)
    assert started.returncode == 0, started.stderr
    state = project / ".icllama"
    record = json.loads((state / "network.json").read_text())
    assert f"state dir {state}" in started.stdout
    yield state, record
    icllama("stop", "--state-dir", str(state))


def test_a_failed_background_start_says_why_first_and_prints_no_log(running, tmp_path: Path) -> None:
    state, record = running
    log = (state / "network.log").read_bytes()
    assert b"root key" in log  # the running network's banner, which a failed start must not show

    again = icllama("start", "--background", "--port", "0", "--state-dir", str(state))
    assert again.returncode == 2
    assert again.stderr == (f"icllama: error: a network is already running from {state} at {record['url']} "
                            f"(pid {record['pid']}); stop it with `icllama stop --state-dir {state}` or use another "
                            "--state-dir\n")

    other = tmp_path / "other"
    busy = icllama("start", "--background", "--port", str(record["port"]), "--state-dir", str(other))
    assert busy.returncode == 2
    assert busy.stderr == (f"icllama: error: the network did not start: port {record['port']} on 127.0.0.1 is "
                           "already in use by another program; stop it or choose another port with --port\n")
    assert sorted(p.name for p in other.iterdir()) == ["network.lock"]  # no leftover log of the failed start
    assert (state / "network.log").read_bytes() == log


def test_status_stop_deploy_and_generate_agree_from_another_directory(running, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    state, record = running
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The project's local address, as dfx.json's networks.local.bind (127.0.0.1:4943 without one).
    (elsewhere / "dfx.json").write_text(json.dumps({"networks": {"local": {"bind": f"127.0.0.1:{record['port']}"}}}))

    status = icllama("status", cwd=elsewhere)
    assert status.returncode == 0, status.stderr
    assert f"url:       {record['url']}\nstate dir: {state}\npid:       {record['pid']}\n" in status.stdout

    monkeypatch.chdir(elsewhere)
    target = resolve_network("local")  # what deploy and generate use
    assert (target.url, target.state_dir) == (record["url"], state)
    assert target.describe() == f"local ({record['url']}, state dir {state})"
    # An explicit --state-dir means that directory's network only.
    assert resolve_network("local", elsewhere / ".icllama").state_dir == elsewhere / ".icllama"
    explicit = icllama("status", "--state-dir", str(elsewhere / ".icllama"), cwd=elsewhere)
    assert explicit.returncode == 1 and f"no network is running from {elsewhere / '.icllama'}" in explicit.stdout

    stopped = icllama("stop", cwd=elsewhere)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == f"stopped the network at {record['url']} (state dir {state}) (pid {record['pid']})\n"


def test_deploy_writes_dfx_json_into_a_project_or_beside_the_ids(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    target = NetworkTarget("local", "http://127.0.0.1:4943", tmp_path / ".icllama")
    assert dfx_json_path(None, target) == tmp_path / ".icllama" / "local" / "dfx.json"  # no project here
    (tmp_path / "dfx.json").write_text("{}")
    assert dfx_json_path(None, target) == Path("dfx.json")  # a project's own
    assert dfx_json_path(tmp_path / "other.json", target) == tmp_path / "other.json"


def test_upload_follows_the_local_network_running_elsewhere(running, tmp_path: Path) -> None:
    state, record = running
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "dfx.json").write_text(json.dumps({"networks": {"local": {"bind": f"127.0.0.1:{record['port']}"}},
                                                    "canisters": {}}))
    (elsewhere / "manifest.json").write_text(json.dumps({"format": "icllama-shards/1", "files": [
        {"shard": "head", "file": "head.gguf", "size": 1, "sha256": "00" * 32}]}))

    def upload(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "client.upload", "manifest.json", *args], cwd=elsewhere,
                              capture_output=True, text=True, timeout=180,
                              env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})

    followed = upload()
    assert followed.returncode == 2
    assert f"uploading to local ({record['url']}, state dir {state})\n" in followed.stderr
    assert f"head has no canister in {state / 'local' / 'canister_ids.json'} or no entry in dfx.json" \
        in followed.stderr
    # An explicit --state-dir means that directory's network only, as for status, deploy and generate.
    explicit = upload("--state-dir", str(elsewhere / ".icllama"))
    assert explicit.returncode == 2
    assert f"state dir {elsewhere / '.icllama'})\n" in explicit.stderr
