"""A pipeline stage that reports the work of a forward pass computed from model shapes (for
calibrating the cost model against published figures without any weights)."""

from __future__ import annotations

from cdk.canister import Canister, update


class Stage(Canister):
    DID = "stage.did"

    @update
    def forward(self, weight_type: str, macs: int, elementwise_ops: int, activations: bytes) -> bytes:
        self.ic.meter.macs(weight_type, macs)
        self.ic.meter.elementwise(elementwise_ops)
        return activations
