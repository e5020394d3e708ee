"""The latency model and the cut planner (numpy-free; see ../shared/THEORY.md).

Cutting after layer s and sending the activation at b bits costs

    T(s, b) = head_ms(s) * device_factor + bytes(s, b) / bandwidth + link_ms + tail_ms(s) * cloud_factor

with s = 0 "send the raw frame" (no head) and s = n "all on the device" (nothing sent, no link latency).
T is not monotone in s, so every (cut, bits) option is evaluated; options whose accuracy drop exceeds the
budget, or that send the raw frame under privacy, stay in the table marked infeasible with the reason.
The drop is the one the held-out frames show beyond their sampling error (:func:`significant_drop`): on
180 frames one frame is 0.56 pp, so a raw difference of two frames must not exclude a 1 pp budget.
Ties go to the earlier cut (the cloud is faster). With an early exit that escalates a fraction q of frames,
the expected latency is ``E[T] = T_dev + q * T_esc`` (:func:`cascade_latency`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sdk.manifest import AccuracyAtBits, CutKind, Manifest

__all__ = [
    "CutCost",
    "Option",
    "Plan",
    "breakeven_bandwidth",
    "cascade_latency",
    "costs_from_manifest",
    "evaluate",
    "parse_rate",
    "significant_drop",
]


@dataclass(frozen=True, slots=True)
class CutCost:
    """What one cut costs, independent of the link."""

    index: int
    name: str
    kind: CutKind
    head_ms: float
    tail_ms: float
    bytes_at_bits: Mapping[int, int]  # bits -> payload bytes (raw cut: one entry, the frame)
    accuracy_drop: Mapping[int, float] = field(default_factory=dict)  # bits -> drop vs the float model


@dataclass(frozen=True, slots=True)
class Option:
    index: int
    name: str
    kind: CutKind
    bits: int  # 0 for the raw frame and for all-on-device
    nbytes: int
    head_ms: float
    transfer_ms: float
    link_ms: float
    tail_ms: float
    accuracy_drop: float
    feasible: bool
    reason: str = ""

    @property
    def total_ms(self) -> float:
        return self.head_ms + self.transfer_ms + self.link_ms + self.tail_ms


@dataclass(frozen=True, slots=True)
class Plan:
    options: tuple[Option, ...]
    best: Option
    bandwidth_bytes_per_s: float
    link_latency_ms: float

    def option(self, index: int, bits: int | None = None) -> Option:
        for o in self.options:
            if o.index == index and (bits is None or o.bits == bits):
                return o
        raise KeyError(f"no option for cut {index} at {bits} bits")

    def to_dict(self) -> dict[str, object]:
        def row(o: Option) -> dict[str, object]:
            return {
                "cut": o.index, "name": o.name, "kind": o.kind.value, "bits": o.bits, "bytes": o.nbytes,
                "head_ms": round(o.head_ms, 4), "transfer_ms": round(o.transfer_ms, 4),
                "link_ms": round(o.link_ms, 4), "tail_ms": round(o.tail_ms, 4),
                "total_ms": round(o.total_ms, 4), "accuracy_drop": round(o.accuracy_drop, 4),
                "feasible": o.feasible, "reason": o.reason,
            }

        return {
            "bandwidth_bytes_per_s": self.bandwidth_bytes_per_s,
            "link_latency_ms": self.link_latency_ms,
            "best": row(self.best),
            "options": [row(o) for o in self.options],
        }


def evaluate(
    costs: Iterable[CutCost],
    *,
    bandwidth_bytes_per_s: float,
    link_latency_ms: float = 0.0,
    device_factor: float = 1.0,
    cloud_factor: float = 1.0,
    bits: Sequence[int] | None = None,
    allow_raw: bool = True,
    accuracy_drop_budget: float | None = None,
) -> Plan:
    """Evaluate T(s, b) for every cut and allowed bit width; return the table and its feasible argmin."""
    if bandwidth_bytes_per_s <= 0:
        raise ValueError(f"bandwidth must be > 0 bytes/s, got {bandwidth_bytes_per_s}")
    options: list[Option] = []
    for c in costs:
        sends = c.kind is not CutKind.DEVICE
        for b, nbytes in sorted(c.bytes_at_bits.items(), reverse=True):
            if c.kind is CutKind.SPLIT and bits is not None and b not in bits:
                continue
            drop = float(c.accuracy_drop.get(b, 0.0))
            reason = ""
            if c.kind is CutKind.RAW and not allow_raw:
                reason = "privacy: the raw frame is never sent"
            elif accuracy_drop_budget is not None and drop > accuracy_drop_budget + 1e-12:
                reason = f"accuracy drop {drop:.4f} > budget {accuracy_drop_budget:.4f}"
            options.append(
                Option(
                    index=c.index,
                    name=c.name,
                    kind=c.kind,
                    bits=b if c.kind is CutKind.SPLIT else 0,
                    nbytes=int(nbytes),
                    head_ms=c.head_ms * device_factor,
                    transfer_ms=nbytes / bandwidth_bytes_per_s * 1000.0,
                    link_ms=link_latency_ms if sends else 0.0,
                    tail_ms=c.tail_ms * cloud_factor,
                    accuracy_drop=drop,
                    feasible=not reason,
                    reason=reason,
                )
            )
    feasible = [o for o in options if o.feasible]
    if not feasible:
        raise ValueError("no feasible cut: every option is excluded (privacy or accuracy budget); relax one")
    best = min(feasible, key=lambda o: (round(o.total_ms, 9), o.index, -o.bits))
    return Plan(tuple(options), best, float(bandwidth_bytes_per_s), float(link_latency_ms))


# One-sided 95 % normal quantile: a cut is excluded only when its drop exceeds the budget at this confidence.
_Z_ONE_SIDED_95 = 1.645


def significant_drop(float_accuracy: float, accuracy: float, agreement: float, n_eval: int) -> float:
    """The accuracy drop from quantization that the held-out frames support, beyond sampling error.

    Both models answer the same ``n_eval`` frames, so the difference is paired: per frame it is +1, 0
    or -1 and is non-zero only where the two disagree, so its standard error is at most
    ``sqrt((1 - agreement) / n_eval)``. The raw drop minus ``z * SE`` (one-sided 95 %) is returned, never
    below 0: a cut is excluded only when the frames show it loses more than the budget, not when two
    frames of 180 moved (0.6111 against 0.6222 on the MobileNetV2 workload's device cut: a 1.1 pp raw drop
    with a 2.7 pp margin). ``n_eval <= 0`` (no evaluation) returns the raw drop.
    """
    raw = max(0.0, float_accuracy - accuracy)
    if n_eval <= 0:
        return raw
    se = (max(0.0, 1.0 - agreement) / n_eval) ** 0.5
    return max(0.0, raw - _Z_ONE_SIDED_95 * se)


def costs_from_manifest(manifest: Manifest) -> list[CutCost]:
    """Cut costs as measured by the converter on its host (scale them with the board's factors).

    The accuracy drop per (cut, bits) is :func:`significant_drop` on the manifest's held-out frames.
    """
    def drop_of(acc: AccuracyAtBits | None, missing: float) -> float:
        if acc is None:
            return missing
        return significant_drop(manifest.float_accuracy, acc.accuracy, acc.agreement, manifest.n_eval)

    out: list[CutCost] = []
    for c in manifest.cuts:
        if c.kind is CutKind.RAW:
            nbytes = {0: c.payload_bytes(0)}
            drop = {0: 0.0}
        elif c.kind is CutKind.DEVICE:
            nbytes = {0: 0}
            drop = {0: drop_of(c.accuracy_at(8), 0.0)}
        else:
            nbytes = {b: c.payload_bytes(b) for b in manifest.bits}
            drop = {b: drop_of(c.accuracy_at(b), 1.0) for b in manifest.bits}
        out.append(CutCost(c.index, c.name, c.kind, c.head_ms, c.tail_ms, nbytes, drop))
    return out


def cascade_latency(t_dev_ms: float, escalation_rate: float, t_esc_ms: float) -> float:
    """E[T] = T_dev + q * T_esc for an early exit that escalates a fraction q of frames."""
    if not 0.0 <= escalation_rate <= 1.0:
        raise ValueError(f"escalation rate must be in [0, 1], got {escalation_rate}")
    return t_dev_ms + escalation_rate * t_esc_ms


def breakeven_bandwidth(t_device_ms: float, t_head_ms: float, escalation_rate: float, nbytes: int,
                        rtt_ms: float, tail_ms: float) -> float | None:
    """The uplink (bytes/s) above which a cut beats answering every frame on the device, or None if none does.

    The cut runs its head (and exit) in ``t_head_ms`` and escalates a share ``escalation_rate`` (1 without an
    exit) of ``nbytes`` each, paying ``rtt_ms`` and ``tail_ms``: it wins when t_head + q (nbytes / rate + rtt +
    tail) < t_device, i.e. nbytes / rate < (t_device - t_head) / q - rtt - tail. When that right-hand side is
    not positive no bandwidth is enough: the round trip (or the head) alone costs more than the device saves.
    """
    if not 0.0 <= escalation_rate <= 1.0:
        raise ValueError(f"escalation rate must be in [0, 1], got {escalation_rate}")
    saved = t_device_ms - t_head_ms
    if escalation_rate == 0.0:
        return 0.0 if saved > 0 else None
    slack_ms = saved / escalation_rate - rtt_ms - tail_ms
    if slack_ms <= 0.0:
        return None
    return nbytes / (slack_ms / 1000.0)


_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z/]+)\s*$")
_UNITS = {
    "bit/s": 1 / 8, "bps": 1 / 8, "kbit/s": 1e3 / 8, "kbps": 1e3 / 8, "mbit/s": 1e6 / 8, "mbps": 1e6 / 8,
    "gbit/s": 1e9 / 8, "gbps": 1e9 / 8, "b/s": 1.0, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9,
}


def parse_rate(text: str) -> float:
    """'2Mbit/s', '20mbps', '250kB/s', '1.5MB/s' -> bytes per second.

    Bits are spelled with 'bit' or 'bps'; bytes with 'B/s'. A number without a unit is refused, since
    'Mbit/s' and 'MB/s' differ eightfold.
    """
    m = _RATE.match(text)
    if not m:
        raise ValueError(
            f"bandwidth {text!r}: expected a number and a unit, e.g. 2Mbit/s, 20mbps, 250kB/s or 1.5MB/s"
        )
    value, unit = float(m.group(1)), m.group(2)
    key = unit.lower() if "bit" in unit.lower() or unit.lower().endswith("bps") else _byte_key(unit)
    if key not in _UNITS:
        raise ValueError(f"bandwidth {text!r}: unknown unit {unit!r}; use one of bit/s kbit/s Mbit/s mbps B/s kB/s MB/s")
    rate = value * _UNITS[key]
    if rate <= 0:
        raise ValueError(f"bandwidth {text!r} must be > 0")
    return rate


def _byte_key(unit: str) -> str:
    # 'B/s', 'kB/s', 'KB/s', 'MB/s': the capital B means bytes
    if not unit.endswith("B/s"):
        return unit.lower() + "?"
    return unit[:-3].lower() + "b/s"
