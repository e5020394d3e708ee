"""splitedge's shared core: wire format, latency model and planner, bundle schema, config, errors.

Nothing here imports TensorFlow; paho and LiteRT are imported only inside their adapters. The names below
are the public API shared by the device and the cloud side (README, "Embedding"); they are resolved
lazily (PEP 562), so ``import sdk`` loads none of numpy, paho or the broker until a name needs it.
"""

from __future__ import annotations

from sdk.lazy import lazy_exports

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # bundle schema
    "Manifest": "sdk.manifest", "CutSpec": "sdk.manifest", "CutKind": "sdk.manifest", "load_manifest": "sdk.manifest",
    # profiles
    "DeviceConfig": "sdk.config", "load_board": "sdk.config", "load_config": "sdk.config",
    "parse_config": "sdk.config", "with_overrides": "sdk.config", "PolicyOptions": "sdk.policy_options",
    # latency model and planner
    "CutCost": "sdk.planner", "Plan": "sdk.planner", "costs_from_manifest": "sdk.planner", "evaluate": "sdk.planner",
    "breakeven_bandwidth": "sdk.planner",
    # wire format
    "Codec": "sdk.wire", "Frame": "sdk.wire", "decode_frame": "sdk.wire", "encode_activation": "sdk.wire",
    "encode_raw": "sdk.wire",
    # transport seam and its adapters
    "Transport": "sdk.transport", "Message": "sdk.transport", "InMemoryHub": "sdk.transport",
    "InMemoryTransport": "sdk.transport", "MqttTransport": "sdk.mqtt", "EmbeddedBroker": "sdk.broker",
    # errors (the hierarchy is drawn in sdk/errors.py)
    "SplitEdgeError": "sdk.errors", "ConfigError": "sdk.errors", "BundleError": "sdk.errors",
    "WireError": "sdk.errors", "TransportError": "sdk.errors", "BrokerUnavailableError": "sdk.errors",
}  # fmt: skip

__all__ = ["__version__", *sorted(_EXPORTS)]


__getattr__, __dir__ = lazy_exports("sdk", _EXPORTS, globals())
