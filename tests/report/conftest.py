"""The small golden scenario (tests/golden/small.yaml), run once with 150 requests per search: three
options (H200, CS-3, half and half) of one model, simulated at demand; no sessions, no images."""

from __future__ import annotations

from pathlib import Path

import pytest

from megawatt.scenario import load_scenario
from megawatt.study import StudyResult, run_study

SMALL = Path(__file__).parents[1] / "golden" / "small.yaml"


@pytest.fixture(scope="session")
def small_study() -> StudyResult:
    return run_study(load_scenario(SMALL, ["simulation.n_requests=150"]), workers=1)
