"""Plain data crossing the network boundary (re-exported by replica.network)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cdk.principal import Principal

IngressStatus = Literal["received", "processing", "replied", "rejected", "done"]


@dataclass(frozen=True)
class IngressMessage:
    request_id: bytes
    sender: Principal
    canister_id: Principal
    method: str
    arg: bytes
    ingress_expiry_ns: int
    effective_canister_id: Principal


@dataclass(frozen=True)
class RequestStatus:
    status: IngressStatus
    reply: bytes | None
    reject_code: int | None
    reject_message: str | None
    error_code: str | None
    updated_ns: int


@dataclass(frozen=True)
class QueryResult:
    reply: bytes | None
    reject_code: int | None
    reject_message: str | None
    error_code: str | None


@dataclass(frozen=True)
class CanisterInfo:
    canister_id: Principal
    class_path: str | None  # None while no code is installed
    version: str | None
    module_hash: bytes | None
    controllers: list[Principal]
    status: Literal["running", "stopping", "stopped"]
    cycles: int
    heap_bytes: int
    stable_bytes: int
    # name -> (public, content) of the code's icp:public/icp:private metadata sections
    metadata: dict[str, tuple[bool, bytes]] = field(default_factory=dict)
    certified_data: bytes = b""  # set by the canister (ic0.certified_data_set), at most 32 bytes


class IngressRejected(Exception):
    """An ingress message refused at the boundary; nothing changed on the network."""

    def __init__(self, http_status: int, error_code: str, message: str, reject_code: int):
        super().__init__(f"{error_code}: {message}")
        self.http_status = http_status
        self.error_code = error_code
        self.message = message
        self.reject_code = reject_code
