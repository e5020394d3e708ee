"""A tail worker serving two bundles at once (cloud_tail.tails.BundleTails): frames routed by their bundle id.

Real tails (the reference bundle and a re-identified copy, tests/rollout_bundles.py) behind a real
TailWorker on InMemoryHub: a burst mixing both bundles is answered frame by frame, each by its own
bundle's tail, batches never mixing bundles; a frame of a bundle no one serves is refused by id.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from cloud_tail.tails import BundleTails, TailSet
from cloud_tail.worker import TailWorker, WorkerConfig
from sdk import cli
from sdk.errors import ConfigError
from sdk.manifest import CutKind, Manifest, load_manifest
from sdk.messages import ErrorCode, ErrorMessage, ResultMessage, decode_message
from sdk.topics import TopicKind, filter_for
from sdk.transport import InMemoryHub
from sdk.wire import decode_frame, encode_raw
from tests.rollout_bundles import make_version

pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def two(reference_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    v2 = make_version(reference_bundle, tmp_path_factory.mktemp("v") / "v2", "2", None)
    return reference_bundle, v2


def raw(manifest: Manifest, seq: int, device: str = "cam", bundle: int | None = None) -> bytes:
    image = np.full((1, *manifest.input.shape), seq % 255, dtype=np.uint8)
    return encode_raw(device_id=device, seq=seq, bundle_id=manifest.wire_bundle_id if bundle is None else bundle,
                      image=image, capture_ts=time.time())  # fmt: skip


def test_frames_are_routed_by_bundle_id_and_an_unknown_one_is_refused_by_id(two: tuple[Path, Path]) -> None:
    tails = BundleTails(two)
    m1, m2 = (load_manifest(p) for p in two)
    assert m1.wire_bundle_id != m2.wire_bundle_id
    assert tails.bundle_ids == (m1.wire_bundle_id, m2.wire_bundle_id)
    for m in (m1, m2):
        f = decode_frame(raw(m, 1))
        assert tails.admit(f) is None
        assert tails.run(m.raw_cut.index, [f]).shape == (1, m.num_classes)
    refusal = tails.admit(decode_frame(raw(m1, 2, bundle=0xDEADBEEF)))
    assert refusal is not None and refusal.code is ErrorCode.BUNDLE_MISMATCH
    assert "0xdeadbeef" in refusal.detail and f"0x{m2.wire_bundle_id:08x}" in refusal.detail
    assert "--bundle OLD --bundle NEW" in refusal.detail


def test_two_different_bundles_with_one_wire_id_are_refused(two: tuple[Path, Path], tmp_path: Path) -> None:
    other = TailSet(two[1])
    object.__setattr__(other, "bundle_id", load_manifest(two[0]).wire_bundle_id)  # a forged 32-bit collision
    tails = BundleTails([two[0]])
    with pytest.raises(ConfigError, match="share the wire bundle id"):
        tails.add(other)
    assert tails.add(two[0]).bundle == two[0]  # the same bundle twice is served once


def test_a_worker_answers_a_mixed_burst_once_per_frame_batching_per_bundle(two: tuple[Path, Path]) -> None:
    hub = InMemoryHub(synchronous=True, raise_handler_errors=True)
    tails = BundleTails(two)
    runs: list[set[int]] = []
    real_run = tails.run

    def spy(cut_id, frames):  # records which bundles each batch held
        runs.append({f.header.bundle_id for f in frames})
        return real_run(cut_id, frames)

    tails.run = spy  # type: ignore[method-assign]
    worker = TailWorker(hub.transport("w"), tails, WorkerConfig("w1", max_batch=8, max_wait_ms=1000.0))
    worker.start(thread=False)
    got: list[ResultMessage | ErrorMessage] = []
    listener = hub.transport("l")
    listener.subscribe(filter_for(TopicKind.RESULT), lambda m: got.append(decode_message(m.payload)))  # type: ignore[arg-type]
    m1, m2 = (load_manifest(p) for p in two)
    dev = hub.transport("cam")
    for seq in range(12):  # alternating bundles, as devices mid-switch send them
        dev.publish(f"splitedge/v1/cam/{TopicKind.ACT.value}", raw(m1 if seq % 2 else m2, seq))
    dev.publish(f"splitedge/v1/cam/{TopicKind.ACT.value}", raw(m1, 99, bundle=0x0BADF00D))
    worker.drain()
    results = [m for m in got if isinstance(m, ResultMessage)]
    errors = [m for m in got if isinstance(m, ErrorMessage)]
    assert sorted(r.seq for r in results) == list(range(12))
    assert [(e.seq, e.code) for e in errors] == [(99, ErrorCode.BUNDLE_MISMATCH.value)]
    assert runs and all(len(b) == 1 for b in runs), runs  # never a batch of two bundles
    assert {next(iter(b)) for b in runs} == {m1.wire_bundle_id, m2.wire_bundle_id}


def test_splitedge_cloud_takes_several_bundles_and_says_so(two: tuple[Path, Path]) -> None:
    from cloud_tail.cli import parse_args

    args = parse_args(["--bundle", str(two[0]), "--bundle", str(two[1])])
    assert args.bundle == [str(two[0]), str(two[1])]
    assert cli.COMMANDS["cloud"][0] == "cloud_tail.cli"
    assert load_manifest(two[1]).raw_cut is not None and load_manifest(two[1]).cut(0).kind is CutKind.RAW
