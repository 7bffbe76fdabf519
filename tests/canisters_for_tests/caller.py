"""A canister that calls others, for tests of inter-canister semantics."""

from __future__ import annotations

from cdk.canister import CallRejected, Canister, query, update
from cdk.principal import Principal


class Caller(Canister):
    DID = "caller.did"

    def init(self) -> None:
        self.local_count = 0

    @update
    async def call_inc(self, target: Principal) -> int:
        return await self.ic.call(target, "inc")

    @update
    async def inc_local_call_then_trap(self, target: Principal) -> None:
        self.local_count += 1  # committed at the await below
        await self.ic.call(target, "inc")
        self.local_count += 100  # rolled back by the trap
        self.ic.trap("trapping after the await")

    @query
    def local(self) -> int:
        return self.local_count

    @update
    async def chain(self, targets: list[Principal]) -> int:
        total = 0
        for target in targets:
            total += await self.ic.call(target, "inc")
        return total

    @update
    async def chain_burn(self, targets: list[Principal], instructions: int) -> None:
        for target in targets:
            await self.ic.call(target, "burn", instructions)

    @update
    async def send_blob(self, target: Principal, size: int) -> dict:
        self.local_count += 1
        try:
            echoed = await self.ic.call(target, "echo", bytes(size))
        except CallRejected as e:
            return {"err": f"{e.error_code}: {e.message}"}
        return {"ok": len(echoed)}

    @update
    async def fetch_reply(self, target: Principal, size: int) -> dict:
        self.local_count += 1
        try:
            data = await self.ic.call(target, "reply_of_size", size)
        except CallRejected as e:
            return {"err": f"{e.error_code}: {e.message}"}
        return {"ok": len(data)}

    @update
    async def ping(self, target: Principal, data: bytes) -> int:
        echoed = await self.ic.call(target, "echo", data)
        return len(echoed)

    @update
    async def deposit(self, target: Principal, amount: int) -> None:
        await self.ic.call(Principal.management(), "deposit_cycles", {"canister_id": target}, cycles=amount)

    @update
    async def status_of(self, target: Principal) -> dict:
        try:
            status = await self.ic.call(Principal.management(), "canister_status", {"canister_id": target})
        except CallRejected as e:
            return {"err": f"{e.error_code}: {e.message}"}
        return {"ok": status["cycles"]}
