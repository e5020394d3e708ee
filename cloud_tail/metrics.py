"""Prometheus metrics of a tail worker (``splitedge cloud``) and of the fleet (``splitedge fleet``).

Both are *custom collectors* over state the process keeps anyway (:class:`cloud_tail.counters.Counters`,
:class:`cloud_tail.fleet.FleetView`): a scrape reads that state under its lock and renders it, so
there is one source of truth and nothing to keep in step. Each process gets its own
``CollectorRegistry`` (never prometheus_client's global one), so several workers in one process or
one test session do not clash. prometheus_client is imported here only, when a registry is made
(the ``cloud`` extra).

Names follow the Prometheus conventions: ``splitedge_<process>_<what>_<unit>``, counters end in
``_total``, times in ``_seconds``, sizes in ``_bytes``. The full list is in docs/CLOUD.md
("Metrics"); ``tests/test_metrics.py`` scrapes both endpoints after real frames went through Mosquitto.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from cloud_tail.counters import Counters, Histogram
from cloud_tail.httpd import serve
from sdk.errors import MissingDependencyError

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from cloud_tail.fleet import FleetView

__all__ = ["fleet_registry", "render", "serve_registry", "worker_registry"]

#: label value of a frame whose header could not be read (no cut known).
NO_CUT = "?"

#: what ``bundles()`` returns for a worker: one mapping per bundle it serves (bundle_id, model, version...).
BundleInfo = Callable[[], Iterable[Mapping[str, str]]]


def _core() -> Any:
    try:
        from prometheus_client import core
    except ImportError:
        raise MissingDependencyError.for_extra("prometheus_client (for --metrics-port)", "cloud") from None
    return core


def _registry(collector: object) -> CollectorRegistry:
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in the Prometheus text format, and its Content-Type."""
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4


def serve_registry(
    registry: CollectorRegistry,
    port: int,
    *,
    host: str = "127.0.0.1",
    flag: str = "--metrics-port",
    json_snapshot: Callable[[], Any] | None = None,
) -> ThreadingHTTPServer:
    """Serve ``/metrics`` (and ``/metrics.json`` from ``json_snapshot``) on ``host:port``; 0 picks a port."""
    routes = {"/metrics": lambda: render(registry)}
    if json_snapshot is not None:
        routes["/metrics.json"] = lambda: (json.dumps(json_snapshot()).encode(), "application/json")
    return serve(routes, port, host=host, flag=flag)


def _hist_buckets(h: Histogram) -> list[tuple[str, float]]:
    return [("+Inf" if math.isinf(b) else repr(b), float(n)) for b, n in h.cumulative()]


# ---- the tail worker ----------------------------------------------------------------------------


