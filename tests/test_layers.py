"""The folder tree is the architecture: imports go one way (ARCHITECTURE.md). These tests read
every module's imports, those under `if TYPE_CHECKING:` and inside functions included, and fail
on an upward import, an import between sibling packages, or a cycle of imports between modules.
The last tests feed the checks fabricated sources and assert that they report them."""

from __future__ import annotations

import ast
import functools
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

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
SHELL = ("cli", "__main__", "__init__")  # may import the top-level package and each other


@dataclass(frozen=True)
class Import:
    """`module` imports `target` (both dotted module names) on `line` of its source."""

    module: str
    target: str
    line: int


def read_sources(root: Path) -> dict[str, str]:
    """{dotted module name: source} of every module of the package at `root`."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path.read_text()
    return out


@functools.cache
def _parsed(source: str) -> ast.Module:
    """A module's syntax tree, parsed once per text (the tests below reread the same tree with
    one module changed; the trees are only walked, never changed)."""
    return ast.parse(source)


def imports(sources: Mapping[str, str]) -> list[Import]:
    """Every import of a module in `sources` by another, wherever it stands in the source (type-only
    and function-local ones too). `from p import name` imports the module `p.name` when there is
    one, else `p` itself (a package's `__init__`); relative imports are resolved."""
    packages = {name.rpartition(".")[0] for name in sources}
    out = []
    for module, source in sources.items():
        package = module if module in packages else module.rpartition(".")[0]
        for node in ast.walk(_parsed(source)):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: package.count(".") + 2 - node.level]
                    base = ".".join([*parent, base] if base else parent)
                names = (f"{base}.{alias.name}" for alias in node.names)
                targets = [name if name in sources else base for name in names]
            else:
                continue
            out += [
                Import(module, t, node.lineno)
                for t in dict.fromkeys(targets)
                if t in sources and t != module
            ]
    return out


def unit(module: str) -> str:
    """The ranked unit a module belongs to: its top-level package or module under megawatt."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_violations(found: Iterable[Import]) -> list[str]:
    """The imports that go up a layer, between sibling packages, or across one layer."""
    bad = []
    for imp in found:
        here, there = unit(imp.module), unit(imp.target)
        where = f"{imp.module}:{imp.line} ({here}) imports {imp.target}"
        if "." not in imp.target:
            if here not in SHELL:
                bad.append(f"{where}, the top-level package")
        elif there == here:
            continue
        elif RANK[there] > RANK[here]:
            bad.append(f"{where} ({there}), a higher layer")
        elif here in SIBLINGS and there in SIBLINGS:
            bad.append(f"{where} ({there}), a sibling")
        elif RANK[there] == RANK[here] and here not in SHELL:
            bad.append(f"{where} ({there}), the same layer")
    return bad


def _reachable(graph: Mapping[str, Mapping[str, int]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def _shortest_cycle(graph: Mapping[str, Mapping[str, int]], start: str) -> list[str]:
    """The modules of a shortest import cycle from `start` back to it (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    raise ValueError(f"{start} is on no cycle")


def import_cycles(found: Iterable[Import]) -> list[str]:
    """One line per strongly connected set of modules: its shortest cycle from its first module,
    as `module:line -> module:line -> ... -> first module` (the line of each import), and every
    module of the set when the cycle does not pass them all."""
    graph: dict[str, dict[str, int]] = {}
    for imp in found:
        graph.setdefault(imp.module, {}).setdefault(imp.target, imp.line)
        graph.setdefault(imp.target, {})
    reach = {v: _reachable(graph, v) for v in graph}
    components = {frozenset(w for w in reach[v] if v in reach[w]) for v in graph if v in reach[v]}
    out = []
    for component in sorted(components, key=min):
        cycle = _shortest_cycle(graph, min(component))
        steps = [f"{a}:{graph[a][b]}" for a, b in itertools.pairwise(cycle)]
        line = " -> ".join([*steps, cycle[-1]])
        if len(component) > len(cycle) - 1:
            line += f" (the set: {', '.join(sorted(component))})"
        out.append(line)
    return out


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    return read_sources(SRC)


def test_every_source_unit_has_a_rank(sources: dict[str, str]) -> None:
    units = {unit(m) for m in sources}
    assert units <= set(RANK), f"unranked units: {units - set(RANK)}"


def test_imports_only_go_down_and_siblings_stay_apart(sources: dict[str, str]) -> None:
    bad = layer_violations(imports(sources))
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_no_modules_import_each_other_in_a_cycle(sources: dict[str, str]) -> None:
    cycles = import_cycles(imports(sources))
    assert not cycles, "import cycles (module:line of the import):\n" + "\n".join(cycles)


def test_the_reader_sees_type_only_local_relative_and_submodule_imports() -> None:
    found = imports({
        "megawatt": "",
        "megawatt.perf": "from megawatt.perf.roofline import StepModel\n",
        "megawatt.perf.roofline": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from megawatt.perf.wafer import WaferLayout\n"
            "def f():\n"
            "    import megawatt.errors as e\n"
            "from . import wafer\n"
            "from .. import errors\n"
            "from megawatt.perf import Deployment, wafer\n"
            "import numpy\n"
        ),
        "megawatt.perf.wafer": "",
        "megawatt.errors": "",
    })
    assert {(i.module, i.target, i.line) for i in found} == {
        ("megawatt.perf", "megawatt.perf.roofline", 1),
        ("megawatt.perf.roofline", "megawatt.perf.wafer", 3),
        ("megawatt.perf.roofline", "megawatt.errors", 5),
        ("megawatt.perf.roofline", "megawatt.perf.wafer", 6),
        ("megawatt.perf.roofline", "megawatt.errors", 7),
        ("megawatt.perf.roofline", "megawatt.perf", 8),  # a name from the package's __init__
        ("megawatt.perf.roofline", "megawatt.perf.wafer", 8),
    }


