"""Frames of the real-scale workloads: the same generator at another size, with Fashion-MNIST items.

Needs Debian's dataset-fashion-mnist (./run.sh installs it); without it the tests skip with the reason.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from converter import reference_data

needs_fashion = pytest.mark.skipif(
    not (reference_data.FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


def test_digits_frames_at_96_are_unchanged_by_the_size_parameter():
    # The sha256 of generate(64, 7, "test") computed with the generator before it took a size (4f414ed).
    f = reference_data.generate(64, 7, "test")
    g = reference_data.generate(64, 7, "test", size=96, objects="digits")
    np.testing.assert_array_equal(f.x, g.x)
    digest = hashlib.sha256(f.x.tobytes() + f.y.tobytes()).hexdigest()
    assert digest == "4d1de5ee1f819f0208de660aa4ee6b230101cef747fa09c0cf6df03b37d8a1b0"


@needs_fashion
def test_fashion_frames_have_the_size_and_classes_asked_for():
    f = reference_data.generate(48, 3, "test", size=224, objects="fashion")
    assert f.x.shape == (48, 224, 224, 3) and f.x.dtype == np.uint8
    assert set(f.y.tolist()) <= set(range(len(reference_data.FASHION_CLASSES)))
    assert len(set(f.y.tolist())) >= 6
    assert f.x.reshape(48, -1).std(axis=1).min() > 3.0


@needs_fashion
def test_fashion_frames_are_a_pure_function_of_their_arguments():
    a = reference_data.generate(12, 5, "train", size=128, objects="fashion")
    b = reference_data.generate(12, 5, "train", size=128, objects="fashion")
    np.testing.assert_array_equal(a.x, b.x)
    c = reference_data.generate(12, 5, "test", size=128, objects="fashion")
    assert not np.array_equal(a.x, c.x)


@needs_fashion
def test_a_frame_at_twice_the_size_is_the_same_scene():
    # Every length scales with size / 96, so the 192 px frame, averaged down 2x2, matches the 96 px one
    # (median correlation ~0.93 here; a different frame's ~0.06).
    small = reference_data.generate(64, 9, "test", size=96, objects="fashion")
    large = reference_data.generate(64, 9, "test", size=192, objects="fashion")
    np.testing.assert_array_equal(small.y, large.y)
    down = large.x.astype(np.float64).reshape(64, 96, 2, 96, 2, 3).mean(axis=(2, 4))
    same = [np.corrcoef(small.x[i].ravel(), down[i].ravel())[0, 1] for i in range(64)]
    other = [np.corrcoef(small.x[i].ravel(), down[(i + 1) % 64].ravel())[0, 1] for i in range(64)]
    assert np.median(same) > 0.8 > 0.3 > np.median(other)


def test_bad_objects_and_sizes_are_refused():
    with pytest.raises(ValueError, match="objects must be one of"):
        reference_data.generate(1, 0, "test", objects="cats")
    with pytest.raises(ValueError, match="size must be an int >= 32"):
        reference_data.generate(1, 0, "test", size=8)


def test_missing_fashion_mnist_names_the_debian_package(monkeypatch, tmp_path):
    from sdk.errors import MissingDependencyError

    monkeypatch.setattr(reference_data, "FASHION_DIR", tmp_path)
    reference_data._fashion.cache_clear()
    try:
        with pytest.raises(MissingDependencyError, match="apt-get install dataset-fashion-mnist"):
            reference_data.generate(1, 0, "test", objects="fashion")
    finally:
        reference_data._fashion.cache_clear()
