"""Request ids: the IC's representation-independent hash of structured data.

The interface spec ("Representation-independent hashing of structured data") defines how a
request's `content` map is hashed; the result is the request id that senders sign and that
names the request in the state tree. The same hash is used for query response signatures.

LEB128 is written here rather than taken from a library because the spec needs only the two
shortest-form encoders, a few lines each, and the hash must follow the spec exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

REQUEST_DOMAIN_SEPARATOR = b"\x0aic-request"
RESPONSE_DOMAIN_SEPARATOR = b"\x0bic-response"


def encode_uleb128(value: int) -> bytes:
    """Shortest-form unsigned LEB128 (the spec's encoding of natural numbers)."""
    if value < 0:
        raise ValueError(f"unsigned LEB128 needs a natural number, got {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_sleb128(value: int) -> bytes:
    """Shortest-form signed LEB128 (the spec's encoding of integers)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        done = (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40)
        out.append(byte if done else byte | 0x80)
        if done:
            return bytes(out)


def decode_uleb128(data: bytes) -> int:
    """Inverse of encode_uleb128; the whole of `data` must be one number."""
    value = 0
    for index, byte in enumerate(data):
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if index != len(data) - 1:
                raise ValueError("trailing bytes after an unsigned LEB128 number")
            return value
    raise ValueError("truncated unsigned LEB128 number")


def _hash_value(value: object) -> bytes:
    # bool is an int in Python, but the spec has no booleans: refuse rather than guess.
    if isinstance(value, bool) or value is None or isinstance(value, float):
        raise TypeError(f"the representation-independent hash has no encoding for {value!r}")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(value)).digest()
    if isinstance(value, str):
        return hashlib.sha256(value.encode("utf-8")).digest()
    if isinstance(value, int):
        encoded = encode_uleb128(value) if value >= 0 else encode_sleb128(value)
        return hashlib.sha256(encoded).digest()
    if isinstance(value, Mapping):
        return hash_of_map(value)
    if isinstance(value, Sequence):
        return hashlib.sha256(b"".join(_hash_value(item) for item in value)).digest()
    raise TypeError(f"the representation-independent hash has no encoding for {type(value).__name__}")


def hash_of_map(value: Mapping) -> bytes:
    """SHA-256 over the sorted concatenations H(key) . H(value) of every field present."""
    pairs = []
    for key, field in value.items():
        key_bytes = key.encode("ascii") if isinstance(key, str) else bytes(key)
        pairs.append(hashlib.sha256(key_bytes).digest() + _hash_value(field))
    return hashlib.sha256(b"".join(sorted(pairs))).digest()


def request_id(content: Mapping) -> bytes:
    """The 32-byte id of a request: the representation-independent hash of its content map."""
    return hash_of_map(content)
