"""TLS and authentication on every client, against a real Mosquitto running the shipped cloud-tls.conf and ACL.

Certificates come from ``splitedge pki``; the broker is ``EmbeddedBroker(config="cloud-tls")`` (the shipped
file, only its port and /etc paths moved). A device (``splitedge device``), a tail worker (``splitedge cloud``)
and the fleet (``splitedge fleet``) connect with mutual TLS and a frame is answered; the ACL refuses a device
publishing on another device's topic; a wrong CA, an expired client certificate, a refused one and a missing
key each give their own one-line error and a non-zero exit, without a traceback or a retry loop.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdk import cli, topics
from sdk.broker import EmbeddedBroker
from sdk.errors import BrokerAuthError, CredentialFileError
from sdk.manifest import CutKind, load_manifest
from sdk.mqtt import MqttTransport, TlsConfig
from sdk.topics import TopicKind
from tests.tls_rig import cloud_tls_broker, make_pki, tls_client, tls_flags

pytest.importorskip("cryptography")


pytestmark = pytest.mark.broker
REPO = Path(__file__).resolve().parent.parent

PROFILE = """
[board]
name = "host"
cpu = "x86-64"
threads = 1
memory_budget_mb = 256
speed_factor = 1.0
speed_factor_source = "test: this machine"

[device]
device_id = "{device_id}"
source = "synthetic"
fps_cap = 50
deadline_ms = 5000
target_accuracy = 0.5
bits = [8]
telemetry_interval_s = 0.3

