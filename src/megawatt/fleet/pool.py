"""Pools of identical replicas and fleet options made of pools: capacity at the SLO, power,
energy per token and money, from one simulated replica per pool; and the record of an option at
its peak-hour demand (`DemandResult`, which fleet/demand.py simulates).

Requests reach a pool's replicas through a random (Poisson-splitting) router, so each replica
sees a Poisson stream with the pool's traffic mix; one replica's capacity search stands for all
of them (the `sampled` mode with k = 1; the fleet issue adds exact and k-replica modes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from megawatt.fleet.budget import PoolSize
from megawatt.fleet.economics import AnnualCost, Economics, annual_cost
from megawatt.fleet.pools import PoolOutcome, pooled_percentile
from megawatt.fleet.power import PowerCurve, power_curve
from megawatt.fleet.sessions import (
    PriceTier,
    SessionCapacity,
    SessionOutcome,
    SessionsAtDemand,
    serving_pool,
    session_outcome,
)
from megawatt.hardware import System
from megawatt.perf import Deployment, MemoryPlan
from megawatt.serving import Capacity
from megawatt.serving.metrics import weighted_percentile
from megawatt.units import SECONDS_PER_DAY, SECONDS_PER_YEAR


@dataclass(frozen=True)
class PoolResult:
    """One pool: `size.n_replicas` replicas of `deployment`, each sustaining `capacity`."""

    name: str
    system: System
    deployment: Deployment
    memory: MemoryPlan
    size: PoolSize
    capacity: Capacity
    single_stream_tokens_per_s: float
    single_stream_ttft_s: float
    candidates: tuple[tuple[str, float], ...] = ()
    sessions: tuple[SessionCapacity, ...] = ()
    """Per session class, one replica's session capacity (`fleet.sessions`)."""

    def annual_cost(self, economics: Economics, pue: float, load_fraction: float) -> AnnualCost:
        """Yearly cost of the pool at `load_fraction` of its capacity (USD)."""
        return annual_cost(
            economics,
            n_systems=self.size.n_systems,
            system_price_usd=self.system.price_usd,
            it_peak_w=self.size.used_w,
            facility_mean_w=self.mean_it_power_w(load_fraction) * pue,
            pue=pue,
        )

    @property
    def rate_per_s(self) -> float:
        """Requests per second the pool sustains within the SLO."""
        return self.capacity.rate_per_s * self.size.n_replicas

    @property
    def output_tokens_per_s(self) -> float:
        """Output tokens per second at that rate."""
        return self.capacity.output_tokens_per_s * self.size.n_replicas

    @property
    def busy_fraction(self) -> float:
        """Share of time a replica's engine is busy at capacity."""
        res = self.capacity.result
        return res.summary()["busy_fraction"] if res is not None else 0.0

    @property
    def power_curve(self) -> PowerCurve:
        """One system's power against its load share, from the default `fleet.power.PowerModel`
        (`FittedPower`): fitted to measured GPU power for device families with measurements,
        else linear from idle to peak (the `LinearPower` prior)."""
        return power_curve(self.system, self.deployment.device)

    def mean_it_power_w(self, load_fraction: float) -> float:
        """Mean IT power (W) at `load_fraction` of capacity, from the power curve. Its load share
        is the load as a share of the capacity at the SLO (continuous batching keeps an engine
        busy at any load, so busy time is not a measure of power); a load that varies is taken
        at its mean, which overstates a concave curve's mean power slightly."""
        return self.size.n_systems * self.power_curve.power_w(load_fraction)


