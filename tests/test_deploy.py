"""`icllama deploy` and `icllama generate` against `icllama start` running as a subprocess, as a
user runs them: a PEM identity, dfx.json, `.icllama/local/canister_ids.json`.

One synthetic model (F32, d_model 512: two yblock shards of about 13 chunks each) is deployed once
for the module; the tests then check generation over HTTP with both agents against `icllama run`,
an idempotent re-deploy, an upload killed halfway and resumed (bytes counted on the wire), a
corrupted chunk, and a network restart. SmolLM2 with 4 shards is the real_model test."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cbor2
import httpx
import pytest

from cdk.candid import decode, parse_did
from cdk.principal import Principal
from client.agent import MANAGEMENT_DID, RemoteCanisters, connect
from client.cli import main
from client.deploy import CanisterIds
from client.identity import generate, read_pem
from client.upload import CHUNK_BYTES, CanisterShardTarget, ChunkCorrupted, ShardFile, UploadsFailed, upload_shards
from tests.agent_envs import ic_py_python
from tests.gateway_support import REPO, NetworkProcess, start_network, stop_network
from tests.synthetic_models import SyntheticSpec, write_synthetic_model

pytestmark = pytest.mark.network

YBLOCK_DID = REPO / "canisters" / "yblock" / "yblock.did"
PROMPT = "Once upon a time the cat"
N_TOKENS = 12
SYNTHETIC = SyntheticSpec(d_model=512, d_ff=1536, n_layer=4, n_head=8, n_head_kv=4, seed=6)
# Rounds of 50 ms of virtual time, so that a served network's idle rounds, which pass in real
# time, come often.
FAST_ROUNDS = ("--round-seconds", "0.05")


@dataclass
class Project:
    root: Path
    model: Path
    pem: Path
    network: NetworkProcess

    @property
    def state(self) -> Path:
        return self.root / ".icllama"

    def options(self) -> list[str]:
        return ["--state-dir", str(self.state), "--identity", str(self.pem)]

    def deploy(self, *extra: str) -> str:
        return cli("deploy", str(self.model), "--shards", "2", "--dfx-json", str(self.root / "dfx.json"),
                   *self.options(), *extra)

    def generate(self, *extra: str) -> dict:
        return json.loads(cli("generate", "-p", PROMPT, "-n", str(N_TOKENS), "--json", *self.options(), *extra))

    def ids(self) -> dict[str, Principal]:
        return CanisterIds.of(self.state, "local").read()

    def canisters(self) -> RemoteCanisters:
        return RemoteCanisters(connect(self.network.url, read_pem(self.pem)))

    def manifest(self) -> Path:
        return self.state / "local" / "shards" / self.model.stem / "manifest.json"


def cli(*argv: str) -> str:
    """Runs `icllama ARGV` in this process; returns its stdout, or fails with its stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    assert code == 0, err.getvalue()[-3000:]
    return out.getvalue()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    root = tmp_path_factory.mktemp("deploy-project")
    model = write_synthetic_model(root / "synthetic-512.gguf", SYNTHETIC)
    pem = root / "tester.pem"
    pem.write_bytes(generate("tester", "ed25519").to_pem())
    project = Project(root, model, pem, start_network(root / ".icllama", *FAST_ROUNDS))
    yield project
    stop_network(project.network)


def run_ids(model: Path, shards: int, prompt: str, n: int, chat: bool = False) -> list[int]:
    """What `icllama run --shards N` generates: the same plan deployed in-process, no HTTP."""
    argv = ["run", str(model), "--shards", str(shards), "-p", prompt, "-n", str(n), "--json"] + ["--chat"] * chat
    return json.loads(cli(*argv))["ids"]


@pytest.fixture(scope="module")
def reference_ids(project) -> list[int]:
    return run_ids(project.model, 2, PROMPT, N_TOKENS)


@pytest.fixture(scope="module")
def deployed(project) -> str:
    return project.deploy()


