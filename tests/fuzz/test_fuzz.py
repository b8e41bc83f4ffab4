"""Issue 11's acceptance: every bad input in tests/fuzz/cases.py, run through the real command
line, exits 2 with one line on stderr naming the problem, prints no traceback, and leaves no file
in `--out` (nor anywhere in its folder); signals exit 130. The valid base scenario runs to the
end, so each case fails for its own reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .cases import CASES, RUN_TAIL, SIGNAL_CASES, VALID_BASE
from .harness import (
    SENTINEL,
    Case,
    SignalCase,
    assert_interrupted,
    assert_refused,
    interrupt_cli,
    listing,
    prepare,
    run_cli,
)


def test_there_are_at_least_150_distinct_bad_inputs() -> None:
    assert len(CASES) >= 150
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
    assert len({(c.argv, tuple(sorted(c.files.items()))) for c in CASES}) == len(CASES)


def test_the_base_scenario_runs_and_fills_out_beside_what_was_there(tmp_path: Path) -> None:
    prepare(tmp_path, {"s.yaml": VALID_BASE})
    result = run_cli(tmp_path, ("run", "s.yaml", *RUN_TAIL))
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted([SENTINEL, "report.html", "results.json", "scenario.resolved.yaml"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "s.yaml"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_is_refused_in_one_line(tmp_path: Path, case: Case) -> None:
    prepare(tmp_path, case.files, case.fifos)
    before = listing(tmp_path)
    result = run_cli(tmp_path, case.argv)
    assert_refused(result, case.needle, before, listing(tmp_path))


@pytest.mark.parametrize("case", SIGNAL_CASES, ids=[c.id for c in SIGNAL_CASES])
def test_a_signal_stops_the_run_with_exit_130(
    tmp_path: Path, case: SignalCase, interrupted_cleanly: Callable[..., object]
) -> None:
    prepare(tmp_path, case.files)
    before = listing(tmp_path)
    if case.when_simulating:
        # Signalled once it simulates (the process table says so), not after a guessed delay,
        # so a loaded machine cannot catch it still importing.
        argv = [a.replace("{dir}", str(tmp_path)) for a in case.argv]
        interrupted_cleanly(argv, sig=case.signal, whole_group=case.workers, workers=case.workers)
        after = listing(tmp_path)
        assert {k: v for k, v in after.items() if k.startswith("out")} == {
            k: v for k, v in before.items() if k.startswith("out")
        }
        return
    result = interrupt_cli(tmp_path, case)
    assert_interrupted(result, before, listing(tmp_path))
