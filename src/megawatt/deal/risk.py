"""Uncertainty becomes risk: a Latin hypercube (scipy.stats.qmc, seeded) draws demand growth,
the drift of the class mix, the electricity price, delivery slips per supplier and the
performance model's own error per hardware; each draw operates a plan's fixed purchases at
least cost (a linear program). Out come the chance of a shortfall per period, the spread of
cost per million tokens, stranded MW, and a tornado of the inputs that move the answer most.

The model's error is `megawatt validate`'s leave-one-out error, read from the packaged
calibration file: for each device, the root mean square of log(cv_predicted / measured) over
its throughput rows (its vendor's, or every device of its family's, when it has fewer than
`MIN_ROWS`); a draw multiplies each device's throughput by exp(sigma z), z standard normal.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from megawatt.deal.optimise import Solution, npv, solve
from megawatt.deal.problem import Problem
from megawatt.deal.spec import Plan, RangeSpec
from megawatt.errors import CatalogError
from megawatt.hardware import Catalog
from megawatt.interrupts import worker_pool
from megawatt.perf import family_of
from megawatt.perf.efficiency import CALIBRATION_FILE

MIN_ROWS = 10
"""Fewest leave-one-out rows for a device's own error spread; fewer: its vendor's rows."""
THROUGHPUT_METRICS = ("output_tokens_per_s",)
FALLBACK_METRICS = ("output_tokens_per_s_per_user",)  # wafers: only per-user speed is published
TORNADO_QUANTILES = (0.1, 0.9)


@dataclass(frozen=True)
class ErrorSpread:
    """The spread of the model's throughput error for a device (sigma of the log error), the
    rows it rests on and which (`device`, `vendor NAME`, `family NAME`)."""

    device: str
    sigma: float
    n_rows: int
    basis: str


@cache
def _residuals() -> tuple[dict[str, Any], ...]:
    document = json.loads(resources.files("megawatt").joinpath(CALIBRATION_FILE).read_text())
    return tuple(document.get("residuals", ()))


def error_spread(device_id: str, catalog: Catalog) -> ErrorSpread:
    """The leave-one-out error spread of throughput predictions for a device."""
    device = catalog.device(device_id)
    rows = [r for r in _residuals() if r.get("cv_predicted") and r.get("measured")]

    def vendor(hw: str) -> str:
        try:
            return catalog.device(hw).vendor
        except CatalogError:
            return ""

    def family(hw: str) -> str:
        try:
            return family_of(catalog.device(hw).kind)
        except CatalogError:
            return ""

    bases: list[tuple[str, Callable[[str], bool]]] = [
        ("device", lambda hw: hw == device.id),
        (f"vendor {device.vendor}", lambda hw: vendor(hw) == device.vendor),
        (f"family {family_of(device.kind)}", lambda hw: family(hw) == family_of(device.kind)),
    ]
    for metrics in (THROUGHPUT_METRICS, FALLBACK_METRICS):
        for i, (basis, match) in enumerate(bases):
            chosen = [r for r in rows if r["metric"] in metrics and match(r["hardware"])]
            if len(chosen) >= (MIN_ROWS if i < len(bases) - 1 else 1):
                logs = np.log(np.array([r["cv_predicted"] / r["measured"] for r in chosen], float))
                label = basis + ("" if metrics == THROUGHPUT_METRICS else " (per-user speed)")
                return ErrorSpread(device.id, float(np.sqrt(np.mean(logs**2))), len(chosen), label)
    return ErrorSpread(device.id, 0.0, 0, "none")


@dataclass(frozen=True)
class Draw:
    """One draw of the uncertain inputs."""

    growth: float
    drift: float
    electricity: float
    slip: tuple[int, ...]  # periods late, per supplier
    error: tuple[float, ...]  # throughput multiplier, per device


@dataclass(frozen=True)
class Uncertain:
    """One uncertain input: a name and the value at a quantile."""

    name: str
    value_at: Callable[[float], float]


def _triangular(r: RangeSpec) -> Callable[[float], float]:
    from scipy.stats import triang  # scipy.stats takes a quarter second to import: only when used

    if r.high <= r.low:
        return lambda u: r.base
    c = (r.base - r.low) / (r.high - r.low)
    return lambda u: float(triang.ppf(u, c, loc=r.low, scale=r.high - r.low))


def inputs(plan: Plan, problem: Problem, spreads: Sequence[ErrorSpread]) -> list[Uncertain]:
    """The uncertain inputs, in the hypercube's column order: growth, drift, electricity, one
    slip per supplier (in periods), one throughput error per device."""
    unc = plan.uncertainty
    out = [
        Uncertain("demand growth per year", _triangular(unc.demand_growth_per_year)),
        Uncertain("mix drift per year", _triangular(unc.mix_drift_per_year)),
        Uncertain("electricity price factor", _triangular(unc.electricity_price_factor)),
    ]
    for name in problem.suppliers:
        r = unc.delivery_slip_quarters.get(name, RangeSpec(low=0, base=0, high=0))
        quarters = _triangular(r)
        per = plan.quarters_per_period
        out.append(
            Uncertain(
                f"{name} delivery slip",
                lambda u, q=quarters, p=per: float(math.floor(q(u) / p + 0.5)),  # type: ignore[misc]
            )
        )
    from scipy.stats import norm

    scale = unc.model_error_scale
    for spread in spreads:
        sigma = spread.sigma * scale
        out.append(
            Uncertain(
                f"{spread.device} model error",
                lambda u, s=sigma: float(math.exp(s * norm.ppf(min(max(u, 1e-9), 1 - 1e-9)))) if s else 1.0,  # type: ignore[misc]
            )
        )
    return out


def _draw(values: Sequence[float], n_suppliers: int) -> Draw:
    return Draw(
        float(values[0]),
        float(values[1]),
        float(values[2]),
        tuple(int(v) for v in values[3 : 3 + n_suppliers]),
        tuple(float(v) for v in values[3 + n_suppliers :]),
    )


def sample(uncertain: Sequence[Uncertain], n_suppliers: int, n: int, seed: int) -> list[Draw]:
    """`n` draws: a scrambled Latin hypercube seeded by `seed`, each column through its
    input's quantile function."""
    from scipy.stats import qmc

    cube = qmc.LatinHypercube(d=len(uncertain), rng=np.random.default_rng([seed, 7])).random(n)
    return [
        _draw([inp.value_at(float(u)) for inp, u in zip(uncertain, row, strict=True)], n_suppliers)
        for row in cube
    ]


