"""The folder tree is the architecture: imports go one way (ARCHITECTURE.md). This test walks
every module's imports and fails on an upward import or an import between sibling packages."""

from __future__ import annotations

import ast
from pathlib import Path

import megawatt

SRC = Path(megawatt.__file__).parent

# Lower rank = lower layer. A module may import its own package and lower ranks only.
RANK = {
    "errors": 0, "units": 1, "interrupts": 1, "_yaml": 1, "_files": 1,
    "hardware": 2, "model": 2, "workload": 2, "sim": 2,
    "perf": 3,
    "serving": 4,
    "fleet": 5,
    "plan": 6,
    "scenario": 7,
    "explain": 8, "study": 8, "calibration": 8,
    "deal": 9,
    "report": 10,
    "cli": 11, "__main__": 11, "__init__": 11,
}
SIBLINGS = {"hardware", "model", "workload", "sim"}


def _unit(module_path: Path) -> str:
    rel = module_path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return [name for name in out if name == "megawatt" or name.startswith("megawatt.")]


def test_every_source_unit_has_a_rank() -> None:
    units = {_unit(p) for p in SRC.rglob("*.py")}
    assert units <= set(RANK), f"unranked units: {units - set(RANK)}"


def test_imports_only_go_down_and_siblings_stay_apart() -> None:
    bad = []
    for path in SRC.rglob("*.py"):
        here = _unit(path)
        for name in _imports(path):
            parts = name.split(".")
            if len(parts) == 1:
                if here not in ("cli", "__main__", "__init__"):
                    bad.append(f"{path.relative_to(SRC)} imports the top-level package")
                continue
            there = parts[1]
            if there == here:
                continue
            if RANK[there] > RANK[here] or (here in SIBLINGS and there in SIBLINGS):
                bad.append(f"{path.relative_to(SRC)} ({here}) imports {name} ({there})")
            if RANK[there] == RANK[here] and here not in ("cli", "__main__", "__init__"):
                bad.append(f"{path.relative_to(SRC)} ({here}) imports same-layer {name}")
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    fake = tmp_path / "fake.py"
    fake.write_text("from megawatt.serving import Replica\n")
    assert _imports(fake) == ["megawatt.serving"]
    assert RANK["serving"] > RANK["perf"]
