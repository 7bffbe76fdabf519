"""The head canister: the entry point of generation, and the orchestrator of the yblocks.

It holds its own shard (token_embd and the tokenizer and chat template metadata), uploaded and
loaded the same way as a yblock's. For each prefill chunk and each generated token it embeds the
ids and calls the stages in order with `forward`; the output stage samples (or, when the output
rows are split, the head samples from the slices' candidates). Every await commits the session's
progress, which `poll` reads, so `start` can return at once and let `advance` (a call the head
makes to itself and does not await) carry the generation on in later messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np

from canisters.head.session import NS_PER_S, Costs, Fees, Request, Session, session_bytes_after_token
from canisters.head.stages import Pipeline, PipelineError, Stage, merged_logits
from canisters.llama.chat_template import TEMPLATE_KEY, ChatTemplate, ChatTemplateError
from canisters.llama.config import ModelConfig
from canisters.llama.generation import TokenStream
from canisters.llama.gguf_file import GGUFError, read_gguf
from canisters.llama.model import Embedding
from canisters.llama.sampler import SamplingError, StopStrings, sample
from canisters.llama.tokenizer import Tokenizer, TokenizerError
from canisters.yblock.shard_layout import ShardLayout, ShardLayoutError
from canisters.yblock.shard_store import DATA_OFFSET, WASM_PAGE, ShardHolder, ShardNotReady
from cdk import CallRejected, Frozen, frozen, query, update
from cdk.principal import Principal

ACTIVATION_DTYPE = np.dtype("<f4")
KEPT_FINISHED_SESSIONS = 256  # finished sessions stay pollable until this many newer ones finished
# The head's own page of stable memory, after the loaded shard: the next session id (u64, so a
# restart never hands out an id a client already holds), then the pipeline's record.
SESSION_COUNTER_BYTES = 8
PIPELINE_MAGIC = b"ICLPIPE1"


@dataclass(frozen=True)
class HeadModel:
    name: str
    sha256: str
    strategy: str
    config: ModelConfig
    tokenizer: Tokenizer
    chat_template: str | None  # the Jinja source; compiled per request (a compiled one holds caches)
    embedding: Embedding


class StageFailed(Exception):
    """A stage rejected or refused a forward; the message names it and says what to do."""


class Head(ShardHolder):
    DID = "head.did"
    KIND = "head"

    def init(self, args: dict[str, Any]) -> None:
        self.n_ctx: int = args["n_ctx"]
        self.fees = Fees.from_candid(args["fees"])
        allowlist = args.get("generate_allowlist")
        self.generate_allowlist: frozenset[Principal] | None = None if allowlist is None else frozenset(allowlist)
        self.model: Frozen[HeadModel] | None = None
        self.pipeline: Frozen[Pipeline] | None = None
        # Sessions are replaced, never changed (see session.py); a running one's costs and the
        # head's instructions in `start` (before `advance` took it over) are kept apart.
        self.sessions: dict[int, Frozen[Session]] = {}  # running
        self.costs: dict[int, Costs] = {}
        self.started_instructions: dict[int, int] = {}
        self.finished: dict[int, Frozen[Session]] = {}
        self.next_session = 1
        # KV caches a stage may still hold because its reset_session was rejected (it was stopped
        # or out of cycles): canister -> session ids, asked again at every later release.
        self.unreleased: dict[Principal, set[int]] = {}
        self.restore_upload()

    def post_upgrade(self, args: dict[str, Any]) -> None:
        """The heap starts over: sessions are gone; a loaded shard is loaded again, and the
        pipeline read back from stable memory (also when a restarted network rebuilds the heap)."""
        self.init(args)
        if self.upload.loaded:
            loaded = self._load()
            if isinstance(loaded, str):
                self.ic.trap(f"reloading the head's shard after the upgrade failed: {loaded}")
            pipeline = self._read_pipeline(loaded.config)
            self.pipeline = frozen(pipeline) if pipeline is not None else None
            if self.ic.stable_size() * WASM_PAGE >= self._pipeline_offset() + SESSION_COUNTER_BYTES:
                counter = self.ic.stable_read(self._pipeline_offset(), SESSION_COUNTER_BYTES)
                self.next_session = max(1, int.from_bytes(counter, "little"))

    # --- deployment ----------------------------------------------------------------------------
    @update
    def load(self) -> dict[str, Any]:
        if not self.ic.is_controller(self.ic.caller()):
            return {"err": f"only controllers of {self.describe()} may load its shard"}
        if self.model is None:
            loaded = self._load()
            if isinstance(loaded, str):
                return {"err": loaded}
        model = self.model.value
        return {"ok": {
            "name": model.name, "sha256": model.sha256, "n_vocab": model.config.n_vocab,
            "d_model": model.config.d_model, "n_layer": model.config.n_layer, "strategy": model.strategy,
            "weight_bytes": model.embedding.weight.nbytes_resident, "chat_template": model.chat_template is not None,
        }}

    def _load(self) -> HeadModel | str:
        try:
            gguf = read_gguf(self.committed_bytes(), name=self.upload.name)
            layout = ShardLayout.from_gguf(gguf)
            if layout.role != "head":
                raise ShardLayoutError(f"{self.upload.name!r} is a {layout.role} shard; upload it to a yblock")
            config = ModelConfig.from_gguf(gguf.fields, self.upload.name)
            if self.n_ctx > config.n_ctx_train:
                raise ShardLayoutError(f"the head was installed for {self.n_ctx} positions, more than the model's "
                                       f"trained context of {config.n_ctx_train}; reinstall it with a smaller n_ctx")
            model = HeadModel(self.upload.name, self.upload.sha256 or "", layout.strategy, config,
                              Tokenizer.from_metadata(gguf.fields), gguf.fields.get(TEMPLATE_KEY),
                              Embedding.load(gguf, layout.strategy))
        except (ShardNotReady, GGUFError, ShardLayoutError, TokenizerError, ValueError) as e:
            return f"{self.describe()} cannot load its shard: {e}"
        self.ic.meter.copied(model.embedding.weight.nbytes_resident)
        self.model = frozen(model)
        self.mark_loaded()
        return model

    @update
    def set_pipeline(self, value: dict[str, Any]) -> dict[str, Any]:
        if not self.ic.is_controller(self.ic.caller()):
            return {"err": f"only controllers of {self.describe()} may set its pipeline"}
        if self.model is None:
            return {"err": f"{self.describe()} must load its shard before set_pipeline (it checks the stages "
                           "against the model)"}
        try:
            pipeline = Pipeline.from_candid(value, self.model.value.config)
        except PipelineError as e:
            return {"err": f"set_pipeline refused: {e}"}
        self._write_pipeline(pipeline)
        self.pipeline = frozen(pipeline)
        return {"ok": None}

    def _pipeline_offset(self) -> int:
        """The head's own page: the first page after the loaded shard, whose bytes cannot change
        any more (set_pipeline needs it loaded; a reinstall clears both)."""
        return DATA_OFFSET + -(-self.upload.held // WASM_PAGE) * WASM_PAGE

    def _write_pipeline(self, pipeline: Pipeline) -> None:
        value = pipeline.to_candid()
        for stage in value["stages"]:
            stage["canister"] = stage["canister"].to_text()
        payload = json.dumps(value).encode()
        record = PIPELINE_MAGIC + len(payload).to_bytes(4, "little") + payload
        offset = self._pipeline_offset() + SESSION_COUNTER_BYTES
        pages = -(-(offset + len(record)) // WASM_PAGE)
        if pages > self.ic.stable_size() and self.ic.stable_grow(pages - self.ic.stable_size()) < 0:
            self.ic.trap("stable memory cannot grow to hold the pipeline")
        self.ic.stable_write(offset, record)

    def _read_pipeline(self, config: ModelConfig) -> Pipeline | None:
        """The pipeline set_pipeline last stored, or None (never set, or no longer valid for
        this model: then the head asks for set_pipeline again)."""
        offset, header = self._pipeline_offset() + SESSION_COUNTER_BYTES, len(PIPELINE_MAGIC) + 4
        if self.ic.stable_size() * WASM_PAGE < offset + header:
            return None
        head = self.ic.stable_read(offset, header)
        if head[: len(PIPELINE_MAGIC)] != PIPELINE_MAGIC:
            return None
        value = json.loads(self.ic.stable_read(offset + header, int.from_bytes(head[len(PIPELINE_MAGIC) :], "little")))
        for stage in value["stages"]:
            stage["canister"] = Principal.from_text(stage["canister"])
        try:
            return Pipeline.from_candid(value, config)
        except PipelineError:
            return None

    # --- generation ----------------------------------------------------------------------------
    @update
    async def generate(self, request: dict[str, Any]) -> dict[str, Any]:
        refusal = self._refuse_caller("generate")
        if refusal is not None:
            return {"err": refusal}
        session = self._open(request)
        if isinstance(session, str):
            return {"err": session}
        ended = await self._run(session.id)
        if ended.error is not None:
            return {"err": ended.error}
        return {"ok": ended.generation(self.fees, self.ic.time())}

    @update
    def start(self, request: dict[str, Any]) -> dict[str, Any]:
        refusal = self._refuse_caller("start")
        if refusal is not None:
            return {"err": refusal}
        session = self._open(request)
        if isinstance(session, str):
            return {"err": session}
        # Not awaited: this message replies now, and `advance` runs in messages of its own.
        self.ic.call(self.ic.id(), "advance", session.id)
        self.costs[session.id].messages += 2
        self.started_instructions[session.id] = self.ic.performance_counter(1)
        return {"ok": session.id}

    @update
    async def advance(self, session_id: int) -> None:
        if self.ic.caller() != self.ic.id():
            self.ic.trap("advance is the head's own continuation of a started session; call start instead")
        if session_id in self.sessions:
            await self._run(session_id)

    def _refuse_caller(self, method: str) -> str | None:
        """Why the caller may not use `method`, if the head was installed with an allowlist that
        leaves it out (its controllers are always allowed)."""
        caller = self.ic.caller()
        if self.generate_allowlist is None or caller in self.generate_allowlist or self.ic.is_controller(caller):
            return None
        return (f"{caller.to_text()} may not call {method} on {self.describe()}: the head serves only the "
                "principals of its generate_allowlist and its controllers; ask a controller to add you (an "
                "init argument: upgrade the head with the new list)")

    def _open(self, value: dict[str, Any]) -> Session | str:
        """A new session for the request, or why there cannot be one."""
        if self.model is None or self.pipeline is None:
            return (f"{self.describe()} is not ready: a controller must upload and load its shard and call "
                    "set_pipeline")
        model = self.model.value
        try:
            request = Request.from_candid(value)
            prompt_ids = self._prompt_ids(model, request)
        except (SamplingError, TokenizerError, ChatTemplateError, ValueError) as e:
            return f"generate refused: {e}"
        if not prompt_ids:
            return "generate refused: the prompt has no tokens"
        if len(prompt_ids) + request.max_tokens > self.n_ctx:
            return (f"generate refused: the prompt ({len(prompt_ids)} tokens) plus max_tokens {request.max_tokens} "
                    f"exceeds the context of {self.n_ctx} positions; shorten the prompt or lower max_tokens")
        session = Session(self.next_session, request, tuple(prompt_ids), self.ic.time(),
                          TokenStream(request.max_tokens))
        self.next_session += 1
        # set_pipeline made the page; the counter is committed with the session it counts.
        self.ic.stable_write(self._pipeline_offset(), self.next_session.to_bytes(SESSION_COUNTER_BYTES, "little"))
        self.sessions[session.id] = frozen(session)
        self.costs[session.id] = Costs()
        return session

    def _prompt_ids(self, model: HeadModel, request: Request) -> list[int]:
        """As `icllama run` does: chat text carries its own BOS, raw text gets the model's specials."""
        meter = self.ic.meter
        if not request.chat:
            return model.tokenizer.encode(request.prompt, add_special=True, meter=meter)
        if model.chat_template is None:
            raise ChatTemplateError("the model has no chat template; send the prompt with chat = false")
        template = ChatTemplate.from_metadata({TEMPLATE_KEY: model.chat_template}, model.tokenizer)
        now = datetime.fromtimestamp(self.ic.time() / NS_PER_S, tz=timezone.utc)
        text = template.render([{"role": "user", "content": request.prompt}], now=now)
        return model.tokenizer.encode(text, add_special=False, parse_special=True, meter=meter)

    async def _run(self, session_id: int) -> Session:
        """Prefill, then one forward per token until the stream is done; a failed stage ends the
        session with an error. The stages' KV caches of the session are released either way.
        Returns the ended session."""
        assert self.model is not None and self.pipeline is not None
        model, pipeline = self.model.value, self.pipeline.value
        session = self.sessions[session_id].value
        tokenizer, stops = model.tokenizer, StopStrings(session.request.params.stop)
        prompt = list(session.prompt_ids)
        try:
            token = None
            for start in range(0, len(prompt), pipeline.prefill_chunk):
                chunk = prompt[start : start + pipeline.prefill_chunk]
                last = start + len(chunk) == len(prompt)
                token = await self._forward(session, model, pipeline, chunk, start, last)
            while True:
                assert token is not None
                stream, shown = session.stream.push(token, tokenizer, stops)
                grown = replace(session, stream=stream, pieces=session.pieces + (shown,))
                self.sessions[session_id] = frozen(grown, session_bytes_after_token(self.sessions[session_id], grown))
                session = grown
                if stream.done:
                    break
                pos = len(prompt) + len(stream.ids) - 1
                token = await self._forward(session, model, pipeline, [token], pos, last=True)
        except StageFailed as e:
            session = replace(session, error=str(e))
            self.sessions[session_id] = frozen(session)  # polls see the failure while the caches are released
        await self._release(session, pipeline)
        self._count_own_instructions(session)
        del self.sessions[session_id]
        self.started_instructions.pop(session_id, None)
        ended = replace(session, costs=self.costs.pop(session_id), ended_ns=self.ic.time())
        self.finished[session_id] = frozen(ended)
        for old in sorted(self.finished)[: max(0, len(self.finished) - KEPT_FINISHED_SESSIONS)]:
            del self.finished[old]
        return ended

    async def _forward(self, session: Session, model: HeadModel, pipeline: Pipeline, ids: list[int], pos: int,
                       last: bool) -> int | None:
        """Runs `ids` at positions pos.. through every stage; the next token if `last` (the chunk
        that ends the prompt, or a generated token), else None."""
        config = model.config
        activations = model.embedding(ids, self.ic.meter).astype(ACTIVATION_DTYPE).tobytes()
        sampling = self._sampling(session) if last else None
        slices: list[tuple[Stage, dict[str, Any]]] = []
        output_only = [(i, s) for i, s in enumerate(pipeline.stages) if not s.has_layers]
        for i, stage in enumerate(pipeline.stages):
            if not stage.has_layers:
                continue
            reply = await self._call(session, i, stage, pos, activations, len(ids), sampling)
            if reply["token"] is not None:
                return reply["token"]
            if reply["candidates"] is not None:  # a wasm stage holding every row leaves a random draw to the head
                slices.append((stage, reply["candidates"]))
            activations = reply["activations"]
        if not last:
            return None
        # Output-only stages: the last token's hidden state, to every one at once.
        hidden = activations[-config.d_model * ACTIVATION_DTYPE.itemsize :]
        pending = [(i, s, self._send(session, s, pos + len(ids) - 1, hidden, 1, sampling)) for i, s in output_only]
        for i, stage, call in pending:
            reply = await self._receive(session, i, stage, pos, call)
            if reply["token"] is not None:
                return reply["token"]
            slices.append((stage, reply["candidates"]))
        logits = merged_logits(slices, config.n_vocab)
        params = replace(session.request.params, repeat_penalty=1.0)  # the slices applied it
        return sample(logits, params, len(session.stream.ids), (), self.ic.meter)

    def _sampling(self, session: Session) -> dict[str, Any]:
        params = session.request.params
        recent = (session.prompt_ids + session.stream.ids)[-params.repeat_last_n:] if params.repeat_last_n else ()
        return {"temperature": params.temperature, "top_k": params.top_k, "top_p": params.top_p,
                "min_p": params.min_p, "repeat_penalty": params.repeat_penalty,
                "repeat_last_n": params.repeat_last_n, "seed": params.seed, "step": len(session.stream.ids),
                "recent": list(recent)}

    async def _call(self, session: Session, index: int, stage: Stage, pos: int, activations: bytes, n_tokens: int,
                    sampling: dict[str, Any] | None) -> dict[str, Any]:
        call = self._send(session, stage, pos, activations, n_tokens, sampling)
        return await self._receive(session, index, stage, pos, call)

    def _send(self, session: Session, stage: Stage, pos: int, activations: bytes, n_tokens: int,
              sampling: dict[str, Any] | None) -> Any:
        costs = self.costs[session.id]
        costs.messages += 1
        costs.activation_bytes += len(activations)
        return self.ic.call(stage.canister, "forward", {
            "session": session.id, "pos": pos, "activations": activations, "n_tokens": n_tokens, "sample": sampling})

    async def _receive(self, session: Session, index: int, stage: Stage, pos: int, call: Any) -> dict[str, Any]:
        self._count_own_instructions(session)
        try:
            result = await call
        except CallRejected as e:
            raise StageFailed(self._failure(session, index, stage, pos, str(e))) from None
        costs = self.costs[session.id]
        costs.messages += 1
        costs.executions += 2  # the stage's forward, and the head's execution of the reply
        if "err" in result:
            raise StageFailed(self._failure(session, index, stage, pos, result["err"]))
        reply = result["ok"]
        costs.stage_instructions += reply["instructions"]
        costs.activation_bytes += len(reply["activations"])
        return reply

    def _failure(self, session: Session, index: int, stage: Stage, pos: int, why: str) -> str:
        return (f"generation failed in {stage.describe(index)} at position {pos} of session {session.id}, after "
                f"{len(session.stream.ids)} generated tokens: {why}. The session's KV caches were released; "
                "generate again to retry")

    def _count_own_instructions(self, session: Session) -> None:
        """The head's instructions in this call context so far, plus any from `start`."""
        self.costs[session.id].head_instructions = (self.started_instructions.get(session.id, 0)
                                                    + self.ic.performance_counter(1))

    async def _release(self, session: Session, pipeline: Pipeline) -> None:
        """Frees the session's KV caches on every stage, with those an earlier release could not
        free. Awaited (all stages at once), so that a stage which refuses (stopped, out of
        cycles) is remembered and asked again at the next release, instead of holding the
        cache for good and one day refusing new sessions as full."""
        calls = []
        for stage in pipeline.stages:
            if stage.has_layers:
                for session_id in sorted(self.unreleased.pop(stage.canister, set()) | {session.id}):
                    calls.append((stage.canister, session_id, self.ic.call(stage.canister, "reset_session",
                                                                           session_id)))
                    self.costs[session.id].messages += 2
        for canister, session_id, call in calls:
            try:
                await call
            except CallRejected:
                self.unreleased.setdefault(canister, set()).add(session_id)

    # --- queries -------------------------------------------------------------------------------
    @query
    def poll(self, session_id: int, start: int) -> dict[str, Any]:
        refusal = self._refuse_caller("poll")
        if refusal is not None:
            return {"err": refusal}
        session = self._session(session_id)
        if isinstance(session, str):
            return {"err": session}
        return {"ok": session.progress(start, self.fees, self.ic.time())}

    @query
    def result(self, session_id: int) -> dict[str, Any]:
        refusal = self._refuse_caller("result")
        if refusal is not None:
            return {"err": refusal}
        session = self._session(session_id)
        if isinstance(session, str):
            return {"err": session}
        return {"ok": session.generation(self.fees, self.ic.time())}

    def _session(self, session_id: int) -> Session | str:
        """The session with its costs so far."""
        if session_id in self.sessions:
            running = self.sessions[session_id].value
            return replace(running, costs=replace(self.costs[session_id]))
        if session_id in self.finished:
            return self.finished[session_id].value
        return (f"{self.describe()} has no session {session_id} (unknown, or finished long ago: the head keeps "
                f"the latest {KEPT_FINISHED_SESSIONS} finished sessions)")

    @query
    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        tokenizer = self._tokenizer()
        try:
            return tokenizer.encode(text, add_special=add_special, parse_special=parse_special, meter=self.ic.meter)
        except TokenizerError as e:
            self.ic.trap(str(e))

    @query
    def detokenize(self, ids: list[int]) -> str:
        tokenizer = self._tokenizer()
        try:
            return tokenizer.decode(ids)
        except TokenizerError as e:
            self.ic.trap(str(e))

    @query
    def status(self) -> dict[str, Any]:
        pipeline = self.pipeline.value if self.pipeline else None
        return {
            "name": self.upload.name, "loaded": self.model is not None, "bytes": self.upload.held,
            "n_ctx": self.n_ctx, "stages": [s.to_candid() for s in pipeline.stages] if pipeline else [],
            "prefill_chunk": pipeline.prefill_chunk if pipeline else 0,
            "running_sessions": len(self.sessions), "kept_sessions": len(self.finished),
            "heap_bytes": self.ic.heap_bytes(), "heap_limit_bytes": self.ic.heap_limit_bytes(),
            "generate_allowlist": None if self.generate_allowlist is None else sorted(self.generate_allowlist),
        }

    def _tokenizer(self) -> Tokenizer:
        if self.model is None:
            self.ic.trap(f"{self.describe()} has no shard loaded, so no tokenizer yet")
        return self.model.value.tokenizer
