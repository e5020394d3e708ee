"""Metrics and the fleet page after real frames went through a real Mosquitto (the shipped cloud-tls config and ACL).

One scenario per module: ``splitedge cloud --metrics-port 0`` and ``splitedge fleet --metrics-port 0 --web-port 0``
run as processes with their own ``splitedge pki`` identities (splitedge-tail, splitedge-fleet), a device
(``splitedge device``, identity pi4-01) sends 30 frames that the cloud answers, then one payload that is not a frame
(refused ``malformed``). Then both ``/metrics`` endpoints are
scraped over HTTP and parsed with prometheus_client's own parser, and the fleet page is rendered by headless Chromium
(the rows are in the DOM after its JavaScript fetched ``fleet.json``; the screenshot is a real PNG).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sdk import cli
from sdk.manifest import CutKind, load_manifest
from sdk.topics import TopicKind, topic
from tests.tls_rig import cloud_tls_broker, make_pki, tls_client, tls_flags

pytest.importorskip("cryptography")
parser = pytest.importorskip("prometheus_client.parser")

pytestmark = pytest.mark.broker
REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
FRAMES = 30

PROFILE = """
[board]
name = "host"
cpu = "x86-64"
threads = 1
memory_budget_mb = 256
speed_factor = 1.0
speed_factor_source = "test: this machine"

[device]
device_id = "pi4-01"
source = "synthetic"
fps_cap = 20
deadline_ms = 5000
target_accuracy = 0.5
bits = [8]
telemetry_interval_s = 0.3

[broker]
url = "{url}"
ca_file = "{pki}/ca.crt"
cert_file = "{pki}/pi4-01.crt"
key_file = "{pki}/pi4-01.key"
"""


class Proc:
    """A ``splitedge`` command in a process; a thread per pipe collects its lines (no select on a buffered pipe)."""

    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.p = subprocess.Popen([sys.executable, "-m", "sdk.cli", *args], cwd=REPO, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        for name in self.lines:
            threading.Thread(target=self._pump, args=(name,), daemon=True).start()

    def _pump(self, name: str) -> None:
        for line in getattr(self.p, name):
            self.lines[name].append(line)

    def wait_for(self, stream: str, pattern: str, timeout: float = 90) -> re.Match[str]:
        """The first line of ``stream`` matching ``pattern``."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in list(self.lines[stream]):
                if m := re.search(pattern, line):
                    return m
            if self.p.poll() is not None:
                time.sleep(0.2)  # let the pumps finish
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} on {stream}: {self.lines}")

    def stop(self) -> None:
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def families(url: str) -> dict[str, object]:
    return {f.name: f for f in parser.text_string_to_metric_families(get(url))}


def sample(fams: dict, family: str, name: str | None = None, **labels: str) -> float:
    """The one sample of ``family`` called ``name`` (default: the family's own) whose labels include ``labels``."""
    hits = [s.value for s in fams[family].samples
            if s.name == (name or family) and all(s.labels.get(k) == v for k, v in labels.items())]  # fmt: skip
    assert len(hits) == 1, (family, name, labels, fams[family].samples)
    return hits[0]


@dataclass
class Scenario:
    worker_metrics: str
    fleet_metrics: str
    web: str
    split: int
    bundle_id: int
    answers: list[dict]
    fleet_json: dict


