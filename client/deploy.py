"""Deploying a planned, exported model onto a network, as `dfx deploy` deploys a project.

For each canister of the plan (named in dfx.json: `head`, `yblock_0`, ...):
1. reuse the canister recorded in `.icllama/<network>/canister_ids.json` (dfx's own format) if the
   network still has it, else create it through the management canister with cycles and record
   its id at once, so an interrupted deploy never loses a canister it created;
2. install its code, or upgrade it when the code or its init arguments changed, or leave it;
3. make the head a controller of every yblock (the head's principal is also the yblock's only
   allowed caller of `forward`, an init argument);
then upload every shard in parallel (client.upload: resumed, verified by sha256, loaded; a
canister found holding other bytes is reinstalled and uploaded again) and wire the head to the
stages with `set_pipeline`. Every step checks before it acts, so re-running deploy is cheap and
changes nothing that is already right.

The steps go through client.agent's `Canisters`, over HTTP (`icllama deploy`) or in-process.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canisters.yblock.build import BuildError, ensure_built
from cdk.candid import encode, parse_did
from cdk.principal import Principal
from client.agent import MANAGEMENT_DID, Canister, Canisters, TransportFailed
from client.engine_choice import DEFAULT_ENGINE
from client.errors import UserError
from client.upload import CanisterShardTarget, HeldBytesDiffer, ShardFile, UploadResult, UploadsFailed, upload_shards
from replica.fees import FEE_SCHEDULES, FeeSchedule
from replica.inprocess import CallFailed
from replica.loader import ModuleRef
from replica.state_store import atomic_write
from sharding.dfx import YBLOCK_WASM
from sharding.export import Export
from sharding.partition import Plan

ROOT = Path(__file__).resolve().parents[1]
# The canister class behind each .did: installing code names a class on this simulated IC.
CLASSES = {"head.did": "canisters.head.head:Head", "yblock.did": "canisters.yblock.yblock:YBlock"}
# What a canister's code is made of: its version is their hash, so changed code is upgraded, as
# dfx upgrades a canister whose wasm changed.
CODE_PACKAGES = ("canisters", "cdk")


# --- dfx.json and canister_ids.json --------------------------------------------------------------------
@dataclass(frozen=True)
class CanisterEntry:
    name: str
    did: Path
    class_path: str
    wasm: Path | None = None  # dfx.json's "wasm": the module installed with the wasm engine


def read_dfx(path: Path) -> dict[str, CanisterEntry]:
    """The canisters of dfx.json whose .did is one of ours (head.did, yblock.did)."""
    try:
        config = json.loads(path.read_text())
        canisters = config["canisters"]
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; `icllama deploy` writes it, or run `icllama plan --write-dfx`") \
            from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a readable dfx.json with a 'canisters' object ({e}); fix or remove it") \
            from None
    entries = {}
    for name, entry in canisters.items():
        candid = entry.get("candid") if isinstance(entry, dict) else None
        if candid and Path(candid).name in CLASSES:
            wasm = (path.parent / entry["wasm"]).resolve() if entry.get("wasm") else None
            entries[name] = CanisterEntry(name, (path.parent / candid).resolve(), CLASSES[Path(candid).name], wasm)
    return entries


@dataclass(frozen=True)
class CanisterIds:
    """`<state dir>/<network>/canister_ids.json`: {"name": {"<network>": "<id>"}}, as dfx keeps them."""

    path: Path
    network: str

    @classmethod
    def of(cls, state_dir: Path, network: str) -> CanisterIds:
        return cls(state_dir / network / "canister_ids.json", network)

    def _document(self) -> dict[str, dict[str, str]]:
        if not self.path.is_file():
            return {}
        try:
            document = json.loads(self.path.read_text())
            if not isinstance(document, dict):
                raise ValueError("not an object")
            return document
        except (OSError, ValueError) as e:
            raise UserError(f"{self.path} is damaged ({e}); restore it, or remove it to deploy new canisters "
                            "(the old ones stay on the network)") from None

    def read(self) -> dict[str, Principal]:
        ids = {}
        for name, networks in self._document().items():
            text = networks.get(self.network) if isinstance(networks, dict) else None
            if text:
                try:
                    ids[name] = Principal.from_text(text)
                except ValueError as e:
                    raise UserError(f"{self.path}: the id of {name!r} is not a principal ({e})") from None
        return ids

    def record(self, name: str, canister_id: Principal) -> None:
        document = self._document()
        document.setdefault(name, {})[self.network] = canister_id.to_text()
        atomic_write(self.path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())


def head_canister_id(name_or_id: str, state_dir: Path, network: str) -> str:
    """A canister id given as such, or looked up by name in the network's canister_ids.json."""
    try:
        return Principal.from_text(name_or_id).to_text()
    except ValueError:
        pass
    ids = CanisterIds.of(state_dir, network)
    found = ids.read().get(name_or_id)
    if found is None:
        raise UserError(f"no canister named {name_or_id!r} in {ids.path}; deploy first (`icllama deploy`), "
                        "or pass --canister with the head's id")
    return found.to_text()


