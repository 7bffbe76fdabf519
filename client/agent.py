"""Talking to an IC HTTP endpoint with icp-py-core: finding the endpoint, connecting with an
identity, and calling canisters typed by their .did files.

Values are icp-py-core's Candid values (records as dicts, `opt` as [] or [x], variants as
one-key dicts, principals as `icp_principal.Principal`), because the agent's own Candid does the
encoding, exactly as for any other client of these canisters.

Certificates are verified when the official blst binding (`import blst`) is importable: that is
the only verifier icp-py-core has. A local network's root key is not the IC's, so it is fetched
from /api/v2/status, as `dfx` and agent-js's fetchRootKey do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import httpx
from icp_agent import Agent, Client
from icp_candid.candid import encode
from icp_candid.did_loader import DIDLoader
from icp_certificate import certificate as icp_certificate
from icp_core.errors import ReplicaReject, TransportError

from client.errors import UserError
from client.identity import Identity
from replica.inprocess import CallFailed

MANAGEMENT_ID = "aaaaa-aa"
MANAGEMENT_DID = Path(__file__).resolve().parents[1] / "replica" / "management.did"
DEFAULT_STATE_DIR = Path(".icllama")
DFX_LOCAL_BIND = "127.0.0.1:4943"
# A synchronous call returns when the update is executed; a long one (a whole generation) falls
# back to polling, which gives up after this long.
POLL_TIMEOUT_S = 3600.0


class TransportFailed(Exception):
    """The HTTP request itself failed: no connection, or an HTTP error status with the gateway's text."""

    def __init__(self, url: str, status: int | None, detail: str):
        where = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"{where} from {url}: {detail}")
        self.url = url
        self.status = status
        self.detail = detail

    @property
    def transient(self) -> bool:
        return self.status is None or self.status >= 500 or self.status == 429


def is_transient(error: Exception) -> bool:
    """Worth retrying: a SYS_TRANSIENT reject (code 2), an HTTP 5xx/429, or a lost connection."""
    if isinstance(error, CallFailed):
        return error.reject_code == 2
    return isinstance(error, TransportFailed) and error.transient


# --- which endpoint -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class NetworkTarget:
    name: str  # "local", or a directory-safe form of the URL (as dfx names ad-hoc networks)
    url: str


def resolve_network(network: str, state_dir: Path = DEFAULT_STATE_DIR, dfx_json: Path = Path("dfx.json")
                    ) -> NetworkTarget:
    """`local`: the network `icllama start` runs from `state_dir`, else dfx.json's networks.local
    bind (127.0.0.1:4943 by default). Anything with a scheme is a URL."""
    if "://" in network:
        url = network.rstrip("/")
        return NetworkTarget("".join(c if c.isalnum() else "_" for c in url), url)
    if network != "local":
        raise UserError(f"unknown network {network!r}: use `local` or a URL such as http://127.0.0.1:4943")
    from replica.gateway_runtime import NetworkStartError, read_running

    try:
        running = read_running(state_dir)
    except NetworkStartError as e:
        raise UserError(str(e)) from None
    if running is not None:
        return NetworkTarget("local", running.url)
    bind = DFX_LOCAL_BIND
    if dfx_json.is_file():
        try:
            bind = json.loads(dfx_json.read_text()).get("networks", {}).get("local", {}).get("bind", bind)
        except ValueError as e:
            raise UserError(f"{dfx_json} is not valid JSON ({e}); fix it or remove it") from None
    return NetworkTarget("local", f"http://{bind}")


# --- connecting ---------------------------------------------------------------------------------------
def blst_available() -> bool:
    try:
        icp_certificate.ensure_blst_available()
    except Exception:  # icp-py-core raises its own error type, or ImportError, when blst is missing
        return False
    return True


@dataclass(frozen=True)
class Connection:
    url: str
    identity: Identity | None  # None: the anonymous principal
    agent: Agent
    root_key: bytes
    verify_certificates: bool


