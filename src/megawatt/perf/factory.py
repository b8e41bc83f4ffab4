"""One place that turns a deployment into its step model, and says which step models the
compiled engine can run.

`step_model(dep)` is the deployment's roofline (`RooflineStepModel`), wrapped for speculative
decoding when it drafts (`SpeculativeStepModel`): on a wafer with a draft model kept on the
same wafers, the draft's cost is its own measured pass (`wafer_speculation`) and verify is
pipelined; elsewhere the stated draft cost. The serving drivers, `explain` and validation build
their step models here.

`exported_coefficients(model)` gives the coefficients a step model exports for the compiled
engine (`ExportsCoefficients`), or None when it exports none, or when its class retimes steps
but inherits `coefficients()` from a parent (they would not be its step times).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from megawatt.errors import InputError
from megawatt.perf.deployment import Deployment
from megawatt.perf.memory import MemoryPlan, plan_memory
from megawatt.perf.roofline import RooflineStepModel, StepCoefficients, StepModel
from megawatt.perf.speculative import Speculation, SpeculativeStepModel, wafer_speculation

__all__ = ["ExportsCoefficients", "exported_coefficients", "speculation_of", "step_model"]


@runtime_checkable
class ExportsCoefficients(Protocol):
    """A step model whose step times the compiled engine can reproduce from its coefficients."""

    def coefficients(self) -> StepCoefficients: ...


def speculation_of(dep: Deployment, spec: Speculation) -> Speculation:
    """The speculation a deployment runs with `spec`: on a wafer with a draft model, its drafts
    and acceptance at the draft's measured cost (`wafer_speculation`); else `spec`."""
    if dep.family == "wafer" and dep.draft_model is not None:
        return wafer_speculation(dep, spec.draft_tokens, spec.acceptance)
    return spec


def step_model(
    dep: Deployment, plan: MemoryPlan | None = None, speculation: Speculation | None = None
) -> StepModel:
    """The step model of `dep` (see the module docstring): speculative when `speculation` is
    given, else when the deployment states one. `plan` defaults to `plan_memory(dep)`."""
    roofline = RooflineStepModel(dep, plan if plan is not None else plan_memory(dep))
    spec = speculation if speculation is not None else dep.speculation
    if spec is None:
        return roofline
    wafer = dep.family == "wafer"
    return SpeculativeStepModel(roofline, speculation_of(dep, spec), pipelined_verify=wafer)


def exported_coefficients(model: object) -> StepCoefficients | None:
    """The step coefficients `model` exports (see the module docstring), or None."""
    if not isinstance(model, ExportsCoefficients):
        return None
    mro = type(model).__mro__
    owners = [next((k for k in mro if name in vars(k)), None) for name in ("coefficients", "step_time")]
    if owners[0] is not owners[1]:
        return None
    try:
        out = model.coefficients()
    except InputError:  # a wrapper around a model without coefficients
        return None
    return out if isinstance(out, StepCoefficients) else None
