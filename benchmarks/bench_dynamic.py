"""Dynamic vs static cuts: the real device runner replayed on a bandwidth trace in simulated time.

    splitedge bench dynamic --bundle BUNDLE --trace FILE [--board NAME] [--fps F] [--duration S] [--json] [--live]
    python -m benchmarks.run dynamic          # the docs/BENCHMARKS.md section (every shared trace, three boards)

Without ``--board`` the board is the demo's (``sdk.defaults.DEFAULT_BOARD``); without ``--link-ms`` every
offloaded frame pays an LTE round trip, ``sdk.defaults.CELLULAR_RTT_MS`` (50 ms), as in ``splitedge demo``.
The docs tables replay every trace at 20, 50 and 100 ms (``sdk.defaults.BENCH_RTTS_MS``).

The replay itself (measuring a bundle; the real ``DeviceRunner`` with its policy and estimator in simulated
time over a simulated trace link) is ``benchmarks.dynamic_replay`` (its docstring describes the method);
this module reports it: the comparison table, the gains, the live run through the real processes and its
gap to the replay (``--live``: mean latency, cuts and answers frame by frame), the command line and the
docs/BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.dynamic_replay import (
    DEFAULT_FRAMES,
    JPEG_QUALITIES,
    FrameData,
    PolicyRun,
    Route,
    Scenario,
    Setup,
    answers_run,
    compare,
    dynamic_policy,
    make_setup,
    measure,
    oracle_policy,
    pinned_policy,
    reference_frames,
    replay,
)
from device_runner.runner import codec_for
from sdk.config import DeviceConfig, load_board
from sdk.defaults import BENCH_RTTS_MS, CELLULAR_RTT_MS, DEFAULT_BOARD
from sdk.manifest import Manifest, load_manifest
from sdk.traces import BandwidthTrace, load_trace, pick_trace, shared_traces, synthetic_trace

__all__ = [
    "DEFAULT_FRAMES", "JPEG_QUALITIES", "FrameData", "PolicyRun", "Route", "Scenario", "Setup", "compare",
    "dynamic_policy", "gains", "live", "live_gap", "main", "make_setup", "measure", "oracle_policy", "parse_args",
    "pick_trace", "pinned_policy", "replay", "report", "run", "scenario", "table",
]  # fmt: skip  (the replay's names are re-exported: callers and tests use ``bench_dynamic.X``)


def gains(runs: Mapping[str, PolicyRun], policy: str) -> dict[str, dict[str, float]]:
    """G = mean |T_p - T_s| / T_s (THEORY.md), signed = mean (T_s - T_p) / T_s (> 0: faster), and the
    ratio of means 1 - mean T_p / mean T_s, of ``policy`` over each static baseline."""
    tp = runs[policy].latency_ms
    out = {}
    for name, r in runs.items():
        if len(r.latency_ms) != len(tp):  # another window (the live comparison)
            continue
        if name.startswith("static:") or name in ("best-static", "cloud-raw", "cloud-jpeg", "edge-only"):
            ts = np.maximum(r.latency_ms, 1e-9)
            out[name] = {"G": round(float(np.mean(np.abs(tp - ts) / ts)), 4),
                         "signed": round(float(np.mean((ts - tp) / ts)), 4),
                         "mean_gain": round(1.0 - float(tp.mean()) / float(ts.mean()), 4)}
    return out


def report(runs: Mapping[str, PolicyRun]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for name, r in runs.items():
        out[name] = r.summary()
        if name.startswith(("dynamic", "oracle")):
            out[name]["gain"] = gains(runs, name)
    return out


def table(runs: Mapping[str, PolicyRun]) -> str:
    o = float(runs["oracle"].latency_ms.mean())
    lines = ["| policy | route | mean ms | p95 ms | bytes/frame | accuracy | escalated | deadline | switches | vs oracle "
             "| estimate / true |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        m = r.summary()
        lines.append(f"| {name} | {m['route']} | {m['mean_ms']:.2f} | {m['p95_ms']:.2f} | {m['bytes_per_frame']:.0f} | "
                     f"{m['accuracy']:.3f} | {m['escalation_rate']:.1%} | {m['deadline_rate']:.1%} | {m['cut_switches']} | "
                     f"{float(r.latency_ms.mean()) / o - 1:+.1%} | {_tracking(m)} |")
    return "\n".join(lines)


def _tracking(summary: Mapping[str, object]) -> str:
    """The median estimate / true ratio and over how many answers of sent frames ("-": none)."""
    med = summary.get("estimate_over_true")
    return "-" if med is None else f"{med:.2f}x ({summary['estimate_samples']})"


# ---------------------------------------------------------------------------------------------- live
def live(bundle: Path, manifest: Manifest, config: DeviceConfig, sc: Scenario, *, n: int = DEFAULT_FRAMES,
         allowed_cuts: Sequence[int] | None = None) -> PolicyRun:
    """The real processes on ``sc``: an embedded broker, a cloud_tail worker, a DeviceRunner whose uplink
    follows the trace (TraceShaper), board timing emulated with ``--stretch``."""
    from cloud_tail.tails import TailSet
    from cloud_tail.worker import TailWorker, WorkerConfig
    from device_runner.link import TraceShaper
    from device_runner.runner import Answer, RunnerOptions
    from device_runner.wiring import wire_runner
    from sdk.broker import EmbeddedBroker
    from sdk.mqtt import MqttTransport

    x, y = reference_frames(n, manifest)
    answers: list[Answer] = []
    device = replace(config.device, device_id="bench-dynamic", fps_cap=sc.fps,
                     deadline_ms=sc.deadline_ms if sc.deadline_ms is not None else 3_600_000.0)
    cfg = replace(config, device=device)
    with EmbeddedBroker() as broker:
        cloud = MqttTransport(broker.url, client_id="bench-dynamic-tail")
        # The replay's cloud times are the manifest's tail times, which the converter measured on all the host's
        # cores (converter/convert.py, cloud_threads): the live worker runs its tails on as many, or the raw
        # route's ResNet-50 took 62 ms at the worker's default 1 thread against 32 ms replayed (docs/DYNAMIC.md).
        tails = TailSet(bundle, manifest=manifest, threads=os.cpu_count() or 1)
        tails.load_all()
        worker = TailWorker(cloud, tails, WorkerConfig("bench-dynamic-w1"))
        worker.start()
        shaper = TraceShaper(sc.trace, latency_s=sc.link_ms / 1000.0)
        runner = wire_runner(cfg, MqttTransport(broker.url, client_id="bench-dynamic"), bundle=bundle,
                             manifest=manifest, shaper=shaper, on_answer=answers.append,
                             policy_overrides={"allowed_cuts": tuple(allowed_cuts) if allowed_cuts else None},
                             options=RunnerOptions(stretch_emulated=True))
        try:
            runner.start()
            shaper.t0 = time.time()
            summary = runner.run((x[i % len(x)] for i in itertools.count()), frames=sc.frames)
        finally:
            runner.close()
            worker.stop()
            cloud.close()
    return answers_run("dynamic-live", answers, y, summary.switches, summary.probes, "live")


def live_gap(replayed: PolicyRun, real: PolicyRun) -> dict[str, float]:
    """How far the replay is from the live run on the same window: mean latency (relative), accuracy, the share
    of frames answered at the same cut and with the same class (by seq)."""
    same = {a.seq: a for a in replayed.answers}
    pairs = [(same[b.seq], b) for b in real.answers if b.seq in same]
    return {
        "mean_gap": round(float(real.latency_ms.mean()) / max(float(replayed.latency_ms.mean()), 1e-9) - 1.0, 4),
        "accuracy_gap": round(float(real.correct.mean() - replayed.correct.mean()), 4),
        "same_cut": round(float(np.mean([a.cut == b.cut for a, b in pairs])) if pairs else 0.0, 4),
        "same_answer": round(float(np.mean([a.cls == b.cls for a, b in pairs])) if pairs else 0.0, 4),
    }


# ---------------------------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="splitedge bench dynamic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    from converter.workloads import DEFAULT_WORKLOAD, names

    p.add_argument("--workload", choices=names(), default=DEFAULT_WORKLOAD,
                   help=f"the model and frames (default {DEFAULT_WORKLOAD}, as the demo; splitedge reference --list)")
    p.add_argument("--bundle", type=Path, help="default: the workload's bundle (built/reused)")
    p.add_argument("--trace", help="a mahimahi .up or 'seconds Mbit/s' file (default: the demo's, sdk.defaults.DEFAULT_TRACE from "
                   "the shared traces, else the synthetic stand-in; 'synthetic' forces it)")
    p.add_argument("--board", default=DEFAULT_BOARD, help=f"a profile name or path (default {DEFAULT_BOARD}, as the demo)")
    p.add_argument("--fps", type=float, help="frame rate (default: the profile's fps_cap)")
    p.add_argument("--duration", type=float, help="seconds replayed (default: the trace's length, at most 300)")
    p.add_argument("--start", type=float, default=0.0, help="start this many seconds into the (looping) trace (default 0)")
    p.add_argument("--link-ms", type=float, default=CELLULAR_RTT_MS,
                   help=f"fixed round trip per offloaded frame, beyond bytes / bandwidth (default {CELLULAR_RTT_MS:g}: "
                        "LTE, sdk.defaults.CELLULAR_RTT_MS; the demo's --latency-ms)")
    p.add_argument("--deadline-ms", type=float, help="local fallback after this (default: the profile's; 0: none)")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="reference frames measured (default 200)")
    p.add_argument("--offload-only", action="store_true", help="exclude the device cut from the dynamic policy")
    p.add_argument("--json", action="store_true", help="one JSON object keyed by policy")
    p.add_argument("--live", action="store_true", help="also run the real processes and compare (dynamic)")
    p.add_argument("--live-duration", type=float, default=30.0, help="seconds of the live run (default 30)")
    args = p.parse_args(argv)
    if args.fps is not None and args.fps <= 0 or args.duration is not None and args.duration <= 0:
        p.error(f"--fps and --duration must be > 0, got {args.fps} and {args.duration}")
    if args.start < 0:
        p.error(f"--start must be >= 0, got {args.start}")
    if args.frames < 1:
        p.error(f"--frames must be >= 1, got {args.frames}")
    return args


def reference_bundle(workload: str = "digits") -> tuple[Path, Manifest]:
    """(folder, manifest) of a workload's bundle, built on first use (converter.reference.bundle_path)."""
    from converter.reference import bundle_path

    return bundle_path(workload)


