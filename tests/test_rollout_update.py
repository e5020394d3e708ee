"""Over-the-air updates without a broker: ``splitedge rollout``'s publisher, the device's BundleUpdater and the
real DeviceRunner and TailWorker on InMemoryHub, with real LiteRT heads and tails (cloud_tail/rollout.py,
sdk/update.py, sdk/update.py, device_runner/update.py). The same path on a real Mosquitto with TLS and the ACL: tests/test_rollout_mqtt.py.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cryptography")
pytest.importorskip("ai_edge_litert")

from cloud_tail.rollout import FileScope, iter_chunks, make_announce, publish_rollout, read_announce  # noqa: E402
from cloud_tail.tails import BundleTails  # noqa: E402
from cloud_tail.worker import TailWorker, WorkerConfig  # noqa: E402
from device_runner import cli as device_cli  # noqa: E402
from device_runner.heads import LiteRTHeads  # noqa: E402
from device_runner.policy import CutPolicy  # noqa: E402
from device_runner.runner import Answer, AnsweredBy, DeviceRunner, RunnerOptions  # noqa: E402
from device_runner.update import litert_prepare  # noqa: E402
from sdk import topics  # noqa: E402
from sdk.config import load_config  # noqa: E402
from sdk.manifest import MANIFEST_NAME, CutKind, Manifest, load_manifest  # noqa: E402
from sdk.messages import AnnounceMessage, RolloutState  # noqa: E402
from sdk.signing import new_key_pair, sign_bundle  # noqa: E402
from sdk.topics import TopicKind  # noqa: E402
from sdk.transport import InMemoryHub, Message  # noqa: E402
from sdk.update import ACTIVE_NAME, BundleUpdater, active_bundle  # noqa: E402
from sdk.wire import FrameHeader  # noqa: E402
from tests.rollout_bundles import make_version, tamper_head  # noqa: E402

PROFILE = """
[board]
name = "host"
cpu = "x86-64"
threads = 1
memory_budget_mb = 256
speed_factor = 1.0
speed_factor_source = "test: this machine"

[device]
device_id = "cam-1"
source = "synthetic"
fps_cap = 50
deadline_ms = 60000
target_accuracy = 0.5
bits = [8]
telemetry_interval_s = 3600

[broker]
url = "mqtt://127.0.0.1:1"
"""
GROUP = "lobby"


@pytest.fixture(scope="module")
def bundles(reference_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("rollout")
    (d / "keys").mkdir()
    private, public = new_key_pair(d / "keys" / "release.pem")
    v1 = make_version(reference_bundle, d / "v1", "1", private)
    v2 = make_version(reference_bundle, d / "v2", "2", private)
    v3 = make_version(reference_bundle, d / "v3", "3", private)
    tamper_head(v3)  # a head rewritten and its hash updated: only the signature can tell
    return {"v1": v1, "v2": v2, "v3": v3, "key": private, "pub": public, "dir": d}


class Clock:
    """Test time: 5 ms per frame, however long the host takes to stage a bundle (no frame goes overdue)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """One device (real heads, pinned split cut, every frame escalated) and one worker serving v1 and v2."""

    def __init__(self, bundles: dict[str, Path], tmp_path: Path) -> None:
        self.clock = Clock()
        self.hub = InMemoryHub(synchronous=True, raise_handler_errors=True, clock=self.clock)
        (tmp_path / "cam.toml").write_text(PROFILE)
        self.cfg = load_config(tmp_path / "cam.toml")
        v1 = bundles["v1"]
        self.manifest = load_manifest(v1, trust=bundles["pub"])
        self.split = next(c.index for c in self.manifest.cuts if c.kind is CutKind.SPLIT)
        self.worker = TailWorker(self.hub.transport("w"), BundleTails([v1, bundles["v2"]]),
                                 WorkerConfig("w1", max_wait_ms=0.0), clock=self.clock)
        self.worker.start(thread=False)
        self.answers: list[Answer] = []
        self.sent: list[tuple[int, int]] = []  # (seq, bundle id) of every frame on the act topic
        self.hub.transport("sniffer").subscribe(topics.filter_for(TopicKind.ACT), self._sniff)
        self.runner = DeviceRunner(self.manifest, self.cfg, self.hub.transport("cam-1"),
                                   LiteRTHeads(v1, self.manifest, self.cfg.board), policy=self.policy(self.manifest),
                                   on_answer=self.answers.append, options=RunnerOptions(measure_heads=False),
                                   clock=self.clock)
        self.update_dir = tmp_path / "updates"
        self.updater = BundleUpdater(self.hub.transport("cam-1-updates"), GROUP, self.update_dir, trust=bundles["pub"],
                                     current=self.manifest, runner=self.runner,
                                     prepare=litert_prepare(self.cfg.board, self.policy))
        self.updater.start()
        self.runner.start()
        self.fleet = self.hub.transport("fleet")
        self.frame = np.random.default_rng(0).integers(0, 256, self.manifest.input.shape, dtype=np.uint8)

    def policy(self, m: Manifest) -> CutPolicy:
        return CutPolicy(m, self.cfg.device, probe_every=0, tau_override=2.0, allowed_cuts=[self.split])

    def _sniff(self, msg: Message) -> None:
        h = FrameHeader.from_bytes(msg.payload)
        self.sent.append((h.seq, h.bundle_id))

    def frames(self, n: int, *, answer: bool = True) -> None:
        for _ in range(n):
            self.clock.now += 0.005
            self.runner.process(self.frame)
        if answer:
            self.worker.drain()

    def rollout(self, bundle: Path, **kw: object) -> AnnounceMessage:
        a = make_announce(bundle, load_manifest(bundle), GROUP, chunk_size=64 * 1024, **kw)  # type: ignore[arg-type]
        publish_rollout(self.fleet, bundle, a, previous=read_announce(self.fleet, GROUP, 0.0))
        assert self.updater.wait_idle(60)
        return a


