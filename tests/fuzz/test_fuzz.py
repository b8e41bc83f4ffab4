"""Issue 11's acceptance: every bad input in tests/fuzz/cases.py, run through the real command
line, exits 2 with one line on stderr naming the problem, prints no traceback, and leaves no file
in `--out` (nor anywhere in its folder); signals exit 130. The valid base scenario runs to the
end, so each case fails for its own reason.

The bad inputs run in processes forked off a server that has imported megawatt once (see
tests/fuzz/zygote.py), which saves most of each case's time; a sample of cases run both ways
must give the same exit code, stdout and stderr, byte for byte. The server is the `zygote`
fixture of tests/conftest.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .cases import CASES, RUN_TAIL, SIGNAL_CASES, VALID_BASE
from .harness import (
    SENTINEL,
    Case,
    SignalCase,
    Zygote,
    assert_interrupted,
    assert_refused,
    interrupt_cli,
    listing,
    prepare,
    run_cli,
)

SAME_EITHER_WAY = [
    Case("help", ("--help",), ""),  # exit 0, and the program's name comes from `-m`
    Case("stdin", ("hardware", "--hardware", "/dev/stdin"), ""),  # stdin is /dev/null either way
    *[c for c in CASES if c.id in {
        "--set: bytes that are not UTF-8",  # an argument that is not text
        "hardware: a named pipe",
        "option: run --workers abc",  # a usage error from the command-line parser
    }],
]


@pytest.mark.parametrize("case", SAME_EITHER_WAY, ids=[c.id for c in SAME_EITHER_WAY])
def test_the_fork_server_runs_a_case_as_a_fresh_interpreter_does(
    tmp_path: Path, case: Case, zygote: Zygote
) -> None:
    """The server's children are the real command: same exit code, stdout and stderr, and
    neither way leaves a file behind in the case folder."""
    results = []
    for run in (run_cli, zygote.run):
        folder = tmp_path / run.__name__
        folder.mkdir()
        prepare(folder, case.files, case.fifos)
        before = listing(folder)
        results.append(run(folder, case.argv))
        assert listing(folder) == before
    fresh, forked = results
    assert len(SAME_EITHER_WAY) == 5, "a sample case was renamed"
    assert forked == fresh
    assert (fresh.returncode == 0) == (case.id == "help"), fresh


def test_the_fork_server_reports_a_hang(tmp_path: Path, zygote: Zygote) -> None:
    """A command that runs too long is killed and reported as a hang, so a case cannot pass by
    hanging in the server, and the server goes on serving."""
    prepare(tmp_path, {})
    with pytest.raises(AssertionError, match=r"still ran after 0.001 s \(a hang\?\)"):
        zygote.run(tmp_path, ("run", "--help"), timeout_s=0.001)
    assert zygote.run(tmp_path, ("run", "--help")).returncode == 0


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
def test_a_bad_input_is_refused_in_one_line(tmp_path: Path, case: Case, zygote: Zygote) -> None:
    prepare(tmp_path, case.files, case.fifos)
    before = listing(tmp_path)
    result = zygote.run(tmp_path, case.argv)
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
