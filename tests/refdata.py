"""Reference data from llama.cpp, fetched once from PyPI and cached.

llama.cpp's own tokenizer test vectors (`models/ggml-vocab-*.gguf` with `.inp`/`.out`) and its
Unicode table (`src/unicode-data.cpp`) ship in the llama-cpp-python sdist. The sdist is fetched
with `pip download` into `$ICLLAMA_CACHE/refdata` (default `~/.cache/icllama/refdata`), checked
against its pinned sha256, and only the needed files are extracted. Extraction goes to a temporary
directory that is renamed into place, so the cache never holds a partial copy.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from client import catalog

SDIST_REQUIREMENT = "llama-cpp-python==0.3.36"
SDIST_NAME = "llama_cpp_python-0.3.36"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
VOCAB_NAMES = ("llama-spm", "llama-bpe", "qwen2", "gpt-2")
UNICODE_DATA = "src/unicode-data.cpp"
_LLAMA_CPP_DIR = f"{SDIST_NAME}/vendor/llama.cpp"
_NEEDED = (UNICODE_DATA,) + tuple(
    f"models/ggml-vocab-{name}.gguf{suffix}" for name in VOCAB_NAMES for suffix in ("", ".inp", ".out")
)
_CASE_SEPARATOR = "\n__ggml_vocab_test__\n"


def cache_dir() -> Path:
    return catalog.cache_dir() / "refdata"


def llama_cpp_file(relative_path: str) -> Path:
    """A file of llama.cpp's source tree as shipped in the sdist (fetched on first use)."""
    if relative_path not in _NEEDED:
        raise ValueError(f"{relative_path!r} is not extracted from the sdist; add it to refdata._NEEDED")
    root = cache_dir() / SDIST_NAME
    if not root.is_dir():
        _fetch(root)
    return root / relative_path


def _fetch(root: Path) -> None:
    extract_from_sdist(root, lambda tar: [(tar.getmember(f"{_LLAMA_CPP_DIR}/{path}"), path) for path in _NEEDED])


def extract_from_sdist(root: Path, members: Callable[[tarfile.TarFile], list[tuple[tarfile.TarInfo, str]]]) -> None:
    """Fetch the pinned sdist with pip, check its sha256, and extract `members(tar)` (each a member
    and its path under `root`) into a staging directory that is renamed to `root`."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=".fetch-") as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "--disable-pip-version-check", "--quiet", "-d", tmp, SDIST_REQUIREMENT],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pip download {SDIST_REQUIREMENT} failed: {result.stderr.strip()[-2000:]}")
        sdist = Path(tmp) / f"{SDIST_NAME}.tar.gz"
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != SDIST_SHA256:
            raise RuntimeError(f"{sdist.name}: sha256 {digest}, expected {SDIST_SHA256}; not cached")
        staging = Path(tmp) / "extracted"
        with tarfile.open(sdist) as tar:
            for member, relative_path in members(tar):
                target = staging / relative_path
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src:
                    target.write_bytes(src.read())
        try:
            staging.rename(root)
        except OSError:
            if not root.is_dir():  # another process won the race: its copy is as good as ours
                raise


@dataclass(frozen=True)
class VocabCase:
    text: str
    ids: tuple[int, ...]


@dataclass(frozen=True)
class VocabTest:
    name: str
    gguf: Path
    cases: tuple[VocabCase, ...]


def vocab_test(name: str) -> VocabTest:
    """llama.cpp's vectors for one vocabulary, read as tests/test-tokenizer-0.cpp reads them."""
    gguf = llama_cpp_file(f"models/ggml-vocab-{name}.gguf")
    raw = Path(f"{gguf}.inp").read_bytes().decode("utf-8")
    texts = []
    pos = 0
    while pos < len(raw):  # the C++ reader's loop: a trailing separator adds no empty case
        end = raw.find(_CASE_SEPARATOR, pos)
        if end < 0:
            texts.append(raw[pos:])
            break
        texts.append(raw[pos:end])
        pos = end + len(_CASE_SEPARATOR)
    outputs = Path(f"{gguf}.out").read_text(encoding="utf-8").split("\n")
    if outputs and outputs[-1] == "":
        outputs.pop()  # the file ends with a newline, as getline reads it
    if len(texts) != len(outputs):
        raise ValueError(f"{gguf.name}: {len(texts)} inputs but {len(outputs)} outputs")
    cases = tuple(
        VocabCase(text, tuple(int(t) for t in out.split())) for text, out in zip(texts, outputs, strict=True)
    )
    return VocabTest(name, gguf, cases)


@dataclass(frozen=True)
class UnicodeTable:
    """llama.cpp's codepoint classes, as inclusive (first, last) ranges."""

    letter: tuple[tuple[int, int], ...]
    number: tuple[tuple[int, int], ...]
    punctuation: tuple[tuple[int, int], ...]
    whitespace: tuple[int, ...]


_FLAG_LETTER, _FLAG_NUMBER, _FLAG_PUNCTUATION = 0x0004, 0x0002, 0x0020


def unicode_table() -> UnicodeTable:
    """Parse llama.cpp's generated unicode-data.cpp (category ranges and the whitespace set)."""
    source = llama_cpp_file(UNICODE_DATA).read_text(encoding="utf-8")
    flags_block = _cpp_initializer(source, "unicode_ranges_flags")
    starts = [(int(a, 16), int(b, 16)) for a, b in re.findall(r"\{0x([0-9A-F]+), 0x([0-9A-F]+)\}", flags_block)]
    whitespace_block = _cpp_initializer(source, "unicode_set_whitespace")
    whitespace = tuple(int(x, 16) for x in re.findall(r"0x([0-9A-F]+)", whitespace_block))

    def ranges(flag: int) -> tuple[tuple[int, int], ...]:
        out: list[tuple[int, int]] = []
        for (start, flags), (next_start, _) in pairwise(starts):
            if flags & 0xFF == flag:
                if out and out[-1][1] == start - 1:
                    out[-1] = (out[-1][0], next_start - 1)
                else:
                    out.append((start, next_start - 1))
        return tuple(out)

    return UnicodeTable(ranges(_FLAG_LETTER), ranges(_FLAG_NUMBER), ranges(_FLAG_PUNCTUATION), whitespace)


def _cpp_initializer(source: str, name: str) -> str:
    start = source.index(name)
    return source[source.index("{", start) + 1 : source.index("};", start)]
