"""Loads canister classes by dotted name ("package.module:Class") with their Candid interface.

Installing a Python canister names its class and a version in install_code's `wasm_module`
(wasm modules install as themselves, replica.wasm_module). The module "hash" that canister_status
reports is the sha256 of that name and version, so an upgrade to a new version changes it as a
new wasm would.

Each install runs the code its module's file holds at that moment, as a new wasm module would:
Python's import cache would keep running the first version of an edited file, so a module whose
source changed since it was imported is executed afresh under a name that carries the source's
sha256 ("package.module@<sha256 prefix>"), and the class is taken from there.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

from cdk.candid import CandidError, Interface, parse_did
from cdk.canister import Canister, method_mode
from replica.errors import ErrorCode, RejectError

MODULE_MAGIC = "icllama-canister-class"  # the "wasm_module" blob of install_code names a class


@dataclass(frozen=True)
class ModuleRef:
    class_path: str  # "tests.canisters_for_tests.counter:Counter"
    version: str

    @property
    def module_hash(self) -> bytes:
        return hashlib.sha256(f"{self.class_path}@{self.version}".encode()).digest()

    def to_wasm_module(self) -> bytes:
        """The bytes to pass as install_code's `wasm_module` to install this class."""
        return json.dumps({MODULE_MAGIC: self.class_path, "version": self.version}).encode()

    @classmethod
    def from_wasm_module(cls, blob: bytes) -> ModuleRef:
        try:
            descriptor = json.loads(blob)
            return cls(descriptor[MODULE_MAGIC], str(descriptor["version"]))
        except (ValueError, KeyError, TypeError):
            raise RejectError(
                ErrorCode.CANISTER_INVALID_WASM,
                "Canister's Wasm module is not valid: unsupported canister module format: wasm_module is neither "
                "a wasm module (it would start with \\0asm, or 1f 8b 08 when gzipped) "
                f'nor a Python canister class, named by the UTF-8 JSON {{"{MODULE_MAGIC}": "package.module:Class", '
                '"version": "1"} (replica.loader.ModuleRef(...).to_wasm_module() builds it)',
            ) from None


@dataclass(frozen=True)
class LoadedClass:
    ref: ModuleRef
    cls: type[Canister]
    interface: Interface
    did_text: str


def load_class(ref: ModuleRef) -> LoadedClass:
    module_name, _, class_name = ref.class_path.partition(":")
    if not module_name or not class_name:
        raise RejectError(ErrorCode.CANISTER_INVALID_WASM,
                          f"canister class {ref.class_path!r} must be written 'package.module:Class'")
    try:
        module = _current_code(importlib.import_module(module_name))
        cls = getattr(module, class_name)
    except Exception as e:  # noqa: BLE001 - whatever the module raises, the install fails cleanly
        raise RejectError(ErrorCode.CANISTER_INVALID_WASM,
                          f"cannot load canister class {ref.class_path!r}: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, Canister)):
        raise RejectError(ErrorCode.CANISTER_INVALID_WASM,
                          f"{ref.class_path!r} is not a subclass of cdk.Canister")
    did_path = Path(inspect.getfile(cls)).parent / cls.DID
    try:
        did_text = did_path.read_text()
        interface = parse_did(did_text)
    except (OSError, CandidError) as e:
        raise RejectError(ErrorCode.CANISTER_INVALID_WASM,
                          f"cannot read the Candid interface {did_path} of {ref.class_path}: {e}") from None
    _check_methods_match(cls, interface, ref.class_path)
    return LoadedClass(ref, cls, interface, did_text)


_SOURCE_DIGEST = "__icllama_source_sha256__"


def _current_code(module: types.ModuleType) -> types.ModuleType:
    """`module` as its file reads now: the imported module if its source is unchanged, else the
    source executed afresh as its own module (kept in sys.modules under its digest)."""
    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py"):
        return module
    source = Path(path).read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    imported = module.__dict__.setdefault(_SOURCE_DIGEST, digest)  # what the import ran, as first seen
    if imported == digest:
        return module
    name = f"{module.__name__}@{digest[:16]}"
    fresh = sys.modules.get(name)
    if fresh is None:
        fresh = types.ModuleType(name)
        fresh.__file__ = path
        fresh.__package__ = module.__package__
        fresh.__dict__[_SOURCE_DIGEST] = digest
        code = compile(source, path, "exec")  # from the source, never a stale bytecode cache
        sys.modules[name] = fresh
        try:
            exec(code, fresh.__dict__)  # noqa: S102 - running canister code is what installing means
        except BaseException:
            del sys.modules[name]
            raise
    return fresh


def _check_methods_match(cls: type[Canister], interface: Interface, class_path: str) -> None:
    for name, method in interface.methods.items():
        implementation = getattr(cls, name, None)
        mode = method_mode(implementation) if implementation else None
        wants = "query" if "query" in method.modes else "update"
        if mode != wants:
            raise RejectError(
                ErrorCode.CANISTER_INVALID_WASM,
                f"{class_path}: the .did declares {wants} method {name!r} but the class "
                + (f"marks it @{mode}" if mode else "has no such @update/@query method"),
            )
