"""The length assumptions of the datasets measurements name: the MLPerf datasets' prompt and
output lengths (their means are not published; `megawatt calibrate` estimates the input means),
the stand-ins for rows of unknown lengths, and the serving benchmarks' random dataset."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from megawatt.perf.efficiency import calibration_document
from megawatt.workload import Fixed, LengthDistribution, Lognormal

__all__ = [
    "DATASETS",
    "DECODE_ONLY_OUTPUT",
    "OTHER_DATASETS",
    "RANDOM_DATASET",
    "UNKNOWN_LENGTHS",
    "DatasetLengths",
    "InputMeans",
    "assumed_input_mean",
    "fitted_input_means",
    "lognormal_with_mean",
]


@dataclass(frozen=True)
class DatasetLengths:
    """The length distribution assumed for a dataset: a clipped lognormal input, and an output
    with the row's mean (lognormal of spread `output_sigma`, clipped at `output_limit`)."""

    input_median: float
    input_sigma: float
    input_limit: int
    output_sigma: float
    output_limit: int
    default_output_mean: float | None
    note: str

    def input_distribution(self) -> Lognormal:
        """The assumed prompt lengths."""
        return Lognormal(self.input_median, self.input_sigma, 1, self.input_limit)

    def output_distribution(self, mean: float) -> LengthDistribution:
        """Output lengths with the given mean, clipped at the dataset's output limit."""
        return lognormal_with_mean(mean, self.output_sigma, self.output_limit)


DATASETS: dict[str, DatasetLengths] = {
    "mlperf-openorca": DatasetLengths(
        500, 0.7, 1024, 0.8, 1024, None,
        "ASSUMED input lognormal median 500, sigma 0.7, clipped at the 1,024-token limit "
        "(mean ~560); output lognormal sigma 0.8 with the row's mean, clipped at 1,024",
    ),
    "mlperf-mixtral": DatasetLengths(
        300, 0.8, 2048, 0.8, 1024, None,
        "ASSUMED input lognormal median 300, sigma 0.8, clipped at 2,048 (limit not stated; "
        "OpenOrca, GSM8K and MBXP prompts are short); output sigma 0.8, clipped at 1,024",
    ),
    "mlperf-llama3.1-405b": DatasetLengths(
        8000, 0.7, 20000, 0.6, 2000, None,
        "ASSUMED input lognormal median 8,000, sigma 0.7, clipped at the 20,000-token limit "
        "(long-context subsets; mean ~9,400); output sigma 0.6, clipped at 2,000",
    ),
    "mlperf-cnndm": DatasetLengths(
        900, 0.45, 2540, 0.3, 128, 120.0,
        "ASSUMED input lognormal median 900, sigma 0.45, clipped at 2,540 (news articles, mean "
        "~990); output mean 120 when the row has none (most outputs hit the 128-token cap)",
    ),
    "mlperf-deepseek-r1": DatasetLengths(
        500, 0.8, 3136, 0.9, 20000, None,
        "ASSUMED input lognormal median 500, sigma 0.8, clipped at the 3,136-token limit "
        "(math, science and code questions, mean ~680); output sigma 0.9, clipped at 20,000",
    ),
}
OTHER_DATASETS = ("fixed", "unknown")
UNKNOWN_LENGTHS = (1000, 1000)
DECODE_ONLY_OUTPUT = 64
RANDOM_DATASET = "random"
"""The calibration file's name for the serving benchmarks' random dataset (uniform lengths of
random tokens, outputs forced by ignore_eos), whose draft acceptance calibration estimates."""


def lognormal_with_mean(mean: float, sigma: float, limit: int) -> LengthDistribution:
    """Lengths lognormal of spread `sigma`, clipped to 1..`limit` tokens, whose clipped mean is
    `mean` (the median found by bisection); fixed lengths when `mean` reaches the limit or
    `sigma` is 0."""
    if mean >= limit:
        return Fixed(limit)
    if sigma == 0:
        return Fixed(max(1, round(mean)))
    lo, hi = 1e-3, float(limit) * 10
    for _ in range(80):  # bisection on the median: the clipped mean grows with it
        mid = math.sqrt(lo * hi)
        if Lognormal(mid, sigma, 1, limit).mean < mean:
            lo = mid
        else:
            hi = mid
    return Lognormal(math.sqrt(lo * hi), sigma, 1, limit)


InputMeans = Mapping[str, float]
"""Mean input tokens per MLPerf dataset (their means are not published: README, "Dataset
lengths"), as `megawatt calibrate` estimates them; a dataset not in it keeps `DATASETS`."""


def assumed_input_mean(dataset: str) -> float:
    """The mean input length `DATASETS` assumes for an MLPerf dataset (the prior of the
    estimate)."""
    return DATASETS[dataset].input_distribution().mean


def fitted_input_means() -> dict[str, float]:
    """The dataset input means of the packaged calibration file ({} when it has none)."""
    document = calibration_document() or {}
    return {
        name: float(d["input_mean"])
        for name, d in document.get("datasets", {}).items()
        if d.get("status") == "fitted"
    }
