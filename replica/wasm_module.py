"""A canister module as install_code receives it: raw or gzipped wasm, its hash and its metadata.

The IC keeps the module bytes exactly as given and reports their sha256 as the module hash, so a
gzipped module's hash is that of the gzip file, as `sha256sum canister.wasm.gz` prints it
(dfinity/ic a0c8c9a1de828d0881eeedf8764cc4b11d5f0fb7, rs/types/wasm_types/src/lib.rs:
`CanisterModule::new` hashes the bytes it stores). Decoding follows the IC's
rs/embedders/src/wasm_utils/decoding.rs (6cef1e985ca7ac9790bcab06f2cd3479dc1752d1): `\\0asm` is
wasm, `1f 8b 08` is gzip whose footer states the decoded size, which must match and be within the
100 MiB limit; anything else is "unsupported canister module format".

Custom sections named `icp:public <name>` and `icp:private <name>` are the canister's metadata,
readable at read_state `/canister/<id>/metadata/<name>` (private ones by controllers only).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field

from cdk.candid import CandidError, Interface, parse_did
from cdk.principal import Principal
from replica.errors import ErrorCode, RejectError
from replica.limits import MiB

WASM_MAGIC = b"\x00asm"
GZIP_MAGIC = b"\x1f\x8b\x08"  # gzip with DEFLATE (RFC 1952)
# dfinity/ic rs/config/src/embedders.rs: WASM_MAX_SIZE, the largest decoded module.
MAX_DECODED_MODULE_BYTES = 100 * MiB
_CUSTOM_SECTION = 0


@dataclass(frozen=True)
class Metadata:
    """One `icp:public`/`icp:private` custom section."""

    name: str  # without the "icp:public " / "icp:private " prefix
    public: bool
    content: bytes


@dataclass(frozen=True)
class CanisterModule:
    given: bytes  # the wasm_module bytes as installed (possibly gzipped)
    wasm: bytes  # the decoded wasm binary
    metadata: dict[str, Metadata]
    _interface: Interface | None = field(default=None, compare=False, repr=False)  # parsed on first use

    @property
    def module_hash(self) -> bytes:
        return hashlib.sha256(self.given).digest()

    def interface(self, canister: Principal) -> Interface:
        """The Candid interface its `candid:service` section declares, which types the calls
        that Python canisters and in-process clients make to it."""
        if self._interface is None:
            section = self.metadata.get("candid:service")
            if section is None:
                raise RejectError(
                    ErrorCode.CANISTER_CONTRACT_VIOLATION,
                    f"Canister {canister.to_text()} is a wasm module without a candid:service metadata section, so "
                    "its Candid interface is unknown here: agents and wasm canisters can call it with Candid bytes, "
                    "but a Python canister cannot type its arguments. Build it with the interface as metadata "
                    "(moc --public-metadata candid:service, or ic-wasm <module> metadata candid:service -f <did>)")
            try:
                object.__setattr__(self, "_interface", parse_did(section.content.decode()))
            except (CandidError, UnicodeDecodeError) as e:
                raise RejectError(ErrorCode.CANISTER_CONTRACT_VIOLATION,
                                  f"the candid:service metadata of canister {canister.to_text()} is not a valid "
                                  f"Candid service: {e}") from None
        return self._interface


def is_wasm(blob: bytes) -> bool:
    """Whether `blob` is meant as a wasm module (raw or gzipped), not a Python-class descriptor."""
    return blob.startswith(WASM_MAGIC) or blob.startswith(GZIP_MAGIC)


def invalid_wasm(reason: str) -> RejectError:
    # The IC's HypervisorError::InvalidWasm text, under IC0505 (CanisterInvalidWasm).
    return RejectError(ErrorCode.CANISTER_INVALID_WASM, f"Canister's Wasm module is not valid: {reason}")


def read_module(given: bytes) -> CanisterModule:
    wasm = decode(given)
    return CanisterModule(given, wasm, metadata_sections(wasm))


def decode(given: bytes) -> bytes:
    """The wasm binary in `given`, gunzipped if it is gzip, with the IC's checks and messages."""
    if given.startswith(WASM_MAGIC):
        size = len(given)
    elif given.startswith(GZIP_MAGIC):
        if len(given) < 16:
            raise invalid_wasm("invalid Wasm module: gzip stream is too short")
        size = int.from_bytes(given[-4:], "little")  # ISIZE, checked below against the real size
    else:
        raise invalid_wasm("unsupported canister module format: a module starts with \\0asm (wasm) or 1f 8b 08 "
                           "(gzip); a Python canister class is named by replica.loader.ModuleRef instead")
    if size > MAX_DECODED_MODULE_BYTES:
        raise invalid_wasm(f"Wasm module size {size} exceeds the maximum allowed size of {MAX_DECODED_MODULE_BYTES}")
    if given.startswith(WASM_MAGIC):
        return given
    decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        # At most one byte more than the footer promises: a gzip bomb is refused, not inflated.
        wasm = decoder.decompress(given, size + 1)
    except zlib.error as e:
        raise invalid_wasm(f"failed to decode compressed Wasm module: {e}") from None
    if len(wasm) != size:
        raise invalid_wasm(f"specified uncompressed size {size} does not match extracted size {len(wasm)}")
    return wasm


def custom_sections(wasm: bytes) -> list[tuple[str, bytes]]:
    """(name, content) of every custom section, in module order."""
    sections: list[tuple[str, bytes]] = []
    offset = 8  # magic and version
    while offset < len(wasm):
        section_id = wasm[offset]
        size, offset = _read_u32(wasm, offset + 1)
        end = offset + size
        if end > len(wasm):
            raise invalid_wasm(f"section {section_id} at byte {offset} runs past the end of the module")
        if section_id == _CUSTOM_SECTION:
            name_length, name_start = _read_u32(wasm, offset)
            try:
                name = wasm[name_start:name_start + name_length].decode()
            except UnicodeDecodeError:
                raise invalid_wasm(f"the custom section at byte {offset} has a name that is not UTF-8") from None
            sections.append((name, wasm[name_start + name_length:end]))
        offset = end
    return sections


def metadata_sections(wasm: bytes) -> dict[str, Metadata]:
    metadata: dict[str, Metadata] = {}
    for section_name, content in custom_sections(wasm):
        for prefix, public in (("icp:public ", True), ("icp:private ", False)):
            if section_name.startswith(prefix):
                name = section_name[len(prefix):]
                metadata[name] = Metadata(name, public, content)
    return metadata


def _read_u32(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if offset >= len(data) or shift > 28:
            raise invalid_wasm(f"malformed LEB128 integer at byte {offset}")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, offset
