"""What each endpoint of the IC HTTP interface does, independent of the HTTP server.

Interface spec, "HTTPS Interface": /api/v2/status; /api/v2/canister/<ecid>/call (asynchronous,
202); /api/v3 and /api/v4/canister/<ecid>/call (synchronous: a certificate, or 202 after a
bounded wait); /api/v2|v3/canister/<ecid>/query (with a node signature); and
/api/v2|v3/canister/<ecid>/read_state and /api/v2|v3/subnet/<subnet>/read_state (a
certificate). Each handler returns an `HttpResponse`; a refused request raises
`EnvelopeRejected` before anything reaches the network.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cbor2

from cdk.candid import CandidError, decode, parse_did
from cdk.principal import Principal
from replica.api_types import CanisterInfo, IngressMessage, IngressRejected, QueryResult, RequestStatus
from replica.auth import EnvelopeRejected, Request, authenticate, decode_envelope
from replica.certification import SELF_DESCRIBE_TAG, NetworkKeys
from replica.errors import RejectError
from replica.gateway_state import TERMINAL_STATUSES, CertifiedStateSource, IngressLedger
from replica.request_id import RESPONSE_DOMAIN_SEPARATOR, hash_of_map

IC_API_VERSION = "0.18.0"
IMPL_VERSION = "icllama-0.1.0"
# How long a synchronous call holds the connection before answering 202 (the replica's own
# timeout for /api/v3 calls is 10 s).
SYNC_CALL_TIMEOUT_S = 10.0
CallVersion = Literal["v2", "v3", "v4"]
MANAGEMENT_DID = Path(__file__).parent / "management.did"


class Network(Protocol):
    """The parts of replica.network.Network the gateway uses."""

    def submit(self, message: IngressMessage) -> None: ...
    def status(self, request_id: bytes) -> RequestStatus | None: ...
    def wait(self, request_id: bytes, timeout_s: float) -> RequestStatus | None: ...
    def query(self, sender: Principal, canister_id: Principal, method: str, arg: bytes,
              certificate: Callable[[], bytes] | None = None) -> QueryResult: ...
    def round_number(self) -> int: ...
    def canister_info(self, canister_id: Principal) -> CanisterInfo: ...


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/cbor"


def cbor_response(value: object) -> HttpResponse:
    return HttpResponse(200, cbor2.dumps(cbor2.CBORTag(SELF_DESCRIBE_TAG, value)))


def text_response(status: int, message: str) -> HttpResponse:
    return HttpResponse(status, message.encode(), "text/plain; charset=utf-8")


def parse_principal(text: str, what: str) -> Principal:
    try:
        return Principal.from_text(text)
    except ValueError as error:
        raise EnvelopeRejected(400, f"{what} '{text}' is not a valid textual principal ({error})") from None


class Endpoints:
    """The IC HTTP interface over one network."""

    def __init__(
        self,
        network: Network,
        keys: NetworkKeys,
        state: CertifiedStateSource,
        ledger: IngressLedger,
        max_ingress_bytes: int,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ):
        self.network = network
        self.keys = keys
        self.state = state
        self.ledger = ledger
        self.max_ingress_bytes = max_ingress_bytes
        self.wall_clock_ns = wall_clock_ns
        # Checking for a duplicate and submitting must be one step, or two copies of the same
        # request arriving together would both execute.
        self._submit_lock = threading.Lock()
        self._management = parse_did(MANAGEMENT_DID.read_text())

    def _authenticate(self, body: bytes, request_type: Literal["call", "query", "read_state"]) -> Request:
        # Expiry is checked against the wall clock: agents compute it from theirs.
        return authenticate(decode_envelope(body), request_type, self.wall_clock_ns())

    # ---- status ----

    def status(self) -> HttpResponse:
        return cbor_response(
            {
                "ic_api_version": IC_API_VERSION,
                "impl_version": IMPL_VERSION,
                "root_key": self.keys.network.der,
                "replica_health_status": "healthy",
                "certified_height": self.network.round_number(),
            }
        )

    # ---- call ----

    def call(self, version: CallVersion, effective_text: str, body: bytes) -> HttpResponse:
        effective = parse_principal(effective_text, "the effective canister id in the URL")
        request = self._authenticate(body, "call")
        self._check_effective_canister(request, effective)
        size = len(request.arg) + len(request.method_name.encode())
        if size > self.max_ingress_bytes:
            raise EnvelopeRejected(
                413,
                f"the ingress message is {size} bytes (argument and method name); the limit is "
                f"{self.max_ingress_bytes} bytes: send the data in smaller calls",
            )
        message = IngressMessage(
            request.request_id, request.sender, request.canister_id, request.method_name, request.arg,
            request.ingress_expiry_ns, effective,
        )
        with self._submit_lock:
            # An identical request (same content, same nonce) is the same request: never run it twice.
            if self.network.status(request.request_id) is None and self.ledger.get(request.request_id) is None:
                try:
                    self.network.submit(message)
                except IngressRejected as rejection:
                    return self._call_rejection(version, rejection)
                self.ledger.add(request.request_id, request.sender, effective)
        if version == "v2":
            return HttpResponse(202)
        final = self.network.wait(request.request_id, SYNC_CALL_TIMEOUT_S)
        if final is None or final.status not in TERMINAL_STATUSES:
            return HttpResponse(202)
        paths = [[b"request_status", request.request_id], [b"time"]]
        return cbor_response({"status": "replied", "certificate": self.state.current().certificate(paths)})

    def _call_rejection(self, version: CallVersion, rejection: IngressRejected) -> HttpResponse:
        # The interface spec answers a call the IC refuses before executing it (unknown canister,
        # frozen canister, management method not callable) with its reject: HTTP 200 and a CBOR
        # body. Only a message too large to take at all is an HTTP-level refusal.
        if rejection.http_status == 413:
            return text_response(413, f"{rejection.error_code}: {rejection.message}")
        body = {
            "reject_code": rejection.reject_code,
            "reject_message": rejection.message,
            "error_code": rejection.error_code,
        }
        if version != "v2":
            body = {"status": "non_replicated_rejection", **body}
        return cbor_response(body)

    def _check_effective_canister(self, request: Request, effective: Principal) -> None:
        """Interface spec, "Effective canister id"."""
        if request.canister_id != Principal.management():
            if request.canister_id != effective:
                raise EnvelopeRejected(
                    400,
                    f"the effective canister id in the URL ({effective.to_text()}) must be the canister "
                    f"being called ({request.canister_id.to_text()})",
                )
            return
        if request.method_name in _ANY_EFFECTIVE_ID:
            return
        if request.method_name not in self._management.methods:
            return  # the management canister itself rejects methods it does not have
        named = self._management_target(request.method_name, request.arg)
        if named is None:
            raise EnvelopeRejected(
                400,
                f"management canister method '{request.method_name}' takes no record with a canister_id, so it "
                "cannot be called from outside",
            )
        if named != effective:
            raise EnvelopeRejected(
                400,
                f"a call to the management canister's {request.method_name} must be sent to the canister it "
                f"manages: use /api/.../canister/{named.to_text()}/call (effective_canister_id="
                f"{named.to_text()}), not {effective.to_text()}",
            )

    def _management_target(self, method: str, arg: bytes) -> Principal | None:
        """The canister a management call manages: its argument's canister_id (target_canister
        for install_chunked_code), if it has one."""
        try:
            values = decode(self._management.methods[method].args, arg)
        except CandidError as error:
            raise EnvelopeRejected(
                400, f"the argument of the management canister's {method} is not valid Candid for its type: {error}"
            ) from None
        first = values[0] if values else None
        if isinstance(first, Mapping):
            named = first.get("target_canister" if method == "install_chunked_code" else "canister_id")
            if isinstance(named, Principal):
                return named
        return None

    # ---- query ----

    def query(self, effective_text: str, body: bytes) -> HttpResponse:
        effective = parse_principal(effective_text, "the effective canister id in the URL")
        request = self._authenticate(body, "query")
        self._check_effective_canister(request, effective)
        # The data certificate a query may read (ic0.data_certificate_copy): the canister's
        # certified data and the time, signed as of the state the query runs on. Made only for a
        # canister that reads it.
        def certificate() -> bytes:
            return self.state.current().certificate(
                [(b"canister", request.canister_id.bytes, b"certified_data"), (b"time",)])

        result = self.network.query(request.sender, request.canister_id, request.method_name, request.arg,
                                    certificate)
        if result.reply is not None:
            response = {"status": "replied", "reply": {"arg": result.reply}}
        else:
            response = {
                "status": "rejected",
                "reject_code": result.reject_code,
                "reject_message": result.reject_message or "",
            }
            if result.error_code:
                response["error_code"] = result.error_code
        response["signatures"] = [self._node_signature(response, request.request_id)]
        return cbor_response(response)

    def _node_signature(self, response: dict, request_id: bytes) -> dict:
        timestamp = self.wall_clock_ns()
        signable = {**response, "timestamp": timestamp, "request_id": request_id}
        signature = self.keys.node.sign(RESPONSE_DOMAIN_SEPARATOR + hash_of_map(signable))
        return {"timestamp": timestamp, "signature": signature, "identity": self.keys.node.node_id.bytes}

    # ---- read_state ----

    def read_state(self, scope: Literal["canister", "subnet"], id_text: str, body: bytes) -> HttpResponse:
        what = "the effective canister id" if scope == "canister" else "the subnet id"
        target = parse_principal(id_text, f"{what} in the URL")
        if scope == "subnet" and target != self.keys.subnet_id:
            raise EnvelopeRejected(
                404, f"this network has one subnet, {self.keys.subnet_id.to_text()}; {target.to_text()} is not it"
            )
        request = self._authenticate(body, "read_state")
        for path in request.paths:
            self._check_path(path, request, scope, target)
        paths = [list(path) for path in request.paths] + [[b"time"]]
        return cbor_response({"certificate": self.state.current().certificate(paths)})

    def _check_path(self, path: tuple[bytes, ...], request: Request, scope: str, target: Principal) -> None:
        if not path:
            raise EnvelopeRejected(404, "Invalid path requested: the empty path cannot be read")
        head = path[0]
        if head in (b"time", b"subnet", b"api_boundary_nodes"):
            return
        if head == b"canister_ranges" and scope == "subnet":
            return
        if head == b"request_status" and len(path) >= 2 and (len(path) == 2 or path[2] in _STATUS_FIELDS):
            if len({p[1] for p in request.paths if p[:1] == (b"request_status",) and len(p) > 1}) > 1:
                raise EnvelopeRejected(400, "all request_status paths of one read_state must name the same request")
            submitted = self.ledger.get(path[1])
            if submitted is None:
                return  # unknown requests may be asked about; the certificate proves them absent
            if submitted.sender != request.sender:
                raise EnvelopeRejected(
                    403, "only the sender of a request may read its status; sign the read_state with that identity"
                )
            if scope == "canister" and submitted.effective_canister_id != target:
                raise EnvelopeRejected(
                    403,
                    f"request 0x{path[1].hex()} was sent to {submitted.effective_canister_id.to_text()}; read its "
                    f"status at /api/v3/canister/{submitted.effective_canister_id.to_text()}/read_state",
                )
            return
        if head == b"canister" and len(path) >= 3 and path[2] in (b"module_hash", b"controllers", b"metadata"):
            if scope != "canister" or path[1] != target.bytes:
                raise EnvelopeRejected(
                    400, "canister paths may only be read for the effective canister id in the URL"
                )
            if path[2] == b"metadata":
                self._check_metadata_path(path, request, target)
            return
        shown = "/" + "/".join(label.decode("utf-8", "replace") if label.isascii() else "0x" + label.hex()
                               for label in path)
        raise EnvelopeRejected(404, f"Invalid path requested: {shown} is not a readable path of the state tree")


    def _check_metadata_path(self, path: tuple[bytes, ...], request: Request, canister_id: Principal) -> None:
        """/canister/<id>/metadata/<name>: a private section is for controllers only; an absent
        section or canister is not an error (the certificate proves it absent). The IC's rule and
        message: dfinity/ic 00d65b7bd9a774f64f8212898640cf6640f753f4,
        rs/http_endpoints/public/src/read_state/canister.rs, `can_read_canister_metadata`."""
        if len(path) != 4:
            raise EnvelopeRejected(404, "Invalid path requested: a metadata path is /canister/<id>/metadata/<name>")
        try:
            name = path[3].decode()
        except UnicodeDecodeError as e:
            raise EnvelopeRejected(400, f"Could not parse the custom section name: {e}.") from None
        try:
            info = self.network.canister_info(canister_id)
        except RejectError:
            return
        section = info.metadata.get(name)
        if section is not None and not section[0] and request.sender not in info.controllers:
            raise EnvelopeRejected(
                403, f"Custom section {name[:100]} can only be requested by the controllers of the canister."
            )


_STATUS_FIELDS = (b"status", b"reply", b"reject_code", b"reject_message", b"error_code")
# Interface spec: canister creation may be sent to any effective canister id.
_ANY_EFFECTIVE_ID = ("create_canister", "provisional_create_canister_with_cycles")
