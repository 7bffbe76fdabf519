"""The GGUF reader against gguf-py's reader and writer, and on damaged files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader, GGUFWriter

from canisters.llama.config import ModelConfig, UnsupportedModel
from canisters.llama.gguf_file import GGUFError, read_gguf


def _write_sample(path: Path) -> Path:
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_uint32("test.u32", 7)
    writer.add_int64("test.i64", -3)
    writer.add_float64("test.f64", 0.25)
    writer.add_bool("test.bool", True)
    writer.add_string("test.str", "héllo")
    writer.add_array("test.ints", [1, 2, 3])
    writer.add_array("test.strs", ["a", "bb", ""])
    writer.add_tensor("a", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.add_tensor("b", np.ones(5, dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_matches_gguf_py_reader(tmp_path: Path) -> None:
    path = _write_sample(tmp_path / "sample.gguf")
    ours, theirs = read_gguf(path), GGUFReader(path)
    for field in theirs.fields.values():
        if not field.name.startswith("GGUF."):
            assert ours.fields[field.name] == pytest.approx(field.contents()), field.name
    for tensor in theirs.tensors:
        info = ours.tensor(tensor.name)
        assert info.shape == tuple(int(d) for d in tensor.shape)
        assert info.ggml_type == tensor.tensor_type
        assert info.offset == tensor.data_offset
        assert bytes(ours.tensor_bytes(tensor.name)) == tensor.data.tobytes()


def test_reads_from_a_buffer_the_same_as_from_a_path(tmp_path: Path) -> None:
    path = _write_sample(tmp_path / "sample.gguf")
    from_path, from_buffer = read_gguf(path), read_gguf(path.read_bytes(), name="upload")
    assert from_buffer.fields == from_path.fields
    assert np.array_equal(from_buffer.tensor_bytes("a"), from_path.tensor_bytes("a"))
    assert from_buffer.source == "upload"


def test_stories_model_config(stories_path: Path) -> None:
    config = ModelConfig.from_gguf(read_gguf(stories_path).fields)
    assert (config.arch, config.n_layer, config.d_model, config.n_head, config.n_head_kv) == ("llama", 5, 64, 8, 4)
    assert (config.head_dim, config.n_vocab, config.d_ff, config.rope_neox) == (8, 512, 172, False)


@pytest.mark.parametrize("cut", [0, 3, 10, 40, 200, -40])
def test_truncated_file_names_the_file_and_the_problem(tmp_path: Path, cut: int) -> None:
    data = _write_sample(tmp_path / "sample.gguf").read_bytes()
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(data[:cut])
    with pytest.raises(GGUFError, match=r"damaged\.gguf: .*(empty|truncated|not a GGUF)"):
        read_gguf(damaged)


def test_wrong_file_and_missing_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.gguf"
    text.write_text("this is not a model at all")
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_gguf(text)
    with pytest.raises(GGUFError, match="no such file"):
        read_gguf(tmp_path / "absent.gguf")


def test_absurd_counts_are_refused_without_allocating(tmp_path: Path) -> None:
    data = bytearray(_write_sample(tmp_path / "sample.gguf").read_bytes())
    data[8:16] = (2**62).to_bytes(8, "little")  # tensor count
    with pytest.raises(GGUFError, match="tensor count is 4611686018427387904, more than the rest of the file"):
        read_gguf(bytes(data))


def test_unsupported_architecture_is_a_clear_error(tmp_path: Path) -> None:
    writer = GGUFWriter(str(tmp_path / "m.gguf"), "mamba")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with pytest.raises(UnsupportedModel, match="architecture 'mamba' is not supported; supported: llama, qwen2"):
        ModelConfig.from_gguf(read_gguf(tmp_path / "m.gguf").fields)
