"""Hyperparameters of a Llama-family model, read from GGUF metadata.

Names follow Hugging Face's LlamaConfig where one exists (hidden_size is `d_model` here, as in
DESIGN.md). Only header facts are needed, so the planner can use this for models it never
loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# RoPE pairing: llama pairs adjacent elements (GGUF's converter permuted Q and K for it);
# qwen2 pairs the two halves of each head (GPT-NeoX style). From llama.cpp's llama_model_rope_type.
ROPE_NEOX_ARCHITECTURES = frozenset({"qwen2"})
SUPPORTED_ARCHITECTURES = frozenset({"llama", "qwen2"})


class UnsupportedModel(ValueError):
    """The model is valid GGUF but not something this code can run."""


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_layer: int
    d_model: int
    n_head: int
    n_head_kv: int
    head_dim: int
    d_ff: int
    n_vocab: int
    n_ctx_train: int
    rms_eps: float
    rope_theta: float
    rope_dim: int
    rope_neox: bool
    rope_linear_scale: float  # positions are divided by this ("linear" rope scaling); 1.0 = none

    @property
    def q_dim(self) -> int:
        return self.n_head * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_head_kv * self.head_dim

    @classmethod
    def from_gguf(cls, fields: Mapping[str, Any], source: str = "model") -> ModelConfig:
        arch = str(fields.get("general.architecture", ""))
        if arch not in SUPPORTED_ARCHITECTURES:
            raise UnsupportedModel(
                f"{source}: architecture {arch or '(missing)'!r} is not supported; "
                f"supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))}"
            )

        def get(key: str, default: Any = None) -> Any:
            value = fields.get(f"{arch}.{key}", default)
            if value is None:
                raise UnsupportedModel(f"{source}: metadata {arch}.{key} is missing")
            return value

        d_model, n_head = int(get("embedding_length")), int(get("attention.head_count"))
        head_dim = int(get("attention.key_length", d_model // n_head))
        n_vocab = fields.get(f"{arch}.vocab_size") or len(fields.get("tokenizer.ggml.tokens", ()))
        if not n_vocab:
            raise UnsupportedModel(f"{source}: neither {arch}.vocab_size nor tokenizer.ggml.tokens is present")
        scaling = fields.get(f"{arch}.rope.scaling.type", "none")
        if scaling not in ("none", "linear"):
            raise UnsupportedModel(f"{source}: rope scaling {scaling!r} is not supported (none, linear are)")
        return cls(
            arch=arch,
            n_layer=int(get("block_count")),
            d_model=d_model,
            n_head=n_head,
            n_head_kv=int(get("attention.head_count_kv", n_head)),
            head_dim=head_dim,
            d_ff=int(get("feed_forward_length")),
            n_vocab=int(n_vocab),
            n_ctx_train=int(get("context_length")),
            rms_eps=float(get("attention.layer_norm_rms_epsilon")),
            rope_theta=float(get("rope.freq_base", 10000.0)),
            rope_dim=int(get("rope.dimension_count", head_dim)),
            rope_neox=arch in ROPE_NEOX_ARCHITECTURES,
            rope_linear_scale=float(get("rope.scaling.factor", 1.0)) if scaling == "linear" else 1.0,
        )
