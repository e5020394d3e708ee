"""How the dynamic cut decides: one frozen options object, read from a profile's optional ``[policy]`` table.

``device_runner.policy.CutPolicy`` takes a :class:`PolicyOptions` (what each field does is explained in
that module's docstring, next to the behaviour); ``sdk.config`` reads the ``[policy]`` table into one, so a
fleet tunes its policy in the profile instead of in code, and the replay benchmark, the demo and the
device CLI start from the same values. ``initial`` (the choice to start on) is state, not an option, and
stays a ``CutPolicy`` argument.

Defaults are the values the benchmarks in docs/DYNAMIC.md were measured with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["POLICY_KEYS", "PolicyOptions"]


@dataclass(frozen=True, slots=True)
class PolicyOptions:
    """The dynamic cut's knobs (``device_runner.policy`` module doc has the why of each)."""

    margin: float = 0.15  # hysteresis: another option must be this much faster to be switched to
    patience: int = 3  # ... for this many plans in a row
    probe_every: int = 25  # a probe turn every N decisions (0: never probe)
    max_payload_bytes: int | None = None  # leave out (cut, bits) options sending more
    tau_override: float | None = None  # a fixed early-exit threshold (default: from the profile's target)
    allowed_cuts: tuple[int, ...] | None = None  # only these cuts (one pins the cut)
    expected_cost: bool = True  # plan split options at E[T] = T_dev + q T_esc (False: every frame escalates)
    plausible_factor: float = 4.0  # no probe of a cut needing a link this much faster than the peak seen
    bandwidth_ceiling: float | None = None  # bytes/s: no probe of a cut needing a faster link
    max_backoff: int = 4  # lost probes space the next ones out up to this x probe_every
    explore_backoff: int = 16  # ... and this x after a lost exploration probe
    max_probe_interval_s: float | None = 20.0  # the back-off bounded in time at the profile's fps_cap
    risk: bool = True  # charge escalating options for the recent unexplained miss rate
    shadow_probes: bool = True  # probe with a copy of the frame, answered by the current choice
    #: plan transfers at this quantile of the bandwidth's lognormal (Estimates.bandwidth_log_sd), e.g. 0.95
    #: for a 5 % deadline-miss target; None: at the estimate itself, a geometric mean (docs/DYNAMIC.md,
    #: "Link prediction")
    plan_quantile: float | None = None

    def __post_init__(self) -> None:
        if self.allowed_cuts is not None:
            object.__setattr__(self, "allowed_cuts", tuple(int(c) for c in self.allowed_cuts))
        if self.patience < 1 or self.probe_every < 0 or self.margin < 0:
            raise ValueError(f"need patience >= 1, probe_every >= 0, margin >= 0; got {self.patience}, "
                             f"{self.probe_every}, {self.margin}")
        if (self.plausible_factor <= 0 or (self.bandwidth_ceiling is not None and self.bandwidth_ceiling <= 0)
                or self.max_backoff < 1 or self.explore_backoff < self.max_backoff):
            raise ValueError(f"need plausible_factor > 0, bandwidth_ceiling > 0 (or None), max_backoff >= 1, "
                             f"explore_backoff >= max_backoff; got {self.plausible_factor}, {self.bandwidth_ceiling}, "
                             f"{self.max_backoff}, {self.explore_backoff}")
        if self.max_payload_bytes is not None and self.max_payload_bytes < 0:
            raise ValueError(f"need max_payload_bytes >= 0 (or None), got {self.max_payload_bytes}")
        if self.plan_quantile is not None and not 0 < self.plan_quantile < 1:
            raise ValueError(f"need 0 < plan_quantile < 1 (or None), got {self.plan_quantile}")
        if self.max_probe_interval_s is not None and self.max_probe_interval_s <= 0:
            raise ValueError(f"need max_probe_interval_s > 0 (or None), got {self.max_probe_interval_s}")


#: the keys of a profile's [policy] table: the fields, by name
POLICY_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(PolicyOptions))
