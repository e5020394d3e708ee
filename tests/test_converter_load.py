"""Model intake (converter/load.py) and the checks `splitedge convert` makes before importing TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from converter.load import HDF5_MAGIC, ZIP_MAGIC, ModelFormat, sniff_model
from sdk.errors import ConversionError

ROOT = Path(__file__).resolve().parent.parent


def test_format_comes_from_the_magic_bytes_not_the_suffix(tmp_path):
    (tmp_path / "a.bin").write_bytes(ZIP_MAGIC + b"rest")
    (tmp_path / "b.keras").write_bytes(HDF5_MAGIC + b"rest")
    assert sniff_model(tmp_path / "a.bin") is ModelFormat.KERAS
    assert sniff_model(tmp_path / "b.keras") is ModelFormat.HDF5


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.keras", None, r"missing.keras does not exist; pass a Keras 3 .keras file"),
        ("empty.h5", b"", r"is an empty file; expected a Keras 3 .keras file .* model.save\(\"model.keras\"\)"),
        ("m.tflite", b"\x1c\x00\x00\x00TFL3", r"starting with bytes .*TFLite flatbuffer, already converted"),
        ("notes.keras", b"hello world", r"notes.keras is a file starting with bytes b'hello wo'; expected"),
    ],
)
def test_refused_files_say_what_they_are_and_what_to_do(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(ConversionError, match=message):
        sniff_model(tmp_path / name)


def test_savedmodel_folder_is_refused_with_the_export_to_do(tmp_path):
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"\x08\x01")
    with pytest.raises(ConversionError, match=r"TensorFlow SavedModel.*TFSMLayer.*cannot|has no layers to split.*"
                                              r"model.save\(\"model.keras\"\)"):
        sniff_model(tmp_path / "sm")
    with pytest.raises(ConversionError, match="folder without saved_model.pb"):
        sniff_model(tmp_path)


#: Each refused `splitedge convert` command and the words of its one-line error. Run in ONE subprocess that
#: reports, per command, its exit code, the time it took and whether tensorflow was imported.
_REFUSALS = """
import json, sys, time
from converter.convert_cli import main
rows = []
for argv in json.loads(sys.argv[1]):
    t0 = time.perf_counter()
    rc = main(argv)
    rows.append([rc, time.perf_counter() - t0, 'tensorflow' in sys.modules or 'keras' in sys.modules])
print(json.dumps(rows))
"""


def test_refused_commands_answer_before_tensorflow_is_imported(tmp_path):
    model = tmp_path / "model.keras"
    model.write_bytes(ZIP_MAGIC + b"\x00" * 40)  # passes the magic check; never loaded
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.zeros((2, 4, 4, 3), np.uint8))
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"\x08")
    (tmp_path / "text.h5").write_text("not a model")
    (tmp_path / "existing").mkdir()
    out = str(tmp_path / "out")
    cases = [
        ([str(tmp_path / "nope.keras"), "--calib", str(calib), "--out", out], "nope.keras does not exist"),
        ([str(tmp_path / "text.h5"), "--calib", str(calib), "--out", out], "text.h5 is a file starting with"),
        ([str(tmp_path / "sm"), "--calib", str(calib), "--out", out], 'model.save("model.keras")'),
        ([str(model), "--calib", str(tmp_path / "none.npz"), "--out", out], "--calib"),
        ([str(model), "--calib", str(calib), "--out", str(tmp_path / "existing")], "exists; pass --force"),
        ([str(model), "--calib", str(calib), "--out", out, "--bits", "8,3"], "--bits 8,3: each must be one of"),
        ([str(model), "--calib", str(calib), "--out", out, "--preprocess", "imagenet"], "--preprocess 'imagenet'"),
        ([str(model), "--calib", str(calib), "--out", out, "--board", "pi9"], "--board pi9: unknown board"),
        ([str(model), "--calib", str(calib), "--out", out, "--min-cut-reduction", "1.5"],
         "--min-cut-reduction 1.5: expected a fraction in [0, 1)"),
        ([str(model), "--calib", str(calib), "--out", out, "--workers", "0"], "--workers 0: expected 1"),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _REFUSALS, json.dumps([c for c, _ in cases])], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("splitedge convert: error: ")]
    assert len(errors) == len(cases), proc.stderr  # one line each, no traceback
    assert "Traceback" not in proc.stderr
    for (_, words), (rc, seconds, imported), line in zip(cases, rows, errors, strict=True):
        assert rc == 1 and words in line, line
        assert not imported, f"{line!r} imported TensorFlow before refusing"
        assert seconds < 1.0, f"{line!r} took {seconds:.2f} s"
    assert wall < 3.0 * 3, f"{len(cases)} refusals took {wall:.1f} s in all"  # interpreter start included


def test_a_refused_command_returns_well_under_3_s_through_the_cli():
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sdk.cli", "convert", "missing.keras", "--calib", "c.npz",
                           "--out", "o"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "missing.keras does not exist" in proc.stderr
    assert elapsed < 3.0, f"refusal took {elapsed:.1f} s (TensorFlow imported?)"


# ------------------------------------------------------------------------------------------ with Keras


@pytest.fixture(scope="module")
def tiny_model():
    keras = pytest.importorskip("keras", reason="the converter needs splitedge[convert]")
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3), name="frame")
    out = layers.Dense(2, name="logits")(layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3)(inp)))
    return keras.Model(inp, out, name="tiny")


def _same(a, b) -> bool:
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    return bool(np.allclose(np.asarray(a(x)), np.asarray(b(x)), atol=1e-6))


def test_keras_and_hdf5_load_under_any_name(tmp_path, tiny_model):
    from converter.load import load_model

    tiny_model.save(tmp_path / "m.keras")
    tiny_model.save(tmp_path / "m.h5")
    (tmp_path / "m.keras").rename(tmp_path / "best_checkpoint")
    (tmp_path / "m.h5").rename(tmp_path / "model.bin")
    assert sniff_model(tmp_path / "model.bin") is ModelFormat.HDF5
    for name in ("best_checkpoint", "model.bin"):
        assert _same(load_model(tmp_path / name), tiny_model), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_checkpoint", "model.bin"]  # no temp left


def test_broken_files_give_one_line_with_what_to_do(tmp_path, tiny_model):
    from converter.load import load_model

    tiny_model.save(tmp_path / "m.keras")
    blob = (tmp_path / "m.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(ConversionError) as err:
        load_model(tmp_path / "cut.keras")
    assert "\n" not in str(err.value) and "cut.keras (keras): Keras cannot load it" in str(err.value)
    tiny_model.save_weights(tmp_path / "w.weights.h5")
    with pytest.raises(ConversionError, match=r"weights only.*model.save\(\"model.keras\"\)"):
        load_model(tmp_path / "w.weights.h5")
