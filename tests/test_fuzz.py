"""Fuzzing the three parsers that take bytes from outside: the gateway's CBOR envelopes, Candid
arguments, and GGUF files. Each may only refuse with its own clear error. (Their bounds in time
and memory are proven by explicit budgets: tests/test_candid_limits.py, tests/test_gguf_file.py.)

CI runs a fixed budget per target. Run longer by hand, with hypothesis's statistics:
    ICLLAMA_FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz.py --hypothesis-show-statistics
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import cbor2
import numpy as np
from gguf import GGUFWriter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canisters.llama.config import ModelConfig, UnsupportedModel
from canisters.llama.gguf_file import GGUFError, read_gguf
from cdk.candid import CandidError, decode, parse_did
from replica.auth import EnvelopeRejected, authenticate, decode_envelope

FUZZ = settings(
    max_examples=int(os.environ.get("ICLLAMA_FUZZ_EXAMPLES", "300")),
    deadline=None,  # no test may depend on timing
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize="ICLLAMA_FUZZ_EXAMPLES" not in os.environ,  # CI sees the same inputs every run; long runs explore
)

# --- CBOR envelopes --------------------------------------------------------------------------

cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.binary(max_size=64) | st.text(max_size=32),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=16), inner, max_size=6),
    max_leaves=30,
)
content_fields = st.fixed_dictionaries(
    {},
    optional={
        "request_type": st.sampled_from(["call", "query", "read_state", "other"]) | cbor_values,
        "sender": st.sampled_from([b"\x04", b"", b"\x01" * 29, b"\x02" * 40]) | cbor_values,
        "ingress_expiry": st.integers(-1, 2**65) | cbor_values,
        "nonce": st.binary(max_size=64) | cbor_values,
        "canister_id": st.binary(max_size=30) | cbor_values,
        "method_name": st.text(max_size=20) | cbor_values,
        "arg": st.binary(max_size=100) | cbor_values,
        "paths": st.lists(st.lists(st.binary(max_size=40), max_size=5), max_size=5) | cbor_values,
    },
)
envelopes = st.fixed_dictionaries(
    {"content": content_fields},
    optional={"sender_pubkey": st.binary(max_size=100) | cbor_values, "sender_sig": st.binary(max_size=100)},
)


def _authenticate(body: bytes) -> None:
    try:
        for request_type in ("call", "query", "read_state"):
            authenticate(decode_envelope(body), request_type, time.time_ns())
    except EnvelopeRejected as rejected:
        assert 400 <= rejected.http_status < 500 and rejected.message


@FUZZ
@given(st.binary(max_size=512))
def test_envelope_from_arbitrary_bytes(body: bytes) -> None:
    _authenticate(body)


@FUZZ
@given(envelopes, st.booleans())
def test_envelope_from_structured_cbor(envelope: dict, tagged: bool) -> None:
    body = cbor2.dumps(cbor2.CBORTag(55799, envelope) if tagged else envelope)
    _authenticate(body)


# --- Candid arguments --------------------------------------------------------------------------

# The argument types of the methods a client can call on our canisters, plus recursive and
# zero-sized shapes that decoders get wrong.
CANDID_TYPES = parse_did("""
type Tree = variant { leaf: int; node: record { left: Tree; right: Tree } };
service : {
  a : (record { prompt: text; max_tokens: nat32; temperature: float32; seed: nat64; stop: vec text; chat: bool }) -> ();
  b : (text, nat64, blob) -> ();
  c : (vec record {}, opt vec null, vec reserved) -> ();
  d : (Tree, principal, opt opt int8) -> ();
}
""").methods


def _decode_all(data: bytes) -> None:
    for method in CANDID_TYPES.values():
        try:
            decode(method.args, data)
        except CandidError as error:
            assert str(error)


@FUZZ
@given(st.binary(max_size=512))
def test_candid_from_arbitrary_bytes(data: bytes) -> None:
    _decode_all(b"DIDL" + data)


@FUZZ
@given(st.lists(st.integers(0, 255) | st.sampled_from([0x6D, 0x6C, 0x6B, 0x6E, 0x7F, 0x70, 0x7D, 0x7B, 0x80, 0xFF]),
                max_size=64),
       st.lists(st.integers(0, 2**40), max_size=8))
def test_candid_with_type_table_opcodes_and_huge_lengths(opcodes: list[int], lengths: list[int]) -> None:
    """Type tables of real opcodes, and LEB128 lengths up to 2^40 (vector-length bombs)."""
    body = bytearray(b"DIDL")
    body += bytes(opcodes)
    for n in lengths:
        while True:
            byte, n = n & 0x7F, n >> 7
            body.append(byte | (0x80 if n else 0))
            if not n:
                break
    _decode_all(bytes(body))


# --- GGUF files --------------------------------------------------------------------------------


def _sample_gguf() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return _write_sample_gguf(Path(tmp) / "sample.gguf")


def _write_sample_gguf(path: Path) -> bytes:
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_head_count(2)
    writer.add_context_length(16)
    writer.add_feed_forward_length(8)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_token_list(["a", "b", "c"])
    writer.add_tensor("token_embd.weight", np.ones((3, 8), dtype=np.float32))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(8, dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def _read(data: bytes) -> None:
    try:
        gguf = read_gguf(data, name="fuzzed.gguf")
        ModelConfig.from_gguf(gguf.fields, gguf.source)
        for name in gguf.tensors:
            gguf.tensor_bytes(name)
    except (GGUFError, UnsupportedModel) as error:
        assert str(error)


SAMPLE = _sample_gguf()


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255)), min_size=1, max_size=12),
       st.integers(0, len(SAMPLE)))
def test_gguf_with_mutated_bytes_and_truncation(mutations: list[tuple[int, int]], length: int) -> None:
    data = bytearray(SAMPLE)
    for offset, value in mutations:
        data[offset] = value
    _read(bytes(data[:length]))
