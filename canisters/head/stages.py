"""The pipeline the head drives: its stages in activation order, checked against the model.

Each stage is a yblock holding a contiguous range of layers, the output (all of its rows, or a
slice), or both. `Pipeline.from_candid` refuses any pipeline that would not compute the model
exactly: layers must run 0..n_layer-1 in order, and the output rows must cover the vocabulary
in order, after the last layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from canisters.llama.config import ModelConfig
from cdk.principal import Principal

ROLES = ("layers", "output")


class PipelineError(ValueError):
    """A pipeline that does not compute the model; the message says what to fix."""


@dataclass(frozen=True)
class Stage:
    canister: Principal
    first_layer: int
    last_layer: int
    role: str
    output_rows: tuple[int, int] | None

    @property
    def has_layers(self) -> bool:
        return self.last_layer > self.first_layer

    def holds_all_rows(self, n_vocab: int) -> bool:
        return self.output_rows == (0, n_vocab)

    def describe(self, index: int) -> str:
        return f"stage {index} ({self.role}, {self.canister.to_text()})"

    def to_candid(self) -> dict[str, Any]:
        rows = None if self.output_rows is None else {"start": self.output_rows[0], "stop": self.output_rows[1]}
        return {"canister": self.canister, "first_layer": self.first_layer, "last_layer": self.last_layer,
                "role": self.role, "output_rows": rows}


@dataclass(frozen=True)
class Pipeline:
    stages: tuple[Stage, ...]
    prefill_chunk: int

    @classmethod
    def from_candid(cls, value: dict[str, Any], config: ModelConfig) -> Pipeline:
        stages = tuple(
            Stage(s["canister"], s["first_layer"], s["last_layer"], s["role"],
                  None if s["output_rows"] is None else (s["output_rows"]["start"], s["output_rows"]["stop"]))
            for s in value["stages"])
        pipeline = cls(stages, value["prefill_chunk"])
        pipeline._check(config)
        return pipeline

    def to_candid(self) -> dict[str, Any]:
        return {"stages": [s.to_candid() for s in self.stages], "prefill_chunk": self.prefill_chunk}

    def _check(self, config: ModelConfig) -> None:
        if not self.stages:
            raise PipelineError("the pipeline has no stages; give the yblocks in the order activations flow")
        if self.prefill_chunk < 1:
            raise PipelineError("prefill_chunk must be at least 1 token")
        next_layer, next_row, output_seen = 0, 0, False
        for i, stage in enumerate(self.stages):
            where = stage.describe(i)
            if stage.role not in ROLES:
                raise PipelineError(f"{where}: role must be one of {', '.join(ROLES)}")
            if stage.role != ("layers" if stage.has_layers else "output"):
                raise PipelineError(f"{where}: a stage with layers has role 'layers' (it may hold the output too), "
                                    "one with only output rows has role 'output'")
            if stage.has_layers:
                if output_seen:
                    raise PipelineError(f"{where} holds layers after an output stage; the output comes last")
                if stage.first_layer != next_layer:
                    raise PipelineError(f"{where} starts at layer {stage.first_layer}, but the layers before it end "
                                        f"at {next_layer}; stages must hold consecutive layers in order")
                next_layer = stage.last_layer
            if stage.output_rows is not None:
                start, stop = stage.output_rows
                if next_layer != config.n_layer:
                    raise PipelineError(f"{where} holds output rows, but layers {next_layer}..{config.n_layer - 1} "
                                        "come before the output and no stage holds them yet")
                if start != next_row or not start < stop <= config.n_vocab:
                    raise PipelineError(f"{where} holds output rows {start}..{stop - 1}; the next rows of the "
                                        f"{config.n_vocab}-row output start at {next_row}")
                if stage.has_layers and (start, stop) != (0, config.n_vocab):
                    raise PipelineError(f"{where} holds layers and a slice of the output rows; a stage with layers "
                                        "holds all output rows or none, and slices go on output-only stages")
                output_seen, next_row = True, stop
            elif not stage.has_layers:
                raise PipelineError(f"{where} holds neither layers nor output rows")
        if next_layer != config.n_layer:
            raise PipelineError(f"the stages hold layers 0..{next_layer - 1} of {config.n_layer}; add the rest")
        if next_row == 0:
            raise PipelineError("no stage holds the output (output_norm and the output matrix); the last stages "
                                "must hold its rows")
        if next_row != config.n_vocab:
            raise PipelineError(f"the output stages hold rows 0..{next_row - 1} of {config.n_vocab}; add the rest")


def merged_logits(slices: Sequence[tuple[Stage, dict[str, Any]]], n_vocab: int) -> np.ndarray:
    """Logits over the whole vocabulary from the output slices' candidates; -inf where none came.

    Each slice sent its top_k after the repetition penalty (its best when greedy, or all of its
    rows), so the global top_k is among them and a sampler without penalty draws from this exactly
    what one sampler over all rows draws (see the yblock's _sample)."""
    logits = np.full(n_vocab, -np.inf, dtype=np.float32)
    for stage, candidates in slices:
        values = np.asarray(candidates["logits"], dtype=np.float32)
        if candidates["ids"]:
            logits[np.asarray(candidates["ids"], dtype=np.int64)] = values
        else:
            assert stage.output_rows is not None
            start, stop = stage.output_rows
            if values.shape[0] != stop - start:
                raise ValueError(f"an output slice of rows {start}..{stop - 1} sent {values.shape[0]} logits")
            logits[start:stop] = values
    return logits