def test_a_device_switches_mid_stream_and_every_frame_is_answered_once_by_the_cloud(bundles, tmp_path):
    rig = Rig(bundles, tmp_path)
    v1, v2 = (load_manifest(bundles[k]) for k in ("v1", "v2"))
    rig.frames(5)
    rig.frames(3, answer=False)  # in flight when the new bundle arrives: v1 frames, answered after the swap
    announce = rig.rollout(bundles["v2"])
    assert all(not p.endswith("tail.tflite") for p, _, _ in announce.files)  # the device's share only
    assert announce.signature is not None and announce.version == "2"
    rig.frames(6)  # the first of these swaps, at the frame boundary
    seqs = [a.seq for a in rig.answers]
    assert sorted(seqs) == list(range(14)) and len(set(seqs)) == 14  # every frame exactly once
    assert {a.answered_by for a in rig.answers} == {AnsweredBy.CLOUD}, [(a.seq, a.reason) for a in rig.answers]
    assert rig.sent == [(s, v1.wire_bundle_id) for s in range(8)] + [(s, v2.wire_bundle_id) for s in range(8, 14)]
    t = rig.runner.telemetry()
    assert (t.bundle_id, t.bundle_version, t.rollout, t.rollout_bundle) == (
        f"{v2.wire_bundle_id:08x}", "2", RolloutState.ACTIVE.value, v2.bundle_id[:8])
    assert json.loads((rig.update_dir / ACTIVE_NAME).read_text()) == {"folder": v2.bundle_id[:16], "base": v1.bundle_id}
    assert active_bundle(rig.update_dir, bundles["pub"], base="f" * 64) is None  # a new --bundle installed: it wins
    path, m = active_bundle(rig.update_dir, bundles["pub"], base=v1.bundle_id)  # what the next start runs
    assert m.bundle_id == v2.bundle_id and path == rig.update_dir / v2.bundle_id[:16]
    restarted = DeviceRunner(m, rig.cfg, rig.hub.transport("cam-1b"), LiteRTHeads(path, m, rig.cfg.board),
                             options=RunnerOptions(measure_heads=False), clock=rig.clock)
    BundleUpdater(rig.hub.transport("cam-1b-updates"), GROUP, rig.update_dir, trust=bundles["pub"], current=m,
                  runner=restarted, prepare=litert_prepare(rig.cfg.board)).start()
    t = restarted.telemetry()  # the group's retained announce is the bundle it runs: active, nothing fetched
    assert (t.bundle_id, t.rollout, t.rollout_bundle) == (f"{v2.wire_bundle_id:08x}", "active", v2.bundle_id[:8])



def test_the_device_command_starts_from_the_bundle_last_rolled_out(bundles, tmp_path, capsys):
    from sdk import cli

    rig = Rig(bundles, tmp_path)
    rig.frames(2)
    rig.rollout(bundles["v2"])
    rig.frames(2)  # swapped: UPDATE_DIR/active written
    argv = ["device", "--bundle", str(bundles["v1"]), "--config", str(tmp_path / "cam.toml"), "--rollout-group", GROUP,
            "--trust", str(bundles["pub"]), "--update-dir", str(rig.update_dir), "--frames", "2",
            "--connect-timeout", "0.2", "--out", str(tmp_path / "a.jsonl")]  # fmt: skip
    assert cli.main(argv) == 0  # no broker there: answered locally, from v2
    err = capsys.readouterr().err
    assert f"starting from the bundle last rolled out, {rig.update_dir / load_manifest(bundles['v2']).bundle_id[:16]}" in err
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 2


