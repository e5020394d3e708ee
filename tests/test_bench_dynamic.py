"""The dynamic-vs-static replay: queueing math by hand, the oracle bound, the dynamic policy's lag, the CLI.

A tiny fake bundle (manifest only) and hand-made per-frame data keep these fast; one test measures the
real reference bundle on a few frames.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fakes import fake_manifest

from benchmarks import bench_dynamic as bd
from device_runner.link import TraceShaper
from sdk.config import parse_config
from sdk.manifest import (
    CutKind,
    Manifest,
)
from sdk.traces import BandwidthTrace

PROFILE = {
    "board": {"name": "host", "cpu": "x", "threads": 1, "memory_budget_mb": 64, "speed_factor": 1.0,
              "speed_factor_source": "test"},
    "device": {"device_id": "cam-01", "fps_cap": 10, "deadline_ms": 100, "target_accuracy": 0.9, "bits": [8, 4, 2],
               "codec": "none", "accuracy_drop_budget": 0.01, "telemetry_interval_s": 1.0},
    "broker": {"url": "mqtt://127.0.0.1:1883"},
}  # fmt: skip


def fake_data(m: Manifest, n: int = 4, conf: float = 0.0) -> bd.FrameData:
    """Every frame: the manifest's payload bytes, the cloud right, the exit's confidence ``conf``; a JPEG at q80."""
    R = bd.Route
    nbytes = {R(0): np.full(n, 3072), R(3): np.zeros(n, dtype=np.int64), R(0, 0, 80): np.full(n, 1000)}
    for c in (1, 2):
        for b in m.bits:
            nbytes[R(c, b)] = np.full(n, m.cut(c).payload_bytes(b))
    ok = {r: np.ones(n, dtype=bool) for r in nbytes}
    return bd.FrameData(np.zeros(n, dtype=np.int64), nbytes, ok, {c: np.full(n, conf) for c in (1, 2, 3)},
                        {c: np.ones(n, dtype=bool) for c in (1, 2, 3)}, {80: (0.5, 0.25)}, "none")


def setup(**device: object) -> bd.Setup:
    """The fake bundle on PROFILE's board with ``device`` keys changed."""
    cfg = parse_config({**PROFILE, "device": {**PROFILE["device"], **device}})
    m = fake_manifest()
    return bd.make_setup(m, cfg, fake_data(m))


def constant(rate: float) -> BandwidthTrace:
    return BandwidthTrace("const", np.array([0.0]), np.array([rate]), 1000.0)


def step(high: float, low: float, at: float) -> BandwidthTrace:
    return BandwidthTrace("step", np.array([0.0, at]), np.array([high, low]), 3 * at)


# ------------------------------------------------------------------------------------ the runner, replayed
def pinned(s: bd.Setup, sc: bd.Scenario, route: bd.Route) -> bd.PolicyRun:
    return bd.replay(s, sc, bd.pinned_policy(s, route), "pinned")


def test_constant_rate_latency_is_head_plus_transfer_plus_round_trip_plus_tail() -> None:
    s = setup(overdue_factor=0.0)  # wait for the deadline only: every answer is the cloud's
    sc = bd.Scenario(constant(100_000.0), fps=1.0, duration_s=5.0, link_ms=5.0, deadline_ms=1000.0)
    run = pinned(s, sc, bd.Route(1, 4))
    assert [a.answered_by.value for a in run.answers] == ["cloud"] * 5
    nbytes = run.nbytes[0]
    assert nbytes > 1024 and (run.nbytes == nbytes).all()  # the 4-bit activation plus the wire header
    # head 1 ms, the real payload at 100 kB/s, the 5 ms round trip, the tail's 2 ms: the runner's own clock
    assert run.latency_ms == pytest.approx([1.0 + nbytes / 100_000 * 1000 + 5.0 + 2.0] * 5)
    edge = pinned(s, sc, bd.Route(3))
    assert edge.latency_ms == pytest.approx([20.0] * 5) and edge.nbytes.sum() == 0
    jpeg = bd.compare(s, sc, diagnostics=False)["cloud-jpeg"]  # a plain client: encode 0.5, decode 0.25 + raw tail 5
    assert jpeg.latency_ms == pytest.approx([0.5 + 10.0 + 5.0 + 0.25 + 5.0] * 5)


