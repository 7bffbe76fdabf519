"""Running a network with its gateway as one process, owned through its state directory.

The process holds an exclusive lock on <state_dir>/network.lock for its whole life, so two
networks can never share a state directory, and publishes <state_dir>/network.json (pid, host,
port, url) once it serves, removing it when it stops. `icllama stop` ends exactly the pid
written there; `icllama status` reads the url from it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import sys
import threading
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from replica import system_canisters
from replica.certification import NetworkKeys
from replica.gateway import Gateway
from replica.gateway_endpoints import Endpoints
from replica.gateway_state import CertifiedStateSource, IngressLedger, canister_ranges
from replica.network import Network, NetworkConfig
from replica.state_store import atomic_write

LOCK_FILE = "network.lock"
PROCESS_FILE = "network.json"


class NetworkStartError(Exception):
    """The network cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class RunningNetwork:
    pid: int
    host: str
    port: int
    url: str
    state_dir: str


def read_running(state_dir: Path) -> RunningNetwork | None:
    """The process record of the network serving from `state_dir`, if it wrote one."""
    try:
        return RunningNetwork(**json.loads((state_dir / PROCESS_FILE).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as error:
        raise NetworkStartError(
            f"{state_dir / PROCESS_FILE} is damaged ({error}); if no network runs from {state_dir}, delete it"
        ) from None


def _lock_state_dir(state_dir: Path) -> int:
    state_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        running = read_running(state_dir)
        where = f" (pid {running.pid}, {running.url})" if running else ""
        raise NetworkStartError(
            f"a network is already running from {state_dir}{where}; stop it with "
            f"`icllama stop --state-dir {state_dir}` or use another --state-dir"
        ) from None
    return descriptor


def clean_state_dir(state_dir: Path) -> None:
    """Deletes the state directory's contents, refused while a network runs from it (its lock is held)."""
    lock = _lock_state_dir(state_dir.resolve())
    try:
        _clean(state_dir.resolve())
    finally:
        os.close(lock)


def _clean(state_dir: Path) -> None:
    for entry in state_dir.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _bind(host: str, port: int) -> Gateway:
    try:
        return Gateway(host, port)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise NetworkStartError(
                f"port {port} on {host} is already in use by another program; stop it or choose "
                "another port with --port"
            ) from None
        raise NetworkStartError(f"cannot listen on {host}:{port}: {error.strerror}") from None


def describe(network: Network, url: str) -> dict:
    """What GET /_/icllama/status and `icllama status` show."""
    canisters = []
    for canister_id in network.canister_ids():
        info = network.canister_info(canister_id)
        canisters.append(
            {
                "id": canister_id.to_text(),
                "class": info.class_path,
                "version": info.version,
                "module_hash": info.module_hash.hex() if info.module_hash else None,
                "status": info.status,
                "cycles": info.cycles,
            }
        )
    return {"url": url, "state_dir": str(network.state_dir), "round": network.round_number(),
            "time_ns": network.time_ns(), "storage_fault": network.storage_fault, "canisters": canisters}


def run_network(
    state_dir: Path, host: str, port: int, config: NetworkConfig, realtime: bool, clean: bool
) -> None:
    """Serves until SIGTERM or SIGINT, then stops cleanly. Prints one line once serving."""
    state_dir = state_dir.resolve()
    lock = _lock_state_dir(state_dir)
    try:
        if clean:
            _clean(state_dir)
        gateway = _bind(host, port)
        try:
            _serve(state_dir, gateway, host, config, realtime)
        finally:
            gateway.close()
    finally:
        os.close(lock)


def _serve(state_dir: Path, gateway: Gateway, host: str, config: NetworkConfig, realtime: bool) -> None:
    try:
        keys = NetworkKeys.load_or_create(state_dir)
    except ValueError as error:
        raise NetworkStartError(str(error)) from None
    network = Network(state_dir, config)
    system_canisters.host(network, keys.subnet_id)
    ledger = IngressLedger()
    ranges = canister_ranges(config.first_canister_index, config.canister_range_size,
                             system_canisters.system_canister_ids())
    state = CertifiedStateSource(network, keys, ledger, ranges)
    endpoints = Endpoints(network, keys, state, ledger, config.limits.ingress_message_bytes)

    def report_error(error: Exception) -> None:
        traceback.print_exception(error, file=sys.stderr)

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    network.start(realtime=realtime)
    try:
        gateway.serve(endpoints, lambda: describe(network, gateway.url), report_error)
        record = RunningNetwork(os.getpid(), host, gateway.port, gateway.url, str(state_dir))
        atomic_write(state_dir / PROCESS_FILE, json.dumps(asdict(record)).encode())
        try:
            print(f"icllama network serving the IC HTTP interface at {gateway.url} (state in {state_dir}, "
                  f"root key {keys.network.der.hex()})", flush=True)
            stop.wait()
        finally:
            (state_dir / PROCESS_FILE).unlink(missing_ok=True)
            gateway.stop()
    finally:
        network.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
