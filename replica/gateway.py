"""The HTTP server of the IC HTTP interface (what `icllama start` serves on 127.0.0.1:4943).

A threaded HTTP/1.1 server from the standard library: each connection gets a thread, which is
what a synchronous call needs (it holds its connection until the call finishes) and plenty for
a local development network. Routing and body limits live here; what each endpoint does is in
replica.gateway_endpoints.

Besides the IC's endpoints there is one of icllama's own, GET /_/icllama/status (JSON: round,
virtual time, canisters), for `icllama status`; like PocketIC's admin API it is not part of the
IC interface.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from replica.auth import EnvelopeRejected
from replica.gateway_endpoints import Endpoints, HttpResponse, text_response

# The replica refuses request bodies above 5 MiB before decoding them; ingress messages are
# further limited (2 MiB) once decoded.
MAX_BODY_BYTES = 5 * 1024 * 1024
# An oversized body is still read and thrown away (up to this much) so that the client sees the
# 413 instead of a connection reset halfway through its upload.
MAX_DISCARD_BYTES = 64 * 1024 * 1024

_CANISTER_ROUTE = re.compile(r"^/api/(v2|v3|v4)/canister/([^/]+)/(call|query|read_state)$")
_SUBNET_ROUTE = re.compile(r"^/api/(v2|v3)/subnet/([^/]+)/read_state$")


def _route(endpoints: Endpoints, path: str, body: bytes) -> HttpResponse:
    match = _CANISTER_ROUTE.match(path)
    if match:
        version, target, kind = match.groups()
        if kind == "call":
            return endpoints.call(version, target, body)
        if version == "v4":
            return text_response(404, f"there is no /api/v4 {kind} endpoint; use /api/v3/canister/<id>/{kind}")
        if kind == "query":
            return endpoints.query(target, body)
        return endpoints.read_state("canister", target, body)
    match = _SUBNET_ROUTE.match(path)
    if match:
        return endpoints.read_state("subnet", match.group(2), body)
    return text_response(404, f"no such endpoint: POST {path}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Send each response at once: with Nagle's algorithm a keep-alive response waited ~40 ms for
    # the client's delayed ACK (measured: a query 44 -> 1.5 ms, a 2 MiB chunk 66 -> 20 ms).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would drown the network's own log

    def _send(self, response: HttpResponse, close: bool = False) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(response.body)

    def do_GET(self) -> None:
        if self.path == "/api/v2/status":
            self._send(self.server.endpoints.status())
        elif self.path == "/_/icllama/status":
            body = json.dumps(self.server.describe()).encode()
            self._send(HttpResponse(200, body, "application/json"))
        else:
            self._send(text_response(404, f"no such endpoint: GET {self.path}"))

    def do_POST(self) -> None:
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            self._send(text_response(411, "send the request body with a Content-Length header"), close=True)
            return
        length = int(length_header)
        if length > MAX_BODY_BYTES:
            if length <= MAX_DISCARD_BYTES:
                self._discard(length)
            message = (f"the request body is {length} bytes; this gateway accepts at most {MAX_BODY_BYTES} "
                       "bytes (and an ingress message at most 2 MiB): send smaller calls")
            self._send(text_response(413, message), close=True)
            return
        body = self.rfile.read(length)
        try:
            response = _route(self.server.endpoints, self.path, body)
        except EnvelopeRejected as rejection:
            response = text_response(rejection.http_status, rejection.message)
        except Exception as error:  # a bug must cost one request, never the gateway
            self.server.report_error(error)
            response = text_response(500, f"internal error in the icllama gateway: {error!r}")
        self._send(response)

    def _discard(self, length: int) -> None:
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                return
            remaining -= len(chunk)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The default backlog of 5 resets connections when dozens of agents connect at once.
    request_queue_size = 1024
    # Set by Gateway.serve before the first request is accepted.
    endpoints: Endpoints
    describe: Callable[[], dict]
    report_error: Callable[[Exception], None]


class Gateway:
    """The HTTP server: binds on construction (so a busy port is reported before anything else
    starts), then serves `endpoints` from a background thread."""

    def __init__(self, host: str, port: int):
        self._server = _Server((host, port), _Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def serve(
        self,
        endpoints: Endpoints,
        describe: Callable[[], dict],
        report_error: Callable[[Exception], None],
    ) -> None:
        self._server.endpoints = endpoints
        self._server.describe = describe
        self._server.report_error = report_error
        self._thread = threading.Thread(target=self._server.serve_forever, name="gateway", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops accepting requests; requests already being answered finish on their threads."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        self.stop()
        self._server.server_close()
