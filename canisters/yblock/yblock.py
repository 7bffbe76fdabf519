"""The yblock canister: one shard of a model, run for the head canister.

It holds a contiguous range of transformer layers (`LayerStack`) with a KV cache per session, and
the last stage also holds the final norm and the output matrix (`OutputHead`), possibly a slice of
its rows. `forward` takes little-endian f32 activations from the head and replies with the next
activations, or, on the output stage, with the sampled token id (or the slice's candidates).

Sessions' KV caches are counted against the heap: a session that does not fit is refused with a
"full" error before anything is allocated. A trap in `forward` leaves the session's committed
length unchanged (LayerStack.forward moves it last), so the head can retry the same position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from canisters.llama.config import ModelConfig
from canisters.llama.gguf_file import GGUFError, GGUFFile, read_gguf
from canisters.llama.model import KVCache, LayerStack, OutputHead
from canisters.llama.sampler import SamplingError, SamplingParams, penalize, sample, top_k_ids
from canisters.llama.weights import Strategy
from canisters.yblock.shard_layout import ShardLayout, ShardLayoutError
from canisters.yblock.shard_store import ShardHolder, ShardNotReady
from cdk import Frozen, frozen, query, update
from cdk.principal import Principal

ACTIVATION_DTYPE = np.dtype("<f4")
SESSION_OVERHEAD_BYTES = 4096  # the session's dict entry and KVCache object, beside its arrays


@dataclass(frozen=True)
class LoadedShard:
    layout: ShardLayout
    sha256: str
    config: ModelConfig
    layers: LayerStack | None
    output: OutputHead | None

    @property
    def weight_bytes(self) -> int:
        return (self.layers.nbytes_resident if self.layers else 0) + (self.output.nbytes_resident if self.output else 0)

    def kv_bytes_per_session(self, n_ctx: int) -> int:
        return KVCache.nbytes_for(len(self.layers.blocks), self.config, n_ctx) if self.layers else 0


class YBlock(ShardHolder):
    DID = "yblock.did"
    KIND = "yblock"

    def init(self, args: dict[str, Any]) -> None:
        self.head: Principal = args["head"]
        self.n_ctx: int = args["n_ctx"]
        self.shard: Frozen[LoadedShard] | None = None
        self.sessions: dict[int, KVCache] = {}
        self.restore_upload()

    def post_upgrade(self, args: dict[str, Any]) -> None:
        """The heap starts over: sessions are gone, a shard that was loaded is loaded again."""
        self.init(args)
        if self.upload.loaded:
            loaded = self._load()
            if isinstance(loaded, str):
                self.ic.trap(f"reloading the shard after the upgrade failed: {loaded}")

    def describe(self) -> str:
        shard = f" {self.upload.name!r}" if self.upload.name else ""
        return f"yblock{shard} ({self.ic.id().to_text()})"

    # --- deployment ----------------------------------------------------------------------------
    @update
    def load(self) -> dict[str, Any]:
        if not self.ic.is_controller(self.ic.caller()):
            return {"err": f"only controllers of {self.describe()} may load its shard"}
        if self.shard is None:
            loaded = self._load()
            if isinstance(loaded, str):
                return {"err": loaded}
        return {"ok": self._info()}

    def _load(self) -> LoadedShard | str:
        try:
            data = self.committed_bytes()
            gguf = read_gguf(data, name=self.upload.name)
            layout = ShardLayout.from_gguf(gguf)
            config = ModelConfig.from_gguf(gguf.fields, self.upload.name)
            if layout.role == "head":
                raise ShardLayoutError(f"{self.upload.name!r} is the head's shard; upload it to the head canister")
            if self.n_ctx > config.n_ctx_train:
                raise ShardLayoutError(f"this yblock was installed for sessions of {self.n_ctx} positions, more than "
                                       f"the model's trained context of {config.n_ctx_train}; reinstall it with a "
                                       "smaller n_ctx")
            shard = _build(gguf, layout, config, self.upload.sha256 or "", self.n_ctx)
        except (ShardNotReady, GGUFError, ShardLayoutError, ValueError) as e:
            return f"{self.describe()} cannot load its shard: {e}"
        # Decoding at load: about an op per weight decoded to f32, a copy per byte repacked.
        if layout.strategy == Strategy.DEQUANTIZE.value:
            self.ic.meter.elementwise(sum(t.n_elements for t in gguf.tensors.values()))
        else:
            self.ic.meter.copied(len(data))
        available = self.ic.heap_available_bytes()
        if shard.weight_bytes > available:
            return (f"{self.describe()} cannot load {self.upload.name!r}: its weights need {shard.weight_bytes} "
                    f"bytes of heap and {available} are available; plan smaller shards (--shard-bytes) or raise "
                    "the canister's wasm_memory_limit")
        self.shard = frozen(shard)
        self.mark_loaded()
        return shard

    # --- inference -----------------------------------------------------------------------------
    @update
    def forward(self, request: dict[str, Any]) -> dict[str, Any]:
        refusal = self._refuse_caller("forward")
        if refusal is not None:
            return {"err": refusal}
        if self.shard is None:
            return {"err": f"{self.describe()} has no shard loaded; a controller must upload it and call load"}
        shard = self.shard.value
        session, pos, n = request["session"], request["pos"], request["n_tokens"]
        d_model = shard.config.d_model
        if n < 1 or len(request["activations"]) != n * d_model * ACTIVATION_DTYPE.itemsize:
            return {"err": f"{self.describe()}: activations must be {n} x {d_model} little-endian f32 "
                           f"({n * d_model * 4} bytes) with n_tokens >= 1, got {len(request['activations'])} bytes"}
        x = np.frombuffer(request["activations"], dtype=ACTIVATION_DTYPE).reshape(n, d_model).astype(np.float32)
        meter = self.ic.meter
        if shard.layers is not None:
            cache = self.sessions.get(session)
            if cache is None:
                refusal = self._refuse_new_session(shard)
                if refusal is not None:
                    return {"err": refusal}
                cache = shard.layers.new_cache(self.n_ctx)
            try:
                x = shard.layers.forward(x, cache, pos, meter)
            except ValueError as e:
                return {"err": f"{self.describe()}, session {session}: {e}"}
            self.sessions[session] = cache
        reply: dict[str, Any] = {"activations": b"", "token": None, "candidates": None}
        if shard.output is None:
            reply["activations"] = x.astype(ACTIVATION_DTYPE).tobytes()
            meter.copied(len(reply["activations"]))
        elif request["sample"] is not None:
            try:
                reply.update(self._sample(shard, x[-1:], request["sample"]))
            except SamplingError as e:
                return {"err": f"{self.describe()}: {e}"}
        reply["instructions"] = self.ic.performance_counter(0)
        return {"ok": reply}

    def _sample(self, shard: LoadedShard, x: np.ndarray, request: dict[str, Any]) -> dict[str, Any]:
        """The sampled token if this stage holds every output row; else the slice's candidates."""
        assert shard.output is not None
        meter = self.ic.meter
        logits = shard.output(x, meter)[0]
        params = SamplingParams(
            temperature=request["temperature"], top_k=request["top_k"], top_p=request["top_p"],
            min_p=request["min_p"], repeat_penalty=request["repeat_penalty"],
            repeat_last_n=request["repeat_last_n"], seed=request["seed"])
        start, stop = shard.layout.output_rows
        if (start, stop) == (0, shard.config.n_vocab):
            return {"token": sample(logits, params, request["step"], request["recent"], meter)}
        # A slice: penalize the recent tokens that fall in it, then keep its top_k (with the
        # sampler's tie rule, so the union of the slices holds the global top_k).
        recent = [t - start for t in request["recent"] if start <= t < stop]  # the head sent the window
        logits = penalize(logits, params, recent, meter)
        k = 1 if params.greedy else params.top_k  # greedy needs only each slice's best
        if not 0 < k < logits.shape[0]:
            return {"candidates": {"ids": [], "logits": logits.tolist()}}  # every row, in order
        ids = top_k_ids(logits, k)
        meter.elementwise(3 * logits.shape[0])
        return {"candidates": {"ids": (ids + start).tolist(), "logits": logits[ids].tolist()}}

    @update
    def reset_session(self, session: int) -> dict[str, Any]:
        refusal = self._refuse_caller("reset_session")
        if refusal is not None:
            return {"err": refusal}
        return {"ok": self.sessions.pop(session, None) is not None}

    def _refuse_caller(self, method: str) -> str | None:
        caller = self.ic.caller()
        if caller == self.head:
            return None
        return (f"only the head canister {self.head.to_text()} may call {method} on {self.describe()}; "
                f"{caller.to_text()} may not")

    def _refuse_new_session(self, shard: LoadedShard) -> str | None:
        needed = shard.kv_bytes_per_session(self.n_ctx) + SESSION_OVERHEAD_BYTES
        available = self.ic.heap_available_bytes()
        if needed <= available:
            return None
        held = sum(cache.nbytes for cache in self.sessions.values())
        return (f"{self.describe()} is full: a new session needs {needed} bytes of KV cache but only {available} "
                f"bytes of heap are available ({len(self.sessions)} sessions hold {held} bytes); retry when a "
                "session ends, or deploy with more yblocks (--shards) or a smaller context")

    # --- queries -------------------------------------------------------------------------------
    @query
    def status(self) -> dict[str, Any]:
        shard = self.shard.value if self.shard else None
        layout = shard.layout if shard else None
        return {
            "name": self.upload.name,
            "role": layout.role if layout else "",
            "first_layer": layout.first_layer if layout else 0,
            "last_layer": layout.last_layer if layout else 0,
            "output_rows": _rows(layout),
            "loaded": shard is not None,
            "bytes": self.upload.held,
            "sessions": len(self.sessions),
            "heap_bytes": self.ic.heap_bytes(),
            "heap_limit_bytes": self.ic.heap_limit_bytes(),
            "kv_bytes_per_session": shard.kv_bytes_per_session(self.n_ctx) if shard else 0,
            "n_ctx": self.n_ctx,
            "head": self.head,
        }

    def _info(self) -> dict[str, Any]:
        assert self.shard is not None
        shard = self.shard.value
        layout = shard.layout
        return {
            "name": self.upload.name, "role": layout.role, "first_layer": layout.first_layer,
            "last_layer": layout.last_layer, "output_rows": _rows(layout), "d_model": shard.config.d_model,
            "strategy": layout.strategy, "weight_bytes": shard.weight_bytes,
            "kv_bytes_per_session": shard.kv_bytes_per_session(self.n_ctx), "sha256": shard.sha256,
        }


def _build(gguf: GGUFFile, layout: ShardLayout, config: ModelConfig, sha256: str, n_ctx: int) -> LoadedShard:
    layers = None
    if layout.last_layer > layout.first_layer:
        layers = LayerStack.load(gguf, config, layout.first_layer, layout.last_layer, layout.strategy, n_ctx)
    output = None
    if layout.output_rows is not None:
        start, stop = layout.output_rows  # the file holds just these rows of the output matrix
        output = OutputHead.load(gguf, config, layout.strategy, rows=(0, stop - start))
    return LoadedShard(layout, sha256, config, layers, output)


def _rows(layout: ShardLayout | None) -> dict[str, int] | None:
    if layout is None or layout.output_rows is None:
        return None
    return {"start": layout.output_rows[0], "stop": layout.output_rows[1]}

