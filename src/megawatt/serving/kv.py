"""A replica's KV cache budget: its capacity and what a sequence of a given context holds.

`sequence_bytes` is written once, for both engines: `KvBudget.sequence_bytes` (the Python
replica) calls it, and the compiled replica (`serving.compiled`) compiles the same function."""

from __future__ import annotations

from dataclasses import dataclass

from megawatt.errors import InputError
from megawatt.perf import MemoryPlan


def sequence_bytes(
    ctx: float, per_token: float, per_token_windowed: float, window: int, half_block: float
) -> float:
    """Bytes a sequence with `ctx` cached tokens holds: `per_token * (ctx + half_block)` (half a
    block of fragmentation on average in a paged cache) plus `per_token_windowed * min(ctx,
    window)` for windowed layers (`window` 0: none)."""
    if ctx <= 0:
        return 0.0
    out = per_token * (ctx + half_block)
    if window > 0:
        out += per_token_windowed * min(ctx, window)
    return out


@dataclass(frozen=True)
class KvBudget:
    """The KV cache of a replica: capacity and what a sequence costs (bytes).

    A sequence with `ctx` cached tokens holds `bytes_per_token * (ctx + block_tokens / 2)`
    (half a block of fragmentation on average in a paged cache) plus `bytes_per_token_windowed
    * min(ctx, window_tokens)` for windowed layers.
    """

    capacity_bytes: float
    bytes_per_token: float
    bytes_per_token_windowed: float = 0.0
    window_tokens: int | None = None
    block_tokens: int = 16

    def __post_init__(self) -> None:
        if not self.capacity_bytes > 0:
            raise InputError(f"KV capacity must be > 0 bytes; got {self.capacity_bytes}.")
        if self.bytes_per_token < 0 or self.bytes_per_token_windowed < 0:
            raise InputError("KV bytes per token must be >= 0.")

    @staticmethod
    def of(plan: MemoryPlan, block_tokens: int = 16) -> KvBudget:
        """The KV budget a memory plan leaves."""
        return KvBudget(
            plan.kv_bytes,
            plan.kv_bytes_per_token,
            plan.kv_bytes_per_token_windowed,
            plan.window_tokens,
            block_tokens,
        )

    def sequence_bytes(self, ctx: float) -> float:
        """Bytes a sequence with `ctx` cached tokens holds (`sequence_bytes`)."""
        return sequence_bytes(
            ctx,
            self.bytes_per_token,
            self.bytes_per_token_windowed,
            self.window_tokens or 0,
            self.block_tokens / 2.0,
        )
