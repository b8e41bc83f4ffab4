"""The optimiser on tiny hand-made problems: its optimum is the best of every purchase plan
enumerated, tightening a constraint never lowers the cost, a free supplier is bought up to its
cap, and forced tranches that no plan can honour are a one-line error naming the constraint."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.deal.optimise import cash, solve
from megawatt.deal.problem import Problem
from megawatt.errors import PlanError

HOURS = 0.25 * 8766.0


def make_problem(
    *,
    n_t: int = 3,
    hosted: tuple[bool, ...] = (True, False),
    block: tuple[float, ...] = (1.0, 1.0),
    max_blocks: int = 2,
    charge: tuple[float, ...] = (3e6, 1e6),
    capex: tuple[float, ...] = (0.0, 20e6),
    rate: np.ndarray | None = None,
    demand: np.ndarray | None = None,
    site_mw: float = 2.5,
    budget: float = math.inf,
    cap: float = 1.0,
) -> Problem:
    """Two suppliers (a contract and a purchase placed at one site), one generation each, one
    class unless `rate` and `demand` say otherwise; quarters discounted at 8% a year."""
    n_s = len(hosted)
    demand = np.array([[1.0e6, 2.0e6, 3.5e6]])[:, :n_t] if demand is None else demand
    n_c = demand.shape[0]
    rate = (
        np.ones((n_s, 1, n_c, n_t)) * np.array([0.6e6, 1.0e6])[:n_s, None, None, None]
        if rate is None
        else rate
    )
    return Problem(
        period_labels=tuple(f"2026Q{t + 1}" for t in range(n_t)),
        period_years=0.25,
        discount=1.08 ** -((np.arange(n_t) + 0.5) * 0.25),
        suppliers=tuple(f"S{s}" for s in range(n_s)),
        hosted=np.array(hosted),
        block_it_mw=np.array(block, float),
        min_blocks=np.zeros((n_s, n_t), np.int64),
        max_blocks=np.full((n_s, n_t), max_blocks, np.int64),
        cohort=np.zeros((n_s, n_t), np.int64),
        generations=tuple(("g",) for _ in range(n_s)),
        charge=np.repeat(np.array(charge, float)[:, None], n_t, axis=1),
        capex=np.repeat(np.array(capex, float)[:, None], n_t, axis=1),
        power_share=np.full((n_s, 1), 0.8),
        idle_share=np.full((n_s, 1), 0.3),
        rate=rate,
        classes=tuple(f"c{c}" for c in range(n_c)),
        demand=demand,
        tokens_per_rate=np.full(n_c, 0.25 * 3.15576e7 / 1.5),
        overflow_price=np.full((n_c, n_t), 2.0),
        overflow_max_share=0.25,
        unserved_price=np.full((n_c, n_t), 20.0),
        sites=("site",),
        site_pue=np.array([1.2]),
        site_mw=np.full((1, n_t), site_mw),
        electricity=np.array([70.0]),
        site_charge=np.array([0.5e6]),
        concentration_cap=cap,
        concentration_from=0,
        year_of_period=np.zeros(n_t, np.int64),
        budget=np.array([budget]),
    )


def _enumerated_cost(p: Problem, blocks: np.ndarray) -> float:
    """The cost of a purchase plan for one class (a contract S0, a purchase S1 at one site),
    worked out by hand: the contract serves first (its power is in its price), then the
    purchase (each MW in use adds its power above idle), then the overflow up to its cap, the
    rest is unserved. inf when it breaks a site, budget or share constraint."""
    n_s, _, _, n_t = p.shape
    inst = np.cumsum(blocks * p.block_it_mw[:, None], axis=1)
    owned = ~p.hosted
    if (inst[owned].sum(axis=0) * p.site_pue[0] > p.site_mw[0] + 1e-9).any():
        return math.inf
    if cash(p, blocks)[0] > p.budget[0] + 1e-6:
        return math.inf
    if p.concentration_cap < 1 and (inst > p.concentration_cap * inst.sum(axis=0) + 1e-9).any():
        return math.inf
    total = 0.0
    assert p.hosted.tolist() == [True, False]
    for t in range(n_t):
        d = p.demand[0, t]
        by_contract = min(d, p.rate[0, 0, 0, t] * inst[0, t])
        by_purchase = min(d - by_contract, p.rate[1, 0, 0, t] * inst[1, t])
        in_use = by_purchase / p.rate[1, 0, 0, t]
        served = by_contract + by_purchase
        over = min(d - served, p.overflow_max_share * d)
        short = d - served - over
        money = sum(
            blocks[s, tau] * p.block_it_mw[s] * p.charge[s, tau] for s in range(n_s) for tau in range(t + 1)
        )
        money += inst[owned, t].sum() * p.site_pue[0] * (0.3 * p.electricity[0] * HOURS + p.site_charge[0])
        money += in_use * p.site_pue[0] * 0.5 * p.electricity[0] * HOURS
        tokens = p.tokens_per_rate[0]
        money += (over * p.overflow_price[0, t] + short * p.unserved_price[0, t]) * tokens / 1e6
        total += p.discount[t] * money
    return total


def _plans(p: Problem) -> list[np.ndarray]:
    n_s, _, _, n_t = p.shape
    choices = range(int(p.max_blocks.max()) + 1)
    return [np.array(c).reshape(n_s, n_t) for c in itertools.product(choices, repeat=n_s * n_t)]


@pytest.mark.parametrize(
    "options",
    [{}, {"site_mw": 1.3}, {"budget": 45e6}, {"cap": 0.6}, {"charge": (1.5e6, 2.5e6)}],
    ids=["free", "small site", "budget", "share cap", "prices swapped"],
)
def test_the_milp_optimum_is_the_best_enumerated_plan(options: dict[str, object]) -> None:
    p = make_problem(**options)  # type: ignore[arg-type]
    best = min(_enumerated_cost(p, blocks) for blocks in _plans(p))
    got = solve(p)
    assert math.isfinite(best)
    assert got.objective == pytest.approx(best, rel=1e-6)
    assert _enumerated_cost(p, got.blocks) == pytest.approx(best, rel=1e-6)


def test_with_two_classes_the_milp_matches_operating_every_enumerated_plan() -> None:
    rate = np.zeros((2, 1, 2, 3))
    rate[0, 0, 0], rate[0, 0, 1] = 0.6e6, 0.3e6  # the contract serves both classes
    rate[1, 0, 0] = 1.2e6  # the purchase only the first (the second's SLO is too tight for it)
    demand = np.array([[0.8e6, 1.5e6, 2.5e6], [0.2e6, 0.3e6, 0.5e6]])
    p = make_problem(rate=rate, demand=demand)
    costs = []
    for blocks in _plans(p):
        inst = np.cumsum(blocks, axis=1)
        if (inst[1] * 1.2 > p.site_mw[0] + 1e-9).any():
            continue
        costs.append(solve(p, fixed_blocks=blocks).objective)
    assert solve(p).objective == pytest.approx(min(costs), rel=1e-6)


def test_operating_the_optimum_costs_what_the_milp_said() -> None:
    p = make_problem()
    best = solve(p)
    again = solve(p, fixed_blocks=best.blocks)
    assert again.objective == pytest.approx(best.objective, rel=1e-9)
    npv = float(np.sum(p.discount * (again.period_cost + again.penalty)))
    assert npv == pytest.approx(best.objective, rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    which=st.sampled_from(["cap", "budget", "site", "supply"]),
    tighter=st.floats(0.3, 0.95),
)
def test_tightening_a_constraint_never_lowers_the_cost(seed: int, which: str, tighter: float) -> None:
    rng = np.random.default_rng(seed)
    p = make_problem(
        charge=tuple(rng.uniform(0.5e6, 4e6, 2)),
        demand=np.sort(rng.uniform(0.5e6, 4e6, (1, 3)), axis=1),
        site_mw=float(rng.uniform(1.0, 4.0)),
        budget=float(rng.uniform(40e6, 120e6)),
        cap=float(rng.uniform(0.5, 1.0)),
        max_blocks=3,
    )
    base = solve(p).objective
    if which == "cap":
        q = replace(p, concentration_cap=p.concentration_cap * tighter)
    elif which == "budget":
        q = replace(p, budget=p.budget * tighter)
    elif which == "site":
        q = replace(p, site_mw=p.site_mw * tighter)
    else:
        q = replace(p, max_blocks=np.floor(p.max_blocks * tighter).astype(np.int64))
    try:
        tight = solve(q).objective
    except PlanError:  # no plan at all: an infinite cost
        return
    assert tight >= base * (1 - 1e-6)


def test_a_free_supplier_is_bought_up_to_its_supply_cap() -> None:
    p = make_problem(charge=(0.0, 2e6), demand=np.array([[5e6, 8e6, 12e6]]), site_mw=20.0)
    got = solve(p)
    assert (got.blocks[0] == p.max_blocks[0]).all()


def test_a_free_supplier_is_bought_up_to_its_share_cap() -> None:
    p = make_problem(
        charge=(0.0, 2e6), demand=np.array([[5e6, 8e6, 12e6]]), site_mw=20.0, cap=0.5, max_blocks=6
    )
    got = solve(p)
    inst = got.installed_mw.sum(axis=1)
    assert inst[0] == pytest.approx(0.5 * inst.sum(axis=0))
    assert inst[0, -1] > 0


def test_forced_tranches_that_break_the_share_cap_are_one_line_naming_it() -> None:
    p = make_problem(cap=0.4, max_blocks=2, site_mw=0.5)
    forced = replace(p, min_blocks=np.array([[2, 0, 0], [0, 0, 0]]))
    with pytest.raises(PlanError, match=r"concentration_cap 0.4") as err:
        solve(forced)
    assert "\n" not in str(err.value)


def test_slipped_deliveries_arrive_later_and_are_paid_later() -> None:
    p = make_problem(site_mw=20.0)
    blocks = np.array([[1, 0, 0], [1, 0, 0]])
    on_time = solve(p, fixed_blocks=blocks)
    late = solve(replace(p, slip=np.array([1, 0])), fixed_blocks=blocks)
    assert on_time.installed_mw[0, 0].tolist() == [1.0, 1.0, 1.0]
    assert late.installed_mw[0, 0].tolist() == [0.0, 1.0, 1.0]
    assert late.capacity_cost[0, 0] == 0.0 and late.capacity_cost[0, 1] == on_time.capacity_cost[0, 1]
