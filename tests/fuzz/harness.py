"""Running the real `megawatt` command on a bad input and checking how it refuses: exit code 2
(130 for a signal), one line on stderr naming the problem, no traceback, and nothing new in
`--out` or next to it.

Each case runs in a folder of its own, which is also the working folder of the command, so
paths in `argv` are relative to it; `files` are written there first (bytes as given, text as
UTF-8) and every `fifos` name becomes a named pipe. Runs use `--out out` with a sentinel file
already in `out/`: after the command, `out/` and the case folder must hold exactly what they
held before.

Signals: add a `SignalCase` to `SIGNAL_CASES` (tests/fuzz/cases.py); `test_fuzz.py` runs each
through `interrupt_cli` and `assert_interrupted`: the command starts, `signal` is sent once
`wait_for` appears on stderr (or after `after_s` seconds), and it must exit 130 with one line.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

TIMEOUT_S = 60.0
"""A case that runs longer has hung (each bad input is refused in about half a second)."""

SENTINEL = "sentinel.txt"
"""The file already in `out/` before each case; it must be the only one there after."""


@dataclass(frozen=True)
class Case:
    """One bad input: the command line, the files it reads, and the text the error must hold."""

    id: str
    argv: tuple[str | bytes, ...]
    needle: str
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    fifos: tuple[str, ...] = ()


@dataclass(frozen=True)
class SignalCase:
    """A command interrupted by `signal` once `wait_for` is on its stderr (or after `after_s`
    seconds when `wait_for` is empty; or, with `when_simulating`, once it or its worker
    processes run the simulator, read from the process table); it must exit 130 with one line
    and leave `out/` alone."""

    id: str
    argv: tuple[str, ...]
    signal: int = signal.SIGINT
    wait_for: str = ""
    after_s: float = 1.0
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    when_simulating: bool = False
    workers: bool = False  # the simulation runs in worker processes (and the signal reaches them)


@dataclass(frozen=True)
class Result:
    """What a command did: its exit code, its output and the case folder's listing."""

    returncode: int
    stdout: str
    stderr: str


def prepare(folder: Path, files: Mapping[str, str | bytes], fifos: tuple[str, ...] = ()) -> None:
    """Write the case's files and pipes and the `out/` folder with its sentinel."""
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    for name in fifos:
        os.mkfifo(folder / name)
    (folder / "out").mkdir()
    (folder / "out" / SENTINEL).write_text("from an earlier run\n")


def listing(folder: Path) -> dict[str, int]:
    """Every path under `folder` (relative) with its size, to compare before and after."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else -1)
        for p in sorted(folder.rglob("*"))
        if not p.is_fifo()
    }


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(COLUMNS="200", NO_COLOR="1", PYTHONFAULTHANDLER="1")
    return env


def run_cli(folder: Path, argv: tuple[str | bytes, ...], timeout_s: float = TIMEOUT_S) -> Result:
    """Run `python -m megawatt ARGV` in `folder`; a hang fails the test with what it printed."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "megawatt", *argv],
            cwd=folder,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout_s,
            env=_env(),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"megawatt {argv!r} still ran after {timeout_s:g} s (a hang?); stderr so far: "
            f"{(exc.stderr or b'')[-500:]!r}"
        ) from None
    return Result(
        proc.returncode,
        proc.stdout.decode("utf-8", "backslashreplace"),
        proc.stderr.decode("utf-8", "backslashreplace"),
    )


def _text(path: Path) -> str:
    """A child's output file as text (empty when it was killed before it opened it)."""
    return path.read_bytes().decode("utf-8", "backslashreplace") if path.exists() else ""


class Zygote:
    """A fork server (tests/fuzz/zygote.py) that has imported megawatt once: `run` gives what
    `run_cli` gives, from a process forked off it that runs `python -m megawatt ARGV` in the
    case folder, without paying for the interpreter's start and the import each time."""

    def __init__(self, scratch: Path) -> None:
        self._scratch = scratch  # the children's stdout and stderr, outside every case folder
        self._n = 0
        self._log = open(scratch / "zygote.log", "wb")  # closed in `close`
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("zygote.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=_env(),
            text=True,
        )

    def run(self, folder: Path, argv: tuple[str | bytes, ...], timeout_s: float = TIMEOUT_S) -> Result:
        """Like `run_cli(folder, argv)`: the exit code and output of the command in `folder`."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._n += 1
        out, err = self._scratch / f"{self._n}.out", self._scratch / f"{self._n}.err"
        request = {"cwd": str(folder), "argv": [os.fsencode(a).hex() for a in argv],
                   "stdout": str(out), "stderr": str(err), "timeout_s": timeout_s}
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline()
        if not answer:
            raise AssertionError(f"the fork server ended: {(self._scratch / 'zygote.log').read_text()}")
        reply = json.loads(answer)
        stderr = _text(err)
        if reply.get("timeout"):
            raise AssertionError(
                f"megawatt {argv!r} still ran after {timeout_s:g} s (a hang?); stderr so far: "
                f"{stderr[-500:]!r}"
            )
        return Result(int(reply["returncode"]), _text(out), stderr)

    def close(self) -> None:
        """End the server (it leaves when its stdin closes)."""
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        assert self._proc.stdout is not None
        self._proc.stdout.close()
        self._log.close()


def interrupt_cli(folder: Path, case: SignalCase, timeout_s: float = TIMEOUT_S) -> Result:
    """Start the command, send `case.signal` when `case.wait_for` shows on stderr (or after
    `case.after_s`), and collect how it ended."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "megawatt", *case.argv],
        cwd=folder,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + (timeout_s if case.wait_for else case.after_s)
    while time.monotonic() < deadline and proc.poll() is None:
        if case.wait_for and case.wait_for.encode() in seen:
            break
        ready, _, _ = select.select([proc.stderr], [], [], 0.05)
        if ready:
            seen += os.read(proc.stderr.fileno(), 65536)
    if proc.poll() is None:
        proc.send_signal(case.signal)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"megawatt {case.argv!r} did not stop after {case.signal!r}") from None
    return Result(
        proc.returncode,
        out.decode("utf-8", "backslashreplace"),
        (seen + err).decode("utf-8", "backslashreplace"),
    )


def _one_line(result: Result, what: str) -> str:
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr + result.stdout, f"{what}: a traceback:\n{result.stderr}"
    assert len(lines) == 1, f"{what}: expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    return lines[0]


def assert_refused(result: Result, needle: str, before: dict[str, int], after: dict[str, int]) -> None:
    """Exit 2, one line 'megawatt: error: ...' holding `needle`, nothing on stdout, no traceback,
    and no file created, changed or removed in the case folder (so none in `out/`)."""
    what = f"exit {result.returncode}"
    line = _one_line(result, what)
    assert result.returncode == 2, f"expected exit 2, got {result.returncode}: {line}"
    assert line.startswith("megawatt: error: "), line
    assert needle in line, f"{needle!r} not in the message: {line}"
    assert result.stdout == "", f"unexpected output: {result.stdout[:500]}"
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))}"


def assert_interrupted(result: Result, before: dict[str, int], after: dict[str, int]) -> None:
    """Exit 130, no traceback, a last line on stderr saying so (a progress bar may precede it),
    and `out/` as it was."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.splitlines()
    line = lines[-1] if lines else ""
    assert result.returncode == 130, f"expected exit 130, got {result.returncode}: {line}"
    assert line.startswith("megawatt: "), f"no closing message: {result.stderr[-500:]}"
    outs = {k: v for k, v in after.items() if k == "out" or k.startswith("out/")}
    assert outs == {k: v for k, v in before.items() if k == "out" or k.startswith("out/")}
