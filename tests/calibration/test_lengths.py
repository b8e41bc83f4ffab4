"""A measurement row's requests: the serving benchmarks' random dataset read from its notes
(uniform in [int(ratio L), L], L stated or recovered from the stated means), decode-only rows at
their context with the prompt cached, MLPerf datasets' assumed lognormals with the row's output
mean, stated lengths fixed, unknown lengths assumed; and a lognormal fitted to a mean by its
median, as its clipped mean says. Draws are seeded by the row's run."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from megawatt.calibration.datasets import (
    DATASETS,
    DECODE_ONLY_OUTPUT,
    UNKNOWN_LENGTHS,
    assumed_input_mean,
    lognormal_with_mean,
)
from megawatt.calibration.lengths import (
    is_random_dataset,
    length_dataset,
    random_lengths,
    row_lengths,
    row_requests,
    with_input_mean,
)
from megawatt.calibration.measurements import Measurement
from megawatt.errors import InputError
from megawatt.workload import Fixed, Lognormal, Uniform


def row(**changes: object) -> Measurement:
    base = Measurement(
        line=2, id="R1", hardware="h200-sxm", n_devices=8, model="llama-3.1-8b", weight_dtype="fp8",
        engine="vllm", scenario="max_throughput_concurrency", input_len=None, output_len=None,
        dataset="unknown", concurrency=64, n_requests=None, ttft_p99_limit_ms=None,
        tpot_p99_limit_ms=None, spec_decode="no", metric="output_tokens_per_s", value=1000.0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# -- the random dataset --------------------------------------------------------------------------
def test_notes_with_isl_osl_give_the_nominal_lengths() -> None:
    m = row(input_len=921.5, output_len=921.5, notes="ISL/OSL 1024/1024, random lengths uniform in [0.8L, L]")
    got = random_lengths(m)
    assert got == (Uniform(819, 1024), Uniform(819, 1024))  # int(0.8 x 1024) = 819
    assert is_random_dataset(m)


def test_without_isl_osl_the_nominal_length_is_recovered_from_the_stated_mean() -> None:
    """InferenceX states means: 921.5 for L = 1,024 and 7,372.5 for L = 8,192 at ratio 0.8."""
    m = row(input_len=7372.5, output_len=921.5, notes="uniform in [0.8L, L] random tokens")
    inp, out = random_lengths(m)  # type: ignore[misc]
    assert (inp.min_tokens, inp.max_tokens) == (6553, 8192)
    assert (out.min_tokens, out.max_tokens) == (819, 1024)
    assert inp.mean == pytest.approx(7372.5) and out.mean == pytest.approx(921.5)


def test_stated_means_win_over_notes_that_disagree() -> None:
    m = row(input_len=921.5, output_len=921.5, notes="ISL/OSL 8192/1024, uniform in [0.8L, L]")
    inp, _ = random_lengths(m)  # type: ignore[misc]
    assert inp == Uniform(819, 1024)


@pytest.mark.parametrize(
    "notes",
    ["TP8, fixed lengths", "uniform in [1.5L, L]", "uniform in [0L, L]"],
    ids=["no draw stated", "ratio above one", "ratio zero"],
)
def test_notes_without_a_valid_uniform_draw_are_not_the_random_dataset(notes: str) -> None:
    m = row(input_len=1000.0, output_len=1000.0, notes=notes)
    assert random_lengths(m) is None and not is_random_dataset(m)


def test_the_random_dataset_needs_both_stated_means() -> None:
    assert random_lengths(row(input_len=921.5, notes="uniform in [0.8L, L]")) is None


def test_random_rows_are_drawn_uniformly_in_their_ranges() -> None:
    m = row(input_len=921.5, output_len=921.5, notes="ISL/OSL 1024/1024, uniform in [0.8L, L]")
    _, _, words = row_lengths(m)
    assert words == "random lengths uniform in [819, 1024] / [819, 1024]"
    reqs = row_requests(m, 4000)
    for column in (reqs.prompt_tokens, reqs.output_tokens):
        assert column.min() >= 819 and column.max() <= 1024
        assert abs(column.mean() - 921.5) < 4 * 59.4 / np.sqrt(4000)  # sd of U[819,1024] ~ 59.4


# -- other rows ----------------------------------------------------------------------------------
def test_decode_only_rows_decode_a_few_tokens_at_their_context_with_the_prompt_cached() -> None:
    m = row(input_len=4096.0, output_len=None, notes="decode-only, batch 64")
    inp, out, words = row_lengths(m)
    assert (inp, out) == (Fixed(4096), Fixed(DECODE_ONLY_OUTPUT))
    assert words == "decode-only at context 4096"
    reqs = row_requests(m, 5)
    assert reqs.cached_tokens.tolist() == [4095] * 5  # all but the last prompt token
    assert length_dataset(replace(m, dataset="mlperf-openorca")) == ""  # no dataset mean needed


def test_decode_only_without_a_context_takes_the_unknown_length() -> None:
    inp, _, _ = row_lengths(row(notes="Decode-only run"))
    assert inp == Fixed(UNKNOWN_LENGTHS[0])


def test_stated_lengths_are_fixed_and_rounded() -> None:
    inp, out, words = row_lengths(row(input_len=127.6, output_len=64.0, dataset="fixed"))
    assert (inp, out, words) == (Fixed(128), Fixed(64), "fixed 128/64")
    inp, out, _ = row_lengths(row(input_len=None, output_len=300.0, dataset="fixed"))
    assert (inp, out) == (Fixed(UNKNOWN_LENGTHS[0]), Fixed(300))


def test_unknown_lengths_are_assumed_and_said_so() -> None:
    inp, out, words = row_lengths(row())
    assert (inp, out) == (Fixed(1000), Fixed(1000))
    assert words == "lengths not stated: 1000/1000 assumed"


def test_an_mlperf_row_takes_its_datasets_assumed_prompts_and_its_own_output_mean() -> None:
    m = row(dataset="mlperf-openorca", output_len=280.0)
    inp, out, words = row_lengths(m)
    assert inp == DATASETS["mlperf-openorca"].input_distribution()
    assert out.mean == pytest.approx(280.0, rel=1e-6)
    assert words == "mlperf-openorca lengths (assumed)"
    assert length_dataset(m) == "mlperf-openorca"


def test_a_dataset_with_a_default_output_mean_needs_no_output_length() -> None:
    _, out, _ = row_lengths(row(dataset="mlperf-cnndm"))
    assert out.mean == pytest.approx(120.0, rel=1e-6)


def test_an_mlperf_row_without_an_output_length_is_refused_naming_the_row() -> None:
    with pytest.raises(InputError, match=r"^row R1: dataset mlperf-openorca needs an output_len\.$"):
        row_lengths(row(dataset="mlperf-openorca"))


def test_an_estimated_input_mean_replaces_the_datasets_and_is_then_stated() -> None:
    m = row(dataset="mlperf-openorca", output_len=280.0)
    fitted = with_input_mean(m, {"mlperf-openorca": 640.0})
    assert fitted.input_len == 640.0 and length_dataset(fitted) == ""
    inp, _, _ = row_lengths(fitted)
    assert inp.mean == pytest.approx(640.0, rel=1e-6)
    assert with_input_mean(m, {"mlperf-mixtral": 300.0}) is m


# -- a lognormal with a given mean ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("mean", "sigma", "limit"), [(200.0, 0.8, 1024), (900.0, 0.45, 2540), (50.0, 1.5, 4000)]
)
def test_a_lognormal_is_fitted_to_its_clipped_mean(mean: float, sigma: float, limit: int) -> None:
    dist = lognormal_with_mean(mean, sigma, limit)
    assert isinstance(dist, Lognormal)
    assert (dist.sigma, dist.min_tokens, dist.max_tokens) == (sigma, 1, limit)
    assert dist.mean == pytest.approx(mean, rel=1e-9)
    draws = dist.sample(np.random.default_rng(0), 200_000)
    assert draws.mean() == pytest.approx(mean, rel=0.02)


def test_a_mean_at_the_limit_or_no_spread_is_fixed() -> None:
    assert lognormal_with_mean(1024.0, 0.8, 1024) == Fixed(1024)
    assert lognormal_with_mean(5000.0, 0.8, 1024) == Fixed(1024)
    assert lognormal_with_mean(99.6, 0.0, 1024) == Fixed(100)


def test_the_assumed_input_means_are_the_clipped_lognormals() -> None:
    """The notes' approximate means: OpenOrca ~560, 405B long context ~9,400, CNN/DM ~990."""
    assert assumed_input_mean("mlperf-openorca") == pytest.approx(560, rel=0.03)
    assert assumed_input_mean("mlperf-llama3.1-405b") == pytest.approx(9400, rel=0.03)
    assert assumed_input_mean("mlperf-cnndm") == pytest.approx(990, rel=0.03)
    for name, d in DATASETS.items():
        assert assumed_input_mean(name) < d.input_limit


