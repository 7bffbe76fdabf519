"""One weight tensor (a matrix or a 1-D vector) held in one of two strategies, chosen at load.

- `dequantize`: decoded to f32 once at load and kept as a C-contiguous (out, in) array, so that
  `x @ W.T` is a single BLAS call. Resident memory: 4 bytes per element (`out * in * 4`).
- `quantized`: the raw GGUF bytes are kept. Resident memory: the raw bytes. Two implementations:
  - native (`NativeQuantizedWeight`), when the C extension canisters/llama/_qmatmul.c is built
    (`pip install -e .` does it) and covers the type (`NATIVE_TYPES`): the bytes stay in GGUF's
    row layout, and a product of any batch reads them directly with integer dot products
    (canisters/kernels), on `THREADS` threads. This is the fast path: it reads the 0.56-1.06 bytes
    per weight of the file instead of 4; SmolLM2 Q4_1 decodes at 96-100 tok/s against 34 for
    `dequantize` (see _qmatmul.c).
  - numpy (`QuantizedWeight`), otherwise (no compiler at install, `ICLLAMA_NATIVE=0`, or a type
    the kernels lack): the bytes are repacked at load into a planar layout of the same size, and
    each use decodes `block_rows` rows at a time into the scratch for BLAS, plus uint8
    temporaries of about 1-2 bytes per scratch element. Slower: every use pays the decoding.
  Either may allocate, and frees when it returns, that f32 scratch (`nbytes_scratch` =
  `block_rows * in * 4`: at most `SCRATCH_BYTES`, or one row if a row is bigger).

Every strategy multiplies activations prepared as ggml prepares them (8-bit blocks by weight type,
canisters/llama/act_quant.py, as canisters/kernels/kernels.h specifies): the native kernels with
integer dot products, the BLAS paths with those activations as f32, the same to f32 rounding.

`nbytes_resident` and `nbytes_scratch` report exactly these figures for the canister's memory
accounting. Scratch is transient, so a holder of many weights needs the sum of `nbytes_resident`
plus the largest `nbytes_scratch`, not the sum of both.

A matrix may be restricted to an output-row range at load (`rows=(start, stop)`), so the
partitioner can split a matrix by rows across canisters.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from enum import Enum

import numpy as np
from gguf.constants import GGMLQuantizationType

from canisters.llama import act_quant, quants
from canisters.llama.meter import Meter

# Bound on the f32 scratch of a quantized matrix: rows decoded per block. Large enough that per-block
# overhead (a few numpy calls and one BLAS call) is small, small enough to stay in a 4 MiB L2 cache.
SCRATCH_BYTES = 1 << 20


def _load_native():
    """The C kernels, or None when they are not built or ICLLAMA_NATIVE=0 turns them off."""
    if os.environ.get("ICLLAMA_NATIVE", "1") == "0":
        return None
    try:
        from canisters.llama import _qmatmul
    except ImportError:
        return None
    return _qmatmul


def _thread_count() -> int:
    value = os.environ.get("ICLLAMA_THREADS")
    if value is None:
        # 2 is what was measured (on 2 cores); the pool is untested beyond that
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return min(2, cores)
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"ICLLAMA_THREADS must be a positive integer, got {value!r}")
    return int(value)


_native = _load_native()
NATIVE_TYPES: frozenset[GGMLQuantizationType] = frozenset(
    GGMLQuantizationType(t) for t in (_native.TYPES if _native else ())
)
# Threads of the native kernels (ICLLAMA_THREADS overrides).
THREADS = _thread_count()


class Strategy(str, Enum):
    DEQUANTIZE = "dequantize"
    QUANTIZED = "quantized"

    @classmethod
    def of(cls, value: Strategy | str) -> Strategy:
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown weight strategy {value!r}; choose one of {choices}") from None


class Weight(ABC):
    """A matrix (GGUF shape (in, out), used as y = x @ W.T) or a vector (shape (n,)).

    Build with `Weight.load`; the result is read-only.
    """

    def __init__(self, ggml_type: GGMLQuantizationType, shape: tuple[int, ...]):
        self._ggml_type = ggml_type
        self._shape = shape

    @staticmethod
    def load(
        raw: np.ndarray,
        ggml_type: GGMLQuantizationType | int | str,
        shape: Sequence[int],
        strategy: Strategy | str,
        rows: tuple[int, int] | None = None,
    ) -> Weight:
        """Load a tensor from its raw GGUF bytes.

        raw: the whole tensor's bytes (uint8; a read-only memmap slice is fine). Neither strategy
            keeps a reference to it: both copy what they hold.
        shape: GGUF order, (in,) or (in, out).
        rows: keep only output rows [start, stop) of a matrix; the result behaves as a matrix of
            stop - start rows, and `rows(ids)` then takes ids relative to `start`.
        """
        ggml_type = quants.ggml_type_of(ggml_type)
        strategy = Strategy.of(strategy)
        shape = tuple(int(dim) for dim in shape)
        if len(shape) not in (1, 2):
            raise ValueError(f"a weight must be a vector or a matrix, got a tensor of shape {shape}")
        if rows is not None and len(shape) != 2:
            raise ValueError(f"a row range applies to a matrix, not to a vector of shape {shape}")
        held = quants.select_rows(raw, ggml_type, shape, rows)
        held_shape = shape if len(shape) == 1 else (shape[0], held.shape[0])
        if strategy is Strategy.DEQUANTIZE:
            mins = act_quant.block_mins(held, ggml_type) if ggml_type in act_quant.Q8_1_TYPES else None
            return DequantizedWeight(ggml_type, held_shape, quants.dequantize(held, ggml_type, held_shape), mins)
        if _native is not None and ggml_type in NATIVE_TYPES:
            return NativeQuantizedWeight(ggml_type, held_shape, held)
        return QuantizedWeight(ggml_type, held_shape, held)

    @property
    def ggml_type(self) -> GGMLQuantizationType:
        """The type of the bytes this weight was loaded from."""
        return self._ggml_type

    @property
    def shape(self) -> tuple[int, ...]:
        """GGUF order: (in,) for a vector, (in, out) for a matrix (out = rows held)."""
        return self._shape

    @property
    @abstractmethod
    def nbytes_resident(self) -> int:
        """Bytes this weight keeps in memory between uses under its strategy (see the module docstring)."""

    @property
    @abstractmethod
    def nbytes_scratch(self) -> int:
        """Bytes of f32 scratch a matmul allocates while it runs (0 when it needs none)."""

    @property
    @abstractmethod
    def kernel_type(self) -> str:
        """The GGML type name that matmul multiplies against, as reported to `Meter.macs`."""

    @abstractmethod
    def matmul(self, x: np.ndarray, meter: Meter) -> np.ndarray:
        """y = x @ W.T for x f32 (n, in); returns f32 (n, out). Reports macs and weight bytes read."""

    @abstractmethod
    def rows(self, ids: np.ndarray) -> np.ndarray:
        """f32 (len(ids), in): the rows `ids` of the matrix (embedding lookup)."""

    @abstractmethod
    def dense(self) -> np.ndarray:
        """The whole tensor as f32 in numpy order ((out, in) or (in,)); read-only. Meant for small
        tensors: under the quantized strategy it decodes everything on each call."""

    def _check_matmul_input(self, x: np.ndarray) -> None:
        if len(self._shape) != 2:
            raise ValueError(f"matmul needs a matrix; this {self._ggml_type.name} weight is a vector {self._shape}")
        if x.ndim != 2 or x.shape[1] != self._shape[0] or x.dtype != np.float32:
            raise ValueError(f"matmul input must be float32 (n_tokens, {self._shape[0]}), got {x.dtype} {x.shape}")

    def _check_row_ids(self, ids: np.ndarray) -> np.ndarray:
        if len(self._shape) != 2:
            raise ValueError(f"row lookup needs a matrix; this {self._ggml_type.name} weight is a vector")
        ids = np.asarray(ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"row ids must be a 1-D integer array, got {ids.dtype} of shape {ids.shape}")
        n_rows = self._shape[1]
        bad = ids[(ids < 0) | (ids >= n_rows)]
        if bad.size:
            raise IndexError(f"row ids {bad[:5].tolist()} are outside this matrix's {n_rows} rows")
        return ids


class DequantizedWeight(Weight):
    """f32 (out, in), C-contiguous, decoded once at load; for Q4_1/Q5_1 also each block's m (f32
    (out, blocks)), for ggml's sums of their additive terms (act_quant.min_correction)."""

    def __init__(self, ggml_type: GGMLQuantizationType, shape: tuple[int, ...], dense: np.ndarray,
                 mins: np.ndarray | None = None):
        super().__init__(ggml_type, shape)
        dense.flags.writeable = False
        self._dense = dense
        self._mins = mins

    @property
    def nbytes_resident(self) -> int:
        return self._dense.nbytes + (0 if self._mins is None else self._mins.nbytes)

    @property
    def nbytes_scratch(self) -> int:
        return 0

    @property
    def kernel_type(self) -> str:
        return GGMLQuantizationType.F32.name

    def matmul(self, x: np.ndarray, meter: Meter) -> np.ndarray:
        self._check_matmul_input(x)
        meter.macs(self.kernel_type, x.shape[0] * self._dense.size)
        meter.touched(self._dense.nbytes)
        prepared = act_quant.for_blas(x, self._ggml_type)
        y = prepared.values @ self._dense.T
        if prepared.block_sums is not None:
            y += act_quant.min_correction(prepared, self._mins)
        return y

    def rows(self, ids: np.ndarray) -> np.ndarray:
        return self._dense[self._check_row_ids(ids)]

    def dense(self) -> np.ndarray:
        return self._dense


