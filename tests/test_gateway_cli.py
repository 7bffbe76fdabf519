"""`icllama start --background`, `status` and `stop` as a user runs them, and the clear errors of
a second start on a busy state directory or a busy port."""

from __future__ import annotations

import json
import subprocess
import sys

import cbor2
import httpx
import pytest

from tests.gateway_support import REPO

pytestmark = pytest.mark.network


def icllama(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "client.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def is_running(pid: int) -> bool:
    """Alive and not a zombie (an exited child whose parent has not collected it yet)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_background_start_status_stop(tmp_path):
    state = tmp_path / "state"
    started = icllama("start", "--background", "--port", "0", "--state-dir", str(state))
    assert started.returncode == 0, started.stderr
    record = json.loads((state / "network.json").read_text())
    assert record["url"] in started.stdout and str(record["pid"]) in started.stdout
    try:
        root_key = cbor2.loads(httpx.get(f"{record['url']}/api/v2/status").content)["root_key"]

        again = icllama("start", "--background", "--port", "0", "--state-dir", str(state))
        assert again.returncode == 2
        assert "already running" in again.stderr and str(record["pid"]) in again.stderr

        busy_port = icllama("start", "--port", str(record["port"]), "--state-dir", str(tmp_path / "other"))
        assert busy_port.returncode == 2
        assert f"port {record['port']}" in busy_port.stderr and "in use" in busy_port.stderr

        status = icllama("status", "--state-dir", str(state))
        assert status.returncode == 0, status.stderr
        assert record["url"] in status.stdout and "round:" in status.stdout and "canisters (2)" in status.stdout
        # a new network hosts only the system canisters icp-cli asks for, at their mainnet ids
        assert "rkp4c-7iaaa-aaaaa-aaaca-cai" in status.stdout and "um5iw-rqaaa-aaaaq-qaaba-cai" in status.stdout
    finally:
        stopped = icllama("stop", "--state-dir", str(state))
    assert stopped.returncode == 0, stopped.stderr
    assert str(record["pid"]) in stopped.stdout
    assert not (state / "network.json").exists()
    assert not is_running(record["pid"])

    after = icllama("stop", "--state-dir", str(state))
    assert after.returncode == 2 and "no network is running" in after.stderr
    assert icllama("status", "--state-dir", str(state)).returncode == 1

    # A restart from the same state directory keeps the network's identity (its root key).
    assert icllama("start", "--background", "--port", "0", "--state-dir", str(state)).returncode == 0
    try:
        url = json.loads((state / "network.json").read_text())["url"]
        assert cbor2.loads(httpx.get(f"{url}/api/v2/status").content)["root_key"] == root_key
    finally:
        assert icllama("stop", "--state-dir", str(state)).returncode == 0


def test_background_clean_start_on_an_existing_state_dir(tmp_path):
    state = tmp_path / "state"
    assert icllama("start", "--background", "--port", "0", "--state-dir", str(state)).returncode == 0
    try:
        first = json.loads((state / "network.json").read_text())
        root_key = cbor2.loads(httpx.get(f"{first['url']}/api/v2/status").content)["root_key"]
        busy = icllama("start", "--background", "--clean", "--port", "0", "--state-dir", str(state))
        assert busy.returncode == 2 and "already running" in busy.stderr
        assert (state / "network.json").exists()  # a refused --clean deletes nothing
    finally:
        assert icllama("stop", "--state-dir", str(state)).returncode == 0
    (state / "leftover").write_text("from the earlier network")

    started = icllama("start", "--background", "--clean", "--port", "0", "--state-dir", str(state))
    assert started.returncode == 0, started.stderr
    try:
        record = json.loads((state / "network.json").read_text())
        assert record["url"] in started.stdout
        assert not (state / "leftover").exists()
        assert not list(state.glob("network.log.starting-*"))
        assert (state / "network.log").exists()
        # --clean made a new network: a new identity
        assert cbor2.loads(httpx.get(f"{record['url']}/api/v2/status").content)["root_key"] != root_key
    finally:
        assert icllama("stop", "--state-dir", str(state)).returncode == 0


def test_bad_arguments_are_clear(tmp_path):
    result = icllama("start", "--port", "70000", "--state-dir", str(tmp_path))
    assert result.returncode == 2 and "--port must be between 0 and 65535" in result.stderr
    result = icllama("start", "--round-seconds", "0", "--state-dir", str(tmp_path))
    assert result.returncode == 2 and "--round-seconds must be positive" in result.stderr
