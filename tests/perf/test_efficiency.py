"""Efficiency priors: documented, within physical bounds, looked up by family and engine."""

from __future__ import annotations

import pytest

from megawatt.errors import CatalogError
from megawatt.perf import family_of, prior
from megawatt.perf.efficiency import ENGINES, PRIORS


def test_wafers_are_their_own_family_and_everything_else_is_gpu_like() -> None:
    assert family_of("wafer") == "wafer"
    assert family_of("gpu") == "gpu"
    assert family_of("tpu") == "gpu"


@pytest.mark.parametrize("key", sorted(PRIORS), ids="/".join)
def test_every_prior_is_a_fraction_of_peak_with_a_source(key: tuple[str, str]) -> None:
    eff = PRIORS[key]
    for name in ("compute", "attention", "memory", "link"):
        assert 0.0 < getattr(eff, name) <= 1.0, name
    assert eff.step_overhead_s >= 0.0 and eff.seq_overhead_s >= 0.0
    assert 0.0 <= eff.sram_reserved_fraction < 1.0
    assert "prior" in eff.source
    assert key[1] in ENGINES


def test_an_unknown_engine_lists_the_known_ones() -> None:
    with pytest.raises(CatalogError, match=r"known: .*gpu/vllm.*wafer/cerebras"):
        prior("gpu", "tensorflow")


def test_with_values_replaces_some_and_keeps_the_rest() -> None:
    base = prior("gpu", "vllm")
    tuned = base.with_values(compute=0.7)
    assert tuned.compute == 0.7
    assert tuned.memory == base.memory
    assert base.compute == 0.60  # frozen: the prior is untouched
