"""Routers: which pool a request goes to, and which replica of the pool serves it. Small
Protocols with registries beside them; an unknown name lists the known ones.

Pool routers split a fleet's traffic between pools (by capacity, by request class, by cost);
replica routers pick a replica inside a pool (random, round robin, least outstanding work).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from megawatt.errors import InputError
from megawatt.workload import ArrivalProcess, Gamma, Poisson


@dataclass(frozen=True)
class PoolTarget:
    """What a pool router knows of a pool: its capacity at the SLO (requests/s), its cost per
    request at capacity (USD) and its median time per output token (s)."""

    name: str
    capacity_per_s: float
    usd_per_request: float = 0.0
    tpot_s: float = 0.0


class PoolRouter(Protocol):
    """Splits traffic between pools: the share of each request class each pool takes."""

    def shares(
        self, class_names: Sequence[str], class_shares: Sequence[float], pools: Sequence[PoolTarget]
    ) -> np.ndarray:
        """A (classes x pools) matrix whose rows sum to 1: where each class's requests go."""


@dataclass(frozen=True)
class Proportional:
    """Every class split across pools in proportion to their capacity (a balanced router)."""

    def shares(
        self, class_names: Sequence[str], class_shares: Sequence[float], pools: Sequence[PoolTarget]
    ) -> np.ndarray:
        cap = np.array([p.capacity_per_s for p in pools], dtype=np.float64)
        if cap.sum() <= 0:
            raise InputError("no pool has capacity: every pool failed its SLO.")
        return np.tile(cap / cap.sum(), (len(class_names), 1))


@dataclass(frozen=True)
class ClassAware:
    """Latency-sensitive classes go to the pool with the fastest decode (lowest TPOT) first, the
    rest fill the remaining capacity; each pool is filled at most to its capacity share."""

    fast_classes: tuple[str, ...] = ("chat", "coding", "agentic")

    def shares(
        self, class_names: Sequence[str], class_shares: Sequence[float], pools: Sequence[PoolTarget]
    ) -> np.ndarray:
        order_fast = sorted(range(len(pools)), key=lambda j: pools[j].tpot_s)
        return _fill(
            class_names,
            class_shares,
            pools,
            lambda c: order_fast if c in self.fast_classes else order_fast[::-1],
        )


@dataclass(frozen=True)
class CostAware:
    """Every class to the cheapest pool per request until its capacity share is used, then the
    next cheapest."""

    def shares(
        self, class_names: Sequence[str], class_shares: Sequence[float], pools: Sequence[PoolTarget]
    ) -> np.ndarray:
        order = sorted(range(len(pools)), key=lambda j: pools[j].usd_per_request)
        return _fill(class_names, class_shares, pools, lambda c: order)


def _fill(
    class_names: Sequence[str], class_shares: Sequence[float], pools: Sequence[PoolTarget], order_for: object
) -> np.ndarray:
    """Fill pools in a per-class preference order, each up to its share of the total capacity.
    Classes are placed in the order given, each spread over its preferred pools."""
    cap = np.array([p.capacity_per_s for p in pools], dtype=np.float64)
    if cap.sum() <= 0:
        raise InputError("no pool has capacity: every pool failed its SLO.")
    room = cap / cap.sum()  # pool share of the fleet's traffic at capacity
    out = np.zeros((len(class_names), len(pools)))
    for ci, (name, share) in enumerate(zip(class_names, class_shares, strict=True)):
        left = float(share)
        for j in order_for(name):  # type: ignore[operator]
            take = min(left, room[j])
            if take > 0:
                out[ci, j] += take
                room[j] -= take
                left -= take
            if left <= 1e-15:
                break
        if left > 1e-15:  # rounding: put the crumbs where room is largest
            out[ci, int(np.argmax(room))] += left
    rows = out.sum(axis=1, keepdims=True)
    split: np.ndarray = np.divide(out, rows, out=np.tile(cap / cap.sum(), (len(class_names), 1)),
                                  where=rows > 0)
    return split


POOL_ROUTERS: Mapping[str, type] = {
    "class_aware": ClassAware,
    "cost_aware": CostAware,
    "proportional": Proportional,
}

class ReplicaRouter(Protocol):
    """Picks the replica of a pool that serves each request. A router whose pick depends on the
    replicas' state (`joint`) has them simulated together; the others route ahead of the run,
    by `targets` (a pool's requests, drawn together) or `replica_stream` (exact mode: each
    replica's own arrival process, drawn replica by replica)."""

    @property
    def joint(self) -> bool:
        """Whether the replicas must be simulated together (the pick reads their state)."""

    def targets(self, rng: np.random.Generator, n_requests: int, n_replicas: int) -> np.ndarray:
        """The replica (0 .. n_replicas - 1) of each of `n_requests` requests, in arrival order."""

    def replica_stream(
        self, rng: np.random.Generator, arrivals: ArrivalProcess, n_replicas: int, replica: int
    ) -> tuple[ArrivalProcess, float | None]:
        """The arrival process of one replica of `n_replicas` fed by `arrivals`, and its first
        arrival (s) when that is drawn apart from the process (None: the process's own)."""


