"""Shard export: one GGUF file per canister of a plan, and a manifest with each file's sha256.

Each file holds its tensors' original bytes, untouched (the rows of a row-split output matrix are
the bytes of those rows), the model's architecture metadata, and `icllama.shard.*` metadata; the
head's file also carries the tokenizer and the chat template. Files are written under temporary
names and renamed when all are complete, the manifest last; exporting the same plan of the same
file again, with the files intact, writes nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter
from tqdm import tqdm

from canisters.llama.gguf_file import GGUFFile, read_gguf
from canisters.llama.weights import Strategy
from client.catalog import sha256_file
from sharding.partition import Plan, Shard

# The on-chain weight formats a canister can hold, as the weight strategies that hold them.
STRATEGIES = {"gguf": Strategy.QUANTIZED, "f32": Strategy.DEQUANTIZE}
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "icllama-shards/1"
SHARD_KEY = "icllama.shard."
# GGUFReader's pseudo-fields of the header, and what GGUFWriter writes itself
_NOT_COPIED = ("GGUF.", "general.architecture", "general.alignment")


class ExportError(ValueError):
    """The export cannot be done as asked; the message says why and what to do."""


@dataclass(frozen=True)
class ExportedFile:
    shard: str
    file: str  # name inside the output directory
    size: int
    sha256: str


_FILE_FIELDS = {"shard", "file", "size", "sha256"}


@dataclass(frozen=True)
class Export:
    directory: Path
    files: tuple[ExportedFile, ...]
    written: bool  # False when the same plan was already exported there, intact


def export_shards(model: Path, plan: Plan, out: Path, progress: bool = False) -> Export:
    """Write `plan`'s shard files of `model` into directory `out` (created if needed)."""
    if Path(plan.source).resolve() != model.resolve():
        raise ExportError(f"the plan was made for {plan.source}, not {model}; plan this model first")
    if plan.constraints.weight_format not in STRATEGIES:
        raise ExportError(f"canisters hold weights as the file stores them (--weight-format gguf) or as f32 "
                          f"(--weight-format f32); {plan.constraints.weight_format} on-chain can be planned and "
                          "costed, not deployed")
    source = _source_identity(model)
    out.mkdir(parents=True, exist_ok=True)
    previous = _read_manifest(out / MANIFEST)
    if previous and previous["plan_hash"] == plan.digest and previous["source"] == source:
        files = tuple(ExportedFile(**f) for f in previous["files"])
        if all(_intact(out, f, progress) for f in files):
            return Export(out, files, written=False)

    gguf, typed = read_gguf(model), GGUFReader(model)
    total = sum(s.file_bytes for s in plan.shards)
    with tqdm(total=total, unit="B", unit_scale=True, desc="export", disable=not progress) as bar, \
            _temporaries(out) as temporary:
        written = []
        for shard in plan.shards:
            path = temporary(f"{shard.name}.gguf")
            _write_shard(path, gguf, typed, plan, shard, bar)
            written.append((shard, path))
        files = tuple(ExportedFile(shard.name, f"{shard.name}.gguf", path.stat().st_size, sha256_file(path))
                      for shard, path in written)
        manifest = temporary(MANIFEST)
        manifest.write_text(json.dumps({"format": MANIFEST_FORMAT, "plan_hash": plan.digest, "source": source,
                                        "files": [asdict(f) for f in files], "plan": plan.to_dict()}, indent=2))
        for (_, path), f in zip(written, files, strict=True):
            os.replace(path, out / f.file)
        os.replace(manifest, out / MANIFEST)
    names = {f.file for f in files}
    for old in (previous or {}).get("files", []):
        if old["file"] not in names:
            (out / old["file"]).unlink(missing_ok=True)
    return Export(out, files, written=True)


def weight_strategy(plan: Plan, shard: Shard) -> str:
    """How the canister holds its weights (canisters/llama/weights.py). The head only looks rows of
    token_embd up, so it keeps them as the file stores them whatever the plan's format."""
    return Strategy.QUANTIZED.value if shard.role == "head" else STRATEGIES[plan.constraints.weight_format].value


