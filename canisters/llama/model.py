"""The Llama / Qwen2 forward pass, in pieces that canisters can hold separately.

A model is three kinds of piece, so that a partition can put each where it fits:
- `Embedding`: token_embd, row lookup (the head canister);
- `LayerStack`: a contiguous range of transformer blocks with their KV cache (a yblock);
- `OutputHead`: output_norm and output (or tied token_embd), possibly a slice of its rows
  (the last stage).
`Llama` joins them for single-process runs. Every op reports its work to a meter.

Conventions follow llama.cpp: GGUF weights are (ne0 = in, ne1 = out), so y = x @ W.T; RoPE
pairs adjacent elements for `llama` (the converter permuted Q/K) and halves for `qwen2`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from canisters.llama import native_ops
from canisters.llama.config import ModelConfig
from canisters.llama.gguf_file import GGUFFile
from canisters.llama.meter import Meter
from canisters.llama.ordered_ops import round_f16
from canisters.llama.weights import Strategy, Weight

STRATEGIES = tuple(s.value for s in Strategy)  # for command-line choices


def load_weight(gguf: GGUFFile, name: str, strategy: str, rows: tuple[int, int] | None = None) -> Weight:
    info = gguf.tensor(name)
    return Weight.load(gguf.tensor_bytes(name), info.ggml_type, info.shape, strategy, rows=rows)


def load_vector(gguf: GGUFFile, name: str) -> np.ndarray | None:
    """A small f32 tensor (norm weight, bias, rope factors), or None if the model has none."""
    if name not in gguf.tensors:
        return None
    info = gguf.tensor(name)
    return Weight.load(gguf.tensor_bytes(name), info.ggml_type, info.shape, "dequantize").dense().reshape(-1)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float, meter: Meter) -> np.ndarray:
    meter.elementwise(4 * x.size)
    return native_ops.rms_norm(x, weight, eps)


# ---------------------------------------------------------------------------------------------
# Rotary position embedding


@dataclass(frozen=True)
class Rope:
    """Precomputed cos/sin per position and frequency pair."""

    cos: np.ndarray  # (n_ctx, rope_dim / 2)
    sin: np.ndarray
    neox: bool
    rope_dim: int

    @classmethod
    def build(cls, config: ModelConfig, n_ctx: int, freq_factors: np.ndarray | None) -> Rope:
        half = config.rope_dim // 2
        inv_freq = config.rope_theta ** (-np.arange(half, dtype=np.float64) * 2.0 / config.rope_dim)
        if freq_factors is not None:  # Llama 3.1 long-context factors (rope_freqs.weight)
            inv_freq = inv_freq / freq_factors[:half].astype(np.float64)
        positions = np.arange(n_ctx, dtype=np.float64) / config.rope_linear_scale
        angles = np.outer(positions, inv_freq)
        return cls(np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32), config.rope_neox,
                   config.rope_dim)

    def apply(self, x: np.ndarray, pos: int, meter: Meter) -> np.ndarray:
        """Rotate x (n_tokens, n_heads, head_dim) for positions pos..pos+n_tokens-1."""
        n = x.shape[0]
        if pos + n > self.cos.shape[0]:
            raise ValueError(f"position {pos + n - 1} is past the context of {self.cos.shape[0]} tokens")
        cos = self.cos[pos : pos + n, None, :]
        sin = self.sin[pos : pos + n, None, :]
        d = self.rope_dim
        if self.neox:
            a, b = x[..., : d // 2], x[..., d // 2 : d]
        else:
            a, b = x[..., 0:d:2], x[..., 1:d:2]
        out = x.copy()
        ra, rb = a * cos - b * sin, a * sin + b * cos
        if self.neox:
            out[..., : d // 2], out[..., d // 2 : d] = ra, rb
        else:
            out[..., 0:d:2], out[..., 1:d:2] = ra, rb
        meter.elementwise(6 * x.shape[0] * x.shape[1] * d // 2)
        return out


# ---------------------------------------------------------------------------------------------
# KV cache


@dataclass
class KVCache:
    """Keys and values of one session for the layers of one stage.

    `length` is the number of committed positions. Writes go to slots at and past `length` and
    `length` moves last, so an interrupted forward leaves the committed cache intact.
    """

    k: np.ndarray  # (n_layers, n_head_kv, n_ctx, head_dim) f32
    v: np.ndarray
    length: int = 0

    @classmethod
    def allocate(cls, n_layers: int, config: ModelConfig, n_ctx: int) -> KVCache:
        shape = (n_layers, config.n_head_kv, n_ctx, config.head_dim)
        return cls(np.zeros(shape, np.float32), np.zeros(shape, np.float32))

    @staticmethod
    def nbytes_for(n_layers: int, config: ModelConfig, n_ctx: int) -> int:
        return 2 * n_layers * config.n_head_kv * n_ctx * config.head_dim * 4

    @property
    def n_ctx(self) -> int:
        return self.k.shape[2]

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


# ---------------------------------------------------------------------------------------------
# Transformer blocks


@dataclass(frozen=True)
class BlockWeights:
    attn_norm: np.ndarray
    wq: Weight
    wk: Weight
    wv: Weight
    wo: Weight
    bq: np.ndarray | None  # qwen2 has q/k/v biases
    bk: np.ndarray | None
    bv: np.ndarray | None
    ffn_norm: np.ndarray
    w_gate: Weight
    w_up: Weight
    w_down: Weight

    @classmethod
    def load(cls, gguf: GGUFFile, layer: int, strategy: str) -> BlockWeights:
        p = f"blk.{layer}."

        def norm(name: str) -> np.ndarray:
            vector = load_vector(gguf, p + name)
            if vector is None:
                raise ValueError(f"{gguf.source}: tensor {p + name} is missing")
            return vector

        return cls(
            attn_norm=norm("attn_norm.weight"),
            wq=load_weight(gguf, p + "attn_q.weight", strategy),
            wk=load_weight(gguf, p + "attn_k.weight", strategy),
            wv=load_weight(gguf, p + "attn_v.weight", strategy),
            wo=load_weight(gguf, p + "attn_output.weight", strategy),
            bq=load_vector(gguf, p + "attn_q.bias"),
            bk=load_vector(gguf, p + "attn_k.bias"),
            bv=load_vector(gguf, p + "attn_v.bias"),
            ffn_norm=norm("ffn_norm.weight"),
            w_gate=load_weight(gguf, p + "ffn_gate.weight", strategy),
            w_up=load_weight(gguf, p + "ffn_up.weight", strategy),
            w_down=load_weight(gguf, p + "ffn_down.weight", strategy),
        )

    @property
    def nbytes_resident(self) -> int:
        matrices = (self.wq, self.wk, self.wv, self.wo, self.w_gate, self.w_up, self.w_down)
        vectors = (self.attn_norm, self.ffn_norm, self.bq, self.bk, self.bv)
        return sum(w.nbytes_resident for w in matrices) + sum(v.nbytes for v in vectors if v is not None)


class LayerStack:
    """Transformer blocks first..last-1 of a model: what one yblock canister runs."""

    def __init__(self, config: ModelConfig, first: int, blocks: list[BlockWeights], rope: Rope):
        self.config = config
        self.first = first
        self.blocks = blocks
        self.rope = rope

    @classmethod
    def load(cls, gguf: GGUFFile, config: ModelConfig, first: int, last: int, strategy: str, n_ctx: int) -> LayerStack:
        rope = Rope.build(config, n_ctx, load_vector(gguf, "rope_freqs.weight"))
        return cls(config, first, [BlockWeights.load(gguf, i, strategy) for i in range(first, last)], rope)

    @property
    def n_ctx(self) -> int:
        return self.rope.cos.shape[0]

    @property
    def nbytes_resident(self) -> int:
        return sum(b.nbytes_resident for b in self.blocks) + self.rope.cos.nbytes + self.rope.sin.nbytes

    def new_cache(self, n_ctx: int) -> KVCache:
        if n_ctx > self.n_ctx:
            raise ValueError(f"a context of {n_ctx} tokens is more than this model was loaded for ({self.n_ctx})")
        return KVCache.allocate(len(self.blocks), self.config, n_ctx)

    def forward(self, x: np.ndarray, cache: KVCache, pos: int, meter: Meter) -> np.ndarray:
        """Run hidden states x (n_tokens, d_model) at positions pos.. through these layers.

        Positions at and past `pos` are (re)written, so a retry from an earlier position works.
        """
        n = x.shape[0]
        if pos > cache.length:
            raise ValueError(f"position {pos} skips past the {cache.length} cached positions")
        if pos + n > cache.n_ctx:
            raise ValueError(f"positions up to {pos + n} do not fit the session's context of {cache.n_ctx}")
        for i, block in enumerate(self.blocks):
            x = self._block(block, x, cache.k[i], cache.v[i], pos, meter)
        cache.length = pos + n  # commit last: see KVCache
        return x

    def _block(self, w: BlockWeights, x: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, pos: int,
               meter: Meter) -> np.ndarray:
        cfg = self.config
        n = x.shape[0]

        # Attention: normalize, project to q/k/v, rotate q and k by position.
        h = rms_norm(x, w.attn_norm, cfg.rms_eps, meter)
        q, k, v = w.wq.matmul(h, meter), w.wk.matmul(h, meter), w.wv.matmul(h, meter)
        if w.bq is not None:
            q, k, v = q + w.bq, k + w.bk, v + w.bv
        q = self.rope.apply(q.reshape(n, cfg.n_head, cfg.head_dim), pos, meter)
        k = self.rope.apply(k.reshape(n, cfg.n_head_kv, cfg.head_dim), pos, meter)

        # Append this chunk's keys and values to the cache (layout: kv_head, position, dim), rounded to
        # f16 as llama.cpp's cache holds them (kept in f32 arrays here, for BLAS).
        k_cache[:, pos : pos + n] = round_f16(k.transpose(1, 0, 2))
        v_cache[:, pos : pos + n] = round_f16(v.reshape(n, cfg.n_head_kv, cfg.head_dim).transpose(1, 0, 2))
        meter.copied(2 * k.nbytes)

        attn = self._attention(q, k_cache, v_cache, pos, meter)
        x = x + w.wo.matmul(attn, meter)

        # Feed-forward: SwiGLU.
        h = rms_norm(x, w.ffn_norm, cfg.rms_eps, meter)
        gate, up = w.w_gate.matmul(h, meter), w.w_up.matmul(h, meter)
        meter.elementwise(5 * gate.size)
        x = x + w.w_down.matmul(native_ops.silu_times(gate, up), meter)
        meter.elementwise(2 * x.size)  # the two residual adds
        return x

    def _attention(self, q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, pos: int, meter: Meter
                   ) -> np.ndarray:
        """Causal grouped-query attention of q (n, n_head, head_dim) over one layer's cache, filled up to
        position pos + n - 1. As llama.cpp computes it: q and the probabilities rounded to f16 for their
        products with the f16 cache (ggml's vec_dot_type for an F16 matrix, canisters/kernels/kernels.h),
        with the sums in the wasm yblock's order (native_ops), so that the two compute the same bits."""
        cfg = self.config
        n, seen = q.shape[0], pos + q.shape[0]
        out = native_ops.attention(q, k_cache, v_cache, pos, cfg.n_head_kv)
        meter.macs("F32", 2 * n * seen * cfg.n_head * cfg.head_dim)
        meter.elementwise(4 * n * cfg.n_head * seen)
        meter.touched(2 * cfg.n_head_kv * seen * cfg.head_dim * 4)
        return out.reshape(n, cfg.q_dim)


# ---------------------------------------------------------------------------------------------
# Embedding and output


class Embedding:
    def __init__(self, weight: Weight):
        self.weight = weight

    @classmethod
    def load(cls, gguf: GGUFFile, strategy: str) -> Embedding:
        return cls(load_weight(gguf, "token_embd.weight", strategy))

    def __call__(self, token_ids: list[int], meter: Meter) -> np.ndarray:
        n_vocab = self.weight.shape[1]
        bad = [t for t in token_ids if not 0 <= t < n_vocab]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside the vocabulary of {n_vocab}")
        x = self.weight.rows(np.asarray(token_ids, dtype=np.int64))
        meter.copied(x.nbytes)
        return x


class OutputHead:
    """Final norm and the vocabulary projection (rows rows[0]..rows[1]-1 of it)."""

    def __init__(self, config: ModelConfig, norm: np.ndarray, weight: Weight, rows: tuple[int, int]):
        self.config = config
        self.norm = norm
        self.weight = weight
        self.rows = rows

    @staticmethod
    def weight_name(gguf: GGUFFile) -> str:
        """Tied embeddings: without output.weight, token_embd is reused."""
        return "output.weight" if "output.weight" in gguf.tensors else "token_embd.weight"

    @classmethod
    def load(cls, gguf: GGUFFile, config: ModelConfig, strategy: str, rows: tuple[int, int] | None = None,
             weight: Weight | None = None) -> OutputHead:
        """`weight` reuses an already loaded matrix (the tied embedding) instead of loading a copy."""
        rows = rows or (0, config.n_vocab)
        norm = load_vector(gguf, "output_norm.weight")
        if norm is None:
            raise ValueError(f"{gguf.source}: tensor output_norm.weight is missing")
        return cls(config, norm, weight or load_weight(gguf, cls.weight_name(gguf), strategy, rows=rows), rows)

    @property
    def nbytes_resident(self) -> int:
        return self.weight.nbytes_resident + self.norm.nbytes

    def __call__(self, x: np.ndarray, meter: Meter) -> np.ndarray:
        """Logits (n_tokens, rows) for hidden states x (n_tokens, d_model)."""
        return self.weight.matmul(rms_norm(x, self.norm, self.config.rms_eps, meter), meter)


class Llama:
    """The whole model in one process: for `icllama logits`, tests, and the unsharded baseline."""

    def __init__(self, config: ModelConfig, embedding: Embedding, layers: LayerStack, head: OutputHead):
        self.config = config
        self.embedding = embedding
        self.layers = layers
        self.head = head

    @classmethod
    def load(cls, gguf: GGUFFile, strategy: str = "quantized", n_ctx: int | None = None) -> Llama:
        strategy = Strategy.of(strategy)
        config = ModelConfig.from_gguf(gguf.fields, gguf.source)
        n_ctx = min(n_ctx or config.n_ctx_train, config.n_ctx_train)
        embedding = Embedding.load(gguf, strategy)
        tied = OutputHead.weight_name(gguf) == "token_embd.weight"
        return cls(
            config,
            embedding,
            LayerStack.load(gguf, config, 0, config.n_layer, strategy, n_ctx),
            OutputHead.load(gguf, config, strategy, weight=embedding.weight if tied else None),
        )

    @property
    def nbytes_resident(self) -> int:
        head = self.head.norm.nbytes if self.head.weight is self.embedding.weight else self.head.nbytes_resident
        return self.embedding.weight.nbytes_resident + self.layers.nbytes_resident + head

    def new_cache(self, n_ctx: int) -> KVCache:
        return self.layers.new_cache(n_ctx)

    def forward(self, token_ids: list[int], cache: KVCache, pos: int, meter: Meter, all_logits: bool = False
                ) -> np.ndarray:
        """Logits for the last token (n_vocab,), or for every token (n_tokens, n_vocab)."""
        x = self.layers.forward(self.embedding(token_ids, meter), cache, pos, meter)
        return self.head(x, meter) if all_logits else self.head(x[-1:], meter)[0]
