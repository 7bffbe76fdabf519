"""ModelSpec: what the planner knows about a model, from the GGUF header alone.

Reading a ModelSpec never touches tensor data: planning a 70B model needs only its header (or
a preset that states the same facts).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from canisters.llama.config import ModelConfig
from canisters.llama.gguf_file import read_gguf


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # GGUF order: (in, out) for matrices
    type_name: str  # GGML type name: "F32", "Q4_1", ...
    n_bytes: int

    @property
    def layer(self) -> int | None:
        """The block index of a `blk.N.*` tensor, None for the others."""
        if self.name.startswith("blk."):
            return int(self.name.split(".")[1])
        return None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str  # the file path, or "preset:<name>"
    config: ModelConfig
    tensors: Mapping[str, TensorSpec]
    tokenizer_model: str  # "llama" (SPM) or "gpt2" (byte-level BPE)
    tokenizer_pre: str | None
    chat_template: str | None

    @property
    def tied_embeddings(self) -> bool:
        return "output.weight" not in self.tensors

    def layer_tensors(self, layer: int) -> list[TensorSpec]:
        return [t for t in self.tensors.values() if t.layer == layer]

    @property
    def weight_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors.values())


def read_model_spec(path: str | Path) -> ModelSpec:
    gguf = read_gguf(path)
    fields = gguf.fields
    config = ModelConfig.from_gguf(fields, gguf.source)
    tensors = {
        t.name: TensorSpec(t.name, t.shape, t.type_name, t.n_bytes) for t in gguf.tensors.values()
    }
    return ModelSpec(
        # The file's name: general.name is often the converter's rendering of a training-run
        # directory ("Smollm2 135M 8k Lc100K Mix1 Ep2"), or just the architecture.
        name=Path(path).name,
        source=str(path),
        config=config,
        tensors=tensors,
        tokenizer_model=str(fields.get("tokenizer.ggml.model", "")),
        tokenizer_pre=fields.get("tokenizer.ggml.pre"),
        chat_template=fields.get("tokenizer.chat_template"),
    )
