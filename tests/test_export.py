"""Shard export: every tensor's bytes come through untouched (row slices are the source's rows), read
back with our reader and with gguf-py's; the manifest and the metadata describe the plan; export
is atomic and idempotent."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader

import sharding.export as export_module
from canisters.llama.config import ModelConfig
from canisters.llama.gguf_file import read_gguf
from canisters.yblock.shard_layout import ShardLayout
from client.cli import main
from sharding.export import ExportError, export_shards, read_export, shard_tensor, weight_strategy
from sharding.model_spec import read_model_spec
from sharding.partition import Constraints, Plan, Shard, make_plan
from tests.synthetic_models import SyntheticSpec, write_synthetic_model


@pytest.fixture
def llama(tmp_path: Path) -> Path:
    return write_synthetic_model(tmp_path / "llama.gguf",
                                 SyntheticSpec(tensor_type="Q8_0", n_layer=4, rope_freqs=True, seed=1))


@pytest.fixture
def qwen_tied(tmp_path: Path) -> Path:
    # d_ff 32 keeps a layer at f32 (64 KiB) below the output at f32 (68 KiB): a 66 KiB shard limit
    # then splits the (tied) output by rows while every layer fits
    return write_synthetic_model(tmp_path / "qwen.gguf", SyntheticSpec(arch="qwen2", tensor_type="Q4_0", n_layer=3,
                                                                       d_ff=32, n_head_kv=1, tied=True, seed=2))


def check_export(model: Path, plan: Plan, out: Path) -> None:
    """Each file holds exactly its shard's tensors, byte for byte, as both readers see them."""
    source = read_gguf(model)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["plan_hash"] == plan.digest and manifest["plan"] == json.loads(json.dumps(plan.to_dict()))
    assert [f["shard"] for f in manifest["files"]] == [s.name for s in plan.shards]
    for shard, entry in zip(plan.shards, manifest["files"], strict=True):
        path = out / entry["file"]
        assert entry["size"] == path.stat().st_size
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        ours, theirs = read_gguf(path), GGUFReader(path)
        assert list(ours.tensors) == list(shard.tensors) == [t.name for t in theirs.tensors]
        for name, reference in zip(shard.tensors, theirs.tensors, strict=True):
            info, src = ours.tensor(name), source.tensor(name)
            assert info.ggml_type == src.ggml_type == reference.tensor_type
            data = ours.tensor_bytes(name)
            assert np.array_equal(data, np.asarray(reference.data).reshape(-1).view(np.uint8))
            rows = shard.output_rows if name == shard.tensors[-1] and shard.output_rows else None
            if rows and rows != (0, plan.n_vocab):
                row_bytes = src.n_bytes // src.shape[1]
                assert info.shape == (src.shape[0], rows[1] - rows[0])
                expected = source.tensor_bytes(name)[rows[0] * row_bytes : rows[1] * row_bytes]
            else:
                assert info.shape == src.shape
                expected = source.tensor_bytes(name)
            assert np.array_equal(data, expected)
        check_metadata(source.fields, path, plan, shard)


def check_metadata(source: dict, path: Path, plan: Plan, shard: Shard) -> None:
    fields = read_gguf(path).fields
    arch = source["general.architecture"]
    for key, value in source.items():
        if key.startswith(arch + ".") or key == "general.name":
            assert fields[key] == value, key
        if key.startswith("tokenizer."):
            assert (key in fields) == (shard.role == "head"), key
            if shard.role == "head":
                assert fields[key] == value, key
    assert ModelConfig.from_gguf(fields, shard.name) == ModelConfig.from_gguf(source)  # a yblock knows the model
    expected = {"name": shard.name, "role": shard.role, "index": shard.index, "count": len(plan.shards),
                "stage": shard.stage, "first_layer": (shard.layers or (0, 0))[0],
                "last_layer": (shard.layers or (0, 0))[1], "samples": shard.samples,
                "weight_strategy": weight_strategy(plan, shard), "plan_hash": plan.digest}
    assert {k: fields["icllama.shard." + k] for k in expected} == expected
    assert fields.get("icllama.shard.output_rows") == (list(shard.output_rows) if shard.output_rows else None)
    assert ShardLayout.from_gguf(read_gguf(path)) == ShardLayout(  # as the canisters read it
        shard.name, shard.role, *(shard.layers or (0, 0)), shard.output_rows, weight_strategy(plan, shard))


@pytest.mark.parametrize("strategy", ["balanced-bytes", "one-per-layer"])
def test_exported_shards_hold_the_source_bytes(llama: Path, tmp_path: Path, strategy: str) -> None:
    plan = make_plan(read_model_spec(llama), Constraints(shards=2) if strategy == "balanced-bytes" else Constraints(),
                     strategy)
    result = export_shards(llama, plan, tmp_path / "out")
    assert result.written
    check_export(llama, plan, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["manifest.json"] + [f"{s.name}.gguf" for s in plan.shards])


