"""icp-cli 1.5.0 (the npm binary, unchanged) against `icllama start` running as a subprocess.

It reaches the network by URL with the root key from /api/v2/status (so it never starts a
network of its own), from a home directory of its own (identities, settings) and with telemetry
off (it reaches nothing on the internet). Its default identity is anonymous, which the network's
cycles ledger funds as icp-cli's own local network does.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path

import cbor2
import pytest

from replica.loader import ModuleRef
from tests.gateway_support import start_network, stop_network
from tests.toolchains import compile_motoko, icp_cli

pytestmark = pytest.mark.network

CREATION_FEE = 500_000_000_000  # an application subnet's canister creation fee (13 nodes)
DEFAULT_CREATE_CYCLES = 2_000_000_000_000  # icp canister create --cycles default
ANONYMOUS_CYCLES = 1_000 * 10**12  # what the network's cycles ledger gives anonymous
LEDGER_FEE = 100_000_000


class Icp:
    def __init__(self, binary: Path, home: Path, url: str, root_key: str):
        self.binary, self.home, self.url, self.root_key = binary, home, url, root_key

    def run(self, *args: str, identity: str | None = None, check: bool = True, on_network: bool = True,
            project: Path | None = None) -> subprocess.CompletedProcess:
        """`icp args`, on this network by URL (unless `on_network` is False), or in `project`,
        whose icp.yaml names the network."""
        env = {**os.environ, "HOME": str(self.home), "DO_NOT_TRACK": "1", "NO_COLOR": "1"}
        by_url = on_network and project is None
        command = [str(self.binary), *args] + (["-n", self.url, "-k", self.root_key] if by_url else [])
        if identity is not None:
            command += ["--identity", identity]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180,
                                cwd=project or self.home)
        if check and result.returncode != 0:
            raise AssertionError(f"icp {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return result

    def status(self, canister: str) -> dict:
        return json.loads(self.run("canister", "status", canister, "--json").stdout)


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    running = start_network(tmp_path_factory.mktemp("icp-cli-network"))
    yield running
    stop_network(running)


@pytest.fixture(scope="module")
def icp(network, tmp_path_factory) -> Icp:
    binary = icp_cli()
    with urllib.request.urlopen(f"{network.url}/api/v2/status", timeout=10) as response:
        root_key = cbor2.loads(response.read())["root_key"].hex()
    return Icp(binary, tmp_path_factory.mktemp("icp-cli-home"), network.url, root_key)


@pytest.fixture(scope="module")
def logger_wasm() -> bytes:
    return compile_motoko(["logger"])["logger"]


@pytest.fixture(scope="module")
def canister(icp) -> str:
    created = icp.run("canister", "create", "--detached")
    match = re.search(r"Created canister with ID (\S+)", created.stdout + created.stderr)
    assert match, created.stdout + created.stderr
    return match.group(1)


def test_create_draws_cycles_from_the_cycles_ledger(icp, canister):
    status = icp.status(canister)
    assert status["status"] == "Running" and status["module_hash"] is None
    assert status["settings"]["controllers"] == ["2vxsx-fae"]  # the anonymous identity that created it
    assert int(status["cycles"].replace("_", "")) == DEFAULT_CREATE_CYCLES - CREATION_FEE
    balance = icp.run("cycles", "balance").stdout
    assert f"{ANONYMOUS_CYCLES - DEFAULT_CREATE_CYCLES - LEDGER_FEE:_} cycles" in balance


def test_top_up_sends_cycles_from_the_ledger(icp, canister):
    before = int(icp.status(canister)["cycles"].replace("_", ""))
    ledger_before = icp.run("cycles", "balance").stdout
    icp.run("canister", "top-up", "--amount", "3t", canister)
    after = int(icp.status(canister)["cycles"].replace("_", ""))
    assert 0 <= before + 3 * 10**12 - after < 10**9  # less at most what storage cost meanwhile
    spent = _cycles(ledger_before) - _cycles(icp.run("cycles", "balance").stdout)
    assert spent == 3 * 10**12 + LEDGER_FEE
    refused = icp.run("canister", "top-up", "--amount", "2000t", canister, check=False)
    assert refused.returncode != 0 and "Insufficient" in refused.stderr


def _cycles(balance_output: str) -> int:
    return int(re.search(r"Balance: ([\d_]+) cycles", balance_output).group(1).replace("_", ""))


def test_status_and_settings_show_every_setting(icp, canister):
    shown = icp.run("canister", "settings", "show", canister).stdout
    for line in ["Compute allocation: 0", "Memory allocation: 0", "Freezing threshold: 2_592_000",
                 "Reserved cycles limit: 5_000_000_000_000", "Log memory limit: 4_096",
                 "Log visibility: Controllers", "Snapshot visibility: Controllers",
                 "Status visibility: Controllers", "Wasm memory threshold: 0"]:
        assert line in shown, shown


def test_install_call_without_candid_and_logs(icp, canister, logger_wasm, tmp_path):
    wasm = tmp_path / "logger.wasm"
    wasm.write_bytes(logger_wasm)
    icp.run("canister", "install", canister, "--wasm", str(wasm))
    assert icp.status(canister)["module_hash"] == "0x" + hashlib.sha256(logger_wasm).hexdigest()
    # No --candid: icp-cli types the call from the canister's public candid:service metadata.
    assert icp.run("canister", "call", canister, "greet", '("world")').stdout.strip() == '("Hello, world!")'
    stats = icp.run("canister", "call", canister, "stats", "()").stdout
    assert stats.strip() == '(record { greeted = 1 : nat; last_word = "bye" })'  # field names, not hashes
    # ic0.canister_version: 1 for the install, 1 for the update that greeted (not the query)
    assert icp.run("canister", "call", canister, "version", "()").stdout.strip() == "(2 : nat64)"
    failed = icp.run("canister", "call", canister, "fail", '("boom")', check=False)
    assert failed.returncode != 0 and "trapped explicitly: boom" in failed.stderr
    logs = icp.run("canister", "logs", canister).stdout.splitlines()
    assert [line.split("]: ", 1)[1] for line in logs] == ["installed", "greeting world", "about to fail", "boom"]
    assert [int(line[1:].split(".")[0]) for line in logs] == [0, 1, 2, 3]  # idx


def test_only_controllers_read_status_and_logs(icp, canister):
    icp.run("identity", "new", "stranger", "--storage", "plaintext", on_network=False)
    refused = icp.run("canister", "logs", canister, identity="stranger", check=False)
    assert refused.returncode != 0 and "not allowed to query ic00 method fetch_canister_logs" in refused.stderr
    public = icp.run("canister", "status", canister, identity="stranger").stdout
    # icp-cli falls back to the public state tree: controllers and module hash, no settings.
    assert "controller: 2vxsx-fae" in public and "Freezing threshold" not in public


def test_settings_update_then_a_stranger_reads_public_logs(icp, canister):
    icp.run("canister", "settings", "update", canister, "--log-visibility", "public", "--compute-allocation", "10",
            "--add-environment-variable", "MODE=test", "--log-memory-limit", "8192")
    shown = icp.run("canister", "settings", "show", canister).stdout
    for line in ["Compute allocation: 10", "Log visibility: Public", "Log memory limit: 8_192", "MODE"]:
        assert line in shown, shown
    logs = icp.run("canister", "logs", canister, identity="stranger").stdout
    assert "greeting world" in logs


def test_stop_and_start(icp, canister):
    icp.run("canister", "stop", canister)
    assert icp.status(canister)["status"] == "Stopped"
    refused = icp.run("canister", "call", canister, "greet", '("again")', check=False)
    assert refused.returncode != 0 and "stopped" in refused.stderr.lower()
    icp.run("canister", "start", canister)
    assert icp.status(canister)["status"] == "Running"
    assert icp.run("canister", "call", canister, "greet", '("again")').stdout.strip() == '("Hello, again!")'


def test_deploy_a_project_then_redeploy_as_an_upgrade(icp, logger_wasm):
    # A project names this network as its `local` one (a connected network: icp-cli starts none).
    project = icp.home / "project"
    project.mkdir()
    (project / "logger.wasm").write_bytes(logger_wasm)
    (project / "icp.yaml").write_text(
        f"networks:\n  - name: local\n    mode: connected\n    url: {icp.url}\n    root-key: {icp.root_key}\n"
        "canisters:\n  - name: logger\n    build:\n      steps:\n        - type: pre-built\n"
        "          path: logger.wasm\n")

    def in_project(*args: str) -> str:
        result = icp.run(*args, project=project)
        return result.stdout + result.stderr

    assert re.search(r"Created canister logger with ID \S+", in_project("deploy"))
    assert in_project("canister", "call", "logger", "greet", '("project")').strip() == '("Hello, project!")'
    in_project("deploy")  # the module is installed already: an upgrade that keeps the Motoko heap
    assert "greeted = 1 : nat" in in_project("canister", "call", "logger", "stats", "()")


def test_a_python_canister_class_is_called_by_its_published_interface(icp, tmp_path):
    module = tmp_path / "counter.wasm"  # the Python class's install descriptor, in the place of a module
    module.write_bytes(ModuleRef("tests.canisters_for_tests.counter:Counter", "1").to_wasm_module())
    created = icp.run("canister", "create", "--detached", "-q").stdout.strip()
    icp.run("canister", "install", created, "--wasm", str(module), "--args", "(5 : nat)")
    # Typed from the class's .did, published as its public candid:service metadata.
    assert icp.run("canister", "call", created, "inc", "()").stdout.strip() == "(6 : nat)"
    assert icp.run("canister", "call", created, "echo", '(blob "abc")').stdout.strip() == '(blob "abc")'


def test_delete(icp):
    created = icp.run("canister", "create", "--detached", "-q").stdout.strip()
    held = int(icp.status(created)["cycles"].replace("_", ""))
    ledger_before = _cycles(icp.run("cycles", "balance").stdout)
    # icp-cli stops the canister, installs its shim there, which deposits the canister's cycles
    # (less ic0.cost_call's reservation for that call) into the caller's cycles ledger account,
    # then deletes it.
    deleted = icp.run("canister", "delete", created)
    recovered = _cycles(icp.run("cycles", "balance").stdout) - ledger_before
    assert f"Recovered {recovered} cycles from canister {created} to 2vxsx-fae" in deleted.stdout + deleted.stderr
    assert 0 < held - recovered < 10**11  # the shim's install and its call's fees
    # A message from a user carries no cycles: a deposit needs at least the ledger's fee attached.
    empty = icp.run("canister", "call", "um5iw-rqaaa-aaaaq-qaaba-cai", "deposit",
                    '(record { to = record { owner = principal "2vxsx-fae" } })', check=False)
    assert empty.returncode != 0 and "a deposit needs at least 100,000,000 cycles attached" in empty.stderr
    gone = icp.run("canister", "status", created, check=False)
    assert gone.returncode != 0 and f"Canister {created} was not found" in gone.stderr
