"""Identities: dfx's PEM formats (made here by `cryptography`, independently of the `ecdsa` reader),
published key/principal pairs, our store (atomic, 0600) and `icllama identity`."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from icp_identity import Identity as IcpIdentity

from client.cli import main
from client.errors import UserError
from client.identity import IdentityStore, parse_pem, read_pem

# Published pairs, so the principal derivation is checked against other implementations:
# ic-agent's BasicIdentity test key (the PKCS#8 v2 Ed25519 PEM older dfx wrote) and agent-js's
# secp256k1 PEM test (a SEC1 key without the EC PARAMETERS block).
AGENT_RS_ED25519_PEM = b"""-----BEGIN PRIVATE KEY-----
MFMCAQEwBQYDK2VwBCIEIL9r4XBKsg4pquYBHY6rgfzuBsvCy89tgqDfDpofXRBP
oSMDIQBCkE1NL4X43clXS1LFauiceiiKW9NhjVTEpU6LpH9Qcw==
-----END PRIVATE KEY-----
"""
AGENT_RS_ED25519_PRINCIPAL = "emrl6-qe3wz-fh5ib-sx2r4-fbx46-6g4ql-5ro3g-zhbtm-nxdrq-q2oqo-jqe"
AGENT_JS_SECP256K1_PEM = b"""-----BEGIN EC PRIVATE KEY-----
MHQCAQEEIGfKHuyoCCCbEXb0789MIdWiCIpZo1LaKApv95SSIaWPoAcGBSuBBAAK
oUQDQgAEahC99Avid7r8D6kIeLjjxJ8kwdJRy5nPrN9o18P7xHT95i0JPr5ivc9v
CB8vG2s97NB0re2MhqvdWgradJZ8Ow==
-----END EC PRIVATE KEY-----
"""
AGENT_JS_SECP256K1_PRINCIPAL = "42gbo-uiwfn-oq452-ql6yp-4jsqn-a6bxk-n7l4z-ni7os-yptq6-3htob-vqe"
EC_PARAMETERS_SECP256K1 = b"-----BEGIN EC PARAMETERS-----\nBgUrgQQACg==\n-----END EC PARAMETERS-----\n"


def _self_authenticating_text(der: bytes) -> str:
    from cdk.principal import Principal

    return Principal(hashlib.sha224(der).digest() + b"\x02").to_text()


def dfx_secp256k1_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """As `dfx identity new` writes it: OpenSSL's EC PARAMETERS block, then the SEC1 key."""
    return EC_PARAMETERS_SECP256K1 + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())


def dfx_ed25519_v2_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    """PKCS#8 v2 (OneAsymmetricKey with the public key), as dfx before 0.9 wrote Ed25519 keys."""
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    der = bytes.fromhex("3053020101300506032b657004220420") + seed + bytes.fromhex("a123032100") + public
    return b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(der) + b"-----END PRIVATE KEY-----\n"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> IdentityStore:
    monkeypatch.setenv("ICLLAMA_HOME", str(tmp_path / "icllama-home"))
    monkeypatch.setenv("DFX_CONFIG_ROOT", str(tmp_path / "dfx-root"))
    return IdentityStore.from_environment()


def test_published_pems_give_their_published_principals() -> None:
    assert str(parse_pem(AGENT_RS_ED25519_PEM, "agent-rs").principal) == AGENT_RS_ED25519_PRINCIPAL
    assert str(parse_pem(AGENT_JS_SECP256K1_PEM, "agent-js").principal) == AGENT_JS_SECP256K1_PRINCIPAL
    # The block dfx puts in front changes nothing.
    with_parameters = parse_pem(EC_PARAMETERS_SECP256K1 + AGENT_JS_SECP256K1_PEM, "dfx")
    assert str(with_parameters.principal) == AGENT_JS_SECP256K1_PRINCIPAL


def test_secp256k1_pem_in_dfx_format_matches_cryptography() -> None:
    key = ec.generate_private_key(ec.SECP256K1())
    identity = parse_pem(dfx_secp256k1_pem(key), "k")
    assert identity.key_type == "secp256k1"
    assert identity.secret == key.private_numbers().private_value.to_bytes(32, "big")
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert identity.der_public_key == der
    assert str(identity.principal) == _self_authenticating_text(der)
    # The agent signs with this key in a way `cryptography` verifies (raw r||s over sha256).
    _, signature = identity.icp_py_core().sign(b"\x0aic-request" + b"x" * 32)
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    key.public_key().verify(encode_dss_signature(r, s), b"\x0aic-request" + b"x" * 32, ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("form", ["pkcs8-v1", "pkcs8-v2"])
def test_ed25519_pems_match_cryptography(form: str) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()) if form == "pkcs8-v1" else dfx_ed25519_v2_pem(key))
    identity = parse_pem(pem, "e")
    assert identity.key_type == "ed25519"
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert identity.der_public_key == der
    agent = identity.icp_py_core()
    assert agent.sender().to_str() == str(identity.principal) == _self_authenticating_text(der)
    _, signature = agent.sign(b"message")
    key.public_key().verify(signature, b"message")


