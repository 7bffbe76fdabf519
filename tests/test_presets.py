"""Presets: header facts of well-known models, with the tensor types llama-quantize gives them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from canisters.llama.quants import tensor_nbytes
from sharding.model_spec import read_model_spec
from sharding.presets import PRESETS, preset_spec, tensor_type, use_more_bits


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_in_every_file_type(name: str) -> None:
    preset = PRESETS[name]
    for file_type in preset.file_types:
        spec = preset_spec(name, file_type)
        c = spec.config
        assert spec.source == f"preset:{name}:{file_type}"
        assert spec.tied_embeddings == preset.tied
        assert sorted({t.layer for t in spec.tensors.values() if t.layer is not None}) == list(range(c.n_layer))
        assert spec.tensors["token_embd.weight"].shape == (c.d_model, c.n_vocab)
        assert spec.tensors["blk.0.attn_q.weight"].shape == (c.d_model, c.q_dim)
        assert spec.tensors["blk.0.attn_k.weight"].shape == (c.d_model, c.kv_dim)
        assert spec.tensors["blk.0.ffn_down.weight"].shape == (c.d_ff, c.d_model)
        assert all(t.n_bytes == tensor_nbytes(t.type_name, t.shape) for t in spec.tensors.values())
        assert all(t.type_name == "F32" for t in spec.tensors.values() if len(t.shape) == 1)


def test_llama_3_8b_file_sizes_match_the_published_files() -> None:
    # Meta-Llama-3-8B-Instruct GGUFs on Hugging Face (e.g. QuantFactory's): Q4_K_M 4.92 GB,
    # Q8_0 8.54 GB, F16 16.1 GB; the files also hold some MB of tokenizer metadata
    for file_type, size in (("q4_k_m", 4.92e9), ("q8_0", 8.54e9), ("f16", 16.07e9)):
        weights = preset_spec("llama-3-8b", file_type).weight_bytes
        assert size - 0.02e9 < weights < size, (file_type, weights)


def test_q4_k_m_gives_more_bits_where_llama_cpp_does() -> None:
    spec = preset_spec("llama-3-8b", "q4_k_m")
    types = {name: t.type_name for name, t in spec.tensors.items()}
    assert types["token_embd.weight"] == "Q4_K" and types["output.weight"] == "Q6_K"
    more = [i for i in range(32) if use_more_bits(i, 32)]
    assert more == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
    for i in range(32):
        expected = "Q6_K" if i in more else "Q4_K"
        assert types[f"blk.{i}.attn_v.weight"] == types[f"blk.{i}.ffn_down.weight"] == expected
        assert types[f"blk.{i}.attn_q.weight"] == types[f"blk.{i}.ffn_up.weight"] == "Q4_K"


def test_70b_attn_v_gets_q5_k_outside_the_more_bits_layers() -> None:
    types = {n: t.type_name for n, t in preset_spec("llama-3-70b", "q4_k_m").tensors.items()}
    assert types["blk.11.attn_v.weight"] == "Q5_K" and types["blk.12.attn_v.weight"] == "Q6_K"
    assert types["blk.11.ffn_down.weight"] == "Q4_K"


def test_rows_that_are_not_whole_k_blocks_fall_back_as_llama_quantize_does() -> None:
    # Qwen2.5-0.5B is 896 wide (3.5 blocks of 256): Q4_K -> Q5_0, Q6_K -> Q8_0; its tied
    # output/embedding goes to Q8_0; ffn_down rows are 4864 wide (19 blocks) and stay k-quants
    types = {n: t.type_name for n, t in preset_spec("qwen2.5-0.5b", "q4_k_m").tensors.items()}
    assert types["token_embd.weight"] == "Q8_0"
    assert types["blk.4.attn_q.weight"] == types["blk.4.ffn_gate.weight"] == "Q5_0"
    assert types["blk.0.attn_v.weight"] == "Q8_0" and types["blk.4.attn_v.weight"] == "Q5_0"
    assert types["blk.0.ffn_down.weight"] == "Q6_K" and types["blk.4.ffn_down.weight"] == "Q4_K"
    assert types["blk.0.attn_q.bias"] == "F32"


def test_qwen3_has_qk_norms_and_no_biases() -> None:
    spec = preset_spec("qwen3-1.7b", "q4_k_m")
    assert spec.tensors["blk.0.attn_q_norm.weight"].shape == (128,)
    assert "blk.0.attn_q.bias" not in spec.tensors
    counts = Counter(t.type_name for t in spec.tensors.values())
    assert counts["Q6_K"] == 2 * 14 + 1  # attn_v and ffn_down in 14 of 28 layers, and the tied output


def test_llama_3_1_carries_its_rope_factors() -> None:
    spec = preset_spec("llama-3.1-8b", "f16")
    assert spec.tensors["rope_freqs.weight"].shape == (64,) and spec.config.n_ctx_train == 131072
    assert "rope_freqs.weight" not in preset_spec("llama-3-8b", "f16").tensors


def test_a_row_no_type_can_hold_is_refused_as_llama_quantize_refuses_it() -> None:
    with pytest.raises(ValueError, match="rows of 100 elements cannot be stored as Q8_0, whose blocks hold 32"):
        tensor_type("q8_0", "blk.0.attn_q.weight", (100, 64), 0, 4, tied=False)


def test_unknown_presets_and_types_are_named() -> None:
    with pytest.raises(ValueError, match="unknown preset 'llama-2'; presets: llama-3-8b, llama-3.1-8b"):
        preset_spec("llama-2")
    with pytest.raises(ValueError, match="preset smollm2-135m comes in f32, f16, q8_0, q4_1, q4_k_m, not 'q2_k'"):
        preset_spec("smollm2-135m", "q2_k")


@pytest.mark.real_model
def test_smollm2_preset_is_the_real_file(smollm2_path: Path) -> None:
    real = read_model_spec(smollm2_path)
    preset = preset_spec("smollm2-135m", "q4_1")
    assert preset.config == real.config
    assert dict(preset.tensors) == dict(real.tensors)
    assert (preset.tokenizer_model, preset.tokenizer_pre) == (real.tokenizer_model, real.tokenizer_pre)
