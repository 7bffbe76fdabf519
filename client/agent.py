"""How client code calls canisters: over the IC HTTP interface with icp-py-core, or in-process
through replica.inprocess.LocalClient, behind one interface (`Canisters.canister(id, did)`), so
deploying and uploading are written once for both.

Values are the project's Candid values (cdk.candid: `opt` as None or the value, principals as
cdk.principal.Principal, records as dicts, variants as one-key dicts), whichever the transport.
Over HTTP the arguments are encoded with cdk.candid from the .did file, so the bytes are exactly
those the in-process path sends; the agent signs and sends them, waits for the certified reply
and decodes it with its own Candid codec and its own parse of the same .did; `_from_agent` then
maps icp-py-core's value forms (`opt` as [] or [x], its Principal class) onto ours.

Certificates are verified when the official blst binding (`import blst`) is importable: it is
the only verifier icp-py-core has. A local network's root key is not the IC's, so it is fetched
from /api/v2/status, as `dfx` and agent-js's fetchRootKey do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cbor2
import httpx
from icp_agent import Agent, Client
from icp_agent.client import DEFAULT_TIMEOUT
from icp_candid.did_loader import DIDLoader
from icp_certificate import certificate as icp_certificate
from icp_core.errors import ReplicaReject, TransportError

from cdk.candid import CandidError, Interface, Opt, Primitive, Record, Some, T, Type, Variant, Vec, encode, parse_did
from cdk.candid.types import is_nullable, resolve
from cdk.principal import Principal
from client.errors import UserError
from client.identity import Identity
from client.local_network import DEFAULT_STATE_DIR, find_local_network
from replica.inprocess import CallFailed, LocalClient

MANAGEMENT_DID = Path(__file__).resolve().parents[1] / "replica" / "management.did"
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


# --- the one interface ---------------------------------------------------------------------------------
class Canister(Protocol):
    canister_id: Principal

    def update(self, method: str, *args: Any) -> Any:
        """The decoded reply (None for (), the value for one result); raises CallFailed on a reject."""

    def query(self, method: str, *args: Any) -> Any: ...


class Canisters(Protocol):
    """A network as client code sees it: canisters to call, typed by their .did files."""

    sender: Principal  # who the calls come from

    def canister(self, canister_id: Principal, did: Path) -> Canister: ...


# --- in-process ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalCanister:
    client: LocalClient
    canister_id: Principal

    def update(self, method: str, *args: Any) -> Any:
        return self.client.update(self.canister_id, method, *args).value

    def query(self, method: str, *args: Any) -> Any:
        return self.client.query(self.canister_id, method, *args)


@dataclass(frozen=True)
class LocalCanisters:
    """An in-process network. The replica knows each canister's .did, so `did` is not read."""

    client: LocalClient

    @property
    def sender(self) -> Principal:
        return self.client.sender

    def canister(self, canister_id: Principal, did: Path) -> LocalCanister:
        return LocalCanister(self.client, canister_id)


# --- which endpoint ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NetworkTarget:
    name: str  # "local", or a directory-safe form of the URL (as dfx names ad-hoc networks)
    url: str
    state_dir: Path  # keeps <name>/canister_ids.json and <name>/shards/

    def describe(self) -> str:
        return f"{self.name} ({self.url}, state dir {self.state_dir})"


def resolve_network(network: str, state_dir: Path | None = None, dfx_json: Path = Path("dfx.json")
                    ) -> NetworkTarget:
    """`local`: the network `icllama status` shows (client.local_network; None: the default state
    directory, or the local network's own). Anything with a scheme is a URL, whose canister ids are
    kept in `state_dir` (default .icllama)."""
    if "://" in network:
        url = network.rstrip("/")
        return NetworkTarget("".join(c if c.isalnum() else "_" for c in url), url, state_dir or DEFAULT_STATE_DIR)
    if network != "local":
        raise UserError(f"unknown network {network!r}: use `local` or a URL such as http://127.0.0.1:4943")
    local = find_local_network(state_dir, dfx_json)
    return NetworkTarget("local", local.url, local.state_dir)


# --- over HTTP -----------------------------------------------------------------------------------------
def blst_available() -> bool:
    try:
        icp_certificate.ensure_blst_available()
    except Exception:  # icp-py-core raises its own error type, or ImportError, when blst is missing
        return False
    return True


