"""Who may import whom (issue 14 item 5): the product packages never import the lab or the benchmarks; the
cloud side imports only sdk (no device_runner, no converter); sdk imports none of the other packages.

Read from the sources with ``ast`` (no import runs): every ``import X`` / ``from X import`` at any depth,
function-local imports included, since a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "sdk": {"device_runner", "cloud_tail", "converter", "benchmarks", "lab"},
    "cloud_tail": {"device_runner", "converter", "benchmarks", "lab"},
    "device_runner": {"cloud_tail", "converter", "benchmarks", "lab"},
    "converter": {"benchmarks", "lab"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_product_package_imports_only_what_it_may(package: str) -> None:
    wrong = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & FORBIDDEN[package])
             for p in sorted((ROOT / package).rglob("*.py"))}
    wrong = {k: v for k, v in wrong.items() if v}
    assert not wrong, f"{package} must not import {sorted(FORBIDDEN[package])}: {wrong}"


def test_the_lab_is_where_the_demo_lives() -> None:
    assert {p.name for p in (ROOT / "lab").glob("*.py")} >= {"__init__.py", "demo.py", "demo_report.py", "netem.py"}
    assert not any((ROOT / "cloud_tail" / n).exists() for n in ("demo.py", "demo_report.py", "netem.py"))
