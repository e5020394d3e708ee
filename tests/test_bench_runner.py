"""benchmarks.run: argument handling and section replacement in docs/BENCHMARKS.md; the workload choice of the
wire, device and cloud benchmarks and their frame budgets (no benchmark is run but the wire one, on a bundle)."""

from __future__ import annotations

import inspect
from dataclasses import replace

import pytest
from fakes import fake_manifest

from benchmarks import _workloads, bench_cloud, bench_device, bench_wire, run
from sdk.errors import BundleError
from sdk.manifest import CutKind, load_manifest


def test_no_name_means_all_and_unknown_names_are_refused():
    assert run.parse_args([]).names == []
    assert run.parse_args(["wire", "converter"]).names == ["wire", "converter"]
    with pytest.raises(SystemExit):
        run.parse_args(["bogus"])


def test_write_replaces_only_its_own_section(tmp_path, monkeypatch):
    doc = tmp_path / "BENCHMARKS.md"
    monkeypatch.setattr(run, "DOC", doc)
    run.write({"wire": run.section("wire", "Wire", "| a |\n|---|\n| 1 |"),
               "cloud": run.section("cloud", "Cloud", "old cloud table")})
    run.write({"wire": run.section("wire", "Wire", "| a |\n|---|\n| 2 |")})
    text = doc.read_text()
    assert text.startswith("# Benchmarks")
    assert "| 2 |" in text and "| 1 |" not in text
    assert "old cloud table" in text
    assert text.count("<!-- bench:wire:start -->") == 1
    assert "python -m benchmarks.run wire" in text


# ------------------------------------------------------------------ workloads of wire / device / cloud


@pytest.fixture
def only_digits_trained(tmp_path, monkeypatch):
    """Every real-scale workload's trained model points at a missing file, digits at its real asset."""
    from converter import workloads as wl

    for name in [n for n in wl.names() if n != "digits"]:
        monkeypatch.setitem(wl.WORKLOADS, name, replace(wl.WORKLOADS[name], asset=tmp_path / "absent" / "x" / "m.keras"))
    monkeypatch.delenv(_workloads.ENV, raising=False)
    return wl


def test_default_workloads_are_the_trained_ones_and_the_rest_are_listed_with_their_command(only_digits_trained):
    present, missing = _workloads.choose(None)
    assert [w.name for w in present] == ["digits"]
    assert [w.name for w in missing] == ["resnet50-fashion-224", "mobilenetv2-fashion", "resnet50-fashion"]
    assert _workloads.choose("all") == (present, missing)
    line = _workloads.missing_line(only_digits_trained.get("resnet50-fashion"))
    assert "python scripts/train_workload.py --arch resnet50" in line and "not measured" in line


def test_workloads_by_name_string_and_environment_in_registry_order(only_digits_trained, monkeypatch):
    present, missing = _workloads.choose("digits, mobilenetv2-fashion")
    assert [w.name for w in present] == ["digits"] and [w.name for w in missing] == ["mobilenetv2-fashion"]
    assert [w.name for w in _workloads.choose(["digits"])[0]] == ["digits"]
    monkeypatch.setenv(_workloads.ENV, "resnet50-fashion")
    assert _workloads.choose(None) == ([], [only_digits_trained.get("resnet50-fashion")])
    with pytest.raises(BundleError, match="unknown workload 'bogus'"):
        _workloads.choose("bogus")


def test_every_workload_benchmark_takes_workloads_and_keeps_run_returning_text():
    for module in (bench_wire, bench_device, bench_cloud):
        params = inspect.signature(module.run).parameters
        assert "workloads" in params and all(p.default is not inspect.Parameter.empty for p in params.values())


def test_device_paths_cover_every_split_cut_and_frames_shrink_for_slow_heads():
    m = fake_manifest()
    assert [(name, cut.index, bits) for name, cut, bits, _ in bench_device.paths(m)] == [
        ("exit answers (cut 2)", 2, 8), ("escalate, 8 bits (cut 1)", 1, 8), ("escalate, 4 bits (cut 1)", 1, 4),
        ("escalate, 8 bits (cut 2)", 2, 8), ("escalate, 4 bits (cut 2)", 2, 4), ("device cut (cut 3)", 3, 0),
    ]
    fast, slow = m.cut(1), m.cut(3)  # 1 ms and 20 ms heads
    assert bench_device.auto_frames(fast, 2.0) == bench_device.MAX_FRAMES
    assert bench_device.MIN_FRAMES <= bench_device.auto_frames(slow, 0.0) < bench_device.MAX_FRAMES
    assert bench_device.qemu_estimate_s(m, 30) > bench_device.qemu_estimate_s(m, 3)


def test_cloud_frame_counts_follow_the_tail_time():
    m = fake_manifest()
    slow = replace(m.cut(0), tail_ms=50.0)  # a ResNet-50-like tail
    assert bench_cloud.auto_frames(m.cut(2)) == bench_cloud.MAX_FRAMES  # 1 ms tail
    assert bench_cloud.MIN_FRAMES <= bench_cloud.auto_frames(slow) < bench_cloud.MAX_FRAMES
    assert bench_cloud.MIN_BROKER <= bench_cloud.broker_frames(slow) < bench_cloud.broker_frames(m.cut(2))
    assert bench_cloud._broker_cut(m).index == 1  # the split cut with the most tail work


def test_wire_table_on_a_real_bundle_has_every_cut_at_every_bit_width(reference_bundle):
    text = bench_wire.run(bundle=str(reference_bundle), repeat=1)
    m = load_manifest(reference_bundle)
    assert "| 0 raw frame |" in text
    for cut in m.cuts:
        if cut.kind is CutKind.SPLIT:
            for bits in m.bits:
                assert f"| {cut.index} {cut.name} | " in text and f" | {bits} | {cut.payload_bytes(bits):,} | " in text
