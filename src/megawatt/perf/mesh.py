"""Mesh arithmetic of a wafer-scale engine: hop counts and software stages of the MeshGEMV
reduction across a square core region, and how whole layers are dealt out to wafers.
Formulas from WaferLLM (OSDI 2025) as restated in data/facts/NOTES.md (c.3, c.4, d.2)."""

from __future__ import annotations

import math


def tree_stages(side: float) -> float:
    """Software routing stages on the critical path of a K=2 tree reduction along a line of
    `side` cores (MeshGEMV, NOTES c.4): groups of g = round(sqrt(side)) cores chain-reduce from
    both ends toward their middle (g/2 stages), then the G = ceil(side/g) group roots reduce
    toward the line's root the same way (G/2 stages); ~sqrt(side) in all."""
    if side <= 1.0:
        return 0.0
    g = max(1.0, float(round(math.sqrt(side))))
    groups = math.ceil(side / g)
    return g / 2.0 + groups / 2.0


def reduce_hops(side: float) -> float:
    """Mesh hops on the critical path of one reduce-plus-broadcast round across a side x side
    region: `side` hops for the two chain phases of the reduction (the inter-root hops pass
    through routers), `side / 2` for the multicast broadcast from the middle (NOTES c.4)."""
    return 1.5 * side


def allreduce_cycles(side: float, cycles_per_hop: float, stage_cycles: float) -> float:
    """Latency in cycles of one MeshGEMV reduce-plus-broadcast round over a side x side region:
    hops x alpha (hardware pass-through) + tree stages x beta (software relays); NOTES b, c.3."""
    return reduce_hops(side) * cycles_per_hop + tree_stages(side) * stage_cycles


def stream_cycles(elements: float, side: float, elements_per_cycle: float) -> float:
    """Cycles to stream a vector of `elements` cut over `side` cores (elements/side per core)
    through one reduction chain and its broadcast: the pipeline fill of NOTES c.4 (Nt/b), twice."""
    return 2.0 * elements / side / elements_per_cycle


def assign_layers(
    n_layers: int,
    n_wafers: int,
    layer_bytes: float = 1.0,
    extra_bytes: tuple[float, ...] = (),
) -> tuple[int, ...]:
    """Whole decoder layers per wafer, contiguous, so that the fullest wafer holds as few bytes
    as possible: wafer i holds its layers plus `extra_bytes[i]` (the embedding table on the
    first, the LM head and a draft model on the last). Ties go to the inner wafers."""
    if n_wafers < 1 or n_layers < 1:
        raise ValueError(f"need at least one layer and one wafer; got {n_layers} and {n_wafers}")
    extras = [float(e) for e in extra_bytes] + [0.0] * (n_wafers - len(extra_bytes))
    extras = extras[:n_wafers]

    def counts_at(top: float) -> list[int]:
        return [max(0, math.floor((top - e) / layer_bytes + 1e-9)) for e in extras]

    lo = max(extras)
    hi = lo + n_layers * layer_bytes
    for _ in range(200):  # the smallest top that holds every layer
        mid = (lo + hi) / 2.0
        if sum(counts_at(mid)) >= n_layers:
            hi = mid
        else:
            lo = mid
    counts = counts_at(hi)
    # Trim the surplus from the fullest wafers (edges before inner ones on ties).
    order = sorted(
        range(n_wafers),
        key=lambda i: (-(counts[i] * layer_bytes + extras[i]), 0 < i < n_wafers - 1, i),
    )
    surplus = sum(counts) - n_layers
    while surplus > 0:
        for i in order:
            if surplus == 0:
                break
            if counts[i] > 0:
                counts[i] -= 1
                surplus -= 1
        order = sorted(
            range(n_wafers),
            key=lambda i: (-(counts[i] * layer_bytes + extras[i]), 0 < i < n_wafers - 1, i),
        )
    return tuple(counts)


def square_side(cores: float) -> float:
    """Side of the square region of `cores` cores (regions are taken square: the shortest
    reduction paths for their size)."""
    return math.sqrt(max(cores, 1.0))