class PooledClient(Client):
    """icp-py-core's HTTP client, with the same endpoints and errors, on one keep-alive connection
    pool. Its own Client sends each request with `httpx.post`, which builds a new httpx client
    and so a new TLS context every time (about 60 ms, even for a plain http:// local network):
    most of the latency of a local call, and most of an upload's time."""

    def __init__(self, url: str):
        super().__init__(url)
        self._http = httpx.Client(timeout=DEFAULT_TIMEOUT)

    def _send(self, method: str, path: str, data: bytes | None, timeout: Any) -> httpx.Response:
        endpoint = f"{self.url}{path}"
        try:
            if method == "GET":
                response = self._http.get(endpoint, timeout=timeout)
            else:
                response = self._http.post(endpoint, content=data, headers={"Content-Type": "application/cbor"},
                                           timeout=timeout)
            response.raise_for_status()
            return response
        except (httpx.HTTPStatusError, httpx.RequestError) as e:
            raise TransportError(endpoint, e) from e

    def query(self, canister_id: str, data: bytes, *, timeout: Any = DEFAULT_TIMEOUT) -> bytes:
        return self._send("POST", f"/api/v3/canister/{canister_id}/query", data, timeout).content

    def call(self, canister_id: str, data: bytes, *, timeout: Any = DEFAULT_TIMEOUT) -> httpx.Response:
        return self._send("POST", f"/api/v4/canister/{canister_id}/call", data, timeout)

    def read_state(self, canister_id: str, data: bytes, *, timeout: Any = DEFAULT_TIMEOUT) -> bytes:
        return self._send("POST", f"/api/v3/canister/{canister_id}/read_state", data, timeout).content

    def read_state_subnet(self, subnet_id: str, data: bytes, *, timeout: Any = DEFAULT_TIMEOUT) -> bytes:
        return self._send("POST", f"/api/v3/subnet/{subnet_id}/read_state", data, timeout).content

    def status(self, *, timeout: Any = DEFAULT_TIMEOUT) -> bytes:
        return self._send("GET", "/api/v2/status", None, timeout).content


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
    agent = Agent(signer, PooledClient(url))
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


@dataclass(frozen=True)
class DidFile:
    """One .did file as both codecs read it."""

    path: Path
    ours: Interface
    agents: dict[str, Any]  # icp-py-core's FuncClass per method (argTypes, retTypes)

    @classmethod
    def read(cls, path: Path) -> DidFile:
        try:
            text = path.read_text()
            return cls(path, parse_did(text), DIDLoader().load_did_source(text)["methods"])
        except (OSError, ValueError, CandidError) as e:
            raise UserError(f"cannot read the Candid interface {path}: {e}") from None


@dataclass(frozen=True)
class RemoteCanister:
    connection: Connection
    canister_id: Principal
    did: DidFile

    def update(self, method: str, *args: Any) -> Any:
        arg, rets = self._encode(method, args)
        agent, target = self.connection.agent, self.canister_id.to_text()
        try:
            reply = _http(self.connection.url, lambda: agent.update_raw(
                target, method, arg, return_type=self.did.agents[method].retTypes,
                effective_canister_id=self._effective(args), verify_certificate=self.connection.verify_certificates,
                timeout=POLL_TIMEOUT_S))
        except ReplicaReject as e:
            raise CallFailed(int(e.reject_code), e.reject_message, e.error_code) from None
        return _values(rets, reply)

    def query(self, method: str, *args: Any) -> Any:
        arg, rets = self._encode(method, args)
        agent, target = self.connection.agent, self.canister_id.to_text()
        try:
            reply = _http(self.connection.url, lambda: agent.query_raw(
                target, method, arg, return_type=self.did.agents[method].retTypes,
                effective_canister_id=self._effective(args)))
        except ReplicaReject as e:
            raise CallFailed(int(e.reject_code), e.reject_message, e.error_code) from None
        return _values(rets, reply)

    def _encode(self, method: str, args: tuple[Any, ...]) -> tuple[bytes, tuple[Type, ...]]:
        signature = self.did.ours.methods.get(method)
        if signature is None:
            raise UserError(f"canister {self.canister_id} has no method {method!r} in {self.did.path}")
        return encode(signature.args, list(args)), signature.rets

    def _effective(self, args: tuple[Any, ...]) -> str:
        """The management canister is addressed through the canister a call is about (spec,
        "Effective canister id"); creating one has none, and goes to aaaaa-aa itself."""
        if self.canister_id.is_management and args and isinstance(args[0], dict) and "canister_id" in args[0]:
            return args[0]["canister_id"].to_text()
        return self.canister_id.to_text()


@dataclass(frozen=True)
class RemoteCanisters:
    connection: Connection

    @property
    def sender(self) -> Principal:
        return Principal(self.connection.agent.identity.sender().bytes)

    def canister(self, canister_id: Principal, did: Path) -> RemoteCanister:
        return RemoteCanister(self.connection, canister_id, DidFile.read(did))


def _values(types: tuple[Type, ...], reply: list[dict[str, Any]]) -> Any:
    values = [_from_agent(t, item["value"]) for t, item in zip(types, reply, strict=True)]
    return None if not values else values[0] if len(values) == 1 else tuple(values)


def _from_agent(t: Type, value: Any) -> Any:
    """icp-py-core's decoded value of type `t` in cdk.candid's form."""
    t = resolve(t)
    if isinstance(t, Opt):
        if not value:
            return None
        inner = _from_agent(t.inner, value[0])
        return Some(inner) if is_nullable(t.inner) else inner
    if isinstance(t, Vec):
        if resolve(t.inner) == T.nat8:
            return bytes(value)
        return [_from_agent(t.inner, item) for item in value]
    if isinstance(t, Record):
        return {f.key: _from_agent(f.type, value[str(f.key)]) for f in t.fields if str(f.key) in value}
    if isinstance(t, Variant):
        ((key, inner),) = value.items()
        case = next(f for f in t.fields if str(f.key) == key)
        return {case.key: _from_agent(case.type, inner)}
    if isinstance(t, Primitive) and t.name == "principal":
        return Principal(value.bytes)
    return value