@pytest.mark.parametrize("key_type", ["secp256k1", "ed25519"])
def test_written_pem_is_dfx_format_and_reads_back(store: IdentityStore, key_type: str) -> None:
    identity = store.create("alice", key_type)
    pem = identity.source.read_bytes()
    loaded = serialization.load_pem_private_key(pem.split(b"-----END EC PARAMETERS-----\n")[-1], password=None)
    if key_type == "secp256k1":
        assert pem.startswith(EC_PARAMETERS_SECP256K1)
        assert b"-----BEGIN EC PRIVATE KEY-----\n" in pem
        assert loaded.private_numbers().private_value.to_bytes(32, "big") == identity.secret
    else:
        assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
        assert isinstance(loaded, ed25519.Ed25519PrivateKey)
    assert all(len(line) <= 64 for line in pem.splitlines())  # OpenSSL's wrapping, as dfx's files
    assert read_pem(identity.source).principal == identity.principal
    assert IcpIdentity.from_pem(pem.decode()).sender().to_str() == str(identity.principal)


def test_store_files_are_private_and_never_overwritten_silently(store: IdentityStore) -> None:
    identity = store.create("bob")
    assert stat.S_IMODE(identity.source.stat().st_mode) == 0o600
    assert stat.S_IMODE(identity.source.parent.stat().st_mode) == 0o700
    with pytest.raises(UserError, match="already exists.*--force"):
        store.create("bob")
    assert read_pem(identity.source).secret == identity.secret  # the old key is intact
    assert store.create("bob", force=True).secret != identity.secret
    assert [p.name for p in identity.source.parent.iterdir()] == ["identity.pem"]  # no temp files left


def test_resolution_order_and_errors(store: IdentityStore, tmp_path: Path) -> None:
    dfx_dir = store.dfx_home / "identity" / "carol"
    dfx_dir.mkdir(parents=True)
    dfx_key = ec.generate_private_key(ec.SECP256K1())
    (dfx_dir / "identity.pem").write_bytes(dfx_secp256k1_pem(dfx_key))
    assert store.resolve("carol").secret == dfx_key.private_numbers().private_value.to_bytes(32, "big")
    ours = store.create("carol")  # ours shadows dfx's of the same name
    assert store.resolve("carol").secret == ours.secret
    assert store.resolve(str(dfx_dir / "identity.pem")).secret != ours.secret  # a path is a path

    encrypted = store.dfx_home / "identity" / "vault"
    encrypted.mkdir(parents=True)
    (encrypted / "identity.pem.encrypted").write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="dfx identity export vault"):
        store.resolve("vault")
    with pytest.raises(UserError, match="no identity named 'nobody'.*carol"):
        store.resolve("nobody")
    with pytest.raises(UserError, match="not a valid identity name"):
        store.resolve("bad name!")
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(UserError, match="garbage.pem holds no readable private key"):
        store.resolve(str(garbage))
    p256 = tmp_path / "p256.pem"
    p256.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(UserError, match="NIST256p key; identities are Ed25519 or secp256k1"):
        store.resolve(str(p256))


def test_default_identity_is_created_once(store: IdentityStore, capsys: pytest.CaptureFixture[str]) -> None:
    first = store.resolve(None)
    assert "created identity 'default'" in capsys.readouterr().err
    assert store.resolve(None).secret == first.secret
    assert capsys.readouterr().err == ""


def test_cli_new_use_whoami_list(store: IdentityStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["identity", "new", "dave", "--key-type", "ed25519"]) == 0
    created = capsys.readouterr().out
    principal = created.split("principal: ")[1].strip()
    assert main(["identity", "use", "dave"]) == 0
    assert json.loads((store.home / "identity.json").read_text()) == {"default": "dave"}
    capsys.readouterr()
    assert main(["identity", "whoami"]) == 0
    assert capsys.readouterr().out.strip() == principal
    assert main(["identity", "list"]) == 0
    assert "* dave" in capsys.readouterr().out
    assert main(["identity", "use", "erin"]) == 2
    assert "no identity named 'erin'" in capsys.readouterr().err
    assert json.loads((store.home / "identity.json").read_text()) == {"default": "dave"}  # unchanged
