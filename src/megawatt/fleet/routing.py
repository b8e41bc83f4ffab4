"""Routers: which pool a request goes to, and which replica of the pool serves it. Small
Protocols with registries beside them; an unknown name lists the known ones.

Pool routers split a fleet's traffic between pools (by capacity, by request class, by cost);
replica routers pick a replica inside a pool (random, round robin, least outstanding work).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from megawatt.errors import InputError


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

REPLICA_ROUTERS: tuple[str, ...] = ("least_outstanding", "random", "round_robin")


def pool_router(name: str) -> PoolRouter:
    """The pool router registered under `name`."""
    try:
        router: PoolRouter = POOL_ROUTERS[name]()
    except KeyError:
        raise InputError(
            f"pool router must be one of {', '.join(sorted(POOL_ROUTERS))}; got {name!r}."
        ) from None
    return router


def check_replica_router(name: str) -> str:
    """`name` if it is a known replica router, else a clear error."""
    if name not in REPLICA_ROUTERS:
        raise InputError(f"replica router must be one of {', '.join(REPLICA_ROUTERS)}; got {name!r}.")
    return name


@dataclass
class RoundRobin:
    """Replica picker cycling through replicas."""

    n: int
    _next: int = field(default=0)

    def pick(self) -> int:
        """The next replica index."""
        i = self._next
        self._next = (i + 1) % self.n
        return i
