"""The model's ops outside the matmuls (RMSNorm, SwiGLU, attention), computed by the wasm yblock's
own C (canisters/yblock/wasm/model.c) built natively, so that the Python path and the canister
compute the same bits (why that matters: canisters/llama/ordered_ops.py).

`pip install -e .` builds the C into canisters/llama/_model_ops (a plain shared library, loaded
with ctypes). Without it (no compiler at install, or ICLLAMA_NATIVE=0) the same float order runs
in numpy (ordered_ops), which gives the same bits more slowly.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os

import numpy as np

from canisters.llama import ordered_ops

_F32 = np.float32
_POINTER = ctypes.c_void_p


def _load() -> ctypes.CDLL | None:
    if os.environ.get("ICLLAMA_NATIVE", "1") == "0":
        return None
    spec = importlib.util.find_spec("canisters.llama._model_ops")
    if spec is None or spec.origin is None:
        return None
    lib = ctypes.CDLL(spec.origin)
    lib.icl_rms_norm.argtypes = [_POINTER, _POINTER, ctypes.c_int, ctypes.c_int, ctypes.c_float, _POINTER]
    lib.icl_swiglu.argtypes = [_POINTER, _POINTER, ctypes.c_size_t]
    lib.icl_attention_scratch_floats.argtypes = [ctypes.c_int] * 4
    lib.icl_attention_scratch_floats.restype = ctypes.c_size_t
    lib.icl_attention.argtypes = [_POINTER, _POINTER, _POINTER, *[ctypes.c_int] * 7, _POINTER,
                                  _POINTER]
    return lib


_lib = _load()
NATIVE = _lib is not None


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=_F32)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x (n, d) normalized per row (ordered_ops.rms_norm)."""
    if _lib is None:
        return ordered_ops.rms_norm(x, weight, eps)
    x, weight = _f32(x), _f32(weight)
    out = np.empty_like(x)
    _lib.icl_rms_norm(x.ctypes.data, weight.ctypes.data, x.shape[0], x.shape[1], _F32(eps), out.ctypes.data)
    return out


def silu_times(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """SwiGLU's (gate / (1 + exp(-gate))) * up (ordered_ops.silu_times)."""
    if _lib is None:
        return ordered_ops.silu_times(gate, up)
    out, up = np.array(gate, dtype=_F32, order="C"), _f32(up)
    _lib.icl_swiglu(out.ctypes.data, up.ctypes.data, out.size)
    return out


def attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray, pos: int, n_head_kv: int) -> np.ndarray:
    """Causal attention of q (n, n_head, head_dim), rounded to f16 here, at positions pos.. over
    one layer's cache: keys and values (n_head_kv, n_ctx, head_dim) of f32 holding f16 values, filled
    up to pos + n - 1. Returns (n, n_head, head_dim)."""
    n, n_head, head_dim = q.shape
    q = ordered_ops.round_f16(q)
    if _lib is None:
        grouped = q.reshape(n, n_head_kv, n_head // n_head_kv, head_dim).transpose(1, 2, 0, 3)
        return ordered_ops.attention(grouped, keys, values, pos).transpose(2, 0, 1, 3).reshape(q.shape)
    if not (keys.flags.c_contiguous and values.flags.c_contiguous and keys.dtype == values.dtype == _F32):
        raise ValueError("the cache must be C-contiguous f32 arrays (n_head_kv, n_ctx, head_dim)")
    n_ctx = keys.shape[1]
    out = np.empty(q.shape, dtype=_F32)
    scratch = np.empty(_lib.icl_attention_scratch_floats(n_head, n_head_kv, head_dim, n_ctx), dtype=_F32)
    _lib.icl_attention(q.ctypes.data, keys.ctypes.data, values.ctypes.data, 1, n_head, n_head_kv, head_dim, n_ctx,
                       pos, n, out.ctypes.data, scratch.ctypes.data)
    return out
