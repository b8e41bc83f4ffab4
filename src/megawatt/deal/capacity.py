"""Capacity for the planner, from the simulator: output tokens per second per system that a
(system, engine, model, traffic class) sustains at the class's SLO, as `megawatt run` reports it
for a one-pool scenario of that class alone (`capacity_scenario`). Runs are independent and
seeded, so they run in parallel processes; a `CapacityStore` keeps them between runs, keyed by a
hash of everything that determines the number (the scenario, the catalog entries, the model,
the calibration and the code).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from megawatt.deal.spec import ClassSpec, Plan
from megawatt.errors import InputError, PlanError
from megawatt.interrupts import worker_pool
from megawatt.scenario import Scenario, parse_scenario
from megawatt.study import check_plans, run_study
from megawatt.units import MW

CAPACITY_FORMAT = 1
"""Version of a stored capacity record; a record of another version is simulated again."""

PROBE_FACILITY_MW = 100.0
"""Facility power of the one-pool scenarios: enough for a whole replica of every plan; the
capacity per system does not depend on it."""


@dataclass(frozen=True)
class CapacityTask:
    """One capacity run: a catalog system with its engine, a model, a traffic class."""

    system: str
    engine: str
    engine_release: str | None
    model: str
    class_name: str


@dataclass(frozen=True)
class PoolCapacity:
    """What a system sustains for one class at its SLO: output tokens/s per system, the power
    of a system (W), the deployment the search chose, and why it stopped (empty when it met
    the SLO; SLO failures give 0 tokens/s)."""

    task: CapacityTask
    tokens_per_s_per_system: float
    system_power_w: float
    plan: str
    reason: str = ""

    @property
    def tokens_per_s_per_it_mw(self) -> float:
        """Output tokens/s per MW of IT load."""
        return self.tokens_per_s_per_system / (self.system_power_w / MW)


Progress = Callable[[int, int, str], None]
"""`progress(done, total, label)`: capacity runs finished."""


class CapacitySource(Protocol):
    """Gives the capacity of each task (the seam tests fill with a table)."""

    def __call__(
        self, plan: Plan, tasks: Sequence[CapacityTask], progress: Progress | None = None
    ) -> dict[CapacityTask, PoolCapacity]:
        """The capacity of every task."""


class CapacityStore(Protocol):
    """Keeps capacity records between runs (e.g. a folder on disk; see `megawatt.report.cache`)."""

    def get(self, key: str) -> dict[str, Any] | None:
        """The record stored under `key`, or None."""

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store `record` under `key`."""


def class_of(plan: Plan, name: str) -> ClassSpec:
    """The plan's class called `name`."""
    return next(c for c in plan.classes if c.name == name)


def capacity_scenario(plan: Plan, task: CapacityTask) -> Scenario:
    """The one-pool scenario whose `megawatt run` capacity is the task's: the class alone at its
    SLO, the plan's seed, engine release, hardware files and simulation settings."""
    cls = class_of(plan, task.class_name)
    pool: dict[str, Any] = {"system": task.system, "engine": task.engine}
    if task.engine_release is not None:
        pool["engine_release"] = task.engine_release
    data = {
        "name": f"{task.model} {task.class_name} on {task.system}",
        "description": f"capacity of one class for megawatt plan {plan.name!r}",
        "seed": plan.seed,
        "engine_release": plan.engine_release,
        "hardware_files": list(plan.hardware_files),
        "budget": {"facility_mw": PROBE_FACILITY_MW, "pue": 1.2},
        "models": [task.model],
        "options": [{"name": task.system, "pools": [pool]}],
        "traffic": {"mix": [cls.mix_entry()], "peak_to_mean": cls.peak_to_mean},
        "slo": cls.slo.model_dump(),
        "simulation": plan.capacity.model_dump(),
        "fleet": {"simulate_demand": False},
    }
    where = f"plan: class {task.class_name!r} with {task.model} on {task.system}"
    try:
        return parse_scenario(data, where=where)
    except InputError as exc:
        raise PlanError(str(exc)) from None


CODE_THAT_COUNTS = (
    "hardware",
    "model",
    "workload",
    "sim",
    "perf",
    "serving",
    "fleet",
    "plan",
    "scenario.py",
    "study.py",
    "units.py",
    "deal/capacity.py",
    "data/hardware",
    "data/models",
    "data/calibration",
    "data/power",
)
"""What a capacity run depends on, relative to the package: the layers up to the study, the
catalogs, the calibration and power curves (reports, the CLI and the planner's other parts do
not change a capacity)."""


