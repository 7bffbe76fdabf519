"""What a shard file says about itself: its role, layers, output rows and weight strategy.

Shard export (sharding/export.py) writes these as `icllama.shard.*` metadata beside the model's
own metadata; the canisters read them when they load the shard.
"""

from __future__ import annotations

from dataclasses import dataclass

from canisters.llama.gguf_file import GGUFFile
from canisters.llama.model import OutputHead
from canisters.llama.weights import Strategy

KEY = "icllama.shard."
ROLES = ("head", "layers", "output")


class ShardLayoutError(ValueError):
    """The shard's metadata is missing or contradicts its tensors."""


@dataclass(frozen=True)
class ShardLayout:
    name: str  # "head", "yblock_0", ...
    role: str  # one of ROLES; a "layers" shard may hold the output too
    first_layer: int  # layers first_layer .. last_layer - 1 (equal when the shard holds none)
    last_layer: int
    output_rows: tuple[int, int] | None  # rows of the model's output matrix this shard holds
    strategy: str  # how the canister holds the weights: "dequantize" or "quantized"

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ShardLayout:
        fields = gguf.fields

        def get(key: str) -> object:
            if KEY + key not in fields:
                raise ShardLayoutError(f"{gguf.source}: metadata {KEY + key} is missing; this is not a shard "
                                       "written by icllama's shard export")
            return fields[KEY + key]

        role = str(get("role"))
        if role not in ROLES:
            raise ShardLayoutError(f"{gguf.source}: {KEY}role is {role!r}, expected one of {', '.join(ROLES)}")
        try:
            strategy = Strategy.of(str(get("weight_strategy"))).value
        except ValueError as e:
            raise ShardLayoutError(f"{gguf.source}: {e}") from None
        rows = fields.get(KEY + "output_rows")
        layout = cls(str(get("name")), role, int(get("first_layer")), int(get("last_layer")),
                     (int(rows[0]), int(rows[1])) if rows is not None else None, strategy)
        layout._check(gguf)
        return layout

    def _check(self, gguf: GGUFFile) -> None:
        for layer in range(self.first_layer, self.last_layer):
            if f"blk.{layer}.attn_q.weight" not in gguf.tensors:
                raise ShardLayoutError(f"{gguf.source}: the shard says it holds layers {self.first_layer}.."
                                       f"{self.last_layer - 1} but has no tensors of layer {layer}")
        if self.role == "output" and self.output_rows is None:
            raise ShardLayoutError(f"{gguf.source}: an output shard must say which output rows it holds")
        if self.output_rows is not None:
            name = OutputHead.weight_name(gguf)
            start, stop = self.output_rows
            held = gguf.tensor(name).shape[1] if name in gguf.tensors else 0
            if held != stop - start:
                raise ShardLayoutError(f"{gguf.source}: the shard says it holds output rows {start}..{stop - 1} but "
                                       f"its {name} has {held} rows")
