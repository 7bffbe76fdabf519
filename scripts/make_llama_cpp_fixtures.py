"""Record llama.cpp's outputs as test fixtures, so CI needs no llama.cpp build.

Run with a Python that has llama-cpp-python 0.3.36 (it builds from source from PyPI in ~20 min):
    python scripts/make_llama_cpp_fixtures.py --smollm2 PATH --stories PATH

Writes into tests/fixtures/llama_cpp/:
- smollm2_logits.npz: for each prompt, llama.cpp's token ids and teacher-forced logits at
  every position, stored as the top-K logits (ids and values) plus the log-sum-exp over the
  whole vocabulary, which is enough to compute KL(llama.cpp || ours) and top-1 agreement
  (the probability mass outside the top K is stored too, so the test can bound the rest);
- stories_greedy.json: llama.cpp's greedy continuation ids of "Once upon a time" with BOS.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import llama_cpp
import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "llama_cpp"
TOP_K = 256
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


def greedy_ids(model_path: str, prompt: str, n_tokens: int, add_bos: bool) -> dict:
    llm = llama_cpp.Llama(model_path, n_ctx=512, n_threads=2, verbose=False, seed=0)
    prompt_ids = llm.tokenize(prompt.encode(), add_bos=add_bos, special=False)
    out: list[int] = []
    for token in llm.generate(prompt_ids, top_k=1, temp=0.0, repeat_penalty=1.0):
        out.append(int(token))
        if len(out) == n_tokens:
            break
    return {"prompt": prompt, "add_bos": add_bos, "prompt_ids": list(prompt_ids), "ids": out,
            "text": llm.detokenize(out).decode("utf-8", errors="replace")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smollm2", required=True)
    parser.add_argument("--stories", required=True)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    smollm2_logits(args.smollm2)
    stories = greedy_ids(args.stories, "Once upon a time", 30, add_bos=True)
    smol = greedy_ids(args.smollm2, PROMPTS[2], 32, add_bos=False)
    meta = {"llama_cpp_python": llama_cpp.__version__, "top_k": TOP_K, "n_positions": N_POSITIONS,
            "prompts": PROMPTS}
    (OUT / "stories_greedy.json").write_text(json.dumps(stories, indent=1, ensure_ascii=False) + "\n")
    (OUT / "smollm2_greedy.json").write_text(json.dumps(smol, indent=1, ensure_ascii=False) + "\n")
    (OUT / "smollm2_logits.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
