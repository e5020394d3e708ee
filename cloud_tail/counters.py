"""What a cloud worker counts, per device and per cut, and how it is exposed.

Every frame the worker receives ends in exactly one of: ``answered`` (a result was published),
``errors[code]`` (an ErrorMessage was published: malformed, unknown_cut, bundle_mismatch, internal),
or ``shed`` (an ErrorMessage with code ``overloaded``). So ``received == answered + sum(errors) +
shed`` once the queue is empty — the invariant the tests check. ``publish_failed`` counts replies
that could not be sent (broker down); those frames are still counted where they ended.

Exposed two ways (docs/CLOUD.md): :meth:`Counters.snapshot` (a JSON-ready dict, written to
``--metrics-json FILE``) and :meth:`Counters.prometheus` (text exposition format 0.0.4, served on
``--metrics-port``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Counters", "Tally", "serve_metrics", "write_json"]

#: tail-time samples kept per key for the percentiles (a sliding window).
WINDOW = 1024


@dataclass(slots=True)
class Tally:
    """The counts of one device or one cut."""

    received: int = 0
    answered: int = 0
    shed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    tail_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def to_dict(self) -> dict[str, Any]:
        p50, p95 = _percentiles(self.tail_ms)
        return {
            "received": self.received, "answered": self.answered, "shed": self.shed,
            "errors": dict(sorted(self.errors.items())), "tail_ms_p50": p50, "tail_ms_p95": p95,
        }  # fmt: skip


def _percentiles(samples: deque[float]) -> tuple[float | None, float | None]:
    if not samples:
        return None, None
    a = np.fromiter(samples, dtype=np.float64)
    return round(float(np.percentile(a, 50)), 4), round(float(np.percentile(a, 95)), 4)


class Counters:
    """Thread-safe counters of one worker (the paho thread and the inference thread both write)."""

    def __init__(self, worker_id: str, *, clock: Callable[[], float] = time.time) -> None:
        self.worker_id = worker_id
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._devices: dict[str, Tally] = {}
        self._cuts: dict[int, Tally] = {}
        self.queue_depth = 0
        self.max_queue_depth = 0
        self.publish_failed = 0
        self.batches: Counter[int] = Counter()  # batch size -> how many batches ran at that size
        self.connected = False
        self.disconnects = 0

    def _tallies(self, device: str | None, cut: int | None) -> list[Tally]:
        out = []
        if device is not None:
            out.append(self._devices.setdefault(device, Tally()))
        if cut is not None:
            out.append(self._cuts.setdefault(cut, Tally()))
        return out

    def received(self, device: str | None, cut: int | None) -> None:
        with self._lock:
            for t in self._tallies(device, cut):
                t.received += 1

    def answered(self, device: str, cut: int, tail_ms: float) -> None:
        with self._lock:
            for t in self._tallies(device, cut):
                t.answered += 1
                t.tail_ms.append(tail_ms)

    def error(self, device: str | None, cut: int | None, code: str) -> None:
        with self._lock:
            for t in self._tallies(device, cut):
                t.errors[code] += 1

    def shed(self, device: str, cut: int | None) -> None:
        with self._lock:
            for t in self._tallies(device, cut):
                t.shed += 1

    def batch(self, size: int) -> None:
        with self._lock:
            self.batches[size] += 1

    def set_queue_depth(self, depth: int) -> None:
        with self._lock:
            self.queue_depth = depth
            self.max_queue_depth = max(self.max_queue_depth, depth)

    def failed_publish(self) -> None:
        with self._lock:
            self.publish_failed += 1

    def connection(self, up: bool) -> None:
        with self._lock:
            if self.connected and not up:
                self.disconnects += 1
            self.connected = up

    def snapshot(self) -> dict[str, Any]:
        """Everything, JSON-ready: totals, per device, per cut, queue, batches, connection."""
        with self._lock:
            devices = {d: t.to_dict() for d, t in sorted(self._devices.items())}
            cuts = {str(c): t.to_dict() for c, t in sorted(self._cuts.items())}
            all_ms: deque[float] = deque()
            for t in self._cuts.values():
                all_ms.extend(t.tail_ms)
            totals = Tally(
                received=sum(t.received for t in self._devices.values()),
                answered=sum(t.answered for t in self._devices.values()),
                shed=sum(t.shed for t in self._devices.values()),
                errors=sum((t.errors for t in self._devices.values()), Counter()),
                tail_ms=all_ms,
            )
            return {
                "worker_id": self.worker_id,
                "ts": self._clock(),
                "uptime_s": round(self._clock() - self._started, 3),
                "connected": self.connected,
                "disconnects": self.disconnects,
                "queue_depth": self.queue_depth,
                "max_queue_depth": self.max_queue_depth,
                "publish_failed": self.publish_failed,
                "batches": {str(k): v for k, v in sorted(self.batches.items())},
                "totals": totals.to_dict(),
                "devices": devices,
                "cuts": cuts,
            }

    def prometheus(self) -> str:
        """The snapshot in Prometheus text format (counters ``_total``, gauges, tail-time quantiles)."""
        snap = self.snapshot()
        w = _label_value(self.worker_id)
        lines = [
            "# HELP splitedge_cloud_frames_total Frames by outcome, per device and per cut.",
            "# TYPE splitedge_cloud_frames_total counter",
        ]
        for scope, table in (("device", snap["devices"]), ("cut", snap["cuts"])):
            for key, t in table.items():
                base = f'worker="{w}",{scope}="{_label_value(str(key))}"'
                for outcome in ("received", "answered", "shed"):
                    lines.append(f'splitedge_cloud_frames_total{{{base},outcome="{outcome}"}} {t[outcome]}')
                for code, n in t["errors"].items():
                    lines.append(
                        f'splitedge_cloud_frames_total{{{base},outcome="error",code="{_label_value(code)}"}} {n}'
                    )
        lines += [
            "# HELP splitedge_cloud_tail_ms Tail time per cut (sliding window of the last frames).",
            "# TYPE splitedge_cloud_tail_ms summary",
        ]
        for key, t in snap["cuts"].items():
            for q, name in (("0.5", "tail_ms_p50"), ("0.95", "tail_ms_p95")):
                if t[name] is not None:
                    lines.append(
                        f'splitedge_cloud_tail_ms{{worker="{w}",cut="{key}",quantile="{q}"}} {t[name]}'
                    )
        gauges = (
            ("queue_depth", "Frames waiting for the tail."),
            ("max_queue_depth", "Highest queue depth seen."),
            ("publish_failed", "Replies that could not be published (broker down)."),
            ("disconnects", "Broker connections lost."),
        )
        for name, help_ in gauges:
            kind = "counter" if name in ("publish_failed", "disconnects") else "gauge"
            lines += [
                f"# HELP splitedge_cloud_{name} {help_}",
                f"# TYPE splitedge_cloud_{name} {kind}",
                f'splitedge_cloud_{name}{{worker="{w}"}} {snap[name]}',
            ]
        lines += [
            "# HELP splitedge_cloud_connected 1 while connected to the broker.",
            "# TYPE splitedge_cloud_connected gauge",
            f'splitedge_cloud_connected{{worker="{w}"}} {int(snap["connected"])}',
        ]
        return "\n".join(lines) + "\n"


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_json(counters: Counters, path: str | Path) -> None:
    """Write the snapshot to ``path`` atomically (a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(counters.snapshot(), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def serve_metrics(counters: Counters, port: int, *, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve ``/metrics`` (Prometheus text) and ``/metrics.json`` in a daemon thread; port 0 picks one.

    Call ``.shutdown()`` then ``.server_close()`` to stop it; ``.server_port`` is the bound port.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.split("?")[0] == "/metrics":
                body, ctype = counters.prometheus().encode(), "text/plain; version=0.0.4; charset=utf-8"
            elif self.path.split("?")[0] == "/metrics.json":
                body, ctype = json.dumps(counters.snapshot()).encode(), "application/json"
            else:
                self.send_error(404, "try /metrics or /metrics.json")
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence access logs
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
