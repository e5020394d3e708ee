"""device_runner.inflight: the escalated frames' map, deadline heap and refused queue."""

from __future__ import annotations

from device_runner.inflight import InFlight, Pending


def pending(seq: int, deadline: float) -> Pending:
    return Pending(seq, 0.0, deadline, 1, 4, 100, False, 0.0, None)


def test_due_frames_come_out_by_seq_and_only_once() -> None:
    f = InFlight()
    for seq, deadline in ((0, 3.0), (1, 1.0), (2, 2.0), (3, 9.0)):
        f.add(pending(seq, deadline))
    assert len(f) == 4 and f.earliest() == 1.0
    assert f.nothing_due(0.5) and f.take_due(0.5) == []
    assert not f.nothing_due(2.5)
    assert [p.seq for p in f.take_due(2.5)] == [1, 2]
    assert f.get(1) is None and len(f) == 2 and f.earliest() == 3.0
    assert f.take_due(2.5) == []


def test_an_answered_frame_leaves_a_stale_heap_entry_that_is_skipped() -> None:
    f = InFlight()
    f.add(pending(0, 1.0))
    f.add(pending(1, 2.0))
    assert f.pop(0) is not None and f.pop(0) is None  # the cloud answered it
    assert f.earliest() == 2.0  # the stale (1.0, 0) entry is dropped
    assert [p.seq for p in f.take_due(5.0)] == [1] and len(f) == 0 and f.earliest() is None


def test_refused_frames_are_due_at_once_and_marked_only_once() -> None:
    f = InFlight()
    a, b = pending(0, 10.0), pending(1, 10.0)
    f.add(a)
    f.add(b)
    f.mark_error(b, "bad_frame")
    f.mark_error(b, "again")  # queued once; the latest reason is kept
    assert f.has_refused and not f.nothing_due(0.0)
    assert f.take_due(0.0) == [b] and b.error == "again"
    assert not f.has_refused and f.nothing_due(0.0) and list(f) == [a]


def test_the_heap_is_rebuilt_when_stale_entries_dominate() -> None:
    f = InFlight()
    for seq in range(200):
        f.add(pending(seq, float(seq)))
        if seq > 0:
            f.pop(seq - 1)  # answered: its heap entry goes stale
    assert len(f) == 1
    assert len(f._heap) <= 64 + 2 * len(f) + 1  # bounded, not 200
    assert f.earliest() == 199.0
