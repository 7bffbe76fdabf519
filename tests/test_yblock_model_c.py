"""The yblock's model compute in C (canisters/yblock/wasm/model.c) against the Python path.

The same C source the wasm canister is built from is compiled here natively into a shared library
and driven through ctypes, on shards that sharding/export.py cuts from synthetic models of every
supported weight type, from stories260K and from SmolLM2. The Python path (canisters/llama/model.py)
parses, plumbs, rotates, caches and projects in its own code, and takes its sums in the same float
order (RMSNorm, SwiGLU and attention through this C natively, checked against numpy's ordered_ops),
so the hidden states after each shard and the logits must be equal to the bit, and greedy ids the
same. The wasm32 + simd128 build of the same sources (zig cc, as the canister is built) runs in
wasmtime and must give the same bits as the native build.
"""

from __future__ import annotations

import ctypes
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from benchmarks.yblock_model_wasm import CompiledModel, WasmModel, build_model_wasm
from canisters.kernels.build import ZigMissing
from canisters.llama import native_ops, ordered_ops
from canisters.llama.config import ModelConfig
from canisters.llama.gguf_file import read_gguf
from canisters.llama.meter import NullMeter
from canisters.llama.model import Embedding, LayerStack, Llama, OutputHead
from sharding.export import export_shards
from sharding.model_spec import read_model_spec
from sharding.partition import Constraints, make_plan
from tests.synthetic_models import SyntheticSpec, write_synthetic_model
from tests.toolchains import missing, require_tool

ROOT = Path(__file__).resolve().parent.parent
MODEL_SOURCES = [ROOT / "canisters/yblock/wasm" / name for name in ("model.c", "gguf.c", "icl_math.c")]
KERNEL_SOURCE = ROOT / "canisters/kernels/kernels.c"
STORIES = ROOT / "tests/fixtures/models/stories260Ktok512.gguf"
CFLAGS = ["-std=c11", "-O2", "-ffp-contract=off"]
N_CTX = 24
RTOL = 0.0  # the same float order everywhere: equal to the bit
ERR_CAP = 512
TYPES = ["F32", "F16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"]


class ShardInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p), ("name_len", ctypes.c_size_t), ("role", ctypes.c_void_p),
        ("role_len", ctypes.c_size_t), ("strategy", ctypes.c_void_p), ("strategy_len", ctypes.c_size_t),
        ("first_layer", ctypes.c_int), ("last_layer", ctypes.c_int), ("has_output", ctypes.c_int),
        ("output_start", ctypes.c_int), ("output_stop", ctypes.c_int), ("d_model", ctypes.c_int),
        ("n_vocab", ctypes.c_int), ("n_ctx_train", ctypes.c_int), ("n_ctx", ctypes.c_int),
        ("weight_bytes", ctypes.c_size_t),
    ]


ALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_size_t)


def _aligned(n_bytes: int, alignment: int = 64) -> np.ndarray:
    """A zeroed uint8 array of n_bytes whose data starts at a multiple of `alignment`."""
    raw = np.zeros(n_bytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start : start + n_bytes]


@pytest.fixture(scope="module")
def model_lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    compiler = require_tool("gcc", "install a C compiler (Debian: apt-get install gcc)")
    if not KERNEL_SOURCE.is_file():
        missing(f"{KERNEL_SOURCE.relative_to(ROOT)} is not in the tree")
    library = tmp_path_factory.mktemp("model_c") / "libicl_model.so"
    warnings = subprocess.run([compiler, *CFLAGS, "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
                               *map(str, MODEL_SOURCES)], capture_output=True, text=True)
    assert warnings.returncode == 0, warnings.stderr
    build = subprocess.run([compiler, *CFLAGS, "-shared", "-fPIC", "-o", str(library), *map(str, MODEL_SOURCES),
                            str(KERNEL_SOURCE), "-lm"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    lib = ctypes.CDLL(str(library))
    lib.icl_shard_parse.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ALLOC,
                                    ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t]
    lib.icl_shard_get_info.argtypes = [ctypes.c_void_p, ctypes.POINTER(ShardInfo)]
    lib.icl_kv_bytes.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.icl_kv_bytes.restype = ctypes.c_size_t
    lib.icl_scratch_bytes.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.icl_scratch_bytes.restype = ctypes.c_size_t
    lib.icl_forward_layers.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                                       ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p,
                                       ctypes.c_size_t]
    lib.icl_output_logits.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                      ctypes.c_void_p]
    lib.icl_rms_norm.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_float,
                                 ctypes.c_void_p]
    lib.icl_swiglu.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    lib.icl_softmax_f16_scaled.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.icl_exp_f32.argtypes, lib.icl_exp_f32.restype = [ctypes.c_float], ctypes.c_float
    for name in ("icl_exp", "icl_log", "icl_sin", "icl_cos"):
        getattr(lib, name).argtypes, getattr(lib, name).restype = [ctypes.c_double], ctypes.c_double
    return lib


