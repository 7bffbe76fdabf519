"""Who may do what to a deployed model, each checked with a second identity, in-process.

- Only controllers manage the canisters (management canister) and upload, load and wire shards.
- Only its head may call a yblock's `forward` and `reset_session`: not a user, not the yblock's
  own controller, not another head canister wired to the same yblocks.
- `generate` is open by default, or limited to an allowlist by the head's init arguments, which
  survive an upgrade and a restart of the network.

After every refused attempt the deployment still generates exactly what it generated before.
The same checks over HTTP with icp-py-core are in test_authorization_http.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cdk.principal import Principal
from client.agent import LocalCanisters
from replica.inprocess import CallFailed, LocalClient
from replica.loader import ModuleRef
from replica.network import Network
from tests.deployed_model import Deployment, ExportedModel, deploy, export_model, greedy

OWNER = Principal.self_authenticating(b"icllama test: the deploying controller")
STRANGER = Principal.self_authenticating(b"icllama test: a second identity")
FRIEND = Principal.self_authenticating(b"icllama test: an allowlisted user")
PROMPT = "the cat sat on the mat"
TOKENS = 8


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> ExportedModel:
    return export_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def network(tmp_path: Path) -> Network:
    return Network(tmp_path / "network")


@pytest.fixture
def deployed(network: Network, exported: ExportedModel, tmp_path: Path) -> Deployment:
    return deploy(LocalCanisters(LocalClient(network, OWNER)), exported, tmp_path / "client")


def as_(network: Network, principal: Principal) -> LocalCanisters:
    return LocalCanisters(LocalClient(network, principal))


def generated_ids(deployed: Deployment, who: LocalCanisters | None = None) -> list[int]:
    reply = deployed.head(who).update("generate", greedy(PROMPT, TOKENS))
    assert "ok" in reply, reply
    return reply["ok"]["ids"]


def refused(reply: dict, *phrases: str) -> str:
    assert "err" in reply, reply
    for phrase in phrases:
        assert phrase in reply["err"], reply["err"]
    return reply["err"]


def test_only_controllers_manage_the_deployed_canisters(network: Network, deployed: Deployment) -> None:
    before = generated_ids(deployed)
    management = deployed.management(as_(network, STRANGER))
    counter = ModuleRef("tests.canisters_for_tests.counter:Counter", "1").to_wasm_module()
    statuses = {name: deployed.management().update("canister_status", {"canister_id": canister_id})
                for name, canister_id in deployed.ids.items()}
    for name, canister_id in deployed.ids.items():
        target = {"canister_id": canister_id}
        attempts = {
            "install_code": {"mode": {"reinstall": None}, "canister_id": canister_id, "wasm_module": counter,
                             "arg": b"DIDL\x00\x01\x7d\x00", "sender_canister_version": None},
            "update_settings": {"canister_id": canister_id, "settings": {"controllers": [STRANGER]},
                                "sender_canister_version": None},
            "stop_canister": target, "start_canister": target, "canister_status": target,
            "delete_canister": target,
        }
        for method, arg in attempts.items():
            with pytest.raises(CallFailed) as caught:
                management.update(method, arg)
            assert caught.value.error_code == "IC0512", (name, method, caught.value)
            assert "Only controllers" in caught.value.message and STRANGER.to_text() in caught.value.message
    for name, canister_id in deployed.ids.items():
        after = deployed.management().update("canister_status", {"canister_id": canister_id})
        assert "running" in after["status"]
        assert after["settings"]["controllers"] == statuses[name]["settings"]["controllers"]
        assert STRANGER not in after["settings"]["controllers"]
        assert after["module_hash"] == statuses[name]["module_hash"]
    assert generated_ids(deployed) == before


def test_only_controllers_upload_load_and_wire_shards(network: Network, deployed: Deployment) -> None:
    before = generated_ids(deployed)
    stages = deployed.head().query("status")["stages"]
    stranger = as_(network, STRANGER)
    for name in deployed.ids:
        canister = deployed.canister(name, stranger)
        held = deployed.canister(name).query("upload_status", f"{name}.gguf")
        assert held["loaded"]
        # Overwriting the shard from offset 0, appending to it, starting another file, committing
        # and loading: each refused with who may, and the bytes held are unchanged.
        for offset, shard in ((0, f"{name}.gguf"), (held["held"], f"{name}.gguf"), (0, "other.gguf")):
            refused(canister.update("upload_chunk", shard, offset, b"\x00" * 1024), "only controllers",
                    STRANGER.to_text())
        refused(canister.update("upload_commit", f"{name}.gguf", held["held"]), "only controllers")
        refused(canister.update("load"), "only controllers")
        assert deployed.canister(name).query("upload_status", f"{name}.gguf") == held
    # The stranger cannot rewire the head to canisters of their choosing.
    pipeline = {"stages": [{"canister": STRANGER, "first_layer": 0, "last_layer": 4, "role": "layers",
                            "output_rows": None}], "prefill_chunk": 1}
    refused(deployed.head(stranger).update("set_pipeline", pipeline), "only controllers")
    assert deployed.head().query("status")["stages"] == stages
    assert generated_ids(deployed) == before


def forward_request(session: int, d_model: int) -> dict:
    return {"session": session, "pos": 0, "activations": bytes(4 * d_model), "n_tokens": 1, "sample": None}


def test_only_its_head_calls_forward_and_reset_session(network: Network, deployed: Deployment,
                                                       exported: ExportedModel, tmp_path: Path) -> None:
    before = generated_ids(deployed)
    head = deployed.ids["head"]
    d_model = exported.plan.d_model
    # A user, and the yblock's own controller: neither is its head.
    for who in (STRANGER, OWNER):
        for name in deployed.yblock_names:
            yblock = deployed.yblock(name, as_(network, who))
            for method, arg in (("forward", forward_request(7, d_model)), ("reset_session", 7)):
                refused(yblock.update(method, arg), f"only the head canister {head.to_text()} may call {method}",
                        f"{who.to_text()} may not")
            assert yblock.query("status")["sessions"] == 0
    # A second head, deployed by the stranger from the same (public) shard files and wired to the
    # owner's yblocks: it is a canister, not the head those yblocks were installed for.
    stranger = as_(network, STRANGER)
    rogue = deploy(stranger, exported, tmp_path / "stranger")
    rogue_head = rogue.head()
    stages = deployed.head().query("status")["stages"]
    assert rogue_head.update("set_pipeline", {"stages": stages, "prefill_chunk": 8}) == {"ok": None}
    reply = rogue_head.update("generate", greedy(PROMPT, TOKENS))
    error = refused(reply, "generation failed in stage 0", f"only the head canister {head.to_text()} may call "
                    "forward", f"{rogue.ids['head'].to_text()} may not")
    assert "generate again to retry" in error
    for name in deployed.yblock_names:
        assert deployed.yblock(name).query("status")["sessions"] == 0
    assert generated_ids(deployed) == before


def test_generate_is_open_by_default(network: Network, deployed: Deployment) -> None:
    assert deployed.head().query("status")["generate_allowlist"] is None
    assert generated_ids(deployed, as_(network, STRANGER)) == generated_ids(deployed)


def test_an_allowlist_limits_generation_and_survives_upgrade_and_restart(
        network: Network, deployed: Deployment, exported: ExportedModel, tmp_path: Path) -> None:
    expected = generated_ids(deployed)
    started = deployed.head().update("start", greedy(PROMPT, TOKENS))["ok"]  # before the list: the owner's
    deployed.upgrade("head", generate_allowlist=[FRIEND])
    assert deployed.head().query("status")["generate_allowlist"] == [FRIEND]

    def check(network: Network, deployed: Deployment) -> None:
        stranger = deployed.head(as_(network, STRANGER))
        for method, args in (("generate", (greedy(PROMPT, TOKENS),)), ("start", (greedy(PROMPT, TOKENS),))):
            refused(stranger.update(method, *args), f"{STRANGER.to_text()} may not call {method}",
                    "generate_allowlist")
        for method, args in (("poll", (started, 0)), ("result", (started,))):
            refused(stranger.query(method, *args), f"may not call {method}")
        assert generated_ids(deployed, as_(network, FRIEND)) == expected
        assert generated_ids(deployed) == expected  # a controller is always allowed

    check(network, deployed)
    # The list is an init argument: a restarted network rebuilds the head with it.
    network.stop()
    restarted = Network(network.state_dir)
    again = Deployment(LocalCanisters(LocalClient(restarted, OWNER)), exported, deployed.ids, deployed.report,
                       deployed.version)
    check(restarted, again)
    # An empty list leaves only the controllers; reopening is an upgrade without a list.
    again.upgrade("head", generate_allowlist=[])
    refused(again.head(as_(restarted, FRIEND)).update("generate", greedy(PROMPT, TOKENS)), "may not call generate")
    again.upgrade("head")
    assert generated_ids(again, as_(restarted, STRANGER)) == expected
