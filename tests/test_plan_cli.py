"""`icllama plan`: the table, --json, --write-dfx, and its errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from client.cli import main
from client.commands.plan import parse_bytes
from sharding.model_spec import read_model_spec
from sharding.partition import Constraints, make_plan
from sharding.presets import preset_spec
from tests.synthetic_models import SyntheticSpec, write_synthetic_model

YLLAMA_ARGS = ["--preset", "llama-3-8b", "--weight-format", "f32", "--kernel", "scalar", "--fees", "2024",
               "--strategy", "one-per-layer", "--heap", "wasm32"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_model(tmp_path_factory.mktemp("m") / "tiny.gguf", SyntheticSpec(n_layer=8))


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["plan", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_table_has_a_row_per_canister_and_the_totals(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(YLLAMA_ARGS, capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "llama-3-8b (f16 file); weights converted to f32 at load  [preset:llama-3-8b:f16]"
    header = next(i for i, line in enumerate(lines) if line.startswith("canister"))
    rows = lines[header + 1 : header + 35]
    assert [r.split()[0] for r in rows] == ["head"] + [f"yblock_{i}" for i in range(33)]
    assert rows[1].split()[1:4] == ["layers", "layer", "0"] and "12.92B" in rows[1]
    assert "output, samples" in rows[-1]
    assert "canisters       34 (33 sequential calls per token)" in out
    assert "0.1781 TC" in out
    assert "virtual time    206 rounds = 206 s per token, averaged over 64 tokens" in out
    assert lines[header].split() == ["canister", "role", "holds", "weights", "upload", "KV/session", "instr/token",
                                     "slices/token", "cycles/token"]
    assert "16,503 B (16,384 B of f32 + 119 B of Candid)" in out


def test_json_is_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([*YLLAMA_ARGS, "--json"], capsys)
    assert code == 0
    expected = make_plan(preset_spec("llama-3-8b", "f16"), Constraints(weight_format="f32", kernel="scalar",
                                                                       fees="2024"), "one-per-layer")
    assert json.loads(out) == json.loads(json.dumps(expected.to_dict()))


@pytest.mark.parametrize("shards", [1, 2, 4, 8])
def test_shards_on_a_file(model: Path, shards: int, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([str(model), "--shards", str(shards), "--json"], capsys)
    assert code == 0
    plan = json.loads(out)
    assert len(plan["shards"]) == shards + 1 and plan["source"] == str(model)


@pytest.mark.real_model
@pytest.mark.parametrize("shards", [1, 2, 4, 8])
def test_smollm2_shards(smollm2_path: Path, shards: int, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["smollm2", "--shards", str(shards), "--json"], capsys)
    assert code == 0
    plan = json.loads(out)
    assert len(plan["shards"]) == shards + 1
    assert [tuple(s["layers"]) for s in plan["shards"] if s["layers"]][-1][1] == 30
    assert plan["shards"][-1]["output_rows"] == [0, 49152] and plan["shards"][-1]["samples"]
    expected = make_plan(read_model_spec(smollm2_path), Constraints(shards=shards))
    assert plan == json.loads(json.dumps(expected.to_dict()))


def test_write_dfx_creates_and_updates_keeping_other_entries(model: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    dfx = tmp_path / "project" / "dfx.json"
    dfx.parent.mkdir()
    dfx.write_text(json.dumps({"canisters": {"frontend": {"type": "assets", "source": ["dist"]},
                                             "head": {"type": "custom", "wasm": "head.wasm"}},
                               "networks": {"ic": {"providers": ["https://icp0.io"]},
                                            "local": {"bind": "127.0.0.1:8000", "type": "ephemeral"}}}))
    code, _, err = run([str(model), "--shards", "4", "--write-dfx", str(dfx)], capsys)
    assert code == 0 and f"wrote 5 canisters (head, yblock_0, yblock_1, ...) to {dfx}" in err
    config = json.loads(dfx.read_text())
    canisters = config["canisters"]
    assert sorted(canisters) == ["frontend", "head"] + [f"yblock_{i}" for i in range(4)]
    assert canisters["frontend"] == {"type": "assets", "source": ["dist"]}
    assert canisters["head"] == {"type": "custom", "wasm": "head.wasm", "candid": _rel("canisters/head/head.did", dfx)}
    assert canisters["yblock_3"] == {"type": "custom", "candid": _rel("canisters/yblock/yblock.did", dfx),
                                     "wasm": _rel("canisters/yblock/yblock.wasm", dfx)}
    assert config["networks"] == {"ic": {"providers": ["https://icp0.io"]},
                                  "local": {"bind": "127.0.0.1:4943", "type": "ephemeral"}}
    # a smaller plan drops the yblocks it no longer has
    assert run([str(model), "--shards", "2", "--write-dfx", str(dfx)], capsys)[0] == 0
    assert sorted(json.loads(dfx.read_text())["canisters"]) == ["frontend", "head", "yblock_0", "yblock_1"]
    assert [p.name for p in dfx.parent.iterdir()] == ["dfx.json"]  # no temporary left behind
    assert dfx.stat().st_mode & 0o777 == 0o644  # a project file's mode, not the temporary's 0600
    dfx.chmod(0o664)
    assert run([str(model), "--shards", "2", "--write-dfx", str(dfx)], capsys)[0] == 0
    assert dfx.stat().st_mode & 0o777 == 0o664


def test_write_dfx_in_the_project_root_names_the_did_files_as_dfx_does(model: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parents[1]
    target = tmp_path / "dfx.json"
    monkeypatch.chdir(tmp_path)
    assert run([str(model), "--shards", "1", "--write-dfx"], capsys)[0] == 0  # the default path: ./dfx.json
    config = json.loads(target.read_text())
    assert config["version"] == 1 and config["networks"]["local"]["bind"] == "127.0.0.1:4943"
    assert (target.parent / config["canisters"]["yblock_0"]["candid"]).resolve() == root / "canisters/yblock/yblock.did"


def test_write_dfx_refuses_a_file_that_is_not_json(model: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    dfx = tmp_path / "dfx.json"
    dfx.write_text("{not json")
    code, _, err = run([str(model), "--write-dfx", str(dfx)], capsys)
    assert code == 2 and "is not readable JSON" in err and "fix or remove it first" in err
    assert dfx.read_text() == "{not json"


@pytest.mark.parametrize(("args", "message"), [
    ([], "give a MODEL: a catalog name or a .gguf path"),
    (["tiny.gguf", "--preset", "llama-3-8b"], "give a MODEL (catalog name or .gguf path) or --preset NAME, not both"),
    (["--preset", "llama-2"], "unknown preset 'llama-2'"),
    (["--preset", "llama-3-8b:q3_k"], "preset llama-3-8b comes in f32, f16, q8_0, q4_1, q4_k_m, not 'q3_k'"),
    (["--preset", "llama-3-70b", "--kernel", "scalar"], "layer 0 alone needs"),
    (["missing.gguf"], "model file missing.gguf does not exist"),
])
def test_errors_are_one_clear_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(args, capsys)
    assert code == 2 and err.startswith("icllama: error: ") and message in err


def test_sizes_are_read_with_units() -> None:
    assert parse_bytes("2GiB") == 2 << 30 and parse_bytes("1536MiB") == 1536 << 20 and parse_bytes("1.5 GiB") == 3 << 29
    assert parse_bytes("2147483648") == 2 << 30 and parse_bytes("2GB") == 2 * 10**9
    with pytest.raises(SystemExit):
        main(["plan", "--preset", "llama-3-8b", "--shard-bytes", "2 parsecs"])


def _rel(did: str, dfx: Path) -> str:
    return os.path.relpath(Path(__file__).resolve().parents[1] / did, dfx.parent)


def test_a_file_plan_is_titled_by_its_file_name(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([str(model), "--shards", "2"], capsys)
    assert code == 0
    assert out.splitlines()[0] == f"tiny.gguf  [{model}]"  # not general.name, often a training-run label
