"""The yblock canister on its own, through the replica: upload into stable memory (resumable,
idempotent, verified, surviving upgrades), forward against the model computed in one process,
retry after a trap, and sessions counted against the heap ("full").

The test's own principal is installed as the yblock's head, so it may call forward; another
principal may not. Every test runs against both engines: the Python class and the wasm module built
from C (canisters/yblock/wasm), whose hidden states agree with the Python path within 1e-4 of their
largest value rather than bit for bit.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from canisters.llama.config import ModelConfig
from canisters.llama.gguf_file import read_gguf
from canisters.llama.meter import NullMeter
from canisters.llama.model import Embedding, LayerStack
from canisters.yblock.build import ensure_built
from cdk.candid import encode, parse_did
from cdk.principal import Principal
from replica.inprocess import CallFailed, LocalClient
from replica.network import Network
from sharding.export import Export, export_shards
from sharding.model_spec import read_model_spec
from sharding.partition import Constraints, make_plan
from tests.management_calls import install_code
from tests.synthetic_models import SyntheticSpec, write_synthetic_model

YBLOCK = "canisters.yblock.yblock:YBlock"
YBLOCK_DID = Path(__file__).resolve().parents[1] / "canisters" / "yblock" / "yblock.did"
SPEC = SyntheticSpec(n_layer=4, d_model=64, n_head=4, n_head_kv=2, d_ff=96, seed=21)
N_CTX = 32
STRANGER = Principal.self_authenticating(b"icllama test: not the head")


@pytest.fixture(params=["python", "wasm"], scope="module")
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Export]:
    directory = tmp_path_factory.mktemp("yblock")
    model = write_synthetic_model(directory / "model.gguf", SPEC)
    plan = make_plan(read_model_spec(model), Constraints(shards=2, context=N_CTX))
    return model, export_shards(model, plan, directory / "shards")


def shard_file(export: Export, name: str) -> tuple[str, bytes]:
    entry = next(f for f in export.files if f.shard == name)
    return entry.file, (export.directory / entry.file).read_bytes()


def install(client: LocalClient, engine: str, canister: Principal | None = None, mode: str = "install",
            version: str = "1") -> Principal:
    """Installs (or upgrades) the yblock with the test as its head, as the Python class or the wasm module."""
    init = {"head": client.sender, "n_ctx": N_CTX}
    if engine == "python":
        return client.install(YBLOCK, init, canister_id=canister, mode=mode, version=version)
    canister = canister or client.create_canister()
    arg = encode(parse_did(YBLOCK_DID.read_text()).init_args, [init])
    install_code(client, canister, ensure_built().read_bytes(), mode={mode: None}, arg=arg)
    return canister


def assert_same(got: np.ndarray, want: np.ndarray, engine: str) -> None:
    if engine == "python":
        np.testing.assert_array_equal(got, want)
    else:
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def upload(client: LocalClient, canister: Principal, name: str, data: bytes, chunk: int = 1 << 20) -> None:
    for offset in range(0, len(data), chunk):
        assert client.update(canister, "upload_chunk", name, offset, data[offset : offset + chunk]).value == {
            "ok": min(offset + chunk, len(data))}
    assert client.update(canister, "upload_commit", name, len(data)).value == {"ok": hashlib.sha256(data).hexdigest()}
    assert "ok" in client.update(canister, "load").value


def set_memory_limit(client: LocalClient, canister: Principal, limit: int) -> None:
    """A controller's update_settings; 0 restores the architecture's limit."""
    client.update(Principal.management(), "update_settings", {
        "canister_id": canister, "settings": {"wasm_memory_limit": limit}, "sender_canister_version": None})


def forward(client: LocalClient, canister: Principal, session: int, pos: int, x: np.ndarray,
            sender: Principal | None = None) -> dict[str, Any]:
    request = {"session": session, "pos": pos, "activations": x.astype("<f4").tobytes(), "n_tokens": x.shape[0],
               "sample": None}
    return client.update(canister, "forward", request, sender=sender).value


def activations(reply: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(reply["ok"]["activations"], dtype="<f4").reshape(-1, SPEC.d_model)


class Reference:
    """The first shard's layers computed in this process, position by position."""

    def __init__(self, model: Path, first: int, last: int):
        gguf = read_gguf(model)
        config = ModelConfig.from_gguf(gguf.fields)
        self.embedding = Embedding.load(gguf, "quantized")
        self.layers = LayerStack.load(gguf, config, first, last, "quantized", N_CTX)
        self.cache = self.layers.new_cache(N_CTX)

    def embed(self, ids: list[int]) -> np.ndarray:
        return self.embedding(ids, NullMeter())

    def __call__(self, x: np.ndarray, pos: int) -> np.ndarray:
        return self.layers.forward(x, self.cache, pos, NullMeter())


