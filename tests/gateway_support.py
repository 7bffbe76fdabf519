"""Starting `icllama start` as a real subprocess for the gateway's integration tests, and
deploying the test counter the way a user does: through the management canister over HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from icp_agent import Agent, Client
from icp_candid.candid import Types, encode
from icp_identity import Identity
from icp_principal import Principal

from replica.certification import NetworkKeys
from replica.gateway_endpoints import Endpoints
from replica.gateway_state import CertifiedStateSource, IngressLedger, canister_ranges
from replica.loader import ModuleRef
from replica.network import Network

REPO = Path(__file__).resolve().parents[1]
COUNTER_CLASS = "tests.canisters_for_tests.counter:Counter"
COUNTER_DID = (REPO / "tests" / "canisters_for_tests" / "counter.did").read_text()
START_TIMEOUT_S = 120


def in_process_endpoints(network: Network, key_dir: Path) -> Endpoints:
    """The gateway's endpoint logic on an in-process network, without HTTP; keys in `key_dir`."""
    config = network.config
    keys = NetworkKeys.load_or_create(key_dir)
    ledger = IngressLedger()
    ranges = canister_ranges(config.first_canister_index, config.canister_range_size)
    return Endpoints(network, keys, CertifiedStateSource(network, keys, ledger, ranges), ledger,
                     config.limits.ingress_message_bytes)


@dataclass
class NetworkProcess:
    process: subprocess.Popen
    url: str
    state_dir: Path

    def log(self) -> str:
        return (self.state_dir / "test-network.log").read_text(errors="replace")


def start_network(state_dir: Path, *extra: str) -> NetworkProcess:
    """`icllama start --port 0` (a free port) in the foreground of a child process."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log = open(state_dir / "test-network.log", "wb")  # noqa: SIM115 (the child keeps writing it)
    process = subprocess.Popen(
        [sys.executable, "-m", "client.cli", "start", "--port", "0", "--state-dir", str(state_dir), *extra],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + START_TIMEOUT_S
    record = state_dir / "network.json"
    while time.monotonic() < deadline:
        # A network killed with SIGKILL leaves its record behind: wait for this process's own.
        running = json.loads(record.read_text()) if record.is_file() else None
        if running is not None and running["pid"] == process.pid:
            return NetworkProcess(process, running["url"], state_dir)
        if process.poll() is not None:
            raise RuntimeError(f"the network exited with {process.returncode}:\n"
                               f"{(state_dir / 'test-network.log').read_text()}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"the network did not start within {START_TIMEOUT_S} s")


def stop_network(network: NetworkProcess) -> None:
    network.process.send_signal(signal.SIGTERM)
    network.process.wait(timeout=60)


PROVISIONAL_CREATE_ARG = Types.Record({"amount": Types.Opt(Types.Nat)})
INSTALL_CODE_ARG = Types.Record({
    "mode": Types.Variant({"install": Types.Null, "reinstall": Types.Null, "upgrade": Types.Null}),
    "canister_id": Types.Principal,
    "wasm_module": Types.Vec(Types.Nat8),
    "arg": Types.Vec(Types.Nat8),
})
CANISTER_ID_ARG = Types.Record({"canister_id": Types.Principal})


def create_canister(agent: Agent, verify_certificate: bool = False) -> str:
    """provisional_create_canister_with_cycles through the management canister; returns the id."""
    reply = agent.update(
        "aaaaa-aa", "provisional_create_canister_with_cycles",
        [{"type": PROVISIONAL_CREATE_ARG, "value": {"amount": []}}],
        return_type=[CANISTER_ID_ARG], verify_certificate=verify_certificate,
    )
    return reply[0]["value"]["canister_id"].to_str()


def install_counter(agent: Agent, start: int = 0, verify_certificate: bool = False) -> str:
    """Creates a canister and installs the test counter on it, as its controller `agent`."""
    canister_id = create_canister(agent, verify_certificate)
    agent.update(
        "aaaaa-aa", "install_code",
        [{"type": INSTALL_CODE_ARG, "value": {
            "mode": {"install": None},
            "canister_id": Principal.from_str(canister_id),
            "wasm_module": list(ModuleRef(COUNTER_CLASS, "1").to_wasm_module()),
            "arg": list(encode([{"type": Types.Nat, "value": start}])),
        }}],
        effective_canister_id=canister_id, verify_certificate=verify_certificate,
    )
    return canister_id


def agent_for(url: str, identity: Identity | None = None, **options) -> Agent:
    return Agent(identity or Identity(anonymous=True), Client(url), **options)