@pytest.fixture(scope="module")
def model_wasm(tmp_path_factory: pytest.TempPathFactory) -> CompiledModel:
    try:
        return CompiledModel.of(build_model_wasm(tmp_path_factory.mktemp("model_wasm") / "model.wasm"))
    except ZigMissing as e:
        missing(str(e))
        raise


class CShard:
    """One shard parsed by the C code, with its own sessions' KV caches."""

    def __init__(self, lib: ctypes.CDLL, data: bytes, n_ctx: int):
        self.lib = lib
        self.file = _aligned(len(data))
        self.file[:] = np.frombuffer(data, dtype=np.uint8)
        self.held: list[np.ndarray] = []  # what parse allocated, kept alive with the shard
        self.alloc = ALLOC(self._alloc)
        err = ctypes.create_string_buffer(ERR_CAP)
        self.handle = ctypes.c_void_p()
        if lib.icl_shard_parse(self.file.ctypes.data, len(data), n_ctx, self.alloc, ctypes.byref(self.handle), err,
                               ERR_CAP):
            raise ValueError(err.value.decode())
        self.info = ShardInfo()
        lib.icl_shard_get_info(self.handle, ctypes.byref(self.info))
        self.n_ctx = n_ctx
        self.kv = _aligned(lib.icl_kv_bytes(self.handle, n_ctx))
        self.length = ctypes.c_int(0)

    def _alloc(self, n_bytes: int) -> int:
        block = _aligned(n_bytes)
        self.held.append(block)
        return block.ctypes.data

    def forward(self, x: np.ndarray, pos: int) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32).copy()
        scratch = _aligned(self.lib.icl_scratch_bytes(self.handle, x.shape[0]))
        err = ctypes.create_string_buffer(ERR_CAP)
        if self.lib.icl_forward_layers(self.handle, self.kv.ctypes.data, self.n_ctx, ctypes.byref(self.length), pos,
                                       x.ctypes.data, x.shape[0], scratch.ctypes.data, err, ERR_CAP):
            raise ValueError(err.value.decode())
        return x

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        logits = np.empty((x.shape[0], self.info.output_stop - self.info.output_start), dtype=np.float32)
        scratch = _aligned(self.lib.icl_scratch_bytes(self.handle, x.shape[0]))
        self.lib.icl_output_logits(self.handle, x.ctypes.data, x.shape[0], logits.ctypes.data, scratch.ctypes.data)
        return logits


@dataclass
class PyShard:
    """The same shard in the Python path: what canisters/yblock/yblock.py loads from the file."""

    layers: LayerStack | None
    output: OutputHead | None

    @classmethod
    def load(cls, path: Path, n_ctx: int) -> PyShard:
        gguf = read_gguf(path)
        config = ModelConfig.from_gguf(gguf.fields)
        first, last = (int(gguf.fields[f"icllama.shard.{k}"]) for k in ("first_layer", "last_layer"))
        rows = gguf.fields.get("icllama.shard.output_rows")
        layers = LayerStack.load(gguf, config, first, last, "quantized", n_ctx) if last > first else None
        output = OutputHead.load(gguf, config, "quantized", rows=(0, rows[1] - rows[0])) if rows else None
        return cls(layers, output)


def export(model: Path, shards: int, directory: Path, kernel: str | None = None) -> tuple[Path, list[Path]]:
    """`kernel`: the planner's kernel, when the wasm yblock's (the default) would refuse the types."""
    kernels = {"kernel": kernel} if kernel else {}
    plan = make_plan(read_model_spec(model), Constraints(shards=shards, context=N_CTX, **kernels))
    exported = export_shards(model, plan, directory)
    files = [exported.directory / f.file for f in exported.files]
    return files[0], files[1:]  # the head's file, then the yblocks' in stage order