def test_fifo_uplink_queues_when_frames_come_faster_than_the_link() -> None:
    s = setup(overdue_factor=0.0)
    sc = bd.Scenario(constant(10_000.0), fps=10.0, duration_s=0.5, deadline_ms=10_000.0)
    run = pinned(s, sc, bd.Route(1, 8))
    nb = int(run.nbytes[0])
    free, expected = 0.0, []
    for i in range(5):  # frame i is captured at i / 10 s, its head takes 1 ms, then it waits for the link
        free = max(i * 0.1 + 0.001, free) + nb / 10_000.0
        expected.append((free - i * 0.1) * 1000.0 + 2.0)  # + the tail (no round trip here)
    assert run.latency_ms == pytest.approx(expected)
    assert expected[-1] > expected[0] + 300  # it did queue


def test_deadline_answers_locally_and_exits_answer_at_the_device_time() -> None:
    m = fake_manifest()
    s = setup(overdue_factor=0.0)
    late = pinned(s, bd.Scenario(constant(10_000.0), fps=1.0, duration_s=2.0, deadline_ms=100.0), bd.Route(1, 8))
    assert late.latency_ms == pytest.approx([100.0, 100.0]) and late.deadline.all() and late.sent.all()
    assert [a.reason for a in late.answers] == ["deadline", "deadline"]
    confident = bd.make_setup(m, parse_config(PROFILE), fake_data(m, conf=0.95))  # tau is 0.9: every frame exits
    run = pinned(confident, bd.Scenario(constant(10.0), fps=1.0, duration_s=3.0), bd.Route(2, 4))
    assert run.latency_ms == pytest.approx([3.0] * 3) and not run.sent.any()
    assert {a.reason for a in run.answers} == {"exit"}


def test_the_overdue_wait_is_the_runners() -> None:
    # The shipped overdue wait (2 x the expected time + 30 ms) ends a frame stuck behind a 2 s outage long
    # before the 1 s deadline: the replay runs the runner's own rule, so the reason says "overdue".
    s = setup()
    sc = bd.Scenario(step(1e6, 1.0, 2.0), fps=10.0, duration_s=3.0, deadline_ms=1000.0)
    run = pinned(s, sc, bd.Route(1, 4))
    reasons = [a.reason for a in run.answers]
    assert reasons[:15] == ["cloud"] * 15 and "overdue" in reasons[20:]
    assert max(run.latency_ms) < 1000.0


def test_the_oracle_is_no_worse_than_the_best_static_cut() -> None:
    s = setup()
    sc = bd.Scenario(step(1e6, 20e3, 3.0), fps=20.0, duration_s=6.0)
    runs = bd.compare(s, sc)
    for name in [n for n in runs if n.startswith("static:")] + ["edge-only", "best-static"]:
        assert runs["oracle"].latency_ms.mean() <= runs[name].latency_ms.mean() + 1e-9, name
    assert runs["oracle"].switches > 0  # it follows the link


def test_dynamic_moves_to_a_later_cut_after_a_bandwidth_drop() -> None:
    s = setup()
    sc = bd.Scenario(step(10e6, 20e3, 20.0), fps=10.0, duration_s=40.0)
    run = bd.replay(s, sc, bd.dynamic_policy(s, allowed=[1, 2]), "dynamic")
    trail = [(a.seq / sc.fps, a.cut) for a in run.answers if not a.probe]
    assert {c for t, c in trail if 1.0 <= t < 20.0} == {1} and {c for t, c in trail if t >= 25.0} == {2}
    switched = min(t for t, c in trail if t >= 20.0 and c == 2)
    oracle = bd.compare(s, sc, diagnostics=False)["oracle"]
    first = int(np.argmax(oracle.cuts == 2))
    assert first / sc.fps == pytest.approx(20.0, abs=0.11)  # the oracle switches on the first frames after the drop
    assert 20.0 < switched < 22.0  # dynamic learns it from its own frames' network times, a few frames later


