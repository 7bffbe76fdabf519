"""Tiny random Llama and Qwen2 GGUF models of any tensor type, written with gguf-py's writer.

They need no download, so unit tests can cover every tensor type and both architectures. The
vocabulary is a small SentencePiece one (specials, the 256 byte-fallback tokens, a few words),
so tokenization and detokenization run too. Generation is deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGUFWriter
from gguf.constants import GGMLQuantizationType, TokenType

from tests.synthetic_tensors import random_tensor_bytes

WORDS = ["▁the", "▁a", "▁cat", "▁dog", "▁sat", "▁on", "▁mat", "▁and", "▁ran", "▁Once", "▁upon", "▁time", "."]


@dataclass(frozen=True)
class SyntheticSpec:
    arch: str = "llama"  # or "qwen2"
    tensor_type: str = "F32"  # type of the 2-D weight matrices
    n_layer: int = 4
    d_model: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    d_ff: int = 96
    n_ctx: int = 256
    tied: bool = False  # no output.weight: reuse token_embd
    rope_freqs: bool = False  # Llama 3.1 style frequency factors
    seed: int = 0

    @property
    def n_vocab(self) -> int:
        return 3 + 256 + len(WORDS)


def _vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + WORDS
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i) for i in range(len(WORDS))]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    types += [TokenType.NORMAL] * len(WORDS)
    return tokens, scores, [int(t) for t in types]


def write_synthetic_model(path: Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    rng = np.random.default_rng(spec.seed)
    qtype = GGMLQuantizationType[spec.tensor_type]
    head_dim = spec.d_model // spec.n_head
    writer = GGUFWriter(str(path), spec.arch)
    writer.add_name(f"synthetic-{spec.arch}-{spec.tensor_type}")
    writer.add_block_count(spec.n_layer)
    writer.add_context_length(spec.n_ctx)
    writer.add_embedding_length(spec.d_model)
    writer.add_feed_forward_length(spec.d_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0 if spec.arch == "llama" else 1000000.0)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(spec.n_vocab)
    tokens, scores, types = _vocab()
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    def matrix(name: str, n_in: int, n_out: int) -> None:
        # Raw bytes as (rows, bytes per row): the writer derives the GGUF shape from the type.
        raw = random_tensor_bytes(qtype, (n_in, n_out), rng).reshape(n_out, -1)
        writer.add_tensor(name, raw, raw_dtype=qtype)

    def vector(name: str, n: int, scale: float = 1.0, offset: float = 0.0) -> None:
        writer.add_tensor(name, (offset + scale * rng.standard_normal(n)).astype(np.float32))

    matrix("token_embd.weight", spec.d_model, spec.n_vocab)
    if spec.rope_freqs:
        writer.add_tensor("rope_freqs.weight", rng.uniform(1.0, 8.0, head_dim // 2).astype(np.float32))
    for i in range(spec.n_layer):
        p = f"blk.{i}."
        vector(p + "attn_norm.weight", spec.d_model, 0.1, 1.0)
        matrix(p + "attn_q.weight", spec.d_model, spec.n_head * head_dim)
        matrix(p + "attn_k.weight", spec.d_model, spec.n_head_kv * head_dim)
        matrix(p + "attn_v.weight", spec.d_model, spec.n_head_kv * head_dim)
        if spec.arch == "qwen2":
            vector(p + "attn_q.bias", spec.n_head * head_dim, 0.1)
            vector(p + "attn_k.bias", spec.n_head_kv * head_dim, 0.1)
            vector(p + "attn_v.bias", spec.n_head_kv * head_dim, 0.1)
        matrix(p + "attn_output.weight", spec.n_head * head_dim, spec.d_model)
        vector(p + "ffn_norm.weight", spec.d_model, 0.1, 1.0)
        matrix(p + "ffn_gate.weight", spec.d_model, spec.d_ff)
        matrix(p + "ffn_up.weight", spec.d_model, spec.d_ff)
        matrix(p + "ffn_down.weight", spec.d_ff, spec.d_model)
    vector("output_norm.weight", spec.d_model, 0.1, 1.0)
    if not spec.tied:
        matrix("output.weight", spec.d_model, spec.n_vocab)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
