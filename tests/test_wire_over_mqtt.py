"""Real activations of the reference bundle, packed at 8/4/2 bits with and without zstd, through Mosquitto."""

from __future__ import annotations

import queue
import time

import numpy as np
import pytest

from sdk.litert import LiteRTModel
from sdk.manifest import CutKind, load_manifest
from sdk.mqtt import MqttTransport
from sdk.packing import requantize
from sdk.topics import TopicKind, topic
from sdk.wire import Codec, decode_frame, encode_activation, encode_raw

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def activations(reference_bundle):
    from converter.reference_data import make_frames

    manifest = load_manifest(reference_bundle)
    frames, _ = make_frames(3, seed=99, split="test")
    out = []
    for cut in manifest.cuts:
        if cut.kind is not CutKind.SPLIT:
            continue
        head = LiteRTModel(reference_bundle / cut.head.path)
        res = head.run({next(iter(head.inputs)): frames[:1]})
        out.append((cut, {t.name: res[t.head_output][0] for t in cut.tensors}))
    return manifest, frames, out


def test_round_trip_through_mosquitto(mosquitto, activations):
    manifest, frames, cuts = activations
    got: queue.Queue = queue.Queue()
    sub = MqttTransport(mosquitto.url, client_id="rx")
    pub = MqttTransport(mosquitto.url, client_id="tx")
    try:
        sub.subscribe(topic("cam-1", TopicKind.ACT), lambda m: got.put(m.payload), qos=1)
        sent = []
        seq = 0
        for cut, acts in cuts:
            quant = {t.name: (t.scale, t.zero_point) for t in cut.tensors}
            for bits in (8, 4, 2):
                for codec in (Codec.NONE, Codec.ZSTD):
                    seq += 1
                    data = encode_activation(device_id="cam-1", seq=seq, cut_id=cut.index,
                                             bundle_id=manifest.wire_bundle_id, activations=acts, quant=quant,
                                             bits=bits, capture_ts=time.time(), codec=codec)
                    pub.publish(topic("cam-1", TopicKind.ACT), data, qos=1)
                    sent.append((seq, cut, acts, bits))
        seq += 1
        pub.publish(topic("cam-1", TopicKind.ACT),
                    encode_raw(device_id="cam-1", seq=seq, bundle_id=manifest.wire_bundle_id, image=frames[0],
                               capture_ts=time.time()), qos=1)
        frames_rx = {}
        for _ in range(len(sent) + 1):
            f = decode_frame(got.get(timeout=10))
            frames_rx[f.header.seq] = f
    finally:
        sub.close()
        pub.close()

    raw = frames_rx[seq]
    assert np.array_equal(raw.tensors[0].data.reshape(frames[0].shape), frames[0])
    for s, cut, acts, bits in sent:
        f = frames_rx[s]
        assert (f.header.cut_id, f.header.bundle_id, f.header.device_id) == (cut.index, manifest.wire_bundle_id, "cam-1")
        deq = f.dequantized()
        for t in cut.tensors:
            want = requantize(acts[t.name], t.scale, t.zero_point, bits).dequantize()
            assert deq[t.name].shape == tuple(t.shape)
            np.testing.assert_array_equal(deq[t.name], want)
            if bits == 8:  # lossless: exactly the head's int8 output, dequantized
                np.testing.assert_allclose(deq[t.name], (acts[t.name].astype(np.float32) - t.zero_point) * t.scale,
                                           rtol=1e-6)
