"""Identities: dfx-style PEM keys (Ed25519 and secp256k1), ours and dfx's.

File formats are byte-for-byte what dfx writes:
- secp256k1 (dfx's default since 0.9): an `EC PARAMETERS` block naming the curve, then the SEC1
  `EC PRIVATE KEY`;
- Ed25519: PKCS#8 `PRIVATE KEY` (older dfx wrote the v2 form that also carries the public key;
  both are read).

Our identities live in `$ICLLAMA_HOME/identity/<name>/identity.pem` (default home
`~/.config/icllama`), with the selected one in `$ICLLAMA_HOME/identity.json`, as dfx keeps
`~/.config/dfx/identity/<name>/identity.pem` and `~/.config/dfx/identity.json`. dfx's plaintext
identities are read in place (`$DFX_CONFIG_ROOT` moves dfx's home, as dfx itself honours).

Only `ecdsa` (which both ICP agents depend on) and the standard library are imported at module
level, so this module also works inside the ic-py 1.0.1 environment.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import ecdsa
from ecdsa.der import UnexpectedDER

from cdk.principal import Principal
from client.errors import UserError

KeyType = Literal["ed25519", "secp256k1"]
KEY_TYPES: tuple[KeyType, ...] = ("secp256k1", "ed25519")
DEFAULT_KEY_TYPE: KeyType = "secp256k1"  # what `dfx identity new` makes
DEFAULT_NAME = "default"
PEM_FILE = "identity.pem"
SELECTION_FILE = "identity.json"

_CURVES = {"ed25519": ecdsa.Ed25519, "secp256k1": ecdsa.SECP256k1}
# The DER of the secp256k1 curve OID, exactly the EC PARAMETERS block dfx (via OpenSSL) writes.
_SECP256K1_PARAMETERS = base64.b64decode("BgUrgQQACg==")
_NAME = re.compile(r"^[A-Za-z0-9._@-]+$")  # dfx's rule for identity names


@dataclass(frozen=True)
class Identity:
    """A signing key and where it came from. The secret never appears in reprs."""

    name: str  # the identity's name, or the PEM path it was read from
    key_type: KeyType
    secret: bytes = field(repr=False)  # Ed25519 seed or secp256k1 scalar, 32 bytes
    source: Path | None = None

    def _signing_key(self) -> ecdsa.SigningKey:
        return ecdsa.SigningKey.from_string(self.secret, curve=_CURVES[self.key_type])

    @property
    def der_public_key(self) -> bytes:
        """The SubjectPublicKeyInfo DER that requests carry as `sender_pubkey`."""
        return self._signing_key().get_verifying_key().to_der()

    @property
    def principal(self) -> Principal:
        return Principal.self_authenticating(self.der_public_key)

    def to_pem(self) -> bytes:
        key = self._signing_key()
        if self.key_type == "secp256k1":
            return _pem("EC PARAMETERS", _SECP256K1_PARAMETERS) + _pem("EC PRIVATE KEY", key.to_der(format="ssleay"))
        return _pem("PRIVATE KEY", key.to_der(format="pkcs8"))

    def icp_py_core(self) -> Any:
        """This key as an icp-py-core `icp_identity.Identity`."""
        from icp_identity import Identity as AgentIdentity

        return AgentIdentity(privkey=self.secret.hex(), type=self.key_type)

    def ic_py(self) -> Any:
        """This key as an ic-py 1.0.1 `ic.identity.Identity` (only inside ic-py's environment)."""
        from ic.identity import Identity as AgentIdentity

        return AgentIdentity(privkey=self.secret.hex(), type=self.key_type)


def _pem(label: str, der: bytes) -> bytes:
    # OpenSSL (and so dfx) wraps base64 at 64 columns; ecdsa's own to_pem wraps at 76.
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode("ascii"), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode("ascii")


def generate(name: str, key_type: KeyType = DEFAULT_KEY_TYPE) -> Identity:
    if key_type not in _CURVES:
        raise UserError(f"unknown key type {key_type!r}: use one of {', '.join(KEY_TYPES)}")
    key = ecdsa.SigningKey.generate(curve=_CURVES[key_type])
    return Identity(name, key_type, key.to_string())


def parse_pem(pem: bytes, name: str, source: Path | None = None) -> Identity:
    """Reads a dfx-style PEM (SEC1 secp256k1 with or without EC PARAMETERS, PKCS#8 v1/v2 Ed25519)."""
    where = str(source) if source else name
    if b"ENCRYPTED" in pem:
        raise UserError(f"{where} is an encrypted PEM; decrypt it first (for a dfx identity: "
                        "`dfx identity export NAME > NAME.pem`) and pass that file")
    if b"-----BEGIN" not in pem:
        raise UserError(f"{where} is not a PEM file (no -----BEGIN line); give a dfx-style identity.pem")
    try:
        key = ecdsa.SigningKey.from_pem(pem)
    except (UnexpectedDER, ValueError, ecdsa.MalformedPointError) as e:
        raise UserError(f"{where} holds no readable private key ({e}); give an Ed25519 or secp256k1 "
                        "identity.pem as dfx writes it") from None
    key_type = next((t for t, curve in _CURVES.items() if key.curve == curve), None)
    if key_type is None:
        raise UserError(f"{where} holds a {key.curve.name} key; identities are Ed25519 or secp256k1 "
                        "(create one with `icllama identity new NAME`)")
    return Identity(name, key_type, key.to_string(), source)


def read_pem(path: Path, name: str | None = None) -> Identity:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read identity file {path}: {e.strerror or e}") from None
    return parse_pem(data, name or str(path), path)


# --- where identities live -------------------------------------------------------------------------
@dataclass(frozen=True)
class IdentityStore:
    """Our identities under `home` (`$ICLLAMA_HOME`), and dfx's under `dfx_home`, read only."""

    home: Path
    dfx_home: Path

    @classmethod
    def from_environment(cls) -> IdentityStore:
        home = os.environ.get("ICLLAMA_HOME")
        dfx_root = os.environ.get("DFX_CONFIG_ROOT")
        return cls(
            Path(home).expanduser() if home else Path.home() / ".config" / "icllama",
            (Path(dfx_root).expanduser() if dfx_root else Path.home()) / ".config" / "dfx",
        )

    def ours(self, name: str) -> Path:
        return self.home / "identity" / _check_name(name) / PEM_FILE

    def dfx(self, name: str) -> Path:
        return self.dfx_home / "identity" / _check_name(name) / PEM_FILE

    def names(self) -> tuple[list[str], list[str]]:
        """(ours, dfx's): the identity names each directory holds."""
        def listed(root: Path) -> list[str]:
            directory = root / "identity"
            return sorted(p.name for p in directory.iterdir() if p.is_dir()) if directory.is_dir() else []
        return listed(self.home), listed(self.dfx_home)

    def selected(self) -> str | None:
        path = self.home / SELECTION_FILE
        if not path.is_file():
            return None
        try:
            name = json.loads(path.read_text())["default"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path} is damaged ({e}); select an identity again with `icllama identity use NAME`") \
                from None
        return _check_name(name)

    # --- changing -----------------------------------------------------------------------------
    def create(self, name: str, key_type: KeyType = DEFAULT_KEY_TYPE, force: bool = False) -> Identity:
        path = self.ours(name)
        if path.exists() and not force:
            raise UserError(f"identity {name!r} already exists ({path}); pick another name, or pass --force "
                            "to replace it (its old key is then lost)")
        identity = generate(name, key_type)
        self._write(path, identity.to_pem())
        return Identity(name, identity.key_type, identity.secret, path)

    def use(self, name: str) -> Identity:
        identity = self.load(name)  # only an identity that exists can be selected
        self._write(self.home / SELECTION_FILE, json.dumps({"default": name}).encode())
        return identity

    def _write(self, path: Path, data: bytes) -> None:
        from replica.state_store import atomic_write  # here: the replica pulls in numpy and the runtime

        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        # atomic_write's temp file comes from mkstemp, so the key is 0600 from its first byte on.
        atomic_write(path, data)

    # --- reading ------------------------------------------------------------------------------
    def load(self, name: str) -> Identity:
        """A name of ours, else one of dfx's (ours shadow dfx's of the same name)."""
        for path in (self.ours(name), self.dfx(name)):
            if path.is_file():
                return read_pem(path, name)
        dfx_dir = self.dfx(name).parent
        if dfx_dir.is_dir():
            raise UserError(f"dfx identity {name!r} is not stored as a plaintext identity.pem (it is password-"
                            f"protected or in a keyring); export it with `dfx identity export {name} > {name}.pem` "
                            f"and pass --identity {name}.pem")
        ours, dfx = self.names()
        known = ", ".join(ours + [f"{n} (dfx)" for n in dfx if n not in ours]) or "none yet"
        raise UserError(f"no identity named {name!r} (known: {known}); create it with "
                        f"`icllama identity new {name}`, or pass a PEM file path")

    def resolve(self, given: str | None) -> Identity:
        """What `--identity` names: a PEM path, a name of ours or dfx's, or (None) the selected one,
        which is `default`, created on first use as dfx does."""
        if given is not None:
            if given.endswith(".pem") or os.sep in given:
                return read_pem(Path(given).expanduser())
            return self.load(_check_name(given))
        name = self.selected() or DEFAULT_NAME
        if name == DEFAULT_NAME and not self.ours(name).is_file() and not self.dfx(name).is_file():
            identity = self.create(name)
            print(f"created identity {name!r} ({identity.principal}) in {self.ours(name)}", file=sys.stderr)
            return identity
        return self.load(name)


def _check_name(name: str) -> str:
    if not _NAME.match(name) or name in (".", ".."):
        raise UserError(f"{name!r} is not a valid identity name: use letters, digits and . _ @ -")
    return name
