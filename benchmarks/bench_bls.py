"""Which BLS12-381 library signs and verifies IC certificates fastest (min-sig, the IC's DST).

Prints microseconds per sign and per verify for each candidate that is installed; the network
signs one certificate per state version and verification is what agents do. Run:
    python3 benchmarks/bench_bls.py
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable

DST = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_"
ORDER = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
MESSAGE = b"\x0dic-state-root" + hashlib.sha256(b"a state tree root").digest()


def per_call_us(function: Callable[[], object], repeat: int) -> float:
    function()
    start = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - start) / repeat * 1e6


def pyblst_candidate(secret: int):
    import pyblst
    from pyblst import BlstP1Element, BlstP2Element

    from replica.certification import NetworkKey

    key = NetworkKey(secret)
    generator = BlstP2Element.uncompress(NetworkKey(1).public_key)
    public = key.public_key
    signature = key.sign(MESSAGE)

    def verify() -> bool:
        sig = BlstP1Element.uncompress(signature)
        hashed = BlstP1Element.hash_to_group(MESSAGE, DST)
        return pyblst.final_verify(
            pyblst.miller_loop(sig, generator), pyblst.miller_loop(hashed, BlstP2Element.uncompress(public))
        )

    assert verify()
    return (lambda: key.sign(MESSAGE)), verify, 300


def arkworks_candidate(secret: int):
    from py_arkworks_bls12381 import GT, G1Point, G2Point, Scalar

    scalar = Scalar(secret)
    public = (G2Point() * scalar).to_compressed_bytes()

    def sign() -> bytes:
        return (G1Point.hash_to_curve(MESSAGE, DST) * scalar).to_compressed_bytes()

    signature = sign()

    def verify() -> bool:
        sig = G1Point.from_compressed_bytes(signature)
        hashed = G1Point.hash_to_curve(MESSAGE, DST)
        return GT.pairing(sig, G2Point()) == GT.pairing(hashed, G2Point.from_compressed_bytes(public))

    assert verify()
    return sign, verify, 100


def py_ecc_candidate(secret: int):
    from py_ecc.bls.hash_to_curve import hash_to_G1
    from py_ecc.optimized_bls12_381 import FQ12, G2, final_exponentiate, multiply, neg, pairing

    public = multiply(G2, secret)

    def sign():
        return multiply(hash_to_G1(MESSAGE, DST, hashlib.sha256), secret)

    signature = sign()

    def verify() -> bool:
        hashed = hash_to_G1(MESSAGE, DST, hashlib.sha256)
        product = pairing(G2, signature, final_exponentiate=False) * pairing(
            public, neg(hashed), final_exponentiate=False
        )
        return final_exponentiate(product) == FQ12.one()

    assert verify()
    return sign, verify, 2


def main() -> None:
    secret = secrets.randbelow(ORDER - 1) + 1
    print(f"{'library':<24}{'sign (us)':>14}{'verify (us)':>14}")
    for name, candidate in [
        ("pyblst (blst)", pyblst_candidate),
        ("py-arkworks-bls12381", arkworks_candidate),
        ("py-ecc (pure Python)", py_ecc_candidate),
    ]:
        try:
            sign, verify, repeat = candidate(secret)
        except ImportError as error:
            print(f"{name:<24}{'not installed: ' + str(error):>28}")
            continue
        print(f"{name:<24}{per_call_us(sign, repeat):>14.0f}{per_call_us(verify, repeat):>14.0f}")


if __name__ == "__main__":
    main()
