"""Capacity for the planner is the simulator's: the number `megawatt run` gives for the class
alone on the system, per system, and a store keeps it under a key that changes when anything
that determines it changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from megawatt.deal.capacity import (
    CapacityTask,
    SimulatedCapacity,
    capacity_key,
    capacity_scenario,
)
from megawatt.deal.spec import load_plan
from megawatt.plan import per_system
from megawatt.study import run_study

TINY = Path(__file__).parent / "tiny.yaml"
CHAT = CapacityTask("hgx-h200", "trtllm", None, "gpt-oss-20b", "chat")


class MemoryStore:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def put(self, key: str, record: dict[str, Any]) -> None:
        self.records[key] = record


def test_the_capacity_scenario_is_the_class_alone_at_its_slo() -> None:
    plan = load_plan(TINY)
    sc = capacity_scenario(plan, CHAT)
    assert sc.models == ["gpt-oss-20b"] and sc.options[0].pools[0].system == "hgx-h200"
    assert sc.slo.tpot_p99_s == 0.1 and sc.seed == plan.seed
    assert sc.simulation.n_requests == 100 and not sc.fleet.simulate_demand
    assert isinstance(sc.traffic.mix, list) and [c["name"] for c in sc.traffic.mix] == ["chat"]


def test_the_capacity_is_megawatt_runs_per_system() -> None:
    plan = load_plan(TINY)
    got = SimulatedCapacity(1)(plan, [CHAT])[CHAT]
    pool = run_study(capacity_scenario(plan, CHAT), workers=1).options[0].pools[0]
    expected = per_system(pool.deployment, pool.capacity.output_tokens_per_s)
    assert got.tokens_per_s_per_system == pytest.approx(expected, rel=1e-12)
    assert got.tokens_per_s_per_system > 0 and got.system_power_w == 10_200.0
    assert got.tokens_per_s_per_it_mw == pytest.approx(expected / 0.0102)


def test_a_class_whose_slo_no_plan_meets_has_no_capacity() -> None:
    fast = CapacityTask("hgx-h200", "trtllm", None, "gpt-oss-20b", "fast")
    got = SimulatedCapacity(1)(load_plan(TINY), [fast])[fast]
    assert got.tokens_per_s_per_system == 0.0 and "SLO not met" in got.reason


def test_a_store_keeps_capacities_and_a_bad_record_is_simulated_again() -> None:
    plan = load_plan(TINY)
    store = MemoryStore()
    first = SimulatedCapacity(1, store)(plan, [CHAT])
    again = SimulatedCapacity(1, store)
    assert again(plan, [CHAT]) == first and (again.hits_, again.runs_) == (1, 0)
    (key,) = store.records
    store.records[key] = {**store.records[key], "tokens_per_s_per_system": "lots"}
    fresh = SimulatedCapacity(1, store)
    assert fresh(plan, [CHAT]) == first and (fresh.hits_, fresh.runs_) == (0, 1)


def test_the_key_follows_what_determines_the_number() -> None:
    plan = load_plan(TINY)
    key = capacity_key(capacity_scenario(plan, CHAT))
    assert capacity_key(capacity_scenario(plan, CHAT)) == key
    tighter = load_plan(TINY, ["classes.0.slo.tpot_p99_s=0.05"])
    other_seed = load_plan(TINY, ["seed=8"])
    assert capacity_key(capacity_scenario(tighter, CHAT)) != key
    assert capacity_key(capacity_scenario(other_seed, CHAT)) != key
