"""The speculative decoding a row is replayed with: the assumed drafts and acceptance, a wafer's
draft model, and the acceptance `megawatt calibrate` fits to the random dataset's MTP rows."""

from __future__ import annotations

from dataclasses import replace

from megawatt.calibration.datasets import RANDOM_DATASET
from megawatt.calibration.lengths import random_lengths
from megawatt.calibration.measurements import Measurement
from megawatt.perf.efficiency import SPECULATIVE_ENGINES, calibration_document
from megawatt.perf.speculative import Speculation

__all__ = [
    "SPECULATION",
    "WAFER_DRAFT_MODEL",
    "fitted_acceptance",
    "row_speculation",
    "spec_label",
]

SPECULATION = Speculation(draft_tokens=3, acceptance=0.8, draft_cost=0.1)
WAFER_DRAFT_MODEL = "llama-3.1-8b"
"""The draft model assumed for speculative decoding on wafers (Cerebras has not published its
drafts; an 8B Llama is the smallest catalog model sharing Llama 3's tokenizer)."""


def row_speculation(
    m: Measurement, engine: str, family: str, acceptance: float | None
) -> Speculation | None:
    """The speculative decoding a row is replayed with (None: none): its `spec_decode`, or an
    unknown one on an engine that speculates by default (`SPECULATIVE_ENGINES`). GPU rows of the
    serving benchmarks' random dataset (InferenceX's MTP runs) draft with the acceptance
    `acceptance`, else the one `megawatt calibrate` fitted for that dataset
    (`fitted_acceptance`), else `SPECULATION`'s."""
    if not (m.spec_decode == "yes" or (m.spec_decode == "unknown" and engine in SPECULATIVE_ENGINES)):
        return None
    if family == "gpu" and random_lengths(m) is not None:
        a = acceptance if acceptance is not None else fitted_acceptance()
        if a is not None:
            return replace(SPECULATION, acceptance=a)
    return SPECULATION


def spec_label(spec: Speculation | None) -> str:
    """The speculation of a plan in words ('' without)."""
    if spec is None:
        return ""
    return f" spec-decode k={spec.draft_tokens} a={spec.acceptance:.2f}"


def fitted_acceptance() -> float | None:
    """The acceptance rate of speculative drafts on the serving benchmarks' random dataset that
    the packaged calibration file holds (None when it has none)."""
    document = calibration_document() or {}
    fit = document.get("speculation", {}).get(RANDOM_DATASET)
    return float(fit["acceptance"]) if fit and fit.get("status") == "fitted" else None