def test_upload_resumes_is_idempotent_verified_and_survives_upgrades(exported: tuple[Path, Export],
                                                                     engine: str) -> None:
    _, export = exported
    name, data = shard_file(export, "yblock_0")
    client = LocalClient(Network(None))
    yblock = install(client, engine)
    third = len(data) // 3

    def chunk(offset: int, payload: bytes, sender: Principal | None = None) -> dict[str, Any]:
        return client.update(yblock, "upload_chunk", name, offset, payload, sender=sender).value

    assert "only controllers" in chunk(0, data[:third], sender=STRANGER)["err"]
    assert chunk(0, data[:third]) == {"ok": third}
    assert chunk(0, data[:third]) == {"ok": third}  # sent again: nothing changes
    assert "skips past the" in chunk(2 * third, data[2 * third :])["err"]
    assert "differs from the bytes already held" in chunk(1, b"\xff" + data[2:third])["err"]
    assert "not committed" in client.update(yblock, "load").value["err"]
    assert "holds" in client.update(yblock, "upload_commit", name, len(data)).value["err"]

    # An upgrade keeps what was uploaded; the hash of the held bytes is rebuilt from stable memory.
    install(client, engine, yblock, mode="upgrade", version="2")
    assert client.query(yblock, "upload_status", name) == {"name": name, "held": third, "sha256": None, "loaded": False}
    assert chunk(third, data[third:]) == {"ok": len(data)}
    assert client.update(yblock, "upload_commit", name, len(data)).value == {"ok": hashlib.sha256(data).hexdigest()}
    info = client.update(yblock, "load").value["ok"]
    assert (info["name"], info["role"], info["first_layer"], info["last_layer"]) == (name, "layers", 0, 2)

    # Loaded bytes cannot change; another upgrade loads the shard again by itself.
    assert "has loaded shard" in chunk(0, b"\x00" * 16)["err"]
    install(client, engine, yblock, mode="upgrade", version="3")
    status = client.query(yblock, "status")
    assert status["loaded"] and status["bytes"] == len(data) and status["sessions"] == 0
    assert "ok" in forward(client, yblock, 1, 0, np.ones((1, SPEC.d_model), np.float32))


def test_forward_computes_the_layers_and_only_the_head_may_call_it(exported: tuple[Path, Export], engine: str) -> None:
    model, export = exported
    client = LocalClient(Network(None))
    yblock = install(client, engine)
    upload(client, yblock, *shard_file(export, "yblock_0"))
    reference = Reference(model, 0, 2)

    prompt = reference.embed([1, 260, 262, 270])
    assert_same(activations(forward(client, yblock, 7, 0, prompt)), reference(prompt, 0), engine)
    token = reference.embed([265])
    assert_same(activations(forward(client, yblock, 7, 4, token)), reference(token, 4), engine)

    refused = forward(client, yblock, 7, 5, token, sender=STRANGER)["err"]
    assert "only the head canister" in refused and STRANGER.to_text() in refused
    assert "err" in client.update(yblock, "reset_session", 7, sender=STRANGER).value
    assert "must be 1 x 64" in forward(client, yblock, 7, 5, np.ones((1, 63), np.float32))["err"]
    assert "skips past the 5 cached positions" in forward(client, yblock, 7, 9, token)["err"]
    assert client.update(yblock, "reset_session", 7).value == {"ok": True}
    assert client.query(yblock, "status")["sessions"] == 0


