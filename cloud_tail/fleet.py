"""`splitedge fleet`: the last known state of every device, from its telemetry and status topics.

    splitedge fleet [--broker URL] [--json] [--once --timeout S] [--interval S]
                    [--ca-file PEM --cert-file PEM --key-file PEM | --username NAME --password-file FILE]

Subscribes to ``splitedge/v1/+/telemetry`` and ``splitedge/v1/+/status`` (retained, so devices seen
before the command started show up at once). A device's ``online`` comes from its last status
message; the offline one is the device's MQTT last will, which the broker publishes when the
device vanishes without a clean disconnect (at once for a closed socket, within 1.5 keepalives for
a silent one). ``online`` is ``null`` for a device whose status was never seen.

Live mode redraws a table every ``--interval`` seconds until Ctrl-C / SIGTERM (exit code 0);
``--json`` prints one JSON object per refresh instead; ``--once`` listens for ``--timeout``
seconds, prints once and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sdk.errors import WireError
from sdk.messages import StatusMessage, TelemetryMessage, decode_message
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

    def to_dict(self, now: float) -> dict[str, Any]:
        t = self.telemetry
        return {
            "device_id": self.device_id,
            "online": self.online,
            "status_ts": self.status_ts,
            "age_s": round(now - self.last_seen, 3),
            "telemetry": t.to_dict() if t is not None else None,
        }


class FleetView:
    """The last state per device; fed by :meth:`update` (a transport handler), thread-safe."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._devices: dict[str, DeviceState] = {}
        self.bad_messages = 0

    def attach(self, transport: Transport) -> None:
        transport.subscribe(filter_for(TopicKind.STATUS), self.update, qos=1)
        transport.subscribe(filter_for(TopicKind.TELEMETRY), self.update)

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
        now = msg.received_at or self._clock()
        with self._lock:
            state = self._devices.get(device_id, DeviceState(device_id))
            if kind is TopicKind.STATUS and isinstance(m, StatusMessage):
                state = replace(state, online=m.online, status_ts=m.ts, last_seen=now)
            elif kind is TopicKind.TELEMETRY and isinstance(m, TelemetryMessage):
                state = replace(state, telemetry=m, last_seen=now)
            else:
                self.bad_messages += 1
                return
            self._devices[device_id] = state

    def devices(self) -> list[DeviceState]:
        with self._lock:
            return [self._devices[d] for d in sorted(self._devices)]

    def to_dict(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "ts": now,
            "devices": [d.to_dict(now) for d in self.devices()],
            "bad_messages": self.bad_messages,
        }

    def table(self) -> str:
        """A fixed-width text table, one row per device."""
        now = self._clock()
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
            "age s",
        )
        rows = [head]
        for d in self.devices():
            t = d.telemetry
            online = {True: "yes", False: "OFFLINE", None: "?"}[d.online]
            if t is None:
                rows.append(
                    (d.device_id, online, "-", "-", "-", "-", "-", "-", "-", "-", f"{now - d.last_seen:.0f}")
                )
                continue
            rows.append((
                d.device_id, online + (" (emu)" if t.emulated else ""), str(t.cut),
                "-" if t.bits is None else str(t.bits), f"{t.fps:.1f}", f"{t.exit_rate:.0%}",
                _rate(t.bandwidth_estimate), "-" if t.p95_ms is None else f"{t.p95_ms:.1f}", str(t.errors),
                str(t.queue_depth), f"{now - d.last_seen:.0f}",
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
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    broker = broker_from_args(args)
    view = FleetView()
    with stop_on_signals() as stop:
        transport = connect_transport(broker, client_id=f"splitedge-fleet-{os.getpid()}")
        tty = sys.stdout.isatty()
        try:
            view.attach(transport)
            if args.once:
                stop.wait(args.timeout)
                print(json.dumps(view.to_dict(), indent=1) if args.json else view.table(), flush=True)
                return 0
            while not stop.wait(args.interval):
                if args.json:
                    print(json.dumps(view.to_dict()), flush=True)
                else:
                    clear = "\x1b[H\x1b[2J" if tty else "\n"
                    stamp = time.strftime("%H:%M:%S")
                    print(f"{clear}splitedge fleet  {args.broker}  {stamp}\n{view.table()}", flush=True)
            return 0
        finally:
            transport.close()


if __name__ == "__main__":
    sys.exit(main())
