"""IC principals: the raw id bytes and their textual form (interface spec, "Principals").

Text form: base32 (RFC 4648, lowercase, no padding) of CRC32(bytes) big-endian followed by the
bytes, grouped in 5 characters with dashes.

Written here rather than wrapping icp-py-core's `icp_principal.Principal`: that class does check
the CRC, but it is mutable, not ordered, its errors do not say what is wrong ("round-trip
mismatch"), and it does not enforce the 29-byte limit. Parsing is the same stdlib base32 + zlib
either way, so there is no speed to gain from it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from dataclasses import dataclass

MAX_LENGTH = 29  # bytes; the interface spec's bound on principal ids

_CANISTER_ID_SUFFIX = b"\x01\x01"  # the opaque-id class byte, as the IC allocates canister ids
_SELF_AUTHENTICATING_SUFFIX = b"\x02"
_ANONYMOUS = b"\x04"


@dataclass(frozen=True, order=True)
class Principal:
    bytes: bytes

    def __post_init__(self) -> None:
        raw = self.bytes
        if isinstance(raw, (bytearray, memoryview)):
            raw = bytes(raw)
            object.__setattr__(self, "bytes", raw)
        if not isinstance(raw, bytes):
            raise TypeError(f"Principal takes the raw id as bytes, got {type(raw).__name__}; "
                            "use Principal.from_text for the textual form")
        if len(raw) > MAX_LENGTH:
            raise ValueError(f"a principal has at most {MAX_LENGTH} bytes, got {len(raw)}")

    @classmethod
    def from_text(cls, text: str) -> Principal:
        if not isinstance(text, str):
            raise TypeError(f"Principal.from_text takes a str, got {type(text).__name__}")
        digits = text.replace("-", "").upper()
        try:
            decoded = base64.b32decode(digits + "=" * (-len(digits) % 8))
        except (binascii.Error, ValueError):
            raise ValueError(f"{text!r} is not a textual principal: it must be base32 "
                             "(letters a-z and digits 2-7) grouped by dashes, e.g. 'aaaaa-aa'") from None
        if len(decoded) < 4:
            raise ValueError(f"{text!r} is too short to be a textual principal (no room for its CRC32)")
        principal = cls(decoded[4:])
        checksum = int.from_bytes(decoded[:4], "big")
        if checksum != zlib.crc32(principal.bytes):
            raise ValueError(f"{text!r} has a wrong checksum: check it for a typo "
                             f"(it encodes CRC32 {checksum:08x}, its bytes have {zlib.crc32(principal.bytes):08x})")
        canonical = principal.to_text()
        if canonical != text.lower():
            raise ValueError(f"{text!r} is not in canonical form (base32 grouped by 5 with dashes, "
                             f"no stray bits); this principal is written {canonical!r}")
        return principal

    def to_text(self) -> str:
        checksum = zlib.crc32(self.bytes).to_bytes(4, "big")
        digits = base64.b32encode(checksum + self.bytes).decode("ascii").rstrip("=").lower()
        return "-".join([digits[i:i + 5] for i in range(0, len(digits), 5)])

    __str__ = to_text

    def __repr__(self) -> str:
        return f"Principal.from_text({self.to_text()!r})"

    @classmethod
    def anonymous(cls) -> Principal:
        return cls(_ANONYMOUS)

    @classmethod
    def management(cls) -> Principal:
        return cls(b"")

    @classmethod
    def self_authenticating(cls, der_public_key: bytes) -> Principal:
        if not der_public_key:
            raise ValueError("a self-authenticating principal needs the DER-encoded public key, got nothing")
        return cls(hashlib.sha224(der_public_key).digest() + _SELF_AUTHENTICATING_SUFFIX)

    @classmethod
    def from_canister_index(cls, index: int) -> Principal:
        """The id the IC gives the canister with this index: 8-byte big-endian index, then 0x01 0x01."""
        if not 0 <= index < 1 << 64:
            raise ValueError(f"a canister index is a 64-bit unsigned number, got {index}")
        return cls(index.to_bytes(8, "big") + _CANISTER_ID_SUFFIX)

    @property
    def is_anonymous(self) -> bool:
        return self.bytes == _ANONYMOUS

    @property
    def is_management(self) -> bool:
        return self.bytes == b""

    @property
    def is_self_authenticating(self) -> bool:
        return len(self.bytes) == 29 and self.bytes.endswith(_SELF_AUTHENTICATING_SUFFIX)