def scenario(trace: BandwidthTrace, config: DeviceConfig, *, fps: float | None = None, duration: float | None = None,
             link_ms: float = CELLULAR_RTT_MS, deadline_ms: float | None = None) -> Scenario:
    """Defaults from the profile: its fps and deadline (``deadline_ms=0``: none); the trace's length, <= 300 s;
    an LTE round trip (``sdk.defaults.CELLULAR_RTT_MS``)."""
    deadline = config.device.deadline_ms if deadline_ms is None else (deadline_ms or None)
    return Scenario(trace, fps or config.device.fps_cap, duration or min(trace.period, 300.0), link_ms, deadline)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _, trace, note = pick_trace(args.trace)  # the demo's (sdk.traces): fails before a bundle is built
    config = load_board(args.board)
    bundle, manifest = (args.bundle, load_manifest(args.bundle)) if args.bundle else reference_bundle(args.workload)
    trace = trace.shifted(args.start)
    if note:
        print(f"note: {note}", file=sys.stderr)
    data = measure(bundle, manifest, n=args.frames, codec=codec_for(config.device.codec))
    setup = make_setup(manifest, config, data, offload_only=args.offload_only)
    sc = scenario(trace, config, fps=args.fps, duration=args.duration, link_ms=args.link_ms, deadline_ms=args.deadline_ms)
    runs = compare(setup, sc)
    for n in setup.notes:
        print(f"note: {n}", file=sys.stderr)
    gap = None
    if args.live:
        lsc = replace(sc, duration_s=min(sc.duration_s, args.live_duration))
        replayed = compare(setup, lsc, diagnostics=False)["dynamic"]
        live_run = live(bundle, manifest, config, lsc, n=args.frames, allowed_cuts=sorted({r.cut for r in setup.candidates}))
        runs = {**runs, "dynamic-replay-live-window": replayed, "dynamic-live": live_run}
        gap = live_gap(replayed, live_run)
    if args.json:
        out: dict[str, object] = dict(report(runs))
        if gap is not None:
            out["live-gap"] = gap
        print(json.dumps(out))
        return 0
    print(f"{trace.name}: mean {trace.mean_rate() * 8 / 1e6:.2f} Mbit/s, board {config.board.name}, {sc.fps:g} fps, "
          f"{sc.duration_s:g} s, deadline {sc.deadline_ms} ms, link {sc.link_ms} ms, codec {data.codec}")
    print(table(runs))
    if gap is not None:
        print(f"live vs replay (same {lsc.duration_s:g} s): mean {gap['mean_gap']:+.1%} (goal within 10 %), accuracy "
              f"{gap['accuracy_gap']:+.3f}, same cut {gap['same_cut']:.1%}, same answer {gap['same_answer']:.1%}")
    return 0


