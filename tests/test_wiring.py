"""device_runner.wiring: the one function that builds a device runner from a bundle and a profile (issue 14
item 5), and the device CLI's policy flags, which default to the profile's ``[policy]`` table."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from device_runner.cli import parse_args, policy_flags
from device_runner.heads import LiteRTHeads
from device_runner.link import ConstantRateShaper, ShapedTransport
from device_runner.runner import RunnerOptions
from device_runner.wiring import policy_for, wire_runner
from sdk.config import load_board, with_overrides
from sdk.manifest import CutKind, load_manifest
from sdk.policy_options import PolicyOptions
from sdk.transport import InMemoryHub


def test_a_runner_wired_from_the_reference_bundle_answers_every_frame(reference_bundle: Path) -> None:
    """LiteRT heads of the bundle, the profile's policy pinned to the device cut by an override, an in-memory
    hub: five frames, five answers, each on the device cut."""
    manifest = load_manifest(reference_bundle)
    device = next(c.index for c in manifest.cuts if c.kind is CutKind.DEVICE)
    cfg = with_overrides(load_board("pi4"), device_id="cam-w")
    answers = []
    runner = wire_runner(cfg, InMemoryHub().transport("cam-w"), bundle=reference_bundle, on_answer=answers.append,
                         policy_overrides={"allowed_cuts": (device,), "probe_every": None},
                         options=RunnerOptions(measure_heads=False))
    assert isinstance(runner.executor, LiteRTHeads)
    assert runner.policy.probe_every == PolicyOptions().probe_every  # None kept the profile's value
    rng = np.random.default_rng(0)
    try:
        for _ in range(5):
            runner.process(rng.integers(0, 256, size=tuple(manifest.input.shape), dtype=np.uint8))
    finally:
        runner.close()
    assert sorted(a.seq for a in answers) == [0, 1, 2, 3, 4]
    assert {a.cut for a in answers} == {device}


def test_the_shaper_wraps_the_transport_and_a_policy_excludes_overrides(reference_bundle: Path) -> None:
    manifest = load_manifest(reference_bundle)
    cfg = with_overrides(load_board("pi4"), device_id="cam-s")
    hub = InMemoryHub()

    class NoHeads:
        emulated = False

    runner = wire_runner(cfg, hub.transport("cam-s"), manifest=manifest, heads=NoHeads(),  # type: ignore[arg-type]
                         shaper=ConstantRateShaper(1e6))
    assert isinstance(runner.transport.inner, ShapedTransport)
    with pytest.raises(ValueError, match="not both"):
        wire_runner(cfg, hub.transport("cam-t"), manifest=manifest, heads=NoHeads(),  # type: ignore[arg-type]
                    policy=policy_for(manifest, cfg), policy_overrides={"probe_every": 3})
    with pytest.raises(ValueError, match="bundle folder"):
        wire_runner(cfg, hub.transport("cam-u"))


def test_absent_policy_flags_keep_the_profiles_policy_table(reference_bundle: Path) -> None:
    """`splitedge device` without --probe-every plans with the profile's [policy] probe_every; with it, the flag."""
    manifest = load_manifest(reference_bundle)
    cfg = load_board("pi4")
    cfg = replace(cfg, policy=replace(cfg.policy, probe_every=7, margin=0.3))
    base = ["--bundle", str(reference_bundle), "--config", "pi4"]
    absent = policy_for(manifest, cfg, policy_flags(parse_args(base)))
    assert (absent.probe_every, absent.margin) == (7, 0.3)
    given = policy_for(manifest, cfg, policy_flags(parse_args([*base, "--probe-every", "0", "--cut", "51"])))
    assert (given.probe_every, given.margin, given.cut_indices) == (0, 0.3, (51,))