def base_draw(plan: Plan, uncertain: Sequence[Uncertain], n_suppliers: int) -> Draw:
    """Every input at its base: the plan's growth and drift, no price change, the base slips,
    no model error."""
    unc = plan.uncertainty
    values = [unc.demand_growth_per_year.base, unc.mix_drift_per_year.base, unc.electricity_price_factor.base]
    values += [inp.value_at(_base_quantile(plan, inp.name)) for inp in uncertain[3 : 3 + n_suppliers]]
    values += [1.0] * (len(uncertain) - 3 - n_suppliers)
    return _draw(values, n_suppliers)


def _base_quantile(plan: Plan, name: str) -> float:
    from scipy.stats import triang

    supplier = name.removesuffix(" delivery slip")
    r = plan.uncertainty.delivery_slip_quarters.get(supplier)
    if r is None or r.high <= r.low:
        return 0.5
    return float(triang.cdf(r.base, (r.base - r.low) / (r.high - r.low), loc=r.low, scale=r.high - r.low))


def apply(problem: Problem, draw: Draw) -> Problem:
    """The problem under a draw: demand, throughput, electricity and slips replaced."""
    assert problem.demand_model is not None
    error = np.asarray(draw.error, float) if draw.error else np.ones(len(problem.devices))
    multiplier = error[problem.device_of][:, :, None, None]
    return dataclasses.replace(
        problem,
        demand=problem.demand_model.demand(draw.growth, draw.drift),
        rate=problem.rate * multiplier,
        electricity_factor=draw.electricity,
        slip=np.asarray(draw.slip, np.int64),
    )


@dataclass(frozen=True)
class Outcome:
    """A plan's purchases operated under one draw: NPV of cost and penalty (USD) and per
    period figures."""

    npv_cost: float
    npv_penalty: float
    period_cost: np.ndarray  # (T,) USD
    penalty: np.ndarray  # (T,) USD
    delivered_tokens: np.ndarray  # (T,)
    shortfall: np.ndarray  # (T,) bool
    stranded_mw: np.ndarray  # (T,)
    installed_mw: np.ndarray  # (T,)
    used_mw: np.ndarray  # (T,)
    demand: np.ndarray  # (T,) tokens/s at the peak hour, all classes
    served: np.ndarray  # (T,) tokens/s served by the fleet
    overflow: np.ndarray  # (T,) tokens/s

    @property
    def period_usd_per_m_tokens(self) -> np.ndarray:
        """(T,) USD per million output tokens delivered in each period (NaN where none)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            out: np.ndarray = np.where(
                self.delivered_tokens > 0, self.period_cost / (self.delivered_tokens / 1e6), np.nan
            )
        return out

    @property
    def npv_total(self) -> float:
        """Cost and penalty."""
        return self.npv_cost + self.npv_penalty

    @property
    def capacity(self) -> np.ndarray:
        """(T,) tokens/s the fleet could serve at the peak hour: what it served, plus its idle MW
        at the tokens per MW it served at (an estimate: idle MW serve the same mix)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            per_mw = np.where(self.used_mw > 0, self.served / self.used_mw, 0.0)
        out: np.ndarray = self.served + self.stranded_mw * per_mw
        return out

    @property
    def usd_per_m_tokens(self) -> float:
        """USD per million output tokens delivered over the horizon (undiscounted)."""
        tokens = float(self.delivered_tokens.sum())
        return float(self.period_cost.sum()) / (tokens / 1e6) if tokens > 0 else math.nan


