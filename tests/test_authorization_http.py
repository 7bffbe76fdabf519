"""The authorization checks of test_authorization.py over the IC HTTP interface: `icllama start`
as a subprocess, a model deployed by its owner's PEM identity with icp-py-core, and a second,
signed identity (secp256k1, as dfx makes them) trying what it must not do. Every refusal is a
certified reply or reject that the agent decodes; the owner's generation is unchanged after.
"""

from __future__ import annotations

import pytest

from client.agent import RemoteCanisters, connect
from client.head_client import GenerationOptions, HeadClient, HeadError
from client.identity import Identity, generate
from replica.inprocess import CallFailed
from replica.loader import ModuleRef
from tests.deployed_model import Deployment, deploy, export_model
from tests.gateway_support import NetworkProcess, start_network, stop_network

pytestmark = pytest.mark.network

PROMPT = "the cat sat on the mat"
OPTIONS = GenerationOptions(max_tokens=8)
OWNER, STRANGER, FRIEND = generate("owner"), generate("stranger", "secp256k1"), generate("friend")


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> NetworkProcess:
    network = start_network(tmp_path_factory.mktemp("network"))
    yield network
    stop_network(network)


@pytest.fixture(scope="module")
def deployed(network: NetworkProcess, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    exported = export_model(tmp_path_factory.mktemp("model"))
    return deploy(as_(network, OWNER), exported, tmp_path_factory.mktemp("client"))


@pytest.fixture(scope="module")
def expected(network: NetworkProcess, deployed: Deployment) -> list[int]:
    return generated(network, deployed, OWNER)


def as_(network: NetworkProcess, identity: Identity) -> RemoteCanisters:
    return RemoteCanisters(connect(network.url, identity))


def generated(network: NetworkProcess, deployed: Deployment, identity: Identity) -> list[int]:
    return list(HeadClient(network.url, deployed.ids["head"].to_text(), identity).generate(PROMPT, OPTIONS).ids)


def refused(reply: dict, *phrases: str) -> None:
    assert "err" in reply, reply
    for phrase in phrases:
        assert phrase in reply["err"], reply["err"]


def test_a_stranger_cannot_manage_the_canisters(network: NetworkProcess, deployed: Deployment,
                                                expected: list[int]) -> None:
    management = deployed.management(as_(network, STRANGER))
    stranger = STRANGER.principal
    for name, canister_id in deployed.ids.items():
        target = {"canister_id": canister_id}
        for method, arg in (
            ("install_code", {"mode": {"reinstall": None}, "canister_id": canister_id, "arg": b"DIDL\x00\x00",
                              "wasm_module": ModuleRef("tests.canisters_for_tests.counter:Counter", "1")
                              .to_wasm_module(), "sender_canister_version": None}),
            ("update_settings", {"canister_id": canister_id, "settings": {"controllers": [stranger]},
                                 "sender_canister_version": None}),
            ("stop_canister", target), ("canister_status", target), ("delete_canister", target),
        ):
            with pytest.raises(CallFailed) as caught:
                management.update(method, arg)
            assert caught.value.error_code == "IC0512" and stranger.to_text() in caught.value.message, (name, method)
    statuses = [deployed.management().update("canister_status", {"canister_id": c}) for c in deployed.ids.values()]
    assert all("running" in s["status"] and stranger not in s["settings"]["controllers"] for s in statuses)
    assert generated(network, deployed, OWNER) == expected


def test_a_stranger_cannot_upload_load_or_rewire(network: NetworkProcess, deployed: Deployment,
                                                 expected: list[int]) -> None:
    stranger = as_(network, STRANGER)
    for name in deployed.ids:
        held = deployed.canister(name).query("upload_status", f"{name}.gguf")
        canister = deployed.canister(name, stranger)
        refused(canister.update("upload_chunk", f"{name}.gguf", 0, b"\x00" * 4096), "only controllers",
                STRANGER.principal.to_text())
        refused(canister.update("upload_commit", f"{name}.gguf", held["held"]), "only controllers")
        refused(canister.update("load"), "only controllers")
        assert deployed.canister(name).query("upload_status", f"{name}.gguf") == held
    stages = deployed.head().query("status")["stages"]
    refused(deployed.head(stranger).update("set_pipeline", {"stages": stages[:1], "prefill_chunk": 1}),
            "only controllers")
    assert generated(network, deployed, OWNER) == expected


def test_only_the_head_calls_a_yblock(network: NetworkProcess, deployed: Deployment, expected: list[int]) -> None:
    d_model = deployed.exported.plan.d_model
    request = {"session": 1, "pos": 0, "activations": bytes(4 * d_model), "n_tokens": 1, "sample": None}
    head = deployed.ids["head"].to_text()
    for identity in (STRANGER, OWNER):  # the owner controls the yblocks, but is not their head
        for name in deployed.yblock_names:
            yblock = deployed.yblock(name, as_(network, identity))
            refused(yblock.update("forward", request), f"only the head canister {head} may call forward",
                    f"{identity.principal.to_text()} may not")
            refused(yblock.update("reset_session", 1), f"only the head canister {head} may call reset_session")
            assert yblock.query("status")["sessions"] == 0
    assert generated(network, deployed, OWNER) == expected


def test_generate_is_open_then_allowlisted(network: NetworkProcess, deployed: Deployment, expected: list[int]) -> None:
    assert generated(network, deployed, STRANGER) == expected
    deployed.upgrade("head", generate_allowlist=[FRIEND.principal])
    try:
        stranger = HeadClient(network.url, deployed.ids["head"].to_text(), STRANGER)
        with pytest.raises(HeadError, match=f"{STRANGER.principal.to_text()} may not call generate"):
            stranger.generate(PROMPT, OPTIONS)
        with pytest.raises(HeadError, match="may not call start"):
            next(stranger.stream(PROMPT, OPTIONS))
        assert generated(network, deployed, FRIEND) == expected
        assert generated(network, deployed, OWNER) == expected
    finally:
        deployed.upgrade("head")
    assert generated(network, deployed, STRANGER) == expected
