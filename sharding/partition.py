"""The planner: a ModelSpec and the IC's limits in, a Plan of canisters out.

Layout (DESIGN.md, "How data flows"): the head holds token_embd, the tokenizer and the chat
template; yblocks hold contiguous layer ranges; the last stage holds output_norm and the output
matrix and samples. A strategy (sharding/strategies.py) groups the layers; the planner checks
every canister against every limit, splits an output matrix that no canister can hold (or run
within one message) by rows across canisters that the head calls at once, chooses the prefill
chunk, and costs a token with the replica's own cost model, fees and round rule.

What a token costs is computed, not simulated: the work of each canister's message is built
from the model's shapes exactly as canisters/llama/model.py reports it to its meter (a test
checks the two agree), then turned into instructions, cycles and rounds by replica/cost_model,
replica/fees and replica/subnet. Decode figures are for the last token of a full context (the
worst case, which is also what must fit the per-message limit).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from canisters.llama.model import KVCache
from canisters.llama.sampler import SamplingParams, sample
from canisters.llama.weights import SCRATCH_BYTES
from canisters.yblock.shard_store import SHA256_INSTRUCTIONS_PER_BYTE
from cdk.candid import Interface, encode, parse_did
from cdk.meter import Work
from replica.config import NetworkConfig
from replica.cost_model import (
    Kernel,
    UnsupportedKernelType,
    instructions_per_mac,
    message_overhead_instructions,
    quantize_instructions,
    work_instructions,
)
from replica.fees import FEE_SCHEDULES, USD_PER_TRILLION_CYCLES
from replica.limits import DEFAULT_LIMITS, GiB, Limits
from replica.subnet import chain_rounds, rounds_for
from sharding.model_spec import ModelSpec, TensorSpec
from sharding.strategies import NoPartition, Packing, check_groups, strategy_named

# yllama.oc's CONTEXT (src/ydriver/src/main.rs): the KV length its Llama 3 deployment was sized for.
DEFAULT_CONTEXT = 2048
TOKENS_AVERAGED = 64  # decode latency is averaged over this many tokens: small models fit several per round
SECONDS_PER_MONTH = 30 * 24 * 3600
WEIGHT_FORMATS = ("gguf", "f32", "f16")
HEAPS = ("wasm32", "wasm64")
SUBNET_SIZES = (13, 34)  # application and fiduciary subnets (DESIGN.md fee table)
YBLOCK_DID = Path(__file__).resolve().parents[1] / "canisters" / "yblock" / "yblock.did"
UPLOAD_METHOD = "upload_chunk"


class PlanError(ValueError):
    """The request cannot be planned; the message names the limit that fails and what to change."""


@dataclass(frozen=True)
class Constraints:
    shard_bytes: int = 2 * GiB  # on-chain weight bytes one canister may hold
    shards: int | None = None  # exactly this many canisters besides the head
    weight_format: str = "gguf"  # on-chain weights: the file's own types, or f32, or f16
    kernel: str = "wasm"  # matmul kernels: "wasm" (ours, measured), "ggml" (measured), "simd" (ggml, fitted), "scalar"
    heap: str = "wasm32"  # 4 GiB or 6 GiB of heap
    context: int | None = None  # KV positions per session; None: min(DEFAULT_CONTEXT, trained context)
    fees: str = "current"  # fee schedule: "current" or "2024"
    subnet_nodes: int = 13
    prefill_chunk: int | None = None  # at most this many prompt tokens per forward message
    limits: Limits = DEFAULT_LIMITS


@dataclass(frozen=True)
class MessageCost:
    """One canister's part of a generated token (decode) or of a prefill chunk."""

    instructions: int
    cycles: int  # execution fees and the fees of the calls it makes
    rounds: int  # rounds its executions occupy (DTS: one 2B-instruction slice per round)
    request_bytes: int  # Candid bytes of the forward request it receives (0 for the head)
    reply_bytes: int  # Candid bytes of its reply (0 for the head)


@dataclass(frozen=True)
class Shard:
    index: int
    name: str  # "head", "yblock_0", ...
    role: str  # "head" | "layers" | "output"
    stage: int  # order of calls in a token: 0 is the head; row slices of the output share a stage
    layers: tuple[int, int] | None  # [first, last)
    tensors: tuple[str, ...]
    output_rows: tuple[int, int] | None  # rows of output.weight (token_embd when tied) it holds
    samples: bool
    file_bytes: int  # bytes of its tensors as the model file stores them: what is uploaded
    weight_bytes: int  # its weights in the on-chain format
    kv_bytes_per_session: int
    heap_bytes: int  # weights, one session's KV cache, and working buffers of a prefill chunk
    sessions: int  # sessions whose KV caches fit the heap beside the weights
    decode: MessageCost
    prefill: MessageCost


