"""Calling a simulated network from the same process, with Python values (no HTTP, no agent).

Arguments and replies are encoded with the callee's .did types, exactly as an agent would, and
each update call comes back with the CostReport of its whole call tree.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from cdk.candid import decode, encode
from cdk.principal import Principal
from replica.api_types import IngressMessage, RequestStatus
from replica.cost_model import CostReport
from replica.errors import RejectError
from replica.loader import ModuleRef
from replica.network import Network

LOCAL_USER = Principal.self_authenticating(b"icllama in-process user")
MANAGEMENT = Principal.management()


class CallFailed(Exception):
    """An update or query was rejected; carries the IC's reject code, message and error code."""

    def __init__(self, reject_code: int, message: str, error_code: str | None, report: CostReport | None = None):
        super().__init__(f"{error_code or 'reject'} (reject code {reject_code}): {message}")
        self.reject_code = reject_code
        self.message = message
        self.error_code = error_code
        self.report = report


@dataclass(frozen=True)
class CallOutcome:
    value: Any  # the decoded reply: None for (), the value for one result, a tuple for several
    report: CostReport


class LocalClient:
    def __init__(self, network: Network, sender: Principal = LOCAL_USER):
        self.network = network
        self.sender = sender
        self._counter = 0

    # --- deploying ---------------------------------------------------------------------------
    def create_canister(self, cycles: int | None = None, controllers: list[Principal] | None = None,
                        sender: Principal | None = None) -> Principal:
        settings = {"controllers": controllers} if controllers is not None else None
        reply = self.update(MANAGEMENT, "provisional_create_canister_with_cycles",
                            {"amount": cycles, "settings": settings, "specified_id": None,
                             "sender_canister_version": None}, sender=sender)
        return reply.value["canister_id"]

    def install(self, class_path: str, *init_args: Any, version: str = "1", cycles: int | None = None,
                name: str | None = None, canister_id: Principal | None = None, mode: str = "install",
                sender: Principal | None = None) -> Principal:
        """Creates a canister (unless `canister_id` is given) and installs `class_path` on it."""
        if canister_id is None:
            canister_id = self.create_canister(cycles, sender=sender)
        self.install_code(canister_id, class_path, *init_args, version=version, mode=mode, sender=sender)
        if name is not None:
            with self.network.lock:
                self.network.subnet.names[name] = canister_id
                self.network.subnet.changed = True
        return canister_id

    def install_code(self, canister_id: Principal, class_path: str, *args: Any, version: str = "1",
                     mode: str = "install", sender: Principal | None = None) -> CostReport:
        with self.network.lock:
            loaded_types = _init_types(class_path, version)
        install_mode: dict[str, Any] = {mode: None}
        outcome = self.update(MANAGEMENT, "install_code", {
            "mode": install_mode, "canister_id": canister_id,
            "wasm_module": ModuleRef(class_path, version).to_wasm_module(),
            "arg": encode(loaded_types, list(args)), "sender_canister_version": None,
        }, sender=sender)
        return outcome.report

    # --- calling -----------------------------------------------------------------------------
    def submit(self, canister_id: Principal, method: str, *args: Any, sender: Principal | None = None) -> bytes:
        """Submits an update call without waiting; returns its request id."""
        arg_types, _ = self._types(canister_id, method)
        self._counter += 1
        request_id = hashlib.sha256(f"{id(self)}:{self._counter}:{time.time_ns()}".encode()).digest()
        self.network.submit(IngressMessage(
            request_id, sender or self.sender, canister_id, method, encode(arg_types, list(args)),
            time.time_ns() + 4 * 60 * 10**9, canister_id))
        return request_id

    def result(self, canister_id: Principal, method: str, request_id: bytes) -> CallOutcome:
        """Runs rounds until the request is answered; returns its reply or raises CallFailed."""
        status = self.network.status(request_id)
        while status is not None and status.status not in ("replied", "rejected"):
            self.network.execute_round()
            status = self.network.status(request_id)
        report = self.network.report(request_id) or CostReport()
        return self._outcome(canister_id, method, status, report)

    def update(self, canister_id: Principal, method: str, *args: Any, sender: Principal | None = None
               ) -> CallOutcome:
        request_id = self.submit(canister_id, method, *args, sender=sender)
        return self.result(canister_id, method, request_id)

    def query(self, canister_id: Principal, method: str, *args: Any, sender: Principal | None = None) -> Any:
        arg_types, reply_types = self._types(canister_id, method)
        result = self.network.query(sender or self.sender, canister_id, method, encode(arg_types, list(args)))
        if result.reply is None:
            raise CallFailed(result.reject_code or 0, result.reject_message or "", result.error_code)
        return _unwrap(decode(reply_types, result.reply))

    def _types(self, canister_id: Principal, method: str) -> tuple[Any, Any]:
        with self.network.lock:
            try:
                return self.network.subnet.method_types(canister_id, method)
            except RejectError as e:
                raise CallFailed(int(e.reject.reject_code), e.reject.message, e.reject.error_code) from None

    def _outcome(self, canister_id: Principal, method: str, status: RequestStatus | None,
                 report: CostReport) -> CallOutcome:
        if status is None:
            raise CallFailed(2, "the request is unknown to the network", None, report)
        if status.status != "replied":
            raise CallFailed(status.reject_code or 0, status.reject_message or "", status.error_code, report)
        _, reply_types = self._types(canister_id, method)
        return CallOutcome(_unwrap(decode(reply_types, status.reply or b"")), report)


def _init_types(class_path: str, version: str) -> Any:
    from replica.loader import load_class

    try:
        return load_class(ModuleRef(class_path, version)).interface.init_args
    except RejectError as e:
        raise CallFailed(int(e.reject.reject_code), e.reject.message, e.reject.error_code) from None


def _unwrap(values: list[Any]) -> Any:
    return None if len(values) == 0 else values[0] if len(values) == 1 else tuple(values)
