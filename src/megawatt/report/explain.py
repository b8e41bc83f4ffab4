"""Rendering an `Explanation` for the terminal."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table

from megawatt.explain import Explanation
from megawatt.perf import StepBreakdown
from megawatt.units import GB


def _breakdown_table(title: str, b: StepBreakdown, batch: int) -> Table:
    t = Table(title=title, header_style="bold", title_justify="left")
    for col in ("operator", "FLOP", "bytes", "compute us", "memory us", "time us", "bound"):
        t.add_column(col, justify="left" if col in ("operator", "bound") else "right")
    for op in b.operators:
        t.add_row(
            op.name,
            f"{op.flops:.3g}",
            f"{op.bytes:.3g}",
            f"{op.compute_s * 1e6:,.1f}",
            f"{op.memory_s * 1e6:,.1f}",
            f"{op.time_s * 1e6:,.1f}",
            op.bound,
        )
    t.add_row("communication", "", "", "", "", f"{b.communication_s * 1e6:,.1f}", "link")
    t.add_row("fabric latency", "", "", "", "", f"{b.latency_s * 1e6:,.1f}", "latency")
    t.add_row("engine overhead", "", "", "", "", f"{b.overhead_s * 1e6:,.1f}", "overhead")
    shares = ", ".join(
        f"{k} {v / b.total_s:.0%}" for k, v in sorted(b.by_bound.items(), key=lambda kv: -kv[1]) if v > 0
    )
    t.caption = (
        f"step {b.total_s * 1e3:,.3f} ms for {batch} sequence(s) in {b.microbatches} "
        f"micro-batch(es) -> {1 / b.total_s:,.0f} tokens/s per user, "
        f"{batch / b.total_s:,.0f} tokens/s per replica. Shares: {shares}. "
        "Operator rows are one micro-batch's pass."
    )
    return t


def render_explanation(e: Explanation) -> Group:
    """A table of the mapping and memory plan, then the two step breakdowns."""
    d, m = e.deployment, e.memory
    t = Table(title=f"{d.label}: why it runs at its speed", show_header=False, title_justify="left")
    t.add_column("", style="bold")
    t.add_column("")
    unit = "wafer" if d.family == "wafer" else "device"
    rows = [
        (
            "plan",
            f"{d.n_devices} {unit}(s): tp {d.tp}, pp {d.pp}; engine {d.engine}; "
            f"weights {d.weight_dtype}, KV {d.kv_dtype}",
        ),
        ("layers per stage", f"{m.layers_per_stage} of {d.model.n_layers}"),
        (
            f"{m.memory} per {unit}",
            f"{m.capacity_bytes_per_device / GB:,.1f} GB, usable {m.usable_bytes_per_device / GB:,.1f} GB",
        ),
        (
            "weights",
            f"{m.weight_bytes_total / GB:,.1f} GB in all, "
            f"{m.weight_bytes_per_device / GB:,.2f} GB per {unit}",
        ),
        (
            "KV cache",
            f"{m.kv_bytes / GB:,.2f} GB for the replica ({m.kv_bytes_per_device / GB:,.2f} GB per "
            f"{unit}); {m.kv_bytes_per_token:,.0f} bytes per token"
            + (f" + windowed layers up to {m.window_tokens} tokens" if m.window_tokens else ""),
        ),
        (
            f"sequences at {e.context_tokens:,} tokens",
            f"{e.max_sequences:,} fit in the KV cache ({m.kv_tokens:,} tokens in all)",
        ),
    ]
    if e.cores_per_layer:
        rows.append(
            (
                "cores per layer",
                f"{e.cores_per_layer:,} (a region of ~{int(e.cores_per_layer**0.5)}"
                f" x {int(e.cores_per_layer**0.5)} cores)",
            )
        )
    for k, v in rows:
        t.add_row(k, v)
    parts: list[Table] = [
        t,
        _breakdown_table(f"One sequence at {e.context_tokens:,} tokens: decode step", e.single, 1),
    ]
    if e.batched is not None:
        parts.append(
            _breakdown_table(
                f"{e.batch} sequences at {e.context_tokens:,} tokens (largest batch that fits): decode step",
                e.batched,
                e.batch,
            )
        )
    return Group(*parts)
