"""Interruptions end a run cleanly: compiled code runs with Ctrl-C and SIGTERM held (a flag it
polls, not an exception thrown into numba's runtime), and worker processes ignore Ctrl-C, are
terminated by their parent when it stops early and never outlive it.

Signals belong to the process, so this module works on process-wide state by nature: it only
ever changes a handler for the length of a `with` block and puts the previous one back.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from types import FrameType

import numpy as np

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_STOP_GRACE_S = 2.0  # a terminated worker gets this long to exit before it is killed


@contextmanager
def held_signals() -> Iterator[np.ndarray]:
    """Hold SIGINT and SIGTERM for the length of the block. The block gets an int64 array of two
    slots for compiled code: slot 0 becomes 1 when a signal arrives (the code polls it and
    returns early), slot 1 counts the code's iterations between polls. On leaving, a held signal
    goes to the handler that was there before (Ctrl-C: KeyboardInterrupt; SIGTERM left at its
    default: the process ends), as if it arrived then. Signals ignored are left alone, and
    outside the main thread (where Python runs no handler) nothing is held."""
    flag = np.zeros(2, np.int64)
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    held: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(signum)
        flag[0] = 1

    previous = {}
    for sig in SIGNALS:
        handler = signal.getsignal(sig)
        if handler is None or handler == signal.SIG_IGN:  # None: a handler not set by Python
            continue
        previous[sig] = handler
        signal.signal(sig, hold)
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held:
            signal.raise_signal(held[0])


def _worker_init() -> None:
    """Workers leave Ctrl-C to their parent (which stops them) and die at once on SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def worker_pool(n_workers: int) -> Iterator[ProcessPoolExecutor]:
    """A process pool of `n_workers` whose workers ignore Ctrl-C. Leaving the block normally
    waits for the work; leaving it by an exception (KeyboardInterrupt from Ctrl-C or SIGTERM, an
    error) cancels what is queued, terminates the workers and reaps them before the exception
    goes on, so none is left running or prints a traceback."""
    pool = ProcessPoolExecutor(n_workers, initializer=_worker_init)
    try:
        yield pool
    except BaseException:
        with held_signals():  # a second Ctrl-C waits until the workers are reaped
            _stop(pool)
        raise
    pool.shutdown(wait=True)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel queued work, terminate the workers (SIGTERM, then SIGKILL after a grace period)
    and wait for them."""
    # The pool forgets its processes on shutdown; take them first (Python 3.14 would offer
    # pool.terminate_workers()).
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(_STOP_GRACE_S)
        if proc.is_alive():
            proc.kill()
            proc.join()
