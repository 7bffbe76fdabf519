"""A head that calls stages sequentially with the activations, as one generated token does."""

from __future__ import annotations

from cdk.canister import Canister, update


class Pipeline(Canister):
    DID = "pipeline.did"

    @update
    async def run(self, stages: list[dict], activations: bytes) -> int:
        for stage in stages:
            activations = await self.ic.call(stage["canister"], "forward", stage["weight_type"], stage["macs"],
                                             stage["elementwise_ops"], activations)
        return len(activations)
