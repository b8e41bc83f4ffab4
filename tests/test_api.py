"""The curated top-level API: `import megawatt as mw` exposes a sorted `__all__` whose names all
exist, and every package's `__all__` names exist too."""

from __future__ import annotations

import importlib

import pytest

import megawatt as mw

PACKAGES = ["megawatt.hardware", "megawatt.model", "megawatt.workload", "megawatt.sim",
            "megawatt.perf", "megawatt.serving", "megawatt.fleet", "megawatt.plan",
            "megawatt.report", "megawatt.errors", "megawatt.deal"]


def test_top_level_all_is_sorted_and_complete() -> None:
    assert mw.__all__ == sorted(mw.__all__)
    missing = [n for n in mw.__all__ if not hasattr(mw, n)]
    assert not missing


@pytest.mark.parametrize("name", PACKAGES)
def test_package_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    assert all(hasattr(module, n) for n in module.__all__)


def test_error_tree_matches_its_docstring() -> None:
    assert issubclass(mw.ScenarioError, mw.InputError)
    assert issubclass(mw.TraceError, mw.InputError)
    assert issubclass(mw.PlanError, mw.InputError)
    for cls in (mw.PlanError, mw.InputError, mw.CatalogError, mw.FitError, mw.NotFittedError):
        assert issubclass(cls, mw.MegawattError)
        assert cls.__name__ in mw.errors.__doc__  # type: ignore[attr-defined]