# ---------------------------------------------------------------------------------------------- docs
#: workload -> (board, seconds replayed per trace (<= the trace's length), offload-only table too) for the docs
RUN_BOARDS: dict[str, tuple[tuple[str, float, bool], ...]] = {
    "mobilenetv2-fashion": (("zero2w", 300.0, False),),
    "resnet50-fashion": (("zero2w", 300.0, False),),
    "resnet50-fashion-224": (("zero2w-offload", 300.0, False),),
    "digits": (("zero2w-offload", 300.0, True),),
}
LIVE_SECONDS = 30.0
#: (workload, board) of the 3-start robustness table and the replay-vs-live check: where the policy offloads
#: (the demo's defaults: the raw frame as JPEG pays at an LTE round trip, docs/DYNAMIC.md "Session 10")
LIVE_SETUP = ("resnet50-fashion-224", "zero2w-offload")


def _row(trace: BandwidthTrace, runs: Mapping[str, PolicyRun], rtt_ms: float) -> str:
    def mean(n: str) -> str:
        return f"{float(runs[n].latency_ms.mean()):.2f}" if n in runs else "-"

    d, o, b = (float(runs[n].latency_ms.mean()) for n in ("dynamic", "oracle", "best-static"))
    g = gains(runs, "dynamic")["best-static"]
    m = runs["dynamic"].summary()
    return (f"| {trace.name} | {rtt_ms:g} | {trace.mean_rate() * 8 / 1e6:.2f} | {d:.2f} / {m['p95_ms']:.1f} | "
            f"{mean('oracle')} | "
            f"{runs['best-static'].route} {b:.2f} | {mean('edge-only')} | {mean('cloud-raw')} | {mean('cloud-jpeg')} | "
            f"{d / o - 1:+.1%} | {g['mean_gain']:+.1%} | {g['G']:.3f} | {m['accuracy']:.3f} | {m['cut_switches']} |")


