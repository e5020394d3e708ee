"""The device/cloud tensor contract on the real bundle: frames as the device sends them (batch dim 1) run."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cloud_tail.tails import TailSet
from sdk.litert import LiteRTModel
from sdk.manifest import CutKind, load_manifest
from sdk.messages import ErrorCode
from sdk.wire import decode_frame, encode_activation, encode_raw

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(reference_bundle):
    from converter.reference_data import make_frames

    frames, _ = make_frames(2, seed=5, split="test")
    return reference_bundle, load_manifest(reference_bundle), TailSet(reference_bundle), frames


def _frame(manifest, cut, acts, **kw):
    quant = {t.name: (t.scale, t.zero_point) for t in cut.tensors}
    return decode_frame(encode_activation(device_id="d", seq=1, cut_id=cut.index, bundle_id=manifest.wire_bundle_id,
                                          activations=acts, quant=quant, bits=8, capture_ts=time.time(), **kw))


@pytest.mark.parametrize("batched", [True, False])
def test_split_frames_with_or_without_the_batch_dimension_run(setup, batched):
    root, manifest, tails, frames = setup
    cut = next(c for c in manifest.cuts if c.kind is CutKind.SPLIT)
    head = LiteRTModel(root / cut.head.path)
    out = head.run({next(iter(head.inputs)): frames[:1]})
    acts = {t.name: out[t.head_output] if batched else out[t.head_output][0] for t in cut.tensors}
    frame = _frame(manifest, cut, acts)
    assert tails.admit(frame) is None
    logits = tails.run(cut.index, [frame, frame])
    tail = LiteRTModel(root / cut.tail.path)
    want = tail.run({t.name: ((out[t.head_output].astype(np.float32) - t.zero_point) * t.scale) for t in cut.tensors})
    np.testing.assert_allclose(logits[0], next(iter(want.values()))[0], rtol=1e-5, atol=1e-5)


def test_raw_frames_run_and_wrong_shapes_are_refused(setup):
    root, manifest, tails, frames = setup
    raw = encode_raw(device_id="d", seq=2, bundle_id=manifest.wire_bundle_id, image=frames[0][None],
                     capture_ts=time.time())
    f = decode_frame(raw)
    assert tails.admit(f) is None
    assert tails.run(manifest.raw_cut.index, [f]).shape == (1, manifest.num_classes)
    cut = next(c for c in manifest.cuts if c.kind is CutKind.SPLIT)
    bad = {t.name: np.zeros((2, *t.shape), dtype=np.int8) for t in cut.tensors}  # a batch of 2 is not a frame
    refusal = tails.admit(_frame(manifest, cut, bad))
    assert refusal is not None and refusal.code is ErrorCode.MALFORMED and "expects" in refusal.detail


def test_load_all_loads_and_warms_up_every_tail_before_the_first_frame(reference_bundle):
    tails = TailSet(reference_bundle)
    tails.load_all()
    assert tails.cut_ids
    for cut in tails.cut_ids:
        assert tails.model(cut).last_invoke_ms > 0.0, f"cut {cut}: no warm-up invoke"
