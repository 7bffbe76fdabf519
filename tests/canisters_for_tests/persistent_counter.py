"""A counter that writes its value to stable memory on every change and reads it back in
post_upgrade: the way a canister keeps state across upgrades and network restarts."""

from __future__ import annotations

from cdk.canister import Canister, query, update


class PersistentCounter(Canister):
    DID = "persistent_counter.did"

    def init(self) -> None:
        self.ic.stable_grow(1)
        self.count = 0

    def post_upgrade(self) -> None:
        self.count = int.from_bytes(self.ic.stable_read(0, 8), "little")

    @update
    def inc(self) -> int:
        self.count += 1
        self.ic.stable_write(0, self.count.to_bytes(8, "little"))
        return self.count

    @query
    def get(self) -> int:
        return self.count
