"""The per-frame fast paths of the device runner give exactly what the general paths give.

Each fast path (docs/DEVICE.md "Overhead") is checked against an independent slow path on random
inputs: the activation encoder against ``encode_frame`` with explicit records, the send stamp
against a byte-level rewrite, the small-array dequantize against the table formula, the softmax /
top-k against the original float64 + stable argsort code (copied here), the int8 logits table against
dequantize + softmax, LiteRT's direct tensor calls against the interpreter's own signature runner,
and the runner's deadline heap against a test-side model of which frames are due.
"""

from __future__ import annotations

import random
import struct
from collections import Counter

import numpy as np
import pytest
from fakes import fake_manifest

from device_runner.heads import LiteRTHeads, int8_prediction, softmax_prediction
from device_runner.policy import Choice, CutPolicy
from device_runner.runner import Answer, AnsweredBy, DeviceRunner, RunnerOptions
from sdk import topics
from sdk.config import parse_config
from sdk.litert import LiteRTModel
from sdk.manifest import CutKind, CutSpec, load_manifest
from sdk.messages import ErrorMessage, ResultMessage
from sdk.packing import dequantize, requantize
from sdk.topics import TopicKind
from sdk.transport import InMemoryHub
from sdk.wire import Codec, TensorRecord, decode_frame, encode_activation, encode_frame, stamp_send_ts

# ------------------------------------------------------------------------------------------ wire


def _random_activations(rng: np.random.Generator) -> dict[str, np.ndarray]:
    acts = {}
    for i in range(int(rng.integers(1, 4))):
        ndim = int(rng.integers(1, 5))
        shape = tuple(int(d) for d in rng.integers(0 if i == 2 else 1, 9, ndim))
        lo = int(rng.integers(-128, 100))
        q = rng.integers(lo, int(rng.integers(lo + 1, 128)) + 1, (1, *shape)).astype(np.int8)
        if rng.random() < 0.3 and q.ndim > 2 and q.shape[-1] > 1:
            q = q[..., ::2]  # not C-contiguous: both paths must write C order
        acts[f"t{i}_{'é' if i == 1 else 'x'}"] = q
    return acts


@pytest.mark.parametrize("seed", range(40))
def test_encode_activation_is_byte_identical_to_encode_frame_with_records(seed):
    rng = np.random.default_rng(seed)
    acts = _random_activations(rng)
    quant = {n: (float(rng.uniform(0.001, 0.5)), int(rng.integers(-128, 128))) for n in acts}
    common = dict(device_id="cam-07", seq=int(rng.integers(0, 2**40)), cut_id=int(rng.integers(0, 70)),
                  bundle_id=int(rng.integers(0, 2**32)), capture_ts=float(rng.uniform(1e9, 2e9)))  # fmt: skip
    send_ts = None if seed % 2 else float(rng.uniform(1e9, 2e9))
    for bits in (8, 6, 4, 2):
        for codec in (Codec.NONE, Codec.ZSTD):
            if bits == 8:
                records = [TensorRecord.int8(n, q, *quant[n]) for n, q in acts.items()]
            else:
                records = [TensorRecord.packed(n, requantize(q, *quant[n], bits)) for n, q in acts.items()]
            slow = encode_frame(**common, tensors=records, send_ts=send_ts, codec=codec)
            fast = encode_activation(**common, activations=acts, quant=quant, bits=bits, send_ts=send_ts, codec=codec)
            assert fast == slow, (bits, codec)
            assert decode_frame(fast).header.tensor_count == len(acts)


def test_encode_activation_refuses_what_the_records_refuse():
    q = np.zeros((1, 4), np.int8)
    with pytest.raises(TypeError, match="int8"):
        encode_activation(device_id="c", seq=0, cut_id=1, bundle_id=1, activations={"a": q.astype(np.int16)},
                          quant={"a": (1.0, 0)}, bits=8, capture_ts=1.0)  # fmt: skip
    with pytest.raises(ValueError, match="bits=3"):
        encode_activation(device_id="c", seq=0, cut_id=1, bundle_id=1, activations={"a": q},
                          quant={"a": (1.0, 0)}, bits=3, capture_ts=1.0)  # fmt: skip
    with pytest.raises(ValueError, match="1..255"):
        encode_activation(device_id="c", seq=0, cut_id=1, bundle_id=1, activations={"": q},
                          quant={"": (1.0, 0)}, bits=8, capture_ts=1.0)  # fmt: skip
    with pytest.raises(ValueError, match="out of range"):
        encode_activation(device_id="c", seq=0, cut_id=70_000, bundle_id=1, activations={"a": q},
                          quant={"a": (1.0, 0)}, bits=8, capture_ts=1.0)  # fmt: skip


