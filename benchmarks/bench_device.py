"""Per-frame overhead of the device runner beyond the interpreter's work, on this host and under QEMU aarch64.

Run: ``python -m benchmarks.bench_device [BUNDLE] [--frames N] [--qemu | --no-qemu] [--qemu-frames N]``.
Prints Markdown headed by that command (``benchmarks.run`` calls :func:`run` with its defaults).

For each path - the early exit answers locally; escalation (pack at 8 or 4 bits + stamp + publish on
an in-memory broker, the frame then waits in flight: nothing answers it during the run, and
``overdue_factor`` 0 keeps the runner from answering it early); the device
cut - it runs ``DeviceRunner.process`` on seeded synthetic frames with the cut and bit width pinned
(one candidate cut, one bit width, no probes; each row checks afterwards that the path it names is
the one that ran) and splits the wall time of each call:

* **invoke**: what the LiteRT interpreters reported (``LiteRTModel.last_invoke_ms``: copy the input
  in, ``invoke``, copy the output out), head + exit, 1 thread, no timing emulation;
* **overhead** = ``process()`` - invoke. The goal is overhead <= 5 % of the head's invoke time.
  It is further split into **policy** (``CutPolicy.decide``: the planner, cached while the
  estimates do not move), **model glue** (``LiteRTHeads.run`` around the invokes: model cache, feeds,
  int8 -> exit input, logits -> softmax / top-k) and **runner** (the rest: estimator update, wire
  encoding, send stamp, publish, in-flight bookkeeping, the answer, expire, telemetry check).
  The timing wrappers themselves (a few ``perf_counter`` calls) add ~1 us.
* **CPU**: on alternate frames the same split in thread CPU time (``process()`` minus the models'
  ``run()`` calls), which preemption on a loaded machine does not inflate. ``time.thread_time`` costs
  ~1 us a call, so it is read only on those frames (the models get a timing ``run`` for those frames
  only); the wall-time columns come from the others.

``--qemu`` (default: on when ``qemu-aarch64-static`` is installed; ``SPLITEDGE_BENCH_QEMU=0`` turns it
off) runs the same measurement as aarch64 code under QEMU user mode through ``scripts/qemu_device.sh
--module`` (its cached arm64 rootfs and wheels), with fewer frames, and reports it next to the host
figure with the emulation slowdown (QEMU head invoke / host head invoke). QEMU is not a timing
device: the slowdown differs per operation (PLATFORM.md: float numpy/LiteRT 150-600x, imports 17x),
so the QEMU overhead ratio says how the runner's Python and numpy scale against emulated XNNPACK
kernels, not what a Pi would measure. The bundle is the reference bundle (``converter.reference``,
built on first use) unless a path is given or ``SPLITEDGE_BENCH_BUNDLE`` is set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from device_runner.heads import CutOutput, LiteRTHeads
from device_runner.policy import Choice, CutPolicy
from device_runner.runner import DeviceRunner, RunnerOptions
from device_runner.sources import SyntheticSource
from device_runner.wiring import wire_runner
from sdk.config import BoardSpec, DeviceConfig, parse_config
from sdk.litert import LiteRTModel
from sdk.manifest import CutKind, CutSpec, Manifest, load_manifest
from sdk.transport import InMemoryHub

if TYPE_CHECKING:
    from benchmarks import _workloads

COMMAND = "python -m benchmarks.bench_device"
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "qemu_device.sh"
QEMU_TIMEOUT_S = 1800


def _bundle(path: str | None) -> Path:
    path = path or os.environ.get("SPLITEDGE_BENCH_BUNDLE")
    if path:
        return Path(path)
    from converter.reference import build_reference_bundle, default_bundle_dir

    build_reference_bundle(default_bundle_dir())
    return default_bundle_dir()


class _CpuTimer:
    """Thread CPU time of the models' ``run`` calls (``spent[0]``: all models, ``spent[1]``: heads only),
    read only on the frames that measure CPU time (``time.thread_time`` costs ~1 us a call): :meth:`on`
    gives every loaded model an instance-level ``run`` that times the class's, :meth:`off` removes it,
    so the wall-time frames call ``LiteRTModel.run`` itself and no wrapper lands in the glue figure."""

    def __init__(self) -> None:
        self.models: list[LiteRTModel] = []
        self.spent = [0.0, 0.0]

    def load(self, path: Path, threads: int) -> LiteRTModel:
        model = LiteRTModel(path, threads=threads, cpu_time=False)  # as LiteRTHeads loads it (no emulation)
        self.models.append(model)
        return model

    def on(self) -> None:
        for model in self.models:
            model.run = self._timed(model)  # type: ignore[method-assign]

    def off(self) -> None:
        for model in self.models:
            model.__dict__.pop("run", None)

    def _timed(self, model: LiteRTModel) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
        run, spent, is_head = LiteRTModel.run.__get__(model), self.spent, model.path.name.startswith("head")

        def timed(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            t0 = time.thread_time()
            try:
                return run(feeds)
            finally:
                ms = (time.thread_time() - t0) * 1000.0
                spent[0] += ms
                if is_head:
                    spent[1] += ms

        return timed


class _Timed:
    """Wraps LiteRTHeads: per call, the interpreters' reported time (head + exit), the wall time, and (via
    :class:`_CpuTimer`) the thread CPU time of the models' ``run`` calls."""

    def __init__(self, bundle: Path, manifest: Manifest, board: BoardSpec) -> None:
        self.cpu = _CpuTimer()
        self.inner = LiteRTHeads(bundle, manifest, board, loader=self.cpu.load)
        self.emulated = self.inner.emulated
        self.invoke_ms = self.head_ms = self.wall_ms = 0.0

    def run(self, cut: CutSpec, frame: np.ndarray) -> CutOutput:
        t0 = time.perf_counter()
        out = self.inner.run(cut, frame)
        self.wall_ms += (time.perf_counter() - t0) * 1000.0
        self.invoke_ms += out.head_ms + out.exit_ms
        self.head_ms += out.head_ms
        return out


