"""ic-py 1.0.1, unchanged and in its own venv (it needs cbor2<6), against `icllama start`."""

from __future__ import annotations

import json
import subprocess

import pytest
from icp_identity import Identity

from tests.agent_envs import ic_py_python
from tests.gateway_support import REPO, agent_for, install_counter, start_network, stop_network

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    running = start_network(tmp_path_factory.mktemp("ic-py-network"))
    yield running
    stop_network(running)


def test_ic_py_update_query_and_management(network):
    counter = install_counter(agent_for(network.url, Identity()), start=10)
    did = REPO / "tests" / "canisters_for_tests" / "counter.did"
    result = subprocess.run(
        [str(ic_py_python()), str(REPO / "tests" / "ic_py_client.py"), network.url, counter, str(did)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    expected = 10
    for kind in ("ed25519", "secp256k1", "anonymous"):
        answer = answers[kind]
        assert answer["before"] == expected
        expected += 1
        assert answer["incremented"] == answer["after"] == expected
        assert answer["whoami"] == answer["sender"]
        assert answer["created"].endswith("-cai")
    assert answers["anonymous"]["sender"] == "2vxsx-fae"
    # ic-py's Canister class parses counter.did and decodes replies to plain values.
    assert answers["canister_class"] == {"inc": expected + 1, "get": expected + 1}