@dataclass(frozen=True)
class Totals:
    canisters: int
    stages: int  # sequential calls per token
    instructions_per_token: int
    cycles_per_token: int
    tc_per_token: float
    usd_per_token: float
    rounds_per_token: float  # the virtual clock's advance per generated token, averaged over a generation
    seconds_per_token: float
    messages_per_token: int  # inter-canister requests and responses
    activation_bytes_per_message: int  # a one-token forward request: d_model x 4 plus Candid framing
    prefill_chunk: int  # prompt tokens per forward message
    prefill_rounds_per_chunk: int  # the clock's advance for one prefill chunk
    prefill_cycles_per_chunk: int
    upload_bytes: int
    upload_messages: int  # ingress update calls of at most the ingress message size
    upload_cycles: int
    storage_bytes: int  # stable memory (the uploaded shards) and heap (weights, one session's KV)
    storage_cycles_per_month: int
    creation_cycles: int


@dataclass(frozen=True)
class Plan:
    model: str
    source: str
    strategy: str
    constraints: Constraints
    context: int
    d_model: int
    n_layer: int
    n_vocab: int
    shards: tuple[Shard, ...]
    totals: Totals

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def digest(self) -> str:
        """sha256 of the plan's canonical JSON: equal plans, equal digests."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def make_plan(spec: ModelSpec, constraints: Constraints = Constraints(), strategy: str = "balanced-bytes") -> Plan:
    """The canisters for `spec` under `constraints`, grouped by `strategy`; raises PlanError."""
    costing = _Costing(spec, constraints)
    try:
        chosen = strategy_named(strategy)
        layers = [_Piece(i) for i in range(spec.config.n_layer)]
        for reason in [costing.head_violation()] + [costing.violation([p]) for p in layers]:
            if reason:
                raise PlanError(reason)
        output_slices = costing.output_slices()
        pieces = layers + ([_Piece(None, (0, spec.config.n_vocab))] if output_slices is None else [])
        groups = chosen.partition(costing.packing(pieces, output_slices))
        check_groups(groups, len(pieces))
    except NoPartition as e:
        raise PlanError(str(e)) from None
    canisters = [tuple(pieces[a:b]) for a, b in groups] + [(_Piece(None, rows),) for rows in output_slices or ()]
    return costing.plan(chosen.name, canisters, len(output_slices or ()), costing.prefill_chunk(canisters))


def forward_work(spec: ModelSpec, plan: Plan, shard: Shard, n_tokens: int = 1) -> Work:
    """The work `shard`'s forward message of `n_tokens` reports to its meter (at the end of the
    plan's context), as the planner counts it: what the yblock canister running canisters/llama
    should measure."""
    if shard.role == "head":
        raise ValueError("the head runs no forward message; its work per token is in shard.decode")
    costing = _Costing(spec, plan.constraints)
    pieces = [_Piece(i) for i in range(*shard.layers)] if shard.layers else []
    if shard.output_rows:
        pieces.append(_Piece(None, shard.output_rows))
    return costing.message_work(pieces, n_tokens, shard.samples)


@dataclass(frozen=True)
class _Piece:
    """What strategies place: one transformer layer, or (all or some rows of) the output."""

    layer: int | None
    rows: tuple[int, int] | None = None  # set for the output

    @property
    def label(self) -> str:
        return f"layer {self.layer}" if self.layer is not None else "the output"


def _label(pieces: Sequence[_Piece]) -> str:
    layers = [p.layer for p in pieces if p.layer is not None]
    out = [p for p in pieces if p.layer is None]
    if len(pieces) == 1:
        piece = pieces[0]
        if piece.layer is None and piece.rows is not None:
            return f"rows {piece.rows[0]}..{piece.rows[1]} of the output"
        return f"{piece.label} alone"
    text = f"layers {layers[0]}..{layers[-1]}" if layers else ""
    return text + (" with the output" if out else "")


class _Costing:
    """The model, the limits and the fees, and what any canister of a plan would hold and cost."""

    def __init__(self, spec: ModelSpec, constraints: Constraints):
        c, limits = constraints, constraints.limits
        choices = (("--weight-format", c.weight_format, WEIGHT_FORMATS),
                   ("--kernel", c.kernel, [k.value for k in Kernel]), ("--heap", c.heap, HEAPS),
                   ("--fees", c.fees, list(FEE_SCHEDULES)), ("--nodes", c.subnet_nodes, SUBNET_SIZES))
        for flag, value, allowed in choices:
            if value not in allowed:
                raise PlanError(f"{flag} {value} is not one of {', '.join(map(str, allowed))}")
        self.heap_limit = heap_limit_bytes(c)
        if c.shard_bytes <= 0 or c.shard_bytes > self.heap_limit:
            raise PlanError(f"--shard-bytes {c.shard_bytes} must be positive and at most the {c.heap} heap of "
                            f"{format_bytes(self.heap_limit)}; use --heap wasm64 for up to "
                            f"{format_bytes(limits.wasm64_heap_bytes)}")
        if c.shards is not None and c.shards < 1:
            raise PlanError(f"--shards {c.shards} must be at least 1 (the canisters besides the head)")
        n_ctx = spec.config.n_ctx_train
        self.context = c.context if c.context is not None else min(DEFAULT_CONTEXT, n_ctx)
        if not 1 <= self.context <= n_ctx:
            raise PlanError(f"--context {self.context} must be between 1 and the {n_ctx} positions {spec.name} was "
                            "trained for")
        if c.prefill_chunk is not None and c.prefill_chunk < 1:
            raise PlanError(f"--prefill-chunk {c.prefill_chunk} must be at least 1 token")
        missing = [name for name in ("token_embd.weight", "output_norm.weight") if name not in spec.tensors]
        if missing:
            raise PlanError(f"{spec.source} has no {' or '.join(missing)}; it is not a complete model")
        self.spec, self.config, self.constraints = spec, spec.config, c
        self.kernel, self.fees = Kernel(c.kernel), FEE_SCHEDULES[c.fees]
        self.by_layer: dict[int, list[TensorSpec]] = {}
        for t in spec.tensors.values():
            if t.layer is not None:
                self.by_layer.setdefault(t.layer, []).append(t)
        self.piece_work = functools.cache(self._piece_work)  # per piece and message size
        for t in spec.tensors.values():  # a kernel for every matrix's type, or a clear refusal now
            if len(t.shape) == 2:
                try:
                    instructions_per_mac(self.kernel_type(t), self.kernel)
                except UnsupportedKernelType as e:
                    raise PlanError(f"{t.name}: {e}") from None

    # --- what canisters hold ---------------------------------------------------------------------
    @property
    def output_name(self) -> str:
        return "token_embd.weight" if self.spec.tied_embeddings else "output.weight"

    def onchain_bytes(self, tensor: TensorSpec, rows: tuple[int, int] | None = None) -> int:
        """Bytes of `tensor` (or of some of its rows) in the on-chain format. Vectors are always
        held as f32 (the model code decodes them at load)."""
        fmt = self.constraints.weight_format
        if len(tensor.shape) == 1:
            return 4 * tensor.shape[0]
        if fmt == "gguf":
            return self.file_bytes(tensor, rows)
        held = rows[1] - rows[0] if rows else tensor.shape[1]
        return tensor.shape[0] * held * (4 if fmt == "f32" else 2)

    def file_bytes(self, tensor: TensorSpec, rows: tuple[int, int] | None = None) -> int:
        """Bytes of `tensor` (or of some of its rows) as the model file stores it."""
        return tensor.n_bytes // tensor.shape[1] * (rows[1] - rows[0]) if rows else tensor.n_bytes

    def kernel_type(self, tensor: TensorSpec) -> str:
        """The weight type matmuls report to the meter: the stored type when weights stay quantized."""
        return {"gguf": tensor.type_name, "f32": "F32", "f16": "F16"}[self.constraints.weight_format]

    def tensors_of(self, pieces: Sequence[_Piece]) -> list[tuple[TensorSpec, tuple[int, int] | None]]:
        out: list[tuple[TensorSpec, tuple[int, int] | None]] = []
        tensors = self.spec.tensors
        if any(p.layer is not None for p in pieces) and "rope_freqs.weight" in tensors:
            out.append((tensors["rope_freqs.weight"], None))
        for p in pieces:
            if p.layer is not None:
                out += [(t, None) for t in self.by_layer[p.layer]]
            else:
                rows = None if p.rows == (0, self.config.n_vocab) else p.rows
                out += [(tensors["output_norm.weight"], None), (tensors[self.output_name], rows)]
        return out

    def weight_bytes(self, pieces: Sequence[_Piece]) -> int:
        return sum(self.onchain_bytes(t, rows) for t, rows in self.tensors_of(pieces))

    def kv_bytes(self, pieces: Sequence[_Piece]) -> int:
        n_layers = sum(1 for p in pieces if p.layer is not None)
        return KVCache.nbytes_for(n_layers, self.config, self.context)

    def working_bytes(self, pieces: Sequence[_Piece], n_tokens: int) -> int:
        """Buffers beside the weights and the KV cache while a message of `n_tokens` runs: the rope
        tables, one block's activations (numpy temporaries of model.py) and attention scores, the
        logits, and the quantized strategy's dequantization scratch. An estimate, stated as such."""
        c = self.config
        total = 0
        if any(p.layer is not None for p in pieces):
            total += self.context * c.rope_dim * 4  # cos and sin, rope_dim / 2 each
            total += 4 * n_tokens * (3 * c.d_model + c.q_dim + 2 * c.kv_dim + 3 * c.d_ff)
            total += 2 * 4 * c.n_head * n_tokens * self.context  # scores and their exponentials
        rows = [p.rows for p in pieces if p.rows is not None]
        if rows:
            total += 4 * (rows[0][1] - rows[0][0]) + 4 * c.d_model
        if self.constraints.weight_format == "gguf":
            total += max(SCRATCH_BYTES, 4 * max(c.d_model, c.d_ff, c.q_dim))
        return total

    def heap_bytes(self, pieces: Sequence[_Piece], n_tokens: int) -> int:
        return self.weight_bytes(pieces) + self.kv_bytes(pieces) + self.working_bytes(pieces, n_tokens)

    # --- the work of one message, as canisters/llama/model.py meters it -------------------------
    def layer_work(self, layer: int, n_tokens: int, pos: int, meter: Work) -> None:
        """LayerStack._block for `n_tokens` at positions pos.. (the cache then holds pos + n_tokens)."""
        c, n, keys = self.config, n_tokens, pos + n_tokens
        p = f"blk.{layer}."
        tensors = self.spec.tensors

        def matmul(name: str) -> None:
            t = tensors[p + name]
            meter.macs(self.kernel_type(t), n * t.shape[0] * t.shape[1])
            meter.touched(self.onchain_bytes(t))

        meter.elementwise(4 * n * c.d_model)  # attention rms_norm
        for name in ("attn_q.weight", "attn_k.weight", "attn_v.weight"):
            matmul(name)
        if p + "attn_q_norm.weight" in tensors:  # qwen3: RMS norm of each q and k head
            meter.elementwise(4 * n * (c.q_dim + c.kv_dim))
        meter.elementwise(6 * n * c.n_head * c.rope_dim // 2)  # rope on q
        meter.elementwise(6 * n * c.n_head_kv * c.rope_dim // 2)  # rope on k
        meter.copied(2 * n * c.kv_dim * 4)  # k and v into the cache
        meter.macs("F32", 2 * n * keys * c.n_head * c.head_dim)  # q.k and weights.v
        meter.elementwise(4 * c.n_head * n * keys)  # softmax
        meter.touched(2 * c.n_head_kv * keys * c.head_dim * 4)
        matmul("attn_output.weight")
        meter.elementwise(4 * n * c.d_model)  # ffn rms_norm
        matmul("ffn_gate.weight")
        matmul("ffn_up.weight")
        meter.elementwise(5 * n * c.d_ff)  # silu and the gate product
        matmul("ffn_down.weight")
        meter.elementwise(2 * n * c.d_model)  # the two residual adds

    def output_work(self, rows: tuple[int, int], n_tokens: int, meter: Work) -> None:
        """OutputHead for `n_tokens` over output rows [start, stop)."""
        t = self.spec.tensors[self.output_name]
        meter.elementwise(4 * n_tokens * self.config.d_model)  # rms_norm
        meter.macs(self.kernel_type(t), n_tokens * t.shape[0] * (rows[1] - rows[0]))
        meter.touched(self.onchain_bytes(t, rows))

    def _piece_work(self, piece: _Piece, n_tokens: int) -> Work:
        work = Work()
        if piece.layer is not None:
            self.layer_work(piece.layer, n_tokens, self.context - n_tokens, work)
        elif piece.rows is not None:
            self.output_work(piece.rows, 1, work)
        return work

    def message_work(self, pieces: Sequence[_Piece], n_tokens: int, samples: bool) -> Work:
        """A forward message of `n_tokens` ending at the last position of the context. The output
        (and sampling) only runs for the last token: a prompt chunk needs one token's logits."""
        work = Work()
        for p in pieces:
            work.add(self.piece_work(p, n_tokens))
        if samples:
            work.add(_sampling_work(self.config.n_vocab))
        return work

    # --- Candid messages, measured with cdk.candid and yblock.did --------------------------------
    def request_bytes(self, n_tokens: int, samples: bool) -> int:
        return _forward_request_bytes(n_tokens * self.config.d_model, samples)

    def reply_bytes(self, floats: int, token: bool) -> int:
        return _forward_reply_bytes(floats, token)

    def upload_chunk_payload(self) -> int:
        """Shard bytes per upload_chunk ingress message: the ingress limit less the method name and
        the Candid framing of (name, offset, blob) (names are at most 255 bytes)."""
        framing = len(encode(_yblock_interface().methods[UPLOAD_METHOD].args, ["x" * 255, 2**63, b""]))
        return self.constraints.limits.ingress_message_bytes - framing - len(UPLOAD_METHOD)

    # --- limits ----------------------------------------------------------------------------------
    def head_violation(self) -> str | None:
        """The head keeps token_embd as the file stores it, whatever the weight format: it only looks
        rows up (one per token), so decoding a row per lookup costs nothing that matters."""
        weights = self.spec.tensors["token_embd.weight"].n_bytes
        limit = min(self.constraints.shard_bytes, self.heap_limit)
        if weights > limit:
            return (f"the head's token_embd.weight needs {format_bytes(weights)}; the shard limit is "
                    f"{format_bytes(limit)}: use a smaller quantization of the model, or a larger --shard-bytes (with "
                    "--heap wasm64 up to 6 GiB)")
        return None

    def violation(self, pieces: Sequence[_Piece], n_tokens: int = 1) -> str | None:
        """Why `pieces` cannot share one canister for messages of `n_tokens`, or None if they can."""
        c = self.constraints
        what = _label(pieces)
        weights = self.weight_bytes(pieces)
        if weights > c.shard_bytes:
            return (f"{what} needs {format_bytes(weights)} of {self._format_text()} weights; the shard limit is "
                    f"{format_bytes(c.shard_bytes)}: use {self._smaller_format()}, or a larger --shard-bytes (with "
                    f"--heap wasm64 up to {format_bytes(c.limits.wasm64_heap_bytes)})")
        kv, working = self.kv_bytes(pieces), self.working_bytes(pieces, n_tokens)
        if weights + kv + working > self.heap_limit:
            return (f"{what} needs {format_bytes(weights + kv + working)} of heap ({format_bytes(weights)} of "
                    f"weights, a KV cache of {format_bytes(kv)} for one session at context {self.context}, "
                    f"{format_bytes(working)} of working buffers); the {c.heap} heap holds "
                    f"{format_bytes(self.heap_limit)}: use --heap wasm64, a smaller --context, or "
                    f"{self._smaller_format()}")
        samples = self._samples(pieces)
        instructions = self.instructions(pieces, n_tokens, samples)
        if instructions > c.limits.instructions_per_update:
            last, tokens = self.context - 1, plural(n_tokens, "token")
            position = f"position {last}" if n_tokens == 1 else f"{tokens} up to position {last}"
            return (f"{what} needs {instructions / 1e9:.1f}B instructions per message ({position}, {c.kernel} "
                    f"kernels); an update message may run {c.limits.instructions_per_update / 1e9:.0f}B: "
                    f"use {'--kernel simd, ' if c.kernel == 'scalar' else ''}a smaller --context, or more shards")
        request = self.request_bytes(n_tokens, samples)
        if request > c.limits.same_subnet_request_bytes:
            return (f"a forward request of {plural(n_tokens, 'token')} to {what} is {format_bytes(request)}; a call "
                    f"within a subnet carries at most {format_bytes(c.limits.same_subnet_request_bytes)}: use a "
                    "smaller --prefill-chunk")
        reply = self._reply_bytes(pieces, n_tokens, samples)
        if reply > c.limits.reply_bytes:
            return (f"the reply of {what} to {plural(n_tokens, 'token')} is {format_bytes(reply)}; a reply carries "
                    f"at most {format_bytes(c.limits.reply_bytes)}: use a smaller --prefill-chunk (or more output "
                    "slices)")
        return None

    def instructions(self, pieces: Sequence[_Piece], n_tokens: int, samples: bool) -> int:
        work = self.message_work(pieces, n_tokens, samples)
        overhead = message_overhead_instructions(self.request_bytes(n_tokens, samples))
        return work_instructions(work, self.kernel) + self.quantize_instructions(pieces, n_tokens) + overhead

    def quantize_instructions(self, pieces: Sequence[_Piece], n_tokens: int) -> int:
        """The wasm kernels quantize each matmul's input first (ggml's vec_dot_type): per layer h
        (for q, k, v), the attention (o), h (gate, up) and the ffn (down); the output's input once."""
        c = self.config
        per_layer = 2 * c.d_model + c.q_dim + c.d_ff
        elements = sum(n_tokens * per_layer if p.layer is not None else c.d_model for p in pieces)
        return quantize_instructions(self.kernel, elements)

    def _samples(self, pieces: Sequence[_Piece]) -> bool:
        """A canister with the whole output samples; row slices return logits and the head samples."""
        return any(p.layer is None and p.rows == (0, self.config.n_vocab) for p in pieces)

    def _reply_bytes(self, pieces: Sequence[_Piece], n_tokens: int, samples: bool) -> int:
        rows = [p.rows for p in pieces if p.rows is not None]
        if samples:
            return self.reply_bytes(0, token=True)
        if rows:  # a row slice returns its logits for the last token
            return self.reply_bytes(rows[0][1] - rows[0][0], token=False)
        return self.reply_bytes(n_tokens * self.config.d_model, token=False)

    def _format_text(self) -> str:
        fmt = self.constraints.weight_format
        return "quantized (gguf)" if fmt == "gguf" else fmt

    def _smaller_format(self) -> str:
        return {"f32": "--weight-format gguf or f16", "f16": "--weight-format gguf"}.get(
            self.constraints.weight_format, "a smaller quantization of the model")

    # --- layout --------------------------------------------------------------------------------
    def output_slices(self) -> tuple[tuple[int, int], ...] | None:
        """None if the whole output fits one canister; otherwise the fewest equal row slices that each
        fit (bytes, heap, instructions and the logits reply), which the head calls at once."""
        n_vocab = self.config.n_vocab
        whole = self.violation([_Piece(None, (0, n_vocab))])
        if whole is None:
            return None
        if self.violation([_Piece(None, (0, 1))]) is not None:
            raise PlanError(whole)  # not even one row fits: slicing cannot help
        for m in range(2, n_vocab + 1):
            bounds = [n_vocab * i // m for i in range(m + 1)]
            slices = tuple(zip(bounds[:-1], bounds[1:], strict=True))
            if self.violation([_Piece(None, slices[0])]) is None:  # the first slice is the largest
                return slices
        raise AssertionError("one-row slices fit, so some slicing does")

    def packing(self, pieces: list[_Piece], output_slices: tuple[tuple[int, int], ...] | None) -> Packing:
        shards = self.constraints.shards
        if shards is not None and output_slices is not None:
            shards -= len(output_slices)
            if shards < 1:
                raise PlanError(f"--shards {self.constraints.shards} leaves no canister for the layers: the output "
                                f"alone needs {len(output_slices)} row slices; use --shards "
                                f"{len(output_slices) + 1} or more")

        @functools.cache
        def fits(start: int, stop: int) -> bool:
            return self.violation(pieces[start:stop]) is None

        @functools.cache
        def instructions(start: int, stop: int) -> int:
            group = pieces[start:stop]
            return self.instructions(group, 1, self._samples(group))

        def rounds(start: int, stop: int) -> int:
            return rounds_for(instructions(start, stop), self.slice)

        return Packing(tuple(p.label for p in pieces), tuple(self.weight_bytes([p]) for p in pieces), fits, rounds,
                       instructions, shards)

    def prefill_chunk(self, canisters: Sequence[Sequence[_Piece]]) -> int:
        """The most prompt tokens per forward message that every canister can take (at the end of a
        full context, the costliest chunk), capped by --prefill-chunk."""
        cap = min(self.constraints.prefill_chunk or self.context, self.context)
        for pieces in canisters:
            if self.violation(pieces, cap) is None:
                continue
            low, high = 1, cap  # violation(low) is None, violation(high) is not
            while high - low > 1:
                mid = (low + high) // 2
                low, high = (mid, high) if self.violation(pieces, mid) is None else (low, mid)
            cap = low
        return cap

    @property
    def slice(self) -> int:
        return self.constraints.limits.instructions_per_slice

    # --- figures -------------------------------------------------------------------------------
    def plan(self, strategy: str, canisters: list[tuple[_Piece, ...]], n_slices: int, chunk: int) -> Plan:
        stages = _stages(len(canisters), n_slices)
        decode = self._pass(canisters, stages, 1)
        prefill = self._pass(canisters, stages, chunk)
        embd = self.spec.tensors["token_embd.weight"]
        shards = [Shard(0, "head", "head", 0, None, (embd.name,), None, n_slices > 0, embd.n_bytes, embd.n_bytes, 0,
                        embd.n_bytes, 0, decode.head, prefill.head)]
        for i, pieces in enumerate(canisters):
            stage = next(s for s, members in enumerate(stages, start=1) if i in members)
            shards.append(self._shard(i + 1, pieces, stage, chunk, decode.canisters[i], prefill.canisters[i]))
        nodes = self.constraints.subnet_nodes
        upload_messages, upload_cycles = self._upload(shards)
        storage = sum(s.file_bytes + s.weight_bytes + s.kv_bytes_per_session for s in shards)
        cycles = sum(s.decode.cycles for s in shards)
        totals = Totals(
            canisters=len(shards),
            stages=len(stages),
            instructions_per_token=sum(s.decode.instructions for s in shards),
            cycles_per_token=cycles,
            tc_per_token=cycles / 1e12,
            usd_per_token=cycles / 1e12 * USD_PER_TRILLION_CYCLES,
            rounds_per_token=decode.rounds,
            seconds_per_token=decode.rounds * self.round_seconds,
            messages_per_token=2 * len(canisters),
            activation_bytes_per_message=self.request_bytes(1, samples=False),
            prefill_chunk=chunk,
            prefill_rounds_per_chunk=round(prefill.rounds),
            prefill_cycles_per_chunk=sum(s.prefill.cycles for s in shards),
            upload_bytes=sum(s.file_bytes for s in shards),
            upload_messages=upload_messages,
            upload_cycles=upload_cycles,
            storage_bytes=storage,
            storage_cycles_per_month=self.fees.storage_cycles(storage, SECONDS_PER_MONTH * 10**9, nodes),
            creation_cycles=self.fees.creation_cycles(nodes) * len(shards),
        )
        c = self.config
        return Plan(self.spec.name, self.spec.source, strategy, self.constraints, self.context, c.d_model,
                    c.n_layer, c.n_vocab, tuple(shards), totals)

    @property
    def round_seconds(self) -> float:
        return NetworkConfig().round_duration_ns / 1e9

    def _shard(self, index: int, pieces: Sequence[_Piece], stage: int, chunk: int, decode: MessageCost,
               prefill: MessageCost) -> Shard:
        layers = [p.layer for p in pieces if p.layer is not None]
        held = self.tensors_of(pieces)
        kv = self.kv_bytes(pieces)
        heap = self.heap_bytes(pieces, chunk)
        return Shard(
            index=index, name=f"yblock_{index - 1}", role="layers" if layers else "output", stage=stage,
            layers=(layers[0], layers[-1] + 1) if layers else None,
            tensors=tuple(t.name for t, _ in held),
            output_rows=next((p.rows for p in pieces if p.rows is not None), None),
            samples=self._samples(pieces),
            file_bytes=sum(self.file_bytes(t, r) for t, r in held),
            weight_bytes=self.weight_bytes(pieces),
            kv_bytes_per_session=kv,
            heap_bytes=heap,
            sessions=(self.heap_limit - heap + kv) // kv if kv else 0,
            decode=decode,
            prefill=prefill,
        )

    def _pass(self, canisters: Sequence[Sequence[_Piece]], stages: list[list[int]], n_tokens: int) -> _Pass:
        """One forward pass of `n_tokens` through the pipeline, in the replica's terms: the head
        calls each stage in turn and handles its responses; the clock advances as
        replica.subnet.chain_rounds says for that chain of executions (DTS slices, same-round
        delivery, the round budget). A stage whose output rows are sliced runs its canisters at
        once, so it costs the chain its longest member."""
        nodes = self.constraints.subnet_nodes
        costs = []
        for pieces in canisters:
            samples = self._samples(pieces)
            instructions = self.instructions(pieces, n_tokens, samples)
            costs.append(MessageCost(instructions, self.fees.execution_cycles(instructions, nodes),
                                     rounds_for(instructions, self.slice), self.request_bytes(n_tokens, samples),
                                     self._reply_bytes(pieces, n_tokens, samples)))
        # The head runs one execution per response. The one after the last stage samples (when the
        # output is sliced), embeds the next token and sends the first stage's requests; the others
        # send the next stage's.
        head_instructions = head_cycles = head_rounds = 0
        chain: list[int] = []
        for s, members in enumerate(stages):
            prepare = Work()
            prepare.copied(sum(costs[i].request_bytes for i in stages[(s + 1) % len(stages)]))
            if s == len(stages) - 1:
                prepare.copied(4 * n_tokens * self.config.d_model)  # the embedding rows
                if len(members) > 1:
                    prepare.add(_sampling_work(self.config.n_vocab))
            executions = [message_overhead_instructions(costs[i].reply_bytes) for i in members]
            executions[-1] += work_instructions(prepare, self.kernel)
            head_instructions += sum(executions)
            head_cycles += sum(self.fees.execution_cycles(x, nodes) for x in executions)
            head_cycles += sum(self.fees.call_cycles(costs[i].request_bytes, nodes)
                               + self.fees.response_byte_cycles(costs[i].reply_bytes, nodes) for i in members)
            head_rounds += rounds_for(sum(executions), self.slice)
            chain += [max(costs[i].instructions for i in members), sum(executions)]
        # Generating repeats the chain token after token; the average advance is what a user sees.
        repeats = 1 if n_tokens > 1 else TOKENS_AVERAGED
        advance = (chain_rounds(chain * repeats, self.constraints.limits) - 1) / repeats
        return _Pass(MessageCost(head_instructions, head_cycles, head_rounds, 0, 0), costs, advance)

    def _upload(self, shards: Sequence[Shard]) -> tuple[int, int]:
        """Messages and cycles to upload every shard file in upload_chunk ingress calls: the ingress
        fees, and each chunk's execution (a copy into stable memory and the incremental sha256 of
        canisters/yblock/shard_store.py)."""
        payload, nodes = self.upload_chunk_payload(), self.constraints.subnet_nodes
        framing = self.constraints.limits.ingress_message_bytes - payload - len(UPLOAD_METHOD)
        messages = cycles = 0
        for shard in shards:
            full, rest = divmod(shard.file_bytes, payload)
            for size, count in ((payload, full), (rest, 1 if rest else 0)):
                work = Work()
                work.copied(size)
                work.instructions(SHA256_INSTRUCTIONS_PER_BYTE * size)
                instructions = work_instructions(work, self.kernel) + message_overhead_instructions(size + framing)
                cycles += count * (self.fees.ingress_cycles(size + framing + len(UPLOAD_METHOD), nodes)
                                   + self.fees.execution_cycles(instructions, nodes))
                messages += count
        return messages, cycles


@dataclass(frozen=True)
class _Pass:
    head: MessageCost
    canisters: list[MessageCost]
    rounds: float  # the clock's advance: 0 when the whole pass fits in the round it starts in


def _stages(n_canisters: int, n_slices: int) -> list[list[int]]:
    """Canister indices by stage: each canister its own stage, except the output's row slices
    (the last n_slices canisters), which the head calls at once."""
    single = n_canisters - n_slices
    return [[i] for i in range(single)] + ([list(range(single, n_canisters))] if n_slices else [])


@functools.cache
def _sampling_work(n_vocab: int) -> Work:
    """The sampler's own metering, with llama.cpp's default parameters, over a vocabulary."""
    work = Work()
    logits = np.linspace(-8.0, 8.0, n_vocab, dtype=np.float32)  # distinct values: no ties to break
    sample(logits, SamplingParams(), 0, (), meter=work)
    return work


@functools.cache
def _yblock_interface() -> Interface:
    return parse_did(YBLOCK_DID.read_text())


@functools.cache
def _forward_request_bytes(floats: int, samples: bool) -> int:
    """Candid bytes of a ForwardRequest carrying `floats` activations, with the sampling request
    (llama.cpp's default parameters and a full repeat-penalty window) when it samples."""
    params = SamplingParams()
    sampling = {"temperature": params.temperature, "top_k": params.top_k, "top_p": params.top_p,
                "min_p": params.min_p, "repeat_penalty": params.repeat_penalty,
                "repeat_last_n": params.repeat_last_n, "seed": params.seed, "step": 0,
                "recent": [0] * params.repeat_last_n}
    request = {"session": 0, "pos": 0, "activations": bytes(4 * floats), "n_tokens": 1,
               "sample": sampling if samples else None}
    return len(encode(_yblock_interface().methods["forward"].args, [request]))


@functools.cache
def _forward_reply_bytes(floats: int, token: bool) -> int:
    reply = {"ok": {"activations": bytes(4 * floats), "token": 0 if token else None, "instructions": 0}}
    return len(encode(_yblock_interface().methods["forward"].rets, [reply]))


def heap_limit_bytes(constraints: Constraints) -> int:
    limits = constraints.limits
    return limits.wasm32_heap_bytes if constraints.heap == "wasm32" else limits.wasm64_heap_bytes


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def format_bytes(n_bytes: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.2f} {unit}"
    return f"{n_bytes} B"
