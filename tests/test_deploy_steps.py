"""client.deploy's steps in-process (the same Deployer `icllama deploy` runs over HTTP): an
idempotent re-run, ids recorded the moment a canister exists, changed code upgraded with the
shards kept, another plan's shards replaced by a reinstall, and the errors that say what to do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from cdk.principal import Principal
from client.agent import LocalCanisters
from client.deploy import CanisterIds, Deployer, read_dfx
from client.errors import UserError
from client.head_client import GenerationOptions
from replica.inprocess import CallFailed, LocalClient
from replica.network import Network
from tests.deployed_model import export_file, export_model

PROMPT = "Once upon a time"


@pytest.fixture
def network() -> Network:
    return Network(None)


def deployer(canisters, state: Path, dfx_json: Path, version: str = "1",
             generate_allowlist: tuple[Principal, ...] | None = None) -> Deployer:
    return Deployer(canisters, CanisterIds.of(state, "local"), read_dfx(dfx_json), version=version, parallel=2,
                    progress=False, generate_allowlist=generate_allowlist)


def generate(canisters: LocalCanisters, head: str) -> list[int]:
    head_canister = canisters.canister(Principal.from_text(head), Path("head.did"))
    return head_canister.update("generate", GenerationOptions(max_tokens=6).request(PROMPT))["ok"]["ids"]


def outcomes(report) -> set[tuple[str, str, str]]:
    return {(c.code, c.upload.outcome, str(c.created)) for c in report.canisters}


def test_redeploy_reuses_everything_and_sends_nothing(network, tmp_path):
    exported = export_model(tmp_path / "model")
    owner = LocalCanisters(LocalClient(network))
    first = deployer(owner, tmp_path / "state", exported.dfx_json).deploy(exported.plan, exported.export)
    assert outcomes(first) == {("installed", "uploaded", "True")}
    assert first.bytes_uploaded == sum(f.size for f in exported.export.files)
    ids = CanisterIds.of(tmp_path / "state", "local").read()
    assert {n: i.to_text() for n, i in ids.items()} == {c.name: c.canister_id for c in first.canisters}
    ids_before = generate(owner, first.head)

    again = deployer(owner, tmp_path / "state", exported.dfx_json).deploy(exported.plan, exported.export)
    assert outcomes(again) == {("unchanged", "already loaded", "False")} and again.bytes_uploaded == 0
    assert len(network.canister_ids()) == 3
    assert generate(owner, again.head) == ids_before


@dataclass(frozen=True)
class FailingCreations:
    """Canisters whose management canister refuses creations after the first `allowed`."""

    inner: LocalCanisters
    allowed: int
    count: list

    @property
    def sender(self):
        return self.inner.sender

    def canister(self, canister_id, did):
        canister = self.inner.canister(canister_id, did)
        if not canister_id.is_management:
            return canister
        outer = self

        class Management:
            canister_id = canister.canister_id

            def update(self, method, *args):
                if method == "provisional_create_canister_with_cycles":
                    outer.count.append(method)
                    if len(outer.count) > outer.allowed:
                        raise CallFailed(2, "the subnet is busy", None)
                return canister.update(method, *args)

            def query(self, method, *args):
                return canister.query(method, *args)

        return Management()


def test_created_canisters_are_recorded_at_once_and_reused_after_a_failure(network, tmp_path):
    exported = export_model(tmp_path / "model")
    owner = LocalCanisters(LocalClient(network))
    failing = FailingCreations(owner, allowed=1, count=[])
    with pytest.raises(UserError,
                       match="creating canister yblock_0 failed: .*the subnet is busy.*re-run `icllama deploy`"):
        deployer(failing, tmp_path / "state", exported.dfx_json).deploy(exported.plan, exported.export)
    recorded = CanisterIds.of(tmp_path / "state", "local").read()
    assert list(recorded) == ["head"] and network.canister_ids() == [recorded["head"]]

    report = deployer(owner, tmp_path / "state", exported.dfx_json).deploy(exported.plan, exported.export)
    head = next(c for c in report.canisters if c.name == "head")
    assert head.canister_id == recorded["head"].to_text() and not head.created
    assert len(network.canister_ids()) == 3  # the head was not created twice


def test_changed_code_is_upgraded_and_the_shards_stay(network, tmp_path):
    exported = export_model(tmp_path / "model")
    owner = LocalCanisters(LocalClient(network))
    first = deployer(owner, tmp_path / "state", exported.dfx_json, version="1").deploy(exported.plan, exported.export)
    before = generate(owner, first.head)
    upgraded = deployer(owner, tmp_path / "state", exported.dfx_json, version="2").deploy(exported.plan,
                                                                                         exported.export)
    # The Python head's code version changed; the wasm yblocks' module did not.
    assert {c.name: c.code for c in upgraded.canisters} == {
        "head": "upgraded", **{s.name: "unchanged" for s in exported.plan.shards if s.role != "head"}}
    assert {c.upload.outcome for c in upgraded.canisters} == {"already loaded"} and upgraded.bytes_uploaded == 0
    assert generate(owner, upgraded.head) == before


def test_another_plan_replaces_the_shards_by_reinstalling(network, tmp_path):
    two = export_model(tmp_path / "model")
    owner = LocalCanisters(LocalClient(network))
    deployer(owner, tmp_path / "state", two.dfx_json).deploy(two.plan, two.export)
    one = export_file(two.model, tmp_path / "model", shards=1)  # the same dfx.json, now one yblock
    report = deployer(owner, tmp_path / "state", one.dfx_json).deploy(one.plan, one.export)
    by_name = {c.name: c for c in report.canisters}
    assert set(by_name) == {"head", "yblock_0"}
    assert by_name["yblock_0"].code == "reinstalled" and by_name["yblock_0"].upload.outcome == "uploaded"
    assert by_name["head"].upload.outcome in ("already loaded", "uploaded")
    assert len(generate(owner, report.head)) == 6


def test_errors_say_what_to_do(network, tmp_path):
    exported = export_model(tmp_path / "model")
    owner = LocalCanisters(LocalClient(network))
    deployer(owner, tmp_path / "state", exported.dfx_json).deploy(exported.plan, exported.export)
    stranger = LocalCanisters(LocalClient(network, sender=Principal.self_authenticating(b"a stranger's key")))
    with pytest.raises(UserError, match=r"head \(.*\) in .*canister_ids.json is not controlled by .*--identity"):
        deployer(stranger, tmp_path / "state", exported.dfx_json).deploy(exported.plan, exported.export)

    entries = read_dfx(exported.dfx_json)
    del entries["yblock_1"]
    partial = Deployer(owner, CanisterIds.of(tmp_path / "state", "local"), entries, progress=False)
    with pytest.raises(UserError, match="dfx.json has no entry for yblock_1.*--write-dfx"):
        partial.deploy(exported.plan, exported.export)

    damaged = tmp_path / "damaged"
    (damaged / "local").mkdir(parents=True)
    (damaged / "local" / "canister_ids.json").write_text("{not json")
    with pytest.raises(UserError, match="canister_ids.json is damaged.*remove it to deploy new canisters"):
        deployer(owner, damaged, exported.dfx_json).deploy(exported.plan, exported.export)


def test_deploy_sets_and_clears_the_generate_allowlist(network, tmp_path):
    exported = export_model(tmp_path / "model")
    owner = LocalCanisters(LocalClient(network))
    allowed = Principal.self_authenticating(b"allowed user's key")
    stranger = Principal.self_authenticating(b"a stranger's key")
    report = deployer(owner, tmp_path / "state", exported.dfx_json, generate_allowlist=(allowed,)).deploy(
        exported.plan, exported.export)
    head = Principal.from_text(report.head)

    def generate_as(sender: Principal) -> dict:
        canister = LocalCanisters(LocalClient(network, sender=sender)).canister(head, Path("head.did"))
        return canister.update("generate", GenerationOptions(max_tokens=4).request(PROMPT))

    assert "may not call generate" in generate_as(stranger)["err"]
    assert "ok" in generate_as(allowed) and "ok" in generate_as(owner.sender)  # controllers always may

    opened = deployer(owner, tmp_path / "state", exported.dfx_json).deploy(exported.plan, exported.export)
    assert {c.name: c.code for c in opened.canisters}["head"] == "upgraded"
    assert opened.bytes_uploaded == 0  # an upgrade keeps the uploaded shard
    assert generate_as(stranger)["ok"]["ids"] == generate_as(allowed)["ok"]["ids"]
