"""A small synthetic model deployed the way `icllama deploy` deploys one, for the authorization,
fault and load tests: planned (sharding.partition), exported (sharding.export), written into a
dfx.json (sharding.dfx) and deployed by client.deploy.Deployer through client.agent's
`Canisters`, so the same code runs in-process (LocalClient) and over HTTP (icp-py-core against
`icllama start` in a subprocess, tests/gateway_support.py).

Nothing here talks to a canister in any other way than a client would.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from canisters.yblock.build import ensure_built
from cdk.candid import encode, parse_did
from cdk.principal import Principal
from client.agent import MANAGEMENT_DID, Canister, Canisters
from client.deploy import CanisterIds, Deployer, DeployReport, head_init, read_dfx, yblock_init
from client.engine_choice import DEFAULT_ENGINE
from client.head_client import GenerationOptions
from replica.limits import DEFAULT_LIMITS
from replica.loader import ModuleRef
from replica.network import NetworkConfig
from sharding.dfx import HEAD_DID, YBLOCK_DID, write_dfx
from sharding.export import Export, export_shards
from sharding.model_spec import read_model_spec
from sharding.partition import Constraints, Plan, make_plan
from tests.synthetic_models import SyntheticSpec, write_synthetic_model

# Four layers on two yblocks (the second also holds the output and samples): every hop of a real
# pipeline (head -> layers -> layers+output -> head) in a model that generates a token in ms.
SPEC = SyntheticSpec(n_layer=4, d_model=64, n_head=4, n_head_kv=2, d_ff=96, n_ctx=256)
SHARDS = 2
CONTEXT = 64
NETWORK = "local"
# A subnet busy with other work: each round has budget left to start about one execution, so a
# generation takes several rounds per token and a test can act between two of its messages. (On
# an idle subnet a small model's whole generation runs within one round.)
BUSY_SUBNET = NetworkConfig(limits=replace(DEFAULT_LIMITS,
                                           instructions_per_round=DEFAULT_LIMITS.instructions_per_slice + 1))


@dataclass(frozen=True)
class ExportedModel:
    directory: Path
    model: Path
    plan: Plan
    export: Export
    dfx_json: Path


def export_model(directory: Path, spec: SyntheticSpec = SPEC, shards: int = SHARDS, context: int = CONTEXT
                 ) -> ExportedModel:
    """A synthetic model written into `directory`, planned and exported there."""
    directory.mkdir(parents=True, exist_ok=True)
    return export_file(write_synthetic_model(directory / "model.gguf", spec), directory, shards, context)


def export_file(model: Path, directory: Path, shards: int = SHARDS, context: int = CONTEXT) -> ExportedModel:
    """`model` planned into `shards` yblocks, its shards exported into `directory`/shards (an
    intact earlier export of the same plan is kept) and its canisters written into a dfx.json."""
    directory.mkdir(parents=True, exist_ok=True)
    plan = make_plan(read_model_spec(model), Constraints(shards=shards, context=context))
    export = export_shards(model, plan, directory / "shards")
    dfx_json = directory / "dfx.json"
    write_dfx(plan, dfx_json)
    return ExportedModel(directory, model, plan, export, dfx_json)


@dataclass(frozen=True)
class Deployment:
    """A deployed model: its canisters by dfx.json name, and the client that deployed them."""

    owner: Canisters  # the controller that deployed it
    exported: ExportedModel
    ids: dict[str, Principal]
    report: DeployReport
    version: str  # the code version the Deployer installed
    engine: str = DEFAULT_ENGINE  # how its yblocks run (client.engine_choice)

    @property
    def yblock_names(self) -> list[str]:
        return [s.name for s in self.exported.plan.shards if s.role != "head"]

    def head(self, as_: Canisters | None = None) -> Canister:
        return (as_ or self.owner).canister(self.ids["head"], HEAD_DID)

    def yblock(self, name: str, as_: Canisters | None = None) -> Canister:
        return (as_ or self.owner).canister(self.ids[name], YBLOCK_DID)

    def canister(self, name: str, as_: Canisters | None = None) -> Canister:
        return self.head(as_) if name == "head" else self.yblock(name, as_)

    def management(self, as_: Canisters | None = None) -> Canister:
        return (as_ or self.owner).canister(Principal.management(), MANAGEMENT_DID)

    def upgrade(self, name: str, class_path: str | None = None, **init: Any) -> None:
        """install_code in upgrade mode on canister `name`, as its controller: the code deploy
        installed (or the class `class_path`), with its deploy-time init arguments changed by
        `init`. Stable memory, so the uploaded shard, is kept and loaded again; the heap starts over."""
        entry = read_dfx(self.exported.dfx_json)[name]
        module = ModuleRef(class_path or entry.class_path, self.version).to_wasm_module()
        if class_path is None and self.engine == "wasm" and entry.wasm is not None:
            module = ensure_built(entry.wasm).read_bytes()
        plan = self.exported.plan
        base = head_init(plan) if name == "head" else yblock_init(plan, self.ids["head"])
        arg = encode(parse_did(entry.did.read_text()).init_args, [{**base, **init}])
        self.management().update("install_code", {
            "mode": {"upgrade": None}, "canister_id": self.ids[name],
            "wasm_module": module, "arg": arg,
            "sender_canister_version": None})


def deploy(owner: Canisters, exported: ExportedModel, state_dir: Path, parallel: int = 1, cycles: int | None = None,
           engine: str = DEFAULT_ENGINE) -> Deployment:
    """Deploys (or, with the same `state_dir`, resumes deploying) `exported` as `owner`; new
    canisters get `cycles` (None: the network's default); yblocks run by `engine`."""
    deployer = Deployer(owner, CanisterIds.of(state_dir, NETWORK), read_dfx(exported.dfx_json), cycles=cycles,
                        parallel=parallel, progress=False, engine=engine)
    report = deployer.deploy(exported.plan, exported.export)
    ids = {c.name: Principal.from_text(c.canister_id) for c in report.canisters}
    return Deployment(owner, exported, ids, report, deployer.version, engine)


def greedy(prompt: str, max_tokens: int) -> dict[str, Any]:
    """A GenerateRequest for greedy decoding (the same ids whenever and wherever it runs)."""
    return GenerationOptions(max_tokens=max_tokens).request(prompt)
