"""A tiny discrete-event kernel: a clock and a heap of callbacks. Knows nothing about LLMs.

Events at the same time run in the order of (priority, scheduling order), so runs are
deterministic.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

from megawatt.errors import InputError

Callback = Callable[..., None]


class Environment:
    """The simulation clock and its event queue.

    `schedule(delay_s, callback, *args)` runs `callback(*args)` at `now + delay_s`; `step()` runs
    the next event; `run(until=t)` runs events up to time `t` (inclusive) and leaves the clock at
    `t`, or runs until the queue is empty when `until` is None.
    """

    __slots__ = ("_counter", "_queue", "now")

    def __init__(self, start_s: float = 0.0) -> None:
        self.now: float = start_s
        self._queue: list[tuple[float, int, int, Callback, tuple[Any, ...]]] = []
        self._counter = 0

    def schedule(self, delay_s: float, callback: Callback, *args: Any, priority: int = 0) -> None:
        """Run `callback(*args)` after `delay_s` seconds (>= 0). Lower `priority` runs first."""
        if not delay_s >= 0.0:  # also rejects NaN
            raise InputError(
                f"schedule: delay_s must be >= 0; got {delay_s!r}. Time never runs back."
            )
        self._counter += 1
        heapq.heappush(self._queue, (self.now + delay_s, priority, self._counter, callback, args))

    def schedule_at(self, time_s: float, callback: Callback, *args: Any, priority: int = 0) -> None:
        """Run `callback(*args)` at absolute time `time_s` (>= now), exactly then: converting to
        a delay and back could move it by a rounding error and break a tie with another event."""
        if not time_s >= self.now:  # also rejects NaN
            raise InputError(
                f"schedule_at: time_s must be >= now ({self.now}); got {time_s!r}. "
                "Time never runs back."
            )
        self._counter += 1
        heapq.heappush(self._queue, (time_s, priority, self._counter, callback, args))

    @property
    def peek(self) -> float:
        """Time of the next event, or +inf when the queue is empty."""
        return self._queue[0][0] if self._queue else math.inf

    def __len__(self) -> int:
        return len(self._queue)

    def step(self) -> None:
        """Advance the clock to the next event and run it."""
        time_s, _, _, callback, args = heapq.heappop(self._queue)
        self.now = time_s
        callback(*args)

    def run(self, until: float | None = None) -> None:
        """Run events until the queue is empty or the next one lies after `until`."""
        if until is None:
            while self._queue:
                self.step()
            return
        if not until >= self.now:  # also rejects NaN, which would leave the clock at NaN
            raise InputError(f"run: until must be >= now ({self.now}); got {until}.")
        while self._queue and self._queue[0][0] <= until:
            self.step()
        self.now = until
