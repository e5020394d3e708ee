"""The raw frame as JPEG on the device (``[device] raw_jpeg_quality``): the profile key, the payload the runner
sends, and what the planner learns from it (cut 0's bytes and device time).

In-memory broker, fake clock and fake heads as in test_device_runner.py; the JPEG itself is real (Pillow via
sdk.jpeg) and the responder decodes it with sdk.wire.decode_frame.
"""

from __future__ import annotations

import numpy as np
import pytest
from fakes import fake_manifest
from test_device_runner import FakeClock, Responder, make_config, make_runner

from device_runner.estimator import Estimates
from device_runner.policy import Choice, CutPolicy
from sdk.errors import ConfigError
from sdk.manifest import CutKind
from sdk.wire import Codec

pytest.importorskip("PIL")

#: a smooth camera-like frame (a gradient): JPEG shrinks it well below its 3072 raw bytes
FRAME = np.dstack([np.add.outer(np.arange(32), np.arange(32)).astype(np.uint8) * 3] * 3)


def estimates(bw: float = 100_000.0) -> Estimates:
    return Estimates(bandwidth_bytes_per_s=bw, link_ms=5.0, head_ms={}, tail_ms={}, last_sample={}, measured=True)


@pytest.mark.parametrize("value", [0, 96, True, "85", 85.5])
def test_profile_refuses_a_quality_outside_1_to_95(value: object) -> None:
    with pytest.raises(ConfigError, match=r"raw_jpeg_quality = .* expected an integer JPEG quality in \[1, 95\]"):
        make_config(raw_jpeg_quality=value)


def test_profile_reads_the_quality_and_defaults_to_pixels() -> None:
    assert make_config(raw_jpeg_quality=85).device.raw_jpeg_quality == 85
    assert make_config().device.raw_jpeg_quality is None


def test_policy_prices_the_raw_cut_at_the_learned_jpeg_size() -> None:
    cfg = make_config(raw_jpeg_quality=85)
    policy = CutPolicy(fake_manifest(), cfg.device, probe_every=0)
    assert policy.payload_bytes(0) == 3072  # the manifest's pixels until a JPEG is encoded
    before = policy.decide(estimates()).plan
    policy.observe_payload(0, 300)
    assert policy.payload_bytes(0) == 300
    after = policy.decide(estimates()).plan  # same snapshot: re-planned all the same (the bytes moved)
    raw_before = next(o for o in before.options if o.kind is CutKind.RAW)
    raw_after = next(o for o in after.options if o.kind is CutKind.RAW)
    assert raw_after.nbytes == 300 and raw_after.transfer_ms < raw_before.transfer_ms / 5
    policy.observe_payload(0, 400)  # an EWMA: one bigger frame moves it a fifth of the way
    assert policy.payload_bytes(0) == 320
    policy.observe_payload(1, 10)  # only the raw frame's size is learned
    assert policy.payload_bytes(1) == 2048


def test_payload_limit_keeps_the_raw_cut_when_it_goes_as_jpeg() -> None:
    limited = dict(max_payload_bytes=2500, probe_every=0)
    assert 0 not in CutPolicy(fake_manifest(), make_config().device, **limited).cut_indices  # 3072 B of pixels
    assert 0 in CutPolicy(fake_manifest(), make_config(raw_jpeg_quality=80).device, **limited).cut_indices


def test_runner_sends_the_raw_frame_as_jpeg_and_learns_its_size_and_time() -> None:
    runner, answers, hub, clock = make_runner(initial=Choice(0, 0), raw_jpeg_quality=85)
    cloud = Responder(hub, clock)
    for _ in range(3):
        runner.process(FRAME)
    assert len(cloud.frames) == 3 and all(a.answered_by.value == "cloud" for a in answers)
    tensor = cloud.frames[0].tensors[0]
    assert cloud.frames[0].header.is_raw and tensor.codec is Codec.JPEG
    assert tensor.data.shape == (1, 32, 32, 3) and tensor.data.dtype == np.uint8
    assert np.abs(tensor.data[0].astype(int) - FRAME.astype(int)).mean() < 6  # lossy, close
    sent = runner.bytes_sent / 3
    assert sent < 3072 / 2  # the JPEG, not the pixels
    learned = runner.policy.payload_bytes(0)
    assert learned is not None and learned < 3072 / 2
    assert 0 in runner.estimator.snapshot().head_ms  # the encode time is cut 0's device time


def test_runner_sizes_the_jpeg_before_its_first_plan() -> None:
    clock = FakeClock()
    runner, answers, hub, clock = make_runner(clock=clock, initial=Choice(3, 0), raw_jpeg_quality=85)
    runner.process(FRAME)  # answered on the device; the raw frame was still encoded once, to be priced
    assert runner.policy.payload_bytes(0) is not None and runner.policy.payload_bytes(0) < 3072 / 2
    assert runner.bytes_sent == 0


def test_the_first_encode_of_the_process_is_not_priced_as_the_raw_cuts_device_time() -> None:
    # The process's first JPEG loads Pillow's codec (~100 ms); priced at that, the raw cut lost every plan
    # and was never tried again to correct it (a live Zero 2 W demo stayed on the device).
    clock = FakeClock()
    runner, answers, hub, clock = make_runner(clock=clock, initial=Choice(3, 0), raw_jpeg_quality=85)
    encode, calls = runner._encoder.encode, []

    def slow_first(*a: object, **k: object) -> bytes:
        clock.advance(0.100 if not calls else 0.002)
        calls.append(1)
        return encode(*a, **k)

    runner._encoder.encode = slow_first  # type: ignore[method-assign]
    runner.process(FRAME)
    assert len(calls) == 2  # warmed, then timed
    assert runner.estimator.snapshot().head_ms[0] == pytest.approx(2.0, rel=1e-3)  # not 100


def test_privacy_sends_no_jpeg_and_encodes_none() -> None:
    runner, answers, hub, clock = make_runner(initial=Choice(3, 0), raw_jpeg_quality=85, privacy=True)
    runner.process(FRAME)
    assert runner.policy.payload_bytes(0) == 3072  # never encoded: the manifest's size, and never planned
    assert runner.bytes_sent == 0
