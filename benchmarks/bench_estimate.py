"""Does the device's bandwidth estimate track the link? Live, on a link of known rate and round trip.

    python -m benchmarks.bench_estimate [--workload mobilenetv2-fashion] [--board pi4] \\
        [--rates 1,5,20] [--rtts 20,50] [--duration 20]

For each (rate, round trip): an embedded Mosquitto, a real ``cloud_tail`` ``TailWorker`` and the real
``DeviceRunner`` (its policy and estimator, LiteRT heads with the board's emulated timing) publishing
through ``device_runner.link.ShapedTransport`` over a ``ConstantRateShaper`` of that rate plus the round
trip (charged on the uplink, as in the demo). Nothing is pinned: the policy decides what to send, so on a
board where no split can pay at that round trip only a few probes go out (that is the point of the
probe rules). Reported per run: the frames that sent a payload, the estimator's network samples, the
link latency it learnt (the shaper's round trip + the broker and worker path) and its bandwidth
estimate over the true rate at the end and as the median over the answers after the first sample.

Timing is emulated on a shared host: the figures move between runs (docs/DYNAMIC.md, "Session 8").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sdk.planner import parse_rate

__all__ = ["EstimateRun", "main", "parse_args", "run_one"]


@dataclass(frozen=True, slots=True)
class EstimateRun:
    rate: float  # bytes/s
    rtt_ms: float
    frames: int
    sent: int  # answers of frames that sent a payload (shadow probes are not counted: they answer nothing)
    samples: int  # the estimator's network samples
    link_ms: float
    final_ratio: float | None  # estimate / true rate at the end (None: never measured)
    median_ratio: float | None  # over the answers after the first bandwidth measurement

    def row(self) -> str:
        def r(x: float | None) -> str:
            return "-" if x is None else f"{x:.2f}x"

        return (f"| {self.rate * 8 / 1e6:g} | {self.rtt_ms:g} | {self.frames} | {self.sent} | {self.samples} | "
                f"{self.link_ms:.1f} | {r(self.median_ratio)} | {r(self.final_ratio)} |")


def run_one(bundle: Path, frames_npz: Path, board: str, rate: float, rtt_ms: float, duration: float) -> EstimateRun:
    from cloud_tail.tails import TailSet
    from cloud_tail.worker import TailWorker, WorkerConfig
    from device_runner.heads import LiteRTHeads
    from device_runner.link import ConstantRateShaper
    from device_runner.runner import Answer, DeviceRunner
    from device_runner.sources import NpzSource
    from device_runner.wiring import wire_runner
    from sdk.broker import EmbeddedBroker
    from sdk.config import load_board, with_overrides
    from sdk.manifest import load_manifest
    from sdk.mqtt import MqttTransport

    manifest = load_manifest(bundle)
    with EmbeddedBroker() as broker:
        cloud = MqttTransport(broker.url, client_id="est-tail")
        worker = TailWorker(cloud, TailSet(bundle, manifest=manifest), WorkerConfig("est-w1"))
        worker.start()
        cfg = with_overrides(load_board(board), broker_url=broker.url, device_id="est-dev",
                             source=f"npz:{frames_npz}")
        heads = LiteRTHeads(bundle, manifest, cfg.board)
        shaper = ConstantRateShaper(rate, latency_s=rtt_ms / 1000.0)
        ratios: list[float] = []
        sent = 0
        holder: list[DeviceRunner] = []

        def on_answer(a: Answer) -> None:
            nonlocal sent
            sent += bool(a.bytes)
            bw = holder[0].estimator.bandwidth if holder else None
            if bw is not None:
                ratios.append(bw / rate)

        runner = wire_runner(cfg, MqttTransport(broker.url, client_id="est-dev"), bundle=bundle, manifest=manifest,
                             heads=heads, shaper=shaper, on_answer=on_answer)
        holder.append(runner)
        source = NpzSource(frames_npz, tuple(manifest.input.shape), loop=True)
        heads.run(manifest.cuts[-1], next(iter(source)))  # load a model before the clock starts
        end = time.monotonic() + duration

        def frames():  # type: ignore[no-untyped-def]
            for f in source:
                if time.monotonic() > end:
                    return
                yield f

        try:
            summary = runner.run(frames())
            est = runner.estimator  # read before close: the runner's disconnect is a link of zero bandwidth
            final = est.bandwidth / rate if est.bandwidth is not None else None
            link_ms, samples = est.link_ms, est.network_samples
        finally:
            runner.close()
            worker.stop()
            cloud.close()
    return EstimateRun(rate, rtt_ms, summary.frames, sent, samples, link_ms, final,
                       statistics.median(ratios) if ratios else None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_estimate", description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="mobilenetv2-fashion", help="a converter.workloads name")
    p.add_argument("--board", default="pi4", help="board profile (default pi4)")
    p.add_argument("--rates", default="1Mbit/s,5Mbit/s,20Mbit/s", help="comma-separated link rates")
    p.add_argument("--rtts", default="20,50", help="comma-separated round trips in ms")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per run (default 20)")
    args = p.parse_args(argv)
    try:
        args.rate_list = [parse_rate(r) for r in args.rates.split(",")]
        args.rtt_list = [float(r) for r in args.rtts.split(",")]
    except ValueError as exc:
        p.error(f"--rates/--rtts: {exc}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from converter.reference import bundle_path
    from converter.workloads import get

    bundle, _ = bundle_path(args.workload)
    frames_npz = Path(bundle).parent / f"bench-estimate-frames-{args.workload}.npz"
    if not frames_npz.exists():
        from converter.reference_data import save_npz

        frames = get(args.workload).frames(100, seed=2024, split="test")
        save_npz(frames_npz, frames.x, frames.y)
    print(f"workload {args.workload}, board {args.board}, {args.duration:g} s per run, constant-rate link + round "
          "trip on the uplink (device_runner.link), real Mosquitto and tail worker\n")
    print("| Mbit/s | RTT ms | frames | sent | net samples | link ms learnt | median est/true | final est/true |")
    print("|---|---|---|---|---|---|---|---|")
    for rtt in args.rtt_list:
        for rate in args.rate_list:
            print(run_one(Path(bundle), frames_npz, args.board, rate, rtt, args.duration).row(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
