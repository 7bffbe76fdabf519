"""What a test needs from the machine (a compiler, node, a built extension), found or refused aloud.

A missing dependency skips with the reason on a developer's machine, and fails the test when
CI=true, so a CI run can never pass by skipping what it was meant to test.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """Skip with `reason`, or fail with it under CI=true. Never returns."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing dependency is a failure)", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str, install_hint: str) -> str:
    """The path of executable `name` on PATH; otherwise skip/fail saying how to install it."""
    path = shutil.which(name)
    if path is None:
        missing(f"`{name}` is not on PATH; {install_hint}")
    return path  # type: ignore[return-value]


def require_module(module: str, install_hint: str) -> ModuleType:
    """Module `module` imported; otherwise skip/fail with the import error and how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing(f"cannot import {module} ({error}); {install_hint}")
        raise  # unreachable: missing() never returns
