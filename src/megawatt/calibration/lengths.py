"""A row's requests: its prompt and output length distributions (the dataset's assumption, the
random dataset its notes state, or its stated lengths) and the requests drawn from them, seeded
by the row."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace

import numpy as np

from megawatt.calibration.datasets import (
    DATASETS,
    DECODE_ONLY_OUTPUT,
    UNKNOWN_LENGTHS,
    InputMeans,
    lognormal_with_mean,
)
from megawatt.calibration.measurements import Measurement, phase, run_key
from megawatt.errors import InputError
from megawatt.workload import Fixed, LengthDistribution, Requests, Uniform

__all__ = [
    "is_random_dataset",
    "length_dataset",
    "random_lengths",
    "row_lengths",
    "row_requests",
    "with_input_mean",
]


def length_dataset(m: Measurement) -> str:
    """The MLPerf dataset whose unpublished mean input length a row depends on ('' if none:
    fixed or stated lengths, decode-only rows)."""
    if m.dataset in DATASETS and m.input_len is None and phase(m) != "decode-only":
        return m.dataset
    return ""


def with_input_mean(m: Measurement, means: InputMeans) -> Measurement:
    """The row with the mean input length `means` gives its dataset (`length_dataset`), as if
    stated; the row itself when `means` has none for it."""
    d = length_dataset(m)
    return replace(m, input_len=means[d]) if d in means else m


_RANDOM_RE = re.compile(r"uniform in \[(\d*\.?\d+)\s*L,\s*L\]", re.IGNORECASE)
_ISL_OSL_RE = re.compile(r"\bISL/OSL\s+(\d+)/(\d+)", re.IGNORECASE)


def _nominal_length(mean: float, ratio: float) -> int:
    """The nominal length L whose draw `Uniform.of_range_ratio(L, ratio)` has mean `mean`
    (InferenceX states the means: 921.5 for 1,024, 7,372.5 for 8,192)."""
    guess = round(2.0 * mean / (1.0 + ratio))
    best = min(
        range(max(1, guess - 3), guess + 4),
        key=lambda n: abs(Uniform.of_range_ratio(n, ratio).mean - mean),
    )
    return best


def random_lengths(m: Measurement) -> tuple[Uniform, Uniform] | None:
    """The serving benchmark's `random` dataset a row's notes state (`uniform in [0.8L, L]`):
    prompt and output lengths uniform in [int(ratio L), L] (benchmark_serving.py), L from the
    notes' `ISL/OSL` or from the stated means; None when the notes state no such draw."""
    hit = _RANDOM_RE.search(m.notes)
    if hit is None or m.input_len is None or m.output_len is None:
        return None
    ratio = float(hit.group(1))
    if not 0.0 < ratio <= 1.0:
        return None
    nominal = _ISL_OSL_RE.search(m.notes)
    lengths = []
    for k, mean in enumerate((m.input_len, m.output_len)):
        n = int(nominal.group(k + 1)) if nominal else _nominal_length(mean, ratio)
        if abs(Uniform.of_range_ratio(n, ratio).mean - mean) > 1.0:  # notes and means disagree
            n = _nominal_length(mean, ratio)
        lengths.append(Uniform.of_range_ratio(n, ratio))
    return lengths[0], lengths[1]


def is_random_dataset(m: Measurement) -> bool:
    """Whether a row's prompts are the serving benchmarks' random dataset (`random_lengths`)."""
    return random_lengths(m) is not None


def row_lengths(m: Measurement) -> tuple[LengthDistribution, LengthDistribution, str]:
    """Input and output length distributions for a row, and the assumption in words."""
    uniform = random_lengths(m)
    if uniform is not None:
        u_in, u_out = uniform
        return u_in, u_out, (
            f"random lengths uniform in [{u_in.min_tokens}, {u_in.max_tokens}] / "
            f"[{u_out.min_tokens}, {u_out.max_tokens}]"
        )
    if phase(m) == "decode-only":
        ctx = int(m.input_len or UNKNOWN_LENGTHS[0])
        return Fixed(ctx), Fixed(DECODE_ONLY_OUTPUT), f"decode-only at context {ctx}"
    if m.dataset in DATASETS:
        d = DATASETS[m.dataset]
        out_mean = m.output_len or d.default_output_mean
        if out_mean is None:
            raise InputError(f"row {m.id}: dataset {m.dataset} needs an output_len.")
        if m.input_len:
            inp: LengthDistribution = lognormal_with_mean(m.input_len, d.input_sigma, d.input_limit)
        else:
            inp = d.input_distribution()
        return inp, d.output_distribution(out_mean), f"{m.dataset} lengths (assumed)"
    if m.input_len is None and m.output_len is None:
        i, o = UNKNOWN_LENGTHS
        return Fixed(i), Fixed(o), f"lengths not stated: {i}/{o} assumed"
    i = round(m.input_len or UNKNOWN_LENGTHS[0])
    o = round(m.output_len or UNKNOWN_LENGTHS[1])
    return Fixed(i), Fixed(o), f"fixed {i}/{o}"


def _seed_text(m: Measurement) -> str:
    """What seeds a row's request draws: its run for closed-loop runs (whose three metrics share
    one simulation), else its id."""
    if m.scenario == "max_throughput_concurrency":
        return repr(run_key(m))
    return m.id


def row_requests(m: Measurement, n: int, seed: int = 0) -> Requests:
    """`n` requests of the row's lengths (`row_lengths`), all arriving at 0 (drivers set the
    times), seeded by the row (`_seed_text`) and `seed`; decode-only rows have their prompt
    cached but for the last token."""
    inp, out, _ = row_lengths(m)
    digest = hashlib.sha256(_seed_text(m).encode()).hexdigest()[:8]
    rng = np.random.default_rng([seed, int(digest, 16)])
    prompt = inp.sample(rng, n)
    output = out.sample(rng, n)
    cached = np.zeros(n, dtype=np.int64)
    if phase(m) == "decode-only":
        cached = prompt - 1
    return Requests(np.zeros(n), prompt, output, cached, np.zeros(n, dtype=np.int32), ("row",))
