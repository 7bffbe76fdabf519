"""Reading a Candid message at the byte level: LEB128 numbers, fixed-width numbers, text and
references, each bounds-checked, with errors that give the byte offset.

Also the bounds (`DecodeLimits`) that keep decoding hostile input cheap.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from cdk.candid.encode import FIXED_WIDTH
from cdk.candid.errors import CandidError
from cdk.candid.types import FuncRef
from cdk.principal import MAX_LENGTH as PRINCIPAL_MAX_LENGTH
from cdk.principal import Principal

STRUCTS = {name: struct.Struct("<" + code) for name, code in FIXED_WIDTH.items()}
U32 = 1 << 32
_U64 = 1 << 64
_BIGNUM_HINT = " (raise DecodeLimits.max_bignum_bytes if such numbers are legitimate)"


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on the work one message may cause. The defaults admit any sane message of up to 10 MiB."""

    max_depth: int = 128            # nesting of values and types (Python's stack needs ~3 frames a level)
    max_values: int = 1 << 22       # values decoded or skipped; a blob counts as one
    # The decoded-size budget: a message may hold at most min_values + values_per_byte x its
    # length values (and never more than max_values), so a small message cannot build a huge
    # value out of elements that take no bytes (`vec null`, `vec record {}`). Every other value
    # takes at least one byte, so legitimate messages stay far below it.
    min_values: int = 1 << 16
    values_per_byte: int = 4
    max_bignum_bytes: int = 1024    # LEB128 bytes of one nat or int (7168 bits)
    max_type_entries: int = 10_000  # entries in the type table


class Reader:
    """A position in a message; every read checks that the bytes are there and well-formed."""

    def __init__(self, data: bytes, limits: DecodeLimits) -> None:
        self.data = data
        self.pos = 0
        self.limits = limits

    def fail(self, problem: str, offset: int | None = None) -> CandidError:
        return CandidError(problem, offset=self.pos if offset is None else offset)

    def take(self, n: int, what: str) -> bytes:
        start = self.pos
        end = start + n
        if end > len(self.data):
            raise self.fail(f"{what} needs {n} bytes but only {len(self.data) - start} remain")
        self.pos = end
        return self.data[start:end]

    def byte(self, what: str) -> int:
        try:
            value = self.data[self.pos]
        except IndexError:
            raise self.fail(f"{what}: the message ends here") from None
        self.pos += 1
        return value

    def leb(self, what: str, max_bytes: int = 10, bound: int = _U64, hint: str = "") -> int:
        """An unsigned LEB128 number; sizes, counts and ids are bounded to 64 bits (10 bytes)."""
        data, start = self.data, self.pos
        try:
            byte = data[start]
        except IndexError:
            raise self.fail(f"{what}: the message ends here") from None
        if byte < 0x80:
            self.pos = start + 1
            return byte
        result, _, pos = self._leb_groups(what, start, max_bytes, hint)
        if result >= bound:
            raise self.fail(f"{what}: {result} is out of range (at most {bound - 1})", start)
        self.pos = pos
        return result

    def sleb(self, what: str, max_bytes: int = 10, hint: str = "") -> int:
        result, bits, pos = self._leb_groups(what, self.pos, max_bytes, hint)
        if result >> (bits - 1) & 1:  # the sign: bit 6 of the last byte
            result -= 1 << bits
        self.pos = pos
        return result

    def _leb_groups(self, what: str, start: int, max_bytes: int, hint: str) -> tuple[int, int, int]:
        """The 7-bit groups of a LEB128 number at `start`: (their value, bits read, end position)."""
        data = self.data
        result = shift = 0
        pos = start
        while True:
            if pos - start >= max_bytes:
                raise self.fail(f"{what}: LEB128 number longer than {max_bytes} bytes{hint}", start)
            try:
                byte = data[pos]
            except IndexError:
                raise self.fail(f"{what}: LEB128 number runs past the end of the message", start) from None
            result |= (byte & 0x7F) << shift
            pos += 1
            shift += 7
            if byte < 0x80:
                return result, shift, pos

    def count(self, what: str, min_item_size: int) -> int:
        """A count of items that each take at least `min_item_size` bytes of what remains."""
        start = self.pos
        n = self.leb(what)
        if n * min_item_size > len(self.data) - self.pos:
            raise self.fail(f"{what} is {n}, but only {len(self.data) - self.pos} bytes remain", start)
        return n

    def text(self, what: str) -> str:
        n = self.leb(what)  # errors name the text itself: formatting a label per text would cost time
        start = self.pos
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} is not valid UTF-8 ({e.reason})", start + e.start) from None

    def principal(self) -> Principal:
        start = self.pos
        tag = self.byte("principal reference")
        if tag != 1:
            raise self.fail(f"a principal reference must be tagged 1 (an id), got {tag} "
                            "(0 is an opaque reference, which has no use between canisters)", start)
        n = self.leb("principal length")
        if n > PRINCIPAL_MAX_LENGTH:
            raise self.fail(f"a principal has at most {PRINCIPAL_MAX_LENGTH} bytes, this one claims {n}")
        return Principal(self.take(n, "principal"))

    def func_ref(self) -> FuncRef:
        start = self.pos
        tag = self.byte("func reference")
        if tag != 1:
            raise self.fail(f"a func reference must be tagged 1, got {tag} (0 is an opaque reference)", start)
        service = self.principal()
        return FuncRef(service, self.text("method name"))

    def nat(self) -> int:
        data, start = self.data, self.pos
        try:
            byte = data[start]
        except IndexError:
            raise self.fail("nat: the message ends here") from None
        if byte < 0x80:
            self.pos = start + 1
            return byte
        return self.leb("nat", self.limits.max_bignum_bytes, 1 << (7 * self.limits.max_bignum_bytes), _BIGNUM_HINT)

    def int(self) -> int:
        return self.sleb("int", self.limits.max_bignum_bytes, _BIGNUM_HINT)

    def primitive_value(self, name: str) -> Any:
        packer = STRUCTS.get(name)
        if packer is not None:
            start = self.pos
            end = start + packer.size
            if end > len(self.data):
                raise self.fail(f"{name} needs {packer.size} bytes but only {len(self.data) - start} remain")
            self.pos = end
            return packer.unpack_from(self.data, start)[0]
        if name == "nat":
            return self.nat()
        if name == "int":
            return self.int()
        if name == "text":
            return self.text("text")
        if name == "bool":
            start = self.pos
            flag = self.byte("bool")
            if flag > 1:
                raise self.fail(f"bool must be 0 or 1, got {flag}", start)
            return flag == 1
        if name == "principal":
            return self.principal()
        if name == "empty":
            raise self.fail("the message claims a value of type empty, which has no values")
        return None  # null and reserved take no bytes