def code_version() -> str:
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*")):
            if path.suffix in (".py", ".did", ".json", ".c") and "__pycache__" not in path.parts:
                digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


# --- what the canisters are given ----------------------------------------------------------------------
def head_init(plan: Plan, generate_allowlist: tuple[Principal, ...] | None = None) -> dict[str, Any]:
    """The head's init arguments: its context, who may generate (None: anyone), and the fee
    schedule (scaled to the subnet) that the plan was costed with, which the head prices its
    metrics with."""
    fees: FeeSchedule = FEE_SCHEDULES[plan.constraints.fees]
    nodes = plan.constraints.subnet_nodes
    allowlist = None if generate_allowlist is None else sorted(set(generate_allowlist))
    return {"n_ctx": plan.context, "generate_allowlist": allowlist, "fees": {
        "execution_base": fees.execution_cycles(0, nodes),
        "cycles_per_billion_instructions": fees.instruction_cycles(10**9, nodes),
        "call": fees.call_cycles(0, nodes),
        "call_byte": fees.response_byte_cycles(1, nodes),
    }}


def yblock_init(plan: Plan, head: Principal) -> dict[str, Any]:
    return {"head": head, "n_ctx": plan.context}


def pipeline_arg(plan: Plan, ids: dict[str, Principal]) -> dict[str, Any]:
    """set_pipeline's argument: the stages in the plan's order, with their layers and output rows."""
    stages = []
    for shard in plan.shards:
        if shard.role == "head":
            continue
        first, last = shard.layers or (plan.n_layer, plan.n_layer)
        rows = None if shard.output_rows is None else {"start": shard.output_rows[0], "stop": shard.output_rows[1]}
        stages.append({"canister": ids[shard.name], "first_layer": first, "last_layer": last, "role": shard.role,
                       "output_rows": rows})
    return {"stages": stages, "prefill_chunk": plan.totals.prefill_chunk}


# --- deploying -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeployedCanister:
    name: str
    canister_id: str
    created: bool
    code: str  # "installed", "upgraded", "reinstalled" or "unchanged"
    upload: UploadResult | None


@dataclass(frozen=True)
class DeployReport:
    canisters: tuple[DeployedCanister, ...]
    head: str
    bytes_uploaded: int
    upload_seconds: float  # wall time of the upload step (verification and loads included)


