"""A plan's coefficients as arrays: what each supplier can deliver when, in what blocks, at
what charge; what each delivered generation serves per MW for each class and period (from the
simulator's capacities); demand per class and period; sites, constraints and overflow. The
optimiser reads only a `Problem`, so tests can hand-make tiny ones.

Owned systems pay their site's power: an installed system its idle power, a system in use the
power its curve gives at the mean load (fleets are sized for the peak hour, so a system in use
runs at mean / peak of its capacity on average); contracts include power in their price.

Conventions: IT MW throughout (facility MW = IT MW x PUE); demand in output tokens/s at the
period's peak hour, at the period's midpoint; money in USD, charged per period while capacity
is installed (purchases: capex as an annuity over the system's life at the discount rate, so a
system bought late pays only for the periods it is used; contracts: their price per facility
MW-year); discounting at each period's midpoint.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from megawatt.deal.capacity import CapacityTask, PoolCapacity
from megawatt.deal.spec import DEFAULT_LIFE_YEARS, GenerationSpec, Plan, SupplierSpec, quarter_of
from megawatt.errors import PlanError
from megawatt.fleet.economics import capital_recovery_factor
from megawatt.fleet.power import power_curve
from megawatt.units import HOURS_PER_YEAR, MW, SECONDS_PER_DAY, SECONDS_PER_YEAR
from megawatt.workload import length_distribution

DealMode = str
"""`fixed` (the deal's tranches taken as announced), `optimised` (each tranche an option) or
`alternative` (no deal)."""
DEAL_MODES = ("fixed", "optimised", "alternative")


@dataclass(frozen=True)
class DemandModel:
    """Demand per class and period from requests per day, growth and the drift of the mix."""

    prompts_per_day: float
    growth_per_year: float
    drift_per_year: float
    shares: np.ndarray  # (C,) sums to 1
    drifts: np.ndarray  # (C,) bool: the shares that drift
    mean_output_tokens: np.ndarray  # (C,)
    peak_to_mean: np.ndarray  # (C,)
    years: np.ndarray  # (T,) years from the start to each period's midpoint

    def demand(self, growth: float | None = None, drift: float | None = None) -> np.ndarray:
        """Output tokens/s at the peak hour, (C, T)."""
        g = self.growth_per_year if growth is None else growth
        d = self.drift_per_year if drift is None else drift
        shares = self.shares[:, None] * np.where(self.drifts[:, None], (1.0 + d) ** self.years[None, :], 1.0)
        shares = shares / shares.sum(axis=0, keepdims=True)
        prompts = self.prompts_per_day * g**self.years
        per_s = prompts[None, :] * shares / SECONDS_PER_DAY
        out: np.ndarray = per_s * (self.mean_output_tokens * self.peak_to_mean)[:, None]
        return out


@dataclass(frozen=True)
class Problem:
    """Everything the optimiser needs (S suppliers, G generations at most, C classes, T
    periods, K sites, Y calendar years)."""

    period_labels: tuple[str, ...]
    period_years: float
    discount: np.ndarray  # (T,) factor at each period's midpoint
    suppliers: tuple[str, ...]
    hosted: np.ndarray  # (S,) bool: contracts (power and site in the price)
    block_it_mw: np.ndarray  # (S,) IT MW per block
    min_blocks: np.ndarray  # (S, T) int
    max_blocks: np.ndarray  # (S, T) int
    cohort: np.ndarray  # (S, T) int: generation delivered in each period, -1 none
    generations: tuple[tuple[str, ...], ...]  # (S, G_s) labels
    charge: np.ndarray  # (S, T) USD per IT MW per period while installed, by delivery period
    capex: np.ndarray  # (S, T) USD per IT MW paid at delivery (budgets)
    power_share: np.ndarray  # (S, G) IT power of a system in use at the mean load / its peak
    idle_share: np.ndarray  # (S, G) IT power of an idle system / its peak
    rate: np.ndarray  # (S, G, C, T) output tokens/s per IT MW at the class SLO (0: cannot)
    classes: tuple[str, ...]
    demand: np.ndarray  # (C, T) output tokens/s at the peak hour
    tokens_per_rate: np.ndarray  # (C,) tokens in a period per token/s at the peak hour
    overflow_price: np.ndarray  # (C, T) USD per million output tokens
    overflow_max_share: float
    unserved_price: np.ndarray  # (C, T) USD per million output tokens
    sites: tuple[str, ...]
    site_pue: np.ndarray  # (K,)
    site_mw: np.ndarray  # (K, T) facility MW available
    electricity: np.ndarray  # (K,) USD per MWh
    site_charge: np.ndarray  # (K,) USD per facility MW per period
    concentration_cap: float = 1.0
    concentration_from: int = 0
    year_of_period: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (T,)
    budget: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (Y,) USD, inf: none
    slip: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (S,) periods late
    deal: int = -1  # the deal's supplier row, -1 none
    deal_blocks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (T,)
    deal_take_or_pay: bool = True
    device_of: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))  # (S, G)
    devices: tuple[str, ...] = ()
    demand_model: DemandModel | None = None
    electricity_factor: float = 1.0

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(S, G, C, T)."""
        s, g, c, t = self.rate.shape
        return s, g, c, t

    @property
    def hours_per_period(self) -> float:
        """Hours in a period."""
        return self.period_years * HOURS_PER_YEAR

    def slips(self) -> np.ndarray:
        """Periods each supplier delivers late (zeros when unset)."""
        return self.slip if len(self.slip) else np.zeros(len(self.suppliers), np.int64)

    def budgets(self) -> tuple[np.ndarray, np.ndarray]:
        """(year of each period, budget of each year); no budget: one year, unlimited."""
        if len(self.budget):
            return self.year_of_period, self.budget
        return np.zeros(len(self.period_labels), np.int64), np.array([math.inf])

    def with_deal(self, mode: DealMode) -> Problem:
        """The problem with the deal's tranches taken as announced (`fixed`), as options
        (`optimised`) or not at all (`alternative`)."""
        if mode not in DEAL_MODES:
            raise PlanError(f"deal mode must be one of {', '.join(DEAL_MODES)}; got {mode!r}.")
        if self.deal < 0:
            return self
        lo, hi = self.min_blocks.copy(), self.max_blocks.copy()
        lo[self.deal] = self.deal_blocks if mode == "fixed" and self.deal_take_or_pay else 0
        hi[self.deal] = self.deal_blocks if mode != "alternative" else 0
        return dataclasses.replace(self, min_blocks=lo, max_blocks=hi)


# ---------------------------------------------------------------------------------------------
# From a plan
# ---------------------------------------------------------------------------------------------


def _mean(spec: dict[str, object] | None) -> float:
    return 0.0 if spec is None else float(length_distribution(spec).mean)


def model_at(plan: Plan, class_name: str, period: int) -> str:
    """The model serving a class in a period (the roadmap's last step started by then)."""
    q = quarter_of(plan.start) + period * plan.quarters_per_period
    steps = [
        s for s in plan.roadmap if quarter_of(s.start) <= q and (s.classes is None or class_name in s.classes)
    ]
    if not steps:
        raise PlanError(
            f"plan: roadmap: no model serves class {class_name!r} in {plan.period_labels[period]}; "
            "add a roadmap step for it from the start."
        )
    return max(steps, key=lambda s: quarter_of(s.start)).model


def earliest_period(plan: Plan, supplier: SupplierSpec) -> int:
    """The first period a supplier can deliver in: its first delivery, and an order placed at
    `orders_from` (default: the start) plus its lead time."""
    orders = quarter_of(plan.orders_from or plan.start)
    q = max(quarter_of(supplier.first_delivery), orders + supplier.lead_time_quarters)
    return max(0, -(-(q - quarter_of(plan.start)) // plan.quarters_per_period))


def generation_at(plan: Plan, supplier: SupplierSpec, period: int) -> int:
    """The generation a supplier delivers in a period (-1 before its first)."""
    q = quarter_of(plan.start) + period * plan.quarters_per_period
    started = [
        j
        for j, g in enumerate(supplier.generations)
        if quarter_of(g.start) <= q + plan.quarters_per_period - 1
    ]
    return started[-1] if started else -1


def cohorts(plan: Plan) -> np.ndarray:
    """(S, T): the generation each supplier (the deal's last) delivers in each period, -1 where
    it cannot deliver (before its first delivery, its lead time or its first generation)."""
    out = np.full((len(plan.all_suppliers), plan.n_periods), -1, np.int64)
    for s, sup in enumerate(plan.all_suppliers):
        for t in range(earliest_period(plan, sup), plan.n_periods):
            out[s, t] = generation_at(plan, sup, t)
    return out


def _needed(plan: Plan) -> list[tuple[int, int, int, int, CapacityTask]]:
    """(s, g, c, t, task) for every generation that can be delivered, every class and every
    period from its first delivery on: the rates the optimiser may use."""
    cohort = cohorts(plan)
    out = []
    for s, sup in enumerate(plan.all_suppliers):
        for g, gen in enumerate(sup.generations):
            delivered = np.flatnonzero(cohort[s] == g)
            if not len(delivered):
                continue
            for c, cls in enumerate(plan.classes):
                for t in range(int(delivered[0]), plan.n_periods):
                    out.append((s, g, c, t, _task(gen, model_at(plan, cls.name, t), cls.name)))
    return out


def capacity_tasks(plan: Plan) -> list[CapacityTask]:
    """Every capacity run the plan needs: each generation's system with each model serving a
    class from the generation's first delivery on."""
    return list(dict.fromkeys(item[4] for item in _needed(plan)))


def _task(gen: GenerationSpec, model: str, class_name: str) -> CapacityTask:
    return CapacityTask(gen.system, gen.engine, gen.engine_release, model, class_name)


def _price_per_it_mw(plan: Plan, gen: GenerationSpec) -> float:
    if gen.usd_per_it_mw is not None:
        return gen.usd_per_it_mw
    system = plan.catalog().system(gen.system)
    return system.price_usd / (system.power_w / MW)


@dataclass(frozen=True)
class _SupplierCoefficients:
    max_blocks: np.ndarray
    charge: np.ndarray
    capex: np.ndarray
    power_share: np.ndarray
    idle_share: np.ndarray
    rate: np.ndarray
    device_of: np.ndarray
    devices: tuple[str, ...]


def _supplier_coefficients(
    plan: Plan, capacities: dict[CapacityTask, PoolCapacity], cohort: np.ndarray, load: float, n_g: int
) -> _SupplierCoefficients:
    """Per supplier and period: blocks it can deliver, the charge and capex of a block's IT MW;
    per generation: power at the mean load and at idle (shares of peak), tokens/s per IT MW per
    class and period, and the device it runs."""
    catalog = plan.catalog()
    n_t, py = plan.n_periods, plan.period_years
    suppliers = plan.all_suppliers
    n_s, n_c = len(suppliers), len(plan.classes)
    max_b = np.zeros((n_s, n_t), np.int64)
    charge = np.zeros((n_s, n_t))
    capex = np.zeros((n_s, n_t))
    power_share = np.zeros((n_s, n_g))
    idle_share = np.zeros((n_s, n_g))
    rate = np.zeros((n_s, n_g, n_c, n_t))
    device_names: dict[str, int] = {}
    device_of = np.zeros((n_s, n_g), np.int64)
    for s, g, c, t, task in _needed(plan):
        rate[s, g, c, t] = capacities[task].tokens_per_s_per_it_mw * suppliers[s].generations[g].perf_per_watt
    for s, sup in enumerate(suppliers):
        max_b[s] = np.where(cohort[s] >= 0, sup.max_tranches_per_period, 0)
        for g, gen in enumerate(sup.generations):
            system = catalog.system(gen.system)
            device = catalog.device(system.device_id)
            device_of[s, g] = device_names.setdefault(device.id, len(device_names))
            curve = power_curve(system, device)
            power_share[s, g] = curve.power_w(load) / system.power_w
            idle_share[s, g] = curve.idle_w / system.power_w
        for t in range(n_t):
            g = max(cohort[s, t], 0)
            if sup.terms == "contract":
                assert sup.contract_usd_per_mw_year is not None and sup.pue is not None
                charge[s, t] = sup.contract_usd_per_mw_year * sup.pue * py
            else:
                price = _price_per_it_mw(plan, sup.generations[g])
                life = sup.life_years or DEFAULT_LIFE_YEARS
                charge[s, t] = price * capital_recovery_factor(plan.discount_rate, life) * py
                capex[s, t] = price
    return _SupplierCoefficients(
        max_b, charge, capex, power_share, idle_share, rate, device_of, tuple(device_names)
    )


def _deal_blocks(plan: Plan, cohort: np.ndarray, deal_row: int) -> np.ndarray:
    """Blocks of the deal's tranches per period (zeros without a deal)."""
    n_t, labels = plan.n_periods, plan.period_labels
    deal_blocks = np.zeros(n_t, np.int64)
    if plan.deal is None:
        return deal_blocks
    for i, tranche in enumerate(plan.deal.tranches):
        t = plan.period_index(tranche.period)
        if not 0 <= t < n_t or cohort[deal_row, t] < 0:
            first = earliest_period(plan, plan.deal.supplier)
            span = f"{labels[first]} to {labels[-1]}" if first < n_t else "none"
            raise PlanError(
                f"plan: deal.tranches[{i}].period {tranche.period} is outside the periods the "
                f"deal's supplier can deliver in ({span}: its first delivery, lead time and "
                "generations); move the tranche or change the supplier's dates."
            )
        deal_blocks[t] += round(tranche.mw / plan.deal.supplier.tranche_mw)
    return deal_blocks


def _overflow_prices(plan: Plan, models: list[list[str]], mean_out: np.ndarray) -> np.ndarray:
    """Overflow at pay-as-you-go prices per class and period: per output token, the input it
    carries included."""
    disc = plan.overflow.cached_input_discount
    overflow_price = np.zeros((len(plan.classes), plan.n_periods))
    for c, cls in enumerate(plan.classes):
        inputs = _mean(cls.prompt) + _mean(cls.cached_prefix) * (1.0 - disc)
        for t in range(plan.n_periods):
            tariff = plan.overflow.prices[models[c][t]]
            overflow_price[c, t] = (
                tariff.output_usd_per_m_tokens + tariff.input_usd_per_m_tokens * inputs / mean_out[c]
            )
    return overflow_price


def _sites(plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """Each site's MW energised per period and its facility charge per MW and period."""
    site_mw = np.zeros((len(plan.sites), plan.n_periods))
    for k, site in enumerate(plan.sites):
        for step in site.energised:
            site_mw[k, max(plan.period_index(step.start), 0) :] = step.mw
    site_charge = np.array(
        [
            site.facility_capex_usd_per_mw
            * capital_recovery_factor(plan.discount_rate, site.facility_life_years)
            * plan.period_years
            for site in plan.sites
        ]
    )
    return site_mw, site_charge


def _budgets(plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """Each period's year (index) and each year's budget (USD; inf for none)."""
    labels = plan.period_labels
    years = sorted({int(label[:4]) for label in labels})
    year_of = np.array([years.index(int(label[:4])) for label in labels], np.int64)
    budget = np.array([plan.constraints.budget_usd_per_year.get(y, math.inf) for y in years])
    return year_of, budget


def build_problem(plan: Plan, capacities: dict[CapacityTask, PoolCapacity]) -> Problem:
    """The coefficients of `plan`, with the deal's tranches as options (see `Problem.with_deal`)."""
    n_t, py = plan.n_periods, plan.period_years
    mid_years = (np.arange(n_t) + 0.5) * py
    suppliers = plan.all_suppliers
    n_s = len(suppliers)
    n_g = max(len(s.generations) for s in suppliers) if suppliers else 1
    deal_row = n_s - 1 if plan.deal is not None else -1
    block = np.array(
        [s.tranche_mw / (s.pue or 1.0) if s.terms == "contract" else s.tranche_mw for s in suppliers]
    )
    peak = np.array([c.peak_to_mean for c in plan.classes])
    mean_out = np.array([_mean(c.output) for c in plan.classes])
    shares = np.array([c.share for c in plan.classes])
    shares = shares / shares.sum()
    load = float(np.sum(shares * mean_out) / np.sum(shares * mean_out * peak))  # mean / peak
    models = [[model_at(plan, c.name, t) for t in range(n_t)] for c in plan.classes]
    cohort = cohorts(plan)
    sup = _supplier_coefficients(plan, capacities, cohort, load, n_g)
    deal_blocks = _deal_blocks(plan, cohort, deal_row)
    max_b = sup.max_blocks
    if plan.deal is not None:
        max_b[deal_row] = deal_blocks
    site_mw, site_charge = _sites(plan)
    year_of, budget = _budgets(plan)
    cons = plan.constraints
    demand_model = DemandModel(
        plan.demand.prompts_per_day,
        plan.demand.growth_per_year,
        plan.demand.mix_drift_per_year,
        shares,
        np.array([c.name in plan.demand.drift_classes for c in plan.classes]),
        mean_out,
        peak,
        mid_years,
    )
    return Problem(
        period_labels=plan.period_labels,
        period_years=py,
        discount=(1.0 + plan.discount_rate) ** -mid_years,
        suppliers=tuple(s.name for s in suppliers),
        hosted=np.array([s.terms == "contract" for s in suppliers], bool),
        block_it_mw=block,
        min_blocks=np.zeros((n_s, n_t), np.int64),
        max_blocks=max_b,
        cohort=cohort,
        generations=tuple(tuple(g.label for g in s.generations) for s in suppliers),
        charge=sup.charge,
        capex=sup.capex,
        power_share=sup.power_share,
        idle_share=sup.idle_share,
        rate=sup.rate,
        classes=tuple(c.name for c in plan.classes),
        demand=demand_model.demand(),
        tokens_per_rate=py * SECONDS_PER_YEAR / peak,
        overflow_price=_overflow_prices(plan, models, mean_out),
        overflow_max_share=plan.overflow.max_share,
        unserved_price=np.full((len(plan.classes), n_t), plan.overflow.unserved_usd_per_m_tokens),
        sites=tuple(s.name for s in plan.sites),
        site_pue=np.array([s.pue for s in plan.sites]),
        site_mw=site_mw,
        electricity=np.array([s.electricity_usd_per_mwh for s in plan.sites]),
        site_charge=site_charge,
        concentration_cap=cons.concentration_cap,
        concentration_from=max(plan.period_index(cons.concentration_from), 0)
        if cons.concentration_from
        else 0,
        year_of_period=year_of,
        budget=budget,
        slip=np.zeros(n_s, np.int64),
        deal=deal_row,
        deal_blocks=deal_blocks,
        deal_take_or_pay=plan.deal is None or plan.deal.terms == "take_or_pay",
        device_of=sup.device_of,
        devices=sup.devices,
        demand_model=demand_model,
    ).with_deal("optimised")