def assert_close(ours: np.ndarray, reference: np.ndarray, what: str, rtol: float = RTOL) -> None:
    scale = float(np.max(np.abs(reference)))
    error = float(np.max(np.abs(ours - reference)))
    assert error <= rtol * scale, f"{what}: max |C - Python| = {error:.3g}, {error / scale:.3g} of the largest value"


def run_both(lib: ctypes.CDLL, wasm: CompiledModel, model: Path, shards: int, tmp_path: Path, tokens: list[int],
             chunks: list[int], rtol: float = RTOL) -> None:
    """Feed `tokens` in chunks through the shards in C (native and wasm) and in Python, each shard
    from the same input in all three; compare the hidden states after each shard and the logits
    (within `rtol` of the largest value)."""
    head, yblock_files = export(model, shards, tmp_path / "shards")
    embedding = Embedding.load(read_gguf(head), "quantized")
    native = [CShard(lib, path.read_bytes(), N_CTX) for path in yblock_files]
    in_wasm = [WasmModel(wasm, path.read_bytes(), N_CTX) for path in yblock_files]
    python = [PyShard.load(path, N_CTX) for path in yblock_files]
    caches = [s.layers.new_cache(N_CTX) if s.layers else None for s in python]
    meter = NullMeter()
    pos = 0
    for n in chunks:
        where = f"positions {pos}..{pos + n - 1}"
        x = embedding(tokens[pos : pos + n], meter)
        logits: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for i, (c, w, py, cache) in enumerate(zip(native, in_wasm, python, caches, strict=True)):
            if py.layers:
                xc, xw = c.forward(x, pos), w.forward(x, pos)
                x = py.layers.forward(x, cache, pos, meter)
                assert c.length.value == pos + n
                assert_close(xc, x, f"hidden states after shard {i}, {where}", rtol)
                assert_same(xw, xc, f"wasm hidden states after shard {i}, {where}")
            if py.output:
                logits.append((c.logits(x), w.logits(x), py.output(x, meter)))
        ours, theirs, reference = (np.concatenate(part, axis=1) for part in zip(*logits, strict=True))
        assert_close(ours, reference, f"logits at {where}", rtol)
        assert_same(theirs, ours, f"wasm logits at {where}")
        pos += n


def greedy_ids(lib: ctypes.CDLL, model: Path, shards: int, tmp_path: Path, prompt: list[int], n_new: int
               ) -> tuple[list[int], list[int]]:
    """Greedy continuations of `prompt` by the C shards alone and by the Python shards alone."""
    head, yblock_files = export(model, shards, tmp_path / "greedy")
    embedding = Embedding.load(read_gguf(head), "quantized")
    meter = NullMeter()
    ours = [CShard(lib, path.read_bytes(), N_CTX) for path in yblock_files]
    python = [PyShard.load(path, N_CTX) for path in yblock_files]
    caches = [s.layers.new_cache(N_CTX) if s.layers else None for s in python]

    def c_step(ids: list[int], pos: int) -> int:
        x = embedding(ids, meter)
        for shard in ours:
            x = shard.forward(x, pos) if shard.kv.size else x
        return int(np.argmax(np.concatenate([s.logits(x[-1:]) for s in ours if s.info.has_output], axis=1)))

    def py_step(ids: list[int], pos: int) -> int:
        x = embedding(ids, meter)
        for shard, cache in zip(python, caches, strict=True):
            x = shard.layers.forward(x, cache, pos, meter) if shard.layers else x
        return int(np.argmax(np.concatenate([s.output(x[-1:], meter) for s in python if s.output], axis=1)))

    generated = []
    for step in (c_step, py_step):
        ids = [step(prompt, 0)]
        while len(ids) < n_new:
            ids.append(step(ids[-1:], len(prompt) + len(ids) - 1))
        generated.append(ids)
    return generated[0], generated[1]


def assert_same(ours: np.ndarray, reference: np.ndarray, what: str) -> None:
    """The wasm build against the native one: the same code and the same float steps, so the same bits."""
    assert np.array_equal(ours, reference), f"{what}: max difference {np.max(np.abs(ours - reference)):.3g}"