def test_deploy_creates_wires_and_generates_as_run_does(project, deployed, reference_ids):
    assert all(line.split()[2] == "created" for line in deployed.splitlines())
    ids = project.ids()
    assert set(ids) == {"head", "yblock_0", "yblock_1"}
    dfx = json.loads((project.root / "dfx.json").read_text())
    assert set(dfx["canisters"]) == set(ids) and dfx["networks"]["local"]["bind"] == "127.0.0.1:4943"
    me = read_pem(project.pem).principal
    management = project.canisters().canister(Principal.management(), MANAGEMENT_DID)
    for name in ("yblock_0", "yblock_1"):
        controllers = management.update("canister_status", {"canister_id": ids[name]})["settings"]["controllers"]
        assert set(controllers) == {me, ids["head"]}
        assert project.canisters().canister(ids[name], YBLOCK_DID).query("status")["head"] == ids["head"]

    generated = project.generate()
    assert generated["ids"] == reference_ids
    metrics = generated["metrics"]
    assert metrics["generated_tokens"] == N_TOKENS and metrics["instructions"] > 0 and metrics["cycles"] > 0
    assert metrics["messages"] > 0 and metrics["virtual_seconds"] >= 0  # a tiny model may fit in one round
    streamed = project.generate("--stream")
    assert streamed["ids"] == reference_ids and streamed["text"] == generated["text"]


IC_PY_SCRIPT = """
import json, sys
from client.head_client import GenerationOptions, HeadClient
from client.identity import read_pem
from pathlib import Path
url, head, pem, prompt, n = sys.argv[1:6]
client = HeadClient(url, head, read_pem(Path(pem)), agent="ic-py")
options = GenerationOptions(max_tokens=int(n))
generation = client.generate(prompt, options)
streamed = [i for event in client.stream(prompt, options) for i in event.ids]
print(json.dumps({"ids": list(generation.ids), "streamed": streamed, "cycles": generation.metrics.cycles}))
"""


