"""The yblock as a wasm canister (canisters/yblock/wasm, built by zig cc), installed in the replica
and run by its wasm engine with the IC's metering: the module's shape, Candid replies byte for byte
as cdk.candid encodes them, the subtyping its decoder allows, refusals of malformed input, the
upload's sha256 across upgrades, the output stage's greedy token and candidates, and its logits
against the native path.

Uploads, sessions, authorization and the heap's "full" refusal are also run against the wasm
yblock by tests/test_yblock.py (parametrized by engine), and greedy ids through 1..8 wasm yblocks
by tests/test_sharded.py (the wasm engine is the default).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wasmtime

from canisters.llama.gguf_file import read_gguf
from canisters.llama.meter import NullMeter
from canisters.llama.model import Llama
from canisters.llama.sampler import SamplingParams, penalize, top_k_ids
from canisters.llama.tokenizer import Tokenizer
from canisters.yblock.build import CANDID_SECTION, DID, BuildError, ensure_built
from cdk.candid import decode, encode, parse_did
from cdk.principal import Principal
from client.engine_choice import ENGINE_FILE, network_engine
from replica.api_types import IngressMessage
from replica.inprocess import CallFailed, LocalClient
from replica.network import Network
from replica.wasm_module import read_module
from sharding.dfx import YBLOCK_DID, YBLOCK_WASM, write_dfx
from sharding.export import Export, export_shards
from sharding.model_spec import read_model_spec
from sharding.partition import Constraints, make_plan
from tests.management_calls import install_code
from tests.toolchains import missing

INTERFACE = parse_did(DID.read_text())
N_CTX = 64
STRANGER = Principal.self_authenticating(b"icllama test: not the head")
REQUESTS = itertools.count()  # distinct request ids: the network answers a repeated id once
SAMPLING = {"temperature": 0.0, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0,
            "repeat_last_n": 64, "seed": 0, "step": 0, "recent": []}


@pytest.fixture(scope="module")
def wasm() -> bytes:
    try:
        return ensure_built().read_bytes()
    except BuildError as e:
        missing(str(e))
        raise


@pytest.fixture(scope="module")
def stories_export(stories_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Export:
    """stories260K in a single yblock (every layer and every output row)."""
    plan = make_plan(read_model_spec(stories_path), Constraints(shards=1, context=N_CTX))
    return export_shards(stories_path, plan, tmp_path_factory.mktemp("stories"))


def install(client: LocalClient, wasm: bytes, head: Principal | None = None) -> Principal:
    canister = client.create_canister()
    install_code(client, canister, wasm, arg=encode(INTERFACE.init_args, [{"head": head or client.sender,
                                                                             "n_ctx": N_CTX}]))
    return canister


def raw_update(client: LocalClient, canister: Principal, method: str, arg: bytes,
               sender: Principal | None = None) -> bytes:
    """The reply's bytes as the canister wrote them (LocalClient would decode them)."""
    request_id = hashlib.sha256(f"{method} {next(REQUESTS)}".encode()).digest()
    client.network.submit(IngressMessage(request_id, sender or client.sender, canister, method, arg,
                                         time.time_ns() + 60 * 10**9, canister))
    status = client.network.status(request_id)
    while status.status not in ("replied", "rejected"):
        client.network.execute_round()
        status = client.network.status(request_id)
    if status.status != "replied":
        raise CallFailed(status.reject_code or 0, status.reject_message or "", status.error_code)
    return status.reply


def exact(method: str, reply: bytes) -> Any:
    """The decoded reply, after checking that cdk.candid encodes that value to the same bytes."""
    types = INTERFACE.methods[method].rets
    value = decode(types, reply)
    assert encode(types, list(value)) == reply, f"{method}: the canister's reply is not canonical Candid"
    return value[0]


def call(client: LocalClient, canister: Principal, method: str, *args: Any, sender: Principal | None = None) -> Any:
    arg = encode(INTERFACE.methods[method].args, list(args))
    if method in ("status", "upload_status"):
        result = client.network.query(sender or client.sender, canister, method, arg)
        assert result.reply is not None, result.reject_message
        return exact(method, result.reply)
    return exact(method, raw_update(client, canister, method, arg, sender))


