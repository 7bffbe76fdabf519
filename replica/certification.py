"""Certificates: the network's BLS12-381 key, the node's Ed25519 key, and signed hash trees.

A certificate (interface spec, "Certification") is a CBOR map {tree, signature}: a pruned hash
tree and a BLS signature over domain_sep("ic-state-root") . root_hash. The scheme is min-sig:
signatures in G1 (48 bytes compressed), the public key in G2 (96 bytes), ciphersuite
BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_. This network is a single root subnet, so its
certificates carry no delegation and the root key is the subnet key; its subnet id is the
self-authenticating principal of that key's DER, as on the IC.

The BLS library is pyblst (blst), chosen by measurement: benchmarks/bench_bls.py.

Query responses are signed by the node with Ed25519 (spec, "Request: Query call"); the node's
public key is published in the state tree at /subnet/<subnet_id>/node/<node_id>/public_key.

Both secret keys live in <state_dir>/keys/, written atomically, so a restarted network keeps
its identity and agents that pinned the root key keep working.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cbor2
from nacl.signing import SigningKey
from pyblst import BlstP1Element, BlstP2Element

from cdk.principal import Principal
from replica.hash_tree import StateTree
from replica.state_store import atomic_write

# DER SubjectPublicKeyInfo prefix of a BLS12-381 G2 key (OIDs 1.3.6.1.4.1.44668.5.3.1.2.1 and
# 1.3.6.1.4.1.44668.5.3.2.1), followed by the 96-byte compressed key.
BLS_DER_PREFIX = bytes.fromhex("308182301d060d2b0601040182dc7c0503010201060c2b0601040182dc7c05030201036100")
ED25519_DER_PREFIX = bytes.fromhex("302a300506032b6570032100")
STATE_ROOT_DOMAIN = b"\x0dic-state-root"
BLS_DST = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_"
SELF_DESCRIBE_TAG = 55799
# The order of the BLS12-381 groups: secret keys are scalars below it.
BLS_GROUP_ORDER = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
# The compressed standard generator of G2 (zcash serialization, as blst and the IC use).
_G2_GENERATOR = BlstP2Element.uncompress(
    bytes.fromhex(
        "93e02b6052719f607dacd3a088274f65596bd0d09920b61ab5da61bbdc7f5049334cf11213945d57e5ac7d055d042b7e"
        "024aa2b2f08f0a91260805272dc51051c6e47ad4fa403b02b4510b647ae3d1770bac0326a805bbefd48056c8c121bdb8"
    )
)

NETWORK_KEY_FILE = "network_bls12381.secret"
NODE_KEY_FILE = "node_ed25519.secret"


@dataclass(frozen=True)
class NetworkKey:
    """The subnet's BLS12-381 threshold key, held whole because the simulation has one node."""

    secret: int

    @classmethod
    def generate(cls) -> NetworkKey:
        return cls(secrets.randbelow(BLS_GROUP_ORDER - 1) + 1)

    @property
    def public_key(self) -> bytes:
        return _G2_GENERATOR.scalar_mul(self.secret).compress()

    @property
    def der(self) -> bytes:
        """The root key as /api/v2/status serves it and agents pin it."""
        return BLS_DER_PREFIX + self.public_key

    def sign(self, message: bytes) -> bytes:
        return BlstP1Element.hash_to_group(message, BLS_DST).scalar_mul(self.secret).compress()


@dataclass(frozen=True)
class NodeKey:
    """The replica node's Ed25519 key, which signs query responses."""

    signing_key: SigningKey

    @property
    def der(self) -> bytes:
        return ED25519_DER_PREFIX + bytes(self.signing_key.verify_key)

    @property
    def node_id(self) -> Principal:
        return Principal.self_authenticating(self.der)

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message).signature


@dataclass(frozen=True)
class NetworkKeys:
    network: NetworkKey
    node: NodeKey

    @property
    def subnet_id(self) -> Principal:
        return Principal.self_authenticating(self.network.der)

    @classmethod
    def load_or_create(cls, state_dir: Path) -> NetworkKeys:
        """The keys in <state_dir>/keys/, created on first use."""
        key_dir = Path(state_dir) / "keys"
        network_secret = _load_or_create_secret(
            key_dir / NETWORK_KEY_FILE, lambda: NetworkKey.generate().secret.to_bytes(32, "big")
        )
        node_seed = _load_or_create_secret(key_dir / NODE_KEY_FILE, lambda: secrets.token_bytes(32))
        secret = int.from_bytes(network_secret, "big")
        if not 0 < secret < BLS_GROUP_ORDER:
            raise ValueError(
                f"{key_dir / NETWORK_KEY_FILE} does not hold a valid BLS12-381 secret key; "
                "restore it from a backup, or start with --clean to create a new network"
            )
        return cls(NetworkKey(secret), NodeKey(SigningKey(node_seed)))


def _load_or_create_secret(path: Path, generate: Callable[[], bytes]) -> bytes:
    if path.exists():
        data = path.read_bytes()
        if len(data) != 32:
            raise ValueError(
                f"{path} should hold a 32-byte secret key but holds {len(data)} bytes; "
                "restore it from a backup, or start with --clean to create a new network"
            )
        return data
    data = generate()
    atomic_write(path, data)
    return data


@dataclass(frozen=True)
class CertifiedState:
    """One certified version of the state tree: its hash tree and the signature on its root."""

    tree: StateTree
    signature: bytes

    @classmethod
    def sign(cls, tree: StateTree, key: NetworkKey) -> CertifiedState:
        return cls(tree, key.sign(STATE_ROOT_DOMAIN + tree.root_hash))

    def certificate(self, paths: Sequence[Sequence[bytes]]) -> bytes:
        """The CBOR certificate revealing `paths` (the pruned tree keeps the signed root hash)."""
        body = {"tree": self.tree.witness(paths), "signature": self.signature}
        return cbor2.dumps(cbor2.CBORTag(SELF_DESCRIBE_TAG, body))
