"""Speed of the tokenizer and the sampler (canisters/llama/tokenizer.py, sampler.py).

Prints, per vocabulary: the time to build the tokenizer from GGUF metadata, to encode 1 KiB of
mixed text (target: well under 50 ms for SmolLM2's 49k vocabulary), and to decode it; then the
time of one sampling step over SmolLM2's 49,152 logits with the default parameters.

Vocabularies: SmolLM2 (byte-level BPE, pulled into the cache), stories260K (SPM, from
../shared/models), and llama.cpp's Llama 3 vocabulary (128k tokens, from the reference data).
Timings are the best of several runs (the machine is shared).
Run from the repository root: python3 -m benchmarks.bench_tokenizer
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from canisters.llama.gguf_file import read_gguf
from canisters.llama.sampler import SamplingParams, sample
from canisters.llama.tokenizer import Tokenizer
from client.catalog import pull
from tests.conftest import STORIES_PATH
from tests.refdata import vocab_test

SAMPLE = (
    "The quick brown fox jumps over the lazy dog. It's 2024, and über-café prices rose 12.5%!\n"
    "def f(x):\n    return x ** 2  # comment\n日本語のテキスト 😀👍 naïve résumé "
)
TEXT = (SAMPLE * 8).encode("utf-8")[:1024].decode("utf-8", "ignore")


def best_ms(run: Callable[[], object], repeats: int = 7) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    vocabularies = {
        "smollm2 (BPE, 49k)": pull("smollm2", quiet=True),
        "stories260K (SPM, 512)": STORIES_PATH,
        "llama-bpe (BPE, 128k)": vocab_test("llama-bpe").gguf,
    }
    print(f"text: {len(TEXT.encode('utf-8'))} bytes")
    for name, path in vocabularies.items():
        if not Path(path).is_file():
            print(f"{name}: {path} is missing, skipped")
            continue
        fields = read_gguf(path).fields
        build = best_ms(lambda fields=fields: Tokenizer.from_metadata(fields), repeats=2)
        tokenizer = Tokenizer.from_metadata(fields)
        ids = tokenizer.encode(TEXT)
        encode = best_ms(lambda t=tokenizer: t.encode(TEXT))
        decode = best_ms(lambda t=tokenizer, ids=ids: t.decode(ids))
        print(f"{name:24s} build {build:7.1f} ms   encode {encode:6.2f} ms ({len(ids)} tokens)   "
              f"decode {decode:5.2f} ms")
    logits = np.random.default_rng(0).standard_normal(49152).astype(np.float32)
    for label, params in (("defaults", SamplingParams()), ("top_k=0", SamplingParams(top_k=0)),
                          ("greedy", SamplingParams(temperature=0.0))):
        ms = best_ms(lambda p=params: sample(logits, p, step=3, recent_tokens=list(range(64))))
        print(f"sample over 49,152 logits, {label:9s} {ms:6.3f} ms")


if __name__ == "__main__":
    main()
