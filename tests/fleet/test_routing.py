"""Routers: pool routers split classes over pools within capacity; replica routers are known by
name; a pool simulation serves every request exactly once."""

from __future__ import annotations

import numpy as np
import pytest

from megawatt.errors import InputError
from megawatt.fleet.routing import (
    POOL_ROUTERS,
    REPLICA_ROUTERS,
    PoolTarget,
    ReplicaRouter,
    pool_router,
    replica_router,
)

POOLS = [
    PoolTarget("fast", 100.0, usd_per_request=3e-4, tpot_s=0.002),
    PoolTarget("cheap", 300.0, usd_per_request=1e-4, tpot_s=0.030),
]
CLASSES = ["chat", "reasoning", "coding"]
SHARES = [0.6, 0.3, 0.1]


@pytest.mark.parametrize("name", sorted(POOL_ROUTERS))
def test_every_pool_router_sends_every_class_somewhere_within_capacity(name: str) -> None:
    m = pool_router(name).shares(CLASSES, SHARES, POOLS)
    assert m.shape == (3, 2)
    assert np.allclose(m.sum(axis=1), 1.0)
    load = np.asarray(SHARES) @ m  # share of all traffic each pool takes
    assert np.allclose(load.sum(), 1.0)
    assert np.all(load <= np.array([0.25, 0.75]) + 1e-9)  # capacity shares 100:300


def test_class_aware_sends_latency_sensitive_classes_to_the_fast_pool_first() -> None:
    m = pool_router("class_aware").shares(CLASSES, SHARES, POOLS)
    assert m[0, 0] > 0 and m[1, 0] == 0  # chat to the fast pool, reasoning kept off it


def test_cost_aware_fills_the_cheapest_pool_first() -> None:
    m = pool_router("cost_aware").shares(CLASSES, SHARES, POOLS)
    assert m[0, 1] == pytest.approx(1.0)  # chat (first) fits entirely in the cheap pool


def test_unknown_routers_list_the_known_ones() -> None:
    with pytest.raises(InputError, match="class_aware, cost_aware, proportional"):
        pool_router("fastest")
    with pytest.raises(InputError, match="least_outstanding, random, round_robin; got 'shortest'"):
        replica_router("shortest")


@pytest.mark.parametrize("name", sorted(REPLICA_ROUTERS))
def test_every_replica_router_is_registered_under_its_name(name: str) -> None:
    router = replica_router(name)
    assert isinstance(router, REPLICA_ROUTERS[name])
    if router.joint:
        return
    targets = router.targets(np.random.default_rng(0), 12, 4)
    assert targets.shape == (12,) and targets.min() >= 0 and targets.max() < 4


def test_round_robin_takes_the_replicas_in_turn() -> None:
    router: ReplicaRouter = replica_router("round_robin")
    assert router.targets(np.random.default_rng(0), 7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]
