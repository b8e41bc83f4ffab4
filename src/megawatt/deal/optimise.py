"""The optimiser: a mixed-integer program on HiGHS (`scipy.optimize.milp`) over a `Problem`.
Coefficients in, decisions out; nothing here knows about simulations or files.

Decisions: blocks bought per supplier and period (integers), the IT MW of each delivered
generation serving each class in each period, where owned systems sit (sites), overflow to the
cloud and unserved demand per class and period. Objective: the net present value of cost
(capacity charges, power and site, overflow) plus the penalty of unserved demand. Constraints:
supply per period, capacity of each generation, site power, demand, a cap on any supplier's
share of the fleet, and capital plus contract spending per year.

With `fixed_blocks` the purchases are given and only the operation is optimised (a linear
program): how a plan fares under one draw of the uncertain inputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import LinearConstraint, OptimizeResult, milp
from scipy.sparse import coo_array

from megawatt.deal.problem import Problem
from megawatt.errors import PlanError

MIP_REL_GAP = 1e-6
"""Relative optimality gap at which HiGHS stops (the optimum within a millionth)."""
TIME_LIMIT_S = 120.0
"""The most a solve may take; the default plan solves in seconds."""
_M = 1e6  # rows and costs in millions (tokens/s, USD): coefficients near 1 for HiGHS


@dataclass(frozen=True)
class Solution:
    """A solved problem: decisions and what they cost, per period (USD undiscounted unless
    named npv; tokens/s at the peak hour; MW of IT load)."""

    blocks: np.ndarray  # (S, T) int, by order period (delivered `slip` periods later)
    served_mw: np.ndarray  # (S, G, C, T)
    site_mw: np.ndarray  # (S, G, K, T)
    overflow: np.ndarray  # (C, T) tokens/s
    unserved: np.ndarray  # (C, T) tokens/s
    installed_mw: np.ndarray  # (S, G, T)
    served: np.ndarray  # (C, T) tokens/s served by the fleet
    capacity_cost: np.ndarray  # (S, T)
    power_cost: np.ndarray  # (T,)
    site_cost: np.ndarray  # (T,)
    overflow_cost: np.ndarray  # (T,)
    penalty: np.ndarray  # (T,)
    delivered_tokens: np.ndarray  # (T,) output tokens in the period, fleet and overflow
    objective: float  # NPV of cost and penalty, USD
    gap: float
    solve_s: float
    status: str = "optimal"  # or HiGHS's message when it stopped early (time limit)

    @property
    def period_cost(self) -> np.ndarray:
        """(T,) USD spent per period (capacity, power, site, overflow)."""
        out: np.ndarray = (
            self.capacity_cost.sum(axis=0) + self.power_cost + self.site_cost + self.overflow_cost
        )
        return out

    @property
    def stranded_mw(self) -> np.ndarray:
        """(T,) installed IT MW serving no class."""
        out: np.ndarray = np.maximum(
            self.installed_mw.sum(axis=(0, 1)) - self.served_mw.sum(axis=(0, 1, 2)), 0.0
        )
        return out

    def shortfall(self, demand: np.ndarray, rel: float = 1e-6) -> np.ndarray:
        """(T,) bool: some class has unserved demand (beyond the fleet and the overflow cap)."""
        out: np.ndarray = np.asarray((self.unserved > rel * demand + 1e-9).any(axis=0))
        return out

    def usd_per_m_tokens(self) -> np.ndarray:
        """(T,) USD per million output tokens delivered (NaN where none)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            out: np.ndarray = np.where(
                self.delivered_tokens > 0, self.period_cost / (self.delivered_tokens / _M), np.nan
            )
        return out


class _Vars:
    """Column indices of the variables."""

    def __init__(self) -> None:
        self.n = 0

    def take(self, count: int) -> np.ndarray:
        out = np.arange(self.n, self.n + count)
        self.n += count
        return out


