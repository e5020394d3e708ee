"""``splitedge pki``: the CA, broker, device and worker certificates (their use on a real broker:
tests/test_tls_clients.py)."""

from __future__ import annotations

import datetime as dt
import re
import stat
from pathlib import Path

import pytest

from sdk import cli
from sdk.datafiles import shipped_path

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from sdk import pki  # noqa: E402


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
        return True
    except (ValueError, TypeError, Exception):  # InvalidSignature is not a ValueError
        return False


def test_init_makes_the_ca_the_broker_the_workers_and_the_devices(tmp_path, capsys) -> None:
    d = tmp_path / "pki"
    assert cli.main(["pki", "init", str(d), "--device", "pi4-01", "--server-name", "broker.example.com",
                     "--server-name", "10.0.0.5"]) == 0  # fmt: skip
    names = sorted(p.name for p in d.iterdir())
    assert names == sorted(f"{s}.{e}" for s in ("ca", "server", "splitedge-tail", "splitedge-fleet", "pi4-01")
                           for e in ("crt", "key"))  # fmt: skip
    for key in d.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    ca = load(d / "ca.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server = load(d / "server.crt")
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.example.com"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    for name in ("splitedge-tail", "splitedge-fleet", "pi4-01"):
        cert = load(d / f"{name}.crt")
        assert cn(cert) == name and signed_by(cert, ca)
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
            ExtendedKeyUsageOID.CLIENT_AUTH
        ]
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert cert.not_valid_after_utc - cert.not_valid_before_utc > dt.timedelta(days=800)
    out = capsys.readouterr().out
    assert "CN=pi4-01" in out and "ca.key" in out


def test_default_server_names_are_loopback(tmp_path) -> None:
    pki.create_ca(tmp_path)
    issued = pki.issue_server(tmp_path)
    san = load(issued.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_worker_names_are_the_acl_users() -> None:
    acl = shipped_path("mosquitto/acl").read_text(encoding="utf-8")
    assert tuple(re.findall(r"^user (\S+)$", acl, re.M)) == pki.WORKER_NAMES
    conf = shipped_path("mosquitto/cloud-tls.conf").read_text(encoding="utf-8")
    for name in ("ca.crt", "server.crt", "server.key"):  # the file names init writes
        assert f"/etc/mosquitto/splitedge/{name}" in conf


def test_a_device_added_later_is_signed_by_the_existing_ca(tmp_path) -> None:
    assert cli.main(["pki", "init", str(tmp_path)]) == 0
    ca_before = (tmp_path / "ca.crt").read_bytes()
    assert cli.main(["pki", "device", str(tmp_path), "zero2w-01", "pi5-07"]) == 0
    assert (tmp_path / "ca.crt").read_bytes() == ca_before
    ca = load(tmp_path / "ca.crt")
    for name in ("zero2w-01", "pi5-07"):
        assert signed_by(load(tmp_path / f"{name}.crt"), ca)
    key = tmp_path / "pi5-07.key"
    from cryptography.hazmat.primitives import serialization

    assert isinstance(serialization.load_pem_private_key(key.read_bytes(), None), ec.EllipticCurvePrivateKey)


def test_nothing_is_overwritten_without_force(tmp_path, capsys) -> None:
    assert cli.main(["pki", "init", str(tmp_path), "--device", "cam-1"]) == 0
    before = (tmp_path / "cam-1.crt").read_bytes()
    capsys.readouterr()
    assert cli.main(["pki", "device", str(tmp_path), "cam-1"]) == 1
    err = capsys.readouterr().err
    assert "cam-1.crt exists already; pass --force" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "cam-1.crt").read_bytes() == before
    assert cli.main(["pki", "init", str(tmp_path)]) == 1
    assert "ca.crt exists already" in capsys.readouterr().err
    assert cli.main(["pki", "device", str(tmp_path), "cam-1", "--force"]) == 0
    assert (tmp_path / "cam-1.crt").read_bytes() != before


def test_refusals_name_what_is_wrong(tmp_path, capsys) -> None:
    assert cli.main(["pki", "device", str(tmp_path / "nothing"), "pi4-01"]) == 1
    assert "ca.crt is missing; make one with `splitedge pki init" in capsys.readouterr().err
    assert cli.main(["pki", "init", str(tmp_path), "--device", "splitedge-tail"]) == 1
    assert "worker identity" in capsys.readouterr().err
    assert not (tmp_path / "ca.crt").exists()  # refused before anything was written
    assert cli.main(["pki", "init", str(tmp_path), "--device", "bad/id"]) == 1
    assert "identity 'bad/id'" in capsys.readouterr().err
    assert cli.main(["pki", "worker", str(tmp_path), "splitedge-other"]) == 1
    assert "splitedge-tail, splitedge-fleet" in capsys.readouterr().err