def test_gain_definitions() -> None:
    s = setup()
    runs = bd.compare(s, bd.Scenario(step(1e6, 20e3, 3.0), fps=10.0, duration_s=6.0), diagnostics=False)
    g = bd.gains(runs, "oracle")["static:cut1@4b"]
    t_o, t_s = runs["oracle"].latency_ms, runs["static:cut1@4b"].latency_ms
    assert g["G"] == pytest.approx(np.mean(np.abs(t_o - t_s) / t_s), abs=1e-4)
    assert g["signed"] == pytest.approx(np.mean((t_s - t_o) / t_s), abs=1e-4) and g["signed"] > 0


# ------------------------------------------------------------------------------------ the CLI
@pytest.fixture
def fake_bundle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    m = fake_manifest()
    monkeypatch.setattr(bd, "load_manifest", lambda path: m)
    monkeypatch.setattr(bd, "measure", lambda bundle, manifest, n, codec: fake_data(manifest))
    profile = tmp_path / "host.toml"
    profile.write_text(
        '[board]\nname = "host"\ncpu = "x"\nthreads = 1\nmemory_budget_mb = 64\nspeed_factor = 1.0\n'
        'speed_factor_source = "test"\n[device]\ndevice_id = "cam-01"\nfps_cap = 10\ndeadline_ms = 100\n'
        'target_accuracy = 0.9\nbits = [8, 4, 2]\ncodec = "none"\naccuracy_drop_budget = 0.01\n'
        'telemetry_interval_s = 1.0\n[broker]\nurl = "mqtt://127.0.0.1:1883"\n'
    )
    return profile


