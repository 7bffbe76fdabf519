"""A canister for the interface spec's call-context rules (tests/test_call_context_rules.py)."""

from __future__ import annotations

from cdk.canister import CallRejected, Canister, query, update
from cdk.principal import Principal


class CallRules(Canister):
    DID = "call_rules.did"

    def init(self) -> None:
        self.writes = 0
        self.locked = False
        self.cleanups = 0

    @update
    def accept_then_trap(self) -> None:
        self.ic.msg_cycles_accept(self.ic.msg_cycles_available())
        self.ic.trap("accepted every cycle, then trapped")

    @update
    async def attach(self, target: Principal, method: str, cycles: int) -> dict:
        try:
            await self.ic.call(target, method, cycles=cycles)
        except CallRejected as e:
            return {"err": f"{e.reject_code} {e.error_code}: {e.message}"}
        return {"ok": 0}

    @update
    def refuse(self, why: str) -> None:
        self.writes += 1  # kept: a reject is an answer, not a trap
        self.ic.reject(why)

    @update
    async def refuse_then_call(self, target: Principal) -> None:
        self.ic.reject("answered before the await")
        await self.ic.call(target, "inc")
        self.writes += 1

    @update
    async def call_refuse(self, target: Principal) -> dict:
        try:
            await self.ic.call(target, "refuse", "no thanks")
        except CallRejected as e:
            return {"err": f"{e.reject_code} {e.error_code}: {e.message}"}
        return {"ok": 0}

    def _unlock(self) -> None:
        self.locked = False
        self.cleanups += 1

    @update
    async def lock_call_then_trap(self, target: Principal) -> None:
        self.locked = True  # committed at the await
        await self.ic.call(target, "inc", cleanup=self._unlock)
        self.writes += 1  # rolled back by the trap below; the cleanup still runs
        self.ic.trap("the continuation traps while holding the lock")

    @update
    async def two_calls_first_traps(self, fast: Principal, slow: Principal, instructions: int) -> int:
        first = self.ic.call(fast, "inc")
        self.ic.call(slow, "burn", instructions)
        await first
        self.ic.trap("trapped while the call to the slow canister was still outstanding")

    @update
    async def write_then_call_missing(self, target: Principal, method: str) -> None:
        self.writes += 1  # committed at the await, before the system's reject arrives
        try:
            await self.ic.call(target, method)
        except CallRejected as e:
            self.ic.trap(f"the call was rejected: {e}")

    @update
    async def hold(self, target: Principal, instructions: int) -> int:
        return await self.ic.call(target, "burn", instructions)

    @update
    def spin_forever(self) -> None:
        while True:
            self.writes += 1

    @query
    def balance(self) -> int:
        return self.ic.cycles_balance()

    @query
    def state(self) -> dict:
        return {"writes": self.writes, "locked": self.locked, "cleanups": self.cleanups}
