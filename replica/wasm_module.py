"""A canister module as install_code receives it: raw or gzipped wasm, its hash and its metadata.

The IC keeps the module bytes exactly as given and reports their sha256 as the module hash, so a
gzipped module's hash is that of the gzip file, as `sha256sum canister.wasm.gz` prints it
(dfinity/ic 002d5530aeb1ef1ed362d7f9c3c5529b8ec1cafe, rs/types/wasm_types/src/lib.rs:
`CanisterModule::new` hashes the bytes it stores). Decoding follows the IC's
rs/embedders/src/wasm_utils/decoding.rs (01adcd3626c9a781a0f7f42ad059fab7d99f524b): `\\0asm` is
wasm, `1f 8b 08` is gzip whose footer states the decoded size, which must match and be within the
100 MiB limit; anything else is "unsupported canister module format".

The module is then validated as the IC validates it (replica.engines.wasm.validation: imports,
exports, limits), and its custom sections `icp:public <name>` and `icp:private <name>` are the
canister's metadata, readable at read_state `/canister/<id>/metadata/<name>` (private ones by
controllers only).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field

from cdk.candid import CandidError, Interface, parse_did
from cdk.principal import Principal
from replica.engines.wasm.validation import CustomSection, InvalidWasm, ModuleInfo, validate
from replica.errors import ErrorCode, RejectError
from replica.limits import MiB

WASM_MAGIC = b"\x00asm"
GZIP_MAGIC = b"\x1f\x8b\x08"  # gzip with DEFLATE (RFC 1952)
# dfinity/ic rs/config/src/embedders.rs: WASM_MAX_SIZE, the largest decoded module.
MAX_DECODED_MODULE_BYTES = 100 * MiB


@dataclass(frozen=True)
class CanisterModule:
    given: bytes  # the wasm_module bytes as installed (possibly gzipped)
    wasm: bytes  # the decoded wasm binary
    info: ModuleInfo  # what validation found: methods, memory64, metadata sections
    _interface: Interface | None = field(default=None, compare=False, repr=False)  # parsed on first use

    @property
    def metadata(self) -> dict[str, CustomSection]:
        return self.info.metadata

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
    """The module in `given`, decoded and validated as the IC does before installing it."""
    wasm = decode(given)
    try:
        info = validate(wasm)
    except InvalidWasm as e:
        raise invalid_wasm(str(e)) from None
    return CanisterModule(given, wasm, info)


def decode(given: bytes) -> bytes:
    """The wasm binary in `given` (raw or gzip, see is_wasm), with the IC's checks and messages."""
    if not given.startswith(GZIP_MAGIC):
        if len(given) > MAX_DECODED_MODULE_BYTES:
            raise invalid_wasm(too_large(len(given)))
        return given
    if len(given) < 16:
        raise invalid_wasm("invalid Wasm module: gzip stream is too short")
    size = int.from_bytes(given[-4:], "little")  # the footer's ISIZE, checked below against the real size
    if size > MAX_DECODED_MODULE_BYTES:
        raise invalid_wasm(too_large(size))
    decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        # At most one byte more than the footer promises: a gzip bomb is refused, not inflated.
        wasm = decoder.decompress(given, size + 1)
    except zlib.error as e:
        raise invalid_wasm(f"failed to decode compressed Wasm module: {e}") from None
    if len(wasm) != size:
        raise invalid_wasm(f"specified uncompressed size {size} does not match extracted size {len(wasm)}")
    return wasm


def too_large(size: int) -> str:
    return f"Wasm module size {size} exceeds the maximum allowed size of {MAX_DECODED_MODULE_BYTES}"