def _why(trace: BandwidthTrace, runs: Mapping[str, PolicyRun], rtt_ms: float) -> str:
    names = ("dynamic", "dynamic-no-probes", "dynamic-perfect-bw", "dynamic-escalated-cost", "oracle-link", "oracle")
    cells = " | ".join(f"{float(runs[n].latency_ms.mean()):.2f}" for n in names)
    d = runs["dynamic"].summary()
    return f"| {trace.name} | {rtt_ms:g} | {cells} | {d['probes']} | {d['deadline_rate']:.1%} | {_tracking(d)} |"


START_FRACTIONS = (0.0, 1 / 3, 2 / 3)  # of each trace's period: where the robustness replays start
START_SECONDS = 300.0  # replayed from each start


def _starts(setup: Setup, config: DeviceConfig, traces: Sequence[BandwidthTrace]) -> list[str]:
    """One window per trace says little about a policy on a bursty link: the same trace from three
    start points, on the board where the policy offloads."""
    board = config.board.name
    out = [f"\n### {board}: each trace from {len(START_FRACTIONS)} start points ({START_SECONDS:g} s each, RTT "
           f"{CELLULAR_RTT_MS:g} ms)\n",
           f"```\nsplitedge bench dynamic --board {board} --trace TRACE --duration {START_SECONDS:g} --start S\n```\n",
           "| trace | start s | dynamic | oracle | best static | edge-only | vs oracle | vs best static | vs edge-only |\n|"
           + "---|" * 9]
    for trace in traces:
        sums = np.zeros(4)
        for f in START_FRACTIONS:
            start = round(trace.period * f)
            runs = compare(setup, scenario(trace.shifted(start), config, duration=START_SECONDS), diagnostics=False)
            d, o, b, e = (float(runs[n].latency_ms.mean()) for n in ("dynamic", "oracle", "best-static", "edge-only"))
            sums += (d, o, b, e)
            out.append(f"| {trace.name} | {start} | {d:.2f} | {o:.2f} | {runs['best-static'].route} {b:.2f} | {e:.2f} | "
                       f"{d / o - 1:+.1%} | {d / b - 1:+.1%} | {d / e - 1:+.1%} |")
        d, o, b, e = sums / len(START_FRACTIONS)
        out.append(f"| **{trace.name}, mean** | | **{d:.2f}** | {o:.2f} | {b:.2f} | {e:.2f} | **{d / o - 1:+.1%}** | "
                   f"**{d / b - 1:+.1%}** | **{d / e - 1:+.1%}** |")
    return out