class WorkerCollector:
    """One worker's :class:`Counters` (and the bundles it serves) as Prometheus metric families."""

    def __init__(self, counters: Counters, bundles: BundleInfo | None = None) -> None:
        self.counters = counters
        self.bundles = bundles

    def collect(self) -> Iterator[Metric]:
        core = _core()
        w = self.counters.worker_id
        pairs = self.counters.series()
        state = self.counters.state()
        labels = ["worker", "device", "cut"]

        def family(kind: Any, name: str, doc: str, extra: tuple[str, ...] = ()) -> Any:
            return kind(name, doc, labels=[*labels, *extra])

        received = family(core.CounterMetricFamily, "splitedge_cloud_frames_received_total", "Frames taken off the broker.")
        answered = family(core.CounterMetricFamily, "splitedge_cloud_frames_answered_total", "Frames answered with a result.")
        shed = family(core.CounterMetricFamily, "splitedge_cloud_frames_shed_total",
                      "Frames answered 'overloaded' (queue full, waited too long, worker stopping).")  # fmt: skip
        refused = family(core.CounterMetricFamily, "splitedge_cloud_frames_refused_total",
                         "Frames refused with an error code (malformed, unknown_cut, bundle_mismatch, internal).",
                         ("code",))  # fmt: skip
        nbytes = family(core.CounterMetricFamily, "splitedge_cloud_received_bytes_total", "Frame bytes received.")
        tail = family(core.HistogramMetricFamily, "splitedge_cloud_tail_seconds",
                      "Tail inference time of the batch each answered frame ran in.")  # fmt: skip
        wait = family(core.HistogramMetricFamily, "splitedge_cloud_queue_wait_seconds",
                      "Time an answered frame waited in the worker before its batch ran.")  # fmt: skip
        for (device, cut), t in pairs.items():
            key = [w, device, NO_CUT if cut is None else str(cut)]
            received.add_metric(key, t.received)
            answered.add_metric(key, t.answered)
            shed.add_metric(key, t.shed)
            nbytes.add_metric(key, t.bytes_received)
            for code, n in sorted(t.errors.items()):
                refused.add_metric([*key, code], n)
            if cut is not None:
                tail.add_metric(key, _hist_buckets(t.tail_hist), t.tail_hist.sum_s)
                wait.add_metric(key, _hist_buckets(t.queue_hist), t.queue_hist.sum_s)
        yield from (received, answered, shed, refused, nbytes, tail, wait)

        batches = core.CounterMetricFamily("splitedge_cloud_batches_total", "Tail invokes, by batch size (frames).",
                                           labels=["worker", "size"])  # fmt: skip
        for size, n in sorted(state["batches"].items()):
            batches.add_metric([w, str(size)], n)
        yield batches
        for kind, name, doc, value in (
            (core.GaugeMetricFamily, "splitedge_cloud_queue_frames", "Frames waiting (queued or in a batch).", state["queue_depth"]),
            (core.GaugeMetricFamily, "splitedge_cloud_queue_frames_max", "Highest queue depth seen.", state["max_queue_depth"]),
            (core.CounterMetricFamily, "splitedge_cloud_publish_failed_total", "Replies that could not be published (broker down).", state["publish_failed"]),
            (core.CounterMetricFamily, "splitedge_cloud_disconnects_total", "Broker connections lost.", state["disconnects"]),
            (core.GaugeMetricFamily, "splitedge_cloud_connected", "1 while connected to the broker.", int(state["connected"])),
            (core.GaugeMetricFamily, "splitedge_cloud_uptime_seconds", "Seconds since the worker started.", state["uptime_s"]),
        ):  # fmt: skip
            f = kind(name, doc, labels=["worker"])
            f.add_metric([w], value)
            yield f
        if self.bundles is not None:
            bundles = list(self.bundles())
            keys = sorted({k for b in bundles for k in b})
            info = core.InfoMetricFamily("splitedge_cloud_bundle", "A bundle this worker serves (its tails are loaded).",
                                         labels=["worker"])  # fmt: skip
            for b in bundles:
                info.add_metric([w], {k: str(b.get(k, "")) for k in keys})
            yield info


def worker_registry(counters: Counters, *, bundles: BundleInfo | None = None) -> CollectorRegistry:
    """A fresh registry holding one worker's metrics (``bundles``: the bundle info metric's labels)."""
    _core()
    return _registry(WorkerCollector(counters, bundles))


# ---- the fleet ------------------------------------------------------------------------------------


