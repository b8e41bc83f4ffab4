"""Deals: judge a multi-year compute deal with an optimised supplier portfolio and its risk
(`megawatt plan`). A plan file (`spec`) becomes coefficients (`problem`) from simulated
capacities (`capacity`); a MILP on HiGHS chooses what to buy when (`optimise`); a Latin-hypercube
Monte Carlo turns the uncertain inputs into risk (`risk`); `planner` runs it all."""

from megawatt.deal.capacity import (
    CapacitySource,
    CapacityStore,
    CapacityTask,
    PoolCapacity,
    SimulatedCapacity,
    TableCapacity,
    capacity_scenario,
)
from megawatt.deal.optimise import Solution, solve
from megawatt.deal.planner import DealVerdict, PlanOutcome, PlanResult, run_plan
from megawatt.deal.problem import Problem, build_problem, capacity_tasks
from megawatt.deal.spec import DealSpec, Plan, load_deal, load_plan, parse_plan, with_deal

__all__ = [
    "CapacitySource",
    "CapacityStore",
    "CapacityTask",
    "DealSpec",
    "DealVerdict",
    "Plan",
    "PlanOutcome",
    "PlanResult",
    "PoolCapacity",
    "Problem",
    "SimulatedCapacity",
    "Solution",
    "TableCapacity",
    "build_problem",
    "capacity_scenario",
    "capacity_tasks",
    "load_deal",
    "load_plan",
    "parse_plan",
    "run_plan",
    "solve",
    "with_deal",
]
