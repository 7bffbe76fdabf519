"""Instructions of the wasm yblock's ops besides the matmuls, under the replica's IC metering.

    python -m benchmarks.bench_yblock_ops [--shape smollm2-135m] [--type Q8_0] [--context 512] [--json]

Builds the yblock's model compute to wasm32 + simd128 (benchmarks/yblock_model_wasm.py), instruments
it as the IC does (replica/engines/wasm/instrument.py, the IC's cost table), and counts, on one
layer of a model's shape (SHAPES; synthetic weights, since the counts depend on the shape, not
on the values):

- a decode step's instructions at every position up to --context, and from them the attention's
  instructions per cached position (the slope, over all positions: least squares, with its
  largest residual);
- the matmuls of that step (activation quantization plus the kernel, all seven matrices);
- single ops: RMSNorm per element, SwiGLU per element, softmax per position;
- what remains per token and layer: rope, q's f16 rounding, the cache writes, residual adds.

Every figure is measured (instruction counts are deterministic: one run gives them exactly).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.yblock_model_wasm import CompiledModel, WasmModel, build_model_wasm
from canisters.llama.gguf_file import read_gguf
from sharding.export import export_shards
from sharding.model_spec import read_model_spec
from sharding.partition import Constraints, make_plan
from tests.synthetic_models import SyntheticSpec, write_synthetic_model

SHAPES = {
    "smollm2-135m": {"arch": "llama", "d_model": 576, "n_head": 9, "n_head_kv": 3, "d_ff": 1536},
    "qwen2.5-0.5b": {"arch": "qwen2", "d_model": 896, "n_head": 14, "n_head_kv": 2, "d_ff": 4864},
}
MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class OpCosts:
    """Measured instructions of one layer's decode step and its parts."""

    shape: str
    tensor_type: str
    context: int
    d_model: int
    d_ff: int
    n_head: int
    head_dim: int
    step_at_position_0: int  # a decode step at position 0 (one cached position), this layer only
    matmuls: int  # of that step: the seven matrices, activation quantization included
    attention_per_position: float  # each further cached position adds this (all heads of the layer)
    attention_fit_residual: float  # largest |measured - fitted| over the positions, in instructions
    rms_norm_per_element: float
    swiglu_per_element: float
    softmax_per_position: float  # one head's softmax, per visible position (at --context positions)
    rest_per_token: int  # the step's non-matmul remainder: rope, q rounding, cache writes, residual adds, calls

    @property
    def non_matmul_at_position_0(self) -> int:
        return self.step_at_position_0 - self.matmuls


