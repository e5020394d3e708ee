"""``splitedge pki``: the certificates the cloud broker's mutual TLS and its ACL rely on.

    splitedge pki init DIR [--server-name NAME ...] [--device ID ...] [--days N] [--force]
    splitedge pki device DIR ID [ID ...] [--days N] [--force]     # later, with the CA made by init
    splitedge pki worker DIR [NAME ...] [--days N] [--force]      # splitedge-tail, splitedge-fleet
    splitedge pki server DIR [--server-name NAME ...] [--days N] [--force]

``init`` makes a CA (``ca.crt``, ``ca.key``), the broker's certificate (``server.crt``, ``server.key``;
its subject alternative names are the ``--server-name`` hosts and IP addresses, default ``localhost``
and ``127.0.0.1``), one client certificate per worker identity of ``firmware_configs/mosquitto/acl``
(``splitedge-tail.crt``, ``splitedge-fleet.crt``) and one per ``--device`` (``pi4-01.crt``). A client
certificate's Common Name is its identity: ``cloud-tls.conf`` sets ``use_identity_as_username``, so
the CN is the MQTT user name the ACL's ``user`` blocks and ``%u`` patterns match. The file names
are the ones ``cloud-tls.conf`` and the board profiles expect (firmware_configs/README.md, "Certificates").

Keys are EC P-256, written 0600; certificates are SHA-256 signed. Nothing is overwritten without
``--force`` (replacing the CA invalidates every certificate it signed). Needs the ``cryptography``
package (``pip install 'splitedge[pki]'``); nothing else in splitedge does.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import ipaddress
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdk.errors import ConfigError, MissingDependencyError

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError.for_extra("cryptography", "pki") from _exc

__all__ = [
    "CA_DAYS",
    "LEAF_DAYS",
    "WORKER_NAMES",
    "Issued",
    "create_ca",
    "issue_client",
    "issue_server",
    "main",
    "parse_args",
]

#: The worker identities of firmware_configs/mosquitto/acl (its `user` blocks).
WORKER_NAMES = ("splitedge-tail", "splitedge-fleet")
CA_DAYS = 3650
#: 825 days: the longest validity that every TLS stack still accepts for a leaf certificate.
LEAF_DAYS = 825
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1")
_IDENTITY = re.compile(r"[A-Za-z0-9._-]{1,64}")  # sdk.config's device id: a topic level and a CN


@dataclass(frozen=True, slots=True)
class Issued:
    """One certificate written to disk: its files, subject CN and expiry."""

    cert: Path
    key: Path
    common_name: str
    not_valid_after: _dt.datetime

    def describe(self) -> str:
        return f"{self.cert} + {self.key.name} (CN={self.common_name}, valid until {self.not_valid_after:%Y-%m-%d})"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _check_free(paths: list[Path], force: bool, what: str) -> None:
    taken = [p for p in paths if p.exists()]
    if taken and not force:
        raise ConfigError(f"{taken[0]} exists already; pass --force to replace {what}, or pick another DIR")


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.unlink(missing_ok=True)
    fd = os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
    )  # never readable by others, not even briefly
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.chmod(0o644)


def _validity(days: int, now: _dt.datetime | None) -> tuple[_dt.datetime, _dt.datetime]:
    if days < 1:
        raise ConfigError(f"--days {days}: expected a validity of at least 1 day")
    start = (now or _dt.datetime.now(_dt.UTC)) - _dt.timedelta(minutes=5)  # clocks of small boards drift
    return start, start + _dt.timedelta(days=days)


def create_ca(
    folder: Path, *, common_name: str = "splitedge CA", days: int = CA_DAYS, force: bool = False
) -> Issued:
    """A self-signed CA, ``folder/ca.crt`` and ``folder/ca.key``; the folder is created (0700) if needed."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    crt, key_path = folder / "ca.crt", folder / "ca.key"
    _check_free([crt, key_path], force, "the CA (every certificate it signed stops being trusted)")
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(days, None)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(crt, cert)
    return Issued(crt, key_path, common_name, end)


def _load_ca(folder: Path) -> tuple[x509.Certificate, Any]:
    crt, key_path = folder / "ca.crt", folder / "ca.key"
    for path in (crt, key_path):
        if not path.is_file():
            raise ConfigError(
                f"no CA in {folder}: {path.name} is missing; make one with `splitedge pki init {folder}` "
                "(or point DIR at the folder that holds ca.crt and ca.key)"
            )
    try:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read the CA in {folder} (ca.crt / ca.key): {exc}") from exc
    return cert, key


def _issue(
    folder: Path, stem: str, common_name: str, usage: x509.ObjectIdentifier, *, days: int, force: bool,
    san: list[x509.GeneralName] | None = None, now: _dt.datetime | None = None,
) -> Issued:  # fmt: skip
    ca_cert, ca_key = _load_ca(folder)
    crt, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    _check_free([crt, key_path], force, f"the certificate of {common_name}")
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(days, now)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    _write_key(key_path, key)
    _write_cert(crt, builder.sign(ca_key, hashes.SHA256()))
    return Issued(crt, key_path, common_name, end)


def _san(names: tuple[str, ...]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9.*-]{0,252})", n):
                raise ConfigError(
                    f"--server-name {n!r}: expected a host name (broker.example.com) or an IP address"
                ) from None
            out.append(x509.DNSName(n))
    return out


