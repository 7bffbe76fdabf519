"""Real agents that cannot live in the test interpreter, built once into $ICLLAMA_CACHE.

- ic-py 1.0.1 needs cbor2<6 (with cbor2 6 it rejects every query reply as "Malformed result"),
  so it gets its own venv, $ICLLAMA_CACHE/venvs/ic-py, and runs as a subprocess.
- icp-py-core verifies certificates only through the official blst SWIG binding (`import blst`),
  which is not on PyPI. Its source ships in the npm package @chainsafe/blst 0.2.11; it is built
  with its own bindings/python/run.me and SWIG 4.1 (SWIG 4.2+ no longer compiles that
  version's blst.swg) into $ICLLAMA_CACHE/blst-python.
Each is built in a temporary directory and moved into place only when complete.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from client.catalog import cache_dir

IC_PY_REQUIREMENTS = ["ic-py==1.0.1", "cbor2<6"]
BLST_NPM_PACKAGE = "@chainsafe/blst@0.2.11"
SWIG_REQUIREMENT = "swig==4.1.1"


def _run(command: list[str], cwd: Path | None = None, env: dict | None = None) -> None:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def ic_py_python() -> Path:
    """The interpreter of the ic-py 1.0.1 venv, created on first use."""
    venv = cache_dir() / "venvs" / "ic-py"
    python = venv / "bin" / "python"
    if (venv / ".complete").is_file():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    # A venv cannot be moved after creation, so it is built in place and marked complete last.
    _run([sys.executable, "-m", "venv", str(venv)])
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *IC_PY_REQUIREMENTS])
    (venv / ".complete").write_text(" ".join(IC_PY_REQUIREMENTS))
    return python


def blst_binding_dir() -> Path:
    """A directory holding the official blst Python binding (blst.py and _blst.so)."""
    target = cache_dir() / "blst-python"
    if (target / "_blst.so").is_file() and (target / "blst.py").is_file():
        return target
    if shutil.which("npm") is None or shutil.which("c++") is None:
        raise RuntimeError("building the blst binding needs npm and a C++ compiler (apt-get install npm g++)")
    swig_venv = cache_dir() / "venvs" / "swig-4.1"
    if not (swig_venv / "bin" / "swig").is_file():
        _run([sys.executable, "-m", "venv", str(swig_venv)])
        _run([str(swig_venv / "bin" / "python"), "-m", "pip", "install", "--quiet", SWIG_REQUIREMENT])
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        _run(["npm", "pack", "--silent", BLST_NPM_PACKAGE], cwd=work_dir)
        (archive,) = work_dir.glob("*.tgz")
        with tarfile.open(archive) as tar:
            tar.extractall(work_dir, filter="data")
        bindings = work_dir / "package" / "blst" / "bindings" / "python"
        env = {"PATH": f"{swig_venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(work_dir)}
        _run([sys.executable, "run.me"], cwd=bindings, env=env)
        staging = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=".blst-python."))
        for name in ("blst.py", "_blst.so"):
            shutil.copy2(bindings / name, staging / name)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target
