"""The one search for the fewest stages that fit: its order and its bound, what `holds` asks of
memory, and `min_devices` on wafers and on GPU pipelines."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from megawatt.errors import FitError
from megawatt.hardware import load_catalog
from megawatt.model import load_model
from megawatt.perf import Deployment, plan_memory
from megawatt.plan import MAX_STAGES, fewest_stages, holds, min_devices, tp_widths

CATALOG = load_catalog()


def deployment(model_id: str, system_id: str, **settings: Any) -> Deployment:
    system = CATALOG.system(system_id)
    return Deployment(load_model(model_id), system, CATALOG.device(system.device_id), **settings)


def test_the_fewest_stages_is_the_first_count_that_fits_tried_in_order() -> None:
    tried: list[int] = []

    def fits(n: int) -> bool:
        tried.append(n)
        return n >= 5

    assert fewest_stages(fits) == 5
    assert tried == [1, 2, 3, 4, 5]
    assert fewest_stages(lambda n: n % 3 == 0, start=4) == 6


def test_the_search_stops_at_its_bound_and_says_none() -> None:
    tried: list[int] = []

    def never(n: int) -> bool:
        tried.append(n)
        return False

    assert fewest_stages(never, start=10) is None
    assert tried == list(range(10, 10 + MAX_STAGES))  # MAX_STAGES counts from the start
    assert fewest_stages(lambda n: n == 7, stop=6) is None
    assert fewest_stages(lambda n: n == 6, stop=6) == 6


def test_holds_asks_for_the_weights_and_every_sequence() -> None:
    dep = deployment("llama-3.1-8b", "hgx-h200", weight_dtype="fp8")
    plan = holds(dep)
    assert plan is not None
    tokens = 8192.0
    most = plan.max_sequences(tokens)
    assert holds(dep, tokens, most) is not None
    assert holds(dep, tokens, most + 1) is None
    too_big = deployment("llama-3.1-405b", "hgx-h200", tp=1, weight_dtype="bf16")
    assert holds(too_big) is None


def test_min_devices_on_gpus_counts_tp_times_pp() -> None:
    dep = deployment("llama-3.1-405b", "dgx-h100", tp=4, weight_dtype="fp8")
    with pytest.raises(FitError):
        plan_memory(dep)  # 406 GB of weights on 4x 80 GiB (344 GB)
    n = min_devices(dep)
    assert n == 8  # tp4 x pp2
    plan_memory(replace(dep, pp=n // 4))


def test_min_devices_names_the_devices_it_tried() -> None:
    wafers = deployment("llama-3.1-405b", "cs-3", weight_dtype="bf16", engine="cerebras")
    assert min_devices(wafers) >= 19
    with pytest.raises(FitError, match="does not fit on 2 wse3 devices"):
        min_devices(wafers, max_stages=2)


def test_the_tp_widths_are_powers_of_two_up_to_the_limit() -> None:
    assert tp_widths(8) == [1, 2, 4, 8]
    assert tp_widths(6) == [1, 2, 4]
    assert tp_widths(1) == [1]
