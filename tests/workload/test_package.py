"""The workload package: a curated, sorted public API and imports only from allowed layers."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import megawatt.workload as workload

ALLOWED_MEGAWATT = {"megawatt.errors", "megawatt.units"}
ALLOWED_THIRD_PARTY = {"numpy", "pyarrow", "yaml"}


def test_every_public_name_is_exported_and_sorted() -> None:
    names = list(workload.__all__)
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(workload, name), name

    # ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical
    def key(name: str) -> tuple[int, str]:
        kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
        return kind, name

    assert names == sorted(names, key=key)


def test_workload_imports_only_the_layers_below_it() -> None:
    package = Path(workload.__file__).parent
    for module in package.glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module]
            else:
                continue
            for target in targets:
                top = target.split(".")[0]
                if top == "megawatt":
                    assert target in ALLOWED_MEGAWATT or target.startswith("megawatt.workload"), (
                        f"{module.name} imports {target}"
                    )
                else:
                    assert top in ALLOWED_THIRD_PARTY or top in sys.stdlib_module_names, (
                        f"{module.name} imports {target}"
                    )
