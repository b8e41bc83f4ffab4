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
from megawatt.units import SECONDS_PER_DAY

__all__ = [
    "ARRIVAL_PROCESSES",
    "AllAtOnce",
    "ArrivalProcess",
    "Diurnal",
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


_SECONDS_PER_MONTH = 30.4375 * SECONDS_PER_DAY


@dataclass(frozen=True)
class Diurnal:
    """Poisson arrivals whose rate follows the day and grows month by month.

    rate(t) = rate_per_s * (1 + a cos(2 pi (hour(t) - peak_hour) / 24)) * (1 + monthly_growth)
    ** (t / month), with a = (peak_to_trough - 1) / (peak_to_trough + 1), so the daily mean is
    `rate_per_s` at t = 0 and the peak is `peak_to_trough` times the trough. Defaults follow
    FACTS.md A.2: conversation traffic swings about 2:1 within a weekday (coding about 10:1).
    `start_hour` is the clock hour at t = 0; a month is 30.44 days. Drawn by thinning a Poisson
    process at the peak rate (Lewis and Shedler, 1979).
    """

    rate_per_s: float
    peak_to_trough: float = 2.0
    peak_hour: float = 14.0
    monthly_growth: float = 0.0
    start_hour: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate_per_s", _rate("Diurnal", self.rate_per_s))
        if not (isinstance(self.peak_to_trough, int | float) and 1.0 <= self.peak_to_trough < 1e6):
            raise InputError(
                f"Diurnal.peak_to_trough must be a number >= 1; got {self.peak_to_trough!r}. "
                "Use 1 for a flat day, 2 for chat, 10 for coding (FACTS.md A.2)."
            )
        if not (isinstance(self.monthly_growth, int | float) and -0.5 < self.monthly_growth < 10):
            raise InputError(
                f"Diurnal.monthly_growth must be a fraction per month in (-0.5, 10); got "
                f"{self.monthly_growth!r}. Use e.g. 0.09 for +9% a month."
            )

    def rate_at(self, t_s: np.ndarray | float) -> np.ndarray:
        """The instantaneous rate (requests/s) at times `t_s`."""
        t = np.asarray(t_s, dtype=np.float64)
        a = (self.peak_to_trough - 1.0) / (self.peak_to_trough + 1.0)
        hour = self.start_hour + t / 3600.0
        day = 1.0 + a * np.cos(2.0 * math.pi * (hour - self.peak_hour) / 24.0)
        growth = (1.0 + self.monthly_growth) ** (t / _SECONDS_PER_MONTH)
        out: np.ndarray = self.rate_per_s * day * growth
        return out

    def sample(self, rng: np.random.Generator, n: int, start_s: float = 0.0) -> np.ndarray:
        """`n` arrival times, seconds (the rate's clock starts at 0, not at `start_s`)."""
        n, start_s = _checked(n, start_s)
        out: list[np.ndarray] = []
        have = 0
        t = start_s
        a = (self.peak_to_trough - 1.0) / (self.peak_to_trough + 1.0)
        while have < n:
            # Peak rate over the next chunk bounds the rate there (growth is monotone).
            chunk = max(n - have, 1024)
            horizon_s = t + 2.0 * chunk / self.rate_per_s
            peak = self.rate_per_s * (1.0 + a) * max(
                1.0, (1.0 + self.monthly_growth) ** (horizon_s / _SECONDS_PER_MONTH),
                (1.0 + self.monthly_growth) ** (t / _SECONDS_PER_MONTH))
            times = t + np.cumsum(rng.exponential(1.0 / peak, size=chunk))
            # Candidates are valid up to the horizon (the bound holds there); the candidate
            # process is memoryless, so it restarts where this chunk stopped.
            end = min(float(times[-1]), horizon_s)
            times = times[times <= end]
            keep = rng.random(times.size) * peak < self.rate_at(times)
            out.append(times[keep])
            have += int(keep.sum())
            t = end
        return np.concatenate(out)[:n] if out else np.zeros(0)


ARRIVAL_PROCESSES: dict[str, type[Poisson] | type[Gamma] | type[AllAtOnce] | type[Diurnal]] = {
    "all_at_once": AllAtOnce,
    "diurnal": Diurnal,
    "gamma": Gamma,
    "poisson": Poisson,
}


def arrival_process(spec: Mapping[str, Any]) -> ArrivalProcess:
    """Build an arrival process from a dict such as `{"kind": "poisson", "rate_per_s": 10}`.

    Kinds: `poisson` (rate_per_s), `gamma` (rate_per_s, cv), `diurnal` (rate_per_s and
    optionally peak_to_trough, peak_hour, monthly_growth, start_hour), `all_at_once`. Unknown
    kinds and keys are errors.
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
    required = [
        f.name for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in kwargs]
    if missing:
        raise InputError(
            f"arrival spec kind {kind!r} needs keys {', '.join(missing)}; got {sorted(kwargs)}. "
            "Add them."
        )
    process: ArrivalProcess = cls(**kwargs)
    return process