@pytest.mark.parametrize("seed", range(10))
def test_stamp_send_ts_rewrites_only_the_eight_bytes_at_52(seed):
    rng = np.random.default_rng(seed)
    acts = _random_activations(rng)
    frame = encode_activation(device_id="cam", seq=seed, cut_id=2, bundle_id=3, activations=acts,
                              quant={n: (0.1, 0) for n in acts}, bits=4, capture_ts=1.7e9)  # fmt: skip
    ts = float(rng.uniform(1e9, 2e9))
    expected = bytearray(frame)
    expected[52:60] = struct.pack("<Q", round(ts * 1e6))
    assert stamp_send_ts(frame, ts) == bytes(expected)


# ------------------------------------------------------------------------------------------ numerics


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int32])
@pytest.mark.parametrize("size", [0, 1, 10, 64, 65, 1000])
def test_dequantize_small_and_large_paths_give_the_table_values(dtype, size):
    rng = np.random.default_rng(size)
    info = np.iinfo(dtype)
    codes = rng.integers(max(info.min, -300), min(info.max, 300) + 1, (1, size)).astype(dtype)
    for scale, zp in ((0.0123, -7), (0.5, 3), (1e-4, 0)):
        expected = ((codes.astype(np.float64) - zp) * scale).astype(np.float32)  # the documented formula
        got = dequantize(codes, scale, zp)
        assert got.dtype == np.float32 and got.shape == codes.shape
        np.testing.assert_array_equal(got, expected)


def _reference_softmax_prediction(logits, temperature, k=3):
    """The implementation before the fast path (float64 softmax, stable argsort of -p)."""
    z = np.asarray(logits, dtype=np.float64).reshape(-1) / max(float(temperature), 1e-6)
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    order = np.argsort(-p, kind="stable")[:k]
    return int(order[0]), float(p[order[0]]), tuple((int(i), float(p[i])) for i in order)


@pytest.mark.parametrize("n", [1, 2, 3, 10, 64, 65, 1000])
def test_softmax_prediction_is_the_reference_on_random_logits_with_ties(n):
    rng = np.random.default_rng(n)
    for trial in range(200):
        if trial % 3 == 0:
            logits = rng.integers(-4, 4, n).astype(np.float32)  # many exact ties
        else:
            logits = (rng.standard_normal(n) * rng.choice([0.01, 1.0, 30.0])).astype(np.float32)
        temperature = float(rng.choice([0.5, 1.0, 1.7]))
        for k in (1, 3, 5):
            p = softmax_prediction(logits, temperature, k)
            assert (p.cls, p.confidence, p.topk) == _reference_softmax_prediction(logits, temperature, k)


def test_softmax_prediction_with_nan_or_inf_matches_the_reference():
    for logits in (np.array([1.0, np.nan, 2.0]), np.array([np.inf, 1.0, 0.0]), np.array([np.nan] * 4)):
        with np.errstate(invalid="ignore"):
            p = softmax_prediction(logits, 1.0)
            ref = _reference_softmax_prediction(logits, 1.0)
        np.testing.assert_equal((p.cls, p.confidence, p.topk), ref)


@pytest.mark.parametrize("n", [10, 100])
def test_int8_prediction_is_dequantize_then_softmax(n):
    rng = np.random.default_rng(n)
    for _ in range(200):
        q = rng.integers(-128, 128, (1, n)).astype(np.int8)
        scale, zp, temp = float(rng.uniform(0.01, 0.3)), int(rng.integers(-128, 128)), float(rng.uniform(0.5, 3))
        a = int8_prediction(q, scale, zp, temp)
        b = softmax_prediction(dequantize(q, scale, zp), temp)
        assert a == b


# ------------------------------------------------------------------------------------------ LiteRT


