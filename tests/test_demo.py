"""``splitedge demo``: short real runs (broker, cloud worker process, device processes), the trace
shaper's achieved throughput, the kernel link (when this machine allows namespaces + tbf), and the
exactly-once check behind the exit code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from device_runner.link import TraceShaper
from lab import netem
from lab.demo import answer_problems, check_shaper, main
from sdk.broker import find_mosquitto
from sdk.traces import BandwidthTrace

needs_broker = pytest.mark.skipif(find_mosquitto() is None, reason="needs mosquitto (apt-get install mosquitto)")


def _answers(out: Path, i: int) -> list[dict]:
    lines = [json.loads(ln) for ln in (out / f"device-{i}.jsonl").read_text().splitlines() if ln.strip()]
    return [d for d in lines if "seq" in d]


def _frames(out: Path, i: int) -> int:
    lines = [json.loads(ln) for ln in (out / f"device-{i}.jsonl").read_text().splitlines() if ln.strip()]
    return next(d["summary"]["frames"] for d in lines if "summary" in d)


def _check_exactly_once(out: Path, devices: int) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"], summary["problems"]
    total = 0
    for i in range(devices):
        seqs = [a["seq"] for a in _answers(out, i)]
        n = _frames(out, i)
        assert sorted(seqs) == list(range(n)), f"device {i}: answers are not exactly one per frame"
        total += n
    a = summary["answered"]
    assert summary["frames"] == total == a["device"] + a["cloud"] + a["deadline"] == summary["answers"]
    assert total > 0
    assert summary["raw_frame_bytes"] == total * 96 * 96 * 3
    assert 0 <= summary["bytes_sent"] < summary["raw_frame_bytes"]
    assert summary["latency_p50_ms"] <= summary["latency_p95_ms"]
    assert summary["accuracy"] is None or 0.0 <= summary["accuracy"] <= 1.0
    return summary


@needs_broker
def test_short_demo_answers_every_frame_once_and_plots(reference_bundle: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    code = main(["--bundle", str(reference_bundle), "--devices", "2", "--duration", "8", "--trace", "synthetic",
                 "--out", str(out), "--frames", "20", "--link-check", "2", "--fps", "10"])
    text = capsys.readouterr().out
    assert code == 0, text
    summary = _check_exactly_once(out, 2)
    assert summary["link"] == "shaper" and "SYNTHETIC" in summary["trace"]
    assert "TRANSPORT SHAPER" in text and "every frame answered exactly once" in text
    assert summary["link_check"]["windows"] == 4
    c = summary["cloud"]
    assert c["received"] == c["answered"] + c["shed"] + sum(c["errors"].values())
    for name in ("cuts_bandwidth.png", "latency.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    # The replayed baselines of the same trace stretches sit beside the live mean, with a verdict.
    assert set(summary["replayed"]) >= {"edge-only", "cloud-jpeg", "dynamic"}
    assert "edge-only    mean" in text and "verdict" in text


@needs_broker
def test_broker_killed_mid_run_every_frame_still_answered(reference_bundle: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    code = main(["--bundle", str(reference_bundle), "--devices", "2", "--duration", "7", "--trace", "synthetic",
                 "--out", str(out), "--frames", "20", "--link-check", "0", "--no-plots", "--fps", "10",
                 "--kill-broker-at", "3"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "broker KILLED" in text
    summary = _check_exactly_once(out, 2)
    assert not (out / "latency.png").exists()
    t_start = json.loads((out / "device-0.jsonl").read_text().splitlines()[0])["start"]
    late = [a for i in range(2) for a in _answers(out, i) if a["t"] > t_start + 4.0]
    assert late, "no frames after the broker died"
    assert all(a["answered_by"] != "cloud" for a in late)  # nobody to answer: local or deadline
    assert summary["broker_killed_at"] == 3


def test_shaper_throughput_follows_a_step_trace() -> None:
    step = BandwidthTrace("step", np.array([0.0, 1.0, 2.0]), np.array([200e3, 50e3, 400e3]), 3.0)
    check = check_shaper(step, 0.0, 3.0, window_s=0.5)
    assert check.windows == 6
    achieved = np.array(check.achieved)
    assert np.allclose(check.expected, [200e3, 200e3, 50e3, 50e3, 400e3, 400e3])
    # every window within 15 % of the step it lies in (releases are quantized to 4 kB payloads)
    assert np.all(np.abs(achieved - check.expected) <= 0.15 * np.array(check.expected)), achieved
    assert check.follows and check.correlation > 0.95


def test_trace_shaper_is_a_fifo_link_following_the_trace() -> None:
    trace = BandwidthTrace("two", np.array([0.0, 1.0]), np.array([100_000.0, 10_000.0]), 2.0)
    shaper = TraceShaper(trace, offset=0.5, t0=100.0, latency_s=0.02)
    # at trace time 0.5: 50 kB fit before the rate drops at 1.0
    assert shaper.delay_s(50_000, 100.0) == pytest.approx(0.5 + 0.02)
    # queued behind the first, starting at trace 1.0 at 10 kB/s
    assert shaper.delay_s(5_000, 100.0) == pytest.approx(1.0 + 0.02)
    assert shaper.rate_at(100.6) == 10_000.0


@pytest.mark.parametrize(
    ("achieved", "expected", "follows"),
    [
        ([1.0e5, 2.0e5, 3.0e5], [1.0e5, 2.0e5, 3.0e5], True),
        ([1.05e5, 1.9e5, 3.1e5], [1.0e5, 2.0e5, 3.0e5], True),
        ([3.0e5, 2.0e5, 1.0e5], [1.0e5, 2.0e5, 3.0e5], False),  # anti-correlated
        ([1.0e5, 1.0e5, 1.0e5], [2.0e5, 2.0e5, 2.0e5], False),  # flat but half the rate
        ([2.0e5, 2.1e5, 1.9e5], [2.0e5, 2.0e5, 2.0e5], True),  # flat trace: error only
    ],
)
def test_track_table(achieved: list[float], expected: list[float], follows: bool) -> None:
    assert netem.track(np.array(achieved), np.array(expected), 1.0).follows is follows


@pytest.mark.parametrize(
    ("counts", "frames", "ok"),
    [
        ({0: 1, 1: 1, 2: 1}, 3, True),
        ({0: 1, 2: 1}, 3, False),  # frame 1 missing
        ({0: 1, 1: 2, 2: 1}, 3, False),  # frame 1 twice
        ({0: 1, 1: 1, 2: 1, 3: 1}, 3, False),  # an answer for a frame never taken
        ({}, None, False),  # the device never finished
        ({}, 0, True),
    ],
)
def test_answer_problems_table(counts: dict[int, int], frames: int | None, ok: bool) -> None:
    assert (answer_problems(counts, frames) == []) is ok


_NETNS = netem.detect()


@pytest.mark.skipif(not _NETNS.ok, reason=f"kernel link emulation unavailable: {_NETNS.reason}")
def test_netns_tbf_follows_a_step_trace() -> None:
    step = BandwidthTrace("step", np.array([0.0, 1.5, 3.0]), np.array([200e3, 50e3, 400e3]), 4.5)
    with netem.NetnsLink(1) as link:
        check = netem.saturation_check(link, 0, step, 0.0, 4.5, window_s=0.5)
        assert Path(f"/sys/class/net/{link.host_side(0)}").exists()
    assert not Path(f"/sys/class/net/{link.host_side(0)}").exists()  # cleaned up
    assert check.follows and check.correlation > 0.9, check.describe()


def _summary(live: float, cloud: int, edge: float, jpeg: float) -> dict:
    return {"latency_mean_ms": live, "frames": 10, "answered": {"device": 10 - cloud, "cloud": cloud, "deadline": 0},
            "latency_ms": 50.0,
            "replayed": {"edge-only": {"mean_ms": edge, "accuracy": 0.9, "route": "edge-only"},
                         "cloud-jpeg": {"mean_ms": jpeg, "accuracy": 0.88, "route": "cloud-jpeg"}}}


def test_verdict_says_whether_the_split_beat_edge_only_and_cloud_jpeg_and_why_not():
    from lab.demo_report import verdict

    won = verdict(_summary(live=120.0, cloud=6, edge=400.0, jpeg=150.0))
    assert "beat cloud-JPEG (150.0 ms), the better of edge-only and cloud-JPEG, by 20%, with 6 of 10 frames answered by the cloud" in won[-1]
    local = verdict(_summary(live=3.0, cloud=0, edge=2.5, jpeg=80.0))
    assert "did not pay here" in local[-1] and "round trip alone (50 ms) is longer" in local[-1]
    # Every frame on the device but the live mean a little under the replayed edge-only: noise, not a split win.
    noise = verdict(_summary(live=34.6, cloud=0, edge=35.4, jpeg=130.8))
    assert "did not pay here" in noise[-1] and "beat" not in noise[-1]
    lost = verdict(_summary(live=200.0, cloud=6, edge=400.0, jpeg=150.0))
    assert "did NOT beat cloud-JPEG (150.0 ms)" in lost[-1]
    # Why, from the live answers: the device-cut frames slower than replayed (a loaded host), the cloud's own.
    slow = {**_summary(live=230.0, cloud=5, edge=200.0, jpeg=170.0),
            "latency_by_answer_ms": {"device": 247.1, "cloud": 170.5, "deadline": 577.6}, "cloud": {"tail_ms_p50": 63.4}}
    slow["answered"]["deadline"] = 2
    why = verdict(slow)[-1]
    assert "took 247.1 ms live vs 200.0 ms replayed" in why and "fewer --devices" in why
    assert "by the cloud took 170.5 ms (the worker's tail p50 63.4 ms)" in why and "2 frames hit the deadline" in why
    near = {**slow, "latency_by_answer_ms": {"device": 205.0, "cloud": 170.5}}
    assert "replayed" not in verdict(near)[-1].split("NOT beat")[1]  # within 10 %: not blamed on the host


def test_cut_labels_name_the_raw_frame_the_layers_and_the_device(reference_bundle: Path):
    from lab.demo_report import cut_labels
    from sdk.manifest import load_manifest

    m = load_manifest(reference_bundle)
    labels = cut_labels(m)
    assert labels[0] == "raw frame" and labels[max(labels)] == "all on device"
    assert cut_labels(m, 75)[0] == "raw frame (JPEG q75)"  # a board that sends it as JPEG (zero2w-offload)
    split = [c for c in m.cuts if c.kind.value == "split"]
    assert labels[split[0].index] == f"{split[0].index} {split[0].name}"


def test_estimate_tracking_compares_the_estimate_with_the_trace_where_payloads_were_sent(tmp_path: Path) -> None:
    from lab.demo_report import View, describe_tracking, estimate_tracking

    step = BandwidthTrace("step", np.array([0.0, 10.0]), np.array([100e3, 400e3]), 20.0)
    rows = [  # t (s after t0), estimate, bytes sent, probe
        (2.0, 100e3, 800, False),  # 1.0x
        (4.0, 50e3, 0, True),  # a shadow probe: 0.5x
        (6.0, 999e3, 0, False),  # nothing sent: not compared
        (12.0, 440e3, 900, False),  # 1.1x (the window is after the step)
        (13.0, None, 900, False),  # no bandwidth measured yet: not compared
    ]
    path = tmp_path / "device-0.jsonl"
    path.write_text("".join(json.dumps({"seq": i, "t": 1000.0 + t, "est": est, "bytes": b, "probe": p,
                                        "answered_by": "cloud"}) + "\n"
                            for i, (t, est, b, p) in enumerate(rows)))  # fmt: skip
    view = View(path, None)
    view.poll()
    t = estimate_tracking([view], step, [0.0], 1000.0)
    assert t["all"]["samples"] == 3 and t["all"]["median"] == pytest.approx(1.0)
    assert t["all"]["within_0.7_1.3"] == pytest.approx(2 / 3)
    assert "median 1.00x" in describe_tracking(t) and "67% within" in describe_tracking(t)
    none = View(tmp_path / "absent.jsonl", None)
    assert "nothing to compare" in describe_tracking(estimate_tracking([none], step, [0.0], 1000.0))