def shard_tensor(gguf: GGUFFile, name: str, rows: tuple[int, int] | None) -> np.ndarray:
    """A tensor's raw bytes as the writer takes them: (rows, bytes per row) for a matrix, (bytes,) for a
    vector; only rows [start, stop) when `rows` is given."""
    info = gguf.tensor(name)
    raw = gguf.tensor_bytes(name)
    if len(info.shape) == 1:
        return raw
    n_rows = int(np.prod(info.shape[1:]))
    matrix = raw.reshape(n_rows, info.n_bytes // n_rows)
    return matrix[rows[0] : rows[1]] if rows else matrix


def _write_shard(path: Path, gguf: GGUFFile, typed: GGUFReader, plan: Plan, shard: Shard, bar: tqdm) -> None:
    arch = gguf.architecture
    writer = GGUFWriter(path, arch)
    for key, field in typed.fields.items():
        if key.startswith(_NOT_COPIED) or (key.startswith("tokenizer.") and shard.role != "head"):
            continue
        vtype = field.types[0]
        writer.add_key_value(key, field.contents(), vtype, field.types[-1] if vtype == GGUFValueType.ARRAY else None)
    if f"{arch}.vocab_size" not in typed.fields:  # without the tokenizer, a yblock learns n_vocab from here
        writer.add_uint32(f"{arch}.vocab_size", plan.n_vocab)
    first, last = shard.layers or (0, 0)
    writer.add_string(SHARD_KEY + "name", shard.name)
    writer.add_string(SHARD_KEY + "role", shard.role)
    writer.add_uint32(SHARD_KEY + "index", shard.index)
    writer.add_uint32(SHARD_KEY + "count", len(plan.shards))
    writer.add_uint32(SHARD_KEY + "stage", shard.stage)
    writer.add_uint32(SHARD_KEY + "first_layer", first)
    writer.add_uint32(SHARD_KEY + "last_layer", last)
    if shard.output_rows:
        writer.add_array(SHARD_KEY + "output_rows", list(shard.output_rows))
    writer.add_bool(SHARD_KEY + "samples", shard.samples)
    writer.add_string(SHARD_KEY + "weight_strategy", weight_strategy(plan, shard))
    writer.add_string(SHARD_KEY + "plan_hash", plan.digest)
    output = shard.tensors[-1] if shard.output_rows else None
    tensors = []
    for name in shard.tensors:
        rows = shard.output_rows if name == output and shard.output_rows != (0, plan.n_vocab) else None
        data = shard_tensor(gguf, name, rows)
        writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, raw_dtype=gguf.tensor(name).ggml_type)
        tensors.append(data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for data in tensors:
        writer.write_tensor_data(data)
        bar.update(data.nbytes)
    writer.close()


@contextmanager
def _temporaries(out: Path) -> Iterator:
    """Names for files being written in `out`; whatever is left of them is removed on the way out."""
    made: list[Path] = []

    def temporary(name: str) -> Path:
        path = out / f".{name}.{os.getpid()}.tmp"
        made.append(path)
        return path

    try:
        yield temporary
    finally:
        for path in made:
            path.unlink(missing_ok=True)


def _source_identity(model: Path) -> dict:
    stat = model.stat()
    return {"path": str(model.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def read_export(manifest: Path) -> Export:
    """The export that a manifest.json describes (its files beside it; not verified here)."""
    document = _read_manifest(manifest)
    if document is None:
        raise ExportError(f"{manifest} is not an icllama shard manifest ({MANIFEST_FORMAT}); export the shards again")
    return Export(manifest.parent, tuple(ExportedFile(**f) for f in document["files"]), written=False)


def _read_manifest(path: Path) -> dict | None:
    """The manifest's contents, or None if there is none or it is damaged (it is then rewritten)."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return None
    files = manifest.get("files")
    if not isinstance(files, list) or not all(isinstance(f, dict) and set(f) == _FILE_FIELDS for f in files):
        return None
    return manifest


def _intact(out: Path, f: ExportedFile, progress: bool) -> bool:
    path = out / f.file
    return path.is_file() and path.stat().st_size == f.size and sha256_file(path, progress) == f.sha256