def test_litert_direct_calls_match_the_signature_runner_and_resize_only_on_a_new_shape(reference_bundle, monkeypatch):
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter

    from sdk.litert import LiteRTModel

    manifest = load_manifest(reference_bundle)
    cuts = [c for c in manifest.cuts if c.kind is CutKind.SPLIT]
    picked: list[CutSpec] = [cuts[0], cuts[-1]] + ([manifest.device_cut] if manifest.device_cut else [])
    resizes = Counter()
    original = Interpreter.resize_tensor_input

    def counting(self, *args, **kwargs):
        resizes["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Interpreter, "resize_tensor_input", counting)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, *manifest.input.shape), dtype=np.uint8)
    for cut in picked:
        path = reference_bundle / cut.head.path
        model = LiteRTModel(path)
        reference = Interpreter(model_path=str(path)).get_signature_runner()
        key = next(iter(model.inputs))
        resizes["n"] = 0
        for i in range(3):  # batch 1, same shape every call: no resize
            got = model.run({key: frames[i : i + 1]})
            want = reference(**{key: frames[i : i + 1]})
            assert sorted(got) == sorted(want)
            for name in want:
                np.testing.assert_array_equal(got[name], want[name])
        assert resizes["n"] == 0, f"cut {cut.index}: the input was resized although its shape did not change"
        batch = model.run({key: frames})  # batch 3: one resize
        assert resizes["n"] == 1
        again = model.run({key: frames[1:2]})  # back to batch 1: one more
        assert resizes["n"] == 2
        for name, value in batch.items():
            np.testing.assert_array_equal(value[1:2], again[name])
            np.testing.assert_array_equal(value, reference(**{key: frames})[name])
        with pytest.raises(ValueError, match="missing inputs"):
            model.run({})


# ------------------------------------------------------------------------------------------ expire


class _Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


class _Executor:
    """Every split frame escalates (confidence 0); zero activations of the manifest's shapes."""

    emulated = False

    def run(self, cut: CutSpec, frame: np.ndarray):
        from device_runner.heads import CutOutput, Prediction

        acts = {t.name: np.zeros((1, *t.shape), np.int8) for t in cut.tensors}
        return CutOutput(cut.index, acts, Prediction(3, 0.0, ((3, 0.0),)), 1.0, 0.0, 1.0, False)


def _started_runner(hub: InMemoryHub, clock: object, deadline_ms: float) -> tuple[DeviceRunner, list[Answer]]:
    """A started runner on the fake manifest's cut 1 at 4 bits that escalates every frame (tau 0.5 on a
    fake exit), its answers collected in the returned list."""
    manifest = fake_manifest()
    cfg = parse_config({
        "board": {"name": "host", "cpu": "x", "threads": 1, "memory_budget_mb": 64, "speed_factor": 1.0,
                  "speed_factor_source": "test"},
        "device": {"device_id": "cam-09", "fps_cap": 10, "deadline_ms": deadline_ms, "target_accuracy": 0.9,
                   "bits": [4], "codec": "none", "telemetry_interval_s": 1000.0,
                   "overdue_factor": 0},  # the deadline alone: these tests pin its heap
        "broker": {"url": "mqtt://127.0.0.1:1883"},
    })  # fmt: skip
    answers: list[Answer] = []
    policy = CutPolicy(manifest, cfg.device, tau_override=0.5, probe_every=0, initial=Choice(1, 4), allowed_cuts=[1])
    runner = DeviceRunner(manifest, cfg, hub.transport("cam-09"), _Executor(), policy=policy,
                          on_answer=answers.append, clock=clock, options=RunnerOptions(max_inflight=10_000))  # fmt: skip
    runner.start()
    return runner, answers


@pytest.mark.parametrize("seed", range(12))
def test_expire_answers_exactly_the_frames_due(seed):
    """Random frames, cloud answers, cloud errors, late answers and clock jumps: after every process()
    and expire() the frames still in flight are exactly those neither answered nor due."""
    rng = random.Random(seed)
    clock = _Clock()
    hub = InMemoryHub(clock=clock)
    deadline_s = 0.1
    runner, answers = _started_runner(hub, clock, deadline_s * 1000)
    cloud = hub.transport("cloud")
    sent: dict[int, float] = {}  # seq -> capture time (the fake clock does not move inside process())
    errored: set[int] = set()
    cloud_pending: list[int] = []
    cloud.subscribe(topics.shared_filter("tails"), lambda m: cloud_pending.append(decode_frame(m.payload).header.seq))

    def reply(seq: int, error: bool) -> None:
        msg = (ErrorMessage(seq, "cam-09", "overloaded", "test", "w") if error
               else ResultMessage(seq, "cam-09", 7, ((7, 0.9),), "cloud", 1, "w"))  # fmt: skip
        cloud.publish(topics.topic("cam-09", TopicKind.RESULT), msg.to_bytes(), qos=1)

    def check(now: float) -> None:
        counts = Counter(a.seq for a in answers)
        assert all(v == 1 for v in counts.values()), counts
        answered = set(counts)
        inflight = set(sent) - answered
        due = {s for s in inflight if sent[s] + deadline_s <= now or s in errored}
        assert not due, f"due but not answered: {sorted(due)}"
        assert runner.inflight == len(inflight)
        expected_next = min((sent[s] + deadline_s for s in inflight), default=None)
        assert runner.next_deadline() == expected_next

    for _ in range(400):
        action = rng.random()
        if action < 0.5:
            clock.t += rng.choice([0.0, rng.uniform(0, 0.03)])
            sent[len(sent)] = clock.t
            seq = runner.process(np.zeros((32, 32, 3), np.uint8))
            assert seq == len(sent) - 1
            check(clock.t)
        elif action < 0.8 and cloud_pending:
            seq = cloud_pending.pop(rng.randrange(len(cloud_pending)))
            error = rng.random() < 0.25
            if error:
                errored.add(seq)
            clock.t += rng.uniform(0, 0.02)
            reply(seq, error)  # may arrive after the deadline: then the deadline answers it at the next expire
        else:
            clock.t += rng.choice([0.0, rng.uniform(0, 0.15)])
            runner.expire()
            check(clock.t)
    for a in answers:
        if a.reason == "deadline":
            assert a.latency_ms >= deadline_s * 1000 - 1e-6, a
        if a.reason.startswith("cloud_error"):
            assert a.seq in errored
        if a.answered_by is AnsweredBy.CLOUD:
            assert a.seq not in errored and a.latency_ms < deadline_s * 1000
    runner.abandon("test over")
    assert runner.inflight == 0 and runner.next_deadline() is None
    assert sorted(a.seq for a in answers) == sorted(sent)


def test_a_frame_left_behind_many_cloud_answers_still_expires_at_its_deadline():
    """Frame 0 gets no answer while the cloud answers the next 300 at once: the deadline heap fills with
    answered frames (and is compacted); frame 0 must still be answered exactly at its deadline."""
    clock = _Clock()
    hub = InMemoryHub(clock=clock)
    runner, answers = _started_runner(hub, clock, 100)
    cloud = hub.transport("cloud")

    def answer(msg) -> None:
        seq = decode_frame(msg.payload).header.seq
        if seq:
            result = ResultMessage(seq, "cam-09", 7, ((7, 0.9),), "cloud", 1, "w")
            cloud.publish(topics.topic("cam-09", TopicKind.RESULT), result.to_bytes(), qos=1)

    cloud.subscribe(topics.shared_filter("tails"), answer)
    start = clock.t
    for _ in range(301):
        runner.process(np.zeros((32, 32, 3), np.uint8))
        clock.t += 0.0002
        assert runner.inflight == 1
    assert runner.next_deadline() == start + 0.1
    clock.t = start + 0.1 - 1e-6
    assert runner.expire() == 0 and runner.inflight == 1
    clock.t = start + 0.1
    assert runner.expire() == 1
    assert [a.seq for a in answers if a.answered_by is AnsweredBy.DEADLINE] == [0]
    assert sorted(a.seq for a in answers) == list(range(301)) and runner.next_deadline() is None


def test_litert_reports_the_invoke_cpu_time_and_emulation_uses_it(reference_bundle) -> None:
    manifest = load_manifest(reference_bundle)
    cut = next(c for c in manifest.cuts if c.kind is CutKind.SPLIT)
    model = LiteRTModel(reference_bundle / cut.head.path, threads=1)
    model.run({next(iter(model.inputs)): np.zeros((1, *manifest.input.shape), np.uint8)})
    assert 0.0 < model.last_invoke_cpu_ms <= model.last_invoke_ms * 1.5 + 0.05

    cfg = parse_config({
        "board": {"name": "slow", "cpu": "x", "threads": 4, "memory_budget_mb": 256, "speed_factor": 10.0,
                  "speed_factor_source": "test", "emulate_timing": True},
        "device": {"device_id": "d", "target_accuracy": 0.5},
        "broker": {"url": "mqtt://127.0.0.1:1"},
    })  # fmt: skip
    heads = LiteRTHeads(reference_bundle, manifest, cfg.board)
    frame = np.zeros(manifest.input.shape, np.uint8)
    out = heads.run(cut, frame)  # the model is warmed up on load: this is a steady-state invoke
    head = heads.cache.get(cut.head)
    assert out.emulated
    assert out.head_ms == pytest.approx(10.0 * head.last_invoke_cpu_ms, rel=1e-6)
