"""Token-length distributions (prompt, output, cached prefix): a small Protocol and a registry.

Every distribution samples whole tokens (int64 >= 1) from a passed-in numpy Generator.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from megawatt.errors import InputError

__all__ = [
    "LENGTH_DISTRIBUTIONS",
    "Empirical",
    "Fixed",
    "LengthDistribution",
    "Lognormal",
    "Uniform",
    "Zipf",
    "length_distribution",
]

# Beyond 2**53 float64 stops representing whole numbers exactly; no prompt is that long.
_CEILING_TOKENS = 2**53
# A lognormal sigma beyond this overflows its mean (exp(sigma^2 / 2)); real traces fit 0.5-2.
_MAX_SIGMA = 20.0


@runtime_checkable
class LengthDistribution(Protocol):
    """A distribution of token counts."""

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` token counts, int64 >= 1."""
        ...

    @property
    def mean(self) -> float:
        """Mean token count of what `sample` draws (exact, or by the method its class states)."""
        ...


def _whole(owner: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InputError(
            f"{owner}.{name} must be a whole number >= {minimum}; got {value!r}. "
            f"Pass an integer such as {max(minimum, 1)}."
        )
    if not math.isfinite(value) or value != int(value) or value < minimum:
        raise InputError(
            f"{owner}.{name} must be a whole number >= {minimum}; got {value!r}. "
            f"Pass an integer such as {max(minimum, 1)}."
        )
    return int(value)


def _real(owner: str, name: str, value: Any, *, low: float, low_inclusive: bool) -> float:
    rule = f">= {low}" if low_inclusive else f"> {low}"
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InputError(f"{owner}.{name} must be a number {rule}; got {value!r}. Pass a number.")
    number = float(value)
    ok = number >= low if low_inclusive else number > low
    if not math.isfinite(number) or not ok:
        raise InputError(
            f"{owner}.{name} must be a finite number {rule}; got {value!r}. Pass a number {rule}."
        )
    return number


def _count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise InputError(f"sample: n must be a whole number >= 0; got {n!r}. Pass a count.")
    return int(n)


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


@dataclass(frozen=True)
class Fixed:
    """Every request has exactly `n_tokens` tokens."""

    n_tokens: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_tokens", _whole("Fixed", "n_tokens", self.n_tokens, 1))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` copies of `n_tokens` (the generator is not advanced)."""
        return np.full(_count(n), self.n_tokens, dtype=np.int64)

    @property
    def mean(self) -> float:
        """`n_tokens`, exactly."""
        return float(self.n_tokens)


@dataclass(frozen=True)
class Uniform:
    """Whole token counts uniform in [`min_tokens`, `max_tokens`], both included: the `random`
    dataset of vLLM's and SGLang's serving benchmarks, which InferenceX drives with
    `--random-range-ratio 0.8`, i.e. [int(0.8 L), L] (`Uniform.of_range_ratio`)."""

    min_tokens: int
    max_tokens: int

    def __post_init__(self) -> None:
        lo = _whole("Uniform", "min_tokens", self.min_tokens, 1)
        hi = _whole("Uniform", "max_tokens", self.max_tokens, 1)
        if hi < lo:
            raise InputError(
                f"Uniform.max_tokens must be >= min_tokens ({lo}); got {hi}. Swap them."
            )
        object.__setattr__(self, "min_tokens", lo)
        object.__setattr__(self, "max_tokens", hi)

    @classmethod
    def of_range_ratio(cls, length: int, ratio: float) -> Uniform:
        """The benchmark's draw for a nominal `length` and `--random-range-ratio` `ratio`:
        `np.random.randint(int(length * ratio), length + 1)` (benchmark_serving.py)."""
        return cls(max(1, int(length * ratio)), length)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` integers drawn uniformly from the range."""
        return rng.integers(self.min_tokens, self.max_tokens + 1, size=_count(n), dtype=np.int64)

    @property
    def mean(self) -> float:
        """(min + max) / 2, exactly."""
        return (self.min_tokens + self.max_tokens) / 2.0


@dataclass(frozen=True)
class Lognormal:
    """Lognormal token counts with the given median (tokens) and sigma (of ln tokens), clipped.

    Clipped, not truncated: draws below `min_tokens` become `min_tokens` and draws above
    `max_tokens` become `max_tokens` (probability mass piles up at the bounds; nothing is
    redrawn or renormalised), then they are rounded to the nearest whole token.
    `max_tokens=None` means no cap.
    """

    median: float
    sigma: float
    min_tokens: int = 1
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        owner = "Lognormal"
        object.__setattr__(
            self, "median", _real(owner, "median", self.median, low=0.0, low_inclusive=False)
        )
        sigma = _real(owner, "sigma", self.sigma, low=0.0, low_inclusive=True)
        if sigma > _MAX_SIGMA:
            raise InputError(
                f"Lognormal.sigma must be at most {_MAX_SIGMA:g} (of ln tokens: draws already "
                f"spread over a factor e^{_MAX_SIGMA:g} either side of the median); got {sigma!r}. "
                "Pass a sigma such as 1.0."
            )
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "min_tokens", _whole(owner, "min_tokens", self.min_tokens, 1))
        if self.max_tokens is not None:
            top = _whole(owner, "max_tokens", self.max_tokens, 1)
            if top < self.min_tokens:
                raise InputError(
                    f"Lognormal.max_tokens must be >= min_tokens ({self.min_tokens}); got {top}. "
                    "Raise max_tokens or lower min_tokens."
                )
            object.__setattr__(self, "max_tokens", top)

    @property
    def _top(self) -> float:
        return float(self.max_tokens) if self.max_tokens is not None else float(_CEILING_TOKENS)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` draws, int64 in [min_tokens, max_tokens]."""
        draws = rng.lognormal(mean=math.log(self.median), sigma=self.sigma, size=_count(n))
        return np.rint(np.clip(draws, self.min_tokens, self._top)).astype(np.int64)

    @property
    def mean(self) -> float:
        """Mean of the clipped continuous lognormal, in closed form.

        Rounding to whole tokens is ignored: it moves the mean by well under half a token.
        """
        low, high = float(self.min_tokens), self._top
        if self.sigma == 0.0:
            return min(max(self.median, low), high)
        mu, s = math.log(self.median), self.sigma
        body = math.exp(mu + s * s / 2.0)
        z_low, z_high = (math.log(low) - mu) / s, (math.log(high) - mu) / s
        below = low * _normal_cdf(z_low)
        above = high * _normal_cdf(-z_high)
        inside = body * (_normal_cdf(z_high - s) - _normal_cdf(z_low - s))
        return below + inside + above


@dataclass(frozen=True, eq=False)
class Empirical:
    """Resamples the given token counts uniformly, with replacement (e.g. a trace's column)."""

    values: np.ndarray

    def __post_init__(self) -> None:
        array = np.asarray(self.values)
        if array.ndim != 1 or array.size == 0:
            raise InputError(
                f"Empirical.values must be a non-empty 1-D list of token counts; got shape "
                f"{array.shape}. Pass e.g. a trace's prompt_tokens column."
            )
        if array.dtype.kind not in "iuf" or array.dtype.kind == "b":
            raise InputError(
                f"Empirical.values must be whole numbers of tokens; got dtype {array.dtype}. "
                "Pass integers."
            )
        bad = ~np.isfinite(array) | (array != np.round(array)) | (array < 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"Empirical.values must be whole numbers >= 1; got {array[i].item()!r} at index "
                f"{i}. Drop or fix that value."
            )
        column = np.array(array, dtype=np.int64, copy=True)
        column.setflags(write=False)
        object.__setattr__(self, "values", column)

    def __repr__(self) -> str:
        return f"Empirical(n_values={len(self.values)}, mean={self.mean:.1f})"

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` values drawn uniformly with replacement."""
        index = rng.integers(0, len(self.values), size=_count(n))
        return self.values[index]

    @property
    def mean(self) -> float:
        """Mean of the values, exactly."""
        return float(self.values.mean())


ZipfPart = Literal["total", "prefill", "decode"]
_ZIPF_MAX_ITEMS = 10_000_000
_VIDUR_EPS = 1e-8


@dataclass(frozen=True)
class Zipf:
    """Vidur's Zipf length generator (vidur 0.0.26, `ZipfRequestLengthGenerator`), vectorised.

    Vidur draws a *total* length T in [min_tokens, max_tokens] with Gray et al.'s (SIGMOD 1994)
    fast Zipf approximation (skew `theta`, in (0, 1)), keeping Vidur's exact formulas, including
    its zeta sums over ranks 1..count-1 (`utils/zipf_generator.py`). It then splits T into
    prefill = int(T - T/(1+r)) and decode = int(T/(1+r)) with r = `prefill_to_decode_ratio`.
    `part` picks which of the three this distribution returns (at least 1). Vidur's defaults
    (min 1024, max 4096, theta 0.6, r 20, scramble off) give means of about 1,843 prefill and
    91.7 decode tokens; see `vidur_prompt` and `vidur_output`.

    Assumptions: `scramble=True` is not supported (Vidur hashes with Python's per-process
    salted `hash`, so it is not reproducible). In a `Mix` the prompt and output are drawn
    independently, so the perfect prompt/output correlation of Vidur's single draw is lost;
    the means are kept.
    """

    min_tokens: int = 1024
    max_tokens: int = 4096
    theta: float = 0.6
    part: ZipfPart = "total"
    prefill_to_decode_ratio: float = 20.0
    _mean: float = field(init=False, repr=False, compare=False, default=0.0)

    def __post_init__(self) -> None:
        owner = "Zipf"
        low = _whole(owner, "min_tokens", self.min_tokens, 1)
        high = _whole(owner, "max_tokens", self.max_tokens, 1)
        if high < low:
            raise InputError(
                f"Zipf.max_tokens must be >= min_tokens ({low}); got {high}. Raise max_tokens."
            )
        if high - low + 1 > _ZIPF_MAX_ITEMS:
            raise InputError(
                f"Zipf: max_tokens - min_tokens + 1 must be <= {_ZIPF_MAX_ITEMS:,}; got "
                f"{high - low + 1:,}. Narrow the range."
            )
        theta = _real(owner, "theta", self.theta, low=0.0, low_inclusive=False)
        if theta >= 1.0:
            raise InputError(
                f"Zipf.theta must be in (0, 1) (Gray's approximation needs it); got {theta}. "
                "Vidur's default is 0.6."
            )
        if self.part not in ("total", "prefill", "decode"):
            raise InputError(
                f"Zipf.part must be one of total, prefill, decode; got {self.part!r}. "
                "Use 'prefill' for prompts and 'decode' for outputs."
            )
        ratio = _real(
            owner,
            "prefill_to_decode_ratio",
            self.prefill_to_decode_ratio,
            low=0.0,
            low_inclusive=False,
        )
        object.__setattr__(self, "min_tokens", low)
        object.__setattr__(self, "max_tokens", high)
        object.__setattr__(self, "theta", theta)
        object.__setattr__(self, "prefill_to_decode_ratio", ratio)
        object.__setattr__(self, "_mean", self._exact_mean())

    @classmethod
    def vidur_prompt(cls, prefill_to_decode_ratio: float = 20.0) -> Zipf:
        """Vidur's default benchmark prompts: zipf up to 4,096 total tokens, mean ~1,843."""
        return cls(part="prefill", prefill_to_decode_ratio=prefill_to_decode_ratio)

    @classmethod
    def vidur_output(cls, prefill_to_decode_ratio: float = 20.0) -> Zipf:
        """Vidur's default benchmark outputs: total / (1 + 20), mean ~91.7 tokens."""
        return cls(part="decode", prefill_to_decode_ratio=prefill_to_decode_ratio)

    @property
    def _items(self) -> int:
        return self.max_tokens - self.min_tokens + 1

    def _constants(self) -> tuple[float, float, float]:
        """(zetan, eta, alpha) exactly as Vidur's ZipfGenerator computes them."""
        items, theta = self._items, self.theta
        zetan = float(np.sum(1.0 / np.power(np.arange(1, items, dtype=np.float64), theta)))
        zeta_2 = 1.0  # Vidur's _zeta(2, theta) sums rank 1 only
        alpha = 1.0 / (1.0 - theta)
        eta = (1.0 - (2.0 / items) ** (1.0 - theta)) / (1.0 - zeta_2 / (zetan + _VIDUR_EPS))
        return zetan, eta, alpha

    def _split(self, total: npt.NDArray[np.int64]) -> np.ndarray:
        if self.part == "total":
            out = total
        else:
            decode = total / (1.0 + self.prefill_to_decode_ratio)
            chosen = total - decode if self.part == "prefill" else decode
            out = np.trunc(chosen).astype(np.int64)
        return np.maximum(out, 1).astype(np.int64)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` draws (one uniform each, as in Vidur), int64 >= 1."""
        u = rng.random(_count(n))
        zetan, eta, alpha = self._constants()
        uz = u * zetan
        base = np.maximum(eta * u - eta + 1.0, 0.0)
        rank = np.floor(self._items * np.power(base, alpha))
        rank = np.where(uz < 1.0 + 0.5**self.theta, 1.0, rank)
        rank = np.where(uz < 1.0, 0.0, rank)
        total = self.min_tokens + np.minimum(rank, self._items - 1).astype(np.int64)
        return self._split(total)

    def _exact_mean(self) -> float:
        """Mean over the sampler's exact probability mass function (from its u breakpoints)."""
        items = self._items
        totals = self.min_tokens + np.arange(items, dtype=np.int64)
        if items <= 2:  # Vidur's zetan <= 1: every draw takes the first branch, T = min
            return float(self._split(totals[:1])[0])
        zetan, eta, alpha = self._constants()
        u_first = min(1.0 / zetan, 1.0)
        u_second = min((1.0 + 0.5**self.theta) / zetan, 1.0)
        ranks = np.arange(items + 1, dtype=np.float64)
        # rank >= k on the third branch iff u >= t_k, since eta*u - eta + 1 >= (k/items)^(1/alpha)
        t = 1.0 - (1.0 - np.power(ranks / items, 1.0 / alpha)) / eta
        survival = np.clip(1.0 - np.maximum(u_second, t), 0.0, None)
        survival[0] = 1.0 - u_second  # draws whose base clips at 0 still land on rank 0
        pmf = survival[:-1] - survival[1:]
        pmf[0] += u_first
        pmf[1] += u_second - u_first
        values = self._split(totals).astype(np.float64)
        return float(np.dot(pmf, values) / pmf.sum())

    @property
    def mean(self) -> float:
        """Exact mean over the sampler's probability mass function (computed once)."""
        return self._mean


LENGTH_DISTRIBUTIONS: dict[
    str, type[Fixed] | type[Lognormal] | type[Empirical] | type[Zipf] | type[Uniform]
] = {
    "empirical": Empirical,
    "fixed": Fixed,
    "lognormal": Lognormal,
    "uniform": Uniform,
    "zipf": Zipf,
}


def _empirical_from_trace(spec: Mapping[str, Any]) -> Empirical:
    from megawatt.workload.traces import BUILTIN_TRACES, builtin_trace

    columns = ("prompt_tokens", "output_tokens", "cached_tokens", "new_prompt_tokens")
    extra = sorted(set(spec) - {"kind", "trace", "column"})
    if extra:
        raise InputError(
            f"length spec kind 'empirical' with 'trace' takes keys trace, column; got unknown "
            f"{extra}. Remove them."
        )
    name, column = spec.get("trace"), spec.get("column")
    if not isinstance(name, str) or name not in BUILTIN_TRACES:
        raise InputError(
            f"length spec trace must be one of {', '.join(sorted(BUILTIN_TRACES))}; got "
            f"{name!r}. Pick a built-in trace or pass values."
        )
    if not isinstance(column, str) or column not in columns:
        raise InputError(
            f"length spec column must be one of {', '.join(columns)}; got {column!r}. "
            "Name the trace column to resample."
        )
    requests = builtin_trace(str(name))
    if column == "new_prompt_tokens":
        return Empirical(requests.prompt_tokens - requests.cached_tokens)
    values = getattr(requests, str(column))
    if column == "cached_tokens":
        values = values[values > 0]
    return Empirical(values)


def length_distribution(spec: Mapping[str, Any]) -> LengthDistribution:
    """Build a length distribution from a dict such as
    `{"kind": "lognormal", "median": 1000, "sigma": 1.0, "max_tokens": 32768}`.

    Kinds: `fixed` (n_tokens), `uniform` (min_tokens, max_tokens: whole numbers, both
    included), `lognormal` (median, sigma, min_tokens, max_tokens), `empirical`
    (values; or trace + column to resample a built-in trace's `prompt_tokens`, `output_tokens`,
    `new_prompt_tokens` or non-zero `cached_tokens`), `zipf` (min_tokens, max_tokens, theta,
    part, prefill_to_decode_ratio). Unknown kinds and keys are errors.
    """
    if not isinstance(spec, Mapping):
        raise InputError(
            f"a length spec must be a mapping with a 'kind'; got {spec!r}. Write e.g. "
            "{kind: lognormal, median: 1000, sigma: 1.0}."
        )
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in LENGTH_DISTRIBUTIONS:
        raise InputError(
            f"length spec kind must be one of {', '.join(sorted(LENGTH_DISTRIBUTIONS))}; got "
            f"{kind!r}. Set 'kind' to a known one."
        )
    if kind == "empirical" and "trace" in spec:
        return _empirical_from_trace(spec)
    cls = LENGTH_DISTRIBUTIONS[str(kind)]
    params = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {key: value for key, value in spec.items() if key != "kind"}
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise InputError(
            f"length spec kind {kind!r} takes keys {', '.join(params)}; got unknown {unknown}. "
            "Remove or rename them."
        )
    missing = [
        name
        for name, f in params.items()
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and name not in kwargs
    ]
    if missing:
        raise InputError(
            f"length spec kind {kind!r} needs keys {', '.join(missing)}; got {sorted(kwargs)}. "
            "Add them."
        )
    distribution: LengthDistribution = cls(**kwargs)
    return distribution