def issue_server(
    folder: Path, names: tuple[str, ...] = DEFAULT_SERVER_NAMES, *, days: int = LEAF_DAYS, force: bool = False
) -> Issued:
    """The broker's certificate ``server.crt``/``server.key``, valid for ``names`` (host names and IPs)."""
    if not names:
        raise ConfigError("--server-name: give at least one host name or IP address the devices connect to")
    return _issue(folder, "server", names[0], ExtendedKeyUsageOID.SERVER_AUTH, days=days, force=force,
                  san=_san(names))  # fmt: skip


def _check_identity(identity: str) -> None:
    if not _IDENTITY.fullmatch(identity):
        raise ConfigError(
            f"identity {identity!r}: expected 1-64 characters from A-Z a-z 0-9 . _ - (a device id, e.g. pi4-01; "
            "it is the MQTT user name and a topic level)"
        )


def issue_client(
    folder: Path,
    identity: str,
    *,
    days: int = LEAF_DAYS,
    force: bool = False,
    now: _dt.datetime | None = None,
) -> Issued:
    """A client certificate ``IDENTITY.crt``/``IDENTITY.key`` with CN = ``identity`` (a device id or a worker name)."""
    _check_identity(identity)
    return _issue(
        folder, identity, identity, ExtendedKeyUsageOID.CLIENT_AUTH, days=days, force=force, now=now
    )


# ---------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="splitedge pki",
        description="Make the CA, broker, device and worker certificates for mutual TLS (firmware_configs/README.md).",
    )
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(q: argparse.ArgumentParser, days: int) -> None:
        q.add_argument("dir", type=Path, metavar="DIR", help="folder of ca.crt/ca.key and the certificates")
        q.add_argument("--days", type=int, default=days, help=f"validity in days (default {days})")
        q.add_argument("--force", action="store_true", help="replace existing files")

    def servers(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--server-name",
            action="append",
            dest="server_names",
            metavar="NAME",
            help="broker host name or IP the clients connect to (repeatable; default localhost, 127.0.0.1)",
        )

    q = sub.add_parser(
        "init", help="a new CA, the broker certificate, both worker certificates, and --device ones"
    )
    common(q, LEAF_DAYS)
    servers(q)
    q.add_argument(
        "--device",
        action="append",
        dest="devices",
        default=[],
        metavar="ID",
        help="also a certificate for this device id (repeatable)",
    )
    q.add_argument("--ca-name", default="splitedge CA", help="the CA's Common Name (default %(default)r)")
    q.add_argument("--ca-days", type=int, default=CA_DAYS, help=f"CA validity in days (default {CA_DAYS})")
    q = sub.add_parser("device", help="certificates for devices, signed by the CA in DIR")
    common(q, LEAF_DAYS)
    q.add_argument(
        "ids", nargs="+", metavar="ID", help="device id (its profile's [device] device_id), e.g. pi4-01"
    )
    q = sub.add_parser("worker", help="certificates for cloud tail workers / the fleet monitor")
    common(q, LEAF_DAYS)
    q.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"{' or '.join(WORKER_NAMES)} (default both: the ACL's worker users)",
    )
    q = sub.add_parser("server", help="a new broker certificate, signed by the CA in DIR")
    common(q, LEAF_DAYS)
    servers(q)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder: Path = args.dir
    issued: list[Issued] = []
    names = tuple(args.server_names or DEFAULT_SERVER_NAMES) if hasattr(args, "server_names") else ()
    if args.action == "init":
        reserved = [d for d in args.devices if d in WORKER_NAMES]
        if reserved:
            raise ConfigError(
                f"--device {reserved[0]}: that is a worker identity of the ACL; give devices other ids"
            )
        for d in args.devices:  # every refusal before anything is written
            _check_identity(d)
        _san(names)
        issued.append(create_ca(folder, common_name=args.ca_name, days=args.ca_days, force=args.force))
        issued.append(issue_server(folder, names, days=args.days, force=args.force))
        issued += [issue_client(folder, n, days=args.days, force=args.force) for n in WORKER_NAMES]
        issued += [issue_client(folder, d, days=args.days, force=args.force) for d in args.devices]
    elif args.action == "device":
        reserved = [d for d in args.ids if d in WORKER_NAMES]
        if reserved:
            raise ConfigError(
                f"device id {reserved[0]!r} is a worker identity of the ACL; use `splitedge pki worker`"
            )
        issued += [issue_client(folder, d, days=args.days, force=args.force) for d in args.ids]
    elif args.action == "worker":
        unknown = [n for n in args.names if n not in WORKER_NAMES]
        if unknown:
            raise ConfigError(
                f"worker {unknown[0]!r}: the ACL knows the workers {', '.join(WORKER_NAMES)} only"
            )
        issued += [
            issue_client(folder, n, days=args.days, force=args.force) for n in (args.names or WORKER_NAMES)
        ]
    else:
        issued.append(issue_server(folder, names, days=args.days, force=args.force))
    for item in issued:
        print(f"wrote {item.describe()}")
    print(
        f"next: the broker needs {folder}/ca.crt, server.crt, server.key (cloud-tls.conf); a device ID needs "
        "ca.crt, ID.crt, ID.key (as /etc/splitedge/ca.crt, device.crt, device.key); a worker NAME passes "
        f"--ca-file {folder}/ca.crt --cert-file {folder}/NAME.crt --key-file {folder}/NAME.key. "
        "Keep ca.key off the broker and the devices."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
