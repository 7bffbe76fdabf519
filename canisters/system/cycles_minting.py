"""The cycles minting canister as a local network hosts it at its mainnet id: it names the subnets
a new canister may go to (this network's one subnet). Minting cycles from ICP is not offered:
the network has no ICP ledger."""

from __future__ import annotations

from cdk.canister import Canister, query
from cdk.principal import Principal


class CyclesMinting(Canister):
    DID = "cycles_minting.did"

    def init(self, default_subnets: list[Principal]) -> None:
        self.default_subnets = list(default_subnets)

    def post_upgrade(self, default_subnets: list[Principal]) -> None:
        self.init(default_subnets)

    @query
    def get_default_subnets(self) -> list[Principal]:
        return self.default_subnets
