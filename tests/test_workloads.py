"""The workload registry and `splitedge reference --list` / `NAME` (no conversion here: that is the bundle tests')."""

from __future__ import annotations

import json

import pytest

from converter import reference_cli, workloads
from sdk.errors import BundleError


def test_names_put_the_default_first_and_keep_digits_for_tests():
    names = workloads.names()
    assert names[0] == workloads.DEFAULT_WORKLOAD == "resnet50-fashion-224"
    assert set(names) == {"mobilenetv2-fashion", "resnet50-fashion", "resnet50-fashion-224", "digits"}


def test_an_unknown_workload_names_the_known_ones():
    with pytest.raises(BundleError, match="unknown workload 'cats'; expected one of resnet50-fashion-224, mobilenetv2-fashion"):
        workloads.get("cats")


def test_reference_list_prints_every_workload_default_first(capsys):
    assert reference_cli.main(["--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == workloads.names()
    assert "(default)" in lines[0] and "224x224" in lines[0]
    assert "96x96" in lines[-1]


def test_reference_refuses_an_unknown_name_before_any_conversion(capsys):
    with pytest.raises(SystemExit) as exc:
        reference_cli.parse_args(["cats"])
    assert exc.value.code == 2
    assert "invalid choice: 'cats'" in capsys.readouterr().err


def test_bundle_dirs_keep_the_digits_cache_name(monkeypatch, tmp_path):
    monkeypatch.setenv("SPLITEDGE_CACHE", str(tmp_path))
    assert workloads.get("digits").bundle_dir() == tmp_path / "reference-bundle"
    assert workloads.get("mobilenetv2-fashion").bundle_dir() == tmp_path / "bundle-mobilenetv2-fashion"


def test_a_missing_artifact_says_how_to_train_it(tmp_path):
    w = workloads.Workload("x", "d", "mobilenetv2", 224, "fashion", tmp_path / "none.keras", "python scripts/t.py")
    with pytest.raises(BundleError, match="re-create it with: python scripts/t.py"):
        w.check_asset()


class _M:
    def __init__(self, source: str) -> None:
        self.extra = {"data_source": source}


def test_the_workload_of_a_bundle_comes_from_its_data_source():
    assert workloads.for_manifest(_M("reference_data.make_frames(600, seed=1234, split='test')")).name == "digits"
    src = "workload mobilenetv2-fashion: reference_data.generate(600, seed=1234, split='test', size=224, ...)"
    assert workloads.for_manifest(_M(src)).name == "mobilenetv2-fashion"
    assert workloads.for_manifest(_M("my_frames.npz")) is None


@pytest.mark.parametrize("name", [n for n in workloads.names() if n != "digits"])
def test_trained_workloads_record_how_they_were_made(name):
    w = workloads.get(name)
    if not w.asset.is_file():
        pytest.skip(f"{name} is not trained in this checkout ({w.train_command})")
    meta = json.loads(w.metadata_path.read_text())
    assert meta["command"].startswith("python scripts/train_workload.py")
    assert 0.0 < meta["test_accuracy"] <= 1.0 and meta["training_seconds"] > 0


def test_float16_weights_round_trip_and_rebuild_the_model(tmp_path, monkeypatch):
    import keras
    import numpy as np

    monkeypatch.setenv("SPLITEDGE_CACHE", str(tmp_path / "cache"))
    model = workloads.build_model("mobilenetv2", 32)
    path = workloads.save_weights_npz(model, tmp_path / "m.weights.npz")
    back = workloads.load_weights_npz(path)
    for w, b in zip(model.get_weights(), back, strict=True):
        assert b.dtype == np.float32 and b.shape == w.shape
        np.testing.assert_allclose(b, w, rtol=1e-3, atol=1e-4)  # float16 rounding
    w = workloads.Workload("tiny", "d", "mobilenetv2", 32, "fashion", path, "python scripts/train_workload.py")
    rebuilt = w.model_path()
    assert rebuilt.suffix == ".keras" and rebuilt.parent == tmp_path / "cache" / "models"
    assert w.model_path() == rebuilt  # built once, then reused
    loaded = keras.models.load_model(rebuilt, compile=False)
    np.testing.assert_array_equal(loaded.get_weights()[0], back[0])
    assert w.metadata_path == tmp_path / "m.json"
