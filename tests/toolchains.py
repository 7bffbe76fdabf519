"""What a test needs from the machine (a compiler, node, a built extension), found or refused aloud.

A missing dependency skips with the reason on a developer's machine, and fails the test when
CI=true, so a CI run can never pass by skipping what it was meant to test.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import ModuleType

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """Skip with `reason`, or fail with it under CI=true. Never returns."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing dependency is a failure)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)  # also from a module that cannot import without it


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


# The Motoko compiler moc, as the npm package `motoko` ships it (moc compiled to JavaScript; its
# output is memory64 with enhanced orthogonal persistence). Installed once into the cache.
MOTOKO_NPM_VERSION = "4.10.0"
MOTOKO_DIR = Path(__file__).resolve().parent / "motoko"


def npm_package(name: str, version: str) -> Path:
    """The directory of npm package `name`@`version`, installed into the cache on first use."""
    from client.catalog import cache_dir

    npm = require_tool("npm", "install npm (apt-get install npm)")
    target = cache_dir() / "npm" / f"{name.replace('/', '+')}-{version}"
    package = target / "node_modules" / name
    if (package / "package.json").is_file():
        return package
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".install."))
    result = subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(staging),
                             f"{name}@{version}"], capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        missing(f"npm could not install {name}@{version}: {result.stderr.strip()[-1000:]}")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # complete or absent: a second test run never sees half an install
    return package


def motoko_package() -> Path:
    """The installed npm package `motoko` (its directory), installed on first use."""
    require_tool("node", "install Node.js 18 or newer (apt-get install nodejs npm)")
    return npm_package("motoko", MOTOKO_NPM_VERSION)


# icp-cli, the IC's command-line client, as npm ships its Linux x64 binary.
ICP_CLI_NPM = ("@icp-sdk/icp-cli-linux-x64", "1.5.0")


def icp_cli() -> Path:
    """The icp-cli executable, installed from npm on first use."""
    binary = npm_package(*ICP_CLI_NPM) / "bin" / "icp"
    if not os.access(binary, os.X_OK):
        missing(f"{ICP_CLI_NPM[0]}@{ICP_CLI_NPM[1]} has no executable bin/icp (is this Linux x64?)")
    return binary


def compile_motoko(names: list[str], public_metadata: tuple[str, ...] = ("candid:service",)) -> dict[str, bytes]:
    """The wasm modules moc builds from tests/motoko/<name>.mo, cached by source and options."""
    from client.catalog import cache_dir

    package = motoko_package()
    build_dir = cache_dir() / "motoko-builds"
    build_dir.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, Path] = {}
    jobs = []
    for name in names:
        source = (MOTOKO_DIR / f"{name}.mo").read_text()
        key = hashlib.sha256(json.dumps([MOTOKO_NPM_VERSION, source, list(public_metadata)]).encode()).hexdigest()
        outputs[name] = build_dir / f"{name}-{key[:16]}.wasm"
        if not outputs[name].is_file():
            jobs.append({"source": source, "out": str(outputs[name]) + ".part",
                         "public_metadata": list(public_metadata)})
    if jobs:
        result = subprocess.run(["node", str(MOTOKO_DIR / "compile.js"), str(package)],
                                input=json.dumps({"jobs": jobs}), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"moc failed:\n{result.stderr[-3000:]}")
        for job in jobs:
            os.replace(job["out"], job["out"].removesuffix(".part"))
    return {name: path.read_bytes() for name, path in outputs.items()}
