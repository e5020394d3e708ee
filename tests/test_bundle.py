"""The converter end to end: a real bundle of the reference model, its fidelity, and refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sdk.errors import ConversionError, IntegrityError, ManifestError
from sdk.manifest import MANIFEST_NAME, CutKind, LabelsSource, Manifest, load_manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def manifest(reference_bundle: Path) -> Manifest:
    return load_manifest(reference_bundle)


def _agreements_at_8_bits(manifest) -> dict[str, float]:
    out = {}
    for cut in manifest.cuts:
        if cut.kind is CutKind.RAW:
            continue
        acc = cut.accuracy_at(8)
        assert acc is not None, f"cut {cut.index} has no 8-bit accuracy row"
        out[f"{cut.index} {cut.name}"] = acc.agreement
    assert len(out) >= 5
    return out


def test_every_exported_cut_agrees_with_the_float_model_at_8_bits(manifest):
    low = {k: v for k, v in _agreements_at_8_bits(manifest).items() if v < 0.98}
    assert not low, f"8-bit top-1 agreement below 0.98: {low}"


def test_accuracy_is_measured_against_the_labels(manifest):
    assert manifest.labels_source is LabelsSource.LABELS
    assert manifest.float_accuracy > 0.6


def test_cuts_cover_raw_splits_and_device_with_files_and_tensors(manifest, reference_bundle):
    kinds = [c.kind for c in manifest.cuts]
    assert kinds[0] is CutKind.RAW and kinds[-1] is CutKind.DEVICE and CutKind.SPLIT in kinds
    raw = manifest.raw_cut
    for c in manifest.cuts:
        if c.kind is CutKind.SPLIT:
            assert c.head and c.tail and c.exit
            assert all(t.dtype == "int8" and t.scale > 0 and t.exit_scale > 0 for t in c.tensors)
            assert c.payload_bytes(8) < raw.payload_bytes(0)  # compressive at 8 bits, or at a lower width:
            assert set(c.compressive_bits) <= set(manifest.bits) and c.compressive_bits
            assert c.payload_bytes(2) * 4 == pytest.approx(c.payload_bytes(8), abs=4)
            assert 0 < c.exit_temperature < 20 and len(c.exit_curve) > 3
            assert c.head_ms > 0 and c.tail_ms > 0
    assert (reference_bundle / raw.tail.path).is_file()


def test_manifest_round_trip(manifest, reference_bundle):
    again = Manifest.from_dict(json.loads(manifest.to_json()))
    assert again == manifest
    raw = json.loads((reference_bundle / MANIFEST_NAME).read_text())
    assert raw["schema_version"] == 1 and len(raw["files"]) == len(manifest.files)


@pytest.fixture
def bundle_copy(reference_bundle, tmp_path) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(reference_bundle, out)
    return out


def test_tampered_file_is_refused_with_its_name_and_hash(bundle_copy, manifest):
    ref = next(f for f in manifest.files if f.path.endswith("head.tflite"))
    path = bundle_copy / ref.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=rf"{ref.path}.*expected {ref.sha256}"):
        load_manifest(bundle_copy)


def test_truncated_and_missing_files_are_refused(bundle_copy, manifest):
    ref = manifest.files[0]
    path = bundle_copy / ref.path
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(IntegrityError, match=rf"{ref.path} has 100 bytes.*{ref.size}"):
        load_manifest(bundle_copy)
    path.unlink()
    with pytest.raises(IntegrityError, match=rf"{ref.path} is missing.*{ref.sha256}"):
        load_manifest(bundle_copy)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(schema_version=99), "schema_version 99"),
        (lambda d: d.update(surprise=1), r"unknown key\(s\) \['surprise'\]"),
        (lambda d: d["cuts"][1].pop("tensors"), "missing key 'tensors'"),
        (lambda d: d["cuts"][1].update(kind="teleport"), "'teleport' is not one of"),
        (lambda d: d["input"].update(shape="96x96"), "expected a list of integers"),
    ],
)
def test_malformed_manifest_is_refused_precisely(bundle_copy, edit, message):
    path = bundle_copy / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=message):
        load_manifest(bundle_copy)


def test_truncated_manifest_and_not_a_bundle(bundle_copy, tmp_path):
    path = bundle_copy / MANIFEST_NAME
    path.write_text(path.read_text()[:500])
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(bundle_copy)
    with pytest.raises(ManifestError, match="no manifest.json"):
        load_manifest(tmp_path)


def test_writing_over_a_bundle_needs_force(reference_bundle):
    from converter.convert import convert

    with pytest.raises(ConversionError, match="--force"):
        convert("unused.keras", "unused.npz", reference_bundle)


def test_verify_cli_reports_agreement_on_fresh_frames(reference_bundle, tmp_path, capsys):
    from converter.reference_data import make_frames
    from converter.verify_cli import main

    x, y = make_frames(120, seed=777, split="test")
    np.savez(tmp_path / "d.npz", x=x, y=y)
    assert main([str(reference_bundle), "--data", str(tmp_path / "d.npz"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["cuts"]
    assert {r["bits"] for r in rows} >= {8, 4, 2}
    assert all(r["agreement"] >= 0.95 for r in rows if r["bits"] == 8)
    assert report["float_accuracy"] > 0.6


def test_plan_cli_json_and_board_emulation(reference_bundle, capsys):
    from sdk.plan_cli import main

    assert main([str(reference_bundle), "--bandwidth", "1Mbit/s", "--json"]) == 0
    host = json.loads(capsys.readouterr().out)
    assert main([str(reference_bundle), "--bandwidth", "1Mbit/s", "--board", "zero2w", "--json", "--no-raw"]) == 0
    zero = json.loads(capsys.readouterr().out)
    assert zero["device_factor"] > 1
    assert all(not o["feasible"] for o in zero["options"] if o["kind"] == "raw")
    best = host["best"]
    assert best["total_ms"] == min(o["total_ms"] for o in host["options"] if o["feasible"])
    assert main([str(reference_bundle), "--bandwidth", "fast"]) == 2


def test_unlabeled_data_uses_the_float_models_predictions(tmp_path):
    """A small Sequential model with no labels: the manifest says where its labels came from."""
    keras = pytest.importorskip("keras")
    from keras import layers

    from converter.convert import convert
    from converter.data import CalibData

    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((24, 24, 3), dtype="uint8"), layers.Rescaling(1 / 255.0),
        layers.Conv2D(4, 3, strides=2, padding="same"), layers.ReLU(6.0),
        layers.Conv2D(2, 3, strides=2, padding="same"), layers.ReLU(6.0),
        layers.GlobalAveragePooling2D(), layers.Dense(3),
    ])
    x = np.random.default_rng(0).integers(0, 256, (90, 24, 24, 3), dtype=np.uint8)
    result = convert(model, CalibData(x, None, "random"), tmp_path / "b", bits=(8,))
    m = load_manifest(tmp_path / "b")
    assert m.labels_source is LabelsSource.FLOAT_MODEL
    assert m == result.manifest
    assert [c.kind for c in m.cuts][0] is CutKind.RAW and m.cuts[-1].kind is CutKind.DEVICE