def _workload_tables(workload: str, traces: Sequence[BandwidthTrace]) -> list[str]:
    """The per-board tables of one workload: every trace at every round trip of BENCH_RTTS_MS."""
    bundle, manifest = reference_bundle(workload)
    out = [f"\n### Workload `{workload}` ({manifest.model_name}, {'x'.join(map(str, manifest.input.shape))}, "
           f"{len(manifest.cuts)} cuts)\n"]
    head = ("| trace | RTT ms | Mbit/s | dynamic mean / p95 | oracle | best static | edge-only | cloud-raw | cloud-jpeg | "
            "vs oracle | gain vs best static | G | accuracy | switches |\n|" + "---|" * 14)
    why_head = ("| trace | RTT ms | dynamic | no probes | perfect bw | no exit in plan | oracle-link | oracle | probes | "
                "deadline | estimate / true |\n|" + "---|" * 11)
    for board, seconds, with_offload_only in RUN_BOARDS[workload]:
        config = load_board(board)
        data = measure(bundle, manifest, codec=codec_for(config.device.codec))
        for offload_only in (False, True) if with_offload_only else (False,):
            setup = make_setup(manifest, config, data, offload_only=offload_only)
            flag = " --offload-only" if offload_only else ""
            rows, whys = [], []
            for trace in traces:
                for rtt in BENCH_RTTS_MS:
                    runs = compare(setup, scenario(trace, config, duration=seconds, link_ms=rtt))
                    rows.append(_row(trace, runs, rtt))
                    whys.append(_why(trace, runs, rtt))
            what = "device cut excluded (offload only)" if offload_only else "all cuts"
            out += [f"\n#### {workload} on {board}: {what}, {config.device.fps_cap:g} fps, deadline "
                    f"{config.device.deadline_ms:g} ms, codec {data.codec}, up to {seconds:g} s per trace\n",
                    f"```\nsplitedge bench dynamic --workload {workload} --board {board} --trace TRACE "
                    f"--duration {seconds:g} --link-ms RTT{flag}\n```\n",
                    head, *rows, "\nWhere the dynamic policy loses time (mean ms):\n", why_head, *whys]
            out += [f"\nnote: {n}" for n in setup.notes]
    return out


