"""What fits: whether a deployment's memory holds its weights and some sequences, and the one
search for the fewest pipeline stages (wafers, GPU stages, whole systems) that do."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from megawatt.errors import FitError
from megawatt.perf import Deployment, MemoryPlan, plan_memory

MAX_STAGES = 256
"""The most counts (pipeline stages, wafers, systems) any search for the fewest that fit tries
from where it starts: twice the layers of the deepest catalog model (Llama 3.1 405B, 126), and
more wafers than any published deployment; a search that finds none within it reports none."""


def fewest_stages(
    fits: Callable[[int], bool], *, start: int = 1, stop: int | None = None
) -> int | None:
    """The smallest count n in `start`..`stop` for which `fits(n)` holds, trying them in order
    (`stop` default: `start + MAX_STAGES - 1`, the `MAX_STAGES` bound); None when none does."""
    last = start + MAX_STAGES - 1 if stop is None else stop
    for n in range(start, last + 1):
        if fits(n):
            return n
    return None


def holds(dep: Deployment, tokens: float = 0.0, n_seqs: int = 1) -> MemoryPlan | None:
    """The memory plan when `dep` holds its weights and its KV cache `n_seqs` sequences of
    `tokens` tokens each; None when it does not."""
    try:
        plan = plan_memory(dep)
    except FitError:
        return None
    return plan if plan.sequence_kv_bytes(tokens) * n_seqs <= plan.kv_bytes else None


def min_devices(dep: Deployment, *, max_stages: int = MAX_STAGES) -> int:
    """Fewest devices (wafers; or tp x pp GPUs at the deployment's tp) that hold the weights with
    room left for KV: the fewest pipeline stages, at most `max_stages`. Raises `FitError` when
    none of them does."""

    def fits(pp: int) -> bool:
        try:
            plan_memory(replace(dep, pp=pp, ep=1))
        except FitError:
            return False
        return True

    pp = fewest_stages(fits, stop=max_stages)
    if pp is None:
        raise FitError(
            f"{dep.model.id} does not fit on {max_stages * dep.tp} {dep.device.id} devices "
            f"(tp {dep.tp} x at most {max_stages} pipeline stages). Use a lower weight_dtype "
            "or a larger device."
        )
    return pp * dep.tp
