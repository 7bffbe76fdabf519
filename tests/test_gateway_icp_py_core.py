"""icp-py-core (Agent and Canister, unchanged) against `icllama start` running as a subprocess.

Certificate verification is on. icp-py-core 2.3.1 verifies with the official blst binding and
against the module-level root key `icp_certificate.certificate.IC_ROOT_KEY` (it ignores
Agent(root_key=...)), so a user of a local network installs blst and points that key at the one
/api/v2/status serves, exactly as agent-js users call fetchRootKey(). These tests do the same.
"""

from __future__ import annotations

import time

import cbor2
import httpx
import pytest
from icp_agent import system_state
from icp_agent.agent import sign_request
from icp_candid.candid import Types, encode
from icp_canister import Canister
from icp_canister.management import Management
from icp_certificate import certificate as icp_certificate
from icp_core.errors import CertificateVerificationError, QuerySignatureVerificationFailed, ReplicaReject
from icp_identity import Identity
from icp_principal import Principal

from tests.agent_envs import blst_binding_dir
from tests.gateway_support import (
    CANISTER_ID_ARG,
    COUNTER_DID,
    agent_for,
    create_canister,
    install_counter,
    start_network,
    stop_network,
)

pytestmark = pytest.mark.network

IDENTITIES = {
    "ed25519": lambda: Identity(type="ed25519"),
    "secp256k1": lambda: Identity(type="secp256k1"),
    "anonymous": lambda: Identity(anonymous=True),
}


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    running = start_network(tmp_path_factory.mktemp("icp-py-core-network"))
    yield running
    stop_network(running)


@pytest.fixture(scope="module")
def root_key(network) -> bytes:
    return cbor2.loads(agent_for(network.url).client.status())["root_key"]


@pytest.fixture
def verifying(root_key, monkeypatch):
    """icp-py-core set up to verify our certificates: blst importable, our root key trusted."""
    monkeypatch.syspath_prepend(str(blst_binding_dir()))
    monkeypatch.setattr(icp_certificate, "IC_ROOT_KEY", root_key)


@pytest.fixture(scope="module")
def counter(network) -> str:
    return install_counter(agent_for(network.url, Identity()))


def test_status_serves_the_root_key(network, root_key):
    status = cbor2.loads(agent_for(network.url).client.status())
    assert status["replica_health_status"] == "healthy"
    assert root_key.startswith(icp_certificate.DER_PREFIX) and len(root_key) == 133


@pytest.mark.parametrize("kind", IDENTITIES)
def test_update_and_query_through_canister_class(network, counter, verifying, kind):
    agent = agent_for(network.url, IDENTITIES[kind]())
    canister = Canister(agent, counter, candid_str=COUNTER_DID)
    before = canister.get()[0]["value"]
    assert canister.inc()[0]["value"] == before + 1  # update, certificate verified with blst
    assert canister.get()[0]["value"] == before + 1  # query
    assert canister.whoami()[0]["value"].to_str() == agent.get_principal().to_str()


@pytest.mark.parametrize("kind", IDENTITIES)
def test_management_canister_calls(network, verifying, kind):
    agent = agent_for(network.url, IDENTITIES[kind]())
    canister_id = create_canister(agent, verify_certificate=True)
    # icp-py-core's Management wrapper sends every call to aaaaa-aa, which the IC refuses for
    # canister_status (the effective canister id must be the managed canister); its types are used.
    status = agent.update(
        "aaaaa-aa", "canister_status",
        [{"type": CANISTER_ID_ARG, "value": {"canister_id": Principal.from_str(canister_id)}}],
        return_type=Management(agent).methods["canister_status"].retTypes, effective_canister_id=canister_id,
    )
    record = status[0]["value"]
    assert "running" in record["status"]
    assert [p.to_str() for p in record["settings"]["controllers"]] == [agent.get_principal().to_str()]


def test_rejects_decode_into_replica_reject(network, counter, verifying):
    agent = agent_for(network.url, Identity())
    canister = Canister(agent, counter, candid_str=COUNTER_DID)
    with pytest.raises(ReplicaReject) as caught:
        canister.inc_then_trap()
    assert caught.value.reject_code == 5 and "IC05" in str(caught.value)
    # A non-controller may not manage the counter: a certified reject from the management canister.
    with pytest.raises(ReplicaReject, match="controller"):
        agent.update("aaaaa-aa", "stop_canister",
                     [{"type": CANISTER_ID_ARG, "value": {"canister_id": Principal.from_str(counter)}}],
                     effective_canister_id=counter)