def uploaded(client: LocalClient, canister: Principal, export: Export, shard: str) -> dict[str, Any]:
    entry = next(f for f in export.files if f.shard == shard)
    data = (export.directory / entry.file).read_bytes()
    for offset in range(0, len(data), 1 << 20):
        assert call(client, canister, "upload_chunk", entry.file, offset, data[offset : offset + (1 << 20)]) == {
            "ok": min(offset + (1 << 20), len(data))}
    assert call(client, canister, "upload_commit", entry.file, len(data)) == {"ok": hashlib.sha256(data).hexdigest()}
    return call(client, canister, "load")["ok"]


def forward_request(session: int, pos: int, x: np.ndarray, sample: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"session": session, "pos": pos, "activations": x.astype("<f4").tobytes(), "n_tokens": x.shape[0],
            "sample": sample}


class Native:
    """stories260K computed in this process by the native path, for the same token sequence."""

    def __init__(self, path: Path):
        gguf = read_gguf(path)
        self.model = Llama.load(gguf, "quantized", N_CTX)
        self.tokenizer = Tokenizer.from_metadata(gguf.fields)

    def logits(self, ids: list[int]) -> np.ndarray:
        logits = self.model.forward(ids, self.model.new_cache(N_CTX), 0, NullMeter())
        return logits.reshape(-1, self.model.config.n_vocab)[-1]  # the last token's

    def embed(self, ids: list[int]) -> np.ndarray:
        return self.model.embedding(ids, NullMeter())


# --- the module ----------------------------------------------------------------------------------

def test_the_module_imports_only_ic0_and_exports_the_did_with_its_methods(wasm: bytes) -> None:
    module = wasmtime.Module(wasmtime.Engine(), wasm)
    assert {i.module for i in module.imports} == {"ic0"}
    exports = {e.name for e in module.exports}
    assert exports == {"memory", "canister_init", "canister_post_upgrade", "canister_query status",
                       "canister_query upload_status", *(f"canister_update {m}" for m in (
                           "upload_chunk", "upload_commit", "load", "forward", "reset_session"))}
    read = read_module(wasm)  # as the replica validates it before installing
    section = read.metadata[CANDID_SECTION.removeprefix("icp:public ")]
    assert section.public and section.content == DID.read_bytes()


def test_dfx_json_names_the_module_and_its_did(tmp_path: Path, stories_path: Path) -> None:
    import json

    checked_in = json.loads((Path(__file__).resolve().parents[1] / "dfx.json").read_text())
    yblocks = {n: e for n, e in checked_in["canisters"].items() if n.startswith("yblock_")}
    assert yblocks and all(e == {"type": "custom", "candid": "canisters/yblock/yblock.did",
                                 "wasm": "canisters/yblock/yblock.wasm"} for e in yblocks.values())
    written = tmp_path / "dfx.json"
    write_dfx(make_plan(read_model_spec(stories_path), Constraints(shards=2)), written)
    entry = json.loads(written.read_text())["canisters"]["yblock_1"]
    assert (tmp_path / entry["wasm"]).resolve() == YBLOCK_WASM and (tmp_path / entry["candid"]).resolve() == YBLOCK_DID


def test_a_network_started_with_an_engine_gives_it_to_deploys(tmp_path: Path) -> None:
    assert network_engine(tmp_path) == "wasm"  # none recorded: the default
    (tmp_path / ENGINE_FILE).write_text("python")
    assert network_engine(tmp_path) == "python"
    (tmp_path / ENGINE_FILE).write_text("jvm")
    assert network_engine(tmp_path) == "wasm"  # not an engine: the default


# --- Candid --------------------------------------------------------------------------------------

