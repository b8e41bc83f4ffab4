"""Shared test options: `--regen-golden` rewrites the golden files of example scenarios.
`interrupted_cleanly` runs a command, interrupts it once it simulates and checks that it stopped
cleanly (exit 130, one line, no traceback, workers reaped, nothing written). `zygote` runs
`python -m megawatt` in processes forked off one that has imported megawatt already
(tests/fuzz/zygote.py; test_fuzz.py checks that they answer as fresh interpreters do).

Hypothesis runs with a fixed seed where `CI` is set (profile `ci`: the same examples on every
run, so a landing is never refused at random) and draws new examples locally (profile `dev`).
`HYPOTHESIS_PROFILE` chooses either explicitly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from fuzz.harness import Zygote

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


# -- interrupting the command line ------------------------------------------------------------
def _process_table() -> dict[int, int]:
    """pid -> parent pid of every process (Linux /proc)."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    table[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
    return table


def _simulating(pid: int) -> bool:
    """True when the process has numba's compiler loaded: it has begun simulating (the CLI
    imports the compiled kernel on its first simulation)."""
    try:
        with open(f"/proc/{pid}/maps") as fh:
            return "llvmlite" in fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return False


def _alive(pid: int) -> bool:
    """True while `pid` runs (gone, or a zombie, is not running)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@dataclass(frozen=True)
class Interrupted:
    """How an interrupted command ended: its exit code, output, and the worker processes it
    had when the signal was sent."""

    returncode: int
    stdout: str
    stderr: str
    workers: frozenset[int]


def interrupt_cli(
    argv: list[str],
    *,
    sig: int = signal.SIGINT,
    whole_group: bool = False,
    workers: bool = False,
    timeout_s: float = 180.0,
) -> Interrupted:
    """Run `python -m megawatt *argv`, wait until it is simulating (in a worker process when
    `workers`), send it `sig` (with `whole_group`, to its whole process group, as a terminal's
    Ctrl-C does) and wait for it to end. No sleeps: readiness is read from the process table."""
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:  # a child would inherit an ignored Ctrl-C
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "megawatt", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    finally:
        if previous == signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    deadline = time.monotonic() + timeout_s
    kids: frozenset[int] = frozenset()
    while proc.poll() is None:
        kids = frozenset(p for p, parent in _process_table().items() if parent == proc.pid)
        watched = kids if workers else {proc.pid}
        if any(_simulating(p) for p in watched):
            break
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"megawatt {' '.join(argv)} never started simulating")
        time.sleep(0.05)
    if whole_group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"megawatt {' '.join(argv)} did not stop within {timeout_s} s: {err[-2000:]}")
    return Interrupted(proc.returncode, out, err, kids)


def assert_interrupted_cleanly(result: Interrupted, *outputs: Path) -> None:
    """Exit code 130, `megawatt: interrupted` as the only line on stderr (no traceback from the
    command or its workers), no worker left running, and none of `outputs` written."""
    assert result.returncode == 130, result.stderr[-3000:]
    assert result.stderr == "megawatt: interrupted\n", result.stderr[-3000:]
    deadline = time.monotonic() + 10.0
    while any(_alive(p) for p in result.workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in result.workers), "worker processes outlived the command"
    for path in outputs:
        assert not path.exists() or (path.is_dir() and not any(path.iterdir())), f"{path} was written"


@pytest.fixture
def interrupted_cleanly() -> Callable[..., Interrupted]:
    """`interrupted_cleanly(argv, *outputs, **interrupt_cli options)`: interrupt the command
    once it simulates and check it stopped cleanly (see `assert_interrupted_cleanly`)."""
    if not os.path.isdir("/proc"):
        pytest.skip("reads the process table in /proc")

    def run(argv: list[str], *outputs: Path, **options: Any) -> Interrupted:
        result = interrupt_cli(argv, **options)
        assert_interrupted_cleanly(result, *outputs)
        return result

    return run


@pytest.fixture(scope="session")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    """A fork server for `python -m megawatt` (one per test process), closed at the end."""
    server = Zygote(tmp_path_factory.mktemp("zygote"))
    yield server
    server.close()
