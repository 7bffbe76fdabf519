"""Reading GGUF files from any byte buffer: metadata fields, tensor infos, and tensor bytes.

Why not gguf-py's GGUFReader: it only opens paths (it memory-maps the file itself), but a
canister loads its shard from a buffer (bytes assembled from uploaded chunks in stable memory).
This reader works on a numpy uint8 view of anything: a memory-mapped file off-chain, a buffer
on-chain. Tensor data is never copied; `tensor_bytes` returns a view. Every length and offset is
checked against the buffer, so a truncated or corrupt file gives an error that names the file,
the byte offset and what is wrong, never an IndexError or a huge allocation.

gguf-py is still the reference: the tests compare this reader with GGUFReader, and the writer
used to build shards and synthetic models is gguf-py's GGUFWriter.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf.constants import GGUF_MAGIC, GGMLQuantizationType

from canisters.llama.quants import tensor_nbytes

DEFAULT_ALIGNMENT = 32

# GGUF metadata value types (gguf.constants.GGUFValueType) -> struct format for scalars.
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY_DTYPES = {
    0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8", 12: "<f8"
}
_STRING, _ARRAY = 8, 9


class GGUFError(ValueError):
    """A file is not a valid GGUF model; the message names the file and what is wrong."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # GGUF order: ne0 (the contiguous, "in" dimension) first
    ggml_type: GGMLQuantizationType
    offset: int  # absolute byte offset in the buffer
    n_bytes: int

    @property
    def type_name(self) -> str:
        return self.ggml_type.name

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class GGUFFile:
    source: str  # a name for error messages: the path, or what the buffer is
    version: int
    fields: Mapping[str, Any]
    tensors: Mapping[str, TensorInfo]  # in file order
    data: np.ndarray  # the whole file as uint8 (read-only view or memmap)

    def tensor_bytes(self, name: str) -> np.ndarray:
        """The tensor's raw bytes as a uint8 view (no copy)."""
        info = self.tensor(name)
        return self.data[info.offset : info.offset + info.n_bytes]

    def tensor(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise GGUFError(f"{self.source}: no tensor named {name!r}") from None

    @property
    def architecture(self) -> str:
        return str(self.fields.get("general.architecture", ""))


def read_gguf(source: str | Path | bytes | bytearray | memoryview | np.ndarray, name: str | None = None) -> GGUFFile:
    """Parse a GGUF file from a path (memory-mapped, read-only) or from a buffer."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        label = name or str(path)
        if not path.is_file():
            raise GGUFError(f"{label}: no such file")
        if path.stat().st_size == 0:
            raise GGUFError(f"{label}: the file is empty, not a GGUF model")
        data = np.memmap(path, dtype=np.uint8, mode="r")
    else:
        label = name or "<buffer>"
        data = np.frombuffer(source, dtype=np.uint8) if not isinstance(source, np.ndarray) else source
        if data.dtype != np.uint8 or data.ndim != 1:
            data = data.reshape(-1).view(np.uint8)
    return _Parser(data, label).parse()


class _Parser:
    def __init__(self, data: np.ndarray, source: str):
        self.data = data
        self.buf = memoryview(data)  # struct.unpack_from on a memoryview avoids numpy per-field overhead
        self.source = source
        self.pos = 0

    def fail(self, what: str) -> GGUFError:
        return GGUFError(f"{self.source}: {what} (at byte {self.pos} of {len(self.data)})")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"truncated: {what} needs {n} bytes, {len(self.data) - self.pos} remain")

    def scalar(self, fmt: str, what: str) -> Any:
        size = struct.calcsize(fmt)
        self.need(size, what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def count(self, what: str, min_item_bytes: int) -> int:
        """A u64 count, refused if the remaining bytes cannot possibly hold that many items."""
        n = self.scalar("<Q", what)
        if n * min_item_bytes > len(self.data) - self.pos:
            raise self.fail(f"truncated or corrupt: {what} is {n}, more than the rest of the file can hold")
        return n

    def string(self, what: str) -> str:
        n = self.count(f"length of {what}", 1)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"corrupt: {what} is not valid UTF-8 ({e.reason})") from None

    def value(self, vtype: int, key: str) -> Any:
        if vtype in _SCALAR_FORMATS:
            value = self.scalar(_SCALAR_FORMATS[vtype], f"value of {key}")
            return bool(value) if vtype == 7 else value
        if vtype == _STRING:
            return self.string(f"value of {key}")
        if vtype == _ARRAY:
            item_type = self.scalar("<I", f"array type of {key}")
            if item_type in _NUMPY_DTYPES:
                dtype = np.dtype(_NUMPY_DTYPES[item_type])
                n = self.count(f"array length of {key}", dtype.itemsize)
                items = self.data[self.pos : self.pos + n * dtype.itemsize].view(dtype)
                self.pos += n * dtype.itemsize
                return items.astype(bool).tolist() if item_type == 7 else items.tolist()
            if item_type == _STRING:
                n = self.count(f"array length of {key}", 8)
                return [self.string(f"item {i} of {key}") for i in range(n)]
            if item_type == _ARRAY:
                n = self.count(f"array length of {key}", 12)
                return [self.value(_ARRAY, f"{key}[{i}]") for i in range(n)]
            raise self.fail(f"corrupt: unknown array item type {item_type} in {key}")
        raise self.fail(f"corrupt: unknown value type {vtype} for {key}")

    def parse(self) -> GGUFFile:
        magic = self.scalar("<I", "magic")
        if magic != GGUF_MAGIC:
            raise GGUFError(f"{self.source}: not a GGUF file (magic {magic:#010x}, expected 'GGUF')")
        version = self.scalar("<I", "version")
        if version not in (2, 3):
            hint = " (a big-endian file?)" if version & 0xFFFF == 0 else ""
            raise self.fail(f"unsupported GGUF version {version}{hint}; versions 2 and 3 are supported")
        n_tensors = self.count("tensor count", 24)
        n_fields = self.count("metadata count", 13)
        fields: dict[str, Any] = {}
        for _ in range(n_fields):
            key = self.string("metadata key")
            fields[key] = self.value(self.scalar("<I", f"type of {key}"), key)
        infos = [self.tensor_info() for _ in range(n_tensors)]
        alignment = fields.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment % 8:
            raise self.fail(f"corrupt: general.alignment is {alignment!r}, expected a positive multiple of 8")
        data_start = -(-self.pos // alignment) * alignment
        tensors: dict[str, TensorInfo] = {}
        for name, shape, ggml_type, rel_offset in infos:
            if name in tensors:
                raise self.fail(f"corrupt: tensor {name!r} appears twice")
            if rel_offset % alignment:
                raise self.fail(f"corrupt: tensor {name!r} data offset {rel_offset} is not aligned to {alignment}")
            try:
                n_bytes = tensor_nbytes(ggml_type, shape)
            except ValueError as e:
                raise self.fail(f"corrupt: tensor {name!r}: {e}") from None
            offset = data_start + rel_offset
            if offset + n_bytes > len(self.data):
                raise GGUFError(
                    f"{self.source}: truncated: tensor {name!r} needs bytes {offset}..{offset + n_bytes} "
                    f"but the file has {len(self.data)}; download or export the file again"
                )
            tensors[name] = TensorInfo(name, shape, ggml_type, offset, n_bytes)
        return GGUFFile(self.source, version, fields, tensors, self.data)

    def tensor_info(self) -> tuple[str, tuple[int, ...], GGMLQuantizationType, int]:
        name = self.string("tensor name")
        n_dims = self.scalar("<I", f"dimension count of {name}")
        if not 1 <= n_dims <= 4:
            raise self.fail(f"corrupt: tensor {name!r} has {n_dims} dimensions (1 to 4 are valid)")
        shape = tuple(self.scalar("<Q", f"shape of {name}") for _ in range(n_dims))
        type_id = self.scalar("<I", f"type of {name}")
        try:
            ggml_type = GGMLQuantizationType(type_id)
        except ValueError:
            raise self.fail(f"corrupt: tensor {name!r} has unknown GGML type id {type_id}") from None
        return name, shape, ggml_type, self.scalar("<Q", f"offset of {name}")