def test_every_reply_is_the_canonical_candid_of_its_value(wasm: bytes, stories_path: Path,
                                                          stories_export: Export) -> None:
    client = LocalClient(Network(None))
    yblock = install(client, wasm)
    status = call(client, yblock, "status")
    assert status["head"] == client.sender and status["n_ctx"] == N_CTX and not status["loaded"]
    assert call(client, yblock, "upload_status", "x.gguf") == {"name": "x.gguf", "held": 0, "sha256": None,
                                                                "loaded": False}
    info = uploaded(client, yblock, stories_export, "yblock_0")  # every reply checked by `exact`
    assert (info["role"], info["first_layer"], info["output_rows"]) == ("layers", 0, {"start": 0, "stop": 512})
    native = Native(stories_path)
    x = native.embed([1, 403, 407])
    greedy = call(client, yblock, "forward", forward_request(1, 0, x, SAMPLING))["ok"]
    assert greedy["token"] is not None and greedy["candidates"] is None and greedy["activations"] == b""
    assert greedy["instructions"] > 0
    sampled = call(client, yblock, "forward", forward_request(2, 0, x, {**SAMPLING, "temperature": 0.8}))["ok"]
    assert sampled["token"] is None and len(sampled["candidates"]["ids"]) == 40
    assert call(client, yblock, "reset_session", 1) == {"ok": True}
    assert call(client, yblock, "reset_session", 1) == {"ok": False}
    assert "only the head canister" in call(client, yblock, "reset_session", 2, sender=STRANGER)["err"]


def test_the_decoder_allows_the_specs_subtyping_and_refuses_malformed_input(wasm: bytes,
                                                                            stories_export: Export) -> None:
    from cdk.candid import T

    client = LocalClient(Network(None))
    yblock = install(client, wasm)
    uploaded(client, yblock, stories_export, "yblock_0")
    x = np.zeros((1, 64), np.float32)
    # A newer head's request: an extra field, and no `sample` field (an opt: read as null).
    newer = T.record({"session": T.nat64, "pos": T.nat32, "activations": T.blob, "n_tokens": T.nat32,
                      "priority": T.text})
    reply = exact("forward", raw_update(client, yblock, "forward", encode([newer], [{
        "session": 5, "pos": 0, "activations": x.tobytes(), "n_tokens": 1, "priority": "high"}])))
    assert reply["ok"]["token"] is None and reply["ok"]["activations"] == b""  # no sampling asked
    # Extra arguments are ignored too.
    reply = exact("reset_session", raw_update(client, yblock, "reset_session", encode([T.nat64, T.text], [5, "x"])))
    assert reply == {"ok": True}

    wrong_type = encode([T.record({"session": T.nat64, "pos": T.nat32, "activations": T.text, "n_tokens": T.nat32})],
                        [{"session": 5, "pos": 0, "activations": "abc", "n_tokens": 1}])
    for bad, why in [(b"DIDX\x00\x00", "does not start with DIDL"), (wrong_type, "expected a blob"),
                     (encode(INTERFACE.methods["forward"].args, [forward_request(5, 1, x)])[:-3],
                      "ends inside a value"),
                     (b"DIDL\x01\x6c\x01\x00\x05\x01\x00", "refers to a table entry or primitive that does not exist")]:
        with pytest.raises(CallFailed) as refused:
            raw_update(client, yblock, "forward", bad)
        assert refused.value.error_code == "IC0503" and why in refused.value.message, refused.value.message
    assert call(client, yblock, "status")["sessions"] == 0  # the refused messages changed nothing


# --- upload ---------------------------------------------------------------------------------------

