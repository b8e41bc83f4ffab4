"""The step-model factory: a deployment's roofline, wrapped for speculation in one place, and
which step models export coefficients for the compiled engine."""

from __future__ import annotations

from dataclasses import replace

import pytest

from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import BatchShape, Deployment, RooflineStepModel
from megawatt.perf.factory import ExportsCoefficients, exported_coefficients, speculation_of, step_model
from megawatt.perf.speculative import Speculation, SpeculativeStepModel, wafer_speculation

CATALOG = load_catalog()
SPEC = Speculation(3, 0.7, 0.1)


def _gpu() -> Deployment:
    system = CATALOG.system("hgx-h200")
    return Deployment(load_model("llama-3.1-8b"), system, CATALOG.device("h200-sxm"), weight_dtype="fp8")


def _wafer() -> Deployment:
    system = CATALOG.system("cs-3")
    return Deployment(
        load_model("llama-3.1-70b"), system, CATALOG.device(system.device_id), pp=6, engine="cerebras",
        draft_model=load_model("llama-3.1-8b"),
    )


def test_a_deployment_without_drafts_gets_its_roofline() -> None:
    model = step_model(_gpu())
    assert type(model) is RooflineStepModel
    assert isinstance(model, ExportsCoefficients) and exported_coefficients(model) is not None


def test_a_gpu_drafts_at_its_stated_cost_and_a_wafer_at_its_drafts_measured_pass() -> None:
    gpu = step_model(_gpu(), speculation=SPEC)
    assert isinstance(gpu, SpeculativeStepModel) and gpu.speculation == SPEC and not gpu.pipelined_verify
    wafer_dep = _wafer()
    wafer = step_model(wafer_dep, speculation=SPEC)
    assert isinstance(wafer, SpeculativeStepModel) and wafer.pipelined_verify
    assert wafer.speculation == wafer_speculation(wafer_dep, 3, 0.7) == speculation_of(wafer_dep, SPEC)
    assert speculation_of(replace(wafer_dep, draft_model=None), SPEC) == SPEC
    # The deployment's own speculation is used when none is passed.
    assert step_model(replace(_gpu(), speculation=SPEC)).step_time(BatchShape.of([100], [], None)) == (
        pytest.approx(gpu.step_time(BatchShape.of([100], [], None)))
    )


def test_a_class_that_retimes_steps_exports_no_coefficients() -> None:
    class Retimed(RooflineStepModel):  # inherits coefficients() but not their step times
        def step_time(self, batch: BatchShape) -> float:
            return 2 * super().step_time(batch)

    assert exported_coefficients(Retimed(_gpu())) is None
    assert exported_coefficients(object()) is None