class FleetCollector:
    """Every device's last telemetry in a :class:`FleetView`, as gauges labelled by device."""

    def __init__(self, view: FleetView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        core = _core()
        now = self.view.clock()
        devices = self.view.devices()
        g, c = core.GaugeMetricFamily, core.CounterMetricFamily

        def per_device(kind: Any, name: str, doc: str, extra: tuple[str, ...] = ()) -> Any:
            return kind(name, doc, labels=["device", *extra])

        online = per_device(g, "splitedge_fleet_device_online", "1 online, 0 offline (its last will), absent: no status seen.")
        seen = per_device(g, "splitedge_fleet_device_last_seen_timestamp_seconds", "When the fleet last heard from or of it (Unix time).")
        age = per_device(g, "splitedge_fleet_device_age_seconds", "Seconds since the fleet last heard from or of it.")
        cut = per_device(g, "splitedge_fleet_device_cut", "The cut the device runs now (-1: none chosen yet).")
        bits = per_device(g, "splitedge_fleet_device_bits", "Bit width of the cut's activations.")
        fps = per_device(g, "splitedge_fleet_device_frames_per_second", "Frames captured per second (last telemetry window).")
        frames = per_device(c, "splitedge_fleet_device_frames_total",
                            "Frames captured, summed over the telemetry windows this fleet process saw.")  # fmt: skip
        mix = per_device(g, "splitedge_fleet_device_answered_ratio", "Share of answers by who gave them (last window).", ("answered_by",))
        uplink = per_device(g, "splitedge_fleet_device_uplink_bytes_per_second", "Activation bytes sent per second (last window).")
        bw = per_device(g, "splitedge_fleet_device_bandwidth_estimate_bytes_per_second", "The device's uplink bandwidth estimate.")
        lat = per_device(g, "splitedge_fleet_device_latency_seconds", "End-to-end answer latency percentiles (last window).", ("quantile",))
        errors = per_device(c, "splitedge_fleet_device_errors_total", "Errors the device counted since it started.")
        inflight = per_device(g, "splitedge_fleet_device_inflight_frames", "Frames sent and not answered yet.")
        cloud = per_device(c, "splitedge_fleet_device_cloud_frames_total", "Frames a tail worker answered (one report each).")
        cloud_bytes = per_device(c, "splitedge_fleet_device_cloud_received_bytes_total",
                                 "Activation bytes of those frames, as the workers received them.")  # fmt: skip
        cloud_time = per_device(core.HistogramMetricFamily, "splitedge_fleet_device_cloud_seconds",
                                "Time in the cloud per answered frame: decode + queue + tail (from the reports).")  # fmt: skip
        outbox = per_device(g, "splitedge_fleet_device_outbox_queued_messages", "Messages waiting in the device's outbox for the broker.")
        dropped = per_device(c, "splitedge_fleet_device_outbox_dropped_total", "Messages the device's outbox dropped at its bound.")
        info = core.InfoMetricFamily("splitedge_fleet_device", "What a device runs: bundle id and version, the last "
                                     "rollout's state, whether it is emulated.",
                                     labels=["device"])  # fmt: skip
        states = {"online": 0, "offline": 0, "unknown": 0}
        for d in devices:
            key = [d.device_id]
            states["unknown" if d.online is None else "online" if d.online else "offline"] += 1
            if d.online is not None:
                online.add_metric(key, int(d.online))
            seen.add_metric(key, d.last_seen)
            cloud.add_metric(key, d.cloud_frames)
            cloud_bytes.add_metric(key, d.cloud_bytes)
            cloud_time.add_metric(key, _hist_buckets(d.cloud_hist), d.cloud_hist.sum_s)
            age.add_metric(key, max(0.0, now - d.last_seen))
            t = d.telemetry
            if t is None:
                continue
            cut.add_metric(key, t.cut)
            if t.bits is not None:
                bits.add_metric(key, t.bits)
            fps.add_metric(key, t.fps)
            frames.add_metric(key, d.frames)
            mix.add_metric([*key, "device"], t.exit_rate)
            mix.add_metric([*key, "cloud"], 1.0 - t.exit_rate)
            uplink.add_metric(key, t.bytes_per_s)
            if t.bandwidth_estimate is not None:
                bw.add_metric(key, t.bandwidth_estimate)
            for q, ms in (("0.5", t.p50_ms), ("0.95", t.p95_ms)):
                if ms is not None:
                    lat.add_metric([*key, q], ms / 1000.0)
            errors.add_metric(key, t.errors)
            inflight.add_metric(key, t.queue_depth)
            outbox.add_metric(key, t.outbox_queued)
            dropped.add_metric(key, t.outbox_dropped)
            info.add_metric(key, {"bundle_id": f"0x{t.bundle_id}" if t.bundle_id else "", "bundle_version": t.bundle_version or "",
                                  "rollout": t.rollout or "", "emulated": str(t.emulated).lower()})  # fmt: skip
        yield from (online, seen, age, cut, bits, fps, frames, mix, uplink, bw, lat, errors, inflight, cloud, cloud_bytes,
                    cloud_time, outbox, dropped, info)  # fmt: skip
        count = g("splitedge_fleet_devices", "Devices known to the fleet, by status.", labels=["status"])
        for status, n in states.items():
            count.add_metric([status], n)
        yield count
        yield c("splitedge_fleet_bad_messages_total", "Status, telemetry or report messages that could not be decoded.",
                value=self.view.bad_messages)  # fmt: skip


def fleet_registry(view: FleetView) -> CollectorRegistry:
    """A fresh registry holding the fleet's per-device metrics."""
    _core()
    return _registry(FleetCollector(view))
