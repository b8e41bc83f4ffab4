"""A fork server for the fuzz cases: it imports megawatt once, then forks a child per request
that becomes `python -m megawatt ARGV` in the case's folder (its own process, with stdin from
/dev/null and stdout and stderr in files), so each case pays for its work and not for the import and
the parse of the packaged hardware catalog (about 1 s of the 1.2 s a refusal takes).

Run as a script by `harness.Zygote`. Requests come one JSON line at a time on stdin:
`{"cwd": ..., "argv": [hex of each argument's bytes], "stdout": path, "stderr": path,
"timeout_s": ...}`; the answer is one JSON line on stdout: `{"returncode": int}` (negative for a
signal, as `subprocess` reports it) or `{"timeout": true}` after the child was killed.

The child leaves the server's loop at once: it runs the package's `__main__` as `-m` does, and
whatever ends it (a return, `sys.exit`, `os._exit`, an uncaught exception with its traceback)
ends it as it would end a fresh interpreter, since nothing here catches it."""

from __future__ import annotations

import json
import os
import runpy
import select
import signal
import sys
import time

import megawatt.cli  # noqa: F401  (the import each case would otherwise pay for)
from megawatt.hardware import load_catalog

load_catalog()  # megawatt's own hardware data, parsed once (as a long-lived process would)


def _serve() -> None:
    """Answer requests until stdin closes; return in a forked child, ready to run a case."""
    control_in = os.fdopen(os.dup(0), "r", encoding="utf-8")
    control_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    for line in control_in:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            control_in.close()
            control_out.close()
            _become_the_command(request)
            return
        control_out.write(json.dumps(_wait(pid, float(request["timeout_s"]))) + "\n")
        control_out.flush()
    sys.exit(0)


def _become_the_command(request: dict[str, object]) -> None:
    """Set up the child as `subprocess.run([python, -m, megawatt, *argv], cwd=...,
    stdin=DEVNULL, stdout=file, stderr=file)` would have started it."""
    cwd = str(request["cwd"])
    os.chdir(cwd)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        out = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, fd)
        os.close(out)
    assert isinstance(request["argv"], list)
    sys.argv = ["-m", *(os.fsdecode(bytes.fromhex(str(a))) for a in request["argv"])]
    sys.path[0] = cwd  # as `python -m` puts the working folder first


def _wait(pid: int, timeout_s: float) -> dict[str, object]:
    """The child's exit code, or `timeout` once it has run `timeout_s` (it is killed)."""
    deadline = time.monotonic() + timeout_s
    pidfd = os.pidfd_open(pid)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"timeout": True}
            ready, _, _ = select.select([pidfd], [], [], left)
            if ready:
                _, status = os.waitpid(pid, 0)
                return {"returncode": os.waitstatus_to_exitcode(status)}
    finally:
        os.close(pidfd)


if __name__ == "__main__":
    _serve()
    # Only a forked child gets here: from now on it is `python -m megawatt`.
    runpy.run_module("megawatt", run_name="__main__", alter_sys=True)
