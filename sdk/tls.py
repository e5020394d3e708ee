"""TLS and authentication for every client: one set of flags, one check of the files, one way to connect.

``splitedge device``, ``splitedge cloud`` and ``splitedge fleet`` all call these three, so their flags
and messages are the same (docs/TRANSPORT.md, "TLS and authentication"):

    add_broker_arguments(parser, default_url=...)   # --broker --ca-file --cert-file --key-file --username --password-file
    choice = broker_from_args(args, profile_broker, where=profile_path)   # flags override the profile; files checked
    transport = connect_transport(choice, client_id=..., will=...)       # an sdk.mqtt.MqttTransport

The flags are named after the profile's ``[broker]`` keys (``sdk.config.BrokerSettings``) and override
them one by one; an empty value (``--password-file ''``) removes the profile's. A client certificate from
the command line replaces the profile's password file: with a certificate no password is needed.

Everything that can be checked before connecting is checked at once, so a wrong path is one line naming
the file and the flag (or ``[broker]`` key) it came from, never a traceback or a retry loop: the files
exist and are readable, the CA and the certificate are PEM, the key belongs to the certificate, and the
certificate is valid now (its dates are read from the DER here, so the device needs no ``cryptography``).
What only the broker can tell (a CA that did not sign the broker's certificate, a client certificate it
refuses, a bad password) is told apart by :mod:`sdk.mqtt` as a :class:`~sdk.errors.BrokerAuthError`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import datetime as _dt
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sdk.config import BrokerSettings, _check_url
from sdk.errors import ConfigError, CredentialFileError

if TYPE_CHECKING:  # paho is imported only by connect_transport, through sdk.mqtt
    from sdk.mqtt import MqttTransport, TlsConfig
    from sdk.transport import Will

__all__ = [
    "BROKER_FLAGS",
    "BrokerChoice",
    "add_broker_arguments",
    "broker_from_args",
    "certificate_validity",
    "check_credential_files",
    "client_certificate_refused",
    "connect_transport",
    "handshake_refusal",
]

#: ``[broker]`` key -> the command-line flag that overrides it.
BROKER_FLAGS: dict[str, str] = {
    "ca_file": "--ca-file",
    "cert_file": "--cert-file",
    "key_file": "--key-file",
    "username": "--username",
    "password_file": "--password-file",
}
_PATH_KEYS = ("ca_file", "cert_file", "key_file", "password_file")
_WHAT = {
    "ca_file": "the CA certificate (PEM) that signed the broker's certificate",
    "cert_file": "this client's certificate (PEM), signed by the broker's CA",
    "key_file": "the private key (PEM) of the client certificate",
    "password_file": "a file whose first line is the broker password",
}
_PKI_HINT = "`splitedge pki` makes them (firmware_configs/README.md, 'Certificates')"
#: OpenSSL verify codes (X509_V_ERR_*) of a broker certificate the CA does not vouch for.
_NOT_OUR_CA = (2, 18, 19, 20, 21)
_EXPIRED, _NOT_YET_VALID, _HOSTNAME_MISMATCH = 10, 9, 62
#: TLS alerts a broker sends about our client certificate (the ends of Python's ssl reason names).
_CERT_ALERTS = ("ALERT_BAD_CERTIFICATE", "ALERT_UNKNOWN_CA", "ALERT_CERTIFICATE_REVOKED",
                "ALERT_CERTIFICATE_UNKNOWN", "ALERT_CERTIFICATE_EXPIRED", "ALERT_ACCESS_DENIED",
                "ALERT_UNSUPPORTED_CERTIFICATE", "ALERT_CERTIFICATE_REQUIRED", "ALERT_HANDSHAKE_FAILURE")  # fmt: skip


def add_broker_arguments(parser: argparse.ArgumentParser, *, default_url: str | None = None) -> None:
    """``--broker`` and the five credential flags, in a group of their own."""
    g = parser.add_argument_group(
        "broker", "where to connect and how to authenticate; each flag overrides the [broker] key of the same "
        "name, and an empty value ('') removes it"
    )  # fmt: skip
    url_help = f"broker URL (default {default_url})" if default_url else "override the broker URL"
    g.add_argument("--broker", default=default_url, metavar="URL", help=f"{url_help}: mqtt://HOST[:PORT] or mqtts://...")
    g.add_argument("--ca-file", metavar="PEM", help="CA certificate to verify the broker with (mqtts; default: system CAs)")
    g.add_argument("--cert-file", metavar="PEM", help="client certificate (mutual TLS; with --key-file; no password then)")
    g.add_argument("--key-file", metavar="PEM", help="private key of --cert-file")
    g.add_argument("--username", metavar="NAME", help="MQTT user name (use the device id, as the ACL does)")
    g.add_argument("--password-file", metavar="FILE", help="file whose first line is the password (needs --username)")


@dataclass(frozen=True, slots=True)
class BrokerChoice:
    """The broker settings a client will use, and where each credential came from (for messages)."""

    settings: BrokerSettings
    origins: Mapping[str, str] = field(default_factory=dict)

    def origin(self, key: str) -> str:
        """``--ca-file`` or ``[broker] ca_file in FILE``: where ``key``'s value was given."""
        return self.origins.get(key, f"[broker] {key}")

    def label(self, key: str, value: object) -> str:
        """``--ca-file PATH`` or ``[broker] ca_file = PATH in FILE``: a value and where it came from."""
        origin = self.origin(key)
        prefix = f"[broker] {key}"
        return f"{prefix} = {value}{origin[len(prefix):]}" if origin.startswith(prefix) else f"{origin} {value}"


