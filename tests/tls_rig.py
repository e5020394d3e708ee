"""The mutual-TLS rig the live tests share: a ``splitedge pki init`` folder, the shipped ``cloud-tls``
Mosquitto config (TLS listener + ACL) on its server certificate, and the clients' flags and transports.

Four test modules (TLS clients, rollout over MQTT, fleet metrics, store-and-forward) each wrote this setup out;
it lives here once. Certificates are real (``sdk.pki`` through the CLI); the broker is a real Mosquitto.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from sdk import cli
from sdk.broker import BrokerTls, EmbeddedBroker
from sdk.mqtt import MqttTransport, TlsConfig
from tests.conftest import require_mosquitto

__all__ = ["cloud_tls_broker", "make_pki", "tls_client", "tls_config", "tls_flags"]


def make_pki(folder: Path, devices: Iterable[str]) -> Path:
    """``splitedge pki init FOLDER --device D...``: a CA, the broker's, the tail's, the fleet's and each device's
    certificate and key (firmware_configs/README.md)."""
    assert cli.main(["pki", "init", str(folder), *[a for d in devices for a in ("--device", d)]]) == 0
    return folder


def cloud_tls_broker(pki: Path) -> EmbeddedBroker:
    """The shipped cloud-tls config on ``pki``'s server certificate (a context manager; skips without mosquitto)."""
    require_mosquitto()
    return EmbeddedBroker(config="cloud-tls", tls=BrokerTls(pki / "ca.crt", pki / "server.crt", pki / "server.key"))


def tls_flags(pki: Path, name: str) -> list[str]:
    """The CLI flags of identity ``name`` (a device id, ``splitedge-tail``, ``splitedge-fleet``)."""
    return ["--ca-file", str(pki / "ca.crt"), "--cert-file", str(pki / f"{name}.crt"),
            "--key-file", str(pki / f"{name}.key")]  # fmt: skip


def tls_config(pki: Path, name: str) -> TlsConfig:
    return TlsConfig(str(pki / "ca.crt"), str(pki / f"{name}.crt"), str(pki / f"{name}.key"))


def tls_client(broker: EmbeddedBroker, pki: Path, name: str, *, client_id: str | None = None,
               **kwargs: object) -> MqttTransport:
    """A transport with identity ``name``'s certificate (client id ``test-NAME-PID`` unless given)."""
    kwargs.setdefault("reconnect_max_delay", 0.5)
    return MqttTransport(broker.url, client_id=client_id or f"test-{name}-{os.getpid()}", tls=tls_config(pki, name),
                         **kwargs)  # type: ignore[arg-type]