def connect(url: str, identity: Identity | None, verify_certificates: bool | None = None) -> Connection:
    """An icp-py-core Agent for `url` signing as `identity` (None: anonymous).
    `verify_certificates=None` verifies whenever the blst binding is importable."""
    from icp_identity import Identity as AgentIdentity

    signer = identity.icp_py_core() if identity is not None else AgentIdentity(anonymous=True)
    agent = Agent(signer, Client(url))
    try:
        status = cbor2.loads(_http(url, agent.client.status))
        root_key = bytes(status["root_key"])
    except TransportFailed as e:
        raise UserError(f"no IC HTTP interface answers at {url} ({e.detail}); start the local network with "
                        "`icllama start --background`, or pass the right --network") from None
    except (ValueError, KeyError, TypeError, cbor2.CBORDecodeError) as e:
        raise UserError(f"{url}/api/v2/status did not return an IC status with a root_key ({e}); "
                        "is that an IC HTTP endpoint?") from None
    verify = blst_available() if verify_certificates is None else verify_certificates
    if verify:
        if not blst_available():
            raise UserError("verifying certificates needs the official blst Python binding on the path "
                            "(see the README, 'Certificates'); or run without verification")
        # icp-py-core reads the root key from this module attribute only (Agent(root_key=...) is
        # ignored by its verifier); a local network's key has to be trusted there.
        icp_certificate.IC_ROOT_KEY = root_key
    return Connection(url, identity, agent, root_key, verify)


def _http(url: str, send: Any, *args: Any) -> Any:
    """Runs one agent request, turning icp-py-core's transport errors into TransportFailed with
    the gateway's own explanation (its response body) rather than httpx's generic text."""
    try:
        return send(*args)
    except TransportError as e:
        cause = e.original_error
        if isinstance(cause, httpx.HTTPStatusError):
            raise TransportFailed(url, cause.response.status_code, cause.response.text.strip()[:500]) from None
        raise TransportFailed(url, None, str(cause) or type(cause).__name__) from None
    except httpx.HTTPError as e:
        raise TransportFailed(url, None, str(e) or type(e).__name__) from None


# --- canisters ----------------------------------------------------------------------------------------
def load_did(path: Path) -> Mapping[str, Any]:
    """The methods of a .did file as icp-py-core's FuncClass objects (argTypes, retTypes)."""
    try:
        service = DIDLoader().load_did_source(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the Candid interface {path}: {e}") from None
    return service["methods"]


@dataclass(frozen=True)
class RemoteCanister:
    connection: Connection
    canister_id: str
    methods: Mapping[str, Any]

    @classmethod
    def from_did(cls, connection: Connection, canister_id: str, did: Path) -> RemoteCanister:
        return cls(connection, canister_id, load_did(did))

    def update(self, method: str, *args: Any, effective_canister_id: str | None = None) -> Any:
        func, arg = self._encode(method, args)
        agent = self.connection.agent
        try:
            reply = _http(self.connection.url, lambda: agent.update_raw(
                self.canister_id, method, arg, return_type=func.retTypes,
                effective_canister_id=effective_canister_id, verify_certificate=self.connection.verify_certificates,
                timeout=POLL_TIMEOUT_S))
        except ReplicaReject as e:
            raise CallFailed(int(e.reject_code), e.reject_message, e.error_code) from None
        return _unwrap(reply)

    def query(self, method: str, *args: Any) -> Any:
        func, arg = self._encode(method, args)
        agent = self.connection.agent
        try:
            reply = _http(self.connection.url, lambda: agent.query_raw(
                self.canister_id, method, arg, return_type=func.retTypes))
        except ReplicaReject as e:
            raise CallFailed(int(e.reject_code), e.reject_message, e.error_code) from None
        return _unwrap(reply)

    def _encode(self, method: str, args: tuple[Any, ...]) -> tuple[Any, bytes]:
        func = self.methods.get(method)
        if func is None:
            raise UserError(f"canister {self.canister_id} has no method {method!r} in its .did")
        if len(args) != len(func.argTypes):
            raise TypeError(f"{method} takes {len(func.argTypes)} arguments, got {len(args)}")
        return func, encode([{"type": t, "value": v} for t, v in zip(func.argTypes, args, strict=True)])


def _unwrap(reply: Any) -> Any:
    values = [item["value"] for item in reply]
    return None if not values else values[0] if len(values) == 1 else tuple(values)


def management(connection: Connection) -> RemoteCanister:
    return RemoteCanister.from_did(connection, MANAGEMENT_ID, MANAGEMENT_DID)
