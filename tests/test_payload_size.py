"""The learned payload size of the raw cut (device_runner/payload_size.py): an EWMA that re-prices the cut
only when it moved."""

from __future__ import annotations

from device_runner.payload_size import ALPHA, MOVE, PayloadSizes


def test_the_first_size_prices_the_cut_at_once() -> None:
    assert PayloadSizes().learn(0, 3700, priced=150528) == 3700


def test_a_size_within_the_move_keeps_the_price_and_a_larger_one_moves_it() -> None:
    s = PayloadSizes()
    assert s.learn(0, 1000, priced=150528) == 1000
    small = 1000 + (MOVE * 1000 * 0.5) / ALPHA  # EWMA moves by half the threshold
    assert s.learn(0, round(small), priced=1000) is None
    big = s.learn(0, 2000, priced=1000)
    assert big is not None and 1000 * (1 + MOVE) < big < 2000


def test_empty_payloads_teach_nothing() -> None:
    s = PayloadSizes()
    assert s.learn(0, 0, priced=500) is None
    assert s.learn(0, 800, priced=500) == 800  # still the first real size
