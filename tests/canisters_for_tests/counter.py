"""A small counter canister for tests of the simulated IC (and the HTTP gateway's tests)."""

from __future__ import annotations

from cdk.canister import Canister, query, update
from cdk.principal import Principal


class Counter(Canister):
    DID = "counter.did"

    def init(self, start: int) -> None:
        self.count = start

    def post_upgrade(self, start: int) -> None:
        self.count = start  # the heap starts over; only stable memory survives an upgrade

    @update
    def inc(self) -> int:
        self.count += 1
        return self.count

    @query
    def get(self) -> int:
        return self.count

    @update
    def set(self, value: int) -> None:
        self.count = value

    @update
    def inc_then_trap(self) -> None:
        self.count += 1
        self.ic.trap("inc_then_trap always traps after incrementing")

    @query
    def inc_in_query(self) -> int:
        self.count += 1
        return self.count

    @update
    def burn(self, instructions: int) -> int:
        self.ic.meter.instructions(instructions)
        self.count += 1
        return self.count

    @update
    def burn_and_write(self, instructions: int, data: bytes) -> None:
        self.burn(instructions)
        self.ic.stable_write(0, data)

    @update
    def echo(self, data: bytes) -> bytes:
        return data

    @update
    def reply_of_size(self, size: int) -> bytes:
        return bytes(size)

    @update
    def write_stable(self, offset: int, data: bytes) -> None:
        needed_pages = -(-(offset + len(data)) // 65536)
        if needed_pages > self.ic.stable_size():
            self.ic.stable_grow(needed_pages - self.ic.stable_size())
        self.ic.stable_write(offset, data)

    @query
    def read_stable(self, offset: int, size: int) -> bytes:
        return self.ic.stable_read(offset, size)

    @query
    def whoami(self) -> Principal:
        return self.ic.caller()
