"""Per-frame overhead of the device runner beyond the interpreter's invoke time.

Run: ``python -m benchmarks.bench_device [BUNDLE]``. Prints a Markdown table headed by that command.

For each path (early exit answers locally; escalation: pack + stamp + publish on an in-memory broker;
the device cut) it runs ``DeviceRunner.process`` on seeded synthetic frames and subtracts the LiteRT
invoke times the runner's own models reported (head + exit, 1 thread, no timing emulation). What is
left is the runner: policy decision (a planner solve), bookkeeping, packing, publishing, telemetry.
Goal: overhead <= 5 % of the head's invoke time. The bundle is the reference bundle
(``converter.reference``, built on first use) unless a path is given or ``SPLITEDGE_BENCH_BUNDLE`` is set.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from device_runner.heads import CutOutput, LiteRTHeads
from device_runner.policy import Choice, CutPolicy
from device_runner.runner import DeviceRunner, RunnerOptions
from device_runner.sources import SyntheticSource
from sdk.config import parse_config
from sdk.manifest import CutKind, CutSpec, Manifest, load_manifest
from sdk.transport import InMemoryHub

COMMAND = "python -m benchmarks.bench_device"


def _bundle(path: str | None) -> Path:
    path = path or os.environ.get("SPLITEDGE_BENCH_BUNDLE")
    if path:
        return Path(path)
    from converter.reference import build_reference_bundle, default_bundle_dir

    build_reference_bundle(default_bundle_dir())
    return default_bundle_dir()


class _Timed:
    """Wraps LiteRTHeads and sums the invoke times (head + exit) the interpreters reported."""

    def __init__(self, inner: LiteRTHeads) -> None:
        self.inner = inner
        self.emulated = inner.emulated
        self.invoke_ms = 0.0
        self.head_ms = 0.0

    def run(self, cut: CutSpec, frame: np.ndarray) -> CutOutput:
        out = self.inner.run(cut, frame)
        self.invoke_ms += out.head_ms + out.exit_ms
        self.head_ms += out.head_ms
        return out


def _config() -> object:
    return parse_config({
        "board": {"name": "bench", "cpu": "host", "threads": 1, "memory_budget_mb": 512, "speed_factor": 1.0,
                  "speed_factor_source": "this machine"},
        "device": {"device_id": "bench-01", "fps_cap": 1000, "deadline_ms": 60_000, "target_accuracy": 0.5,
                   "bits": [8, 4], "codec": "none", "telemetry_interval_s": 1.0},
        "broker": {"url": "mqtt://127.0.0.1:1883"},
    })  # fmt: skip


def measure(bundle: Path, manifest: Manifest, cut: int, bits: int, tau: float, frames: int = 300) -> dict[str, float]:
    cfg = _config()
    hub = InMemoryHub(synchronous=False)  # frames queue in the hub; nothing answers inside the timed call
    heads = _Timed(LiteRTHeads(bundle, manifest, cfg.board))  # type: ignore[attr-defined]
    policy = CutPolicy(manifest, cfg.device, initial=Choice(cut, bits), allowed_cuts=[cut], probe_every=0,  # type: ignore[attr-defined]
                       tau_override=tau)
    runner = DeviceRunner(manifest, cfg, hub.transport("bench-01"), heads, policy=policy,  # type: ignore[arg-type]
                          options=RunnerOptions(max_inflight=frames + 10))
    runner.start()
    source = iter(SyntheticSource(tuple(manifest.input.shape), seed=0))
    for _ in range(20):  # warm-up: load the models, fill caches
        runner.process(next(source))
    totals, invokes, heads_ms = [], [], []
    for _ in range(frames):
        frame = next(source)
        heads.invoke_ms = heads.head_ms = 0.0
        t0 = time.perf_counter()
        runner.process(frame)
        totals.append((time.perf_counter() - t0) * 1000.0)
        invokes.append(heads.invoke_ms)
        heads_ms.append(heads.head_ms)
        hub.pump()
    runner.abandon("bench done")
    overhead = np.array(totals) - np.array(invokes)
    head = float(np.median(heads_ms))
    return {
        "total": float(np.median(totals)), "invoke": float(np.median(invokes)), "head": head,
        "overhead": float(np.median(overhead)), "p90": float(np.percentile(overhead, 90)),
        "ratio": float(np.median(overhead)) / head if head else float("nan"),
    }  # fmt: skip


def run(bundle: str | None = None, frames: int = 300) -> str:
    root = _bundle(bundle)
    manifest = load_manifest(root)
    splits = [c for c in manifest.cuts if c.kind is CutKind.SPLIT]
    rows: list[tuple[str, dict[str, float]]] = []
    if splits:
        mid = splits[len(splits) // 2]
        rows.append((f"exit answers (cut {mid.index})", measure(root, manifest, mid.index, 8, 0.0, frames)))
        rows.append((f"escalate, 8 bits (cut {mid.index})", measure(root, manifest, mid.index, 8, 2.0, frames)))
        rows.append((f"escalate, 4 bits (cut {mid.index})", measure(root, manifest, mid.index, 4, 2.0, frames)))
        first = splits[0]
        rows.append((f"escalate, 4 bits (cut {first.index})", measure(root, manifest, first.index, 4, 2.0, frames)))
    if manifest.device_cut is not None:
        d = manifest.device_cut.index
        rows.append((f"device cut (cut {d})", measure(root, manifest, d, 0, 0.0, frames)))
    lines = [
        f"`{COMMAND}` - {platform.machine()}, Python {platform.python_version()}, 1 LiteRT thread, "
        f"bundle {manifest.model_name} ({root}), {frames} frames per row, medians",
        "",
        "| path | process() ms | invoke ms (head+exit) | head ms | runner overhead ms | p90 overhead ms | overhead / head |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['total']:.3f} | {r['invoke']:.3f} | {r['head']:.3f} | {r['overhead']:.3f} | "
            f"{r['p90']:.3f} | {r['ratio'] * 100:.1f} % |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(sys.argv[1] if len(sys.argv) > 1 else None))
