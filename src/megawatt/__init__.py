"""megawatt: what does this much compute buy? Simulate AI inference fleets from the chip up.

import megawatt as mw
study = mw.run_study(mw.load_scenario())          # the 750 MW question
deal = mw.run_plan(mw.load_plan())                 # the 750 MW deal, judged (megawatt plan)
model = mw.load_model("llama-3.1-70b")
print(model.param_counts().total, model.kv_bytes_per_token())
images = mw.image_capacity("dgx-h100", "sdxl", dtype="fp8")   # images/s, J per image
"""

from megawatt.deal import Plan, PlanResult, load_plan, run_plan
from megawatt.errors import (
    CatalogError,
    FitError,
    InputError,
    MegawattError,
    NotFittedError,
    PlanError,
    ScenarioError,
    TraceError,
)
from megawatt.explain import Explanation, explain_deployment
from megawatt.fleet import Economics, ImageCapacity, OptionResult, PoolResult, PowerBudget, image_capacity
from megawatt.hardware import Catalog, Device, System, load_catalog
from megawatt.model import ImageModel, ModelSpec, load_image_model, load_model
from megawatt.perf import (
    BatchShape,
    Deployment,
    MemoryPlan,
    RooflineStepModel,
    StepModel,
    plan_memory,
)
from megawatt.plan import PoolSettings, choose
from megawatt.scenario import Scenario, load_scenario, parse_scenario
from megawatt.serving import (
    Capacity,
    KvBudget,
    ReplicaConfig,
    RunResult,
    Slo,
    capacity,
    concurrency,
    offline,
    simulate,
    single_user,
)
from megawatt.sim import Environment
from megawatt.study import StudyResult, run_study
from megawatt.workload import Mix, Requests, chatgpt_mix, load_trace

__version__ = "0.1.0"

__all__ = [
    "BatchShape",
    "Capacity",
    "Catalog",
    "CatalogError",
    "Deployment",
    "Device",
    "Economics",
    "Environment",
    "Explanation",
    "FitError",
    "ImageCapacity",
    "ImageModel",
    "InputError",
    "KvBudget",
    "MegawattError",
    "MemoryPlan",
    "Mix",
    "ModelSpec",
    "NotFittedError",
    "OptionResult",
    "Plan",
    "PlanError",
    "PlanResult",
    "PoolResult",
    "PoolSettings",
    "PowerBudget",
    "ReplicaConfig",
    "Requests",
    "RooflineStepModel",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "Slo",
    "StepModel",
    "StudyResult",
    "System",
    "TraceError",
    "capacity",
    "chatgpt_mix",
    "choose",
    "concurrency",
    "explain_deployment",
    "image_capacity",
    "load_catalog",
    "load_image_model",
    "load_model",
    "load_plan",
    "load_scenario",
    "load_trace",
    "offline",
    "parse_scenario",
    "plan_memory",
    "run_plan",
    "run_study",
    "simulate",
    "single_user",
]
