"""A canister that calls the management canister's canister-only methods and prints to its log."""

from __future__ import annotations

from typing import Any

from cdk.canister import Canister, query, update
from cdk.principal import Principal

MANAGEMENT = Principal.management()
Info = tuple[int, list[str], "bytes | None", list[Principal]]  # total changes, the changes, module hash, controllers


def _describe(change: dict[str, Any]) -> str:
    """One change as "version:origin:details", e.g. "1:from_user:code_deployment install"."""
    (origin,) = change["origin"]
    ((kind, details),) = change["details"].items()
    if kind == "code_deployment":
        kind += " " + next(iter(details["mode"]))
    elif kind == "controllers_change":
        kind += " " + ",".join(p.to_text() for p in details["controllers"])
    return f"{change['canister_version']}:{origin}:{kind}"


class Manager(Canister):
    DID = "manager.did"

    def init(self) -> None:
        self.ic.debug_print("installed")

    @update
    async def info(self, target: Principal, changes: int | None) -> Info:
        result = await self.ic.call(MANAGEMENT, "canister_info",
                                    {"canister_id": target, "num_requested_changes": changes})
        return (result["total_num_changes"], [_describe(c) for c in result["recent_changes"]],
                result["module_hash"], result["controllers"])

    @update
    async def rand(self) -> bytes:
        return await self.ic.call(MANAGEMENT, "raw_rand")

    @update
    def log(self, message: str, then_trap: bool) -> None:
        self.ic.debug_print(message)
        if then_trap:
            self.ic.trap(f"trapped after {message!r}")

    @query
    def log_query(self, message: str) -> None:
        self.ic.debug_print(message)
