"""The cloud side: decode activations, finish inference, report latency, aggregate fleet telemetry.

The public API for running a tail worker or a fleet view inside one's own service (docs/CLOUD.md).
Names are resolved lazily (PEP 562): ``import cloud_tail`` loads neither TensorFlow/LiteRT nor paho.
The demo, its report and the link emulation are not part of it.
"""

from __future__ import annotations

from sdk.lazy import lazy_exports

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "TailWorker": "cloud_tail.worker",
    "WorkerConfig": "cloud_tail.worker",
    "TailSet": "cloud_tail.tails",
    "Tails": "cloud_tail.tails",
    "Refusal": "cloud_tail.tails",
    "FleetView": "cloud_tail.fleet",
    "DeviceState": "cloud_tail.fleet",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports("cloud_tail", _EXPORTS, globals())