def broker_from_args(
    args: argparse.Namespace, profile: BrokerSettings | None = None, *, where: str | None = None
) -> BrokerChoice:
    """The profile's ``[broker]`` (or a bare ``--broker`` URL) with the flags applied, its files checked.

    ``profile`` is the device's broker section, its URL already overridden (``sdk.config.with_overrides``);
    ``where`` names the profile file in messages. Raises ``ConfigError`` (``CredentialFileError`` for a
    file) naming the flag or key.
    """
    in_file = f" in {where}" if where else ""
    if profile is None:
        if not args.broker:
            raise ConfigError("no broker: pass --broker mqtt://HOST[:PORT] (or mqtts://... for TLS)")
        settings = BrokerSettings(url=_check_url(args.broker, "--broker"))
        origins: dict[str, str] = {"url": "--broker"}
    else:
        settings = profile
        origins = {key: f"[broker] {key}{in_file}" for key in ("url", *BROKER_FLAGS)}
        if getattr(args, "broker", None):
            origins["url"] = "--broker"
    changes: dict[str, object] = {}
    for key, flag in BROKER_FLAGS.items():
        value = getattr(args, key, None)
        if value is None:
            continue
        origins[key] = flag
        if value == "":
            changes[key] = None
        else:
            changes[key] = Path(value).expanduser().resolve() if key in _PATH_KEYS else value
    if changes.get("cert_file") and "password_file" not in changes:
        changes["password_file"] = None  # a client certificate is the credential: no password needed
    settings = dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
    choice = BrokerChoice(settings, origins)
    _check_combination(choice)
    check_credential_files(choice)
    return choice


def _check_combination(choice: BrokerChoice) -> None:
    b = choice.settings
    if (b.cert_file is None) != (b.key_file is None):
        given, missing = ("cert_file", "key_file") if b.key_file is None else ("key_file", "cert_file")
        raise ConfigError(
            f"{choice.origin(given)} is set but no {missing.replace('_', ' ')}: a client certificate needs "
            f"its key; pass {BROKER_FLAGS[missing]} too"
        )
    if b.password_file is not None and b.username is None:
        raise ConfigError(f"{choice.origin('password_file')} is set but no user name; pass --username NAME")
    tls_keys = [k for k in ("ca_file", "cert_file") if getattr(b, k) is not None]
    if tls_keys and not b.tls:
        raise ConfigError(
            f"{choice.origin(tls_keys[0])} is set but the broker URL {b.url} ({choice.origin('url')}) is plain "
            "mqtt://; use mqtts://HOST[:PORT] for TLS, or drop the certificate"
        )


