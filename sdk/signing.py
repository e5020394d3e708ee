"""Signed bundles: an Ed25519 signature over the exact bytes of ``manifest.json``, in ``manifest.sig``.

The manifest already holds the sha256 of every model file, so signing its bytes covers the whole bundle;
the signature lives in a detached file so no hash changes. Whoever can write the bundle folder can
rewrite a head *and* its hash, but cannot forge the signature without the private key::

    BUNDLE/manifest.sig   {"algorithm": "ed25519", "key": "SHA256:<16 hex>", "signature": "<base64>"}

``key`` is the signer's fingerprint (the first 16 hex digits of the sha256 of the raw 32-byte public key):
it is only a hint for the message; verification uses the trusted key alone. ``cryptography`` is imported
lazily, only when signing or ``--trust`` is used, so the device side keeps its small dependency set.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from sdk.errors import BundleSignatureError, ConfigError, MissingDependencyError

SIGNATURE_NAME = "manifest.sig"
ALGORITHM = "ed25519"

__all__ = [
    "ALGORITHM",
    "SIGNATURE_NAME",
    "fingerprint",
    "load_private_key",
    "load_public_key",
    "new_key_pair",
    "sign_bundle",
    "verify_manifest_bytes",
]


def _crypto() -> Any:
    """The cryptography modules used here, or MissingDependencyError naming the extra."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise MissingDependencyError.for_extra("cryptography (signed bundles)", "device") from exc
    return serialization, ed25519


def fingerprint(public_key: Any) -> str:
    """``SHA256:`` + the first 16 hex digits of the sha256 of the raw public key: names a key in messages."""
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + hashlib.sha256(raw).hexdigest()[:16]


def _read_pem(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist; make a key pair with 'splitedge sign --new-key KEY.pem'") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read ({exc.strerror}); check its permissions") from None


def load_private_key(path: str | Path) -> Any:
    """An Ed25519 private key from an unencrypted PEM file (``--sign-key``); ConfigError naming the file otherwise."""
    serialization, ed25519 = _crypto()
    data = _read_pem(Path(path), "signing key (--sign-key)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"signing key (--sign-key) {path} is not an unencrypted PEM private key ({exc}); "
                          "make one with 'splitedge sign --new-key KEY.pem'") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"signing key (--sign-key) {path} is a {type(key).__name__}, expected an Ed25519 key; "
                          "make one with 'splitedge sign --new-key KEY.pem'")
    return key


def load_public_key(path: str | Path) -> Any:
    """An Ed25519 public key from a PEM file (``--trust``); ConfigError naming the file otherwise."""
    serialization, ed25519 = _crypto()
    data = _read_pem(Path(path), "trusted key (--trust or [device] trust)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"trusted key (--trust or [device] trust) {path} is not a PEM public key ({exc}); pass the KEY.pub.pem "
                          "written by 'splitedge sign --new-key KEY.pem'") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"trusted key (--trust or [device] trust) {path} is a {type(key).__name__}, expected an Ed25519 public key "
                          "(KEY.pub.pem from 'splitedge sign --new-key KEY.pem')")
    return key


def new_key_pair(path: str | Path) -> tuple[Path, Path]:
    """Write a new Ed25519 private key to PATH (mode 0600) and its public key to PATH's stem + ``.pub.pem``.

    Refuses to overwrite either file: a lost signing key means re-signing every bundle and re-installing the
    public key on every device.
    """
    serialization, ed25519 = _crypto()
    private = Path(path)
    public = private.with_name(private.name.removesuffix(".pem") + ".pub.pem")
    for p in (private, public):
        if p.exists():
            raise ConfigError(f"{p} exists; refusing to overwrite a key (move it away or choose another name)")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def sign_bundle(bundle: str | Path, key: str | Path | Any) -> Path:
    """Sign BUNDLE/manifest.json's exact bytes with ``key`` (a PEM path or a loaded key); write manifest.sig."""
    from sdk.manifest import MANIFEST_NAME, load_manifest

    root = Path(bundle)
    private = load_private_key(key) if isinstance(key, str | Path) else key
    load_manifest(root)  # sign only a bundle that loads and hash-checks
    data = (root / MANIFEST_NAME).read_bytes()
    doc = {
        "algorithm": ALGORITHM,
        "key": fingerprint(private.public_key()),
        "signature": base64.b64encode(private.sign(data)).decode("ascii"),
    }
    out = root / SIGNATURE_NAME
    out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return out


def verify_manifest_bytes(root: Path, data: bytes, trust: str | Path) -> None:
    """Raise BundleSignatureError unless ROOT/manifest.sig is a valid signature of ``data`` by the key in ``trust``.

    ``data`` are the manifest bytes the caller goes on to parse, so what is checked is what is used.
    """
    public = load_public_key(trust)
    expected = fingerprint(public)
    sig_path = root / SIGNATURE_NAME
    who = f"trusted key {trust} ({expected})"
    if not sig_path.is_file():
        raise BundleSignatureError(
            f"bundle {root} has no {SIGNATURE_NAME}, and --trust requires a bundle signed by the {who}; "
            f"sign it with 'splitedge sign {root} --sign-key KEY.pem' (the private key of that public key)"
        )
    try:
        doc = json.loads(sig_path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict):
            raise TypeError("not a JSON object")
        algorithm, signer, signature = doc["algorithm"], str(doc.get("key", "?")), base64.b64decode(doc["signature"])
    except (UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
        raise BundleSignatureError(
            f"{sig_path} is not a splitedge signature ({type(exc).__name__}: {exc}); expected JSON with "
            f"algorithm/key/signature from 'splitedge sign'; re-sign the bundle with the private key of the {who}"
        ) from None
    if algorithm != ALGORITHM:
        raise BundleSignatureError(f"{sig_path}: algorithm {algorithm!r}, expected {ALGORITHM!r}; re-sign the bundle "
                                   f"with 'splitedge sign' and the private key of the {who}")
    from cryptography.exceptions import InvalidSignature

    try:
        public.verify(signature, data)
    except InvalidSignature:
        cause = (f"it was signed by key {signer}, not the {who}: pass the matching --trust key or re-sign"
                 if signer != expected else
                 "the manifest was modified after signing (a file or hash replaced): copy the bundle again from "
                 "its source, or re-sign it if the change is yours")
        raise BundleSignatureError(f"bundle {root}: {SIGNATURE_NAME} does not verify against the {who}; {cause}") from None
