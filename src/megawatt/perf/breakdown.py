"""What a step's time is made of: per operator (compute or memory bound), communication, fabric
latency and overhead. The roofline (perf/roofline.py) produces it; wafers split it by mesh component
(perf/wafer.py)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OperatorTime:
    """One operator's share of a step: its compute and memory times and what bounds it."""

    name: str
    flops: float
    bytes: float
    compute_s: float
    memory_s: float

    @property
    def time_s(self) -> float:
        """The roofline time: the larger of compute and memory time."""
        return max(self.compute_s, self.memory_s)

    @property
    def bound(self) -> str:
        """`compute` or `memory`."""
        return "compute" if self.compute_s >= self.memory_s else "memory"


@dataclass(frozen=True)
class StepBreakdown:
    """Why a step takes its time: per operator (per micro-batch pass), communication, latency
    of the fabric, overhead; `total_s` is the step time."""

    operators: tuple[OperatorTime, ...]
    communication_s: float
    latency_s: float
    overhead_s: float
    microbatches: int
    total_s: float
    by_bound: dict[str, float] = field(default_factory=dict)

    @property
    def bound(self) -> str:
        """The resource that takes the largest share of the step."""
        return max(self.by_bound, key=lambda k: self.by_bound[k])
