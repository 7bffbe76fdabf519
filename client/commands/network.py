"""`icllama start|stop|status`: the local network and its IC HTTP interface gateway."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from client.engine_choice import DEFAULT_ENGINE, add_engine_argument, record_engine_once_serving
from client.errors import UserError
from client.local_network import DEFAULT_STATE_DIR, LocalNetwork, find_local_network, is_icllama_process, running_from

LOG_FILE = "network.log"
# How long `start --background` waits for the network to serve, and `stop` for it to exit.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0


_WHICH_STATE_DIR = (f"the network's state directory (default: {DEFAULT_STATE_DIR}, or else the state directory of "
                    "the icllama network serving dfx.json's local address, 127.0.0.1:4943)")


def register(subparsers: argparse._SubParsersAction) -> None:
    start = subparsers.add_parser("start", help="start the local network and serve the IC HTTP interface")
    start.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    start.add_argument("--port", type=int, default=4943, help="port to listen on; 0 picks a free one (default 4943)")
    start.add_argument("--background", action="store_true", help="run detached; stop it with `icllama stop`")
    start.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                       help=f"the network's state directory (default {DEFAULT_STATE_DIR})")
    start.add_argument("--clean", action="store_true", help="delete the state directory's contents first")
    start.add_argument("--realtime", action="store_true",
                       help="pace rounds to the wall clock instead of running them as fast as possible")
    start.add_argument("--round-seconds", type=float, default=1.0,
                       help="virtual (and, with --realtime, wall) duration of one round (default 1.0)")
    add_engine_argument(start, default_text=f"{DEFAULT_ENGINE}; `icllama deploy` to this network installs it")
    start.set_defaults(func=_start)

    stop = subparsers.add_parser("stop", help="stop the network started from a state directory")
    stop.add_argument("--state-dir", type=Path, help=_WHICH_STATE_DIR)
    stop.set_defaults(func=_stop)

    status = subparsers.add_parser("status", help="show the running network: URL, canisters, current round")
    status.add_argument("--state-dir", type=Path, help=_WHICH_STATE_DIR)
    status.set_defaults(func=_status)


def _start(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {args.port}")
    if args.round_seconds <= 0:
        raise UserError(f"--round-seconds must be positive, got {args.round_seconds}")
    if args.background:
        return _start_background(args)
    # Imported here: the network pulls in numpy and the canister runtime, which stop and
    # status do not need.
    from replica.gateway_runtime import NetworkStartError, run_network
    from replica.network import NetworkConfig

    config = NetworkConfig(round_duration_ns=round(args.round_seconds * 1e9))
    record_engine_once_serving(args.state_dir.resolve(), args.engine)
    try:
        run_network(args.state_dir, args.host, args.port, config, args.realtime, args.clean)
    except NetworkStartError as error:
        raise UserError(str(error)) from None
    return 0


def _start_background(args: argparse.Namespace) -> int:
    state_dir = args.state_dir.resolve()
    running = running_from(state_dir)
    if running is not None:  # checked here, so a running network's log is never touched
        raise UserError(f"a network is already running from {state_dir} at {running.url} (pid {running.pid}); "
                        f"stop it with `icllama stop --state-dir {args.state_dir}` or use another --state-dir")
    state_dir.mkdir(parents=True, exist_ok=True)
    if args.clean:  # here, not in the child: the child's clean would delete its own starting log
        from replica.gateway_runtime import NetworkStartError, clean_state_dir

        try:
            clean_state_dir(state_dir)
        except NetworkStartError as error:
            raise UserError(str(error)) from None
    command = [sys.executable, "-m", "client.cli", "start", "--host", args.host, "--port", str(args.port),
               "--state-dir", str(state_dir), "--round-seconds", str(args.round_seconds), "--engine", args.engine]
    command += ["--realtime"] * args.realtime
    # The child writes a log of its own, which becomes network.log once it serves: a start that
    # fails never mixes into (or appends to) the log of an earlier or concurrent network.
    starting_log = state_dir / f"{LOG_FILE}.starting-{os.getpid()}"
    with open(starting_log, "wb") as log:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True, cwd=os.getcwd())
    log_path = state_dir / LOG_FILE
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise UserError(f"the network did not start: {_failure_cause(starting_log, child.returncode)}")
        running = running_from(state_dir)
        if running is not None and running.pid == child.pid:
            starting_log.replace(log_path)  # the child keeps writing to the same file
            print(f"icllama network running in the background at {running.url} (pid {running.pid}, state dir "
                  f"{state_dir}, log {log_path}); stop it with `icllama stop --state-dir {args.state_dir}`")
            return 0
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGTERM)
    raise UserError(f"the network did not start within {START_TIMEOUT_S:.0f} s; its output is in {starting_log}")


def _failure_cause(log_path: Path, exit_code: int) -> str:
    """The child's own one-line error (`icllama: error: ...`); otherwise where its output is kept."""
    lines = log_path.read_text(errors="replace").splitlines()
    errors = [line.removeprefix("icllama: error: ") for line in lines if line.startswith("icllama: error: ")]
    if errors:
        log_path.unlink()
        return errors[-1]
    return f"it exited with code {exit_code}; its output is in {log_path}"


def _network(args: argparse.Namespace) -> tuple[LocalNetwork, int]:
    """The network that `stop` and `status` mean, and its pid; refused when none runs."""
    network = find_local_network(args.state_dir)
    if network.pid is None:
        elsewhere = "" if args.state_dir else f", and no icllama network serves {network.url}"
        raise UserError(f"no network is running from {network.state_dir}{elsewhere}; start one with `icllama start`")
    return network, network.pid


def _stop(args: argparse.Namespace) -> int:
    from replica.gateway_runtime import PROCESS_FILE, read_running

    state_dir = (args.state_dir or DEFAULT_STATE_DIR).resolve()
    recorded = read_running(state_dir)
    if recorded is not None and not is_icllama_process(recorded.pid):
        (state_dir / PROCESS_FILE).unlink(missing_ok=True)
        print(f"the network of {state_dir} (pid {recorded.pid}) had already exited; removed its stale {PROCESS_FILE}")
        return 0
    network, pid = _network(args)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not is_icllama_process(pid):
            print(f"stopped the network at {network.describe()} (pid {pid})")
            return 0
        time.sleep(0.1)
    raise UserError(f"the network (pid {pid}) did not stop within {STOP_TIMEOUT_S:.0f} s; "
                    f"see {network.state_dir / LOG_FILE}, or end it with `kill -9 {pid}`")


def _status(args: argparse.Namespace) -> int:
    try:
        network, pid = _network(args)
    except UserError as error:
        print(error)
        return 1
    try:
        with urllib.request.urlopen(f"{network.url}/_/icllama/status", timeout=10) as response:
            described = json.load(response)
    except (urllib.error.URLError, OSError) as error:
        raise UserError(f"the network (pid {pid}) does not answer at {network.url}: {error}") from None
    print(f"url:       {described['url']}")
    print(f"state dir: {network.state_dir}")
    print(f"pid:       {pid}")
    print(f"round:     {described['round']}")
    if described.get("storage_fault"):
        print(f"state:     NOT BEING WRITTEN, rounds paused: {described['storage_fault']}")
    print(f"canisters ({len(described['canisters'])}):")
    for canister in described["canisters"]:
        if canister["class"]:
            code = f"{canister['class']} {canister['version']}"
        elif canister["module_hash"]:
            code = f"wasm module {canister['module_hash'][:16]}"
        else:
            code = "no code installed"
        print(f"  {canister['id']}  {canister['status']:8}  {canister['cycles']:>20,} cycles  {code}")
    return 0
