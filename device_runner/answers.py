"""What a frame's final answer and a run's summary look like: one JSON line per frame (``--out``).

The runner (``device_runner.runner``) produces them; the CLI, the demo and the benchmarks read them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from sdk.messages import AnsweredBy  # the one vocabulary, defined with the wire's messages

__all__ = ["Answer", "AnsweredBy", "RunSummary"]



@dataclass(frozen=True, slots=True)
class Answer:
    """One frame's final answer; one JSON line of ``--out``."""

    seq: int
    cls: int
    answered_by: AnsweredBy
    reason: str  # exit | device_cut | cloud | deadline | broker_unavailable | cloud_error:<code> | inflight_full | ...
    cut: int
    bits: int
    bytes: int  # payload bytes published for this frame (0 if nothing was sent)
    latency_ms: float  # capture -> answer, board milliseconds when emulated
    confidence: float | None
    probe: bool
    emulated: bool

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["answered_by"] = self.answered_by.value
        d["latency_ms"] = round(self.latency_ms, 3)
        if self.confidence is not None:
            d["confidence"] = round(self.confidence, 5)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class RunSummary:
    frames: int
    answered: dict[str, int]
    late_answers: int
    duplicate_results: int
    errors: int
    switches: int
    probes: int
    bytes_sent: int
    final_cut: int
    final_bits: int
    bandwidth_estimate: float | None
    p50_ms: float | None
    p95_ms: float | None
    emulated: bool
    #: store-and-forward counters (sdk.outbox.OutboxStats.to_dict): queued, stored, forwarded, dropped, ...
    outbox: dict[str, int] = field(default_factory=dict)
