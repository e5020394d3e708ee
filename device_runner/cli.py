"""``splitedge device``: run the camera side of a bundle with a board profile.

    splitedge device --bundle BUNDLE --config firmware_configs/pi4.toml \\
        [--source synthetic|npz:PATH|folder:PATH|camera] [--broker mqtt://HOST:PORT] [--frames N] \\
        [--out answers.jsonl] [--uplink-rate 2Mbit/s] [--uplink-latency-ms 20] [--outbox-dir DIR] \\
        [--ca-file PEM --cert-file PEM --key-file PEM | --username NAME --password-file FILE] \\
        [--rollout-group G --trust PUB.pem [--update-dir DIR]]

With ``--rollout-group`` the device follows the bundles ``splitedge rollout`` offers to that group
(sdk/update.py): it downloads, verifies with the ``--trust`` key, loads, and switches at a frame
boundary, or keeps its bundle and reports the failure in telemetry. It starts from the bundle it last
switched to (``UPDATE_DIR/active``) when that one still verifies, else from ``--bundle``.

The broker flags override the profile's ``[broker]`` keys (sdk/tls.py); a missing credential file or a
refused certificate stops the command with one line, a broker that is only away does not.

Writes one JSON line per frame (stdout or ``--out``) and a summary on stderr. Imports LiteRT, numpy
and paho only (never TensorFlow).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from device_runner.heads import LiteRTHeads
from device_runner.link import ConstantRateShaper, ShapedTransport
from device_runner.policy import CutPolicy
from device_runner.runner import Answer, RunnerOptions
from device_runner.sources import open_source
from device_runner.update import litert_prepare
from device_runner.wiring import policy_for, wire_runner
from sdk import topics
from sdk.config import load_board, with_overrides
from sdk.errors import ConfigError
from sdk.hardware import this_host
from sdk.host_speed import describe_factor
from sdk.manifest import Manifest, load_manifest
from sdk.messages import StatusMessage
from sdk.outbox import Outbox, StoreAndForward
from sdk.planner import parse_rate
from sdk.tls import BrokerChoice, add_broker_arguments, broker_from_args, connect_transport
from sdk.topics import TopicKind
from sdk.transport import Transport, status_will
from sdk.update import BundleUpdater, active_bundle

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="splitedge device", description="Run the camera side of a split model.")
    p.add_argument("--bundle", required=True, type=Path, help="bundle folder written by splitedge convert")
    p.add_argument("--trust", type=Path, metavar="PUB.pem", help="Ed25519 public key (PEM): refuse a bundle whose manifest.sig is missing or not by this key")
    p.add_argument("--config", required=True, help="board profile: a name (pi4) or a .toml path")
    p.add_argument("--source", help="override the profile's source: synthetic, npz:PATH, folder:PATH, camera")
    p.add_argument("--device-id", help="override the profile's device id")
    p.add_argument("--frames", type=int, help="stop after N frames (default: run until the source ends)")
    p.add_argument("--out", type=Path, help="write the answers as JSON lines here (default: stdout)")
    p.add_argument("--uplink-rate", type=parse_rate, help="emulate an uplink of this rate, e.g. 2Mbit/s")
    p.add_argument("--uplink-latency-ms", type=float, default=0.0, help="one-way latency of the emulated uplink")
    p.add_argument("--max-inflight", type=int, default=32, help="frames awaiting the cloud at most")
    p.add_argument("--tau", type=float, help="fixed early-exit threshold (default: from the profile's target)")
    p.add_argument("--cut", type=int, action="append", dest="cuts",
                   help="only consider this cut id (repeatable; one --cut pins the cut)")
    p.add_argument("--probe-every", type=int,
                   help="probe another cut every N frames (0: never; default: the profile's [policy] probe_every, 25)")
    p.add_argument("--stretch", action="store_true",
                   help="with emulated timing, sleep so wall time matches the board (default: report only)")
    p.add_argument("--outbox-dir", type=Path, metavar="DIR",
                   help="keep the telemetry produced while the broker is away on disk, in DIR/<device-id>.outbox, so it "
                   "survives a restart (overrides [outbox] spool_dir; docs/TRANSPORT.md)")
    p.add_argument("--connect-timeout", type=float, default=5.0, help="seconds to wait for the broker at start")
    p.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default), ERROR")
    p.add_argument("--rollout-group", metavar="G", help="follow the bundles 'splitedge rollout --group G' offers (needs --trust)")
    p.add_argument("--update-dir", type=Path, metavar="DIR",
                   help="where updates are staged (default: $SPLITEDGE_CACHE or ~/.cache/splitedge, then updates/DEVICE_ID)")
    p.add_argument("--update-max-mb", type=int, default=1024, help="refuse an update larger than this (default %(default)s MB)")
    add_broker_arguments(p)
    args = p.parse_args(argv)
    if args.frames is not None and args.frames < 0:
        p.error(f"--frames must be >= 0, got {args.frames}")
    if args.max_inflight < 1:
        p.error(f"--max-inflight must be >= 1, got {args.max_inflight}")
    return args


def _transport(choice: BrokerChoice, device_id: str, connect_timeout: float) -> Transport:
    """Connected, or still trying in the background (frames answered locally); a refusal is raised."""
    offline = StatusMessage(device_id, False, time.time()).to_bytes()
    transport = connect_transport(
        choice, client_id=device_id, will=status_will(device_id, offline), wait=False, connect_timeout=connect_timeout
    )
    if not transport.connected:
        print(
            f"splitedge device: broker {choice.settings.url} not reachable yet; frames are answered locally "
            "until it is (retrying in the background)",
            file=sys.stderr,
        )
    return transport


def _default_update_dir(device_id: str) -> Path:
    root = Path(os.environ.get("SPLITEDGE_CACHE", Path.home() / ".cache" / "splitedge"))
    return root / "updates" / device_id


def policy_flags(args: argparse.Namespace) -> dict[str, object]:
    """The policy knobs the command line sets; an absent flag (None) keeps the profile's ``[policy]`` value."""
    return {"probe_every": args.probe_every, "tau_override": args.tau,
            "allowed_cuts": tuple(args.cuts) if args.cuts else None}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = with_overrides(load_board(args.config), broker_url=args.broker, source=args.source, device_id=args.device_id,
                         outbox_dir=args.outbox_dir)
    broker = broker_from_args(args, cfg.broker, where=str(cfg.path) if cfg.path else None)  # files checked now
    trust = args.trust or cfg.device.trust  # --trust overrides the profile
    update_dir = None
    if args.rollout_group:
        if trust is None:
            raise ConfigError(f"--rollout-group {args.rollout_group} needs --trust PUB.pem (or [device] trust): a device "
                              "only switches to a bundle signed by the key it trusts")
        try:
            topics.validate_group(args.rollout_group)
        except ValueError as exc:
            raise ConfigError(f"--rollout-group: {exc}") from None
        update_dir = args.update_dir or _default_update_dir(cfg.device.device_id)
    manifest = load_manifest(args.bundle, trust=trust)
    base = manifest  # the --bundle: UPDATE_DIR/active is used only while it is still the one it replaced
    if update_dir is not None and (last := active_bundle(update_dir, trust, base.bundle_id)) is not None:
        if tuple(last[1].input.shape) == tuple(manifest.input.shape):
            print(f"splitedge device: starting from the bundle last rolled out, {last[0]} ({last[1].version})",
                  file=sys.stderr)
            args.bundle, manifest = last
    board = cfg.board
    heads = LiteRTHeads(args.bundle, manifest, board)
    timing = (f"emulated ({this_host().describe()}): measured on 1 host thread x the "
              f"{describe_factor(board, heads.family)}" if heads.emulated
              else f"measured on this machine ({this_host().describe()}, {board.threads} threads)")
    print(f"splitedge device {cfg.device.device_id}: bundle {args.bundle} ({len(manifest.cuts)} cuts), "
          f"board {board.name}, timings {timing}", file=sys.stderr)
    source = open_source(cfg.device.source, tuple(manifest.input.shape))
    with ExitStack() as stack:
        out: TextIO = stack.enter_context(open(args.out, "w", encoding="utf-8")) if args.out else sys.stdout
        stack.callback(source.close)

        def write(answer: Answer) -> None:
            out.write(answer.to_json() + "\n")
            out.flush()

        outbox = Outbox(cfg.outbox, name=cfg.device.device_id)  # a spool that cannot be used stops here
        transport: Transport = _transport(broker, cfg.device.device_id, args.connect_timeout)
        downlink = transport  # updates come down unshaped: --uplink-rate shapes the uplink only
        if args.uplink_rate:
            shaper = ConstantRateShaper(args.uplink_rate, latency_s=args.uplink_latency_ms / 1000.0)
            transport = ShapedTransport(transport, shaper)
        flags = policy_flags(args)
        runner = wire_runner(cfg, StoreAndForward(transport, outbox), bundle=args.bundle, manifest=manifest,
                             heads=heads, policy_overrides=flags, on_answer=write,
                             options=RunnerOptions(max_inflight=args.max_inflight, stretch_emulated=args.stretch))
        updater = None
        if update_dir is not None:
            def make_policy(m: Manifest) -> CutPolicy:
                return policy_for(m, cfg, flags)

            updater = BundleUpdater(downlink, args.rollout_group, update_dir, trust=trust, current=manifest,
                                    runner=runner, prepare=litert_prepare(board, make_policy),
                                    max_bytes=args.update_max_mb * 1024 * 1024, base=base)
            updater.start()
        try:
            summary = runner.run(source, frames=args.frames)
        except KeyboardInterrupt:
            summary = runner.summary()
        finally:
            if updater is not None:
                updater.close()
            runner.close()
    print(json.dumps({"summary": asdict(summary), "status_topic": topics.topic(cfg.device.device_id, TopicKind.STATUS)}),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
