"""`splitedge fleet`: the last known state of every device, from its telemetry, status and report topics.

    splitedge fleet [--broker URL] [--json] [--once --timeout S] [--interval S] [--stale-after S]
                    [--metrics-port P [--metrics-addr A]] [--web-port P [--web-addr A]]
                    [--ca-file PEM --cert-file PEM --key-file PEM | --username NAME --password-file FILE]

Subscribes to ``splitedge/v1/+/telemetry``, ``splitedge/v1/+/status`` (retained, so devices seen
before the command started show up at once) and ``splitedge/v1/+/report`` (one per frame a tail
worker answered: the exact count, bytes and cloud time of the frames the cloud answered). A
device's ``online`` comes from its last status message; the offline one is the device's MQTT last
will, which the broker publishes when the device vanishes without a clean disconnect (at once for
a closed socket, within 1.5 keepalives for a silent one). ``online`` is ``null`` for a device whose
status was never seen; ``stale`` is true once nothing was heard from or of it for ``--stale-after``
seconds.

Live mode redraws a table every ``--interval`` seconds until Ctrl-C / SIGTERM (exit code 0);
``--json`` prints one JSON object per refresh instead; ``--once`` listens for ``--timeout``
seconds, prints once and exits. ``--metrics-port`` serves Prometheus metrics per device
(:mod:`cloud_tail.metrics`), ``--web-port`` a small live page (:mod:`cloud_tail.fleet_web`); both
bind 127.0.0.1 unless told otherwise and print their address on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from cloud_tail.counters import Histogram
from cloud_tail.httpd import add_http_arguments
from sdk.errors import WireError
from sdk.messages import ReportMessage, StatusMessage, TelemetryMessage, decode_message
from sdk.signals import stop_on_signals
from sdk.tls import add_broker_arguments, broker_from_args, connect_transport
from sdk.topics import TopicKind, filter_for, parse
from sdk.transport import Message, Transport

__all__ = ["DeviceState", "FleetView", "main", "parse_args"]


@dataclass(frozen=True, slots=True)
class DeviceState:
    """What the fleet knows of one device."""

    device_id: str
    online: bool | None = None  # None: no status message seen
    status_ts: float | None = None
    telemetry: TelemetryMessage | None = None
    last_seen: float = 0.0  # local time of the last message from/about it
    frames: float = 0.0  # captured: fps x window summed over the telemetry this fleet process saw
    cloud_frames: int = 0  # answered by a tail worker: one report each
    cloud_bytes: int = 0  # activation bytes of those frames, as the workers received them
    cloud_hist: Histogram = field(default_factory=Histogram)  # decode + queue + tail seconds per report

    def to_dict(self, now: float, stale_after: float = math.inf) -> dict[str, Any]:
        t = self.telemetry
        h = self.cloud_hist
        return {
            "device_id": self.device_id,
            "online": self.online,
            "status_ts": self.status_ts,
            "age_s": round(now - self.last_seen, 3),
            "stale": now - self.last_seen > stale_after,
            "frames": round(self.frames),
            "cloud_frames": self.cloud_frames,
            "cloud_bytes": self.cloud_bytes,
            "cloud_ms_mean": round(h.sum_s / h.count * 1000.0, 3) if h.count else None,
            "telemetry": t.to_dict() if t is not None else None,
        }


class FleetView:
    """The last state per device; fed by :meth:`update` (a transport handler), thread-safe."""

    #: a telemetry window longer than this (s) is not added to ``frames`` (the device or the fleet was away).
    MAX_WINDOW_S = 60.0

    def __init__(self, *, clock: Callable[[], float] = time.time, stale_after: float = 10.0) -> None:
        self.clock = clock
        self.stale_after = stale_after
        self._lock = threading.Lock()
        self._devices: dict[str, DeviceState] = {}
        self.bad_messages = 0

    def attach(self, transport: Transport) -> None:
        transport.subscribe(filter_for(TopicKind.STATUS), self.update, qos=1)
        transport.subscribe(filter_for(TopicKind.TELEMETRY), self.update)
        transport.subscribe(filter_for(TopicKind.REPORT), self.update)

    def update(self, msg: Message) -> None:
        try:
            device_id, kind = parse(msg.topic)
            if not msg.payload:  # an emptied retained status: the device was removed
                with self._lock:
                    self._devices.pop(device_id, None)
                return
            m = decode_message(msg.payload)
        except (ValueError, WireError):
            with self._lock:
                self.bad_messages += 1
            return
        now = msg.received_at or self.clock()
        with self._lock:
            state = self._devices.get(device_id, DeviceState(device_id))
            if kind is TopicKind.STATUS and isinstance(m, StatusMessage):
                state = replace(state, online=m.online, status_ts=m.ts, last_seen=now)
            elif kind is TopicKind.TELEMETRY and isinstance(m, TelemetryMessage):
                frames = state.frames
                prev = state.telemetry
                if prev is not None and 0.0 < m.ts - prev.ts <= self.MAX_WINDOW_S:
                    window = m.ts - prev.ts
                    frames += m.fps * window  # the window this message closes
                    if state.frames == 0.0:  # the first message's window: as long as this one (one interval)
                        frames += prev.fps * window
                state = replace(state, telemetry=m, last_seen=now, frames=frames)
            elif kind is TopicKind.REPORT and isinstance(m, ReportMessage):
                hist = Histogram(list(state.cloud_hist.counts), state.cloud_hist.sum_s)
                hist.observe(max(0.0, m.decode_ms + m.queue_ms + m.tail_ms) / 1000.0)
                state = replace(state, cloud_frames=state.cloud_frames + 1, last_seen=now,
                                cloud_bytes=state.cloud_bytes + m.bytes_received, cloud_hist=hist)  # fmt: skip
            else:
                self.bad_messages += 1
                return
            self._devices[device_id] = state

    def devices(self) -> list[DeviceState]:
        with self._lock:
            return [self._devices[d] for d in sorted(self._devices)]

    def to_dict(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "ts": now,
            "stale_after_s": self.stale_after,
            "devices": [d.to_dict(now, self.stale_after) for d in self.devices()],
            "bad_messages": self.bad_messages,
        }

    def table(self) -> str:
        """A fixed-width text table, one row per device."""
        now = self.clock()
        head = (
            "device",
            "online",
            "cut",
            "bits",
            "fps",
            "exit",
            "bw est",
            "p95 ms",
            "errors",
            "queue",
            "bundle",
            "age s",
        )
        rows = [head]
        for d in self.devices():
            t = d.telemetry
            online = {True: "yes", False: "OFFLINE", None: "?"}[d.online]
            if t is None:
                rows.append(
                    (d.device_id, online, "-", "-", "-", "-", "-", "-", "-", "-", "-", f"{now - d.last_seen:.0f}")
                )
                continue
            rows.append((
                d.device_id, online + (" (emu)" if t.emulated else ""), str(t.cut),
                "-" if t.bits is None else str(t.bits), f"{t.fps:.1f}", f"{t.exit_rate:.0%}",
                _rate(t.bandwidth_estimate), "-" if t.p95_ms is None else f"{t.p95_ms:.1f}", str(t.errors),
                str(t.queue_depth), t.bundle_id or "-", f"{now - d.last_seen:.0f}",
            ))  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        if len(rows) == 1:
            lines.append("(no device seen yet)")
        return "\n".join(lines)


def _rate(bytes_per_s: float | None) -> str:
    if bytes_per_s is None:
        return "-"
    for unit, scale in (("MB/s", 1e6), ("kB/s", 1e3)):
        if bytes_per_s >= scale:
            return f"{bytes_per_s / scale:.1f} {unit}"
    return f"{bytes_per_s:.0f} B/s"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="splitedge fleet", description="Live table of every device's telemetry.")
    add_broker_arguments(p, default_url="mqtt://127.0.0.1:1883")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--once", action="store_true", help="listen for --timeout seconds, print once, exit")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to listen with --once (default 3)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    p.add_argument("--quiet", action="store_true", help="print no table/JSON per refresh (serve only)")
    p.add_argument("--stale-after", type=float, default=10.0, metavar="S",
                   help="a device not heard from for S seconds is shown stale (default %(default)s)")  # fmt: skip
    add_http_arguments(p, "metrics", "serve Prometheus metrics per device on /metrics")
    add_http_arguments(p, "web", "serve the live fleet page on / (and its JSON on /fleet.json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    broker = broker_from_args(args)
    view = FleetView(stale_after=args.stale_after)
    servers = []
    with stop_on_signals() as stop:
        transport = connect_transport(broker, client_id=f"splitedge-fleet-{os.getpid()}")
        tty = sys.stdout.isatty()
        try:
            view.attach(transport)
            if args.metrics_port is not None:
                from cloud_tail.metrics import fleet_registry, serve_registry

                servers.append(serve_registry(fleet_registry(view), args.metrics_port, host=args.metrics_addr,
                                              json_snapshot=view.to_dict))  # fmt: skip
                print(f"metrics http://{args.metrics_addr}:{servers[-1].server_port}/metrics", file=sys.stderr, flush=True)
            if args.web_port is not None:
                from cloud_tail.fleet_web import serve_fleet_page

                servers.append(serve_fleet_page(view, args.web_port, host=args.web_addr, title=args.broker))
                print(f"web http://{args.web_addr}:{servers[-1].server_port}/", file=sys.stderr, flush=True)
            if args.once:
                stop.wait(args.timeout)
                print(json.dumps(view.to_dict(), indent=1) if args.json else view.table(), flush=True)
                return 0
            while not stop.wait(args.interval):
                if args.quiet:
                    continue
                if args.json:
                    print(json.dumps(view.to_dict()), flush=True)
                else:
                    clear = "\x1b[H\x1b[2J" if tty else "\n"
                    stamp = time.strftime("%H:%M:%S")
                    print(f"{clear}splitedge fleet  {args.broker}  {stamp}\n{view.table()}", flush=True)
            return 0
        finally:
            for server in servers:
                server.shutdown()
                server.server_close()
            transport.close()


if __name__ == "__main__":
    sys.exit(main())
