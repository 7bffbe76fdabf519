"""Record llama.cpp's outputs as test fixtures, so CI needs no llama.cpp build.

Run with a Python that has llama-cpp-python 0.3.36, built from the PyPI sdist without native CPU
tuning (CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"; a native build
segfaulted in its AMX/AVX-512 path on the machine these were made on):
    python scripts/make_llama_cpp_fixtures.py --smollm2 PATH --stories PATH

Writes into tests/fixtures/llama_cpp/:
- smollm2_logits.npz: for each prompt, llama.cpp's token ids and teacher-forced logits at
  every position, stored as the top-K logits (ids and values) plus the log-sum-exp over the
  whole vocabulary, which is enough to compute KL(llama.cpp || ours) and top-1 agreement
  (the probability mass outside the top K is stored too, so the test can bound the rest);
- stories_greedy.json: llama.cpp's greedy continuation ids of "Once upon a time" with BOS;
- synthetic_logits.npz: full teacher-forced logits of the synthetic models in SYNTHETIC (built
  by tests/synthetic_models.py; their sha256 is recorded, so a test knows it rebuilt the same
  file), covering what no shipped model has: qwen2's biases and NEOX RoPE, rope_freqs, tied
  embeddings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import llama_cpp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.synthetic_models import SyntheticSpec, write_synthetic_model  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "llama_cpp"
TOP_K = 2048
N_POSITIONS = 32
PROMPTS = [
    "The Internet Computer is a blockchain that runs smart contracts, called canisters, at web speed. "
    "Each canister holds code and state, and developers write them in Rust, Motoko, or TypeScript. "
    "When a user calls one,",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n        return n\n"
    "    return fibonacci(n - 1) + fibonacci(n - 2)\n\nfor i in range(10):\n",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village at the edge of a great forest, there lived an old woman who "
    "kept bees. Every morning she walked to the hives with a basket of bread, and every evening she",
    "Les 3 chats noirs de Mme. Dupont mangent 12,5 kg de croquettes par mois — c'est beaucoup! 🐱 "
    "En 2024, elle a dépensé",
]


def smollm2_logits(model_path: str) -> None:
    llm = llama_cpp.Llama(model_path, n_ctx=512, n_threads=2, logits_all=True, verbose=False, seed=0)
    arrays: dict[str, np.ndarray] = {}
    for i, prompt in enumerate(PROMPTS):
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)[:N_POSITIONS]
        assert len(ids) == N_POSITIONS, f"prompt {i} has only {len(ids)} tokens"
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[: len(ids)], dtype=np.float64)  # (n, n_vocab)
        lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        top = np.argsort(-logits, axis=1)[:, :TOP_K]
        top_logits = np.take_along_axis(logits, top, 1)
        tail_mass = 1.0 - np.exp(top_logits - lse[:, None]).sum(1)
        arrays[f"ids_{i}"] = np.array(ids, dtype=np.int32)
        arrays[f"top_ids_{i}"] = top.astype(np.int32)
        arrays[f"top_logits_{i}"] = top_logits.astype(np.float32)
        arrays[f"logsumexp_{i}"] = lse.astype(np.float64)
        arrays[f"tail_mass_{i}"] = tail_mass
    arrays["n_prompts"] = np.array(len(PROMPTS))
    np.savez_compressed(OUT / "smollm2_logits.npz", **arrays)


SYNTHETIC = {
    "qwen2_f32": SyntheticSpec(arch="qwen2", tensor_type="F32", seed=1),
    "llama_f16_tied_ropefreqs": SyntheticSpec(arch="llama", tensor_type="F16", tied=True, rope_freqs=True, seed=2),
}
SYNTHETIC_TOKENS = [1, 40, 262, 7, 266, 99, 12, 271, 5, 260, 200, 3]


def synthetic_logits() -> None:
    arrays: dict[str, np.ndarray] = {"tokens": np.array(SYNTHETIC_TOKENS, dtype=np.int32)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in SYNTHETIC.items():
            path = write_synthetic_model(Path(tmp) / f"{name}.gguf", spec)
            llm = llama_cpp.Llama(str(path), n_ctx=64, n_threads=2, logits_all=True, verbose=False)
            llm.eval(SYNTHETIC_TOKENS)
            arrays[f"{name}_logits"] = np.array(llm.scores[: len(SYNTHETIC_TOKENS)], dtype=np.float32)
            arrays[f"{name}_sha256"] = np.array(hashlib.sha256(path.read_bytes()).hexdigest())
    np.savez_compressed(OUT / "synthetic_logits.npz", **arrays)


def greedy_ids(model_path: str, prompt: str, n_tokens: int, add_bos: bool, special: bool) -> dict:
    llm = llama_cpp.Llama(model_path, n_ctx=512, n_threads=2, verbose=False, seed=0)
    prompt_ids = llm.tokenize(prompt.encode(), add_bos=add_bos, special=special)
    out: list[int] = []
    for token in llm.generate(prompt_ids, top_k=1, temp=0.0, repeat_penalty=1.0):
        out.append(int(token))
        if len(out) == n_tokens:
            break
    return {"prompt": prompt, "add_bos": add_bos, "parse_special": special, "prompt_ids": list(prompt_ids), "ids": out,
            "text": llm.detokenize(out).decode("utf-8", errors="replace")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smollm2", required=True)
    parser.add_argument("--stories", required=True)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    smollm2_logits(args.smollm2)
    synthetic_logits()
    stories = greedy_ids(args.stories, "Once upon a time", 30, add_bos=True, special=False)
    smol = greedy_ids(args.smollm2, PROMPTS[2], 32, add_bos=False, special=True)
    meta = {"llama_cpp_python": llama_cpp.__version__, "top_k": TOP_K, "n_positions": N_POSITIONS,
            "prompts": PROMPTS}
    (OUT / "stories_greedy.json").write_text(json.dumps(stories, ensure_ascii=False) + "\n")
    (OUT / "smollm2_greedy.json").write_text(json.dumps(smol, ensure_ascii=False) + "\n")
    (OUT / "smollm2_logits.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
