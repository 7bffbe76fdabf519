"""Builds the wasm yblock (canisters/yblock/wasm/*.c and canisters/kernels/kernels.c) with zig cc.

`zig cc` comes from PyPI's ziglang, a build dependency, so `pip install -e .` needs no other
toolchain. The module targets wasm32-freestanding with SIMD128 (the IC runs wasm SIMD): no libc and
no WASI, so its only imports are the IC's ic0 System API. After linking, the public custom section
`icp:public candid:service` receives yblock.did, so the replica, dfx and icp-cli learn its interface
from the module itself, as from a canister built by dfx.

    python -m canisters.yblock.build    # writes canisters/yblock/yblock.wasm
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from canisters.kernels.build import WASM_FLAGS, ZigMissing, zig_command

YBLOCK_DIR = Path(__file__).resolve().parent
SOURCE_DIR = YBLOCK_DIR / "wasm"
KERNELS = YBLOCK_DIR.parent / "kernels" / "kernels.c"
DID = YBLOCK_DIR / "yblock.did"
WASM = YBLOCK_DIR / "yblock.wasm"  # the module `icllama deploy` installs and dfx.json names
CANDID_SECTION = "icp:public candid:service"
STACK_BYTES = 1 << 20

# The kernels' flags (wasm32 + simd128, no libc, no FMA contraction), and the canister's own.
FLAGS = [*WASM_FLAGS, "-g0", "-std=c11", "-Wall", "-Werror", "-Wno-missing-field-initializers",
         "-Wl,--strip-all", f"-Wl,-z,stack-size={STACK_BYTES}"]


class BuildError(RuntimeError):
    """The wasm yblock could not be built; the message says why and what to do."""


def sources() -> list[Path]:
    return sorted(SOURCE_DIR.glob("*.c")) + [KERNELS]


def inputs() -> list[Path]:
    return sources() + sorted(SOURCE_DIR.glob("*.h")) + [KERNELS.with_suffix(".h"), DID, Path(__file__)]


def is_stale(wasm: Path = WASM) -> bool:
    """Whether the module is missing or older than any file it is built from."""
    if not wasm.is_file():
        return True
    built = wasm.stat().st_mtime
    return any(path.stat().st_mtime > built for path in inputs())


def build(out: Path = WASM) -> Path:
    """Compiles and links the module, adds its candid:service section, and writes it atomically."""
    missing = [str(path) for path in inputs() if not path.is_file()]
    if missing:
        raise BuildError(f"cannot build the wasm yblock: missing {', '.join(missing)}; restore them from git")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="yblock-build-") as tmp:
        linked = Path(tmp) / "yblock.wasm"
        try:
            command = [*zig_command(), *FLAGS, "-I", str(SOURCE_DIR), "-I", str(KERNELS.parent),
                       *map(str, sources()), "-o", str(linked)]
        except ZigMissing as e:
            raise BuildError(f"cannot build the wasm yblock: {e}") from None
        result = subprocess.run(command, capture_output=True, text=True, cwd=tmp)
        if result.returncode != 0:
            raise BuildError(f"zig cc could not build the wasm yblock (exit {result.returncode}):\n"
                             f"{result.stderr.strip()[-4000:]}\ncommand: {' '.join(command)}")
        module = with_custom_section(linked.read_bytes(), CANDID_SECTION, DID.read_bytes())
    staging = out.with_name(f".{out.name}.{os.getpid()}.part")
    staging.write_bytes(module)
    os.replace(staging, out)  # a reader sees the old module or the new one, never half of one
    return out


def ensure_built(wasm: Path = WASM) -> Path:
    """The module, rebuilt first if a source changed since it was built (a developer's edit)."""
    return build(wasm) if is_stale(wasm) else wasm


def with_custom_section(module: bytes, name: str, content: bytes) -> bytes:
    """The module with a custom section (id 0) appended, as the wasm binary format defines it."""
    if module[:4] != b"\0asm":
        raise BuildError("the linker's output is not a wasm module")
    raw_name = name.encode()
    payload = _leb(len(raw_name)) + raw_name + content
    return module + b"\x00" + _leb(len(payload)) + payload


def _leb(n: int) -> bytes:
    """Unsigned LEB128. Written here: setup.py runs this module with only the build dependencies
    installed, so it may not import cdk.candid or the replica's wasm reader."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


if __name__ == "__main__":
    try:
        print(build())
    except BuildError as e:
        sys.exit(str(e))