# Python only: a wasm canister's execution traps on its memory limit only when it grows the heap
# (as on the IC), which a forward into free heap does not; its rollback is tested with the
# sessions that fill the heap below.
@pytest.mark.parametrize("engine", ["python"])
def test_a_trapped_forward_is_retried_at_the_same_position(exported: tuple[Path, Export], engine: str) -> None:
    model, export = exported
    client = LocalClient(Network(None))
    yblock = install(client, engine)
    upload(client, yblock, *shard_file(export, "yblock_0"))
    reference = Reference(model, 0, 2)
    prompt, token, after = reference.embed([1, 262, 264]), reference.embed([266]), reference.embed([267])
    assert_same(activations(forward(client, yblock, 3, 0, prompt)), reference(prompt, 0), engine)

    # The canister's memory limit drops below what it holds: the next execution traps (IC0539)
    # after the forward wrote its KV slot, and the session's committed length is rolled back.
    set_memory_limit(client, yblock, client.query(yblock, "status")["heap_bytes"] - 1)
    with pytest.raises(CallFailed) as trapped:
        forward(client, yblock, 3, 3, token)
    assert trapped.value.error_code == "IC0539"
    set_memory_limit(client, yblock, 0)

    # The same position again, then the next: exactly what a run without the trap computes.
    assert_same(activations(forward(client, yblock, 3, 3, token)), reference(token, 3), engine)
    assert_same(activations(forward(client, yblock, 3, 4, after)), reference(after, 4), engine)


def test_sessions_count_against_the_heap_and_a_full_yblock_refuses_clearly(exported: tuple[Path, Export],
                                                                           engine: str) -> None:
    model, export = exported
    client = LocalClient(Network(None))
    yblock = install(client, engine)
    upload(client, yblock, *shard_file(export, "yblock_0"))
    x = Reference(model, 0, 2).embed([1, 262])
    loaded = client.query(yblock, "status")
    kv = loaded["kv_bytes_per_session"]
    value_bytes = 4 if engine == "python" else 2  # the wasm yblock keeps K and V as f16, as llama.cpp does
    assert kv == 2 * 2 * SPEC.n_head_kv * N_CTX * (SPEC.d_model // SPEC.n_head) * value_bytes  # 2 layers, K and V

    assert "ok" in forward(client, yblock, 1, 0, x)
    one_session = client.query(yblock, "status")
    assert one_session["sessions"] == 1
    if engine == "python":
        assert one_session["heap_bytes"] >= loaded["heap_bytes"] + kv
        # Room for the one session held and half of another.
        set_memory_limit(client, yblock, one_session["heap_bytes"] + kv // 2)
        full = forward(client, yblock, 2, 0, x)["err"]
        assert "is full" in full and yblock.to_text() in full and f"needs {kv + 4096} bytes" in full
    else:
        # A wasm canister cannot read its wasm_memory_limit: growing its heap past it traps (IC0539)
        # and rolls back, as on the IC; only memory.grow failing (wasm32's 4 GiB) gives "is full".
        set_memory_limit(client, yblock, one_session["heap_bytes"])
        with pytest.raises(CallFailed) as trapped:
            for session in range(2, 2 + 1024):  # new sessions fill the free heap, then one must grow it
                assert "ok" in forward(client, yblock, session, 0, x)
        assert trapped.value.error_code == "IC0539"
        for held in range(2, session):
            assert client.update(yblock, "reset_session", held).value == {"ok": True}
    assert client.query(yblock, "status")["sessions"] == 1
    assert "ok" in forward(client, yblock, 1, 2, x[:1])  # the session it holds goes on unharmed
    if engine == "wasm":
        set_memory_limit(client, yblock, 0)

    assert client.update(yblock, "reset_session", 1).value == {"ok": True}
    assert "ok" in forward(client, yblock, 2, 0, x)  # its memory now serves the new session
    assert client.update(yblock, "reset_session", 1).value == {"ok": False}
