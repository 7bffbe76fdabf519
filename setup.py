"""Only the optional C extension lives here; all other configuration is in pyproject.toml.

canisters/llama/_qmatmul.c multiplies straight from GGUF's quantized blocks (see its header for why
and how fast). `optional=True`: where it cannot be compiled, the install still succeeds and the
quantized weights use the numpy path. AVX2/FMA/F16C are enabled per function inside the file and
chosen at run time, so no -mavx2 here: the portable code must stay runnable on any x86-64.
-ffp-contract=off keeps `dequantize` bit-exact (no fused multiply-adds the source did not ask for).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "canisters.llama._qmatmul",
            sources=["canisters/llama/_qmatmul.c"],
            extra_compile_args=["-O3", "-ffp-contract=off"],
            optional=True,
        )
    ]
)