def _pem_certificate(data: bytes) -> bytes:
    """The DER of the first ``CERTIFICATE`` block of a PEM file."""
    begin, end = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"
    start = data.find(begin)
    stop = data.find(end, start + 1)
    if start < 0 or stop < 0:
        raise ValueError("no -----BEGIN CERTIFICATE----- block")
    try:
        return base64.b64decode(b"".join(data[start + len(begin) : stop].split()), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64 in the certificate block ({exc})") from None


def _tlv(der: bytes, i: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at ``i``."""
    if i + 2 > len(der):
        raise ValueError("truncated DER")
    tag, n = der[i], der[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 4 or i + k > len(der):
            raise ValueError("bad DER length")
        n, i = int.from_bytes(der[i : i + k], "big"), i + k
    if i + n > len(der):
        raise ValueError("truncated DER")
    return tag, i, i + n


def _der_time(tag: int, raw: bytes) -> _dt.datetime:
    text = raw.decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ: 50..99 are 19xx (RFC 5280)
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError(f"unexpected time tag 0x{tag:02x}")
    return _dt.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=_dt.UTC)


def certificate_validity(pem: bytes) -> tuple[_dt.datetime, _dt.datetime]:
    """(notBefore, notAfter) of the first certificate of a PEM file, read from its DER (RFC 5280 4.1)."""
    der = _pem_certificate(pem)
    _, cert, _ = _tlv(der, 0)  # Certificate SEQUENCE
    _, i, _ = _tlv(der, cert)  # tbsCertificate SEQUENCE
    tag, _, end = _tlv(der, i)
    if tag == 0xA0:  # [0] version
        i = end
    for _ in range(3):  # serialNumber, signature, issuer
        i = _tlv(der, i)[2]
    _, v, _ = _tlv(der, i)  # validity SEQUENCE
    t1, s1, e1 = _tlv(der, v)
    t2, s2, e2 = _tlv(der, e1)
    return _der_time(t1, der[s1:e1]), _der_time(t2, der[s2:e2])


def check_credential_files(choice: BrokerChoice, *, now: _dt.datetime | None = None) -> None:
    """Every configured file exists, is readable and usable; ``CredentialFileError`` naming file + flag/key."""
    b = choice.settings
    for key in _PATH_KEYS:
        path: Path | None = getattr(b, key)
        if path is None:
            continue
        where = choice.label(key, path)
        if not path.exists():
            todo = (f"create it (chmod 600), or pass {BROKER_FLAGS[key]} '' to connect without a password"
                    if key == "password_file" else _PKI_HINT)  # fmt: skip
            raise CredentialFileError(f"{where}: no such file; expected {_WHAT[key]}; {todo}")
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as exc:
            raise CredentialFileError(
                f"{where}: cannot read it ({exc.strerror}); expected {_WHAT[key]}: let this user read it "
                "(e.g. chgrp splitedge, chmod 640)"
            ) from exc
    if b.ca_file is not None:
        try:
            ssl.create_default_context().load_verify_locations(cafile=str(b.ca_file))
        except ssl.SSLError as exc:
            raise CredentialFileError(
                f"{choice.label('ca_file', b.ca_file)}: not a PEM CA certificate ({exc.reason or exc}); "
                f"expected {_WHAT['ca_file']}"
            ) from exc
    if b.cert_file is not None and b.key_file is not None:
        _check_pair(choice, b.cert_file, b.key_file, now or _dt.datetime.now(_dt.UTC))


def _check_pair(choice: BrokerChoice, cert: Path, key: Path, now: _dt.datetime) -> None:
    cert_where, key_where = choice.label("cert_file", cert), choice.label("key_file", key)
    try:
        ssl.create_default_context(ssl.Purpose.SERVER_AUTH).load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        reason = str(exc.reason or exc)
        if "KEY_VALUES_MISMATCH" in reason:
            raise CredentialFileError(
                f"{key_where} is not the private key of {cert_where}; pass the key made with that certificate"
            ) from exc
        raise CredentialFileError(
            f"{cert_where} / {key_where}: not a PEM certificate and its unencrypted PEM key ({reason}); {_PKI_HINT}"
        ) from exc
    try:
        not_before, not_after = certificate_validity(cert.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CredentialFileError(f"{cert_where}: cannot read its validity dates ({exc})") from exc
    if now > not_after:
        raise CredentialFileError(
            f"{cert_where}: the client certificate expired on {not_after:%Y-%m-%d %H:%M} UTC (now "
            f"{now:%Y-%m-%d %H:%M}); issue a new one with `splitedge pki device DIR ID --force`"
        )
    if now < not_before:
        raise CredentialFileError(
            f"{cert_where}: the client certificate is not valid before {not_before:%Y-%m-%d %H:%M} UTC but "
            f"this machine's clock says {now:%Y-%m-%d %H:%M}; set the clock (NTP; a Pi has no RTC)"
        )


# ---------------------------------------------------------------------- what a refused handshake means


def handshake_refusal(exc: ssl.SSLError, tls: TlsConfig, host: str) -> tuple[str, str] | None:
    """(why, what to do) for a TLS handshake that failed over a certificate; None for other failures.

    Which side refused is told apart: our CA does not vouch for the broker's certificate (or it expired,
    or names another host) - we hung up; the broker refused our certificate (a TLS alert) - it hung up.
    """
    ca = f"the CA in {tls.ca}" if tls.ca else "the system CAs"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code, why = exc.verify_code, exc.verify_message
        if code in _NOT_OUR_CA:
            msg = (f"the broker's certificate is not signed by {ca} (verify error {code}: {why}); pass the CA "
                   "that signed it (--ca-file / [broker] ca_file), e.g. the ca.crt of `splitedge pki init`")
        elif code in (_EXPIRED, _NOT_YET_VALID):
            msg = (f"the broker's certificate is {'expired' if code == _EXPIRED else 'not yet valid'} ({why}); "
                   "renew it (`splitedge pki server DIR --force`) or check this machine's clock")
        elif code == _HOSTNAME_MISMATCH:
            msg = (f"the broker's certificate is not issued for {host!r} ({why}); connect by a name it lists, "
                   "or reissue it with `splitedge pki server DIR --server-name HOST --force`")
        else:
            msg = f"the broker's certificate was not accepted (verify error {code}: {why})"
        return msg, "nothing was sent; not retrying"
    reason = str(exc.reason or "")
    if any(reason.endswith(a) for a in _CERT_ALERTS):
        return client_certificate_refused(tls, f"TLS alert {reason}")
    return None


def client_certificate_refused(
    tls: TlsConfig | None, how: str, *, now: _dt.datetime | None = None
) -> tuple[str, str]:
    """(why, what to do) when the broker ended the TLS session over our certificate (``how`` it did).

    With TLS 1.3 a broker checks the client certificate after the handshake and just hangs up, so the
    reason is read from the certificate itself: expired, not yet valid, or else not one the broker trusts.
    """
    certfile = tls.certfile if tls is not None else None
    if certfile is None:
        return (f"the broker closed the TLS session ({how}): it requires a client certificate",
                "pass --cert-file and --key-file (or [broker] cert_file/key_file); not retrying")  # fmt: skip
    try:
        not_before, not_after = certificate_validity(Path(certfile).read_bytes())
    except (OSError, ValueError, UnicodeDecodeError):
        not_before = not_after = None
    now = now or _dt.datetime.now(_dt.UTC)
    if not_after is not None and now > not_after:
        return (f"the broker refused the client certificate {certfile} ({how}): it expired on "
                f"{not_after:%Y-%m-%d %H:%M} UTC", "issue a new one (`splitedge pki device DIR ID --force`); "
                "not retrying")  # fmt: skip
    if not_before is not None and now < not_before:
        return (f"the broker refused the client certificate {certfile} ({how}): it is not valid before "
                f"{not_before:%Y-%m-%d %H:%M} UTC", "set this machine's clock (NTP); not retrying")  # fmt: skip
    return (f"the broker refused the client certificate {certfile} ({how}): not signed by a CA the broker "
            "trusts (its cafile), or revoked", "issue it with the broker's CA (`splitedge pki device DIR ID`) "
            "and check the broker's log; not retrying")  # fmt: skip


def _read_password(choice: BrokerChoice) -> str | None:
    path = choice.settings.password_file
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialFileError(f"{choice.label('password_file', path)}: cannot read it ({exc})") from exc
    return text.splitlines()[0] if text else ""


def connect_transport(
    choice: BrokerChoice,
    *,
    client_id: str,
    will: Will | None = None,
    wait: bool = True,
    connect_timeout: float = 5.0,
) -> MqttTransport:
    """An :class:`~sdk.mqtt.MqttTransport` for ``choice``.

    ``wait=True``: connected, or ``BrokerUnavailableError`` (``BrokerAuthError`` when refused).
    ``wait=False`` (the device, which answers locally while the broker is away): returns after at most
    ``connect_timeout`` seconds, connected or still trying in the background; but a refusal that retrying
    cannot cure (TLS, credentials) is raised here, so a misconfigured device stops instead of looping.
    """
    import time

    from sdk.mqtt import MqttTransport, TlsConfig

    b = choice.settings
    tls = None
    if b.tls:
        tls = TlsConfig(
            ca=str(b.ca_file) if b.ca_file else None,
            certfile=str(b.cert_file) if b.cert_file else None,
            keyfile=str(b.key_file) if b.key_file else None,
        )
    transport = MqttTransport(
        b.url, client_id=client_id, username=b.username, password=_read_password(choice), tls=tls, will=will,
        keepalive=b.keepalive_s, wait_connected=wait, connect_timeout=connect_timeout,
    )  # fmt: skip
    if not wait:
        deadline = time.monotonic() + connect_timeout
        while not transport.connected and transport.failure is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if transport.failure is not None:
            transport.close()
            raise transport.failure
    return transport