def _block_rows(n_in: int, n_rows: int) -> int:
    """Rows decoded per step into the f32 scratch of the quantized strategy."""
    return max(1, min(n_rows, SCRATCH_BYTES // (4 * n_in)))


class _KeptQuantized(Weight):
    """A weight whose quantized bytes stay resident, decoded in row blocks of bounded scratch."""

    def __init__(self, ggml_type: GGMLQuantizationType, shape: tuple[int, ...], n_rows: int):
        super().__init__(ggml_type, shape)
        self._block_rows = _block_rows(shape[0], n_rows)

    @property
    def nbytes_scratch(self) -> int:
        return self._block_rows * self._shape[0] * 4

    @property
    def kernel_type(self) -> str:
        return self._ggml_type.name

    def _metered(self, x: np.ndarray, meter: Meter) -> tuple[int, int]:
        """Checks x, reports the matmul's work, and returns (n_in, n_out)."""
        self._check_matmul_input(x)
        n_in, n_out = self._shape
        meter.macs(self.kernel_type, x.shape[0] * n_in * n_out)
        meter.touched(self.nbytes_resident)
        return n_in, n_out


class NativeQuantizedWeight(_KeptQuantized):
    """The raw GGUF bytes of the rows held, as they are in the file, multiplied by the C kernels."""

    def __init__(self, ggml_type: GGMLQuantizationType, shape: tuple[int, ...], raw_rows: np.ndarray):
        super().__init__(ggml_type, shape, raw_rows.shape[0])
        self._raw = _read_only(np.array(raw_rows, dtype=np.uint8, order="C", copy=True))

    @property
    def nbytes_resident(self) -> int:
        return self._raw.nbytes

    def matmul(self, x: np.ndarray, meter: Meter) -> np.ndarray:
        n_in, n_out = self._metered(x, meter)
        # Every batch size through the integer kernel: each output is then the same bits whatever the
        # batch (8-bit activations turn any other rounding into flipped steps downstream), and it is
        # faster than decoding rows for BLAS (SmolLM2's 1536 x 576 Q4_1 at 64 tokens: 16 ms, 452)
        x = np.ascontiguousarray(x)
        y = np.empty((x.shape[0], n_out), dtype=np.float32)
        _native.matmul(self._raw, self._ggml_type.value, n_in, x, y, THREADS)
        return y

    def rows(self, ids: np.ndarray) -> np.ndarray:
        ids = self._check_row_ids(ids)
        result = np.empty((ids.size, self._shape[0]), dtype=np.float32)
        _native.dequantize(self._raw[ids], self._ggml_type.value, self._shape[0], result)
        return result

    def dense(self) -> np.ndarray:
        dense = np.empty(self._shape[::-1], dtype=np.float32)
        _native.dequantize(self._raw, self._ggml_type.value, self._shape[0], dense, THREADS)
        return _read_only(dense)


class QuantizedWeight(_KeptQuantized):
    """The raw GGUF bytes of the rows held, repacked at load into planar row blocks (same bytes,
    block fields contiguous: see quants.to_planar) and decoded one row block per step on each use."""

    def __init__(self, ggml_type: GGMLQuantizationType, shape: tuple[int, ...], raw_rows: np.ndarray):
        n_rows = raw_rows.shape[0]
        super().__init__(ggml_type, shape, n_rows)
        self._planar = tuple(
            _read_only(quants.to_planar(raw_rows[start : start + self._block_rows], ggml_type))
            for start in range(0, n_rows, self._block_rows)
        )

    @property
    def nbytes_resident(self) -> int:
        return sum(block.nbytes for block in self._planar)

    def matmul(self, x: np.ndarray, meter: Meter) -> np.ndarray:
        n_in, n_out = self._metered(x, meter)
        prepared = act_quant.for_blas(x, self._ggml_type)
        x = prepared.values
        # decode_planar yields W.T with inputs in planar order (j * S + s for input s * block + j),
        # and additive offsets per sub-block, applied here through per-sub-block sums of x (for
        # Q4_1/Q5_1, ggml's Q8_1 block sums)
        blocks_per_row = self._planar[0].shape[1]
        by_block = x.reshape(x.shape[0], blocks_per_row, -1)
        x_planar = np.ascontiguousarray(by_block.transpose(0, 2, 1)).reshape(x.shape)
        y = np.empty((x.shape[0], n_out), dtype=np.float32)
        scratch = np.empty(self.nbytes_scratch // 4, dtype=np.float32)
        sub_block_sums = None  # (n, n_sub * S), row k * S + s: x summed over sub-block k of block s
        start = 0
        for block in self._planar:
            stop = start + block.shape[2]
            scaled, offsets = quants.decode_planar(block, self._ggml_type, scratch[: block.shape[2] * n_in])
            np.matmul(x_planar, scaled, out=y[:, start:stop])
            if offsets is not None:
                if sub_block_sums is None and prepared.block_sums is not None:
                    sub_block_sums = prepared.block_sums
                if sub_block_sums is None:
                    n_sub = offsets.shape[0] // blocks_per_row
                    sums = by_block.reshape(x.shape[0], blocks_per_row, n_sub, -1).sum(axis=3, dtype=np.float32)
                    sub_block_sums = sums.transpose(0, 2, 1).reshape(x.shape[0], -1)
                y[:, start:stop] += sub_block_sums @ offsets
            start = stop
        return y

    def rows(self, ids: np.ndarray) -> np.ndarray:
        ids = self._check_row_ids(ids)
        n_in = self._shape[0]
        result = np.empty((ids.size, n_in), dtype=np.float32)
        block_of, column = np.divmod(ids, self._block_rows)
        for block in np.unique(block_of):
            wanted = block_of == block
            raw = quants.from_planar(self._planar[block][:, :, column[wanted]], self._ggml_type)
            result[wanted] = quants.dequantize(raw, self._ggml_type, (n_in, raw.shape[0]))
        return result

    def dense(self) -> np.ndarray:
        raw = np.concatenate([quants.from_planar(block, self._ggml_type) for block in self._planar])
        dense = quants.dequantize(raw, self._ggml_type, self._shape)
        dense.flags.writeable = False
        return dense


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array
