"""ModelSpecs of well-known models from header facts alone, for planning models this machine
cannot hold.

A preset states what a GGUF header would: the hyperparameters (each from the model's Hugging
Face config.json, named beside it), the tensor list of its architecture as llama.cpp's
converter writes it, and each tensor's type as llama.cpp's `llama-quantize` would choose it
for the requested file type (`llama_tensor_get_type` in src/llama-quant.cpp, reproduced in
`tensor_type` below), so the byte sizes are those of the real files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from canisters.llama.config import ModelConfig
from canisters.llama.quants import tensor_nbytes
from sharding.model_spec import ModelSpec, TensorSpec

# File types a preset can be made in: llama.cpp's names (`llama-quantize --help`), lower case.
FILE_TYPES = ("f32", "f16", "q8_0", "q4_1", "q4_k_m")
_DEFAULT_TYPE = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0", "q4_1": "Q4_1", "q4_k_m": "Q4_K"}
# llama-quantize replaces a k-quant whose rows are not a multiple of 256 (convert_incompatible_tensor).
_K_QUANT_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


@dataclass(frozen=True)
class Preset:
    name: str
    source: str  # where the hyperparameters come from
    config: ModelConfig
    tied: bool  # tie_word_embeddings: no output.weight, the output reuses token_embd
    qkv_bias: bool  # qwen2: attn_q/k/v biases
    qk_norm: bool  # qwen3: RMS norms of q and k per head (attn_q_norm, attn_k_norm)
    rope_freqs: bool  # Llama 3.1: rope_freqs.weight, the long-context frequency factors
    tokenizer_pre: str  # tokenizer.ggml.pre that llama.cpp's converter writes for it
    default_file_type: str
    file_types: tuple[str, ...] = FILE_TYPES
    tokenizer_model: str = "gpt2"  # every preset model has a byte-level BPE vocabulary

    def spec(self, file_type: str | None = None) -> ModelSpec:
        file_type = file_type or self.default_file_type
        if file_type not in self.file_types:
            raise ValueError(f"preset {self.name} comes in {', '.join(self.file_types)}, not {file_type!r}")
        tensors = {}
        for name, shape, layer in self._tensor_shapes():
            type_name = tensor_type(file_type, name, shape, layer, self.config.n_layer, self.tied,
                                    is_70b=self.config.n_layer == 80)
            tensors[name] = TensorSpec(name, shape, type_name, tensor_nbytes(type_name, shape))
        return ModelSpec(
            name=f"{self.name} ({file_type} file)",
            source=f"preset:{self.name}:{file_type}",
            config=self.config,
            tensors=MappingProxyType(tensors),
            tokenizer_model=self.tokenizer_model,
            tokenizer_pre=self.tokenizer_pre,
            chat_template=None,  # header facts only: the template text is not part of a preset
        )

    def _tensor_shapes(self) -> list[tuple[str, tuple[int, ...], int | None]]:
        """(name, GGUF shape (in, out), layer) in the order llama.cpp's converter writes them."""
        c = self.config
        d, q, kv = c.d_model, c.q_dim, c.kv_dim
        out: list[tuple[str, tuple[int, ...], int | None]] = [("token_embd.weight", (d, c.n_vocab), None)]
        if self.rope_freqs:
            out.append(("rope_freqs.weight", (c.rope_dim // 2,), None))
        for i in range(c.n_layer):
            p = f"blk.{i}."
            layer: list[tuple[str, tuple[int, ...]]] = [
                ("attn_norm.weight", (d,)), ("attn_q.weight", (d, q)), ("attn_k.weight", (d, kv)),
                ("attn_v.weight", (d, kv)), ("attn_output.weight", (q, d)), ("ffn_norm.weight", (d,)),
                ("ffn_gate.weight", (d, c.d_ff)), ("ffn_up.weight", (d, c.d_ff)), ("ffn_down.weight", (c.d_ff, d)),
            ]
            if self.qkv_bias:
                layer += [("attn_q.bias", (q,)), ("attn_k.bias", (kv,)), ("attn_v.bias", (kv,))]
            if self.qk_norm:
                layer += [("attn_q_norm.weight", (c.head_dim,)), ("attn_k_norm.weight", (c.head_dim,))]
            out += [(p + name, shape, i) for name, shape in layer]
        out.append(("output_norm.weight", (d,), None))
        if not self.tied:
            out.append(("output.weight", (d, c.n_vocab), None))
        return out


def use_more_bits(layer: int, n_layer: int) -> bool:
    """llama.cpp's choice of the layers whose attn_v and ffn_down get more bits in Q4_K_M:
    the first and last eighth, and every third layer in between."""
    return layer < n_layer // 8 or layer >= 7 * n_layer // 8 or (layer - n_layer // 8) % 3 == 2


def tensor_type(file_type: str, name: str, shape: tuple[int, ...], layer: int | None, n_layer: int, tied: bool,
                is_70b: bool = False) -> str:
    """The GGML type llama-quantize gives tensor `name` in a file of `file_type`.

    Only matrices are quantized; vectors (norms, biases, rope factors) stay F32 as the converter
    wrote them. Within k-quant mixes the rules are llama_tensor_get_type's for these file types."""
    if len(shape) < 2:
        return "F32"
    new = _DEFAULT_TYPE[file_type]
    if file_type in ("f32", "f16"):
        return new  # llama-quantize applies its mix rules only to quantized file types
    is_output = name == "output.weight" or (tied and name == "token_embd.weight")
    if is_output:
        new = "Q8_0" if shape[0] % _block_size(new) else new if new == "Q8_0" else "Q6_K"
    elif file_type == "q4_k_m" and layer is not None:
        if name.endswith("attn_v.weight"):
            new = "Q6_K" if use_more_bits(layer, n_layer) else new
            # 70B: 8 query heads share each attn_v, so a few more bits cost almost nothing
            new = "Q5_K" if is_70b and new == "Q4_K" else new
        elif name.endswith("ffn_down.weight") and use_more_bits(layer, n_layer):
            new = "Q6_K"
    if shape[0] % _block_size(new):
        if new not in _K_QUANT_FALLBACK:
            raise ValueError(f"{name}: rows of {shape[0]} elements cannot be stored as {new}, whose blocks hold "
                             f"{_block_size(new)}; llama-quantize refuses this tensor too")
        new = _K_QUANT_FALLBACK[new]
        new = "F16" if shape[0] % _block_size(new) else new
    return new


def _block_size(type_name: str) -> int:
    return GGML_QUANT_SIZES[GGMLQuantizationType[type_name]][0]


def _f32(value: float) -> float:
    """A float as a GGUF header stores it (float32), so that presets equal what files say."""
    return float(np.float32(value))


def _llama3(n_layer: int, d_model: int, n_head: int, d_ff: int, n_ctx: int) -> ModelConfig:
    return ModelConfig(arch="llama", n_layer=n_layer, d_model=d_model, n_head=n_head, n_head_kv=8,
                       head_dim=d_model // n_head, d_ff=d_ff, n_vocab=128256, n_ctx_train=n_ctx, rms_eps=_f32(1e-5),
                       rope_theta=500000.0, rope_dim=d_model // n_head, rope_neox=False, rope_linear_scale=1.0)


_PRESETS = (
    # meta-llama/Meta-Llama-3-8B config.json: hidden_size 4096, intermediate_size 14336,
    # num_attention_heads 32, num_key_value_heads 8, num_hidden_layers 32, vocab_size 128256,
    # max_position_embeddings 8192, rope_theta 500000, rms_norm_eps 1e-5, untied.
    Preset("llama-3-8b", "meta-llama/Meta-Llama-3-8B config.json", _llama3(32, 4096, 32, 14336, 8192),
           tied=False, qkv_bias=False, qk_norm=False, rope_freqs=False, tokenizer_pre="llama-bpe",
           default_file_type="f16"),
    # meta-llama/Llama-3.1-8B config.json: as Llama 3 8B, max_position_embeddings 131072 and
    # rope_scaling rope_type "llama3", which the converter turns into rope_freqs.weight (64 factors).
    Preset("llama-3.1-8b", "meta-llama/Llama-3.1-8B config.json", _llama3(32, 4096, 32, 14336, 131072),
           tied=False, qkv_bias=False, qk_norm=False, rope_freqs=True, tokenizer_pre="llama-bpe",
           default_file_type="f16"),
    # meta-llama/Meta-Llama-3-70B config.json: hidden_size 8192, intermediate_size 28672,
    # num_attention_heads 64, num_key_value_heads 8, num_hidden_layers 80, vocab_size 128256,
    # max_position_embeddings 8192, rope_theta 500000, rms_norm_eps 1e-5, untied.
    Preset("llama-3-70b", "meta-llama/Meta-Llama-3-70B config.json", _llama3(80, 8192, 64, 28672, 8192),
           tied=False, qkv_bias=False, qk_norm=False, rope_freqs=False, tokenizer_pre="llama-bpe",
           default_file_type="q4_k_m"),
    # Qwen/Qwen2.5-0.5B-Instruct config.json: hidden_size 896, intermediate_size 4864,
    # num_attention_heads 14, num_key_value_heads 2, num_hidden_layers 24, vocab_size 151936,
    # max_position_embeddings 32768, rope_theta 1000000, rms_norm_eps 1e-6, tie_word_embeddings true.
    Preset("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B-Instruct config.json",
           ModelConfig(arch="qwen2", n_layer=24, d_model=896, n_head=14, n_head_kv=2, head_dim=64, d_ff=4864,
                       n_vocab=151936, n_ctx_train=32768, rms_eps=_f32(1e-6), rope_theta=1000000.0, rope_dim=64,
                       rope_neox=True, rope_linear_scale=1.0),
           tied=True, qkv_bias=True, qk_norm=False, rope_freqs=False, tokenizer_pre="qwen2",
           default_file_type="q8_0"),
    # Qwen/Qwen3-1.7B config.json: hidden_size 2048, intermediate_size 6144, num_attention_heads 16,
    # num_key_value_heads 8, head_dim 128, num_hidden_layers 28, vocab_size 151936,
    # max_position_embeddings 40960, rope_theta 1000000, rms_norm_eps 1e-6, tie_word_embeddings true.
    Preset("qwen3-1.7b", "Qwen/Qwen3-1.7B config.json",
           ModelConfig(arch="qwen3", n_layer=28, d_model=2048, n_head=16, n_head_kv=8, head_dim=128, d_ff=6144,
                       n_vocab=151936, n_ctx_train=40960, rms_eps=_f32(1e-6), rope_theta=1000000.0, rope_dim=128,
                       rope_neox=True, rope_linear_scale=1.0),
           tied=True, qkv_bias=False, qk_norm=True, rope_freqs=False, tokenizer_pre="qwen2",
           default_file_type="q4_k_m"),
    # HuggingFaceTB/SmolLM2-135M-Instruct config.json: hidden_size 576, intermediate_size 1536,
    # num_attention_heads 9, num_key_value_heads 3, num_hidden_layers 30, vocab_size 49152,
    # max_position_embeddings 8192, rope_theta 100000, rms_norm_eps 1e-5, tie_word_embeddings true.
    Preset("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct config.json",
           ModelConfig(arch="llama", n_layer=30, d_model=576, n_head=9, n_head_kv=3, head_dim=64, d_ff=1536,
                       n_vocab=49152, n_ctx_train=8192, rms_eps=_f32(1e-5), rope_theta=100000.0, rope_dim=64,
                       rope_neox=False, rope_linear_scale=1.0),
           tied=True, qkv_bias=False, qk_norm=False, rope_freqs=False, tokenizer_pre="smollm",
           default_file_type="q4_1"),
)
PRESETS: Mapping[str, Preset] = MappingProxyType({p.name: p for p in _PRESETS})


def preset_spec(name: str, file_type: str | None = None) -> ModelSpec:
    """The ModelSpec of preset `name` in `file_type` (the preset's usual file type if None)."""
    try:
        preset = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None
    return preset.spec(file_type)
