"""sdk.broker: EmbeddedBroker lifecycle and the `splitedge broker` command."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sdk import broker as broker_mod
from sdk.broker import BrokerTls, EmbeddedBroker, free_port
from sdk.errors import BrokerUnavailableError, MissingDependencyError

pytestmark = pytest.mark.broker
REPO = Path(__file__).resolve().parents[1]


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_mosquitto_lifecycle_same_port(mosquitto_bin):
    b = EmbeddedBroker(impl="mosquitto")
    assert not b.running
    with b:
        assert b.impl == "mosquitto" and b.running
        assert b.url == f"mqtt://127.0.0.1:{b.port}" and accepts(b.port)
        first_pid = b.pid
        b.kill()
        assert not b.running and not accepts(b.port)
        b.restart()
        assert b.running and accepts(b.port) and b.pid != first_pid
        assert "mosquitto version" in b.log_text()
    assert not b.running and b.log_text() == ""  # closed: temp folder removed


def test_config_is_the_documented_one(mosquitto_bin):
    with EmbeddedBroker(impl="mosquitto", max_packet_size=4096) as b:
        log = b.log_text()
        assert "Error" not in log, log
        assert b.tls_url is None


def test_start_refuses_a_port_already_taken(mosquitto):
    clash = EmbeddedBroker(impl="mosquitto", port=mosquitto.port)
    try:
        with pytest.raises(BrokerUnavailableError, match=rf"127\.0\.0\.1:{mosquitto.port}: something already"):
            clash.start()
    finally:
        clash.close()


def test_broker_failing_to_start_reports_its_log(mosquitto_bin, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    b = EmbeddedBroker(impl="mosquitto", tls=BrokerTls(junk, junk, junk), startup_timeout=5)
    try:
        with pytest.raises(BrokerUnavailableError, match=r"did not start listening(.|\n)*Error") as info:
            b.start()
    finally:
        b.close()
    assert "its log" in str(info.value)
    assert not b.running and b.log_text() == ""  # nothing left behind


def test_missing_mosquitto_is_explained(monkeypatch):
    monkeypatch.setattr(broker_mod, "find_mosquitto", lambda: None)
    with pytest.raises(MissingDependencyError, match="apt-get install mosquitto"):
        EmbeddedBroker(impl="mosquitto")
    with pytest.raises(MissingDependencyError, match="max_packet_size need it"):
        EmbeddedBroker(impl="auto", max_packet_size=4096)


def test_auto_falls_back_to_amqtt_without_mosquitto(monkeypatch, capsys):
    if not broker_mod.amqtt_available():
        pytest.skip("amqtt is not installed")
    monkeypatch.setattr(broker_mod, "find_mosquitto", lambda: None)
    with EmbeddedBroker(impl="auto") as b:
        assert b.impl == "amqtt" and accepts(b.port)
    assert "using the pure-Python amqtt broker" in capsys.readouterr().err


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="impl"):
        EmbeddedBroker(impl="rabbit")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_packet_size"):
        EmbeddedBroker(max_packet_size=3)


def test_cli_refuses_a_busy_port(mosquitto, capsys):
    assert broker_mod.main(["--port", str(mosquitto.port)]) == 1
    assert "already in use" in capsys.readouterr().err


def test_cli_runs_in_foreground_and_stops_on_ctrl_c(mosquitto_bin):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdk.cli", "broker", "--port", str(port), "--impl", "mosquitto"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )
    try:
        line = proc.stdout.readline()
        assert f"mqtt://127.0.0.1:{port}" in line, line + proc.stderr.read()
        assert accepts(port)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "broker stopped" in out
    assert not accepts(port)


def test_public_api_is_pinned():
    assert sorted(broker_mod.__all__) == sorted(
        ["BrokerTls", "EmbeddedBroker", "find_mosquitto", "free_port", "main", "parse_args"]
    )