def test_row_slices_of_a_tied_output_are_the_source_rows(qwen_tied: Path, tmp_path: Path) -> None:
    spec = read_model_spec(qwen_tied)
    plan = make_plan(spec, Constraints(weight_format="f32", shard_bytes=66 * 1024))
    slices = [s for s in plan.shards if s.output_rows and s.output_rows != (0, spec.config.n_vocab)]
    assert len(slices) >= 2 and all(s.tensors == ("output_norm.weight", "token_embd.weight") for s in slices)
    export_shards(qwen_tied, plan, tmp_path / "out")
    check_export(qwen_tied, plan, tmp_path / "out")
    # the slices put back together are the whole matrix
    parts = [read_gguf(tmp_path / "out" / f"{s.name}.gguf").tensor_bytes("token_embd.weight") for s in slices]
    assert np.array_equal(np.concatenate(parts), read_gguf(qwen_tied).tensor_bytes("token_embd.weight"))


def test_shard_tensor_views_rows_without_copying(llama: Path) -> None:
    gguf = read_gguf(llama)
    rows = shard_tensor(gguf, "output.weight", (10, 20))
    whole = shard_tensor(gguf, "output.weight", None)
    assert rows.shape == (10, whole.shape[1]) and np.shares_memory(rows, gguf.data)
    assert shard_tensor(gguf, "output_norm.weight", None).shape == (4 * 64,)


def test_re_export_of_the_same_plan_writes_nothing(llama: Path, tmp_path: Path) -> None:
    plan = make_plan(read_model_spec(llama), Constraints(shards=2))
    out = tmp_path / "out"
    export_shards(llama, plan, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = export_shards(llama, plan, out)
    assert not again.written
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    # a damaged file is noticed by its sha256 and written again
    damaged = out / "yblock_0.gguf"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert export_shards(llama, plan, out).written
    check_export(llama, plan, out)


def test_read_export_is_what_export_wrote(llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    written = export_shards(llama, make_plan(read_model_spec(llama), Constraints(shards=2)), out)
    assert read_export(out / "manifest.json") == replace(written, written=False)
    (out / "manifest.json").write_text('{"format": "something else"}')
    with pytest.raises(ExportError, match=r"manifest.json is not an icllama shard manifest \(icllama-shards/1\)"):
        read_export(out / "manifest.json")


def test_a_new_plan_replaces_the_files_and_removes_stale_ones(llama: Path, tmp_path: Path) -> None:
    spec, out = read_model_spec(llama), tmp_path / "out"
    export_shards(llama, make_plan(spec, Constraints(shards=4)), out)
    assert (out / "yblock_3.gguf").exists()
    smaller = make_plan(spec, Constraints(shards=2))
    assert export_shards(llama, smaller, out).written
    assert sorted(p.name for p in out.iterdir()) == ["head.gguf", "manifest.json", "yblock_0.gguf", "yblock_1.gguf"]
    check_export(llama, smaller, out)


def test_an_interrupted_export_leaves_the_previous_one_and_no_temporaries(llama: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    spec, out = read_model_spec(llama), tmp_path / "out"
    first = make_plan(spec, Constraints(shards=2))
    export_shards(llama, first, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_write = export_module._write_shard
    calls = []

    def failing_write(path, *args):  # noqa: ANN001, ANN202 - the same signature as _write_shard
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_write(path, *args)

    monkeypatch.setattr(export_module, "_write_shard", failing_write)
    with pytest.raises(OSError, match="disk full"):
        export_shards(llama, make_plan(spec, Constraints(shards=3)), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched, and no temporary files
    check_export(llama, first, out)


def test_a_plan_of_another_model_is_refused(llama: Path, qwen_tied: Path, tmp_path: Path) -> None:
    plan = make_plan(read_model_spec(qwen_tied), Constraints(shards=1))
    with pytest.raises(ExportError, match=r"the plan was made for .*qwen\.gguf, not .*llama\.gguf; plan this model"):
        export_shards(llama, plan, tmp_path / "out")


def test_f16_on_chain_is_planned_but_not_exported(llama: Path, tmp_path: Path) -> None:
    plan = make_plan(read_model_spec(llama), Constraints(weight_format="f16", shards=1))
    with pytest.raises(ExportError, match="f16 on-chain can be planned and costed, not deployed"):
        export_shards(llama, plan, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_command(llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "shards"
    assert main(["export", str(llama), "--shards", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote 3 shards of {llama.name} in") and "yblock_1.gguf" in printed
    assert main(["export", str(llama), "--shards", "2", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("unchanged (same plan, files intact): 3 shards")
    assert main(["export", str(llama), "--shards", "9", "--out", str(out)]) == 2
    assert "--shards 9 is more than the 5 pieces" in capsys.readouterr().err


@pytest.mark.real_model
def test_smollm2_export_keeps_the_tokenizer_and_chat_template_on_the_head(smollm2_path: Path,
                                                                          tmp_path: Path) -> None:
    plan = make_plan(read_model_spec(smollm2_path), Constraints(shards=2))
    export_shards(smollm2_path, plan, tmp_path / "out")
    check_export(smollm2_path, plan, tmp_path / "out")
    head = read_gguf(tmp_path / "out" / "head.gguf").fields
    assert head["tokenizer.chat_template"] == read_gguf(smollm2_path).fields["tokenizer.chat_template"]