def signed_request(agent, request_type: str, canister: str, method: str) -> tuple[bytes, bytes]:
    """A request built and signed by icp-py-core itself, for endpoints its Agent has no call for."""
    content = {
        "request_type": request_type,
        "sender": agent.identity.sender().bytes,
        "canister_id": Principal.from_str(canister).bytes,
        "method_name": method,
        "arg": encode([]),
        "ingress_expiry": agent.get_expiry_date(),
    }
    return sign_request(content, agent.identity)


def test_query_signatures_verify_with_icp_py_core(network, counter, root_key):
    # Without a delegation icp-py-core derives the subnet id from Agent.root_key, so pass ours.
    agent = agent_for(network.url, Identity(), root_key=root_key)
    request_id, body = signed_request(agent, "query", counter, "get")
    response = agent.query_endpoint(counter, body)
    # cbor2 6 decodes a self-described reply immutably, so `signatures` arrives as a tuple, which
    # icp-py-core 2.3.1's `isinstance(signatures, list)` turns into MissingSignature; the IC tags
    # its replies the same way, so Agent(verify_query_signatures=True) fails against it too.
    response = {**response, "signatures": list(response["signatures"])}
    agent._verify_query_response_signatures(response, request_id, counter)  # fetches the node key
    forged = {**response, "reply": {"arg": encode([{"type": Types.Nat, "value": 999}])}}
    with pytest.raises(QuerySignatureVerificationFailed):
        agent._verify_query_response_signatures(forged, request_id, counter)


def test_read_state_paths_agents_request(network, counter, verifying, root_key):
    agent = agent_for(network.url, Identity())
    # (icp_agent.system_state.time is broken in 2.3.1: it LEB128-decodes the int lookup_time returns.)
    certified_time = agent.read_state_raw(counter, [[b"time"]]).lookup_time()
    assert abs(certified_time - time.time_ns()) < 300 * 10**9
    assert len(system_state.canister_module_hash(agent, counter)) == 64
    controllers = system_state.canister_controllers(agent, counter)
    assert len(controllers) == 1
    subnet_id = Principal.self_authenticating(root_key).to_str()
    assert system_state.subnet_public_key(agent, counter, subnet_id) == root_key.hex()
    ranges = system_state.subnet_canister_ranges(agent, counter, subnet_id)
    assert any(low.bytes <= Principal.from_str(counter).bytes <= high.bytes for low, high in ranges)
    # the subnet's own range, and one id for each system canister it hosts at its mainnet id
    singles = sorted(low.to_str() for low, high in ranges if low.bytes == high.bytes)
    assert len(ranges) == 3 and singles == ["rkp4c-7iaaa-aaaaa-aaaca-cai", "um5iw-rqaaa-aaaaq-qaaba-cai"]
    assert system_state.subnet_public_key_direct(agent, subnet_id) == root_key.hex()


def test_polling_path_v2_call_then_read_state(network, counter, verifying):
    agent = agent_for(network.url, Identity(type="secp256k1"))
    request_id, body = signed_request(agent, "call", counter, "inc")
    response = httpx.post(f"{network.url}/api/v2/canister/{counter}/call", content=body,
                          headers={"Content-Type": "application/cbor"})
    assert response.status_code == 202 and response.content == b""
    reply = agent.poll_and_wait(counter, request_id, verify_certificate=True, return_type=[Types.Nat])
    assert reply[0]["value"] > 0


def test_verification_is_real_a_foreign_root_key_is_refused(network, counter, root_key, monkeypatch):
    monkeypatch.syspath_prepend(str(blst_binding_dir()))
    other = bytearray(root_key)
    other[-1] ^= 1  # not our key (and most likely not a valid point): blst must refuse
    monkeypatch.setattr(icp_certificate, "IC_ROOT_KEY", bytes(other))
    canister = Canister(agent_for(network.url, Identity()), counter, candid_str=COUNTER_DID)
    with pytest.raises(CertificateVerificationError):
        canister.inc()
    monkeypatch.setattr(icp_certificate, "IC_ROOT_KEY", icp_certificate.DER_PREFIX + bytes.fromhex(
        "814c0e6ec71fab583b08bd81373c255c3c371b2e84863c98a4f1e08b74235d14fb5d9c0cd546d9685f913a0c0b2cc534"
        "1583bf4b4392e467db96d65b9bb4cb717112f8472e0d5a4d14505ffd7484b01291091c5f87b98883463f98091a0baaae"
    ))  # the IC mainnet's root key: a valid key, but not the one that signed
    with pytest.raises(CertificateVerificationError, match="Signature verification failed"):
        canister.inc()