def ic_py_generate(url: str, head: str, pem: Path, prompt: str, n: int) -> dict:
    """HeadClient with ic-py 1.0.1, in its own environment (cbor2<6), importing this repository."""
    result = subprocess.run([str(ic_py_python()), "-c", IC_PY_SCRIPT, url, head, str(pem), prompt, str(n)],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_ic_py_generates_the_same_ids(project, deployed, reference_ids):
    answer = ic_py_generate(project.network.url, project.ids()["head"].to_text(), project.pem, PROMPT, N_TOKENS)
    assert answer["ids"] == answer["streamed"] == reference_ids and answer["cycles"] > 0


def test_redeploy_changes_nothing_and_sends_nothing(project, deployed):
    before = project.ids()
    again = project.deploy()
    assert project.ids() == before
    for line in again.splitlines():
        name, _, created, _, code, _, outcome = line.split()[:7]
        assert (created, code, outcome) == ("reused", "unchanged", "already"), line


# --- an upload killed halfway --------------------------------------------------------------------------
@dataclass
class Tap:
    """An HTTP proxy in front of the gateway: counts the blob bytes of upload_chunk calls, and can
    hold the call after the first `pass_chunks` ones, never forwarding it (the uploader is then
    stuck exactly there, to be killed)."""

    upstream: str
    pass_chunks: int | None = None
    chunk_bytes: int = 0
    chunks: int = 0

    def __post_init__(self) -> None:
        self.holding = threading.Event()
        self.release = threading.Event()
        tap = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._relay(httpx.get(tap.upstream + self.path, timeout=600))

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if tap.counts(body):
                    tap.holding.set()
                    tap.release.wait()
                    self.close_connection = True  # its client is gone: nothing to answer
                    return
                self._relay(httpx.post(tap.upstream + self.path, content=body, timeout=600,
                                       headers={"Content-Type": "application/cbor"}))

            def _relay(self, response):
                self.send_response(response.status_code)
                self.send_header("Content-Type", response.headers.get("content-type", "application/cbor"))
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def counts(self, body: bytes) -> bool:
        """Counts an upload_chunk call; True if it is the one to hold."""
        content = cbor2.loads(body)["content"]
        if content.get("method_name") != "upload_chunk":
            return False
        if self.pass_chunks is not None and self.chunks == self.pass_chunks:
            return True
        _, _, blob = decode(UPLOAD_CHUNK_ARGS, content["arg"])
        self.chunks += 1
        self.chunk_bytes += len(blob)
        return False

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


UPLOAD_CHUNK_ARGS = parse_did(YBLOCK_DID.read_text()).methods["upload_chunk"].args


def reinstall(project: Project, name: str) -> None:
    """Empties a yblock, as a fresh canister is: reinstall with the init arguments it has."""
    from cdk.candid import encode
    from client.deploy import code_version
    from replica.loader import ModuleRef

    ids = project.ids()
    n_ctx = project.canisters().canister(ids[name], YBLOCK_DID).query("status")["n_ctx"]
    management = project.canisters().canister(Principal.management(), MANAGEMENT_DID)
    management.update("install_code", {
        "mode": {"reinstall": None}, "canister_id": ids[name],
        "wasm_module": ModuleRef("canisters.yblock.yblock:YBlock", code_version()).to_wasm_module(),
        "arg": encode(parse_did(YBLOCK_DID.read_text()).init_args, [{"head": ids["head"], "n_ctx": n_ctx}]),
        "sender_canister_version": None})


def upload_status(project: Project, name: str) -> dict:
    canister = project.canisters().canister(project.ids()[name], YBLOCK_DID)
    return canister.query("upload_status", f"{name}.gguf")


def test_killed_upload_resumes_sending_only_the_missing_bytes(project, deployed, reference_ids):
    reinstall(project, "yblock_1")
    size = json.loads(project.manifest().read_text())["files"][2]["size"]
    assert size > 8 * CHUNK_BYTES
    tap = Tap(project.network.url, pass_chunks=5)
    upload = [sys.executable, "-m", "client.upload", str(project.manifest()), "--network", tap.url, "--only",
              "yblock_1", "--dfx-json", str(project.root / "dfx.json"), "--canister-ids",
              str(CanisterIds.of(project.state, "local").path), *project.options()]
    try:
        process = subprocess.Popen(upload, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert tap.holding.wait(timeout=300), process.communicate(timeout=5)
        process.send_signal(signal.SIGKILL)  # killed while its sixth chunk is on the way
        process.wait(timeout=60)
    finally:
        tap.close()
    held = upload_status(project, "yblock_1")
    assert held["held"] == 5 * CHUNK_BYTES and not held["loaded"]

    counter = Tap(project.network.url)
    try:
        resumed = subprocess.run([*upload[:5], counter.url, *upload[6:], "--json"], cwd=REPO, capture_output=True,
                                 text=True, timeout=600)
    finally:
        counter.close()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (result,) = json.loads(resumed.stdout)
    assert counter.chunk_bytes == size - 5 * CHUNK_BYTES == result["bytes_sent"]  # only the missing bytes
    assert result["bytes_resumed"] == 5 * CHUNK_BYTES and result["outcome"] == "resumed"
    final = upload_status(project, "yblock_1")
    assert final["loaded"] and final["sha256"] == json.loads(project.manifest().read_text())["files"][2]["sha256"]
    assert project.generate()["ids"] == reference_ids


# --- a corrupted chunk ---------------------------------------------------------------------------------
@dataclass
class CorruptingTarget:
    """Flips a byte of the chunk at `offset` before it is signed and sent, the first time only."""

    inner: CanisterShardTarget
    offset: int | None

    @property
    def canister_id(self) -> str:
        return self.inner.canister_id

    def upload_status(self, name):
        return self.inner.upload_status(name)

    def upload_chunk(self, name, offset, data):
        if offset == self.offset:
            data, self.offset = data[:100] + bytes([data[100] ^ 0x01]) + data[101:], None
        return self.inner.upload_chunk(name, offset, data)

    def upload_commit(self, name, size):
        return self.inner.upload_commit(name, size)

    def load(self):
        return self.inner.load()


def test_corrupted_chunk_is_named_not_loaded_and_redeploy_repairs(project, deployed, reference_ids):
    reinstall(project, "yblock_0")
    entry = json.loads(project.manifest().read_text())["files"][1]
    assert entry["shard"] == "yblock_0"
    shard = ShardFile("yblock_0", entry["file"], project.manifest().parent / entry["file"], entry["size"],
                      entry["sha256"])
    target = CorruptingTarget(CanisterShardTarget(project.canisters().canister(project.ids()["yblock_0"],
                                                                                YBLOCK_DID)), 3 * CHUNK_BYTES)
    with pytest.raises(UploadsFailed) as caught:
        upload_shards([(shard, target)], progress=False)
    (error,) = caught.value.errors
    assert isinstance(error, ChunkCorrupted)
    assert f"shard yblock_0 (yblock_0.gguf -> canister {project.ids()['yblock_0']})" in str(error)
    assert f"chunk 3 (bytes {3 * CHUNK_BYTES}..{4 * CHUNK_BYTES}) is corrupted" in str(error)
    held = upload_status(project, "yblock_0")
    assert held["held"] == entry["size"] and not held["loaded"]
    with pytest.raises(AssertionError, match="is not ready|cannot load|failed"):
        project.generate()

    repaired = project.deploy()
    line = next(line for line in repaired.splitlines() if line.startswith("yblock_0"))
    assert "reinstalled" in line and f"uploaded, {entry['size']:,} B sent" in line
    assert project.generate()["ids"] == reference_ids


# --- a restart -----------------------------------------------------------------------------------------
def test_restart_keeps_canisters_and_shards(project, deployed, reference_ids):
    stop_network(project.network)
    project.network = start_network(project.state, *FAST_ROUNDS)  # another port: `--network local` follows it
    assert project.generate()["ids"] == reference_ids  # nothing uploaded or wired again
    assert all(upload_status(project, name)["loaded"] for name in ("head", "yblock_0", "yblock_1"))
    again = project.deploy()
    assert all(line.split()[6] == "already" for line in again.splitlines()), again  # sends no byte


# --- SmolLM2 ---------------------------------------------------------------------------------------------
@pytest.mark.real_model
def test_smollm2_four_shards_over_http_with_both_agents(tmp_path, smollm2_path):
    prompt, n = "What is the capital of France?", 16
    reference = run_ids(smollm2_path, 4, prompt, n, chat=True)
    pem = tmp_path / "tester.pem"
    pem.write_bytes(generate("tester").to_pem())
    network = start_network(tmp_path / ".icllama", *FAST_ROUNDS)
    try:
        options = ["--state-dir", str(tmp_path / ".icllama"), "--identity", str(pem)]
        cli("deploy", str(smollm2_path), "--shards", "4", "--dfx-json", str(tmp_path / "dfx.json"), *options)
        ids = CanisterIds.of(tmp_path / ".icllama", "local").read()
        assert len(ids) == 5
        generated = json.loads(cli("generate", "-p", prompt, "-n", str(n), "--chat", "--json", *options))
        assert generated["ids"] == reference
        assert generated["text"].startswith("L'Étoile, la")  # llama.cpp's answer (ggml's numerics)
        answer = ic_py_script_chat(network.url, ids["head"].to_text(), pem, prompt, n)
        assert answer == reference
    finally:
        stop_network(network)


def ic_py_script_chat(url: str, head: str, pem: Path, prompt: str, n: int) -> list[int]:
    script = IC_PY_SCRIPT.replace("GenerationOptions(max_tokens=int(n))",
                                  "GenerationOptions(max_tokens=int(n), chat=True)")
    result = subprocess.run([str(ic_py_python()), "-c", script, url, head, str(pem), prompt, str(n)],
                            capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["ids"] == answer["streamed"]
    return answer["ids"]
