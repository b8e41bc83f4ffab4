"""Interruptions: a signal that arrives while compiled code runs is held and delivered when the
call returns (within a second, never as numba's SystemError), a handler that lets the run go on
gets the whole run, and worker processes ignore Ctrl-C and are reaped when their block fails."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from megawatt.hardware import load_catalog
from megawatt.interrupts import held_signals, worker_pool
from megawatt.model import load_model
from megawatt.perf import Deployment
from megawatt.serving import ReplicaConfig, RunResult, simulate
from megawatt.workload import Requests


def _interrupt_in(delay_s: float, sig: int = signal.SIGINT) -> threading.Timer:
    timer = threading.Timer(delay_s, os.kill, (os.getpid(), sig))
    timer.start()
    return timer


@pytest.fixture(autouse=True)
def default_ctrl_c() -> Iterator[None]:
    """Each test starts from Python's own Ctrl-C handler and leaves the one it found: a test
    elsewhere in the same worker process must not decide what these tests see."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_signal_in_the_block_sets_the_flag_and_is_delivered_when_it_ends() -> None:
    with pytest.raises(KeyboardInterrupt):
        with held_signals() as flag:
            os.kill(os.getpid(), signal.SIGINT)
            # Python runs the (holding) handler at its next check in the main thread: no exception
            # yet. The kernel may deliver the signal to another thread, so the check can come
            # after a sleep rather than within it: wait for it, a bounded number of times.
            for _ in range(200):
                if flag[0]:
                    break
                time.sleep(0.01)
            assert flag[0] == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ignored_signals_stay_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with held_signals() as flag:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        assert flag[0] == 0
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module")
def long_run() -> tuple[ReplicaConfig, Requests]:
    """A lightly loaded replica stepping one decode step at a time: several seconds of kernel."""
    cat = load_catalog()
    system = cat.system("hgx-h200")
    dep = Deployment(model=load_model("llama-3.1-8b"), system=system, device=cat.device(system.device_id),
                     tp=1, weight_dtype="fp8")
    rng = np.random.default_rng(3)
    n = 30_000
    requests = Requests(
        arrival_s=np.cumsum(rng.exponential(10.0, n)),
        prompt_tokens=rng.integers(100, 2000, n),
        output_tokens=rng.integers(1, 1000, n),
        cached_tokens=np.zeros(n, dtype=np.int64),
        class_id=np.zeros(n, dtype=np.int32),
        class_names=("chat",),
    )
    cfg = ReplicaConfig.of(dep)
    simulate(cfg, requests.subset(np.arange(5)), backend="fast")  # compile or load the kernel
    return cfg, requests


def test_ctrl_c_stops_a_long_compiled_run_within_a_second(long_run: tuple[ReplicaConfig, Requests]) -> None:
    cfg, requests = long_run
    start = time.perf_counter()
    timer = _interrupt_in(0.3)
    with pytest.raises(KeyboardInterrupt):
        simulate(cfg, requests, backend="fast")
    timer.join()
    assert time.perf_counter() - start < 0.3 + 1.0


def test_a_handler_that_lets_the_run_go_on_gets_the_whole_run(
    long_run: tuple[ReplicaConfig, Requests],
) -> None:
    cfg, requests = long_run
    part = requests.subset(np.arange(10_000))
    calm = simulate(cfg, part, backend="fast")
    seen: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        timer = _interrupt_in(0.2)
        disturbed: RunResult = simulate(cfg, part, backend="fast")
        timer.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == [signal.SIGINT]
    assert disturbed.table().equals(calm.table())


def _sleep(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table in /proc")
def test_workers_ignore_ctrl_c_and_are_reaped_when_the_block_fails() -> None:
    with pytest.raises(KeyboardInterrupt):
        with worker_pool(2) as pool:
            pids = {pool.submit(_sleep, 0.2).result() for _ in range(4)}
            for pid in pids:
                os.kill(pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the workers too
            time.sleep(0.2)
            assert all(_alive(pid) for pid in pids)
            pool.submit(_sleep, 60)
            raise KeyboardInterrupt
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)
