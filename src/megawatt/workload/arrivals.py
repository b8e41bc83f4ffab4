"""Arrival processes: when requests arrive (seconds), as a small Protocol and a registry.

Each process draws n non-decreasing arrival times from a passed-in numpy Generator.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from megawatt.errors import InputError

__all__ = [
    "ARRIVAL_PROCESSES",
    "AllAtOnce",
    "ArrivalProcess",
    "Gamma",
    "Poisson",
    "arrival_process",
]


@runtime_checkable
class ArrivalProcess(Protocol):
    """A process of request arrivals."""

    def sample(self, rng: np.random.Generator, n: int, start_s: float = 0.0) -> np.ndarray:
        """`n` non-decreasing arrival times, seconds, none before `start_s`."""
        ...

    @property
    def rate_per_s(self) -> float:
        """Mean arrival rate, requests per second (infinite for all-at-once)."""
        ...


def _rate(owner: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InputError(
            f"{owner}.rate_per_s must be a number > 0; got {value!r}. Pass requests per second."
        )
    rate = float(value)
    if not math.isfinite(rate) or rate <= 0.0:
        raise InputError(
            f"{owner}.rate_per_s must be a finite number > 0; got {value!r}. Pass requests per "
            "second, e.g. 10."
        )
    return rate


def _checked(n: int, start_s: float) -> tuple[int, float]:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise InputError(f"sample: n must be a whole number >= 0; got {n!r}. Pass a count.")
    if not math.isfinite(start_s):
        raise InputError(f"sample: start_s must be finite; got {start_s!r}. Pass seconds.")
    return int(n), float(start_s)


@dataclass(frozen=True)
class Poisson:
    """Poisson arrivals at `rate_per_s` requests per second (exponential gaps).

    The first request arrives one gap after `start_s`, as in a process already running.
    """

    rate_per_s: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate_per_s", _rate("Poisson", self.rate_per_s))

    def sample(self, rng: np.random.Generator, n: int, start_s: float = 0.0) -> np.ndarray:
        """`n` arrival times, seconds."""
        n, start_s = _checked(n, start_s)
        gaps_s = rng.exponential(1.0 / self.rate_per_s, size=n)
        return start_s + np.cumsum(gaps_s)


@dataclass(frozen=True)
class Gamma:
    """Renewal process with gamma-distributed gaps: mean rate `rate_per_s`, gap CV `cv`.

    `cv` is the coefficient of variation of the gaps (std / mean): 1 is Poisson, above 1 is
    bursty (BurstGPT and ServeGen fit such processes, FACTS.md A.3 and A.5), below 1 is
    smoother. Shape = 1 / cv**2, scale = 1 / (rate_per_s * shape), as in Vidur. The first
    request arrives one gap after `start_s`.
    """

    rate_per_s: float
    cv: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate_per_s", _rate("Gamma", self.rate_per_s))
        cv = self.cv
        if isinstance(cv, bool) or not isinstance(cv, int | float | np.integer | np.floating):
            raise InputError(f"Gamma.cv must be a number > 0; got {cv!r}. Pass e.g. 1.5.")
        if not math.isfinite(cv) or cv <= 0.0:
            raise InputError(
                f"Gamma.cv must be a finite number > 0; got {cv!r}. Use 1 for Poisson-like "
                "gaps, 2 to 3 for bursty traffic."
            )
        object.__setattr__(self, "cv", float(cv))

    def sample(self, rng: np.random.Generator, n: int, start_s: float = 0.0) -> np.ndarray:
        """`n` arrival times, seconds."""
        n, start_s = _checked(n, start_s)
        shape = 1.0 / (self.cv * self.cv)
        gaps_s = rng.gamma(shape, 1.0 / (self.rate_per_s * shape), size=n)
        return start_s + np.cumsum(gaps_s)


@dataclass(frozen=True)
class AllAtOnce:
    """Offline batch: every request arrives at `start_s` (MLPerf's offline scenario)."""

    @property
    def rate_per_s(self) -> float:
        """Infinite: all requests arrive at the same instant."""
        return math.inf

    def sample(self, rng: np.random.Generator, n: int, start_s: float = 0.0) -> np.ndarray:
        """`n` copies of `start_s` (the generator is not advanced)."""
        n, start_s = _checked(n, start_s)
        return np.full(n, start_s, dtype=np.float64)


ARRIVAL_PROCESSES: dict[str, type[Poisson] | type[Gamma] | type[AllAtOnce]] = {
    "all_at_once": AllAtOnce,
    "gamma": Gamma,
    "poisson": Poisson,
}


def arrival_process(spec: Mapping[str, Any]) -> ArrivalProcess:
    """Build an arrival process from a dict such as `{"kind": "poisson", "rate_per_s": 10}`.

    Kinds: `poisson` (rate_per_s), `gamma` (rate_per_s, cv), `all_at_once`. Unknown kinds and
    keys are errors.
    """
    if not isinstance(spec, Mapping):
        raise InputError(
            f"an arrival spec must be a mapping with a 'kind'; got {spec!r}. Write e.g. "
            "{kind: poisson, rate_per_s: 10}."
        )
    kind = spec.get("kind")
    if kind not in ARRIVAL_PROCESSES:
        raise InputError(
            f"arrival spec kind must be one of {', '.join(sorted(ARRIVAL_PROCESSES))}; got "
            f"{kind!r}. Set 'kind' to a known one."
        )
    cls = ARRIVAL_PROCESSES[str(kind)]
    params = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {key: value for key, value in spec.items() if key != "kind"}
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        accepted = ", ".join(params) if params else "no other keys"
        raise InputError(
            f"arrival spec kind {kind!r} takes {accepted}; got unknown {unknown}. Remove or "
            "rename them."
        )
    missing = [name for name in params if name not in kwargs]
    if missing:
        raise InputError(
            f"arrival spec kind {kind!r} needs keys {', '.join(missing)}; got {sorted(kwargs)}. "
            "Add them."
        )
    process: ArrivalProcess = cls(**kwargs)
    return process