def test_a_tampered_bundle_is_refused_by_name_and_the_running_one_kept(bundles, tmp_path):
    rig = Rig(bundles, tmp_path)
    v1 = load_manifest(bundles["v1"])
    rig.frames(3)
    a = rig.rollout(bundles["v3"])
    rig.frames(3)
    assert [a.answered_by for a in rig.answers] == [AnsweredBy.CLOUD] * 6
    assert {b for _, b in rig.sent} == {v1.wire_bundle_id}  # never switched
    t = rig.runner.telemetry()
    assert t.bundle_id == f"{v1.wire_bundle_id:08x}"
    assert (t.rollout, t.rollout_bundle) == (RolloutState.ROLLED_BACK.value, a.bundle_id[:8])
    assert "manifest.sig" in t.rollout_detail and "modified after signing" in t.rollout_detail
    assert "bundle 3 (" in t.rollout_detail and "\n" not in t.rollout_detail
    assert not any(rig.update_dir.iterdir())  # nothing of it is kept
    rig.rollout(bundles["v3"])  # announced again: not retried until the device restarts
    assert rig.runner.telemetry().rollout == RolloutState.ROLLED_BACK.value
    rig.rollout(bundles["v1"])  # the group rolled back to what the device runs: nothing fetched, active again
    t = rig.runner.telemetry()
    assert (t.rollout, t.rollout_bundle, t.rollout_detail) == (RolloutState.ACTIVE.value, v1.bundle_id[:8], None)


def test_an_unsigned_bundle_and_a_path_outside_the_bundle_are_refused(bundles, tmp_path):
    rig = Rig(bundles, tmp_path)
    unsigned = make_version(bundles["v1"], tmp_path / "u", "u", None)
    rig.rollout(unsigned)
    t = rig.runner.telemetry()
    assert t.rollout == RolloutState.ROLLED_BACK.value and "has no manifest.sig" in t.rollout_detail
    evil = make_announce(bundles["v2"], load_manifest(bundles["v2"]), GROUP)
    files = (*evil.files, ("../escape.txt", "00" * 32, 3))
    rig.fleet.publish(topics.announce_topic(GROUP), AnnounceMessage(**{**evil.to_dict(), "files": files}).to_bytes(),
                      retain=True)  # fmt: skip
    t = rig.runner.telemetry()
    assert t.rollout == RolloutState.ROLLED_BACK.value and "'../escape.txt'" in t.rollout_detail
    assert not (tmp_path / "escape.txt").exists()


def test_a_bundle_for_another_input_is_refused_before_loading(bundles, tmp_path):
    rig = Rig(bundles, tmp_path)
    other = make_version(bundles["v1"], tmp_path / "o", "o", None)
    doc = json.loads((other / MANIFEST_NAME).read_text())
    doc["input"]["shape"] = [d * 2 for d in doc["input"]["shape"][:2]] + doc["input"]["shape"][2:]
    (other / MANIFEST_NAME).write_text(json.dumps(doc, indent=1) + "\n")
    sign_bundle(other, bundles["key"])
    rig.rollout(other)
    t = rig.runner.telemetry()
    assert t.rollout == RolloutState.ROLLED_BACK.value and "the camera source was opened" in t.rollout_detail


def test_rollout_sends_the_tails_only_when_asked(bundles):
    m = load_manifest(bundles["v2"])
    device = make_announce(bundles["v2"], m, GROUP)
    everything = make_announce(bundles["v2"], m, GROUP, scope=FileScope.ALL)
    assert device.files[0][0] == MANIFEST_NAME == everything.files[0][0]
    assert len(everything.files) == len(m.files) + 1
    assert sum(s for *_, s in device.files) * 5 < sum(s for *_, s in everything.files)