def synthetic(tmp_path: Path, arch: str, tensor_type: str, **spec: object) -> Path:
    k_quant = tensor_type.endswith("_K")
    dims = {"d_model": 256, "d_ff": 512, "n_head": 4, "n_head_kv": 2} if k_quant else {}
    return write_synthetic_model(tmp_path / f"{arch}-{tensor_type}.gguf",
                                 SyntheticSpec(arch=arch, tensor_type=tensor_type, **{"n_layer": 3, "n_ctx": 64,
                                                                                      **dims, **spec}))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("tensor_type", TYPES)
def test_every_type_agrees_with_the_python_path(model_lib: ctypes.CDLL, model_wasm: CompiledModel, tmp_path: Path,
                                                arch: str, tensor_type: str) -> None:
    model = synthetic(tmp_path, arch, tensor_type)
    run_both(model_lib, model_wasm, model, 2, tmp_path, [1, 270, 268, 266, 200, 5, 271], [3, 1, 2, 1])


@pytest.mark.parametrize(("shards", "chunks"), [(1, [1, 1, 1, 1]), (2, [2, 2, 1]), (3, [3, 1, 3])])
def test_shard_counts_prefill_chunks_tied_output_and_rope_factors(model_lib: ctypes.CDLL, model_wasm: CompiledModel,
                                                                  tmp_path: Path, shards: int, chunks: list[int]
                                                                  ) -> None:
    model = synthetic(tmp_path, "llama", "Q8_0", tied=True, rope_freqs=True, n_layer=4, seed=3)
    run_both(model_lib, model_wasm, model, shards, tmp_path, [1, 262, 270, 263, 190, 4, 260], chunks)


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_stories260k_agrees_with_the_python_path(model_lib: ctypes.CDLL, model_wasm: CompiledModel, tmp_path: Path,
                                                 shards: int) -> None:
    tokens = [1, 403, 407, 261, 378, 122, 283, 260]  # ids within stories260K's vocabulary of 512
    run_both(model_lib, model_wasm, STORIES, shards, tmp_path, tokens, [3, 1, 1, 2, 1])


@pytest.mark.parametrize(("which", "shards"), [("stories", 1), ("stories", 3), ("qwen2", 2)])
def test_greedy_ids_are_the_python_paths(model_lib: ctypes.CDLL, tmp_path: Path, which: str, shards: int) -> None:
    path = STORIES if which == "stories" else synthetic(tmp_path, "qwen2", "Q4_1", seed=5)
    c_ids, py_ids = greedy_ids(model_lib, path, shards, tmp_path, [1, 263, 207, 261], 12)
    assert c_ids == py_ids


@pytest.mark.real_model
def test_smollm2_is_the_python_paths_to_the_bit(model_lib: ctypes.CDLL, model_wasm: CompiledModel,
                                                smollm2_path: Path, tmp_path: Path) -> None:
    """30 layers of 8-bit activations: any last-bit difference would flip a rounding tie somewhere.
    With the same float order everywhere, hidden states and logits are equal to the bit and greedy
    decoding through 4 shards follows the same 16 tokens."""
    tokens = [1, 504, 3575, 282, 4649, 314]  # "<|im_start|>The capital of France is" (ids of its vocabulary)
    run_both(model_lib, model_wasm, smollm2_path, 4, tmp_path, tokens, [3, 1, 2])
    c_ids, py_ids = greedy_ids(model_lib, smollm2_path, 4, tmp_path, tokens, 16)
    assert c_ids == py_ids


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_the_python_paths_native_ops_are_ordered_ops_in_a_whole_model(tmp_path: Path, arch: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """model.py's RMSNorm, SwiGLU and attention run this C natively (native_ops, over an f32 cache);
    numpy's ordered_ops must give the same bits, prefill and decode."""
    if not native_ops.NATIVE:
        missing("canisters/llama/_model_ops is not built; pip install -e . builds it")
    path = synthetic(tmp_path, arch, "Q8_0", n_layer=2)
    llama = Llama.load(read_gguf(path), n_ctx=N_CTX)

    def generate() -> list[np.ndarray]:
        cache, meter = llama.new_cache(N_CTX), NullMeter()
        logits = [llama.forward([1, 270, 268, 266, 200], cache, 0, meter, all_logits=True)]
        for pos in range(5, 12):
            logits.append(llama.forward([int(np.argmax(logits[-1][-1]))], cache, pos, meter, all_logits=True))
        return logits

    native = generate()
    monkeypatch.setattr(native_ops, "_lib", None)
    for ours, numpy_order in zip(native, generate(), strict=True):
        assert np.array_equal(ours, numpy_order)


def test_a_position_past_the_cache_or_the_context_is_refused_and_commits_nothing(
        model_lib: ctypes.CDLL, tmp_path: Path) -> None:
    _, (path,) = export(synthetic(tmp_path, "llama", "Q8_0"), 1, tmp_path / "shards")
    shard = CShard(model_lib, path.read_bytes(), N_CTX)
    x = np.ones((2, 64), dtype=np.float32)
    shard.forward(x, 0)
    with pytest.raises(ValueError, match="^position 3 skips past the 2 cached positions$"):
        shard.forward(x, 3)
    with pytest.raises(ValueError, match=f"^positions up to {N_CTX + 1} do not fit the session's context of {N_CTX}$"):
        shard.forward(np.ones((N_CTX - 1, 64), dtype=np.float32), 2)
    assert shard.length.value == 2


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d[:100], "the shard file is not valid GGUF: truncated"),
    (lambda d: b"GGUX" + d[4:], "the shard file is not valid GGUF: no GGUF magic"),
])
def test_a_damaged_file_is_refused_with_what_to_do(model_lib: ctypes.CDLL, tmp_path: Path, change, message: str
                                                   ) -> None:
    _, (path,) = export(synthetic(tmp_path, "llama", "Q8_0"), 1, tmp_path / "shards")
    with pytest.raises(ValueError, match=message) as refused:
        CShard(model_lib, change(path.read_bytes()), N_CTX)
    assert "export and upload the shard again" in str(refused.value)