def test_json_output_has_every_policy(fake_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "up.log"
    trace.write_text("0 8.0\n2 0.16\n4 8.0\n6 8.0\n")
    code = bd.main(["--bundle", str(tmp_path), "--board", str(fake_bundle), "--trace", str(trace), "--duration", "8",
                    "--json"])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    expected = {"dynamic", "dynamic-no-probes", "dynamic-perfect-bw", "dynamic-escalated-cost", "static:cut1@4b",
                "static:cut2@4b", "best-static", "cloud-raw", "cloud-jpeg", "edge-only", "oracle", "oracle-link"}
    assert expected <= set(out)
    for name in expected:
        assert {"mean_ms", "p95_ms", "bytes_sent", "accuracy", "escalation_rate", "cut_switches"} <= set(out[name])
        assert out[name]["frames"] == 80
    assert out["cloud-jpeg"]["route"] == "jpeg-q80"
    assert {"G", "signed", "mean_gain"} <= set(out["dynamic"]["gain"]["best-static"])
    assert out["oracle"]["mean_ms"] <= out["best-static"]["mean_ms"]


def test_start_replays_the_trace_from_later_on(fake_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "up.log"
    trace.write_text("0 8.0\n2 0.016\n4 8.0\n6 8.0\n")  # a 2 s outage at t=2: every static cut is slower there
    common = ["--bundle", str(tmp_path), "--board", str(fake_bundle), "--trace", str(trace), "--duration", "2", "--json"]
    means = []
    for start in ("0", "2"):
        assert bd.main([*common, "--start", start]) == 0
        means.append(json.loads(capsys.readouterr().out)["static:cut1@4b"]["mean_ms"])
    assert means[1] > means[0]  # the window from t=2 is the outage
    with pytest.raises(SystemExit):
        bd.parse_args(["--start", "-1"])
    assert "--start must be >= 0" in capsys.readouterr().err


def test_the_docs_robustness_table_has_every_start_and_a_mean_per_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bd, "START_SECONDS", 10.0)
    s = setup()
    lines = bd._starts(s, s.config, [step(1e6, 2e3, 10.0)])  # a 30 s loop
    rows = [ln for ln in lines if ln.startswith("| step")]
    assert [r.split(" | ")[1] for r in rows] == ["0", "10", "20"]
    mean = next(ln for ln in lines if ln.startswith("| **step, mean**"))
    assert mean.count("|") == 10 and "--start S" in "\n".join(lines)


def test_without_a_trace_the_synthetic_stand_in_is_used_with_a_note(
    fake_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, trace, note = bd.pick_trace("synthetic")  # the demo's (sdk.traces), re-exported
    assert trace.name == "synthetic-0" and "SYNTHETIC" in note
    assert bd.main(["--bundle", str(tmp_path), "--board", str(fake_bundle), "--duration", "3", "--trace", "synthetic"]) == 0
    captured = capsys.readouterr()
    assert "SYNTHETIC" in captured.err and "| dynamic |" in captured.out and captured.out.startswith("synthetic-0")


def test_defaults_are_the_demos_board_and_an_lte_round_trip() -> None:
    from lab import demo
    from sdk.defaults import BENCH_RTTS_MS, CELLULAR_RTT_MS, DEFAULT_BOARD

    args, demo_args = bd.parse_args([]), demo.parse_args([])
    assert args.board == demo_args.board == DEFAULT_BOARD == "zero2w-offload"  # the demo's board, defined once
    assert args.link_ms == demo_args.latency_ms == CELLULAR_RTT_MS == 50.0  # one round trip, defined once
    assert BENCH_RTTS_MS == (20.0, 50.0, 100.0)
    assert bd.scenario(constant(1e6), parse_config(PROFILE)).link_ms == CELLULAR_RTT_MS
    assert bd.parse_args(["--link-ms", "0"]).link_ms == 0.0  # the lab idealisation stays available


def test_the_round_trip_is_paid_once_per_offloaded_frame(fake_bundle: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "up.log"
    trace.write_text("0 8.0\n4 8.0\n")
    common = ["--bundle", str(tmp_path), "--board", str(fake_bundle), "--trace", str(trace), "--duration", "2", "--json"]
    means = {}
    for rtt in ("0", "50"):
        assert bd.main([*common, "--link-ms", rtt]) == 0
        means[rtt] = json.loads(capsys.readouterr().out)
    assert bd.main(common) == 0  # the default: 50 ms
    default = json.loads(capsys.readouterr().out)
    # A fixed route pays it in full; a pinned cut runs the device's policy, whose deadline and overdue
    # fallback (answer locally once the cloud is late) can end a frame before the round trip is over.
    assert means["50"]["cloud-jpeg"]["mean_ms"] == pytest.approx(means["0"]["cloud-jpeg"]["mean_ms"] + 50.0)
    for key in ("static:cut1@4b", "cloud-raw", "cloud-jpeg"):
        assert means["50"][key]["mean_ms"] > means["0"][key]["mean_ms"] + 40.0, key
        assert default[key]["mean_ms"] == pytest.approx(means["50"][key]["mean_ms"]), key
    assert means["50"]["edge-only"]["mean_ms"] == pytest.approx(means["0"]["edge-only"]["mean_ms"])  # sends nothing
    for key in ("dynamic", "oracle", "oracle-link", "best-static", "edge-only", "cloud-raw", "cloud-jpeg"):
        assert "mean_ms" in default[key]


def test_the_docs_tables_show_every_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    from sdk.defaults import BENCH_RTTS_MS

    m = fake_manifest()
    monkeypatch.setattr(bd, "reference_bundle", lambda *a, **k: (Path("unused"), m))
    monkeypatch.setattr(bd, "measure", lambda bundle, manifest, *a, **k: fake_data(manifest))
    monkeypatch.setattr(bd, "load_board", lambda name: parse_config(PROFILE))
    monkeypatch.setattr(bd, "shared_traces", lambda: ["step"])
    monkeypatch.setattr(bd, "load_trace", lambda path: step(1e6, 2e3, 2.0))
    monkeypatch.setattr(bd, "RUN_BOARDS", {"digits": (("host", 4.0, True),)})
    monkeypatch.setattr(bd, "START_FRACTIONS", (0.0,))
    monkeypatch.setattr(bd, "START_SECONDS", 4.0)
    monkeypatch.setattr(bd, "LIVE_SECONDS", 2.0)
    monkeypatch.setattr(bd, "live", lambda bundle, manifest, config, sc, **kw: bd.compare(
        bd.make_setup(manifest, config, fake_data(manifest)), sc, diagnostics=False)["dynamic"])
    text = bd.run(["digits"])
    assert "### Workload `digits`" in text and "--workload digits --board host" in text
    for table in ("| trace | RTT ms | Mbit/s |", "| trace | RTT ms | dynamic | no probes |"):
        head = next(ln for ln in text.splitlines() if ln.startswith(table))
        assert text.count(table) == 2  # all cuts, offload only
        width = head.count("|")
        rows = [ln for ln in text.splitlines() if ln.startswith("| step | ") and ln.count("|") == width]
        assert [float(r.split(" | ")[1]) for r in rows] == list(BENCH_RTTS_MS) * 2  # all cuts, offload only
    assert "--link-ms RTT" in text and "RTT 50 ms" in text


def test_trace_shaper_is_a_fifo_following_the_trace() -> None:
    shaper = TraceShaper(step(1000.0, 100.0, 1.0), t0=10.0, latency_s=0.02)
    assert shaper.delay_s(500, 10.0) == pytest.approx(0.52)
    assert shaper.delay_s(500, 10.0) == pytest.approx(1.02)  # queued behind the first: ends at trace time 1.0
    assert shaper.delay_s(100, 10.0) == pytest.approx(2.02)  # then at 100 B/s


# ------------------------------------------------------------------------------------ real measurements
def test_measure_on_the_reference_bundle(reference_bundle: Path) -> None:
    from sdk.manifest import load_manifest
    from sdk.wire import Codec

    m = load_manifest(reference_bundle)
    data = bd.measure(reference_bundle, m, n=6, codec=Codec.NONE)
    raw = m.raw_cut
    assert raw is not None and data.n == 6
    assert (data.nbytes[bd.Route(raw.index)] > m.input.nbytes).all()  # the frame plus the wire header
    for c in m.cuts:
        if c.kind is CutKind.SPLIT:
            eight, two = data.nbytes[bd.Route(c.index, 8)], data.nbytes[bd.Route(c.index, 2)]
            assert (eight > c.payload_bytes(8) - 1).all() and (two < eight).all()
            assert ((data.conf[c.index] >= 0) & (data.conf[c.index] <= 1)).all()
    sizes = [float(data.nbytes[bd.Route(raw.index, 0, q)].mean()) for q in bd.JPEG_QUALITIES]
    assert sizes[0] > sizes[-1]  # q95 is bigger than q30
    for c in m.cuts:  # what the replay's heads return: the real activations and predictions, per frame
        if c.kind is not CutKind.RAW:
            assert len(data.outputs[c.index]) == 6
            acts, pred = data.outputs[c.index][0]
            assert pred is not None and pred.confidence == pytest.approx(data.conf[c.index][0])
            assert sorted(acts) == ([] if c.kind is CutKind.DEVICE else sorted(t.name for t in c.tensors))
    assert data.frames is not None and len(data.frames) == 6
    assert (data.cloud_ok[bd.Route(raw.index)] == (data.cloud_cls[bd.Route(raw.index)] == data.labels)).all()


def test_an_uninformative_exit_is_not_a_candidate_under_an_escalation_rate_target() -> None:
    # Escalating at most 30 % puts tau at 0 (every frame answered by an exit 60 % right): the cascade
    # accuracy 0.6 is 0.3 below the float model, beyond the 0.01 budget, so no split cut is a candidate.
    device = {k: v for k, v in PROFILE["device"].items() if k != "target_accuracy"}
    cfg = parse_config({**PROFILE, "device": {**device, "target_escalation_rate": 0.3}})
    m = fake_manifest()
    s = bd.make_setup(m, cfg, fake_data(m))
    assert {r.cut for r in s.candidates} == {0, 3}
    assert {r.cut for r in setup().candidates} == {0, 1, 2, 3}  # target_accuracy 0.9: tau 0.9, cascade 0.91


def test_every_workload_has_its_docs_boards_and_the_live_check_runs_the_demos_defaults() -> None:
    from converter.workloads import DEFAULT_WORKLOAD, names
    from sdk.defaults import DEFAULT_BOARD

    assert set(bd.RUN_BOARDS) == set(names())  # `benchmarks.run dynamic` replays each workload it finds
    assert bd.LIVE_SETUP == (DEFAULT_WORKLOAD, DEFAULT_BOARD)
