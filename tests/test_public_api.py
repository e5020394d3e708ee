"""The packages' public API: pinned, lazily resolved, light to import, and the embedding example in
docs/DEVICE.md runs as written (LiteRT heads of the test bundle, a real Mosquitto, a real tail worker)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cloud_tail
import device_runner
import sdk

ROOT = Path(__file__).resolve().parents[1]

PINNED = {
    "device_runner": [
        "Answer", "AnsweredBy", "Choice", "ConstantRateShaper", "CutExecutor", "CutOutput", "CutPolicy", "Decision",
        "DeviceRunner", "Estimates", "Estimator", "FolderSource", "FrameSource", "LiteRTHeads", "NpzSource",
        "Prediction", "RunSummary", "RunnerOptions", "ShapedTransport", "SyntheticSource", "TraceShaper",
        "make_estimator", "open_source", "policy_for", "wire_runner",
    ],
    "cloud_tail": ["DeviceState", "FleetView", "Refusal", "TailSet", "TailWorker", "Tails", "WorkerConfig"],
    "sdk": [
        "__version__", "BrokerUnavailableError", "BundleError", "Codec", "ConfigError", "CutCost", "CutKind", "CutSpec",
        "DeviceConfig", "EmbeddedBroker", "Frame", "InMemoryHub", "InMemoryTransport", "Manifest", "Message",
        "MqttTransport", "Plan", "PolicyOptions", "SplitEdgeError", "Transport", "TransportError", "WireError",
        "breakeven_bandwidth", "costs_from_manifest", "decode_frame", "encode_activation", "encode_raw", "evaluate",
        "load_board", "load_config", "load_manifest", "parse_config", "with_overrides",
    ],
}  # fmt: skip


@pytest.mark.parametrize("package", [device_runner, cloud_tail, sdk], ids=lambda p: p.__name__)
def test_public_api_is_pinned_and_every_name_is_its_modules_object(package) -> None:
    assert sorted(package.__all__) == sorted(PINNED[package.__name__])
    for name in package.__all__:
        value = getattr(package, name)
        if name != "__version__":
            home = importlib.import_module(package._EXPORTS[name])
            assert value is getattr(home, name), name
            assert name in getattr(home, "__all__", [name]), f"{name} is not in {home.__name__}.__all__"
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        package.nope  # noqa: B018


def test_importing_the_packages_loads_nothing_heavy() -> None:
    code = ("import sys, sdk, device_runner, cloud_tail; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'ai_edge_litert', 'paho', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def embed_example() -> str:
    text = (ROOT / "docs" / "DEVICE.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- embed-example:[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert m, "docs/DEVICE.md lost its embedding example (the block after the embed-example marker)"
    return m.group(1)


@pytest.mark.broker
def test_the_embedding_example_in_device_md_runs(reference_bundle: Path, mosquitto, capsys) -> None:
    from cloud_tail import TailSet, TailWorker, WorkerConfig
    from sdk import MqttTransport

    cloud = MqttTransport(mosquitto.url, client_id="embed-tail")
    worker = TailWorker(cloud, TailSet(reference_bundle), WorkerConfig("embed-w1"))
    worker.start()
    try:
        exec(compile(embed_example(), "docs/DEVICE.md", "exec"),  # noqa: S102 - the documented example, as written
             {"BUNDLE": str(reference_bundle), "BROKER_URL": mosquitto.url})
    finally:
        worker.stop()
        cloud.close()
    assert re.search(r"\[\(0, -?\d+, '(device|cloud|deadline)', \d+\)", capsys.readouterr().out)
