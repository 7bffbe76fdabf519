"""Installing real wasm through the management canister: raw and gzipped modules, the chunk store
and install_chunked_code with the IC's limits and messages, refused modules, module hashes, and
metadata sections at read_state with the IC's visibility rule."""

from __future__ import annotations

import gzip
import hashlib
import random
import time

import cbor2
import pytest
import wasmtime
from icp_agent.agent import sign_request
from icp_identity import Identity

from cdk.candid import T, encode
from cdk.principal import Principal
from replica.api_types import IngressRejected
from replica.auth import EnvelopeRejected
from replica.certification import NetworkKeys
from replica.chunk_store import CHUNK_BYTES
from replica.config import NetworkConfig
from replica.engines.wasm import wasm_binary as wb
from replica.gateway_endpoints import Endpoints
from replica.gateway_state import CertifiedStateSource, IngressLedger, canister_ranges
from replica.hash_tree import lookup_path
from replica.inprocess import MANAGEMENT, LocalClient
from replica.loader import ModuleRef, load_class
from replica.network import Network
from replica.wasm_module import read_module
from tests.management_calls import canister_status, failure, install_chunked, install_code, stored_chunks, upload_chunk

COUNTER = "tests.canisters_for_tests.counter:Counter"
COUNTER_INIT_ARG = encode([T.nat], [7])  # the counter's init (start : nat)
MiB = 1024 * 1024

# A canister whose init keeps the length of its argument, a query `get` that replies it as a
# one-byte Candid blob, and metadata sections.
CANISTER_WAT = """
(module
  (import "ic0" "msg_arg_data_size" (func $arg_size (result i32)))
  (import "ic0" "msg_reply_data_append" (func $append (param i32 i32)))
  (import "ic0" "msg_reply" (func $reply))
  (@custom "icp:public candid:service" "service : { get : () -> (blob) query }")
  (@custom "icp:private secret" "s3cret")
  (memory (export "memory") 1)
  (data (i32.const 0) "DIDL\\01\\6d\\7b\\01\\00\\01")  ;; (blob) of one byte, the byte at 10
  (global $init_arg_size (mut i32) (i32.const 0))
  (func (export "canister_init") (global.set $init_arg_size (call $arg_size)))
  (func (export "canister_query get")
    (i32.store8 (i32.const 10) (global.get $init_arg_size))
    (call $append (i32.const 0) (i32.const 11))
    (call $reply))
  %s)
"""


def canister_wasm(extra: str = "") -> bytes:
    return bytes(wasmtime.wat2wasm(CANISTER_WAT % extra))


def _module(fields: str) -> bytes:
    return bytes(wasmtime.wat2wasm(f'(module {fields} (memory (export "memory") 1))'))


@pytest.fixture
def client() -> LocalClient:
    return LocalClient(Network(None, NetworkConfig()))


# --- decoding and hashing ----------------------------------------------------------------------
def test_gzipped_module_decodes_to_the_raw_one_and_hashes_as_given():
    raw = canister_wasm()
    packed = gzip.compress(raw)
    module = read_module(packed)
    assert module.wasm == raw
    assert module.module_hash == hashlib.sha256(packed).digest() != hashlib.sha256(raw).digest()
    assert read_module(raw).module_hash == hashlib.sha256(raw).digest()


@pytest.mark.parametrize("blob, message", [
    (b"\x1f\x8b\x08" + b"\0" * 10, "invalid Wasm module: gzip stream is too short"),
    # A footer stating fewer bytes than the stream holds: at most one byte more is inflated.
    (gzip.compress(b"\0asm\x01\0\0\0")[:-4] + (4).to_bytes(4, "little"),
     "specified uncompressed size 4 does not match extracted size 5"),
    (gzip.compress(b"\0asm\x01\0\0\0")[:-4] + (100 * MiB + 1).to_bytes(4, "little"),
     f"Wasm module size {100 * MiB + 1} exceeds the maximum allowed size of {100 * MiB}"),
    (b"\x1f\x8b\x08" + b"\xff" * 13 + (8).to_bytes(4, "little"), "failed to decode compressed Wasm module"),
    (b"not a module", "unsupported canister module format"),
    # what validation refuses, named as the IC names it
    (_module('(import "ic0" "no_such_function" (func))'),
     "Module imports function 'no_such_function' from 'ic0' that is not exported by the runtime."),
    (_module('(func (export "canister_foo"))'), "Exporting reserved function 'canister_foo' with \"canister_\" prefix"),
    (_module('(@custom "icp:secret" "x")'), "Custom section 'icp:secret' has no public/private scope defined."),
])
def test_a_module_the_ic_refuses_is_refused_with_its_message(client, blob, message):
    canister = client.create_canister()
    error = failure(lambda: install_code(client, canister, blob))
    assert error.error_code == "IC0505"
    assert error.message.startswith("Canister's Wasm module is not valid: ")
    assert message in error.message
    assert canister_status(client, canister)["module_hash"] is None


