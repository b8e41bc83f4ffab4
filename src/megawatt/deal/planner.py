"""A plan end to end: capacities from the simulator, the coefficients, the optimised plan, the
deal as announced and the best plan without it, each under the Monte Carlo draws, a tornado of
the inputs that move the answer, and the verdict on the deal.

Three plans (when the plan has a deal): `optimised` (the deal's tranches are options), `fixed`
(the seed deal as announced: every tranche taken; the rest bought at best) and `alternative`
(no deal). The value of flexibility is `fixed - optimised`; the value of the deal is
`alternative - fixed` (positive: the deal beats the best alternative).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from megawatt.deal.capacity import CapacitySource, PoolCapacity, SimulatedCapacity
from megawatt.deal.optimise import Solution, binding, npv, solve
from megawatt.deal.problem import DEAL_MODES, Problem, build_problem, capacity_tasks
from megawatt.deal.risk import (
    Bar,
    Draw,
    ErrorSpread,
    Outcome,
    base_draw,
    error_spread,
    inputs,
    outcome,
    run_draws,
    sample,
    tornado,
)
from megawatt.deal.spec import Figure, Plan, figures

Progress = Callable[[str, int, int, str], None]
"""`progress(phase, done, total, label)`: phase `capacity` counts capacity runs, `draws` counts
Monte Carlo draws."""

LABELS = {
    "optimised": "optimised (deal tranches as options)",
    "fixed": "deal as announced",
    "alternative": "best without the deal",
}


@dataclass(frozen=True)
class Buy:
    """One purchase of a plan: what, when, how much, what it costs and why."""

    period: str
    supplier: str
    generation: str
    it_mw: float
    usd: float  # purchase price, or contract payments over the horizon
    reason: str


@dataclass(frozen=True)
class PlanOutcome:
    """One plan: its deterministic solution, purchases with reasons, binding constraints per
    period and its outcomes under the draws."""

    name: str
    problem: Problem
    solution: Solution
    base: Outcome
    buys: tuple[Buy, ...]
    binding: dict[str, list[str]]
    draws: tuple[Outcome, ...]

    @property
    def label(self) -> str:
        """A human name."""
        return LABELS.get(self.name, self.name)

    def npv_totals(self) -> np.ndarray:
        """NPV of cost and penalty per draw (USD)."""
        return np.array([o.npv_total for o in self.draws])

    def p_shortfall(self) -> np.ndarray:
        """(T,) share of draws with unserved demand per period."""
        if not self.draws:
            return np.zeros(len(self.problem.period_labels))
        out: np.ndarray = np.mean([o.shortfall for o in self.draws], axis=0)
        return out


@dataclass(frozen=True)
class DealVerdict:
    """Is the deal better than the best alternative, and until when? (USD, NPV)"""

    value: float  # alternative - fixed, base inputs
    value_draws: np.ndarray  # per draw
    flexibility: float  # fixed - optimised, base inputs
    flexibility_draws: np.ndarray
    advantage_per_period: np.ndarray  # (T,) alternative - fixed, cost and penalty, base inputs
    advantage_per_period_median: np.ndarray  # (T,) over the draws
    break_even_usd_per_mw_year: float  # contract price at which the deal stops being better
    better_until: str | None  # the last period from which on the deal is never better per period

    @property
    def p_better(self) -> float:
        """Share of draws in which the deal beats the best alternative."""
        return float(np.mean(self.value_draws > 0)) if len(self.value_draws) else math.nan


@dataclass(frozen=True)
class PlanResult:
    """Everything `megawatt plan` reports."""

    plan: Plan
    capacities: tuple[PoolCapacity, ...]
    spreads: tuple[ErrorSpread, ...]
    outcomes: dict[str, PlanOutcome]
    draws: tuple[Draw, ...]
    answer: float  # the optimised plan's NPV (cost and penalty) at the base inputs
    bars: tuple[Bar, ...]
    verdict: DealVerdict | None
    figures: tuple[Figure, ...]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def main(self) -> PlanOutcome:
        """The optimised plan."""
        return self.outcomes["optimised"]


def _buys(problem: Problem, sol: Solution, name: str, plan: Plan) -> tuple[Buy, ...]:
    n_s, _, _, n_t = problem.shape
    bind = binding(problem, sol)
    out = []
    for t in range(n_t):
        for s in range(n_s):
            n = int(sol.blocks[s, t])
            if not n:
                continue
            g = int(problem.cohort[s, t])
            mw = n * problem.block_it_mw[s]
            label = problem.period_labels[t]
            reasons = []
            if s == problem.deal and name == "fixed":
                reasons.append(
                    "take-or-pay tranche" if problem.min_blocks[s, t] >= n else "deal option taken"
                )
            served = sol.served_mw[s, g, :, t]
            share = served / max(sol.installed_mw[s, g, t], 1e-9)
            classes = [
                f"{problem.classes[c]} {share[c]:.0%}" for c in np.argsort(-served) if served[c] > 1e-6
            ]
            if classes:
                reasons.append("serves " + ", ".join(classes))
            idle = sol.installed_mw[s, g, t] - served.sum()
            if idle > 1e-6:
                reasons.append(f"{idle:,.0f} MW of the generation idle on delivery")
            reasons += [
                b
                for b in bind[label]
                if b.startswith(problem.suppliers[s]) or b.endswith("power") or b == "budget"
            ]
            if problem.hosted[s]:
                usd = mw * problem.charge[s, t] * (n_t - t)
            else:
                usd = mw * problem.capex[s, t]
            out.append(
                Buy(label, problem.suppliers[s], problem.generations[s][g], mw, usd, "; ".join(reasons))
            )
    return tuple(out)


def _better_until(advantage: np.ndarray, labels: tuple[str, ...]) -> str | None:
    """The last period of the first run of periods where the deal is better, when it is never
    better after it; None when it is never better or better to the end."""
    better = advantage > 0
    if not better.any() or better[-1]:
        return None
    last = int(np.flatnonzero(better)[-1])
    return labels[last]


def _verdict(plan: Plan, outcomes: dict[str, PlanOutcome]) -> DealVerdict | None:
    if "fixed" not in outcomes or plan.deal is None:
        return None
    fixed, alt, opt = outcomes["fixed"], outcomes["alternative"], outcomes["optimised"]
    problem = fixed.problem
    per_fixed = fixed.solution.period_cost + fixed.solution.penalty
    per_alt = alt.solution.period_cost + alt.solution.penalty
    advantage = per_alt - per_fixed
    value = alt.base.npv_total - fixed.base.npv_total
    supplier = plan.deal.supplier
    if supplier.terms == "contract" and supplier.contract_usd_per_mw_year:
        deal = problem.deal
        mw_years = np.zeros(len(problem.period_labels))
        for tau in range(len(mw_years)):
            mw_years[tau:] += (
                fixed.solution.blocks[deal, tau] * problem.block_it_mw[deal] * problem.period_years
            )
        facility_mw_years = npv(problem, mw_years) * (supplier.pue or 1.0)
        break_even = (
            supplier.contract_usd_per_mw_year + value / facility_mw_years if facility_mw_years else math.nan
        )
    else:
        break_even = math.nan
    per_draw = [
        (a.period_cost + a.penalty) - (f.period_cost + f.penalty)
        for a, f in zip(alt.draws, fixed.draws, strict=True)
    ]
    median = np.median(per_draw, axis=0) if per_draw else advantage
    return DealVerdict(
        value=value,
        value_draws=alt.npv_totals() - fixed.npv_totals(),
        flexibility=fixed.base.npv_total - opt.base.npv_total,
        flexibility_draws=fixed.npv_totals() - opt.npv_totals(),
        advantage_per_period=advantage,
        advantage_per_period_median=np.asarray(median),
        break_even_usd_per_mw_year=break_even,
        better_until=_better_until(advantage, problem.period_labels),
    )


def run_plan(
    plan: Plan,
    *,
    capacity: CapacitySource | None = None,
    workers: int = 1,
    progress: Progress | None = None,
    draws: int | None = None,
) -> PlanResult:
    """Answer a plan. `capacity` gives the throughput of each (system, model, class) at its
    SLO (default: simulated as `megawatt run` does, in `workers` processes, nothing stored);
    `draws` overrides the plan's number of Monte Carlo draws."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    source = capacity or SimulatedCapacity(workers)

    def tick(done: int, total: int, label: str) -> None:
        if progress:
            progress("capacity", done, total, label)

    caps = source(plan, capacity_tasks(plan), tick)
    timings["capacity_s"] = time.perf_counter() - clock
    problem = build_problem(plan, caps)
    modes = DEAL_MODES if plan.deal is not None else ("optimised",)
    solutions: dict[str, tuple[Problem, Solution]] = {}
    for mode in modes:
        variant = problem.with_deal(mode)
        solutions[mode] = (variant, solve(variant))
        timings[f"solve_{mode}_s"] = solutions[mode][1].solve_s

    clock = time.perf_counter()
    catalog = plan.catalog()
    spreads = tuple(error_spread(d, catalog) for d in problem.devices)
    uncertain = inputs(plan, problem, spreads)
    n_s = len(problem.suppliers)
    n_draws = draws if draws is not None else plan.uncertainty.draws
    drawn = sample(uncertain, n_s, n_draws, plan.seed)

    def tick_draws(done: int, total: int) -> None:
        if progress:
            progress("draws", done, total, "Monte Carlo draws")

    results = run_draws(
        problem,
        {m: sol.blocks for m, (_, sol) in solutions.items()},
        drawn,
        workers=workers,
        progress=tick_draws,
    )
    base = base_draw(plan, uncertain, n_s)
    answer, bars = tornado(plan, problem, solutions["optimised"][1].blocks, uncertain, base)
    timings["risk_s"] = time.perf_counter() - clock
    outcomes = {
        mode: PlanOutcome(
            mode,
            variant,
            sol,
            outcome(variant, sol),
            _buys(variant, sol, mode, plan),
            binding(variant, sol),
            tuple(results[mode]),
        )
        for mode, (variant, sol) in solutions.items()
    }
    return PlanResult(
        plan=plan,
        capacities=tuple(caps.values()),
        spreads=spreads,
        outcomes=outcomes,
        draws=tuple(drawn),
        answer=answer,
        bars=tuple(bars),
        verdict=_verdict(plan, outcomes),
        figures=tuple(figures(plan)),
        timings=timings,
    )
