"""The camera side: LiteRT heads, early exit, dynamic cut (LiteRT + numpy + paho only, never TensorFlow).

The public API for embedding the runner in one's own program (docs/DEVICE.md, "Embedding"): own frames
in, answers out. Names are resolved lazily (PEP 562), so ``import device_runner`` loads neither LiteRT
nor paho; each comes in with the first name that needs it.
"""

from __future__ import annotations

from sdk.lazy import lazy_exports

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "Answer": "device_runner.answers",
    "AnsweredBy": "device_runner.answers",
    "RunSummary": "device_runner.answers",
    "DeviceRunner": "device_runner.runner",
    "RunnerOptions": "device_runner.runner",
    "CutPolicy": "device_runner.policy",
    "Choice": "device_runner.policy",
    "Decision": "device_runner.policy",
    "Estimator": "device_runner.estimator",
    "Estimates": "device_runner.estimator",
    "make_estimator": "device_runner.estimator",
    "LiteRTHeads": "device_runner.heads",
    "CutExecutor": "device_runner.heads",
    "CutOutput": "device_runner.heads",
    "Prediction": "device_runner.heads",
    "FrameSource": "device_runner.sources",
    "NpzSource": "device_runner.sources",
    "FolderSource": "device_runner.sources",
    "SyntheticSource": "device_runner.sources",
    "open_source": "device_runner.sources",
    "ShapedTransport": "device_runner.link",
    "ConstantRateShaper": "device_runner.link",
    "TraceShaper": "device_runner.link",
    "wire_runner": "device_runner.wiring",
    "policy_for": "device_runner.wiring",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports("device_runner", _EXPORTS, globals())