[broker]
url = "{url}"
ca_file = "{pki}/ca.crt"
cert_file = "{pki}/{device_id}.crt"
key_file = "{pki}/{device_id}.key"
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``splitedge pki init`` with two devices, plus a second, unrelated CA with its own pi4-01."""
    d = tmp_path_factory.mktemp("pki")
    make_pki(d / "ours", ["pi4-01", "pi4-02"])
    make_pki(d / "other", ["pi4-01"])
    return d


@pytest.fixture(scope="module")
def cloud_broker(certs: Path) -> Iterator[EmbeddedBroker]:
    with cloud_tls_broker(certs / "ours") as b:
        yield b



def test_the_shipped_config_has_one_listener_the_tls_one(cloud_broker: EmbeddedBroker) -> None:
    log = cloud_broker.log_text()
    assert log.count("Opening ipv4 listen socket") == 1, log  # no stray plain listener on 1883
    assert f"port {cloud_broker.port}" in log


def test_device_cloud_and_fleet_with_mutual_tls_answer_a_frame(
    reference_bundle: Path, cloud_broker: EmbeddedBroker, certs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ours = certs / "ours"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "sdk.cli", "cloud", "--bundle", str(reference_bundle), "--broker", cloud_broker.url,
         "--worker-id", "tls-w1", *tls_flags(ours, "splitedge-tail")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert worker.stdout is not None
        ready, _, _ = select.select([worker.stdout], [], [], 60)
        line = worker.stdout.readline() if ready else ""
        assert line.startswith("ready tls-w1"), line + (worker.stderr.read() if worker.poll() is not None else "")
        profile = tmp_path / "pi4-01.toml"
        profile.write_text(PROFILE.format(device_id="pi4-01", url=cloud_broker.url, pki=ours))
        out = tmp_path / "answers.jsonl"
        # The profile carries the certificates; one split cut pinned and an exit that never answers (tau 2):
        # every frame goes to the cloud.
        split = next(c.index for c in load_manifest(reference_bundle).cuts if c.kind is CutKind.SPLIT)
        code = cli.main(["device", "--bundle", str(reference_bundle), "--config", str(profile), "--frames", "3",
                         "--out", str(out), "--tau", "2.0", "--cut", str(split), "--probe-every", "0"])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        answers = [json.loads(x) for x in out.read_text().splitlines()]
        assert [a["answered_by"] for a in answers] == ["cloud"] * 3, answers
        capsys.readouterr()
        code = cli.main(["fleet", "--broker", cloud_broker.url, *tls_flags(ours, "splitedge-fleet"),
                         "--json", "--once", "--timeout", "0.5"])  # fmt: skip
        assert code == 0
        seen = {d["device_id"]: d for d in json.loads(capsys.readouterr().out)["devices"]}
        assert seen["pi4-01"]["online"] is False  # its retained status, readable by the fleet identity
    finally:
        worker.terminate()
        worker.wait(10)


def test_the_acl_refuses_a_device_on_another_devices_topic(cloud_broker: EmbeddedBroker, certs: Path) -> None:
    ours = certs / "ours"
    tail, a, b = (tls_client(cloud_broker, ours, n) for n in ("splitedge-tail", "pi4-01", "pi4-02"))
    got: list[tuple[str, bytes]] = []
    try:
        tail.subscribe(topics.shared_filter("acl"), lambda m: got.append((m.topic, m.payload)), qos=1)
        a.publish(topics.topic("pi4-02", TopicKind.ACT), b"forged", qos=1)  # silently dropped by the ACL
        a.publish(topics.topic("pi4-01", TopicKind.ACT), b"mine", qos=1)
        b.publish(topics.topic("pi4-02", TopicKind.ACT), b"theirs", qos=1)
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        assert sorted(got) == [("splitedge/v1/pi4-01/act", b"mine"), ("splitedge/v1/pi4-02/act", b"theirs")]
    finally:
        for t in (tail, a, b):
            t.close()


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    capsys.readouterr()
    started = time.monotonic()
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0, err
    assert time.monotonic() - started < 15, "a refusal must not be retried"
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def fleet_argv(broker: EmbeddedBroker, flags: list[str]) -> list[str]:
    return ["fleet", "--broker", broker.url, *flags, "--once", "--timeout", "0.1"]


def test_a_wrong_ca_is_named(cloud_broker: EmbeddedBroker, certs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other, ours = certs / "other", certs / "ours"
    flags = ["--ca-file", str(other / "ca.crt"), "--cert-file", str(ours / "splitedge-fleet.crt"),
             "--key-file", str(ours / "splitedge-fleet.key")]  # fmt: skip
    err = one_line_error(capsys, fleet_argv(cloud_broker, flags))
    assert f"the broker's certificate is not signed by the CA in {other / 'ca.crt'}" in err, err
    assert "client certificate" not in err.split("not signed by")[0]


def expired_cert(folder: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A client certificate signed by the broker's CA whose not_valid_after is in the past (made with cryptography)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pi4-01")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    crt, k = tmp_path / "old.crt", tmp_path / "old.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))  # fmt: skip
    return crt, k


def test_an_expired_client_certificate_is_named(
    cloud_broker: EmbeddedBroker, certs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ours = certs / "ours"
    crt, key = expired_cert(ours, tmp_path)
    flags = ["--ca-file", str(ours / "ca.crt"), "--cert-file", str(crt), "--key-file", str(key)]
    err = one_line_error(capsys, fleet_argv(cloud_broker, flags))
    assert f"--cert-file {crt}: the client certificate expired on" in err, err
    # Past the local check, the broker refuses it too, and the transport says why from the certificate.
    with pytest.raises(BrokerAuthError, match=r"refused the client certificate .*old\.crt.*: it expired on"):
        MqttTransport(cloud_broker.url, tls=TlsConfig(str(ours / "ca.crt"), str(crt), str(key)))


def test_a_refused_client_certificate_is_named(
    cloud_broker: EmbeddedBroker, certs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ours, other = certs / "ours", certs / "other"  # other/pi4-01.crt is signed by a CA the broker does not trust
    flags = ["--ca-file", str(ours / "ca.crt"), "--cert-file", str(other / "pi4-01.crt"),
             "--key-file", str(other / "pi4-01.key")]  # fmt: skip
    err = one_line_error(capsys, fleet_argv(cloud_broker, flags))
    assert f"the broker refused the client certificate {other / 'pi4-01.crt'}" in err, err
    assert "not signed by a CA the broker trusts" in err and "expired" not in err


def test_a_missing_key_file_is_named_and_the_device_does_not_retry(
    reference_bundle: Path, cloud_broker: EmbeddedBroker, certs: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    ours = certs / "ours"
    missing = tmp_path / "nope.key"
    flags = [*tls_flags(ours, "splitedge-fleet")[:4], "--key-file", str(missing)]
    err = one_line_error(capsys, fleet_argv(cloud_broker, flags))
    assert err.startswith(f"splitedge fleet: error: --key-file {missing}: no such file"), err
    # The device: the profile's key file is absent -> named with its [broker] key and the profile, exit 1.
    profile = tmp_path / "pi4-02.toml"
    profile.write_text(PROFILE.format(device_id="pi4-02", url=cloud_broker.url, pki=ours).replace(
        f"{ours}/pi4-02.key", str(missing)))  # fmt: skip
    argv = ["device", "--bundle", str(reference_bundle), "--config", str(profile), "--frames", "1"]
    err = one_line_error(capsys, argv)
    assert f"[broker] key_file = {missing} in {profile}: no such file" in err, err
    # ... and the flag overrides the profile: the right key on the command line makes it run.
    assert cli.main([*argv, "--key-file", str(ours / "pi4-02.key"), "--out", str(tmp_path / "a.jsonl")]) == 0


def test_a_refusal_stops_the_devices_background_connect(cloud_broker: EmbeddedBroker, certs: Path) -> None:
    other = certs / "other"
    t = MqttTransport(cloud_broker.url, tls=TlsConfig(str(other / "ca.crt")), wait_connected=False,
                      reconnect_max_delay=0.2)  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        while t.failure is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert isinstance(t.failure, BrokerAuthError) and "not signed by" in str(t.failure)
    finally:
        t.close()


def test_a_missing_file_is_a_credential_error_in_the_transport_too(certs: Path, tmp_path: Path) -> None:
    with pytest.raises(CredentialFileError, match=r"TLS client key .*nope\.key: no such file"):
        MqttTransport("mqtts://127.0.0.1:1", tls=TlsConfig(str(certs / "ours" / "ca.crt"),
                                                          str(certs / "ours" / "pi4-01.crt"), str(tmp_path / "nope.key")))