@dataclass(frozen=True)
class DemandResult:
    """One option serving `rate_per_s` (its peak-hour demand). `runs` has one entry per pool
    (None where the pool gets no traffic): a `PoolRun` in sampled mode, a `PoolTally` in exact
    mode; `over_capacity` lists pools whose share exceeds their capacity at the SLO (those are
    not simulated: their queues would grow without end)."""

    rate_per_s: float
    pool_rates: tuple[float, ...]
    runs: tuple[PoolOutcome | None, ...]
    over_capacity: tuple[str, ...]
    it_w: float
    facility_w: float
    annual: AnnualCost
    mean_to_peak: float

    @property
    def ok(self) -> bool:
        """True when every pool could carry its share."""
        return not self.over_capacity

    def _runs(self) -> list[PoolOutcome]:
        return [r for r in self.runs if r is not None]

    def percentile(self, metric: str, q: float) -> float:
        """q-th percentile of `ttft_s` / `tpot_s` / `e2e_s` over the fleet's requests."""
        return pooled_percentile(self._runs(), metric, q) if self.ok else math.nan

    @property
    def output_tokens_per_s(self) -> float:
        """Output tokens per second served at this demand."""
        return sum(r.output_tokens_per_s for r in self._runs())

    @property
    def joules_per_token(self) -> float:
        """Facility energy per output token at this demand (J)."""
        tps = self.output_tokens_per_s
        return self.facility_w / tps if tps > 0 and self.ok else math.inf

    @property
    def usd_per_million_tokens(self) -> float:
        """Yearly cost over the tokens of a year whose mean is `mean_to_peak` of this demand."""
        tokens = self.output_tokens_per_s * self.mean_to_peak * SECONDS_PER_YEAR
        return self.annual.total / tokens * 1e6 if tokens > 0 and self.ok else math.inf