def test_an_unsupported_type_a_head_shard_and_a_long_context_are_refused(model_lib: ctypes.CDLL, tmp_path: Path
                                                                         ) -> None:
    # the planner refuses Q5_0 for the wasm yblock; planned for scalar kernels, the file reaches it anyway
    head, (path,) = export(synthetic(tmp_path, "llama", "Q5_0"), 1, tmp_path / "shards", kernel="scalar")
    with pytest.raises(ValueError, match="is Q5_0, which the wasm yblock does not support .* --engine python"):
        CShard(model_lib, path.read_bytes(), N_CTX)
    with pytest.raises(ValueError, match="is the head's shard; upload it to the head canister"):
        CShard(model_lib, head.read_bytes(), N_CTX)
    _, (path,) = export(synthetic(tmp_path, "llama", "Q8_0"), 1, tmp_path / "long")
    with pytest.raises(ValueError, match="^this yblock was installed for sessions of 65 positions, more than the "
                                         "model's trained context of 64; reinstall it with a smaller n_ctx$"):
        CShard(model_lib, path.read_bytes(), 65)


def test_metered_counts_are_the_same_each_time_and_grow_with_the_cached_positions(
        model_wasm: CompiledModel, tmp_path: Path) -> None:
    """The IC-metered build that benchmarks/bench_yblock_ops.py counts with computes what the plain
    build computes; the same call costs the same instructions, and a later position costs more (its
    attention reads more of the cache)."""
    metered = CompiledModel.of(build_model_wasm(tmp_path / "model.wasm"), metered=True)
    _, (path,) = export(synthetic(tmp_path, "llama", "Q8_0"), 1, tmp_path / "shards")
    x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
    plain = WasmModel(model_wasm, path.read_bytes(), N_CTX)
    expected = [plain.forward(x, pos) for pos in range(8)]
    counts = []
    for _ in range(2):
        shard = WasmModel(metered, path.read_bytes(), N_CTX)
        steps = []
        for pos in range(8):
            assert np.array_equal(shard.forward(x, pos), expected[pos])
            steps.append(shard.instructions)
        counts.append(steps)
    assert counts[0] == counts[1]
    # positions 3 and 7 see 4 and 8 keys: whole vectors of softmax (others add a scalar tail)
    assert counts[0][7] > counts[0][3] > counts[0][0], counts[0]


def test_hyperparameters_past_any_model_are_refused_before_any_size_is_computed(model_lib: ctypes.CDLL,
                                                                                 tmp_path: Path) -> None:
    _, (path,) = export(synthetic(tmp_path, "llama", "Q8_0"), 1, tmp_path / "shards")
    data = bytearray(path.read_bytes())
    key = b"llama.feed_forward_length"
    value = data.index(key) + len(key) + 4  # after the key and its u32 type
    data[value : value + 4] = (1 << 30).to_bytes(4, "little")
    with pytest.raises(ValueError, match="beyond what this yblock supports"):
        CShard(model_lib, bytes(data), N_CTX)