# -- seeding -------------------------------------------------------------------------------------
def test_rows_of_one_run_draw_the_same_requests_and_other_runs_other_ones() -> None:
    """InferenceX publishes three metrics per run: their rows share one simulation's requests."""
    a = row(id="A", dataset="mlperf-openorca", output_len=280.0, metric="output_tokens_per_s")
    b = replace(a, id="B", metric="ttft_ms", value=300.0)
    other = replace(a, id="C", concurrency=128)
    ra, rb, rc = (row_requests(m, 50) for m in (a, b, other))
    assert np.array_equal(ra.prompt_tokens, rb.prompt_tokens)
    assert not np.array_equal(ra.prompt_tokens, rc.prompt_tokens)
    assert not np.array_equal(ra.prompt_tokens, row_requests(a, 50, seed=1).prompt_tokens)


def test_other_scenarios_are_seeded_by_the_row_id() -> None:
    a = row(id="A", scenario="offline", dataset="mlperf-openorca", output_len=280.0)
    other_id = replace(a, id="B")
    assert not np.array_equal(row_requests(a, 50).prompt_tokens, row_requests(other_id, 50).prompt_tokens)
    reqs = row_requests(a, 7)
    assert reqs.arrival_s.tolist() == [0.0] * 7 and reqs.class_names == ("row",)