# --- the chunk store ---------------------------------------------------------------------------
def test_chunks_are_stored_by_sha256_once_and_cleared(client):
    canister = client.create_canister()
    first, second = b"a" * 1000, b"b" * CHUNK_BYTES  # the largest chunk is accepted
    assert upload_chunk(client, canister, first) == hashlib.sha256(first).digest()
    assert upload_chunk(client, canister, second) == hashlib.sha256(second).digest()
    assert upload_chunk(client, canister, first) == hashlib.sha256(first).digest()  # again: no new slot
    assert stored_chunks(client, canister) == [hashlib.sha256(first).digest(), hashlib.sha256(second).digest()]
    report = canister_status(client, canister)
    # Each chunk takes a whole 1 MiB slot, counted in the canister's memory.
    assert report["memory_metrics"]["wasm_chunk_store_size"] == 2 * MiB
    assert report["memory_size"] >= 2 * MiB
    client.update(MANAGEMENT, "clear_chunk_store", {"canister_id": canister})
    assert stored_chunks(client, canister) == []
    assert canister_status(client, canister)["memory_metrics"]["wasm_chunk_store_size"] == 0


def test_chunk_over_1_mib_is_refused(client):
    canister = client.create_canister()
    error = failure(lambda: upload_chunk(client, canister, b"x" * (CHUNK_BYTES + 1)))
    assert error.error_code == "IC0504"
    assert error.message.startswith(
        "Error from Wasm chunk store: Wasm chunk size 1048577 exceeds the maximum chunk size of 1048576")


def test_chunk_store_holds_100_chunks(client):
    canister = client.create_canister()
    for i in range(100):
        upload_chunk(client, canister, f"chunk {i}".encode())
    error = failure(lambda: upload_chunk(client, canister, b"one too many"))
    assert error.message.startswith(
        f"Error from Wasm chunk store: Wasm chunk store has already reached maximum capacity of {100 * MiB} bytes")
    upload_chunk(client, canister, b"chunk 7")  # a chunk already stored is still accepted
    assert len(stored_chunks(client, canister)) == 100


def test_only_controllers_and_the_canister_use_its_chunk_store(client):
    canister = client.create_canister()
    stranger = Principal.self_authenticating(b"stranger")
    error = failure(lambda: upload_chunk(client, canister, b"abc", sender=stranger))
    assert error.error_code == "IC0512"
    assert stranger.to_text() in error.message
    assert stored_chunks(client, canister) == []


def test_install_chunked_code_assembles_the_chunks_in_the_given_order(client):
    canister = client.create_canister()
    descriptor = ModuleRef(COUNTER, "1").to_wasm_module()  # a Python class installs the same way
    parts = [descriptor[:10], descriptor[10:25], descriptor[25:]]
    hashes = [upload_chunk(client, canister, part) for part in reversed(parts)][::-1]
    install_chunked(client, canister, hashes, hashlib.sha256(descriptor).digest(), arg=COUNTER_INIT_ARG)
    assert client.query(canister, "get") == 7
    assert canister_status(client, canister)["module_hash"] == ModuleRef(COUNTER, "1").module_hash


def test_install_chunked_code_checks_the_module_hash_and_the_chunks(client):
    canister = client.create_canister()
    module = canister_wasm()
    hashes = [upload_chunk(client, canister, module[:100]), upload_chunk(client, canister, module[100:])]
    wrong = failure(lambda: install_chunked(client, canister, hashes[::-1], hashlib.sha256(module).digest()))
    assembled = hashlib.sha256(module[100:] + module[:100]).hexdigest()
    assert wrong.error_code == "IC0504"
    assert wrong.message == (f"Error from Wasm chunk store: Wasm module hash {assembled} does not match given hash "
                             f"{hashlib.sha256(module).hexdigest()}")
    unknown = hashlib.sha256(b"never uploaded").digest()
    absent = failure(lambda: install_chunked(client, canister, [hashes[0], unknown], hashlib.sha256(module).digest()))
    assert absent.message.startswith(f"Error from Wasm chunk store: Chunk hash {unknown.hex()} was not found")
    assert canister_status(client, canister)["module_hash"] is None


