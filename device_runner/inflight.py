"""The frames waiting for the cloud: a map by seq, a min-heap of their deadlines, and the refused ones.

:class:`InFlight` is the runner's bookkeeping for escalated frames, moved out of runner.py. It is not
thread-safe on its own: the runner holds its lock around every call.

Per-frame cost (docs/DEVICE.md "Overhead"): the runner asks :meth:`InFlight.nothing_due` after every
frame, which is O(1) - deadlines sit in a min-heap (stale entries of frames already answered are
skipped, and the heap is rebuilt when they outnumber the live ones) and frames the cloud refused are
queued by seq - instead of scanning the whole map. :meth:`InFlight.take_due` is O(k log n) for k frames due.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from device_runner.heads import Prediction

__all__ = ["InFlight", "Pending"]


@dataclass(slots=True)
class Pending:
    """One escalated frame waiting for its cloud answer."""

    seq: int
    capture_ts: float
    deadline: float
    cut: int
    bits: int
    nbytes: int
    probe: bool
    offset_ms: float
    fallback: Prediction | None
    frame: np.ndarray | None = field(default=None, repr=False)  # raw cut only: for the device-model fallback
    send_ts: float = 0.0
    error: str | None = None
    late_result: bool = False  # the cloud's answer came after the deadline (a real network sample exists)
    overdue: bool = False  # ``deadline`` is the policy's overdue wait, earlier than the configured deadline


class InFlight:
    """Escalated frames by seq, with their deadlines in a heap and the refused ones in a queue (module doc)."""

    def __init__(self) -> None:
        self._by_seq: dict[int, Pending] = {}
        self._heap: list[tuple[float, int]] = []  # (deadline, seq); may hold seqs already answered
        self._refused: list[int] = []  # seqs whose entry got an error (cloud ErrorMessage, abandon)

    def __len__(self) -> int:
        return len(self._by_seq)

    def __iter__(self) -> Iterator[Pending]:
        return iter(list(self._by_seq.values()))

    def get(self, seq: int) -> Pending | None:
        return self._by_seq.get(seq)

    def add(self, p: Pending) -> None:
        """Track a new entry and its deadline; drop stale heap entries when they dominate."""
        self._by_seq[p.seq] = p
        heap = self._heap
        heapq.heappush(heap, (p.deadline, p.seq))
        if len(heap) > 64 + 2 * len(self._by_seq):
            heap[:] = [(q.deadline, q.seq) for q in self._by_seq.values()]
            heapq.heapify(heap)

    def pop(self, seq: int) -> Pending | None:
        """Remove an entry (its cloud answer came, or its send failed); its heap entry goes stale."""
        return self._by_seq.pop(seq, None)

    def earliest(self) -> float | None:
        """The earliest deadline in flight, popping heap entries of frames already answered."""
        heap, by_seq = self._heap, self._by_seq
        while heap and heap[0][1] not in by_seq:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def mark_error(self, p: Pending, error: str) -> None:
        """Record that an entry must be answered locally at the next :meth:`take_due`."""
        if p.error is None:
            self._refused.append(p.seq)
        p.error = error

    @property
    def has_refused(self) -> bool:
        return bool(self._refused)

    def nothing_due(self, now: float) -> bool:
        """O(1): no entry is refused and no deadline has passed (some heap entries may be stale)."""
        return not self._refused and (not self._heap or now < self._heap[0][0])

    def take_due(self, now: float) -> list[Pending]:
        """Remove and return the entries that are refused or past their deadline, by seq."""
        by_seq, heap = self._by_seq, self._heap
        due: dict[int, Pending] = {}
        if self._refused:
            for seq in self._refused:
                p = by_seq.get(seq)
                if p is not None and p.error is not None:
                    due[seq] = p
            self._refused.clear()
        while heap and heap[0][0] <= now:
            _, seq = heapq.heappop(heap)
            p = by_seq.get(seq)
            if p is not None:
                due[seq] = p
        for seq in due:
            del by_seq[seq]
        return [due[s] for s in sorted(due)] if len(due) > 1 else list(due.values())