def scaled(process: ArrivalProcess, factor: float) -> ArrivalProcess:
    """The process with its rate multiplied by `factor` (a random split of the traffic).

    Exact for Poisson and diurnal (thinned Poisson); for a gamma renewal process a split
    stream is not gamma, so the gap CV is kept (an approximation)."""
    if not 0 < factor:
        raise InputError(f"a traffic share must be > 0; got {factor}.")
    rate = process.rate_per_s
    if not math.isfinite(rate):
        return process
    return dataclasses.replace(process, rate_per_s=rate * factor)  # type: ignore[type-var]


@dataclass(frozen=True)
class RandomReplica:
    """Each request to a replica drawn uniformly: each replica sees the pool's process split N
    ways (`scaled`)."""

    @property
    def joint(self) -> bool:
        """Routed ahead of the run."""
        return False

    def targets(self, rng: np.random.Generator, n_requests: int, n_replicas: int) -> np.ndarray:
        """Uniform draws."""
        out: np.ndarray = rng.integers(0, n_replicas, size=n_requests)
        return out

    def replica_stream(
        self, rng: np.random.Generator, arrivals: ArrivalProcess, n_replicas: int, replica: int
    ) -> tuple[ArrivalProcess, float | None]:
        """The pool's process split N ways; draws nothing from `rng`."""
        return scaled(arrivals, 1.0 / n_replicas), None


@dataclass(frozen=True)
class RoundRobin:
    """The replicas in turn: replica r takes every N-th request from the (r + 1)-th."""

    @property
    def joint(self) -> bool:
        """Routed ahead of the run."""
        return False

    def targets(self, rng: np.random.Generator, n_requests: int, n_replicas: int) -> np.ndarray:
        """0, 1, ..., N - 1, 0, 1, ...; draws nothing from `rng`."""
        return np.arange(n_requests, dtype=np.int64) % n_replicas

    def replica_stream(
        self, rng: np.random.Generator, arrivals: ArrivalProcess, n_replicas: int, replica: int
    ) -> tuple[ArrivalProcess, float | None]:
        """For Poisson or gamma arrivals the gaps are gamma with N times the shape (sums of N
        gaps), the first arrival gamma with (replica + 1) times the shape."""
        if isinstance(arrivals, Poisson):
            cv = 1.0
        elif isinstance(arrivals, Gamma):
            cv = arrivals.cv
        else:
            raise InputError(
                f"exact mode with round_robin routing takes Poisson or gamma arrivals; got "
                f"{type(arrivals).__name__}. Use the random router or sampled mode."
            )
        rate = arrivals.rate_per_s
        shape = 1.0 / (cv * cv)
        process = Gamma(rate / n_replicas, cv / math.sqrt(n_replicas))
        return process, float(rng.gamma(shape * (replica + 1), 1.0 / (rate * shape)))


@dataclass(frozen=True)
class LeastOutstanding:
    """The replica with the fewest requests waiting or running when a request arrives: it reads
    the replicas' state, so they are simulated together."""

    @property
    def joint(self) -> bool:
        """Simulated together."""
        return True

    def targets(self, rng: np.random.Generator, n_requests: int, n_replicas: int) -> np.ndarray:
        """None ahead of the run: the pick reads the replicas' state."""
        raise InputError("least_outstanding routes as the replicas run; simulate them jointly.")

    def replica_stream(
        self, rng: np.random.Generator, arrivals: ArrivalProcess, n_replicas: int, replica: int
    ) -> tuple[ArrivalProcess, float | None]:
        """None ahead of the run: the pick reads the replicas' state."""
        raise InputError("least_outstanding routes as the replicas run; simulate them jointly.")


REPLICA_ROUTERS: Mapping[str, type] = {
    "least_outstanding": LeastOutstanding,
    "random": RandomReplica,
    "round_robin": RoundRobin,
}


def pool_router(name: str) -> PoolRouter:
    """The pool router registered under `name`."""
    try:
        router: PoolRouter = POOL_ROUTERS[name]()
    except KeyError:
        raise InputError(
            f"pool router must be one of {', '.join(sorted(POOL_ROUTERS))}; got {name!r}."
        ) from None
    return router


def replica_router(name: str) -> ReplicaRouter:
    """The replica router registered under `name`; an unknown name lists the known ones."""
    try:
        router: ReplicaRouter = REPLICA_ROUTERS[name]()
    except KeyError:
        raise InputError(
            f"replica router must be one of {', '.join(sorted(REPLICA_ROUTERS))}; got {name!r}."
        ) from None
    return router