def measure(shape: str, tensor_type: str, context: int, work: Path) -> OpCosts:
    spec = SyntheticSpec(tensor_type=tensor_type, n_layer=1, n_ctx=context, **SHAPES[shape])
    model = write_synthetic_model(work / "model.gguf", spec)
    plan = make_plan(read_model_spec(model), Constraints(shards=1, context=context))
    export = export_shards(model, plan, work / "shards")
    path = next(export.directory / f.file for f in export.files if f.shard != "head")
    gguf = read_gguf(path)
    compiled = CompiledModel.of(build_model_wasm(work / "model.wasm"), metered=True)
    wasm = WasmModel(compiled, path.read_bytes(), context)
    rng = np.random.default_rng(0)
    d, d_ff, head_dim = spec.d_model, spec.d_ff, spec.d_model // spec.n_head

    steps = []
    for pos in range(context):
        wasm.forward(rng.standard_normal((1, d)).astype(np.float32), pos)
        steps.append(wasm.instructions)
    positions = np.arange(1, context + 1)  # a step at position p attends to p + 1 positions
    slope, intercept = np.polyfit(positions, steps, 1)
    residual = float(np.max(np.abs(np.asarray(steps) - (slope * positions + intercept))))

    matmuls = 0
    for name in MATRICES:
        info = gguf.tensor(f"blk.0.{name}.weight")
        n_in, n_out, wtype = info.shape[0], info.shape[1], int(info.ggml_type)
        x = wasm.put_array("x_" + name, rng.standard_normal(n_in).astype(np.float32))
        xq = wasm.put_array("xq_" + name, np.zeros(wasm.call("icl_act_row_bytes", wtype, n_in), np.uint8))
        y = wasm.put_array("y_" + name, np.zeros(n_out, np.float32))
        wasm.call("icl_quantize_act", wtype, x, n_in, xq)
        matmuls += wasm.instructions
        wasm.call("icl_matmul_rows", wtype, wasm.file + info.offset, n_in, xq, 1, y, n_out, 0, n_out)
        matmuls += wasm.instructions

    x = wasm.put_array("norm_x", rng.standard_normal(d).astype(np.float32))
    weight = wasm.put_array("norm_w", rng.standard_normal(d).astype(np.float32))
    out = wasm.put_array("norm_out", np.zeros(d, np.float32))
    wasm.call("icl_rms_norm", x, weight, 1, d, 1e-5, out)
    rms_norm = wasm.instructions
    gate = wasm.put_array("gate", rng.standard_normal(d_ff).astype(np.float32))
    up = wasm.put_array("up", rng.standard_normal(d_ff).astype(np.float32))
    wasm.call("icl_swiglu", gate, up, d_ff)
    swiglu = wasm.instructions
    scores = wasm.put_array("scores", rng.standard_normal(context).astype(np.float32))
    wasm.call("icl_softmax_f16_scaled", scores, context)
    softmax = wasm.instructions

    non_matmul_0 = steps[0] - matmuls
    rest = non_matmul_0 - 2 * rms_norm - swiglu - round(slope)  # position 0 attends to one position
    return OpCosts(shape, tensor_type, context, d, d_ff, spec.n_head, head_dim, steps[0], matmuls, float(slope),
                   residual, rms_norm / d, swiglu / d_ff, softmax / context, int(rest))


def report(costs: OpCosts) -> str:
    c = costs
    head_elements = c.n_head * c.head_dim
    lines = [
        f"wasm yblock ops, IC-metered (measured), one layer of {c.shape}'s shape (d_model {c.d_model}, {c.n_head} "
        f"heads of {c.head_dim}, d_ff {c.d_ff}), {c.tensor_type} weights, positions 0..{c.context - 1}:",
        f"  decode step at position 0        {c.step_at_position_0:>12,} instructions",
        f"    matmuls (7, quantize + kernel) {c.matmuls:>12,}",
        f"    everything else                {c.non_matmul_at_position_0:>12,}",
        f"  attention per cached position    {c.attention_per_position:>12,.1f}  "
        f"({c.attention_per_position / head_elements:.2f} per head element; fit residual "
        f"{c.attention_fit_residual:,.0f})",
        f"    of which softmax, per head     {c.softmax_per_position:>12,.2f}  (at {c.context} positions)",
        f"  RMSNorm per element              {c.rms_norm_per_element:>12,.2f}",
        f"  SwiGLU per element               {c.swiglu_per_element:>12,.2f}",
        f"  rest per token (rope, q rounding, cache writes, residual adds) {c.rest_per_token:,}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m", help="the layer's shape")
    parser.add_argument("--type", default="Q8_0", help="weight type of the synthetic layer (default Q8_0)")
    parser.add_argument("--context", type=int, default=512, help="positions to decode (default 512)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (for the planner's table)")
    args = parser.parse_args()
    if args.type.endswith("_K") and SHAPES[args.shape]["d_model"] % 256:
        parser.error(f"{args.type} blocks are 256 wide and {args.shape}'s d_model {SHAPES[args.shape]['d_model']} is "
                     "not a multiple of 256; choose a 32-wide type (Q8_0, Q4_0, Q4_1) or F16/F32")
    with tempfile.TemporaryDirectory() as work:
        costs = measure(args.shape, args.type, args.context, Path(work))
    print(json.dumps(asdict(costs), indent=2) if args.json else report(costs))


if __name__ == "__main__":
    main()