def _timed_decide(policy: CutPolicy) -> list[float]:
    """Replace ``policy.decide`` on this instance by a timed call; returns the list the times go to."""
    spent = [0.0]
    decide: Callable[..., Any] = policy.decide

    def timed(est: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return decide(est)
        finally:
            spent[0] += (time.perf_counter() - t0) * 1000.0

    policy.decide = timed  # type: ignore[method-assign]
    return spent


def _config(bits: int = 8) -> DeviceConfig:
    return parse_config({
        "board": {"name": "bench", "cpu": "host", "threads": 1, "memory_budget_mb": 512, "speed_factor": 1.0,
                  "speed_factor_source": "this machine"},
        "device": {"device_id": "bench-01", "fps_cap": 1000, "deadline_ms": 60_000, "target_accuracy": 0.5,
                   "bits": [bits or 8], "codec": "none", "telemetry_interval_s": 1.0,
                   "overdue_factor": 0},  # escalated frames wait in flight (no early local answer)
        "broker": {"url": "mqtt://127.0.0.1:1883"},
    })  # fmt: skip


def measure(
    bundle: Path, manifest: Manifest, cut: int, bits: int, tau: float, frames: int = 300, *, warmup: int = 20
) -> dict[str, float]:
    """Median per-frame times (ms) of one pinned path; raises RuntimeError if another path ran."""
    cfg = _config(bits)
    hub = InMemoryHub(synchronous=False)  # frames queue in the hub; nothing answers inside the timed call
    heads = _Timed(bundle, manifest, cfg.board)
    policy = CutPolicy(manifest, cfg.device, initial=Choice(cut, bits), allowed_cuts=[cut], probe_every=0,
                       tau_override=tau)  # fmt: skip
    policy_ms = _timed_decide(policy)
    runner = wire_runner(cfg, hub.transport("bench-01"), manifest=manifest, heads=heads, policy=policy,  # type: ignore[arg-type]
                         options=RunnerOptions(max_inflight=2 * frames + warmup + 10))  # fmt: skip
    runner.start()
    source = iter(SyntheticSource(tuple(manifest.input.shape), seed=0))
    for _ in range(warmup):  # load the models, fill caches
        runner.process(next(source))
    cols: dict[str, list[float]] = {k: [] for k in ("total", "invoke", "head", "policy", "glue", "cpu", "model_cpu", "head_cpu")}
    sent_before = runner.bytes_sent
    cpu = heads.cpu.spent
    for i in range(2 * frames):  # alternately a wall-time frame and a CPU-time frame
        frame = next(source)
        heads.invoke_ms = heads.head_ms = heads.wall_ms = policy_ms[0] = cpu[0] = cpu[1] = 0.0
        if i % 2 == 0:
            t0 = time.perf_counter()
            runner.process(frame)
            cols["total"].append((time.perf_counter() - t0) * 1000.0)
            cols["invoke"].append(heads.invoke_ms)
            cols["head"].append(heads.head_ms)
            cols["policy"].append(policy_ms[0])
            cols["glue"].append(heads.wall_ms - heads.invoke_ms)
        else:
            heads.cpu.on()
            c0 = time.thread_time()
            runner.process(frame)
            cols["cpu"].append((time.thread_time() - c0) * 1000.0)
            heads.cpu.off()
            cols["model_cpu"].append(cpu[0])
            cols["head_cpu"].append(cpu[1])
        hub.pump()
    _check_path(runner, policy, manifest.cut(cut), bits, tau, 2 * frames, runner.bytes_sent - sent_before)
    runner.abandon("bench done")
    a = {k: np.array(v) for k, v in cols.items()}
    overhead = a["total"] - a["invoke"]
    rest = overhead - a["policy"] - a["glue"]
    head = float(np.median(a["head"]))
    med = {k: float(np.median(v)) for k, v in a.items()}
    return {
        **med, "overhead": float(np.median(overhead)), "p90": float(np.percentile(overhead, 90)),
        "runner": float(np.median(rest)), "ratio": float(np.median(overhead)) / head if head else float("nan"),
        "ratio_no_policy": float(np.median(overhead - a["policy"])) / head if head else float("nan"),
        "overhead_cpu": float(np.median(a["cpu"] - a["model_cpu"])),
        "ratio_cpu": float(np.median(a["cpu"] - a["model_cpu"])) / float(np.median(a["head_cpu"]))
        if float(np.median(a["head_cpu"])) else float("nan"),
        "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
        "frames": float(frames),
    }  # fmt: skip


def _check_path(
    runner: DeviceRunner, policy: CutPolicy, cut: CutSpec, bits: int, tau: float, frames: int, sent: int
) -> None:
    """The row measured what it names: the pinned choice held, and frames were answered/sent as expected."""
    current = policy.current
    problems = []
    if current != Choice(cut.index, bits):
        problems.append(f"the policy moved to {current}")
    escalates = cut.kind is CutKind.SPLIT and tau > 1.0
    if escalates and (sent <= 0 or runner.inflight < frames):
        problems.append(f"{sent} bytes sent, {runner.inflight} frames in flight (expected every frame escalated)")
    if not escalates and sent:
        problems.append(f"{sent} bytes sent (expected every frame answered on the device)")
    if problems:
        raise RuntimeError(f"bench path cut {cut.index} bits {bits} tau {tau}: " + "; ".join(problems))


#: wall-clock budget of one row's timed frames (wall + CPU-time frames) when ``frames`` is automatic: a 224 px
#: head of tens of ms gets fewer frames than the digits heads, within [MIN_FRAMES, MAX_FRAMES]
ROW_BUDGET_MS = 10_000.0
MIN_FRAMES, MAX_FRAMES = 30, 300
#: QEMU runs a target only if its rows fit this many seconds of emulation (head ms x EMULATION_SLOWDOWN)
QEMU_BUDGET_S = 300.0
EMULATION_SLOWDOWN = 450.0  # PLATFORM.md: float numpy/LiteRT 150-600x under QEMU user mode
GOAL = 0.05  #: overhead <= 5 % of the head's invoke


def paths(manifest: Manifest) -> list[tuple[str, CutSpec, int, float]]:
    """(name, cut, bits, tau) of the measured paths: the exit answering at the middle split cut, every split
    cut escalating at 8 and at 4 bits (the payload, and with it the packing, differs per cut), the device cut."""
    splits = [c for c in manifest.cuts if c.kind is CutKind.SPLIT]
    out: list[tuple[str, CutSpec, int, float]] = []
    if splits:
        mid = splits[len(splits) // 2]
        out.append((f"exit answers (cut {mid.index})", mid, 8, 0.0))
        for cut in splits:
            out += [(f"escalate, {b} bits (cut {cut.index})", cut, b, 2.0) for b in (8, 4) if b == 8 or b in manifest.bits]
    if manifest.device_cut is not None:
        out.append((f"device cut (cut {manifest.device_cut.index})", manifest.device_cut, 0, 0.0))
    return out


def auto_frames(cut: CutSpec, tau: float) -> int:
    """Frames for one row within ROW_BUDGET_MS, from the manifest's head (+ exit) time."""
    est = max(cut.head_ms + (cut.exit_ms if tau <= 1.0 else 0.0), 1e-3)
    return int(min(MAX_FRAMES, max(MIN_FRAMES, ROW_BUDGET_MS / (2.0 * est))))


def rows(
    bundle: Path, manifest: Manifest, frames: int | None = None, *, warmup: int = 20
) -> list[tuple[str, dict[str, float]]]:
    """The measured paths (:func:`paths`); ``frames`` per row, or None: :func:`auto_frames`."""
    out: list[tuple[str, dict[str, float]]] = []
    for name, cut, bits, tau in paths(manifest):
        n = frames if frames is not None else auto_frames(cut, tau)
        print(f"   device: {name}, {n} frames", file=sys.stderr, flush=True)
        out.append((name, measure(bundle, manifest, cut.index, bits, tau, n, warmup=warmup)))
    return out


def qemu_estimate_s(manifest: Manifest, frames: int, warmup: int = 3) -> float:
    """Seconds of emulated head invokes the QEMU run of ``manifest`` would take (host head ms x slowdown)."""
    ms = sum((2 * frames + warmup) * (cut.head_ms + cut.exit_ms) for _, cut, _, _ in paths(manifest))
    return ms * EMULATION_SLOWDOWN / 1000.0


def _qemu_enabled(qemu: bool | None) -> bool:
    if qemu is not None:
        return qemu
    return os.environ.get("SPLITEDGE_BENCH_QEMU", "1") != "0" and shutil.which("qemu-aarch64-static") is not None


def run_qemu(bundle: Path, frames: int, *, warmup: int = 3) -> tuple[dict[str, Any] | None, str]:
    """The same rows as aarch64 code under QEMU (scripts/qemu_device.sh --module); (result, error text)."""
    cmd = [str(SCRIPT), "--module", "benchmarks.bench_device", str(bundle), "--inner-json",
           "--frames", str(frames), "--warmup", str(warmup)]  # fmt: skip
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)}
    t0 = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=QEMU_TIMEOUT_S, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"QEMU run failed: {type(exc).__name__}: {exc}"
    wall = time.monotonic() - t0
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return None, f"QEMU run exited {done.returncode}: {tail}"
    result = json.loads(lines[-1])
    result["wall_s"] = wall
    return result, ""


