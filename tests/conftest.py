"""Shared test options: `--regen-golden` rewrites the golden files of example scenarios.

Hypothesis runs with a fixed seed where `CI` is set (profile `ci`: the same examples on every
run, so a landing is never refused at random) and draws new examples locally (profile `dev`).
`HYPOTHESIS_PROFILE` chooses either explicitly.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE")
    or ("ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev")
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--regen-golden", action="store_true", default=False,
                     help="rewrite tests/golden/*.expected.json from the current code")


@pytest.fixture
def regen_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--regen-golden"))
