"""The plan a row runs, as rules: the device count (a cloud API's fewest systems), a single user
over every device, and a throughput row whose model no width holds pipelined over the fewest
stages that do."""

from __future__ import annotations

from megawatt.calibration.deployment import base_deployment, choose_deployment
from megawatt.calibration.measurements import Measurement, row_engine

from .conftest import CATALOG, rows


def choice(m: Measurement) -> tuple[int, int, int, str]:
    device = CATALOG.device(m.hardware)
    base = base_deployment(m, device, row_engine(m), CATALOG, None)
    got = choose_deployment(m, base, base.system, None)
    assert got is not None
    dep, replicas, assumed = got
    return dep.tp, dep.pp, replicas, assumed


def test_a_cloud_api_row_runs_on_the_fewest_systems_that_hold_the_weights() -> None:
    (m,) = rows(
        "A1,h100-sxm,,llama-3.1-8b,,other,single_user,,,unknown,,,,,unknown,"
        "output_tokens_per_s_per_user,150,"
    )
    tp, pp, replicas, assumed = choice(m)
    assert (tp, pp, replicas) == (8, 1, 1)  # one 8-GPU system, spanned by a single user
    assert assumed == " (n_devices assumed 8)"


def test_a_model_no_width_holds_is_pipelined_over_the_fewest_stages() -> None:
    # 811 GB of 16-bit weights: no TP inside an 8 x 80 GiB node holds them; two stages do.
    (m,) = rows(
        "A2,h100-sxm,16,llama-3.1-405b,bf16,trtllm,offline,1000,1000,fixed,,100,,,no,"
        "output_tokens_per_s,1000,"
    )
    assert choice(m) == (8, 2, 1, "")