@dataclass(frozen=True)
class OptionResult:
    """A fleet option: pools sharing a power budget, with its answers.

    `load_fraction` is the mean load as a share of capacity (1 / peak-to-mean of the traffic):
    capacity is sized for the peak, money and energy are spread over the mean.
    """

    name: str
    model_id: str
    pools: tuple[PoolResult, ...]
    economics: Economics
    pue: float
    load_fraction: float
    demand: DemandResult | None = None
    sessions: tuple[SessionOutcome, ...] = ()
    """Per session class, the pool that serves it and what it gives (`session_outcomes`)."""
    sessions_at_demand: tuple[SessionsAtDemand, ...] = ()
    """Session classes made of the mix's requests, at the peak hour next to the other traffic."""

    @property
    def n_systems(self) -> int:
        """Systems bought, all pools."""
        return sum(p.size.n_systems for p in self.pools)

    @property
    def it_peak_w(self) -> float:
        """Peak IT power of the systems bought (W)."""
        return sum(p.size.used_w for p in self.pools)

    @property
    def leftover_w(self) -> float:
        """IT power left unspent by whole systems (W)."""
        return sum(p.size.leftover_w for p in self.pools)

    @property
    def rate_per_s(self) -> float:
        """Requests per second the fleet sustains at the SLO (peak capacity)."""
        return sum(p.rate_per_s for p in self.pools)

    @property
    def output_tokens_per_s(self) -> float:
        """Output tokens per second at peak capacity."""
        return sum(p.output_tokens_per_s for p in self.pools)

    @property
    def prompts_per_day(self) -> float:
        """Prompts per day the fleet serves when its peak hour runs at capacity."""
        return self.rate_per_s * self.load_fraction * SECONDS_PER_DAY

    def _merged(self, metric: str, q: float, class_name: str | None = None) -> float:
        values, weights = [], []
        for p in self.pools:
            res = p.capacity.result
            if res is None or p.rate_per_s <= 0:
                continue
            keep = ~res.rejected
            if class_name is not None:
                if class_name not in res.class_names:
                    continue
                keep = keep & (res.class_id == res.class_names.index(class_name))
            v = getattr(res, metric)[keep]
            values.append(v)
            weights.append(np.full(v.size, p.rate_per_s / max(res.n, 1)))
        if not values or not sum(v.size for v in values):
            return math.nan
        return weighted_percentile(np.concatenate(values), np.concatenate(weights), q)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Request classes seen by the pools' capacity runs."""
        names: dict[str, None] = {}
        for p in self.pools:
            if p.capacity.result is not None:
                names.update(dict.fromkeys(p.capacity.result.class_names))
        return tuple(names)

    def class_latency(self) -> dict[str, dict[str, float]]:
        """p50/p99 TTFT and TPOT (s) per request class at capacity, across the pools."""
        return {
            c: {
                "ttft_p50_s": self._merged("ttft_s", 50, c),
                "ttft_p99_s": self._merged("ttft_s", 99, c),
                "tpot_p50_s": self._merged("tpot_s", 50, c),
                "tpot_p99_s": self._merged("tpot_s", 99, c),
            }
            for c in self.class_names
        }

    @property
    def concurrent_requests(self) -> float:
        """Requests in flight across the fleet at capacity (Little's law: rate x mean latency)."""
        total = 0.0
        for p in self.pools:
            res = p.capacity.result
            if res is None:
                continue
            e2e = res.e2e_s[res.completed]
            total += p.rate_per_s * float(e2e.mean()) if e2e.size else 0.0
        return total

    def ttft_s(self, q: float) -> float:
        """q-th percentile of TTFT across the fleet at capacity (pools weighted by traffic)."""
        return self._merged("ttft_s", q)

    def tpot_s(self, q: float) -> float:
        """q-th percentile of TPOT across the fleet at capacity."""
        return self._merged("tpot_s", q)

    @property
    def per_user_tokens_per_s(self) -> float:
        """Decode speed a median user sees at capacity: 1 / p50 TPOT."""
        t = self.tpot_s(50)
        return 1.0 / t if t and t > 0 and math.isfinite(t) else math.nan

    @property
    def single_stream_tokens_per_s(self) -> float:
        """Decode speed of one request alone on the fastest pool (tokens/s)."""
        return max((p.single_stream_tokens_per_s for p in self.pools), default=math.nan)

    @property
    def facility_mean_w(self) -> float:
        """Mean facility power at the mean load (W)."""
        return sum(p.mean_it_power_w(self.load_fraction) for p in self.pools) * self.pue

    @property
    def joules_per_token(self) -> float:
        """Facility energy per output token at the mean load (J)."""
        tps = self.output_tokens_per_s * self.load_fraction
        return self.facility_mean_w / tps if tps > 0 else math.inf

    @property
    def annual_cost(self) -> AnnualCost:
        """Yearly cost of every pool (USD)."""
        parts = [p.annual_cost(self.economics, self.pue, self.load_fraction) for p in self.pools]
        return AnnualCost(
            *(
                sum(getattr(c, f) for c in parts)
                for f in ("it_capex", "facility_capex", "electricity", "contract")
            )
        )

    def session_outcomes(
        self, tiers: Sequence[PriceTier], usd_per_wait_hour: float
    ) -> tuple[SessionOutcome, ...]:
        """Each session class on the pool its latency class routes to (`serving_pool`): tasks per
        day per MW, cost and revenue per task at the mean load."""
        pools = [p for p in self.pools if p.size.n_replicas > 0 and p.sessions]
        if not pools:
            return ()
        speeds = [p.single_stream_tokens_per_s for p in pools]
        sizes = [p.size.used_w for p in pools]
        yearly = [p.annual_cost(self.economics, self.pue, self.load_fraction).total for p in pools]
        usd_tok = [y / max(p.output_tokens_per_s, 1e-9) for y, p in zip(yearly, pools, strict=True)]
        out = []
        for k, cap in enumerate(pools[0].sessions):
            j = serving_pool(cap.latency, speeds, usd_tok, sizes)
            p, n = pools[j], pools[j].size.n_replicas
            out.append(
                session_outcome(
                    p.sessions[k],
                    p.name,
                    replica_facility_w=p.size.used_w * self.pue / n,
                    replica_usd_per_year=yearly[j] / n,
                    load_fraction=self.load_fraction,
                    tiers=tiers,
                    usd_per_wait_hour=usd_per_wait_hour,
                )
            )
        return tuple(out)

    @property
    def usd_per_request(self) -> float:
        """Cost per request at the mean load (USD)."""
        per_year = self.rate_per_s * self.load_fraction * SECONDS_PER_YEAR
        return self.annual_cost.total / per_year if per_year > 0 else math.inf

    @property
    def usd_per_million_tokens(self) -> float:
        """Cost per million output tokens at the mean load (USD)."""
        tokens_per_year = self.output_tokens_per_s * self.load_fraction * SECONDS_PER_YEAR
        return self.annual_cost.total / tokens_per_year * 1e6 if tokens_per_year > 0 else math.inf


def option_result(
    name: str,
    model_id: str,
    pools: Sequence[PoolResult],
    economics: Economics,
    pue: float,
    load_fraction: float,
) -> OptionResult:
    """Assemble an option from its evaluated pools."""
    return OptionResult(name, model_id, tuple(pools), economics, pue, load_fraction)
