"""Which local network a command means: the one `status`, `stop`, `deploy` and `generate` agree on.

Without --state-dir that is the network running from ./.icllama; when none runs there, it is the
icllama network serving dfx.json's `networks.local.bind` (127.0.0.1:4943), with the state
directory it reports, so a deployment's canister ids are found from any directory. With
--state-dir it is only the network of that directory. Every command prints the URL and the state
directory it uses.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from client.errors import UserError

DEFAULT_STATE_DIR = Path(".icllama")
DFX_LOCAL_BIND = "127.0.0.1:4943"
STATUS_PATH = "/_/icllama/status"  # icllama's own endpoint (replica.gateway)


@dataclass(frozen=True)
class LocalNetwork:
    url: str
    state_dir: Path  # where its canister ids are kept (for an icllama network, its own state directory)
    pid: int | None  # the icllama process serving it, when one is found

    def describe(self) -> str:
        return f"{self.url} (state dir {self.state_dir})"


def is_icllama_process(pid: int) -> bool:
    """Whether `pid` is still an `icllama start` process, not a stranger that reused the pid."""
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # alive but not ours to inspect: trust the pid file
    return b"start" in command_line and any(b"icllama" in part or b"client.cli" in part for part in command_line)


def running_from(state_dir: Path) -> LocalNetwork | None:
    """The network running from `state_dir`, if its process is alive."""
    from replica.gateway_runtime import NetworkStartError, read_running

    try:
        running = read_running(state_dir)
    except NetworkStartError as e:
        raise UserError(str(e)) from None
    if running is None or not is_icllama_process(running.pid):
        return None
    return LocalNetwork(running.url, Path(running.state_dir), running.pid)


def local_url(dfx_json: Path = Path("dfx.json")) -> str:
    """dfx.json's networks.local bind as a URL (dfx's 127.0.0.1:4943 without one)."""
    bind = DFX_LOCAL_BIND
    if dfx_json.is_file():
        try:
            bind = json.loads(dfx_json.read_text()).get("networks", {}).get("local", {}).get("bind", bind)
        except (ValueError, AttributeError) as e:
            raise UserError(f"{dfx_json} is not a valid dfx.json ({e}); fix it or remove it") from None
    return f"http://{bind}"


def find_local_network(state_dir: Path | None = None, dfx_json: Path = Path("dfx.json")) -> LocalNetwork:
    """The network running from `state_dir` (default .icllama); without an explicit `state_dir`,
    else the icllama network serving the local URL, with its own state directory; else the local
    URL with the state directory (whatever serves it, if anything)."""
    explicit = state_dir is not None
    state_dir = (state_dir or DEFAULT_STATE_DIR).resolve()
    running = running_from(state_dir)
    if running is not None:
        return running
    url = local_url(dfx_json)
    served = None if explicit else _ask_state_dir(url)
    if served is not None:
        elsewhere = running_from(served)
        if elsewhere is not None:
            return elsewhere
    return LocalNetwork(url, state_dir, None)


def _ask_state_dir(url: str) -> Path | None:
    try:
        with urllib.request.urlopen(url + STATUS_PATH, timeout=5) as response:
            state_dir = json.load(response).get("state_dir")
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return None  # nothing serves there, or not an icllama network
    return Path(state_dir) if isinstance(state_dir, str) else None
