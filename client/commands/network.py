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

from client.errors import UserError

DEFAULT_STATE_DIR = ".icllama"
LOG_FILE = "network.log"
# How long `start --background` waits for the network to serve, and `stop` for it to exit.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0


def register(subparsers: argparse._SubParsersAction) -> None:
    start = subparsers.add_parser("start", help="start the local network and serve the IC HTTP interface")
    start.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    start.add_argument("--port", type=int, default=4943, help="port to listen on; 0 picks a free one (default 4943)")
    start.add_argument("--background", action="store_true", help="run detached; stop it with `icllama stop`")
    start.add_argument("--state-dir", type=Path, default=Path(DEFAULT_STATE_DIR),
                       help=f"the network's state directory (default {DEFAULT_STATE_DIR})")
    start.add_argument("--clean", action="store_true", help="delete the state directory's contents first")
    start.add_argument("--realtime", action="store_true",
                       help="pace rounds to the wall clock instead of running them as fast as possible")
    start.add_argument("--round-seconds", type=float, default=1.0,
                       help="virtual (and, with --realtime, wall) duration of one round (default 1.0)")
    start.set_defaults(func=_start)

    stop = subparsers.add_parser("stop", help="stop the network started from a state directory")
    stop.add_argument("--state-dir", type=Path, default=Path(DEFAULT_STATE_DIR))
    stop.set_defaults(func=_stop)

    status = subparsers.add_parser("status", help="show the running network: URL, canisters, current round")
    status.add_argument("--state-dir", type=Path, default=Path(DEFAULT_STATE_DIR))
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
    try:
        run_network(args.state_dir, args.host, args.port, config, args.realtime, args.clean)
    except NetworkStartError as error:
        raise UserError(str(error)) from None
    return 0


def _start_background(args: argparse.Namespace) -> int:
    from replica.gateway_runtime import read_running

    state_dir = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "client.cli", "start", "--host", args.host, "--port", str(args.port),
               "--state-dir", str(state_dir), "--round-seconds", str(args.round_seconds)]
    command += ["--realtime"] * args.realtime + ["--clean"] * args.clean
    log_path = state_dir / LOG_FILE
    with open(log_path, "ab") as log:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True, cwd=os.getcwd())
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise UserError(f"the network did not start: {_last_lines(log_path)}")
        running = read_running(state_dir)
        if running is not None and running.pid == child.pid:
            print(f"icllama network running in the background at {running.url} (pid {running.pid}, "
                  f"log {log_path}); stop it with `icllama stop --state-dir {args.state_dir}`")
            return 0
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGTERM)
    raise UserError(f"the network did not start within {START_TIMEOUT_S:.0f} s; see {log_path}")


def _last_lines(path: Path, count: int = 3) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[-count:]) if lines else f"no output (see {path})"


def _is_our_network(pid: int) -> bool:
    """Whether `pid` is still an `icllama start` process, not a stranger that reused the pid."""
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # alive but not ours to inspect: trust the pid file
    return b"start" in command_line and any(b"icllama" in part or b"client.cli" in part for part in command_line)


def _stop(args: argparse.Namespace) -> int:
    from replica.gateway_runtime import PROCESS_FILE, read_running

    state_dir = args.state_dir.resolve()
    running = read_running(state_dir)
    if running is None:
        raise UserError(f"no network is running from {state_dir} (no {PROCESS_FILE} there)")
    if not _is_our_network(running.pid):
        (state_dir / PROCESS_FILE).unlink(missing_ok=True)
        print(f"the network of {state_dir} (pid {running.pid}) had already exited; removed its stale {PROCESS_FILE}")
        return 0
    os.kill(running.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _is_our_network(running.pid):
            print(f"stopped the network at {running.url} (pid {running.pid})")
            return 0
        time.sleep(0.1)
    raise UserError(f"the network (pid {running.pid}) did not stop within {STOP_TIMEOUT_S:.0f} s; "
                    f"see {state_dir / LOG_FILE}, or end it with `kill -9 {running.pid}`")


def _status(args: argparse.Namespace) -> int:
    from replica.gateway_runtime import read_running

    state_dir = args.state_dir.resolve()
    running = read_running(state_dir)
    if running is None or not _is_our_network(running.pid):
        print(f"no network is running from {state_dir}; start one with `icllama start`")
        return 1
    try:
        with urllib.request.urlopen(f"{running.url}/_/icllama/status", timeout=10) as response:
            described = json.load(response)
    except (urllib.error.URLError, OSError) as error:
        raise UserError(f"the network (pid {running.pid}) does not answer at {running.url}: {error}") from None
    print(f"url:     {described['url']}")
    print(f"pid:     {running.pid}")
    print(f"round:   {described['round']}")
    if described.get("storage_fault"):
        print(f"state:   NOT BEING WRITTEN, rounds paused: {described['storage_fault']}")
    print(f"canisters ({len(described['canisters'])}):")
    for canister in described["canisters"]:
        code = f"{canister['class']} {canister['version']}" if canister["class"] else "no code installed"
        print(f"  {canister['id']}  {canister['status']:8}  {canister['cycles']:>20,} cycles  {code}")
    return 0
