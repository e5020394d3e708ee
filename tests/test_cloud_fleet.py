"""`splitedge fleet` against a real Mosquitto: telemetry of two fake devices, and a killed one shows offline."""

from __future__ import annotations

import json
import threading
import time

import pytest

from cloud_tail import fleet
from cloud_tail.fleet import FleetView
from sdk.messages import StatusMessage, TelemetryMessage
from sdk.mqtt import MqttTransport
from sdk.topics import TopicKind, topic
from sdk.transport import InMemoryHub, status_will


def telemetry(device: str, fps: float) -> bytes:
    return TelemetryMessage(device_id=device, ts=time.time(), cut=17, fps=fps, exit_rate=0.25, bytes_per_s=9000.0,
                            bandwidth_estimate=125000.0, p50_ms=12.0, p95_ms=30.5, errors=1, queue_depth=0,
                            emulated=False, bits=4).to_bytes()  # fmt: skip


class FakeDevice:
    def __init__(self, url: str, device_id: str, fps: float) -> None:
        self.id, self.fps = device_id, fps
        will = status_will(device_id, StatusMessage(device_id, False, time.time()).to_bytes())
        self.t = MqttTransport(url, client_id=f"fleet-test-{device_id}", will=will)
        self.t.publish(topic(device_id, TopicKind.STATUS), StatusMessage(device_id, True, time.time()).to_bytes(),
                       qos=1, retain=True)  # fmt: skip
        self.alive = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while self.alive:
            try:
                self.t.publish(topic(self.id, TopicKind.TELEMETRY), telemetry(self.id, self.fps))
            except Exception:  # noqa: BLE001 - killed mid-publish
                return
            time.sleep(0.1)

    def kill(self) -> None:
        self.alive = False
        self.thread.join(2)
        self.t.kill()


def run_fleet(url: str, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert fleet.main(["--broker", url, "--json", "--once", "--timeout", "0.6"]) == 0
    out = json.loads(capsys.readouterr().out)
    return {d["device_id"]: d for d in out["devices"]}


def test_fleet_shows_telemetry_and_a_killed_device_offline(fresh_mosquitto, capsys) -> None:
    devices = [FakeDevice(fresh_mosquitto.url, "cam-a", 10.0), FakeDevice(fresh_mosquitto.url, "cam-b", 5.0)]
    try:
        seen = run_fleet(fresh_mosquitto.url, capsys)
        assert set(seen) == {"cam-a", "cam-b"}
        for d in devices:
            assert seen[d.id]["online"] is True
            t = seen[d.id]["telemetry"]
            assert (t["fps"], t["cut"], t["p95_ms"], t["bandwidth_estimate"]) == (d.fps, 17, 30.5, 125000.0)
        devices[1].kill()  # no DISCONNECT: the broker publishes its last will (retained offline status)
        time.sleep(0.2)
        seen = run_fleet(fresh_mosquitto.url, capsys)
        assert seen["cam-a"]["online"] is True and seen["cam-a"]["telemetry"]["fps"] == 10.0
        assert seen["cam-b"]["online"] is False
        assert seen["cam-b"]["telemetry"] is None  # a fresh fleet process saw only its will
        capsys.readouterr()
        assert fleet.main(["--broker", fresh_mosquitto.url, "--once", "--timeout", "0.4"]) == 0
        table = capsys.readouterr().out
        assert "cam-b" in table and "OFFLINE" in table and "125.0 kB/s" in table
    finally:
        devices[0].kill()


def test_fleet_view_keeps_the_last_state_and_ignores_garbage() -> None:
    now = [100.0]
    hub = InMemoryHub(clock=lambda: now[0])
    view = FleetView(clock=lambda: now[0])
    view.attach(hub.transport("fleet"))
    dev = hub.transport("dev", will=status_will("d1", StatusMessage("d1", False, 1.0).to_bytes()))
    dev.publish(topic("d1", TopicKind.TELEMETRY), telemetry("d1", 1.0))
    dev.publish(topic("d1", TopicKind.TELEMETRY), telemetry("d1", 2.0))
    dev.publish(topic("d1", TopicKind.TELEMETRY), b"{not json")
    dev.publish(topic("d2", TopicKind.STATUS), telemetry("d2", 1.0))  # wrong message type on a status topic
    [d1] = view.devices()
    assert d1.online is None and d1.telemetry is not None and d1.telemetry.fps == 2.0
    assert view.bad_messages == 2
    dev.kill()
    now[0] = 103.0
    [d1] = view.devices()
    assert d1.online is False and view.to_dict()["devices"][0]["age_s"] == 3.0
    assert "OFFLINE" in view.table() and "2.0" in view.table()