def test_install_chunked_code_from_another_store_canister(client):
    store, target = client.create_canister(), client.create_canister()
    descriptor = ModuleRef(COUNTER, "1").to_wasm_module()
    digest = upload_chunk(client, store, descriptor)
    assert stored_chunks(client, target) == []
    # A controller of the target alone may not use another canister's store.
    outsider = Principal.self_authenticating(b"target controller only")
    client.update(MANAGEMENT, "update_settings", {"canister_id": target, "settings": {
        "controllers": [client.sender, outsider]}, "sender_canister_version": None})
    refused = failure(lambda: install_chunked(client, target, [digest], hashlib.sha256(descriptor).digest(),
                                              store=store, sender=outsider, arg=COUNTER_INIT_ARG))
    assert refused.error_code == "IC0512"
    install_chunked(client, target, [digest], hashlib.sha256(descriptor).digest(), store=store,
                    arg=COUNTER_INIT_ARG)
    assert client.query(target, "get") == 7


# --- wasm modules ------------------------------------------------------------------------------
def test_raw_and_gzipped_wasm_install_with_the_sha256_of_the_bytes_given(client):
    raw = canister_wasm()
    packed = gzip.compress(raw)
    first, second = client.create_canister(), client.create_canister()
    install_code(client, first, raw, arg=b"12345")
    install_code(client, second, packed, arg=b"123")
    assert canister_status(client, first)["module_hash"] == hashlib.sha256(raw).digest()
    assert canister_status(client, second)["module_hash"] == hashlib.sha256(packed).digest()
    assert canister_status(client, first)["memory_metrics"]["wasm_binary_size"] == len(raw)
    assert client.query(first, "get") == bytes([5])  # typed by its candid:service metadata
    assert client.query(second, "get") == bytes([3])


def test_reinstall_and_upgrade_change_the_module_hash(client):
    canister = client.create_canister()
    install_code(client, canister, canister_wasm(), arg=b"1")
    upgraded = canister_wasm('(func (export "canister_post_upgrade") (global.set $init_arg_size (i32.const 42)))')
    install_code(client, canister, upgraded, mode={"upgrade": None})
    assert canister_status(client, canister)["module_hash"] == hashlib.sha256(upgraded).digest()
    assert client.query(canister, "get") == bytes([42])
    install_code(client, canister, canister_wasm(), mode={"reinstall": None}, arg=b"1234")
    assert canister_status(client, canister)["module_hash"] == hashlib.sha256(canister_wasm()).digest()
    assert client.query(canister, "get") == bytes([4])


def test_install_on_a_non_empty_canister_is_refused(client):
    canister = client.create_canister()
    install_code(client, canister, canister_wasm())
    error = failure(lambda: install_code(client, canister, canister_wasm()))
    assert error.error_code == "IC0514"


def test_a_trapping_init_installs_nothing(client):
    canister = client.create_canister()
    trapping = _module('(func (export "canister_init") unreachable)')
    error = failure(lambda: install_code(client, canister, trapping))
    assert error.error_code == "IC0502"
    assert "unreachable" in error.message
    assert canister_status(client, canister)["module_hash"] is None


def test_module_over_2_mib_installs_through_chunks_only(client):
    # A custom section of 3 MiB makes the module too large for one ingress message (2 MiB).
    module = canister_wasm() + _custom_section("padding", random.Random(0).randbytes(3 * MiB))
    canister = client.create_canister()
    with pytest.raises(IngressRejected) as too_big:
        install_code(client, canister, module)
    assert too_big.value.http_status == 413
    hashes = [upload_chunk(client, canister, module[i:i + CHUNK_BYTES]) for i in range(0, len(module), CHUNK_BYTES)]
    assert len(hashes) == 4
    install_chunked(client, canister, hashes, hashlib.sha256(module).digest(), arg=b"12")
    assert canister_status(client, canister)["module_hash"] == hashlib.sha256(module).digest()
    assert client.query(canister, "get") == bytes([2])


def _custom_section(name: str, content: bytes) -> bytes:
    body = wb.name_bytes(name) + content
    return bytes([wb.CUSTOM]) + wb.uleb(len(body)) + body


# --- metadata at read_state --------------------------------------------------------------------
@pytest.fixture
def gateway(tmp_path):
    config = NetworkConfig()
    network = Network(None, config)
    keys = NetworkKeys.load_or_create(tmp_path)
    ledger = IngressLedger()
    ranges = canister_ranges(config.first_canister_index, config.canister_range_size)
    endpoints = Endpoints(network, keys, CertifiedStateSource(network, keys, ledger, ranges), ledger,
                          config.limits.ingress_message_bytes)
    yield endpoints, LocalClient(network)


def read_state(endpoints: Endpoints, identity: Identity, canister: Principal, *labels: bytes):
    """The lookup of /canister/<id>/<labels...> in a certificate read_state returns."""
    path = [b"canister", canister.bytes, *labels]
    _, body = sign_request({"request_type": "read_state", "sender": identity.sender().bytes,
                            "ingress_expiry": time.time_ns() + 120 * 10**9, "paths": [path]}, identity)
    response = endpoints.read_state("canister", canister.to_text(), body)
    tree = cbor2.loads(cbor2.loads(response.body)["certificate"])["tree"]
    return lookup_path(path, tree)