@dataclass(frozen=True)
class Deployer:
    canisters: Canisters
    ids: CanisterIds
    entries: dict[str, CanisterEntry]  # from dfx.json
    cycles: int | None = None  # per created canister; None: the network's default
    version: str = "1"
    parallel: int = 4
    progress: bool = True
    generate_allowlist: tuple[Principal, ...] | None = None  # the head's; None: anyone may generate
    engine: str = DEFAULT_ENGINE  # how the yblocks run (client.engine_choice)

    @property
    def management(self) -> Canister:
        return self.canisters.canister(Principal.management(), MANAGEMENT_DID)

    def deploy(self, plan: Plan, export: Export) -> DeployReport:
        """Deploys the plan's canisters and shards; raises UserError (re-running continues)."""
        try:
            return self._deploy(plan, export)
        except (CallFailed, TransportFailed) as e:
            raise UserError(f"deploy stopped: {e}; nothing done is lost, re-run `icllama deploy` to continue") \
                from None

    def _deploy(self, plan: Plan, export: Export) -> DeployReport:
        names = [s.name for s in plan.shards]
        missing = [n for n in names if n not in self.entries]
        if missing:
            raise UserError(f"dfx.json has no entry for {', '.join(missing)}; write the plan's canisters into it "
                            "(`icllama plan MODEL --write-dfx`, which deploy also does)")
        known = self.ids.read()
        ids, created = {}, set()
        for name in names:
            canister_id = self._existing(name, known.get(name))
            if canister_id is None:
                canister_id = self._create(name)
                created.add(name)
            ids[name] = canister_id
        head = ids["head"]
        code = {name: self._install(name, ids[name], self._init(plan, name, head)) for name in names}
        for name in names:
            if name != "head":
                self._add_controller(name, ids[name], head)
        started = time.perf_counter()
        uploads = self._upload(plan, export, ids, code)
        upload_seconds = time.perf_counter() - started
        reply = self.canisters.canister(head, self.entries["head"].did).update("set_pipeline", pipeline_arg(plan, ids))
        if "err" in reply:
            raise UserError(f"wiring the head to its stages failed: {reply['err']}")
        deployed = tuple(DeployedCanister(n, ids[n].to_text(), n in created, code[n], uploads.get(n)) for n in names)
        return DeployReport(deployed, head.to_text(), sum(u.bytes_sent for u in uploads.values()), upload_seconds)

    def _init(self, plan: Plan, name: str, head: Principal) -> dict[str, Any]:
        return head_init(plan, self.generate_allowlist) if name == "head" else yblock_init(plan, head)

    def _existing(self, name: str, canister_id: Principal | None) -> Principal | None:
        if canister_id is None:
            return None
        try:
            status = self.management.update("canister_status", {"canister_id": canister_id})
        except CallFailed as e:
            if e.error_code == "IC0301":  # the network no longer has it (a fresh state directory)
                return None
            if e.error_code == "IC0512":
                raise UserError(f"{name} ({canister_id}) in {self.ids.path} is not controlled by "
                                f"{self.canisters.sender}: deploy with the identity that created it (--identity), "
                                f"or remove {name!r} from that file to create a new canister") from None
            raise UserError(f"checking {name} ({canister_id}) failed: {e}") from None
        if "running" not in status["status"]:
            self.management.update("start_canister", {"canister_id": canister_id})
        return canister_id

    def _create(self, name: str) -> Principal:
        try:
            reply = self.management.update("provisional_create_canister_with_cycles", {
                "amount": self.cycles, "settings": None, "specified_id": None, "sender_canister_version": None})
        except CallFailed as e:
            raise UserError(f"creating canister {name} failed: {e}; the canisters created before it are recorded in "
                            f"{self.ids.path}: re-run `icllama deploy` to continue") from None
        canister_id = reply["canister_id"]
        self.ids.record(name, canister_id)  # at once: a later failure must not lose the canister
        return canister_id

    def _code(self, entry: CanisterEntry) -> tuple[bytes, bytes, str]:
        """The module to install for `entry`, its hash (as canister_status reports it) and its name."""
        if self.engine == "wasm" and entry.wasm is not None:
            try:
                wasm = ensure_built(entry.wasm) if entry.wasm == YBLOCK_WASM else entry.wasm
                module = wasm.read_bytes()
            except (BuildError, OSError) as e:
                raise UserError(f"cannot install the wasm module of {entry.name}: {e}; or deploy with "
                                "--engine python") from None
            return module, hashlib.sha256(module).digest(), wasm.name
        ref = ModuleRef(entry.class_path, self.version)
        return ref.to_wasm_module(), ref.module_hash, entry.class_path

    def _install(self, name: str, canister_id: Principal, init: dict[str, Any], mode: str | None = None) -> str:
        entry = self.entries[name]
        module, module_hash, code_name = self._code(entry)
        if mode is None:
            status = self.management.update("canister_status", {"canister_id": canister_id})
            if status["module_hash"] is None:
                mode = "install"
            elif status["module_hash"] != module_hash or not self._same_init(entry, canister_id, init):
                mode = "upgrade"  # keeps stable memory, so the uploaded shard stays and is reloaded
            else:
                return "unchanged"
        arg = encode(parse_did(entry.did.read_text()).init_args, [init])

        def install(mode: str) -> None:
            self.management.update("install_code", {
                "mode": {mode: None}, "canister_id": canister_id, "wasm_module": module,
                "arg": arg, "sender_canister_version": None})

        try:
            install(mode)
        except CallFailed as e:
            if mode != "upgrade":
                raise UserError(f"installing {code_name} on {name} ({canister_id}) failed: {e}") from None
            # The new code cannot take over the old state (its post_upgrade trapped, e.g. on a shard
            # it no longer reads): start the canister afresh; its shard is uploaded again.
            try:
                install("reinstall")
            except CallFailed as again:
                raise UserError(f"neither upgrading ({e}) nor reinstalling ({again}) {name} ({canister_id}) "
                                f"with {code_name} worked") from None
            mode = "reinstall"
        return {"install": "installed", "upgrade": "upgraded", "reinstall": "reinstalled"}[mode]

    def _same_init(self, entry: CanisterEntry, canister_id: Principal, init: dict[str, Any]) -> bool:
        """Whether the installed canister runs with these init arguments (its status shows them)."""
        try:
            status = self.canisters.canister(canister_id, entry.did).query("status")
        except CallFailed:
            return False  # it cannot even say (its heap was not restored): install it again
        return all(status.get(key) == value for key, value in init.items() if key in status)

    def _add_controller(self, name: str, canister_id: Principal, head: Principal) -> None:
        status = self.management.update("canister_status", {"canister_id": canister_id})
        controllers = list(status["settings"]["controllers"])
        if head not in controllers:
            self.management.update("update_settings", {
                "canister_id": canister_id, "settings": {"controllers": controllers + [head]},
                "sender_canister_version": None})

    def _upload(self, plan: Plan, export: Export, ids: dict[str, Principal], code: dict[str, str]
                ) -> dict[str, UploadResult]:
        files = {f.shard: f for f in export.files}

        def jobs(names: list[str]) -> list[tuple[ShardFile, CanisterShardTarget]]:
            return [(ShardFile(n, files[n].file, export.directory / files[n].file, files[n].size, files[n].sha256),
                     CanisterShardTarget(self.canisters.canister(ids[n], self.entries[n].did))) for n in names]

        try:
            return {r.label: r for r in upload_shards(jobs([s.name for s in plan.shards]), self.parallel,
                                                       self.progress)}
        except UploadsFailed as failed:
            stale = [e.label for e in failed.errors if isinstance(e, HeldBytesDiffer)]
            if len(stale) != len(failed.errors):
                raise
            done = {r.label: r for r in failed.results}
        # Those canisters hold another file (another plan's shard, or a corrupted upload): a
        # reinstall empties their stable memory, and they are uploaded again.
        for name in stale:
            code[name] = self._install(name, ids[name], self._init(plan, name, ids["head"]), mode="reinstall")
        return done | {r.label: r for r in upload_shards(jobs(stale), self.parallel, self.progress)}