def test_the_ops_besides_the_matmuls_are_bit_for_bit_those_of_ordered_ops(model_lib: ctypes.CDLL) -> None:
    """canisters/llama/ordered_ops.py is the same float order in numpy (see its docstring)."""
    rng = np.random.default_rng(11)
    pointer = ctypes.c_void_p
    for d in (64, 66, 67):  # with tails of 0, 2 and 3
        x = (rng.standard_normal((3, d)) * rng.uniform(0.01, 100, (3, 1))).astype(np.float32)
        weight = rng.standard_normal(d).astype(np.float32)
        out = np.empty_like(x)
        model_lib.icl_rms_norm(x.ctypes.data_as(pointer), weight.ctypes.data_as(pointer), 3, d, ctypes.c_float(1e-5),
                               out.ctypes.data_as(pointer))
        assert np.array_equal(out, ordered_ops.rms_norm(x, weight, np.float32(1e-5))), d
    gate = np.concatenate([rng.standard_normal(1021) * 10, [-100.0, 100.0, 0.0]]).astype(np.float32)
    up = rng.standard_normal(gate.size).astype(np.float32)
    expected = ordered_ops.silu_times(gate, up)
    model_lib.icl_swiglu(gate.ctypes.data_as(pointer), up.ctypes.data_as(pointer), ctypes.c_size_t(gate.size))
    assert np.array_equal(gate, expected)
    for n in (1, 3, 4, 13, 64):
        scores = (rng.standard_normal(n) * 8).astype(np.float32)
        expected = ordered_ops.round_f16(ordered_ops.exp_f32(scores - scores.max()) /
                                         ordered_ops.lane_sum(ordered_ops.exp_f32(scores - scores.max())))
        model_lib.icl_softmax_f16_scaled(scores.ctypes.data_as(pointer), n)
        assert np.array_equal(scores, expected * np.float32(2.0**112)), n
    xs = np.concatenate([rng.uniform(-110, 95, 5000), [-np.inf, np.inf, 0.0]]).astype(np.float32)
    assert np.array_equal(ordered_ops.exp_f32(xs), [model_lib.icl_exp_f32(float(v)) for v in xs])


def test_math_functions_agree_with_libm(model_lib: ctypes.CDLL) -> None:
    rng = np.random.default_rng(7)
    xs = np.concatenate([rng.uniform(-87.3, 88.3, 20000), [0.0, -0.0, 1e-30, -87.33, 88.37]]).astype(np.float32)
    ours = np.array([model_lib.icl_exp_f32(float(x)) for x in xs], dtype=np.float32)
    ulps = np.abs(ours.view(np.int32).astype(np.int64) - np.exp(xs).view(np.int32).astype(np.int64))
    assert ulps.max() <= 2, f"icl_exp_f32 is {ulps.max()} ulp from expf at {xs[ulps.argmax()]}"
    # below 2^-126 the result is 0, past 2^127.5 +inf (see icl_math.h)
    extremes = (-87.34, -104.0, -np.inf, 88.38, 89.0, np.inf)
    assert [model_lib.icl_exp_f32(x) for x in extremes] == [0, 0, 0] + [np.inf] * 3
    assert np.isnan(model_lib.icl_exp_f32(np.nan))
    angles = np.concatenate([rng.uniform(-10, 10, 2000), rng.uniform(0, 2.0**20, 2000)])
    for name, function in (("icl_sin", np.sin), ("icl_cos", np.cos)):
        ours = np.array([getattr(model_lib, name)(a) for a in angles])
        assert np.max(np.abs(ours - function(angles))) <= 1e-15, name
    xs = np.concatenate([rng.uniform(-700, 700, 2000), rng.uniform(-1, 1, 2000)])
    ours = np.array([model_lib.icl_exp(x) for x in xs])
    assert np.max(np.abs(ours / np.exp(xs) - 1)) <= 1e-15
    xs = np.exp(rng.uniform(-700, 700, 4000))
    ours = np.array([model_lib.icl_log(x) for x in xs])
    assert np.max(np.abs(ours - np.log(xs)) / np.maximum(1, np.abs(np.log(xs)))) <= 1e-15