@pytest.mark.parametrize(
    ("module", "line", "report"),
    [
        ("megawatt.perf.memory", "from megawatt.serving import Replica",
         "megawatt.perf.memory:{n} (perf) imports megawatt.serving (serving), a higher layer"),
        ("megawatt.perf.memory", "    from megawatt.fleet.pool import PoolResult",
         "megawatt.perf.memory:{n} (perf) imports megawatt.fleet.pool (fleet), a higher layer"),
        ("megawatt.workload.mix", "from megawatt.hardware import System",
         "megawatt.workload.mix:{n} (workload) imports megawatt.hardware (hardware), a sibling"),
        ("megawatt.study", "from megawatt.calibration import measurements",
         "megawatt.study:{n} (study) imports megawatt.calibration.measurements (calibration), "
         "the same layer"),
        ("megawatt.fleet.pools", "import megawatt",
         "megawatt.fleet.pools:{n} (fleet) imports megawatt, the top-level package"),
    ],
)
def test_the_layer_check_reports_a_fabricated_import(
    sources: dict[str, str], module: str, line: str, report: str
) -> None:
    fabricated = dict(sources)
    head = "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n" if line.startswith(" ") else ""
    fabricated[module] = sources[module] + "\n" + head + line + "\n"
    n = fabricated[module].count("\n")
    assert layer_violations(imports(fabricated)) == [report.format(n=n)]


def test_a_downward_import_is_no_violation() -> None:
    found = imports({"megawatt.perf.roofline": "from megawatt.model import ModelSpec", "megawatt.model": ""})
    assert len(found) == 1 and layer_violations(found) == []


def test_the_cycle_check_reports_a_type_only_cycle() -> None:
    a_imports_b_for_types = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from megawatt.fleet.b import B\n"
    )
    found = imports({
        "megawatt.fleet.a": a_imports_b_for_types,
        "megawatt.fleet.b": "from megawatt.fleet.c import C\n",
        "megawatt.fleet.c": "from megawatt.fleet.a import A\n",
        "megawatt.fleet.d": "from megawatt.fleet.a import A\n",  # into the cycle, not on it
    })
    assert import_cycles(found) == [
        "megawatt.fleet.a:3 -> megawatt.fleet.b:1 -> megawatt.fleet.c:1 -> megawatt.fleet.a"
    ]
    # The way out: the shared type moves to a module both import (here, to c).
    found = imports({"megawatt.fleet.a": "from megawatt.fleet.c import B\n", "megawatt.fleet.c": ""})
    assert import_cycles(found) == []


def test_the_cycle_check_reports_cycles_through_a_package_and_names_the_whole_set() -> None:
    found = imports({
        "megawatt.perf": "from megawatt.perf.roofline import StepModel\n",
        "megawatt.perf.roofline": "def f():\n    from megawatt.perf import Deployment\n",
        "megawatt.serving.a": "from megawatt.serving.b import X\nfrom megawatt.serving.c import Y\n",
        "megawatt.serving.b": "from megawatt.serving.a import Z\n",
        "megawatt.serving.c": "from megawatt.serving.a import Z\n",
    })
    assert import_cycles(found) == [
        "megawatt.perf:1 -> megawatt.perf.roofline:2 -> megawatt.perf",
        "megawatt.serving.a:1 -> megawatt.serving.b:1 -> megawatt.serving.a (the set: "
        "megawatt.serving.a, megawatt.serving.b, megawatt.serving.c)",
    ]


def test_the_cycle_check_reports_a_cycle_fabricated_in_the_tree(sources: dict[str, str]) -> None:
    fabricated = dict(sources)
    fabricated["megawatt.perf.deployment"] += (
        "\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        "    from megawatt.perf.roofline import StepModel\n"
    )
    n = fabricated["megawatt.perf.deployment"].count("\n")
    cycles = import_cycles(imports(fabricated))
    assert len(cycles) == 1
    assert cycles[0].startswith(f"megawatt.perf.deployment:{n} -> megawatt.perf.roofline:")