def test_python_canister_publishes_its_did_as_public_candid_service(gateway):
    endpoints, client = gateway
    counter = client.install(COUNTER, 0)
    found = read_state(endpoints, Identity(anonymous=True), counter, b"metadata", b"candid:service")
    did = load_class(ModuleRef(COUNTER, "1")).did_text
    assert found.outcome == "found" and found.value == did.encode()


def test_private_metadata_is_for_controllers_only(gateway):
    endpoints, client = gateway
    controller = Identity()
    owner = Principal(controller.sender().bytes)
    canister = client.create_canister(controllers=[client.sender, owner])
    install_code(client, canister, canister_wasm())
    public = read_state(endpoints, Identity(anonymous=True), canister, b"metadata", b"candid:service")
    assert public.value == b"service : { get : () -> (blob) query }"
    assert read_state(endpoints, controller, canister, b"metadata", b"secret").value == b"s3cret"
    with pytest.raises(EnvelopeRejected) as refused:
        read_state(endpoints, Identity(anonymous=True), canister, b"metadata", b"secret")
    assert refused.value.http_status == 403
    assert refused.value.message == "Custom section secret can only be requested by the controllers of the canister."
    # A section the module does not have is no error: the certificate proves it absent.
    missing = read_state(endpoints, Identity(anonymous=True), canister, b"metadata", b"no such section")
    assert missing.outcome == "absent"


def test_read_state_module_hash_is_the_sha256_of_the_module_as_given(gateway):
    endpoints, client = gateway
    packed = gzip.compress(canister_wasm())
    canister = client.create_canister()
    install_code(client, canister, packed)
    found = read_state(endpoints, Identity(anonymous=True), canister, b"module_hash")
    assert found.value == hashlib.sha256(packed).digest()


def test_python_callers_need_the_candid_interface_of_a_wasm_canister(client):
    bare = client.create_canister()
    install_code(client, bare, _module('(func (export "canister_update inc"))'))
    caller = client.install("tests.canisters_for_tests.caller:Caller")
    error = failure(lambda: client.update(caller, "call_inc", bare))
    assert f"Canister {bare.to_text()} is a wasm module without a candid:service metadata section" in error.message


def test_the_chunk_store_survives_a_restart(tmp_path):
    client = LocalClient(Network(tmp_path, NetworkConfig(genesis_time_ns=0)))
    canister = client.create_canister()
    module = canister_wasm()
    cleared = upload_chunk(client, canister, b"uploaded, then the store is cleared")
    client.update(MANAGEMENT, "clear_chunk_store", {"canister_id": canister})
    first = upload_chunk(client, canister, module[:500])
    second = upload_chunk(client, canister, module[500:])
    assert not (tmp_path / "chunks" / canister.to_text() / f"{cleared.hex()}.bin").exists()
    restarted = LocalClient(Network(tmp_path, NetworkConfig(genesis_time_ns=0)))
    assert stored_chunks(restarted, canister) == [first, second]
    install_chunked(restarted, canister, [first, second], hashlib.sha256(module).digest(), arg=b"123")
    assert restarted.query(canister, "get") == bytes([3])


def test_the_canister_pays_for_its_install_execution(client):
    canister = client.create_canister()
    before = canister_status(client, canister)["cycles"]
    report = client.update(MANAGEMENT, "install_code", {
        "mode": {"install": None}, "canister_id": canister, "wasm_module": canister_wasm(), "arg": b"",
        "sender_canister_version": None}).report
    fees = client.network.subnet.fees
    assert report.instructions > 0
    charged = fees.execution_cycles(report.instructions, client.network.subnet.subnet_size)
    # ... plus a few cycles of storage for the rounds in between (a 64 KiB heap costs ~7 per round).
    assert charged <= before - canister_status(client, canister)["cycles"] < charged + 100


def test_each_upload_chunk_costs_the_canister_200m_instructions(client):
    canister = client.create_canister()
    fees, size = client.network.subnet.fees, client.network.subnet.subnet_size
    before = canister_status(client, canister)["cycles"]
    upload_chunk(client, canister, b"a chunk")
    upload_chunk(client, canister, b"a chunk")  # already stored: charged all the same
    charged = 2 * fees.execution_cycles(200_000_000, size)
    # ... plus storage for the rounds in between (a 1 MiB chunk slot costs ~130 cycles a round).
    assert charged <= before - canister_status(client, canister)["cycles"] < charged + 2_000
