"""Sharded generation in one process: plan, export, deploy into an embedded simulated IC, generate.

1. Plan: sharding.partition turns the model's header and the constraints (`--shards N`,
   `--shard-bytes B`, ...) into canisters: the head, then yblocks in pipeline order.
2. Export: sharding.export writes one GGUF per canister and a manifest with their sha256, into
   the cache (`$ICLLAMA_CACHE/shards/<model name>-<plan digest>/`), reused while it verifies.
3. Deploy: a replica Network runs in this process (no HTTP), and client.deploy deploys onto it as
   `icllama deploy` does over HTTP: the head and one yblock per shard are created with cycles and
   installed, every shard is uploaded in upload_chunk update calls of at most 2 MiB with the
   sha256 each canister computes checked against the manifest, then loaded, and set_pipeline
   wires the head to the stages.
4. Generate: the head's `generate` update (or `start` and `poll` queries, to stream), measured by
   the network: instructions, cycles, rounds, messages and bytes of the whole call tree.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from canisters.llama.chat_template import ChatTemplate
from canisters.llama.generation import generate_local
from canisters.llama.gguf_file import read_gguf
from canisters.llama.meter import NullMeter
from canisters.llama.model import Llama
from canisters.llama.sampler import SamplingParams
from canisters.llama.tokenizer import Tokenizer
from cdk.candid import encode
from cdk.principal import Principal
from client.agent import LocalCanisters
from client.catalog import cache_dir
from client.deploy import CLASSES, CanisterEntry, CanisterIds, Deployer
from client.errors import UserError
from client.head_client import Generation, GenerationOptions, Metrics, StreamEvent
from replica.config import NetworkConfig
from replica.cost_model import CostReport
from replica.inprocess import CallFailed, LocalClient
from replica.network import Network
from sharding.export import Export, ExportError, export_shards
from sharding.model_spec import read_model_spec
from sharding.partition import Constraints, Plan, PlanError, make_plan

_CANISTERS = Path(__file__).resolve().parents[1] / "canisters"
_CODE = {kind: (_CANISTERS / kind / f"{kind}.did", CLASSES[f"{kind}.did"]) for kind in ("head", "yblock")}
DEFAULT_CONSTRAINTS = Constraints()
DEFAULT_NETWORK = NetworkConfig()
DEFAULT_OPTIONS = GenerationOptions()


@dataclass(frozen=True)
class HostTime:
    """Wall and CPU time of this process between `start` and `stop`."""

    seconds: float
    cpu_seconds: float

    @classmethod
    def start(cls) -> HostTime:
        return cls(time.perf_counter(), time.process_time())

    def stop(self) -> HostTime:
        return HostTime(time.perf_counter() - self.seconds, time.process_time() - self.cpu_seconds)

    def tokens_per_s(self, tokens: int) -> float:
        return tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class NetworkMetrics:
    """What a generation cost, as the simulated network measured its whole call tree. Per-token
    figures divide by the generated tokens (the prompt's prefill included)."""

    canisters: int
    generated_tokens: int
    host_seconds: float
    host_cpu_seconds: float  # this process's CPU time, every thread (steadier than wall time on a busy host)
    host_tokens_per_s: float
    rounds: int
    virtual_seconds: float
    virtual_seconds_per_token: float
    instructions: int
    instructions_per_token: float
    cycles: int
    cycles_per_token: float
    messages: int  # inter-canister requests and replies (the ingress message not counted)
    messages_per_token: float
    activation_message_bytes: int  # Candid bytes of a one-token forward request

    @classmethod
    def of(cls, report: CostReport, rounds: int, round_seconds: float, host: HostTime, tokens: int,
           canisters: int, activation_message_bytes: int) -> NetworkMetrics:
        per = max(tokens, 1)
        seconds = rounds * round_seconds
        messages = report.messages - 1
        return cls(canisters, tokens, host.seconds, host.cpu_seconds, host.tokens_per_s(tokens), rounds,
                   seconds, seconds / per, report.instructions, report.instructions / per, report.cycles,
                   report.cycles / per, messages, messages / per, activation_message_bytes)


@dataclass(frozen=True)
class ShardedRun:
    generation: Generation
    network: NetworkMetrics
    plan: Plan


@dataclass
class Deployment:
    """A model deployed into an in-process network: the head and its stages, ready to generate."""

    network: Network
    client: LocalClient  # a controller of every canister
    plan: Plan
    export: Export
    head: Principal
    stages: tuple[Principal, ...]  # the yblocks, in the plan's order

    @classmethod
    def create(cls, model_path: Path, constraints: Constraints = DEFAULT_CONSTRAINTS, strategy: str = "balanced-bytes",
               config: NetworkConfig = DEFAULT_NETWORK, shards_dir: Path | None = None,
               progress: bool = False) -> Deployment:
        """Plans, exports (into `shards_dir`, by default the cache) and deploys `model_path`."""
        plan = _plan(model_path, constraints, strategy)
        directory = (shards_dir or cache_dir() / "shards") / f"{model_path.stem}-{plan.digest[:16]}"
        try:
            export = export_shards(model_path, plan, directory, progress=progress)
        except ExportError as e:
            raise UserError(str(e)) from None
        network = Network(None, config)
        client = LocalClient(network)
        entries = {s.name: CanisterEntry(s.name, *_CODE["head" if s.role == "head" else "yblock"])
                   for s in plan.shards}
        with tempfile.TemporaryDirectory() as state:  # the network lives in memory, and so do its ids
            report = Deployer(LocalCanisters(client), CanisterIds.of(Path(state), "in-process"), entries,
                              parallel=1, progress=progress).deploy(plan, export)
        ids = {c.name: Principal.from_text(c.canister_id) for c in report.canisters}
        return cls(network, client, plan, export, ids["head"],
                   tuple(ids[s.name] for s in plan.shards if s.role != "head"))

    # --- generation ----------------------------------------------------------------------------
    def generate(self, prompt: str, options: GenerationOptions = DEFAULT_OPTIONS,
                 on_text: Callable[[StreamEvent], None] | None = None) -> ShardedRun:
        """One generation through the head. With `on_text`, it streams (start, then a poll query
        after every round) and calls `on_text` with each batch of new tokens."""
        rounds_before = self.network.round_number()
        clock = HostTime.start()
        if on_text is None:
            try:
                outcome = self.client.update(self.head, "generate", options.request(prompt))
            except CallFailed as e:
                raise UserError(f"generation failed: {e}") from None
            host = clock.stop()
            value = _ok(outcome.value)
            report, rounds = outcome.report, outcome.report.rounds
        else:
            request_id = self.client.submit(self.head, "start", options.request(prompt))
            session = _ok(self.client.result(self.head, "start", request_id).value)
            for event in self._events(session):
                on_text(event)
            host = clock.stop()
            value = _ok(self.client.query(self.head, "result", session))
            report = self.network.report(request_id) or CostReport()
            rounds = self.network.round_number() - rounds_before
        generation = Generation(value["session"], value["text"], tuple(value["ids"]), tuple(value["prompt_ids"]),
                                value["stop_reason"], Metrics.from_candid(value["metrics"]), host.seconds)
        metrics = NetworkMetrics.of(report, rounds, self.network.config.round_duration_ns / 1e9, host,
                                    len(generation.ids), len(self.plan.shards), self.activation_message_bytes())
        return ShardedRun(generation, metrics, self.plan)

    def _events(self, session: int) -> Iterator[StreamEvent]:
        received = 0
        while True:
            self.network.execute_round()
            progress = _ok(self.client.query(self.head, "poll", session, received))
            if progress["error"] is not None:
                raise UserError(f"generation failed: {progress['error']}")
            if progress["ids"] or progress["done"]:
                received += len(progress["ids"])
                yield StreamEvent(session, tuple(progress["ids"]), progress["text"], progress["generated"],
                                  progress["done"], progress["stop_reason"], Metrics.from_candid(progress["metrics"]))
            if progress["done"]:
                return

    def activation_message_bytes(self) -> int:
        """Candid bytes of a forward request carrying one token's activations, as the head sends
        it to a middle stage (encoded with the yblock's own .did types)."""
        arg_types, _ = self.network.subnet.method_types(self.stages[0], "forward")
        request = {"session": 1, "pos": 0, "activations": bytes(4 * self.plan.d_model), "n_tokens": 1,
                   "sample": None}
        return len(encode(arg_types, [request]))


def run_sharded(model_path: Path, constraints: Constraints, prompt: str,
                options: GenerationOptions = DEFAULT_OPTIONS, strategy: str = "balanced-bytes",
                on_text: Callable[[StreamEvent], None] | None = None, progress: bool = False) -> ShardedRun:
    """`icllama run` through the simulated IC: deploy `model_path` as planned under `constraints`
    (its `shards` and `shard_bytes` are `--shards` and `--shard-bytes`), then generate once."""
    return Deployment.create(model_path, constraints, strategy, progress=progress).generate(prompt, options, on_text)


def _ok(reply: dict[str, Any]) -> Any:
    if "err" in reply:
        raise UserError(reply["err"])
    return reply["ok"]


def _plan(model_path: Path, constraints: Constraints, strategy: str) -> Plan:
    try:
        return make_plan(read_model_spec(model_path), constraints, strategy)
    except PlanError as e:
        raise UserError(f"cannot plan {model_path}: {e}") from None


@dataclass(frozen=True)
class UnshardedRun:
    ids: tuple[int, ...]
    text: str
    prompt_ids: tuple[int, ...]
    stop_reason: str
    host: HostTime

    @property
    def host_tokens_per_s(self) -> float:
        return self.host.tokens_per_s(len(self.ids))


@dataclass(frozen=True)
class UnshardedModel:
    """The baseline the pipeline is checked and benchmarked against: the same generation by
    `Llama` in this process, loaded once, with the weight strategy of on-chain weights in the
    file's own format. Prompts are tokenized as the head tokenizes them, and the sampling
    parameters rounded to float32 as they reach the head in Candid."""

    model: Llama
    tokenizer: Tokenizer
    fields: Mapping[str, Any]

    @classmethod
    def load(cls, model_path: Path, strategy: str = "quantized") -> UnshardedModel:
        gguf = read_gguf(model_path)
        return cls(Llama.load(gguf, strategy), Tokenizer.from_metadata(gguf.fields), gguf.fields)

    def generate(self, prompt: str, options: GenerationOptions = DEFAULT_OPTIONS) -> UnshardedRun:
        tokenizer = self.tokenizer
        if options.chat:
            text = ChatTemplate.from_metadata(self.fields, tokenizer).render([{"role": "user", "content": prompt}])
            prompt_ids = tokenizer.encode(text, add_special=False, parse_special=True)
        else:
            prompt_ids = tokenizer.encode(prompt, add_special=True)
        f32 = np.float32
        params = SamplingParams(temperature=float(f32(options.temperature)), top_k=options.top_k,
                                top_p=float(f32(options.top_p)), min_p=float(f32(options.min_p)),
                                repeat_penalty=float(f32(options.repeat_penalty)), seed=options.seed,
                                stop=options.stop)
        clock = HostTime.start()
        for stream, _ in generate_local(self.model, tokenizer, prompt_ids, params, options.max_tokens,  # noqa: B007
                                        NullMeter()):
            pass
        return UnshardedRun(stream.ids, stream.text, tuple(prompt_ids), stream.stop_reason or "", clock.stop())


def run_unsharded(model_path: Path, prompt: str, options: GenerationOptions = DEFAULT_OPTIONS,
                  strategy: str = "quantized") -> UnshardedRun:
    return UnshardedModel.load(model_path, strategy).generate(prompt, options)