def run(workloads: Sequence[str] | None = None) -> str:
    """docs/BENCHMARKS.md: every shared trace (synthetic when none), per workload (the real-scale ones whose
    trained model is in this checkout, and digits) on a fast and a slow board."""
    from converter.workloads import get, names

    chosen = [w for w in (workloads or names()) if get(w).asset.is_file()]
    missing = [w for w in (workloads or names()) if w not in chosen]
    paths = shared_traces()
    traces = [load_trace(p) for p in paths] or [synthetic_trace(0)]
    out = ["Replay of each trace: the real device runner, policy and estimator in simulated time (exact FIFO "
           "uplink, heads/tails/bytes/exits measured on "
           f"{DEFAULT_FRAMES} labelled test frames of each workload; see docs/DYNAMIC.md). Latencies in board ms; "
           "deadline = the profile's. `RTT ms`: the fixed round trip each offloaded frame pays beyond bytes / "
           f"bandwidth (THEORY.md; {', '.join(f'{r:g}' for r in BENCH_RTTS_MS)} ms: near the operator's core, LTE - "
           f"the CLI's and the demo's default, {CELLULAR_RTT_MS:g} ms, sdk.defaults -, a loaded cell or 3G). "
           "`vs oracle`: dynamic's mean over the per-frame oracle's; `gain`: 1 - mean(dynamic) / mean(best static in "
           "hindsight); G: THEORY.md's mean |T_dyn - T_static| / T_static. Board times: this host's measured "
           "1-thread times x the board's factor for the model's family (firmware_configs/README.md)."]
    if not paths:
        out.append("\n**No shared traces found: the synthetic stand-in (`sdk.traces.synthetic_trace(0)`) is used.**")
    out += [f"\n_Workload `{w}` skipped: its trained model is not in this checkout ({get(w).train_command})._"
            for w in missing]
    for workload in chosen:
        out += _workload_tables(workload, traces)
    workload, board = LIVE_SETUP if LIVE_SETUP[0] in chosen else ("digits", "zero2w-offload")
    bundle, manifest = reference_bundle(workload)
    config = load_board(board)
    setup = make_setup(manifest, config, measure(bundle, manifest, codec=codec_for(config.device.codec)))
    starts = _starts(setup, config, traces)
    starts[0] = starts[0].replace(f"### {board}:", f"### {workload} on {board}:")
    starts[1] = starts[1].replace("splitedge bench dynamic --board", f"splitedge bench dynamic --workload {workload} --board")
    out += starts
    # Replay vs reality on one trace: the board that offloads, a short window.
    sc = scenario(traces[0], config, duration=LIVE_SECONDS)
    rep_run = compare(setup, sc, diagnostics=False)["dynamic"]
    live_run = live(bundle, manifest, config, sc, allowed_cuts=sorted({r.cut for r in setup.candidates}))
    rep, real, gap = rep_run.summary(), live_run.summary(), live_gap(rep_run, live_run)
    out += [f"\n### Replay vs live ({workload} on {config.board.name}, {traces[0].name}, first {LIVE_SECONDS:g} s, "
            f"RTT {sc.link_ms:g} ms)\n",
            f"```\nsplitedge bench dynamic --workload {workload} --board {config.board.name} --trace TRACE "
            f"--duration {LIVE_SECONDS:g} --live\n```\n",
            "| dynamic | mean ms | p95 ms | accuracy | escalated | deadline | bytes/frame |\n|---|---|---|---|---|---|---|"]
    for name, m in (("replay", rep), ("live", real)):
        out.append(f"| {name} | {m['mean_ms']:.2f} | {m['p95_ms']:.2f} | {m['accuracy']:.3f} | {m['escalation_rate']:.1%} | "
                   f"{m['deadline_rate']:.1%} | {m['bytes_per_frame']:.0f} |")
    out.append(f"\nLive vs replay: mean {gap['mean_gap']:+.1%} (goal within 10 %), accuracy {gap['accuracy_gap']:+.3f}, "
               f"same cut {gap['same_cut']:.1%} and same answer {gap['same_answer']:.1%} of the frames (by seq). "
               "Both are the same runner, policy and estimator; the replay leaves out the runner's per-frame Python "
               "time, the broker hop and the worker's batching wait, and its head times are the 10th percentile of "
               "back-to-back invokes where live times each frame's warm invoke (docs/DYNAMIC.md, 'Replay vs live').")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
