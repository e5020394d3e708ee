"""--preprocess: a float model's input preprocessing folded into the uint8 heads (converter/preprocess.py)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from converter.preprocess import parse_preprocess
from sdk.errors import ConversionError, ConversionWarning
from sdk.manifest import Manifest, PreprocessMode

keras = pytest.importorskip("keras", reason="the converter needs splitedge[convert]")


def test_parse_modes_and_refusals():
    assert parse_preprocess(None) is None
    tf = parse_preprocess("tf", 3)
    assert tf.mode is PreprocessMode.TF and tf.scale == (1 / 127.5,) * 3 and tf.offset == (-1.0,) * 3
    aff = parse_preprocess("0.5,-2", 1)
    assert aff.mode is PreprocessMode.AFFINE and aff.scale == (0.5,) and aff.offset == (-2.0,)
    assert parse_preprocess("caffe").flip_channels
    with pytest.raises(ConversionError, match=r"--preprocess 'imagenet': expected none, tf, torch, caffe or SCALE"):
        parse_preprocess("imagenet")
    with pytest.raises(ConversionError, match=r"--preprocess torch: the model input has 1 channels.*SCALE,OFFSET"):
        parse_preprocess("torch", 1)
    with pytest.raises(ConversionError, match="nonzero"):
        parse_preprocess("0,1")


@pytest.mark.parametrize(
    ("mode", "module"),
    [("tf", "mobilenet_v2"), ("torch", "densenet"), ("caffe", "resnet50"), ("none", None)],
)
def test_folded_modes_equal_keras_applications_preprocess_input(mode, module):
    from converter.preprocess import fold_into

    inp = keras.Input((4, 5, 3))
    model = keras.Model(inp, keras.layers.Identity()(inp))  # its output is what it was fed
    folded = fold_into(model, parse_preprocess(mode, 3))
    assert str(folded.inputs[0].dtype) == "uint8"
    frames = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    want = frames.astype("float32")
    if module is not None:
        want = getattr(keras.applications, module).preprocess_input(want.copy())
    np.testing.assert_allclose(np.asarray(folded(frames)), want, rtol=1e-5, atol=1e-4)


def _float_model_on_minus_one_to_one(seed: int = 0):
    """A small CNN trained on x / 127.5 - 1 (the tf mode) to tell three colour tints apart, and its data."""
    from keras import layers

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 480)
    x = rng.normal(100, 35, (480, 16, 16, 3)) + 70 * np.eye(3)[y][:, None, None, :]
    x = np.clip(x, 0, 255).astype(np.uint8)
    keras.utils.set_random_seed(seed)
    inp = keras.Input((16, 16, 3), name="pixels")
    h = layers.ReLU(6.0)(layers.Conv2D(8, 3, strides=2, padding="same")(inp))
    h = layers.ReLU(6.0)(layers.Conv2D(16, 3, strides=2, padding="same")(h))
    out = layers.Dense(3, name="logits")(layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out, name="tinted")
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x.astype("float32") / 127.5 - 1.0, y, epochs=8, batch_size=32, verbose=0)
    return model, x, y


def test_float_model_without_preprocess_is_warned_with_the_range_and_the_flag():
    from converter.convert import prepare_model

    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(inp)), name="floaty")
    with pytest.warns(ConversionWarning, match=r"'floaty' takes float32 input.*raw 0..255 uint8 values as floats.*"
                                               r"--preprocess \{tf,torch,caffe\}"):
        prepared, spec, said = prepare_model(model)
    assert spec.mode is PreprocessMode.NONE and said and str(prepared.inputs[0].dtype) == "uint8"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConversionWarning)
        prepare_model(model, preprocess="none")  # said explicitly: no warning


def test_uint8_model_refuses_a_second_preprocessing():
    from converter.convert import prepare_model

    inp = keras.Input((8, 8, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inp)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    with pytest.raises(ConversionError, match="already takes uint8 frames.*drop --preprocess"):
        prepare_model(model, preprocess="tf")
    assert prepare_model(model)[1] is None


@pytest.fixture(scope="module")
def tinted_bundle(tmp_path_factory):
    """Through the CLI: the [-1, 1] float model saved as .keras, converted with --preprocess tf (~10 s)."""
    import contextlib
    import io

    from converter.convert_cli import main

    tmp = tmp_path_factory.mktemp("tinted")
    model, x, y = _float_model_on_minus_one_to_one()
    model.save(tmp / "tinted.keras")
    np.savez(tmp / "calib.npz", x=x, y=y)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(tmp / "tinted.keras"), "--calib", str(tmp / "calib.npz"), "--out", str(tmp / "b"),
                   "--bits", "8", "--preprocess", "tf", "--quiet"])
    assert rc == 0, err.getvalue()
    return tmp / "b", out.getvalue(), err.getvalue()


def test_float_model_converted_with_tf_preprocess_keeps_its_accuracy(tinted_bundle):
    """The heads take raw uint8 frames; every cut keeps the float model's accuracy."""
    from sdk.litert import LiteRTModel
    from sdk.manifest import CutKind, load_manifest

    bundle, out, err = tinted_bundle
    assert "WARNING" not in err and "float accuracy" in out
    m = load_manifest(bundle)
    assert m.input.dtype == "uint8" and m.input.preprocess.mode is PreprocessMode.TF
    assert m.input.preprocess.model_dtype == "float32"
    assert m.float_accuracy > 0.9, "the float model itself, fed through the folded preprocessing"
    for c in m.cuts:
        if c.kind is CutKind.RAW:
            continue
        a = c.accuracy_at(8)
        assert a.agreement >= 0.95 and a.accuracy >= m.float_accuracy - 0.05, (c.index, c.name, a)
        info = next(iter(LiteRTModel(bundle / c.head.path).inputs.values()))
        assert info.dtype == np.uint8 and (info.scale, info.zero_point) in ((0.0, 0), (1.0, 0))
    # an older bundle's manifest (no preprocess key) still loads
    old = json.loads(m.to_json())
    del old["input"]["preprocess"]
    assert Manifest.from_dict(old).input.preprocess is None
    assert Manifest.from_dict(json.loads(m.to_json())) == m


def test_warning_is_printed_at_once_by_the_cli(capsys):
    from converter.convert_cli import _warnings_to_stderr

    with _warnings_to_stderr():
        warnings.warn("fed 0..255; pass --preprocess", ConversionWarning, stacklevel=1)
    assert capsys.readouterr().err == "splitedge convert: WARNING: fed 0..255; pass --preprocess\n"


def test_without_labels_every_table_says_agreement(tinted_bundle, tmp_path, capsys):
    import dataclasses

    from benchmarks.bench_converter import per_cut_table
    from converter.convert_cli import summary
    from converter.verify_cli import main as verify_main
    from sdk.manifest import LabelsSource, load_manifest

    bundle, _, _ = tinted_bundle
    m = dataclasses.replace(load_manifest(bundle), labels_source=LabelsSource.FLOAT_MODEL)
    assert m.metric == "agreement"
    for table in (summary(m), per_cut_table(m)):
        assert "agree" in table and "acc" not in table.replace("agree", ""), table
    _, x, _ = _float_model_on_minus_one_to_one()
    np.savez(tmp_path / "unlabelled.npz", x=x[:60])
    assert verify_main([str(bundle), "--data", str(tmp_path / "unlabelled.npz")]) == 0
    printed = capsys.readouterr().out
    assert "agreement with the float model" in printed and "accuracy" not in printed
