"""Wire a device runner from a bundle and a profile: the one place that puts heads, uplink, policy and runner
together.

``splitedge device`` (device_runner/cli.py), the demo's camera processes (lab/demo.py), the benchmarks'
live runs (benchmarks/bench_dynamic.py, bench_estimate.py, bench_device.py) and the simulated replay
(benchmarks/dynamic_replay.py) all build the same thing; each had its own copy, and the copies drifted (most
built their policy without the profile's ``[policy]`` table). What differs between them is passed in:

* ``heads``: LiteRT heads of ``bundle`` on the profile's board by default; the replay passes recorded heads,
  a benchmark a timed wrapper;
* ``shaper``: wraps ``transport`` in a :class:`~device_runner.link.ShapedTransport` (the emulated uplink);
* the policy: the profile's ``[policy]`` with ``policy_overrides`` (a CLI flag or a benchmark changes the knobs
  it names; ``None`` values are dropped, so an absent flag keeps the profile's value), or a ready ``policy``;
* ``clock``, ``sleep``, ``wait``: the runner's one seam for time (a simulated clock in the replay).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from device_runner.answers import Answer
from device_runner.estimator import Estimator
from device_runner.heads import CutExecutor, LiteRTHeads
from device_runner.link import ShapedTransport, UplinkShaper
from device_runner.policy import CutPolicy
from device_runner.runner import DeviceRunner, RunnerOptions
from sdk.config import DeviceConfig
from sdk.manifest import Manifest, load_manifest
from sdk.transport import Transport

__all__ = ["policy_for", "wire_runner"]


def policy_for(manifest: Manifest, config: DeviceConfig, overrides: Mapping[str, object] | None = None) -> CutPolicy:
    """The profile's policy for ``manifest``: its ``[policy]`` table with the ``overrides`` that are not None."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    return CutPolicy(manifest, config.device, config.policy, **given)


def wire_runner(
    config: DeviceConfig,
    transport: Transport,
    *,
    bundle: str | Path | None = None,
    manifest: Manifest | None = None,
    heads: CutExecutor | None = None,
    shaper: UplinkShaper | None = None,
    policy: CutPolicy | None = None,
    policy_overrides: Mapping[str, object] | None = None,
    estimator: Estimator | None = None,
    options: RunnerOptions | None = None,
    on_answer: Callable[[Answer], None] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    wait: Callable[[threading.Condition, float], object] | None = None,
) -> DeviceRunner:
    """A :class:`DeviceRunner` for ``bundle`` (or ``manifest`` + ``heads``) on ``config`` over ``transport``
    (module doc). The runner is not started: call ``start()`` / ``run()``."""
    if manifest is None:
        if bundle is None:
            raise ValueError("wire_runner needs a bundle folder, or a manifest and its heads")
        manifest = load_manifest(bundle)
    if heads is None:
        if bundle is None:
            raise ValueError("wire_runner: no heads given and no bundle folder to load them from")
        heads = LiteRTHeads(bundle, manifest, config.board)
    uplink: Transport = ShapedTransport(transport, shaper) if shaper is not None else transport
    if policy is None:
        policy = policy_for(manifest, config, policy_overrides)
    elif policy_overrides:
        raise ValueError("wire_runner: give a policy or policy_overrides, not both")
    return DeviceRunner(manifest, config, uplink, heads, policy=policy, estimator=estimator, on_answer=on_answer,
                        clock=clock, sleep=sleep, wait=wait, options=options)
