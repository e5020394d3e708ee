"""Metrics and the fleet page without a browser: names, histograms, registries, the HTTP seam, bad ports.

The live end-to-end run (real Mosquitto, real processes, headless Chromium) is tests/test_fleet_metrics.py; here
the same collectors read a real :class:`Counters` / :class:`FleetView` fed through the in-memory transport, and
the exposition is parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from cloud_tail import fleet
from cloud_tail.counters import BUCKETS_S, Counters, Histogram
from cloud_tail.fleet import FleetView
from cloud_tail.fleet_web import page, serve_fleet_page
from cloud_tail.httpd import serve
from sdk import cli
from sdk.errors import ListenError
from sdk.messages import ReportMessage, StatusMessage, TelemetryMessage
from sdk.topics import TopicKind, topic
from sdk.transport import InMemoryHub

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from cloud_tail.metrics import fleet_registry, render, serve_registry, worker_registry  # noqa: E402

#: the metric families each endpoint exposes (a contract: dashboards and alerts use these names; docs/CLOUD.md).
WORKER_FAMILIES = {
    "splitedge_cloud_frames_received": "counter",
    "splitedge_cloud_frames_answered": "counter",
    "splitedge_cloud_frames_shed": "counter",
    "splitedge_cloud_frames_refused": "counter",
    "splitedge_cloud_received_bytes": "counter",
    "splitedge_cloud_tail_seconds": "histogram",
    "splitedge_cloud_queue_wait_seconds": "histogram",
    "splitedge_cloud_batches": "counter",
    "splitedge_cloud_queue_frames": "gauge",
    "splitedge_cloud_queue_frames_max": "gauge",
    "splitedge_cloud_publish_failed": "counter",
    "splitedge_cloud_disconnects": "counter",
    "splitedge_cloud_connected": "gauge",
    "splitedge_cloud_uptime_seconds": "gauge",
    "splitedge_cloud_bundle_info": "gauge",  # an info metric, exposed as a gauge of 1 in the 0.0.4 text format
}
FLEET_FAMILIES = {
    "splitedge_fleet_device_online": "gauge",
    "splitedge_fleet_device_last_seen_timestamp_seconds": "gauge",
    "splitedge_fleet_device_age_seconds": "gauge",
    "splitedge_fleet_device_cut": "gauge",
    "splitedge_fleet_device_bits": "gauge",
    "splitedge_fleet_device_frames_per_second": "gauge",
    "splitedge_fleet_device_frames": "counter",
    "splitedge_fleet_device_answered_ratio": "gauge",
    "splitedge_fleet_device_uplink_bytes_per_second": "gauge",
    "splitedge_fleet_device_bandwidth_estimate_bytes_per_second": "gauge",
    "splitedge_fleet_device_latency_seconds": "gauge",
    "splitedge_fleet_device_errors": "counter",
    "splitedge_fleet_device_inflight_frames": "gauge",
    "splitedge_fleet_device_cloud_frames": "counter",
    "splitedge_fleet_device_cloud_received_bytes": "counter",
    "splitedge_fleet_device_cloud_seconds": "histogram",
    "splitedge_fleet_device_outbox_queued_messages": "gauge",
    "splitedge_fleet_device_outbox_dropped": "counter",
    "splitedge_fleet_device_info": "gauge",
    "splitedge_fleet_devices": "gauge",
    "splitedge_fleet_bad_messages": "counter",
}


def parse(registry) -> dict:
    body, ctype = render(registry)
    assert ctype.startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def values(fams: dict, sample_name: str, family: str | None = None) -> dict[tuple, float]:
    f = fams[family or sample_name]
    return {tuple(sorted(s.labels.items())): s.value for s in f.samples if s.name == sample_name}


def test_a_histogram_bucket_holds_values_up_to_and_including_its_bound() -> None:
    h = Histogram()
    for v in (0.0, BUCKETS_S[0], BUCKETS_S[0] * 1.01, 1.0, 1e6):
        h.observe(v)
    cum = dict(h.cumulative())
    assert cum[BUCKETS_S[0]] == 2  # 0 and the bound itself
    assert cum[BUCKETS_S[1]] == 3
    assert cum[1.0] == 4 and cum[float("inf")] == 5 == h.count
    assert h.sum_s == pytest.approx(1e6 + 1.0 + BUCKETS_S[0] * 2.01)
    assert list(BUCKETS_S) == sorted(BUCKETS_S)


def test_worker_metrics_per_device_and_cut_with_refusals_and_an_unreadable_frame() -> None:
    c = Counters("w1", clock=lambda: 10.0)
    for seq in range(3):
        c.received("cam-a", 4, 1000)
        c.answered("cam-a", 4, tail_ms=2.0 + seq, queue_ms=1.0)
    c.received("cam-a", 9, 50)
    c.error("cam-a", 9, "unknown_cut")
    c.received("cam-b", None, 7)  # the header could not be read: no cut known
    c.error("cam-b", None, "malformed")
    c.received("cam-b", 4, 500)
    c.shed("cam-b", 4)
    c.batch(3)
    fams = parse(worker_registry(c, bundles=lambda: [{"bundle_id": "0x01020304", "model": "digits", "version": "2"}]))
    assert {name: f.type for name, f in fams.items()} == WORKER_FAMILIES
    received = values(fams, "splitedge_cloud_frames_received_total", "splitedge_cloud_frames_received")

    def key(d: str, cut: str, **more: str) -> tuple:
        return tuple(sorted({"cut": cut, "device": d, "worker": "w1", **more}.items()))

    assert received == {key("cam-a", "4"): 3, key("cam-a", "9"): 1, key("cam-b", "?"): 1, key("cam-b", "4"): 1}
    refused = values(fams, "splitedge_cloud_frames_refused_total", "splitedge_cloud_frames_refused")
    assert refused == {key("cam-a", "9", code="unknown_cut"): 1, key("cam-b", "?", code="malformed"): 1}
    assert values(fams, "splitedge_cloud_received_bytes_total", "splitedge_cloud_received_bytes")[key("cam-a", "4")] == 3000
    tail = "splitedge_cloud_tail_seconds"
    assert values(fams, f"{tail}_count", tail)[key("cam-a", "4")] == 3
    assert values(fams, f"{tail}_sum", tail)[key("cam-a", "4")] == pytest.approx(0.009)
    assert values(fams, f"{tail}_bucket", tail)[key("cam-a", "4", le="0.0025")] == 1  # 2 ms
    assert values(fams, f"{tail}_bucket", tail)[key("cam-a", "4", le="0.005")] == 3  # 3 and 4 ms
    assert key("cam-b", "?") not in values(fams, f"{tail}_count", tail)  # no tail ran for it
    shed = values(fams, "splitedge_cloud_frames_shed_total", "splitedge_cloud_frames_shed")
    assert shed[key("cam-b", "4")] == 1
    [info] = fams["splitedge_cloud_bundle_info"].samples
    assert info.labels == {"worker": "w1", "bundle_id": "0x01020304", "model": "digits", "version": "2"}
    # Every received frame ended in exactly one place, and the JSON snapshot says the same.
    snap = c.snapshot()
    assert snap["totals"]["received"] == 6 == snap["totals"]["answered"] + snap["totals"]["shed"] + 2
    assert snap["devices"]["cam-b"]["errors"] == {"malformed": 1} and snap["cuts"]["4"]["bytes_received"] == 3500


def test_two_workers_in_one_process_have_their_own_registries_and_leave_the_global_one_alone() -> None:
    a, b = Counters("wa"), Counters("wb")
    a.received("d", 1, 10)
    ra, rb = worker_registry(a), worker_registry(b)  # the same metric names twice: no "Duplicated timeseries"
    assert values(parse(ra), "splitedge_cloud_frames_received_total", "splitedge_cloud_frames_received")
    assert not values(parse(rb), "splitedge_cloud_frames_received_total", "splitedge_cloud_frames_received")
    glob = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "splitedge_" not in glob


def telemetry(device: str, ts: float, **kw: object) -> bytes:
    fields: dict = dict(device_id=device, ts=ts, cut=17, fps=10.0, exit_rate=0.25, bytes_per_s=9000.0,
                        bandwidth_estimate=125000.0, p50_ms=12.0, p95_ms=30.5, errors=1, queue_depth=2,
                        emulated=True, bits=4)  # fmt: skip
    return TelemetryMessage(**(fields | kw)).to_bytes()


@pytest.fixture
def view() -> tuple[FleetView, list[float], object]:
    now = [1000.0]
    hub = InMemoryHub(clock=lambda: now[0])
    v = FleetView(clock=lambda: now[0], stale_after=5.0)
    v.attach(hub.transport("fleet"))
    return v, now, hub.transport("dev")


def test_fleet_metrics_from_telemetry_status_and_reports(view) -> None:
    v, now, dev = view
    dev.publish(topic("cam-a", TopicKind.STATUS), StatusMessage("cam-a", True, 1.0).to_bytes())
    for ts in (100.0, 101.0, 102.0):  # three 1-s windows at 10 fps: 30 frames
        dev.publish(topic("cam-a", TopicKind.TELEMETRY),
                    telemetry("cam-a", ts, bundle_id="1a2b3c4d", bundle_version="2", outbox_dropped=3))  # fmt: skip
    for seq in range(4):
        report = ReportMessage(seq, "cam-a", 17, 800, 1.0, queue_ms=1.0, tail_ms=3.0, worker_id="w", decode_ms=1.0)
        dev.publish(topic("cam-a", TopicKind.REPORT), report.to_bytes())
    dev.publish(topic("cam-b", TopicKind.STATUS), StatusMessage("cam-b", False, 1.0).to_bytes())
    dev.publish(topic("cam-c", TopicKind.TELEMETRY), b"garbage")
    fams = parse(fleet_registry(v))
    assert {name: f.type for name, f in fams.items()} == FLEET_FAMILIES
    a = (("device", "cam-a"),)
    one = lambda name, family=None: values(fams, name, family)[a]  # noqa: E731
    assert one("splitedge_fleet_device_cut") == 17 and one("splitedge_fleet_device_bits") == 4
    assert one("splitedge_fleet_device_frames_total", "splitedge_fleet_device_frames") == pytest.approx(30.0)
    assert one("splitedge_fleet_device_bandwidth_estimate_bytes_per_second") == 125000.0
    assert one("splitedge_fleet_device_cloud_frames_total", "splitedge_fleet_device_cloud_frames") == 4
    assert one("splitedge_fleet_device_cloud_received_bytes_total", "splitedge_fleet_device_cloud_received_bytes") == 3200
    hist = "splitedge_fleet_device_cloud_seconds"
    assert one(f"{hist}_sum", hist) == pytest.approx(4 * 0.005)  # decode + queue + tail
    assert one("splitedge_fleet_device_outbox_dropped_total", "splitedge_fleet_device_outbox_dropped") == 3
    mix = values(fams, "splitedge_fleet_device_answered_ratio")
    assert mix[(("answered_by", "cloud"), *a)] == 0.75 and mix[(("answered_by", "device"), *a)] == 0.25
    lat = values(fams, "splitedge_fleet_device_latency_seconds")
    assert lat[(*a, ("quantile", "0.95"))] == pytest.approx(0.0305)
    info = {s.labels["device"]: s.labels for s in fams["splitedge_fleet_device_info"].samples}
    assert info["cam-a"] == {"device": "cam-a", "bundle_id": "0x1a2b3c4d", "bundle_version": "2", "rollout": "",
                             "emulated": "true"}  # fmt: skip
    assert values(fams, "splitedge_fleet_device_online") == {a: 1, (("device", "cam-b"),): 0}
    assert values(fams, "splitedge_fleet_devices") == {(("status", "online"),): 1, (("status", "offline"),): 1,
                                                        (("status", "unknown"),): 0}  # fmt: skip
    assert values(fams, "splitedge_fleet_bad_messages_total", "splitedge_fleet_bad_messages") == {(): 1}


def test_a_device_not_heard_of_for_stale_after_seconds_is_stale(view) -> None:
    v, now, dev = view
    dev.publish(topic("cam-a", TopicKind.TELEMETRY), telemetry("cam-a", 1.0))
    assert v.to_dict()["devices"][0]["stale"] is False
    now[0] += 5.1
    [d] = v.to_dict()["devices"]
    assert d["stale"] is True and d["age_s"] == pytest.approx(5.1)


def get(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_the_page_and_its_json_are_served_and_a_device_id_or_title_is_never_markup(view) -> None:
    v, now, dev = view
    dev.publish(topic("cam-a", TopicKind.TELEMETRY), telemetry("cam-a", 1.0))
    evil = "mqtt://x</script><script>alert(1)</script>&"
    server = serve_fleet_page(v, 0, title=evil)
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        status, ctype, body = get(base + "/")
        assert status == 200 and ctype.startswith("text/html")
        html = body.decode()
        assert "<script>alert(1)" not in html and "&lt;/script&gt;" in html  # escaped in the heading and the script
        assert 'fetch("fleet.json"' in html and "<link" not in html and "src=" not in html  # self-contained
        assert "textContent" in html and "innerHTML" not in html
        status, ctype, body = get(base + "/fleet.json")
        assert status == 200 and ctype == "application/json"
        [d] = json.loads(body)["devices"]
        assert d["device_id"] == "cam-a" and d["telemetry"]["cut"] == 17 and d["cloud_frames"] == 0
        status, _, body = get(base + "/", method="HEAD")
        assert status == 200 and body == b""
        status, _, body = get(base + "/etc/passwd")
        assert status == 404 and b"/fleet.json" in body
    finally:
        server.shutdown()
        server.server_close()
    assert page("a") != page("b")


def test_a_failing_route_answers_500_and_the_server_keeps_serving() -> None:
    calls = []

    def flaky() -> tuple[bytes, str]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("collector broke")
        return b"ok", "text/plain"

    server = serve({"/x": flaky}, 0)
    try:
        base = f"http://127.0.0.1:{server.server_port}/x"
        assert get(base)[0] == 500
        assert get(base)[:3:2] == (200, b"ok")
    finally:
        server.shutdown()
        server.server_close()


def test_a_taken_port_is_one_error_naming_the_flag_and_the_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ListenError, match=rf"--metrics-port {port} on 127.0.0.1: cannot listen \(the port is in use"):
            serve_registry(worker_registry(Counters("w")), port)


def test_the_fleet_command_refuses_a_taken_port_in_one_line(fresh_mosquitto, capsys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code = cli.main(["fleet", "--broker", fresh_mosquitto.url, "--web-port", str(port), "--once", "--timeout", "0.1"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert f"--web-port {port}" in err and "Traceback" not in err


def test_the_cloud_command_refuses_a_taken_metrics_port_in_one_line(fresh_mosquitto, reference_bundle, capsys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code = cli.main(["cloud", "--bundle", str(reference_bundle), "--broker", fresh_mosquitto.url,
                         "--metrics-port", str(port)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and f"--metrics-port {port} on 127.0.0.1: cannot listen" in err and "Traceback" not in err


@pytest.mark.parametrize("bad", ["70000", "-1", "http"])
def test_a_port_that_is_not_a_port_is_refused_by_the_parser(bad: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        fleet.parse_args(["--metrics-port", bad])
    assert exc.value.code == 2 and "expected 0..65535" in capsys.readouterr().err


def test_the_public_names_of_the_new_modules_are_pinned() -> None:
    import cloud_tail.counters
    import cloud_tail.fleet_web
    import cloud_tail.httpd
    import cloud_tail.metrics

    assert sorted(cloud_tail.metrics.__all__) == ["fleet_registry", "render", "serve_registry", "worker_registry"]
    assert sorted(cloud_tail.httpd.__all__) == ["Route", "add_http_arguments", "port_number", "serve"]
    assert sorted(cloud_tail.fleet_web.__all__) == ["page", "serve_fleet_page"]
    assert sorted(cloud_tail.counters.__all__) == ["BUCKETS_S", "Counters", "Histogram", "Tally", "write_json"]