def _delivered(problem: Problem, blocks_hi: np.ndarray) -> np.ndarray:
    """(S, G, T) bool: a generation may be installed by a period (some period up to it, less
    the supplier's slip, can deliver it)."""
    n_s, n_g, _, n_t = problem.shape
    out = np.zeros((n_s, n_g, n_t), bool)
    slip = problem.slips()
    for s in range(n_s):
        for tau in range(n_t):
            g = problem.cohort[s, tau]
            if g >= 0 and blocks_hi[s, tau] > 0 and tau + slip[s] < n_t:
                out[s, g, tau + slip[s] :] = True
    return out


@dataclass(frozen=True)
class _Columns:
    """The MILP's variables: blocks ordered `b` (S, T); MW in use `x` at `x_index` rows (s, g,
    c, k, t; k = -1 for contracts); MW installed at a site `z` at `z_index` rows (s, g, k, t);
    overflow `o` and unserved `u` (C, T), in M tokens/s."""

    n: int
    b: np.ndarray
    x: np.ndarray
    x_index: np.ndarray
    z: np.ndarray
    z_index: np.ndarray
    o: np.ndarray
    u: np.ndarray


def _columns(problem: Problem, avail: np.ndarray) -> _Columns:
    n_s, _, n_c, n_t = problem.shape
    n_k = len(problem.sites)
    owned = ~problem.hosted
    cols = _Vars()
    b = cols.take(n_s * n_t).reshape(n_s, n_t)
    usable = np.argwhere(avail[:, :, None, :] & (problem.rate > 0))  # (s, g, c, t)
    x_index = np.array(  # (s, g, c, k, t): owned systems are used at a site, contracts at k = -1
        [(s, g, c, k, t) for s, g, c, t in usable for k in (range(n_k) if owned[s] else (-1,))], np.int64
    ).reshape(-1, 5)
    x = cols.take(len(x_index))
    z_index = np.array(
        [(s, g, k, t) for s, g, t in np.argwhere(avail) if owned[s] for k in range(n_k)], np.int64
    ).reshape(-1, 4)
    z = cols.take(len(z_index))
    o = cols.take(n_c * n_t).reshape(n_c, n_t)
    u = cols.take(n_c * n_t).reshape(n_c, n_t)
    return _Columns(cols.n, b, x, x_index, z, z_index, o, u)