def test_the_running_sha256_survives_an_upgrade_and_a_loaded_shard_reloads_itself(
        wasm: bytes, stories_export: Export) -> None:
    client = LocalClient(Network(None))
    yblock = install(client, wasm)
    entry = next(f for f in stories_export.files if f.shard == "yblock_0")
    data = (stories_export.directory / entry.file).read_bytes()
    third = len(data) // 3 + 5  # not a multiple of sha256's 64-byte block: the pending bytes persist too
    assert call(client, yblock, "upload_chunk", entry.file, 0, data[:third]) == {"ok": third}
    init = encode(INTERFACE.init_args, [{"head": client.sender, "n_ctx": N_CTX}])
    install_code(client, yblock, wasm, mode={"upgrade": None}, arg=init)
    assert call(client, yblock, "upload_status", entry.file)["held"] == third
    assert call(client, yblock, "upload_chunk", entry.file, third, data[third:]) == {"ok": len(data)}
    assert call(client, yblock, "upload_commit", entry.file, len(data)) == {"ok": hashlib.sha256(data).hexdigest()}
    assert "ok" in call(client, yblock, "load")
    install_code(client, yblock, wasm, mode={"upgrade": None}, arg=init)
    status = call(client, yblock, "status")
    assert status["loaded"] and status["bytes"] == len(data) and status["sessions"] == 0


# --- the output stage -----------------------------------------------------------------------------

def test_greedy_token_and_candidates_follow_the_python_sampler(wasm: bytes, stories_path: Path,
                                                               stories_export: Export) -> None:
    client = LocalClient(Network(None))
    yblock = install(client, wasm)
    uploaded(client, yblock, stories_export, "yblock_0")
    native = Native(stories_path)
    ids = native.tokenizer.encode("Once upon a time", add_special=True)
    x = native.embed(ids)
    penalty = {**SAMPLING, "repeat_penalty": 1.3, "recent": ids}
    every_row = call(client, yblock, "forward", forward_request(1, 0, x, {**penalty, "temperature": 0.7, "top_k": 0}))
    logits = np.asarray(every_row["ok"]["candidates"]["logits"], np.float32)  # penalized, all 512 rows
    assert every_row["ok"]["candidates"]["ids"] == [] and logits.shape == (512,)

    unpenalized = call(client, yblock, "forward", forward_request(2, 0, x, {**SAMPLING, "temperature": 0.7,
                                                                             "top_k": 0}))["ok"]["candidates"]
    params = SamplingParams(temperature=0.7, top_k=0, repeat_penalty=1.3, repeat_last_n=64)
    raw = np.asarray(unpenalized["logits"], np.float32)
    np.testing.assert_array_equal(penalize(raw, params, ids, NullMeter()), logits)

    greedy = call(client, yblock, "forward", forward_request(3, 0, x, penalty))["ok"]
    assert greedy["token"] == int(np.argmax(logits))
    top = call(client, yblock, "forward", forward_request(4, 0, x, {**penalty, "temperature": 0.7, "top_k": 7}))
    assert top["ok"]["candidates"]["ids"] == top_k_ids(logits, 7).tolist()
    np.testing.assert_array_equal(top["ok"]["candidates"]["logits"], logits[top_k_ids(logits, 7)])

    nan = call(client, yblock, "forward", forward_request(5, 0, x[:1] * np.float32("nan"), SAMPLING))
    assert "logits contain NaN or +inf" in nan["err"]
    bad = call(client, yblock, "forward", forward_request(6, 0, x[:1], {**SAMPLING, "top_p": 0.0}))
    assert "top_p must be in (0, 1]" in bad["err"]
    out_of_range = call(client, yblock, "forward", forward_request(7, 0, x[:1], {**penalty, "recent": [1, 600]}))
    assert "recent token ids must be in [0, 512), got 1..600" in out_of_range["err"]


def test_logits_agree_with_the_native_path(wasm: bytes, stories_path: Path, stories_export: Export) -> None:
    client = LocalClient(Network(None))
    yblock = install(client, wasm)
    uploaded(client, yblock, stories_export, "yblock_0")
    native = Native(stories_path)
    ids = native.tokenizer.encode("Once upon a time there was", add_special=True)
    reply = call(client, yblock, "forward", forward_request(1, 0, native.embed(ids),
                                                            {**SAMPLING, "temperature": 1.0, "top_k": 0}))
    got = np.asarray(reply["ok"]["candidates"]["logits"], np.float32)
    want = native.logits(ids)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