@pytest.fixture(scope="module")
def scenario(reference_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    pki = make_pki(tmp_path_factory.mktemp("pki"), ["pi4-01"])
    with cloud_tls_broker(pki) as broker:
        worker = Proc(["cloud", "--bundle", str(reference_bundle), "--broker", broker.url, "--worker-id", "m-w1",
                        "--metrics-port", "0", *tls_flags(pki, "splitedge-tail")])  # fmt: skip
        fleet = Proc(["fleet", "--broker", broker.url, "--quiet", "--metrics-port", "0", "--web-port", "0",
                       *tls_flags(pki, "splitedge-fleet")])  # fmt: skip
        try:
            worker_metrics = worker.wait_for("stdout", r"^ready m-w1 .* metrics (http://\S+/metrics)").group(1)
            fleet_metrics = fleet.wait_for("stderr", r"^metrics (http://\S+/metrics)").group(1)
            web = fleet.wait_for("stderr", r"^web (http://\S+/)").group(1)
            manifest = load_manifest(reference_bundle)
            split = next(c.index for c in manifest.cuts if c.kind is CutKind.SPLIT)
            profile = pki / "pi4-01.toml"
            profile.write_text(PROFILE.format(url=broker.url, pki=pki))
            out = pki / "answers.jsonl"
            # One split cut pinned and an exit that never answers (tau 2): every frame goes to the cloud.
            code = cli.main(["device", "--bundle", str(reference_bundle), "--config", str(profile), "--frames",
                             str(FRAMES), "--out", str(out), "--tau", "2.0", "--cut", str(split), "--probe-every", "0"])  # fmt: skip
            assert code == 0
            answers = [json.loads(x) for x in out.read_text().splitlines()]
            # One more "frame" from the same identity that is not a frame: refused 'malformed', no cut known.
            forger = tls_client(broker, pki, "pi4-01", client_id="pi4-01-garbage")
            try:
                forger.publish(topic("pi4-01", TopicKind.ACT), b"not a splitedge frame", qos=1)
            finally:
                forger.close()
            end = time.monotonic() + 10  # the fleet reads the reports and the offline status asynchronously
            while True:
                fleet_json = json.loads(get(web + "fleet.json"))
                [dev] = fleet_json["devices"]
                refused = "splitedge_cloud_frames_refused_total{" in get(worker_metrics)
                if (dev["cloud_frames"] == FRAMES and dev["online"] is False and refused) or time.monotonic() > end:
                    break
                time.sleep(0.1)
            yield Scenario(worker_metrics, fleet_metrics, web, split, manifest.wire_bundle_id, answers, fleet_json)
        finally:
            worker.stop()
            fleet.stop()


def test_every_frame_was_answered_by_the_cloud(scenario: Scenario) -> None:
    assert [a["answered_by"] for a in scenario.answers] == ["cloud"] * FRAMES


def test_the_worker_metrics_count_the_frames_bytes_and_tail_times(scenario: Scenario) -> None:
    fams = families(scenario.worker_metrics)
    key = {"worker": "m-w1", "device": "pi4-01", "cut": str(scenario.split)}
    assert sample(fams, "splitedge_cloud_frames_received", "splitedge_cloud_frames_received_total", **key) == FRAMES
    assert sample(fams, "splitedge_cloud_frames_answered", "splitedge_cloud_frames_answered_total", **key) == FRAMES
    assert sample(fams, "splitedge_cloud_frames_shed", "splitedge_cloud_frames_shed_total", **key) == 0
    [refused] = fams["splitedge_cloud_frames_refused"].samples  # the one garbage payload, no cut known
    assert refused.labels == {"worker": "m-w1", "device": "pi4-01", "cut": "?", "code": "malformed"}
    assert refused.value == 1
    garbage = {**key, "cut": "?"}
    assert sample(fams, "splitedge_cloud_frames_received", "splitedge_cloud_frames_received_total", **garbage) == 1
    nbytes = sample(fams, "splitedge_cloud_received_bytes", "splitedge_cloud_received_bytes_total", **key)
    assert nbytes > FRAMES * 60  # at least a 60-byte header per frame
    for hist in ("splitedge_cloud_tail_seconds", "splitedge_cloud_queue_wait_seconds"):
        assert fams[hist].type == "histogram"
        assert sample(fams, hist, f"{hist}_count", **key) == FRAMES
        assert sample(fams, hist, f"{hist}_bucket", le="+Inf", **key) == FRAMES
        assert 0 < sample(fams, hist, f"{hist}_sum", **key) < FRAMES * 1.0
    tail_sum = sample(fams, "splitedge_cloud_tail_seconds", "splitedge_cloud_tail_seconds_sum", **key)
    assert tail_sum / FRAMES < 0.05  # the digits tails take well under a millisecond here
    [info] = fams["splitedge_cloud_bundle_info"].samples
    assert info.labels["bundle_id"] == f"0x{scenario.bundle_id:08x}" and info.labels["worker"] == "m-w1"
    assert sample(fams, "splitedge_cloud_connected", worker="m-w1") == 1
    assert sample(fams, "splitedge_cloud_batches", "splitedge_cloud_batches_total", worker="m-w1", size="1") >= 1
    assert sum(s.value * int(s.labels["size"]) for s in fams["splitedge_cloud_batches"].samples
               if s.name.endswith("_total")) == FRAMES  # fmt: skip
    snap = json.loads(get(scenario.worker_metrics + ".json"))  # the JSON snapshot beside it agrees
    assert snap["devices"]["pi4-01"]["answered"] == FRAMES and snap["cuts"][str(scenario.split)]["bytes_received"] == nbytes
    assert snap["totals"]["received"] == FRAMES + 1 == snap["totals"]["answered"] + sum(snap["totals"]["errors"].values())


def test_the_fleet_metrics_carry_each_devices_cut_bandwidth_and_cloud_frames(scenario: Scenario) -> None:
    fams = families(scenario.fleet_metrics)
    dev = {"device": "pi4-01"}
    assert sample(fams, "splitedge_fleet_device_cut", **dev) == scenario.split
    assert sample(fams, "splitedge_fleet_device_online", **dev) == 0  # it stopped cleanly: offline status
    assert sample(fams, "splitedge_fleet_devices", status="offline") == 1
    assert sample(fams, "splitedge_fleet_device_answered_ratio", answered_by="cloud", **dev) == pytest.approx(1.0)
    assert sample(fams, "splitedge_fleet_device_bandwidth_estimate_bytes_per_second", **dev) > 0
    cloud = "splitedge_fleet_device_cloud_frames"
    assert sample(fams, cloud, f"{cloud}_total", **dev) == FRAMES  # one report per answered frame
    hist = "splitedge_fleet_device_cloud_seconds"
    assert sample(fams, hist, f"{hist}_count", **dev) == FRAMES
    p95 = sample(fams, "splitedge_fleet_device_latency_seconds", quantile="0.95", **dev)
    assert 0 < p95 < 5.0  # within the deadline
    frames = sample(fams, "splitedge_fleet_device_frames", "splitedge_fleet_device_frames_total", **dev)
    assert FRAMES * 0.7 <= frames <= FRAMES * 1.3  # fps x window, summed over the telemetry
    worker_bytes = sample(families(scenario.worker_metrics), "splitedge_cloud_received_bytes",
                          "splitedge_cloud_received_bytes_total", device="pi4-01", cut=str(scenario.split))  # fmt: skip
    assert sample(fams, "splitedge_fleet_device_cloud_received_bytes", "splitedge_fleet_device_cloud_received_bytes_total",
                  **dev) == worker_bytes  # fmt: skip
    [info] = fams["splitedge_fleet_device_info"].samples
    assert info.labels["emulated"] == "false" and info.labels["device"] == "pi4-01"
    assert info.labels["bundle_id"] == f"0x{scenario.bundle_id:08x}"  # the device's telemetry names its bundle


def chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={user_data}",
             "--window-size=1200,800", "--virtual-time-budget=5000"]  # fmt: skip
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="needs Debian's chromium (run.sh installs it)")
def test_the_fleet_page_renders_the_devices_in_headless_chromium(scenario: Scenario, tmp_path: Path) -> None:
    r = chromium("--dump-dom", scenario.web, user_data=tmp_path / "profile-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    assert re.search(r'<body data-updated="[0-9.]+"', dom), dom[:2000]  # the script's fetch of fleet.json ran
    row = re.search(r'<tr data-device="pi4-01"[^>]*>(.*?)</tr>', dom, re.S)
    assert row is not None, dom[-3000:]
    cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)]
    assert cells[0] == "pi4-01" and "offline" in cells[1]
    assert cells[2].startswith(str(scenario.split))
    assert cells[7] == str(FRAMES)  # answered by the cloud, from the reports
    assert "100% cloud" in cells[8]
    assert cells[10] == f"0x{scenario.bundle_id:08x}"
    shot = tmp_path / "fleet.png"
    r = chromium(f"--screenshot={shot}", scenario.web, user_data=tmp_path / "profile-png")
    assert r.returncode == 0, r.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert (width, height) == (1200, 800)
    if keep := os.environ.get("SPLITEDGE_KEEP_SCREENSHOT"):
        shutil.copy(shot, keep)
