"""Shared fixtures: real MQTT brokers, TLS certificates and the reference bundle.

* ``reference_bundle`` (session): the reference model converted once per run (LiteRT heads, tails, exits);
  reused from ``$SPLITEDGE_CACHE/test-reference-bundle`` when a valid one of the same model is there.

* ``mosquitto`` (session): one Mosquitto for the whole run - ``.url``, ``.host``, ``.port``.
* ``fresh_mosquitto`` (function): a private Mosquitto a test may stop, kill or restart.
* ``mosquitto_bin`` (session): the binary's path, for tests that start their own ``EmbeddedBroker``.
* ``amqtt_broker`` (session): the pure-Python amqtt broker (MQTT 3.1.1 only).
* ``tls_certs`` (function): a CA, a server cert for 127.0.0.1/localhost and a client cert.

Without Mosquitto on the machine the broker tests are skipped with the install command, unless
``SPLITEDGE_REQUIRE_BROKER=1`` (CI sets it), where they fail instead.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sdk.broker import EmbeddedBroker, amqtt_available, find_mosquitto

# Emulated board times in tests are the profiles' factors exactly (this host counted as the reference
# core), in this process and the ones it starts; tests/test_host_speed.py measures the real scale.
os.environ.setdefault("SPLITEDGE_HOST_SCALE", "1")

MOSQUITTO_INSTALL = "apt-get install mosquitto mosquitto-clients  (macOS: brew install mosquitto)"


def require_mosquitto() -> str:
    """The mosquitto binary, or skip (fail under ``SPLITEDGE_REQUIRE_BROKER=1``) with the install command."""
    path = find_mosquitto()
    if path is None:
        reason = f"mosquitto is not installed; install it with: {MOSQUITTO_INSTALL}"
        if os.environ.get("SPLITEDGE_REQUIRE_BROKER") == "1":
            pytest.fail(f"SPLITEDGE_REQUIRE_BROKER=1 but {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def mosquitto_bin() -> str:
    """Path of the mosquitto binary; skips (or fails under SPLITEDGE_REQUIRE_BROKER=1) without it."""
    return require_mosquitto()


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[EmbeddedBroker]:
    """A Mosquitto shared by the whole session; do not stop it (use ``fresh_mosquitto`` for that)."""
    require_mosquitto()
    with EmbeddedBroker(impl="mosquitto") as broker:
        yield broker


@pytest.fixture
def fresh_mosquitto() -> Iterator[EmbeddedBroker]:
    """A Mosquitto of this test alone: ``.stop()``, ``.kill()``, ``.restart()`` (same port) are fair game."""
    require_mosquitto()
    with EmbeddedBroker(impl="mosquitto") as broker:
        yield broker


@pytest.fixture(scope="session")
def amqtt_broker() -> Iterator[EmbeddedBroker]:
    """The pure-Python amqtt broker (MQTT 3.1.1 only); skipped if amqtt is not installed."""
    if not amqtt_available():
        pytest.skip("amqtt is not installed; pip install amqtt")
    with EmbeddedBroker(impl="amqtt") as broker:
        yield broker


# ---------------------------------------------------------------------------------------- TLS


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_certs(directory: Path, *, server_names: tuple[str, ...] = ("localhost",)) -> TlsFiles:
    """Write a throwaway CA, a server cert (``server_names`` + 127.0.0.1) and a client cert (PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = _dt.datetime.now(_dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("splitedge test CA"))
        .issuer_name(name("splitedge test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName] | None) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)

    san: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
    san.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    server_cert, server_key = leaf("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, san)
    client_cert, client_key = leaf("splitedge-test-device", ExtendedKeyUsageOID.CLIENT_AUTH, None)

    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server_cert)
    files.server_key.write_bytes(server_key)
    files.client_cert.write_bytes(client_cert)
    files.client_key.write_bytes(client_key)
    return files


@pytest.fixture
def tls_certs(tmp_path: Path) -> TlsFiles:
    """Fresh certificates in ``tmp_path/tls`` (EC P-256; a few milliseconds)."""
    return make_tls_certs(tmp_path / "tls")


@pytest.fixture(scope="session")
def reference_bundle() -> Path:
    """The path of a bundle of the committed reference model (built once, ~1-2 min on 2 cores)."""
    pytest.importorskip("tensorflow", reason="building the reference bundle needs splitedge[convert]")
    from converter.reference import build_reference_bundle

    root = Path(os.environ.get("SPLITEDGE_CACHE", Path.home() / ".cache" / "splitedge"))
    out = root / "test-reference-bundle"
    build_reference_bundle(out)
    return out