@cache
def code_fingerprint() -> str:
    """A hash of the code and data a capacity depends on (`CODE_THAT_COUNTS`): any change makes
    every stored capacity stale."""
    base = Path(str(resources.files("megawatt")))
    digest = hashlib.sha256()
    for name in CODE_THAT_COUNTS:
        path = base / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts:
                continue
            digest.update(f.relative_to(base).as_posix().encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()


def capacity_key(scenario: Scenario) -> str:
    """The store key of a capacity run: the scenario, its hardware files' contents and the
    code fingerprint."""
    digest = hashlib.sha256(json.dumps(scenario.model_dump(mode="json"), sort_keys=True).encode())
    for name in scenario.hardware_files:
        digest.update(Path(name).read_bytes())
    digest.update(code_fingerprint().encode())
    return digest.hexdigest()[:40]


def _servable(scenario: Scenario, task: CapacityTask) -> None:
    """Refuse, before simulating, a class the system cannot serve at all (a request longer than
    the model's context, no plan that holds the weights and the longest request)."""
    try:
        check_plans(scenario)
    except InputError as exc:
        detail = str(exc).removeprefix("scenario: ")
        raise PlanError(
            f"plan: class {task.class_name!r} with {task.model} on {task.system}: {detail}"
        ) from None


def measure(scenario: Scenario, task: CapacityTask) -> PoolCapacity:
    """Run the one-pool scenario as `megawatt run` does (capacity searches only) and read the
    pool's output tokens/s per system."""
    study = run_study(scenario, workers=1, memory_limit_bytes=None)
    pool = study.options[0].pools[0]
    per_system = pool.output_tokens_per_s / pool.size.n_systems if pool.size.n_systems else 0.0
    return PoolCapacity(task, per_system, pool.system.power_w, pool.deployment.label, pool.capacity.reason)


def _record(cap: PoolCapacity) -> dict[str, Any]:
    return {
        "format": CAPACITY_FORMAT,
        "task": asdict(cap.task),
        "tokens_per_s_per_system": cap.tokens_per_s_per_system,
        "system_power_w": cap.system_power_w,
        "plan": cap.plan,
        "reason": cap.reason,
    }


def _from_record(task: CapacityTask, record: Mapping[str, Any]) -> PoolCapacity | None:
    """The capacity a stored record holds; None when it is of another format or task, or
    malformed (it is simulated again)."""
    try:
        if record.get("format") != CAPACITY_FORMAT or record.get("task") != asdict(task):
            return None
        rate = float(record["tokens_per_s_per_system"])
        power = float(record["system_power_w"])
        if not (math.isfinite(rate) and rate >= 0 and math.isfinite(power) and power > 0):
            return None
        return PoolCapacity(task, rate, power, str(record["plan"]), str(record["reason"]))
    except (KeyError, TypeError, ValueError):
        return None


class SimulatedCapacity:
    """Capacities simulated as `megawatt run` does, `workers` processes at a time, kept in
    `store` when one is given."""

    def __init__(self, workers: int = 1, store: CapacityStore | None = None) -> None:
        self.workers = workers
        self.store = store
        self.hits_ = 0
        self.runs_ = 0

    def __call__(
        self, plan: Plan, tasks: Sequence[CapacityTask], progress: Progress | None = None
    ) -> dict[CapacityTask, PoolCapacity]:
        """The capacity of every task: from the store, else simulated (and stored)."""
        out: dict[CapacityTask, PoolCapacity] = {}
        todo: dict[CapacityTask, tuple[Scenario, str]] = {}
        for task in dict.fromkeys(tasks):
            scenario = capacity_scenario(plan, task)
            _servable(scenario, task)
            key = capacity_key(scenario)
            record = self.store.get(key) if self.store is not None else None
            found = _from_record(task, record) if record is not None else None
            if found is not None:
                out[task] = found
                self.hits_ += 1
            else:
                todo[task] = (scenario, key)
        total = len(out) + len(todo)
        if progress:
            progress(len(out), total, "capacity runs (stored)")

        def done(task: CapacityTask, cap: PoolCapacity) -> None:
            out[task] = cap
            self.runs_ += 1
            if self.store is not None:
                self.store.put(todo[task][1], _record(cap))
            if progress:
                progress(len(out), total, f"{task.model} {task.class_name} on {task.system}")

        if self.workers <= 1 or len(todo) <= 1:
            for task, (scenario, _) in todo.items():
                done(task, measure(scenario, task))
        else:
            with worker_pool(min(self.workers, len(todo))) as pool:
                futures = {pool.submit(measure, scenario, task): task for task, (scenario, _) in todo.items()}
                for fut in as_completed(futures):
                    done(futures[fut], fut.result())
        return {task: out[task] for task in dict.fromkeys(tasks)}


class TableCapacity:
    """Capacities from a table (tests, or numbers measured elsewhere): tokens/s per IT MW per
    (system, model, class); missing entries serve nothing."""

    def __init__(self, per_it_mw: Mapping[tuple[str, str, str], float]) -> None:
        self.per_it_mw = dict(per_it_mw)

    def __call__(
        self, plan: Plan, tasks: Sequence[CapacityTask], progress: Progress | None = None
    ) -> dict[CapacityTask, PoolCapacity]:
        """Each task's tokens/s per IT MW from the table (a system of 1 MW)."""
        return {
            t: PoolCapacity(t, self.per_it_mw.get((t.system, t.model, t.class_name), 0.0), MW, "table")
            for t in tasks
        }