def outcome(problem: Problem, solution: Solution) -> Outcome:
    """A solution's figures under its problem."""
    return Outcome(
        npv_cost=npv(problem, solution.period_cost),
        npv_penalty=npv(problem, solution.penalty),
        period_cost=solution.period_cost,
        penalty=solution.penalty,
        delivered_tokens=solution.delivered_tokens,
        shortfall=solution.shortfall(problem.demand),
        stranded_mw=solution.stranded_mw,
        installed_mw=solution.installed_mw.sum(axis=(0, 1)),
        used_mw=solution.served_mw.sum(axis=(0, 1, 2)),
        demand=problem.demand.sum(axis=0),
        served=solution.served.sum(axis=0),
        overflow=solution.overflow.sum(axis=0),
    )


def operate(problem: Problem, blocks: np.ndarray, draw: Draw) -> Outcome:
    """A plan's purchases under one draw, operated at least cost."""
    drawn = apply(problem, draw)
    return outcome(drawn, solve(drawn, fixed_blocks=blocks))


def _chunk(problem: Problem, plans: dict[str, np.ndarray], draws: Sequence[Draw]) -> list[dict[str, Outcome]]:
    return [{name: operate(problem, blocks, d) for name, blocks in plans.items()} for d in draws]


Progress = Callable[[int, int], None]


def run_draws(
    problem: Problem,
    plans: dict[str, np.ndarray],
    draws: Sequence[Draw],
    *,
    workers: int = 1,
    progress: Progress | None = None,
    chunk: int = 8,
) -> dict[str, list[Outcome]]:
    """Every plan under every draw, in `workers` processes (chunks of draws; the result does not
    depend on how they are scheduled)."""
    parts = [list(draws[i : i + chunk]) for i in range(0, len(draws), chunk)]
    results: list[list[dict[str, Outcome]] | None] = [None] * len(parts)
    done = 0
    if workers <= 1 or len(parts) <= 1:
        for i, part in enumerate(parts):
            results[i] = _chunk(problem, plans, part)
            done += len(part)
            if progress:
                progress(done, len(draws))
    else:
        with worker_pool(min(workers, len(parts))) as pool:
            futures = {pool.submit(_chunk, problem, plans, part): i for i, part in enumerate(parts)}
            for fut in as_completed(futures):
                i = futures[fut]
                results[i] = fut.result()
                done += len(parts[i])
                if progress:
                    progress(done, len(draws))
    flat = [row for part in results if part is not None for row in part]
    return {name: [row[name] for row in flat] for name in plans}


@dataclass(frozen=True)
class Bar:
    """One input's swing of the answer: the answer (USD) with the input at its low and high
    quantile, every other input at its base."""

    name: str
    low_value: float
    high_value: float
    answer_low: float
    answer_high: float

    @property
    def swing(self) -> float:
        """|answer_high - answer_low|."""
        return abs(self.answer_high - self.answer_low)


def tornado(
    plan: Plan,
    problem: Problem,
    blocks: np.ndarray,
    uncertain: Sequence[Uncertain],
    base: Draw,
) -> tuple[float, list[Bar]]:
    """The answer (NPV of cost and penalty of `blocks`) at the base draw, and each input's swing
    between its 10th and 90th percentile with the others at base, largest swing first. Inputs
    that do not vary are left out."""
    n_s = len(problem.suppliers)
    base_values = [base.growth, base.drift, base.electricity, *base.slip, *base.error]
    answer = operate(problem, blocks, base).npv_total
    bars = []
    for i, inp in enumerate(uncertain):
        lo, hi = (inp.value_at(q) for q in TORNADO_QUANTILES)
        if math.isclose(lo, hi):
            continue
        results = []
        for value in (lo, hi):
            values = list(base_values)
            values[i] = value
            results.append(operate(problem, blocks, _draw(values, n_s)).npv_total)
        bars.append(Bar(inp.name, lo, hi, results[0], results[1]))
    bars.sort(key=lambda bar: (-bar.swing, bar.name))
    return answer, bars