def _yes(ratio: float) -> str:
    return "yes" if ratio <= GOAL else "no"


def _host_table(results: list[tuple[str, dict[str, float]]]) -> list[str]:
    lines = [
        "| path | frames | process() ms | invoke ms (head+exit) | head ms | overhead ms | p90 overhead ms "
        "| overhead / head | policy ms | model glue ms | runner ms | overhead without policy / head "
        "| CPU overhead ms | CPU overhead / head CPU | within 5 % (wall / CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results:
        lines.append(
            f"| {name} | {r['frames']:.0f} | {r['total']:.3f} | {r['invoke']:.3f} | {r['head']:.3f} | "
            f"{r['overhead']:.3f} | {r['p90']:.3f} | {r['ratio'] * 100:.1f} % | {r['policy']:.3f} | {r['glue']:.3f} | "
            f"{r['runner']:.3f} | {r['ratio_no_policy'] * 100:.1f} % | {r['overhead_cpu']:.3f} | "
            f"{r['ratio_cpu'] * 100:.1f} % | {_yes(r['ratio'])} / {_yes(r['ratio_cpu'])} |"
        )
    return lines


def _summary(measured: list[tuple[_workloads.Target, list[tuple[str, dict[str, float]]]]]) -> list[str]:
    """One line per workload: how many paths meet the goal, the worst and the device cut."""
    lines = [
        "| workload | model | head ms (min - max) | paths within 5 % (wall / CPU) | worst path: overhead / head "
        "(CPU) | device cut: overhead / head (CPU) |",
        "|---|---|---|---|---|---|",
    ]
    for target, results in measured:
        if not results:
            continue
        heads = [r["head"] for _, r in results]
        wall = sum(r["ratio"] <= GOAL for _, r in results)
        cpu = sum(r["ratio_cpu"] <= GOAL for _, r in results)
        worst_name, worst = max(results, key=lambda nr: nr[1]["ratio"])
        device = [(n, r) for n, r in results if n.startswith("device cut")]
        dev = (f"{device[0][1]['ratio'] * 100:.1f} % ({device[0][1]['ratio_cpu'] * 100:.1f} %)" if device else "-")
        lines.append(
            f"| {target.name} | {target.manifest.model_name} | {min(heads):.3f} - {max(heads):.3f} | "
            f"{wall} / {cpu} of {len(results)} | {worst_name}: {worst['ratio'] * 100:.1f} % "
            f"({worst['ratio_cpu'] * 100:.1f} %) | {dev} |"
        )
    return lines


def _qemu_table(host: list[tuple[str, dict[str, float]]], qemu: dict[str, Any]) -> list[str]:
    emulated = dict((name, r) for name, r in qemu["rows"])
    lines = [
        "| path | host head ms | QEMU head ms | emulation slowdown (QEMU / host head) | host overhead ms | "
        "QEMU overhead ms | QEMU overhead / head | QEMU policy / glue / runner ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, h in host:
        q = emulated.get(name)
        if q is None:
            lines.append(f"| {name} | {h['head']:.3f} | - | - | {h['overhead']:.3f} | - | - | - |")
            continue
        slow = q["head"] / h["head"] if h["head"] else float("nan")
        lines.append(
            f"| {name} | {h['head']:.3f} | {q['head']:.2f} | {slow:.0f}x | {h['overhead']:.3f} | {q['overhead']:.2f} | "
            f"{q['ratio'] * 100:.1f} % | {q['policy']:.2f} / {q['glue']:.2f} / {q['runner']:.2f} |"
        )
    return lines


def run(
    bundle: str | None = None,
    frames: int | None = None,
    *,
    workloads: _workloads.Spec = None,
    qemu: bool | None = None,
    qemu_frames: int = 30,
    warmup: int = 20,
) -> str:
    """The Markdown section: a summary over the workloads, then per workload the host table and (when enabled
    and affordable, :data:`QEMU_BUDGET_S`) the QEMU aarch64 table. ``frames`` None: :func:`auto_frames`."""
    from benchmarks import _workloads

    targets, notes = _workloads.targets(workloads, bundle)
    frames_text = (f"{frames} wall-time frames alternating with {frames} CPU-time frames" if frames is not None else
                   f"N wall-time frames alternating with N CPU-time frames, N = {ROW_BUDGET_MS / 1000:.0f} s / "
                   f"(2 x the manifest's head (+ exit) ms) within {MIN_FRAMES}-{MAX_FRAMES} (column frames: fewer "
                   "for a 224 px head)")
    lines = [
        f"`{COMMAND}` - host {_workloads.host()}, 1 LiteRT thread, board speed factor 1.0 (no timing emulation), "
        "no trace and no round trip: escalated frames go to an in-memory broker and nothing answers them. "
        f"Per row {frames_text}, after {warmup} warm-up; medians. "
        "invoke = the interpreters' reported time (input copy + invoke + output copy), head + exit; "
        "overhead = process() - invoke = policy + model glue + runner (see the module docstring); "
        "**goal: overhead <= 5 % of the head's invoke**. CPU columns: the same split in thread CPU time "
        "(process() minus the models' run() calls), which a loaded machine does not inflate.",
    ]
    measured: list[tuple[_workloads.Target, list[tuple[str, dict[str, float]]]]] = []
    blocks: list[str] = []
    for target in targets:
        root, manifest = target.root, target.manifest
        print(f"   device: {target.name}", file=sys.stderr, flush=True)
        host = rows(root, manifest, frames, warmup=warmup)
        measured.append((target, host))
        block = [
            f"### {target.name}",
            "",
            f"`{COMMAND} --workloads {target.name}` - {target.describe()}; frames: its labelled test frames' size, "
            f"seeded synthetic content; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs after the rows.",
            "",
            *_host_table(host),
        ]
        if _qemu_enabled(qemu):
            estimate = qemu_estimate_s(manifest, qemu_frames)
            if estimate > QEMU_BUDGET_S:
                block += ["", f"QEMU aarch64 figure not measured for {target.name}: ~{estimate / 60:.0f} min of emulated "
                              f"head invokes ({qemu_frames} + {qemu_frames} frames per row x head ms x "
                              f"~{EMULATION_SLOWDOWN:.0f}), over the {QEMU_BUDGET_S / 60:.0f} min budget of this "
                              f"benchmark; `{COMMAND} {root} --qemu --qemu-frames 3` measures it."]  # fmt: skip
            else:
                result, error = run_qemu(root, qemu_frames)
                block += ["", f"Under QEMU user mode (`{COMMAND} --workloads {target.name} --qemu`, scripts/qemu_device.sh's arm64 "
                              f"rootfs, QEMU_CPU=cortex-a72): {qemu_frames} (+ {qemu_frames} CPU-time) frames per row "
                              "after 3 warm-up (fewer: emulation is slow)."]  # fmt: skip
                if result is None:
                    block += ["", f"QEMU figure not measured: {error}"]
                else:
                    block[-1] += (f" Inner run: {result['machine']}, Python {result['python']}, "
                                  f"{result['wall_s']:.0f} s wall including emulated imports.")  # fmt: skip
                    block += ["", *_qemu_table(host, result)]
        else:
            block += ["", "QEMU aarch64 figure not measured (--no-qemu, SPLITEDGE_BENCH_QEMU=0, or no "
                          "qemu-aarch64-static)."]  # fmt: skip
        blocks.append("\n".join(block))
    return _workloads.document(lines, "Summary (the tables below have every row):",
                               _summary(measured) if measured else [], blocks, notes)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", nargs="?", help="one bundle folder instead of the workloads (or $SPLITEDGE_BENCH_BUNDLE)")
    p.add_argument("--workloads", default=None, help="comma-separated workload names or all (default: every "
                   "workload whose trained model exists, or $SPLITEDGE_BENCH_WORKLOADS)")
    p.add_argument("--frames", type=int, default=None,
                   help=f"timed frames per row (default: {ROW_BUDGET_MS / 1000:.0f} s of head time per row, "
                        f"{MIN_FRAMES}-{MAX_FRAMES})")
    p.add_argument("--warmup", type=int, default=20, help="untimed frames per row first (default 20)")
    q = p.add_mutually_exclusive_group()
    q.add_argument("--qemu", dest="qemu", action="store_const", const=True, default=None,
                   help="also measure under QEMU aarch64 (default: when qemu-aarch64-static is installed)")
    q.add_argument("--no-qemu", dest="qemu", action="store_const", const=False, help="host only")
    p.add_argument("--qemu-frames", type=int, default=30, help="timed frames per row under QEMU (default 30)")
    p.add_argument("--inner-json", action="store_true",
                   help="measure on this machine only and print one JSON line (what --qemu runs inside QEMU)")
    args = p.parse_args(argv)
    if (args.frames is not None and args.frames < 1) or args.warmup < 0 or args.qemu_frames < 1:
        p.error(f"need --frames >= 1, --warmup >= 0, --qemu-frames >= 1; got {args.frames}, {args.warmup}, "
                f"{args.qemu_frames}")  # fmt: skip
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.inner_json:
        root = _bundle(args.bundle)
        result = rows(root, load_manifest(root), args.frames, warmup=args.warmup)
        print(json.dumps({"machine": platform.machine(), "python": platform.python_version(), "rows": result}))
        return 0
    print(run(args.bundle, args.frames, workloads=args.workloads, qemu=args.qemu, qemu_frames=args.qemu_frames, warmup=args.warmup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