def _objective(
    problem: Problem, v: _Columns, lo: np.ndarray, hi: np.ndarray, fixed: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cost per unit of each variable (USD M, discounted), bounds and integrality."""
    n_s, _, _, n_t = problem.shape
    slip = problem.slips()
    df = problem.discount
    cost = np.zeros(v.n)
    lower = np.zeros(v.n)
    upper = np.full(v.n, np.inf)
    integrality = np.zeros(v.n)
    lower[v.b.ravel()] = lo.ravel()
    upper[v.b.ravel()] = hi.ravel()
    if not fixed:
        integrality[v.b.ravel()] = 1
    tail = np.concatenate([np.cumsum(df[::-1])[::-1], [0.0]])  # sum of df from t on
    for s in range(n_s):
        for tau in range(n_t):
            cost[v.b[s, tau]] = (
                problem.block_it_mw[s] * problem.charge[s, tau] * tail[min(tau + slip[s], n_t)] / _M
            )
    elec = problem.electricity * problem.electricity_factor
    hours = problem.hours_per_period
    if len(v.z_index):  # installed at a site: the site's charge and idle power
        s_, g_, k_, t_ = v.z_index.T
        per_mw = problem.site_pue[k_] * (
            problem.idle_share[s_, g_] * elec[k_] * hours + problem.site_charge[k_]
        )
        cost[v.z] = df[t_] * per_mw / _M
    on_site = v.x_index[:, 3] >= 0 if len(v.x_index) else np.zeros(0, bool)
    if on_site.any():  # in use: the power above idle at the mean load
        s_, g_, _, k_, t_ = v.x_index[on_site].T
        above = np.maximum(problem.power_share[s_, g_] - problem.idle_share[s_, g_], 0.0)
        cost[v.x[on_site]] = df[t_] * problem.site_pue[k_] * above * elec[k_] * hours / _M
    tok = problem.tokens_per_rate[:, None] * df[None, :] / _M  # USD (M) per M tokens/s ... per token/s
    cost[v.o.ravel()] = (problem.overflow_price * tok).ravel()
    cost[v.u.ravel()] = (problem.unserved_price * tok).ravel()
    upper[v.o.ravel()] = (problem.overflow_max_share * problem.demand / _M).ravel()
    return cost, lower, upper, integrality


class _Rows:
    """Constraint rows, each a sparse row with its bounds, in the order they are added."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.lo: list[float] = []
        self.hi: list[float] = []

    def add(self, c: np.ndarray, v: np.ndarray, lo: float, hi: float) -> None:
        self.rows.append(np.full(len(c), len(self.lo)))
        self.cols.append(np.asarray(c, np.int64))
        self.vals.append(np.asarray(v, float))
        self.lo.append(lo)
        self.hi.append(hi)

    def constraint(self, n_cols: int) -> LinearConstraint:
        matrix = coo_array(
            (np.concatenate(self.vals), (np.concatenate(self.rows), np.concatenate(self.cols))),
            shape=(len(self.lo), n_cols),
        ).tocsr()
        return LinearConstraint(matrix, np.array(self.lo), np.array(self.hi))


def _installed_terms(
    problem: Problem, v: _Columns, s: int, g: int | None, t: int
) -> tuple[np.ndarray, np.ndarray]:
    """The block variables of supplier s (generation g, or any) delivered by period t, and the
    IT MW each brings."""
    slip = problem.slips()
    taus = [
        tau
        for tau in range(problem.shape[3])
        if tau + slip[s] <= t
        and problem.cohort[s, tau] >= 0
        and (g is None or problem.cohort[s, tau] == g)
    ]
    return v.b[s, taus], np.full(len(taus), problem.block_it_mw[s])


def _capacity_rows(problem: Problem, v: _Columns, avail: np.ndarray, rows: _Rows) -> None:
    """What is used is at most what is installed (contracts), what is installed sits at sites
    (owned systems), what is used at a site is at most what sits there; and each site's power."""
    n_k = len(problem.sites)
    owned = ~problem.hosted
    x_at: dict[tuple[int, int, int, int], list[int]] = {}
    for j, (s, g, _, k, t) in enumerate(v.x_index):
        x_at.setdefault((int(s), int(g), int(k), int(t)), []).append(j)
    z_at: dict[tuple[int, int, int, int], int] = {}
    for j, (s, g, k, t) in enumerate(v.z_index):
        z_at[(int(s), int(g), int(k), int(t))] = j
    for s, g, t in np.argwhere(avail):
        s, g, t = int(s), int(g), int(t)
        bc, bv = _installed_terms(problem, v, s, g, t)
        if not owned[s]:  # a contract: what is used is at most what is installed
            js = x_at.get((s, g, -1, t), [])
            rows.add(np.concatenate([v.x[js], bc]), np.concatenate([np.ones(len(js)), -bv]), -np.inf, 0.0)
            continue
        ks = [z_at[(s, g, k, t)] for k in range(n_k)]
        rows.add(np.concatenate([v.z[ks], bc]), np.concatenate([np.ones(len(ks)), -bv]), 0.0, 0.0)
        for k in range(n_k):  # used at a site: at most what sits there
            js = x_at.get((s, g, k, t), [])
            if js:
                rows.add(
                    np.concatenate([v.x[js], [v.z[z_at[(s, g, k, t)]]]]),
                    np.append(np.ones(len(js)), -1.0),
                    -np.inf,
                    0.0,
                )
    for k in range(n_k):
        for t in range(problem.shape[3]):
            at_site = [j for j, (_, _, kk, tt) in enumerate(v.z_index) if kk == k and tt == t]
            if at_site:
                rows.add(
                    v.z[at_site], np.full(len(at_site), problem.site_pue[k]), -np.inf, problem.site_mw[k, t]
                )


def _demand_rows(problem: Problem, v: _Columns, rows: _Rows) -> None:
    """Each class's demand in each period is served, overflowed or unserved."""
    _, _, n_c, n_t = problem.shape
    for c in range(n_c):
        for t in range(n_t):
            serving = np.flatnonzero((v.x_index[:, 2] == c) & (v.x_index[:, 4] == t))
            s_, g_ = v.x_index[serving, 0], v.x_index[serving, 1]
            rows.add(
                np.concatenate([v.x[serving], [v.o[c, t], v.u[c, t]]]),
                np.concatenate([problem.rate[s_, g_, c, t] / _M, [1.0, 1.0]]),
                problem.demand[c, t] / _M,
                np.inf,
            )


def _purchase_rows(problem: Problem, v: _Columns, rows: _Rows) -> None:
    """A supplier's share of what is installed stays under the concentration cap, and each
    year's payments under its budget."""
    n_s, _, _, n_t = problem.shape
    if problem.concentration_cap < 1.0:
        cap = problem.concentration_cap
        for t in range(problem.concentration_from, n_t):
            everyone = [_installed_terms(problem, v, s, None, t) for s in range(n_s)]
            for s in range(n_s):
                bc = np.concatenate([e[0] for e in everyone] + [everyone[s][0]])
                bv = np.concatenate([-cap * e[1] for e in everyone] + [everyone[s][1]])
                if len(bc):
                    rows.add(bc, bv, -np.inf, 0.0)
    year_of, budget = problem.budgets()
    for y in np.flatnonzero(np.isfinite(budget)):
        bc_list, bv_list = [], []
        for s in range(n_s):
            for tau in range(n_t):
                if problem.cohort[s, tau] < 0:
                    continue
                paid = problem.capex[s, tau] if year_of[tau] == y else 0.0
                if problem.hosted[s]:
                    paid += problem.charge[s, tau] * np.sum(year_of[tau:] == y)
                if paid:
                    bc_list.append(v.b[s, tau])
                    bv_list.append(problem.block_it_mw[s] * paid / _M)
        if bc_list:
            rows.add(np.array(bc_list), np.array(bv_list), -np.inf, budget[y] / _M)


def solve(
    problem: Problem,
    *,
    fixed_blocks: np.ndarray | None = None,
    gap: float = MIP_REL_GAP,
    time_limit_s: float = TIME_LIMIT_S,
) -> Solution:
    """The cheapest plan (NPV of cost plus unserved penalty) under the problem's constraints;
    with `fixed_blocks`, the cheapest operation of those purchases (supply, share and budget
    constraints are then the purchases' own business and are not imposed)."""
    start = time.perf_counter()
    fixed = fixed_blocks is not None
    lo = np.asarray(fixed_blocks if fixed else problem.min_blocks, np.int64)
    hi = np.asarray(fixed_blocks if fixed else problem.max_blocks, np.int64)
    if (lo > hi).any():
        s, t = map(int, np.argwhere(lo > hi)[0])
        raise PlanError(
            f"plan: {problem.suppliers[s]} must take {lo[s, t]} blocks in {problem.period_labels[t]} "
            f"but can deliver at most {hi[s, t]}; check its tranches and supply cap."
        )
    avail = _delivered(problem, hi)
    v = _columns(problem, avail)
    cost, lower, upper, integrality = _objective(problem, v, lo, hi, fixed)
    rows = _Rows()
    _capacity_rows(problem, v, avail, rows)
    _demand_rows(problem, v, rows)
    if not fixed:
        _purchase_rows(problem, v, rows)
    result = milp(
        cost,
        integrality=integrality,
        bounds=(lower, upper),
        constraints=rows.constraint(v.n),
        options={"disp": False, "mip_rel_gap": gap, "time_limit": time_limit_s, "presolve": True},
    )
    if result.x is None:
        raise PlanError(_infeasible(problem, result.message, fixed))
    return _read(problem, v, result, start)


def _read(problem: Problem, v: _Columns, result: OptimizeResult, start: float) -> Solution:
    """The solution's purchases, MW served, at sites and in use, overflow and unserved."""
    n_s, n_g, n_c, n_t = problem.shape
    n_k = len(problem.sites)
    x_all = np.asarray(result.x)
    blocks = np.rint(x_all[v.b]).astype(np.int64)
    served_mw = np.zeros((n_s, n_g, n_c, n_t))
    used_at = np.zeros((n_s, n_g, n_k + 1, n_t))  # last slot: contracts (no site)
    if len(v.x_index):
        used = np.maximum(x_all[v.x], 0.0)
        s_, g_, c_, k_, t_ = v.x_index.T
        np.add.at(served_mw, (s_, g_, c_, t_), used)
        np.add.at(used_at, (s_, g_, k_, t_), used)  # k = -1 lands in the last slot
    site_mw = np.zeros((n_s, n_g, n_k, n_t))
    if len(v.z_index):
        site_mw[tuple(v.z_index.T)] = np.maximum(x_all[v.z], 0.0)
    overflow = np.maximum(x_all[v.o], 0.0) * _M
    unserved = np.maximum(x_all[v.u], 0.0) * _M
    status = int(result.status)
    return _account(
        problem,
        blocks,
        served_mw,
        site_mw,
        used_at[:, :, :n_k],
        overflow,
        unserved,
        objective=float(result.fun) * _M,
        gap=float(getattr(result, "mip_gap", 0.0) or 0.0),
        solve_s=time.perf_counter() - start,
        status="optimal" if status == 0 else str(result.message),
    )


def installed(problem: Problem, blocks: np.ndarray) -> np.ndarray:
    """(S, G, T) IT MW installed, each block delivered `slip` periods after its order."""
    n_s, n_g, _, n_t = problem.shape
    out = np.zeros((n_s, n_g, n_t))
    slip = problem.slips()
    for s in range(n_s):
        for tau in range(n_t):
            g = problem.cohort[s, tau]
            if g >= 0 and blocks[s, tau] and tau + slip[s] < n_t:
                out[s, g, tau + slip[s] :] += blocks[s, tau] * problem.block_it_mw[s]
    return out


def _account(
    problem: Problem,
    blocks: np.ndarray,
    served_mw: np.ndarray,
    site_mw: np.ndarray,
    used_site_mw: np.ndarray,
    overflow: np.ndarray,
    unserved: np.ndarray,
    *,
    objective: float,
    gap: float,
    solve_s: float,
    status: str,
) -> Solution:
    n_s, _, _, n_t = problem.shape
    slip = problem.slips()
    capacity_cost = np.zeros((n_s, n_t))
    for s in range(n_s):
        for tau in range(n_t):
            if blocks[s, tau] and tau + slip[s] < n_t:
                capacity_cost[s, tau + slip[s] :] += (
                    blocks[s, tau] * problem.block_it_mw[s] * problem.charge[s, tau]
                )
    elec = problem.electricity * problem.electricity_factor
    pue = problem.site_pue[None, None, :, None]
    above = np.maximum(problem.power_share - problem.idle_share, 0.0)
    power_cost = (
        np.einsum("sgkt,sg,k->t", site_mw * pue, problem.idle_share, elec)
        + np.einsum("sgkt,sg,k->t", used_site_mw * pue, above, elec)
    ) * problem.hours_per_period
    site_cost = np.einsum("sgkt,k->t", site_mw * pue, problem.site_charge)
    served = np.einsum("sgct,sgct->ct", served_mw, problem.rate)
    tokens = problem.tokens_per_rate[:, None]
    overflow_cost = (overflow * tokens * problem.overflow_price).sum(axis=0) / _M
    penalty = (unserved * tokens * problem.unserved_price).sum(axis=0) / _M
    delivered = ((served + overflow) * tokens).sum(axis=0)
    return Solution(
        blocks=blocks,
        served_mw=served_mw,
        site_mw=site_mw,
        overflow=overflow,
        unserved=unserved,
        installed_mw=installed(problem, blocks),
        served=served,
        capacity_cost=capacity_cost,
        power_cost=power_cost,
        site_cost=site_cost,
        overflow_cost=overflow_cost,
        penalty=penalty,
        delivered_tokens=delivered,
        objective=objective,
        gap=gap,
        solve_s=solve_s,
        status=status,
    )


def npv(problem: Problem, per_period: np.ndarray) -> float:
    """Net present value (USD) of a per-period amount."""
    return float(np.sum(problem.discount * per_period))


def _infeasible(problem: Problem, message: str, fixed: bool) -> str:
    """Why no plan exists, naming the constraint that conflicts with the forced purchases."""
    if fixed:
        return f"plan: the given purchases cannot be operated ({message}); a site may be too small."
    hints = []
    if problem.concentration_cap < 1.0:
        hints.append(
            f"constraints.concentration_cap {problem.concentration_cap:g} from "
            f"{problem.period_labels[min(problem.concentration_from, len(problem.period_labels) - 1)]} "
            "(the deal's take-or-pay tranches may need more of the other suppliers than they can "
            "deliver)"
        )
    if np.isfinite(problem.budgets()[1]).any():
        hints.append(
            "constraints.budget_usd_per_year (the forced tranches may cost more than a year's budget)"
        )
    why = "; or ".join(hints) if hints else "the forced purchases"
    return f"plan: no plan satisfies every constraint ({message.rstrip('.')}). Relax {why}."


def binding(problem: Problem, solution: Solution, rel: float = 1e-6) -> dict[str, list[str]]:
    """Per period label, the constraints the solution meets with no slack: a supplier's supply
    cap, a site's power, a supplier's share cap, the year's budget, the overflow cap."""
    n_s, _, n_c, n_t = problem.shape
    out: dict[str, list[str]] = {label: [] for label in problem.period_labels}
    for s in range(n_s):
        for t in range(n_t):
            if (
                problem.max_blocks[s, t] > problem.min_blocks[s, t]
                and solution.blocks[s, t] >= problem.max_blocks[s, t] > 0
            ):
                out[problem.period_labels[t]].append(f"{problem.suppliers[s]} supply cap")
    used = np.einsum("sgkt,k->kt", solution.site_mw, problem.site_pue)
    for k in range(len(problem.sites)):
        for t in range(n_t):
            if problem.site_mw[k, t] > 0 and used[k, t] >= problem.site_mw[k, t] * (1 - rel) - 1e-6:
                out[problem.period_labels[t]].append(f"{problem.sites[k]} power")
    inst = solution.installed_mw.sum(axis=1)
    total = inst.sum(axis=0)
    if problem.concentration_cap < 1.0:
        for t in range(problem.concentration_from, n_t):
            for s in range(n_s):
                if total[t] > 0 and inst[s, t] >= problem.concentration_cap * total[t] * (1 - rel) - 1e-6:
                    out[problem.period_labels[t]].append(f"{problem.suppliers[s]} share cap")
    year_of, budget = problem.budgets()
    for y in np.flatnonzero(np.isfinite(budget)):
        spent = cash(problem, solution.blocks)[y]
        if spent >= budget[y] * (1 - 1e-4):
            last = int(np.flatnonzero(year_of == y)[-1])
            out[problem.period_labels[last]].append("budget")
    for c in range(n_c):
        for t in range(n_t):
            d = problem.demand[c, t]
            if (
                d > 0
                and problem.overflow_max_share > 0
                and solution.overflow[c, t] >= problem.overflow_max_share * d * (1 - rel)
            ):
                out[problem.period_labels[t]].append(f"overflow cap ({problem.classes[c]})")
    return out


def cash(problem: Problem, blocks: np.ndarray) -> np.ndarray:
    """(Y,) USD paid per calendar year for systems (at delivery) and contracts (as they run)."""
    year_of, budget = problem.budgets()
    out = np.zeros(len(budget))
    n_s, _, _, n_t = problem.shape
    for s in range(n_s):
        for tau in range(n_t):
            mw = blocks[s, tau] * problem.block_it_mw[s]
            if not mw:
                continue
            out[year_of[tau]] += mw * problem.capex[s, tau]
            if problem.hosted[s]:
                np.add.at(out, year_of[tau:], mw * problem.charge[s, tau])
    return out
