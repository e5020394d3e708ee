"""benchmarks.run: argument handling and section replacement in docs/BENCHMARKS.md (no benchmark is run)."""

from __future__ import annotations

import pytest

from benchmarks import run


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
