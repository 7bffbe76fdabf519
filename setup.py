"""The optional C extension and the wasm yblock's build live here; all other configuration is in
pyproject.toml.

canisters/llama/_qmatmul.c multiplies straight from GGUF's quantized blocks (see its header for why
and how fast). `optional=True`: where it cannot be compiled, the install still succeeds and the
quantized weights use the numpy path. AVX2/FMA/F16C are enabled per function inside the file and
chosen at run time, so no -mavx2 here: the portable code must stay runnable on any x86-64.
-ffp-contract=off keeps `dequantize` bit-exact (no fused multiply-adds the source did not ask for).

build_py also builds the wasm yblock (canisters/yblock/build.py, zig cc from the build dependency
ziglang) into canisters/yblock/yblock.wasm. A failed build only warns: `icllama deploy` builds it
again when it is missing or stale and then stops with the compiler's message.
"""

import shutil
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py


class BuildPyWithYBlock(build_py):
    def run(self) -> None:
        super().run()
        sys.path.insert(0, str(Path(__file__).resolve().parent))  # the build runs before the package is installed
        from canisters.yblock.build import BuildError, build

        try:
            wasm = build()
        except BuildError as e:
            self.warn(f"the wasm yblock was not built: {e}")
            return
        if not self.editable_mode:
            target = Path(self.build_lib) / "canisters" / "yblock" / wasm.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(wasm, target)


setup(
    cmdclass={"build_py": BuildPyWithYBlock},
    ext_modules=[
        Extension(
            "canisters.llama._qmatmul",
            sources=["canisters/llama/_qmatmul.c"],
            depends=["canisters/kernels/kernels.c", "canisters/kernels/kernels.h"],  # included by _qmatmul.c
            extra_compile_args=["-O3", "-ffp-contract=off"],
            optional=True,
        ),
        # The wasm yblock's model C, natively: a plain shared library that canisters/llama/native_ops.py
        # loads with ctypes, so the Python path computes the canister's float order (no Python API here).
        Extension(
            "canisters.llama._model_ops",
            sources=["canisters/yblock/wasm/model.c", "canisters/yblock/wasm/icl_math.c",
                     "canisters/yblock/wasm/gguf.c", "canisters/kernels/kernels.c"],
            depends=["canisters/yblock/wasm/model.h", "canisters/yblock/wasm/model_ops.h",
                     "canisters/yblock/wasm/icl_math.h", "canisters/yblock/wasm/gguf.h",
                     "canisters/yblock/wasm/icl_text.h", "canisters/kernels/kernels.h"],
            extra_compile_args=["-O3", "-ffp-contract=off", "-std=c11"],
            optional=True,
        ),
    ]
)
