"""The early exit's measurement (q at an accuracy budget), its manifest fields and its training helpers.

The arrays are small and hand-made; every expected number below is worked out by hand in the comments.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from fakes import fake_manifest

from converter import early_exit, measure
from converter.convert_cli import summary
from sdk.manifest import CutKind, ExitBudget, FileRef, Manifest, load_manifest

# 10 frames, most confident first; 0.9 appears twice, so those two are kept or escalated together.
CONF = np.array([0.95, 0.9, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
EXIT_OK = np.array([1, 1, 0, 1, 0, 1, 0, 0, 1, 0], dtype=bool)
TAIL_OK = np.array([1, 1, 1, 1, 1, 1, 1, 0, 1, 1], dtype=bool)  # the tail: 9 of 10
# Keeping the k most confident (k only at the ends of ties: 0, 1, 3, 4, ..., 10), correct answers =
# exit right among the kept + tail right among the rest:
#   k:        0  1  3  4  5  6  7  8  9  10
#   combined: 9  9  8  8  7  7  6  6  6  5   (/10)


def test_budget_point_keeps_the_most_frames_within_the_budget() -> None:
    p = early_exit.budget_point(CONF, EXIT_OK, TAIL_OK, reference=0.9, budget=0.1)  # target 0.8: k = 4
    assert p == ExitBudget(bits=8, budget=0.1, tau=0.75, escalation_rate=0.6, accuracy=0.8, met=True)  # tau (0.8+0.7)/2


def test_budget_point_never_splits_a_tie() -> None:
    # target 0.9: k = 1 (k = 2 would also give 9/10 but would split the two frames at 0.9)
    p = early_exit.budget_point(CONF, EXIT_OK, TAIL_OK, reference=0.9, budget=0.0, bits=4)
    assert p == ExitBudget(bits=4, budget=0.0, tau=pytest.approx(0.925), escalation_rate=0.9, accuracy=0.9, met=True)


def test_budget_point_unreachable_escalates_everything() -> None:
    p = early_exit.budget_point(CONF, EXIT_OK, TAIL_OK, reference=0.95, budget=0.0)  # the tail alone has 0.9
    assert (p.tau, p.escalation_rate, p.accuracy, p.met) == (1.0, 1.0, 0.9, False)


def test_budget_point_keeps_everything_when_the_exit_is_as_good() -> None:
    p = early_exit.budget_point(CONF, np.ones(10, bool), TAIL_OK, reference=0.9, budget=0.0)
    assert (p.tau, p.escalation_rate, p.accuracy, p.met) == (0.0, 0.0, 1.0, True)


def test_budget_point_with_the_tails_mean_accuracy() -> None:
    # tail counted as 0.9 per escalated frame: combined(k) = (exit right in top k + 0.9 (10 - k)) / 10
    #   k = 4: (3 + 5.4) / 10 = 0.84; k = 5: 0.75; 6: 0.76; 7: 0.67; 8: 0.58; 9: 0.59; 10: 0.5
    p = early_exit.budget_point(CONF, EXIT_OK, 0.9, reference=0.9, budget=0.1)
    assert (p.tau, p.escalation_rate, p.accuracy, p.met) == (0.75, 0.6, 0.84, True)


def test_one_percentage_point_on_a_hundred_frames() -> None:
    # confidence 1.00, 0.99, ..., 0.01; the exit is right on the 50 most confident; the tail on all but
    # the 10 least confident (90 of 100 = the float model's 0.90). Target 0.89:
    #   k <= 50: k + (90 - k) = 90; k = 51: 50 + 39 = 89 (meets); k = 52: 50 + 38 = 88
    conf = 1.0 - 0.01 * np.arange(100)
    exit_ok, tail_ok = np.arange(100) < 50, np.arange(100) < 90
    p = early_exit.budget_point(conf, exit_ok, tail_ok, reference=0.9)
    assert p.budget == early_exit.ACCURACY_BUDGET == 0.01
    assert (p.escalation_rate, p.accuracy, p.met) == (0.49, 0.89, True)
    assert p.tau == pytest.approx((0.50 + 0.49) / 2)  # between the 51st kept and the 52nd, escalated


def test_budget_point_refuses_mismatched_arrays() -> None:
    with pytest.raises(ValueError, match="10 confidences but 3"):
        early_exit.budget_point(CONF, EXIT_OK[:3], TAIL_OK, reference=0.9)
    with pytest.raises(ValueError, match="at least one frame"):
        early_exit.budget_point(np.array([]), np.array([], bool), 1.0, reference=0.9)


def test_exit_budgets_per_bit_width_from_probabilities() -> None:
    # 4 frames: exit probabilities over 2 classes; labels all 0
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])  # confidences 0.9 0.8 0.7 0.6
    labels = np.zeros(4, dtype=np.int64)  # exit right on frames 0, 1, 3
    tail = {8: np.array([0, 0, 0, 0]), 2: np.array([1, 1, 1, 0])}  # right on 4 / on 1 (frame 3)
    b8, b2 = measure.exit_budgets(probs, labels, tail, reference=1.0)
    # 8 bits, target 0.99: keep frames 0, 1 (the exit is right), escalate 2 (wrong) and 3 -> 4/4
    assert (b8.bits, b8.escalation_rate, b8.accuracy, b8.tau, b8.met) == (8, 0.5, 1.0, pytest.approx(0.75), True)
    # 2 bits: the best is k = 2 (2 + 0 + 1 = 3/4) or k = 4 (3/4): neither meets; all escalated = 1/4
    assert (b2.bits, b2.escalation_rate, b2.accuracy, b2.met) == (2, 1.0, 0.25, False)


def _with_budgets(m: Manifest) -> Manifest:
    cuts = tuple(
        dataclasses.replace(c, exit_budget=(ExitBudget(8, 0.01, 0.813, 0.45, 0.861, True),
                                            ExitBudget(2, 0.01, 1.0, 1.0, 0.7, False)))
        if c.kind is CutKind.SPLIT else c for c in m.cuts
    )  # fmt: skip
    return dataclasses.replace(m, cuts=cuts)


def test_manifest_round_trips_the_exit_budget() -> None:
    m = _with_budgets(fake_manifest())
    data = json.loads(m.to_json())
    assert data["cuts"][1]["exit_budget"][0] == {"bits": 8, "budget": 0.01, "tau": 0.813, "escalation_rate": 0.45,
                                                 "accuracy": 0.861, "met": True}
    again = Manifest.from_dict(data)
    assert again == m
    assert again.cut(1).exit_budget_at(8).escalation_rate == 0.45 and again.cut(1).exit_budget_at(4) is None


def test_a_bundle_without_exit_budget_still_loads(tmp_path) -> None:
    data = json.loads(_with_budgets(fake_manifest()).to_json())
    for cut in data["cuts"]:
        del cut["exit_budget"]  # as written before the field existed
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    m = load_manifest(tmp_path)
    assert all(c.exit_budget == () for c in m.cuts) and m.cut(1).exit_budget_at(8) is None


def test_an_exit_budget_with_an_unknown_key_is_refused() -> None:
    data = json.loads(_with_budgets(fake_manifest()).to_json())
    data["cuts"][1]["exit_budget"][0]["q"] = 0.4
    with pytest.raises(Exception, match=r"unknown key\(s\) \['q'\] in ExitBudget"):
        Manifest.from_dict(data)


def test_the_convert_summary_prints_q_at_one_point() -> None:
    m = fake_manifest()
    m = dataclasses.replace(m, cuts=tuple(dataclasses.replace(c, exit=FileRef("exit.tflite", "0" * 64, 1))
                                          for c in _with_budgets(m).cuts))
    text = summary(m)
    assert "q@1pp" in text
    row = next(line for line in text.splitlines() if line.lstrip().startswith("1 c1"))
    assert row.split()[-3:] == ["0.7000", "0.450", "0.813"]  # exit accuracy, q at 8 bits, tau


def test_augment_is_seeded_and_keeps_shape_and_dtype() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (5, 24, 24, 3), dtype=np.uint8)
    a, b = early_exit.augment(frames, 3, seed=1), early_exit.augment(frames, 3, seed=1)
    assert a.shape == (15, 24, 24, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a[:5], frames)
    assert early_exit.augment(frames, 0).shape == (0, 24, 24, 3)


def test_soft_targets_mix_the_label_and_the_float_model() -> None:
    t = early_exit.soft_targets(np.array([1]), np.array([[0.0, 0.0]]), weight=0.5)  # teacher 0.5 / 0.5
    np.testing.assert_allclose(t, [[0.25, 0.75]])


def test_copy_budgets() -> None:
    # 300 frames of 27,648 B: 16 by the frame budget (128 MiB / 8.3 MB), 37 by FLOPs (1e12 / (300 x 89.45 M)): MAX_COPIES
    assert early_exit.augment_copies(300, 27648, 89_451_776) == early_exit.MAX_COPIES == 6
    assert early_exit.augment_copies(300, 150528, 600_000_000) == 2  # 224x224x3: 128 MiB / 45.2 MB = 2.97
    assert early_exit.augment_copies(300, 27648, 8_000_000_000) == 0  # 1e12 / (300 x 8 G) = 0.4
    assert early_exit.augment_copies(0, 1, 1) == 0
    # per cut: 1.5e11 / (300 x (13.8 M + 48 x 1 M)) = 8.1; 256 MiB / (300 x 4608 B) - 1 = 193
    assert early_exit.copies_for_cut(8, 300, 4608, 13_800_000, 1_000_000) == 8
    assert early_exit.copies_for_cut(8, 300, 2560, 89_450_000, 41_600) == 5  # 1.5e11 / (300 x 89.7 M) = 5.6
    assert early_exit.copies_for_cut(8, 300, 4 * 112 * 112 * 16, 1_000_000, 1_000) == 0  # 803 kB features: none fit


def test_bench_row_picks_the_bit_width_with_the_lowest_expected_latency() -> None:
    from benchmarks.bench_exits import _split_row

    cut = fake_manifest().cut(1)  # 2048 B at 8 bits, 1024 at 4; head 1 ms, tail 2 ms, no exit time
    points = (ExitBudget(8, 0.01, 0.8, 0.45, 0.89, True), ExitBudget(4, 0.01, 0.85, 0.5, 0.89, True),
              ExitBudget(2, 0.01, 1.0, 1.0, 0.8, False))
    # 1 MB/s, 50 ms round trip, board factor 2: T_dev = 2; T_esc(8) = 2.048 + 50 + 2 = 54.048 -> E[T] 2 + 0.45 x 54.048
    # = 26.32; T_esc(4) = 53.024 -> 2 + 0.5 x 53.024 = 28.51: 8 bits
    row = _split_row(cut, points, 1e6, 50.0, 2.0)
    assert row.endswith("| 8 | 2048 | 0.450 | 55 % | 2.00 | 54.05 | 26.32 | 56.05 |"), row
    none = _split_row(cut, points[2:], 1e6, 50.0, 2.0)  # nothing meets the budget: every frame escalates
    assert "| 2 | 512 | 1.000* | 0 % |" in none, none