def test_the_device_refuses_a_rollout_group_without_a_trusted_key(bundles, tmp_path, capsys):
    from sdk import cli

    (tmp_path / "cam.toml").write_text(PROFILE)
    code = cli.main(["device", "--bundle", str(bundles["v1"]), "--config", str(tmp_path / "cam.toml"),
                     "--rollout-group", GROUP, "--frames", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "--rollout-group lobby needs --trust" in err and "Traceback" not in err
    assert device_cli.parse_args(["--bundle", "b", "--config", "c", "--rollout-group", "g"]).rollout_group == "g"
    shutil.rmtree(tmp_path / "updates", ignore_errors=True)


def test_public_apis_are_pinned():
    from cloud_tail import rollout, tails
    from device_runner import update as device_update
    from sdk import update

    assert sorted(rollout.__all__) == sorted(["FileScope", "RolloutResult", "TailsFollower", "clear_rollout",
                                              "follow_rollouts", "iter_chunks", "main", "make_announce", "parse_args",
                                              "publish_rollout", "read_announce", "restore_staged"])
    assert sorted(update.__all__) == sorted(["ACTIVE_NAME", "BundleUpdater", "Prepare", "StagedBundle", "active_bundle"])
    assert device_update.__all__ == ["litert_prepare"]
    assert sorted(tails.__all__) == sorted(["BundleTails", "Refusal", "Tails", "TailSet", "softmax", "topk"])


def test_a_damaged_chunk_rolls_back_and_a_newer_announce_replaces_a_download(bundles, tmp_path):
    rig = Rig(bundles, tmp_path)
    v2 = load_manifest(bundles["v2"])
    a = make_announce(bundles["v2"], v2, GROUP, chunk_size=64 * 1024)
    first = next(iter(iter_chunks(bundles["v2"], a)))
    damaged = bytearray(first[1])
    damaged[-1] ^= 0xFF  # the data no longer matches the chunk's sha256
    rig.fleet.publish(first[0], bytes(damaged), retain=True)
    rig.fleet.publish(topics.announce_topic(GROUP), a.to_bytes(), retain=True)
    t = rig.runner.telemetry()
    assert t.rollout == RolloutState.ROLLED_BACK.value and "damaged in transit" in t.rollout_detail
    # An announce whose chunks are not there yet: downloading; a newer rollout replaces it and lands.
    v3 = make_version(bundles["v1"], tmp_path / "v3ok", "3", bundles["key"])
    m3 = load_manifest(v3)
    pending = make_announce(v3, m3, GROUP)
    rig.fleet.publish(topics.announce_topic(GROUP), AnnounceMessage(**{**pending.to_dict(), "bundle_id": "ab" * 32})
                      .to_bytes(), retain=True)  # fmt: skip
    assert rig.runner.telemetry().rollout == RolloutState.DOWNLOADING.value
    assert (rig.update_dir / ("ab" * 8 + ".part")).is_dir()
    rig.rollout(v3)
    rig.frames(1)
    t = rig.runner.telemetry()
    assert (t.bundle_id, t.rollout) == (f"{m3.wire_bundle_id:08x}", RolloutState.ACTIVE.value)
    assert not (rig.update_dir / ("ab" * 8 + ".part")).exists()


def test_from_a_rollout_with_the_tails_a_device_fetches_only_what_it_runs(bundles, tmp_path):
    rig = Rig(bundles, tmp_path)
    a = rig.rollout(bundles["v2"], scope=FileScope.ALL)
    assert any(p.endswith("tail.tflite") for p, _, _ in a.files)
    rig.frames(1)
    v2 = load_manifest(bundles["v2"])
    assert rig.runner.telemetry().bundle_id == f"{v2.wire_bundle_id:08x}"
    staged = rig.update_dir / v2.bundle_id[:16]
    assert sorted(str(p.relative_to(staged)) for p in staged.rglob("*.tflite")) == sorted(r.path for r in v2.device_files)


def test_a_tail_worker_following_a_group_serves_each_rolled_out_bundle_and_again_after_a_restart(bundles, tmp_path):
    from cloud_tail.rollout import follow_rollouts, restore_staged

    hub = InMemoryHub(synchronous=True, raise_handler_errors=True)
    said: list[str] = []
    tails = BundleTails([bundles["v1"]], trust=bundles["pub"])
    updates = tmp_path / "cloud-updates"
    updater = follow_rollouts(hub.transport("w-updates"), tails, "cloud", updates, trust=bundles["pub"], say=said.append)
    fleet = hub.transport("fleet")
    v2 = load_manifest(bundles["v2"])
    device_only = make_announce(bundles["v2"], v2, "cloud")  # no tails in it: refused by name, nothing served
    publish_rollout(fleet, bundles["v2"], device_only)
    assert updater.wait_idle(60)
    assert said and said[-1].startswith(f"refused bundle {v2.bundle_id[:8]}") and "tail.tflite" in said[-1]
    assert tails.get(v2.wire_bundle_id) is None
    v4 = make_version(bundles["v1"], tmp_path / "v4", "4", bundles["key"])
    m4 = load_manifest(v4)
    # 1 MiB chunks: the synchronous in-memory hub delivers a retained chunk inside the subscribe that asks for it,
    # so each chunk nests a level deeper (a real broker's come on the network thread, one after the other).
    publish_rollout(fleet, v4, make_announce(v4, m4, "cloud", scope=FileScope.ALL, chunk_size=1 << 20),
                    previous=read_announce(fleet, "cloud", 0.0))
    assert updater.wait_idle(60)
    assert said[-1].startswith(f"serving bundle 0x{m4.wire_bundle_id:08x} (4)"), said
    assert tails.bundle_ids == (load_manifest(bundles["v1"]).wire_bundle_id, m4.wire_bundle_id)
    image = np.zeros((1, *m4.input.shape), dtype=np.uint8)
    from sdk.wire import decode_frame, encode_raw

    frame = decode_frame(encode_raw(device_id="cam", seq=1, bundle_id=m4.wire_bundle_id, image=image, capture_ts=1.0))
    assert tails.admit(frame) is None and tails.run(0, [frame]).shape == (1, m4.num_classes)
    updater.close()
    restarted = BundleTails([bundles["v1"]], trust=bundles["pub"])
    assert restore_staged(restarted, updates, bundles["pub"]) == [updates / m4.bundle_id[:16]]
    assert restarted.has_bundle(m4.bundle_id)


def test_a_download_whose_chunks_are_gone_fails_after_stall_s(bundles, tmp_path):
    rig = Rig(bundles, tmp_path)
    rig.updater.close()
    updater = BundleUpdater(rig.hub.transport("cam-1-stall"), GROUP, rig.update_dir, trust=bundles["pub"],
                            current=rig.manifest, runner=rig.runner, prepare=litert_prepare(rig.cfg.board),
                            stall_s=0.2)  # fmt: skip
    updater.start()
    a = make_announce(bundles["v2"], load_manifest(bundles["v2"]), GROUP)
    rig.fleet.publish(topics.announce_topic(GROUP), a.to_bytes(), retain=True)  # announced, no chunk on the broker
    assert rig.runner.telemetry().rollout == RolloutState.DOWNLOADING.value
    deadline = time.monotonic() + 10
    while rig.runner.telemetry().rollout != RolloutState.ROLLED_BACK.value and time.monotonic() < deadline:
        time.sleep(0.05)
    t = rig.runner.telemetry()
    assert t.rollout == RolloutState.ROLLED_BACK.value and "no new chunk arrived for 0 s (0 of 1 so far)" in t.rollout_detail
    assert not any(rig.update_dir.iterdir())
    updater.close()


def test_a_signed_bundle_whose_head_does_not_load_rolls_back(bundles, tmp_path):
    """Signed and hash-consistent, but a head is not a model: it fails in LiteRT while loading, before any frame."""
    rig = Rig(bundles, tmp_path)
    broken = make_version(bundles["v1"], tmp_path / "broken", "5", None)
    doc = json.loads((broken / MANIFEST_NAME).read_text())
    ref = next(f for f in doc["files"] if f["path"].endswith("head.tflite"))
    (broken / ref["path"]).write_bytes(b"not a flatbuffer" * 64)
    tamper_bytes = broken / ref["path"]
    from sdk.manifest import sha256_file
    from tests.rollout_bundles import bundle_id_of

    ref["sha256"], ref["size"] = sha256_file(tamper_bytes), tamper_bytes.stat().st_size
    for cut in doc["cuts"]:
        if cut.get("head") and cut["head"]["path"] == ref["path"]:
            cut["head"].update(sha256=ref["sha256"], size=ref["size"])
    doc["bundle_id"] = bundle_id_of(doc["files"])
    (broken / MANIFEST_NAME).write_text(json.dumps(doc, indent=1) + "\n")
    sign_bundle(broken, bundles["key"])  # the release key signed it: only loading can tell
    rig.frames(2)
    a = rig.rollout(broken)
    rig.frames(2)
    t = rig.runner.telemetry()
    assert t.bundle_id == f"{rig.manifest.wire_bundle_id:08x}"  # still v1
    assert (t.rollout, t.rollout_bundle) == (RolloutState.ROLLED_BACK.value, a.bundle_id[:8])
    assert f"{ref['path']}: LiteRT cannot load this model" in t.rollout_detail  # named, from the loader
    assert t.rollout_detail.startswith("bundle 5 (") and "\n" not in t.rollout_detail
    assert [x.answered_by for x in rig.answers] == [AnsweredBy.CLOUD] * 4
