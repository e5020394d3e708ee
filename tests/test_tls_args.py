"""sdk/tls.py without a broker: how the flags override a profile, what is checked before connecting, and
what a refused handshake is said to mean (the real broker: tests/test_tls_clients.py)."""

from __future__ import annotations

import argparse
import datetime as dt
import ssl
from pathlib import Path

import pytest

from sdk import tls as tls_mod
from sdk.config import load_board, with_overrides
from sdk.errors import ConfigError, CredentialFileError
from sdk.mqtt import TlsConfig
from sdk.tls import add_broker_arguments, broker_from_args, certificate_validity, client_certificate_refused

pytest.importorskip("cryptography")
from cryptography import x509  # noqa: E402

from sdk import pki  # noqa: E402


def parse(argv: list[str], default_url: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_broker_arguments(p, default_url=default_url)
    return p.parse_args(argv)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    pki.create_ca(d)
    pki.issue_server(d)
    pki.issue_client(d, "zero2w-01")
    return d


def test_the_flags_are_named_after_the_broker_keys() -> None:
    args = parse(["--ca-file", "a", "--cert-file", "b", "--key-file", "c", "--username", "u", "--password-file", "p"])
    assert {k: getattr(args, k) for k in tls_mod.BROKER_FLAGS} == {
        "ca_file": "a", "cert_file": "b", "key_file": "c", "username": "u", "password_file": "p"
    }  # fmt: skip
    assert all(flag == "--" + key.replace("_", "-") for key, flag in tls_mod.BROKER_FLAGS.items())


def test_a_client_certificate_replaces_the_profiles_password_file(certs: Path) -> None:
    cfg = with_overrides(load_board("zero2w"), broker_url="mqtts://127.0.0.1:18883")
    assert cfg.broker.password_file is not None  # the profile's: /etc/splitedge/broker.password, absent here
    with pytest.raises(CredentialFileError, match=r"\[broker\] ca_file = /etc/splitedge/ca.crt in .*zero2w\.toml: no"):
        broker_from_args(parse([]), cfg.broker, where=str(cfg.path))
    msg = r"\[broker\] password_file = /etc/splitedge/broker.password in .*zero2w\.toml: no such file.*--password-file ''"
    with pytest.raises(CredentialFileError, match=msg):
        broker_from_args(parse(["--ca-file", str(certs / "ca.crt")]), cfg.broker, where=str(cfg.path))
    flags = ["--ca-file", str(certs / "ca.crt"), "--cert-file", str(certs / "zero2w-01.crt"),
             "--key-file", str(certs / "zero2w-01.key")]  # fmt: skip
    choice = broker_from_args(parse(flags), cfg.broker, where=str(cfg.path))
    b = choice.settings
    assert b.password_file is None and b.cert_file == certs / "zero2w-01.crt" and b.ca_file == certs / "ca.crt"
    assert choice.origin("cert_file") == "--cert-file" and choice.origin("keepalive_s").startswith("[broker]")


def test_an_empty_flag_removes_the_profiles_value() -> None:
    cfg = with_overrides(load_board("zero2w"), broker_url="mqtt://127.0.0.1:18830")  # a local dev broker
    b = broker_from_args(parse(["--password-file", "", "--username", ""]), cfg.broker).settings
    assert (b.username, b.password_file, b.ca_file) == (None, None, None)


def test_combinations_refused_by_name(certs: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--cert-file is set but no key file.*--key-file"):
        broker_from_args(parse(["--broker", "mqtts://h", "--cert-file", str(certs / "zero2w-01.crt")]))
    with pytest.raises(ConfigError, match=r"--password-file is set but no user name"):
        broker_from_args(parse(["--broker", "mqtt://h", "--password-file", "p"]))
    with pytest.raises(ConfigError, match=r"--ca-file is set but the broker URL mqtt://h \(--broker\) is plain"):
        broker_from_args(parse(["--ca-file", str(certs / "ca.crt")], default_url="mqtt://h"))
    with pytest.raises(ConfigError, match=r"\[broker\] url = 'ftp://h' in --broker"):
        broker_from_args(parse(["--broker", "ftp://h"]))


def test_files_checked_before_connecting(certs: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(CredentialFileError, match=r"--ca-file .*junk\.pem: not a PEM CA certificate"):
        broker_from_args(parse(["--broker", "mqtts://h", "--ca-file", str(junk)]))
    pki.issue_client(certs, "other-01", force=True)
    with pytest.raises(CredentialFileError, match=r"--key-file .*other-01\.key is not the private key of --cert-file"):
        broker_from_args(parse(["--broker", "mqtts://h", "--cert-file", str(certs / "zero2w-01.crt"),
                                "--key-file", str(certs / "other-01.key")]))  # fmt: skip
    folder = tmp_path / "dir.pem"
    folder.mkdir()
    with pytest.raises(CredentialFileError, match=r"--ca-file .*dir\.pem: cannot read it"):
        broker_from_args(parse(["--broker", "mqtts://h", "--ca-file", str(folder)]))


def test_a_certificate_not_yet_valid_blames_the_clock(certs: Path) -> None:
    later = pki.issue_client(certs, "future-01", now=dt.datetime.now(dt.UTC) + dt.timedelta(days=3), force=True)
    with pytest.raises(CredentialFileError, match=r"not valid before .* set the clock \(NTP; a Pi has no RTC\)"):
        broker_from_args(parse(["--broker", "mqtts://h", "--cert-file", str(later.cert), "--key-file", str(later.key)]))


def test_certificate_validity_reads_the_der_as_cryptography_does(certs: Path) -> None:
    for path in (certs / "ca.crt", certs / "server.crt", certs / "zero2w-01.crt"):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        assert certificate_validity(path.read_bytes()) == (cert.not_valid_before_utc, cert.not_valid_after_utc)
    with pytest.raises(ValueError, match="no -----BEGIN CERTIFICATE"):
        certificate_validity(b"junk")


def test_what_a_refusal_is_said_to_mean(certs: Path) -> None:
    cfg = TlsConfig(str(certs / "ca.crt"), str(certs / "zero2w-01.crt"), str(certs / "zero2w-01.key"))
    why, todo = client_certificate_refused(cfg, "EOF")
    assert "refused the client certificate" in why and "not signed by a CA the broker trusts" in why
    why, _ = client_certificate_refused(cfg, "EOF", now=dt.datetime.now(dt.UTC) + dt.timedelta(days=5000))
    assert "it expired on" in why
    why, todo = client_certificate_refused(TlsConfig(str(certs / "ca.crt")), "EOF")
    assert "requires a client certificate" in why and "--cert-file" in todo

    def verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
        exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
        exc.verify_code, exc.verify_message = code, message
        return exc

    table = {
        19: "is not signed by the CA in",
        20: "is not signed by the CA in",
        10: "is expired",
        62: "is not issued for 'h'",
    }
    for code, expected in table.items():
        explained = tls_mod.handshake_refusal(verify_error(code, "x"), cfg, "h")
        assert explained is not None and expected in explained[0], (code, explained)
    alert = ssl.SSLError(1, "sslv3 alert certificate expired")
    alert.reason = "SSLV3_ALERT_CERTIFICATE_EXPIRED"
    explained = tls_mod.handshake_refusal(alert, cfg, "h")
    assert explained is not None and "refused the client certificate" in explained[0]
    other = ssl.SSLError(1, "wrong version number")
    other.reason = "WRONG_VERSION_NUMBER"
    assert tls_mod.handshake_refusal(other, cfg, "h") is None  # not a certificate matter: retried
