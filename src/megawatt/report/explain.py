"""Rendering an `Explanation` for the terminal."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table

from megawatt.explain import Explanation, WaferExplanation
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


def _speed(tokens_per_s: float | None) -> str:
    if tokens_per_s is None:
        return "-"
    return f"{tokens_per_s:,.0f}" if tokens_per_s >= 10 else f"{tokens_per_s:.2g}"


def _wafer_tables(e: Explanation, w: WaferExplanation) -> list[Table]:
    d, m, lay = e.deployment, e.memory, w.layout
    sram = Table(title="SRAM per wafer (GB): never above capacity", header_style="bold", title_justify="left")
    for col in (
        "wafer",
        "layers",
        "weights",
        "KV cache (full)",
        "activations",
        "reserved",
        "free",
        "capacity",
    ):
        sram.add_column(col, justify="right")
    for i, weights in enumerate(m.weight_bytes_by_device):
        layers = m.layers_by_device[i] if i < len(m.layers_by_device) else 0
        kv = m.kv_bytes_by_device[i] if i < len(m.kv_bytes_by_device) else 0.0
        used = weights + kv + m.workspace_bytes_per_device + m.reserved_bytes_per_device
        sram.add_row(
            str(i + 1),
            str(layers),
            f"{weights / GB:,.2f}",
            f"{kv / GB:,.2f}",
            f"{m.workspace_bytes_per_device / GB:,.2f}",
            f"{m.reserved_bytes_per_device / GB:,.2f}",
            f"{(m.capacity_bytes_per_device - used) / GB:,.2f}",
            f"{m.capacity_bytes_per_device / GB:,.1f}",
        )
    comp = Table(
        title=f"One token of one sequence at {e.context_tokens:,} tokens, by mesh component",
        header_style="bold",
        title_justify="left",
    )
    comp.add_column("component")
    comp.add_column("us", justify="right")
    comp.add_column("share", justify="right")
    total = sum(w.components.values())
    for name, seconds in w.components.items():
        if seconds > 0:
            comp.add_row(name, f"{seconds * 1e6:,.1f}", f"{seconds / total:.0%}")
    comp.caption = (
        f"{total * 1e3:,.3f} ms per token -> {1 / total:,.0f} tokens/s per user. "
        f"{d.model.n_layers} layers x (GEMV over a {lay.side_cores:,.0f} x {lay.side_cores:,.0f} "
        f"region + {d.eff.reduce_rounds_per_layer:g} reduce-and-broadcast rounds of "
        f"~1.5 x side hops and ~sqrt(side) stages + {d.eff.layer_fixed_cycles:,.0f} fixed cycles) "
        f"at {lay.clock_hz / 1e9:g} GHz, "
        f"{lay.n_wafers if lay.n_wafers > 1 and lay.mapping != 'streaming' else 0} wafer "
        "hand-off(s) (the last wafer sends the sampled token back to the first)."
    )
    tables = [sram, comp]
    if w.alternatives:
        alt = Table(title="Alternatives", header_style="bold", title_justify="left")
        alt.add_column("plan")
        alt.add_column("tokens/s per user", justify="right")
        alt.add_column("how")
        alt.add_row("this plan", _speed(1 / e.single.total_s), d.label)
        for a in w.alternatives:
            speed = _speed(a.tokens_per_s_per_user)
            alt.add_row(a.name, speed, a.note)
        tables.append(alt)
    return tables


def render_explanation(e: Explanation) -> Group:
    """A table of the mapping and memory plan, then the two step breakdowns (wafers: the SRAM of
    each wafer, a token by mesh component and the alternatives)."""
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
            f"{m.weight_bytes_per_device / GB:,.2f} GB per {unit}"
            + (" (fullest)" if d.family == "wafer" else "")
            + (" - streamed from MemoryX, a layer double-buffered" if m.weight_streaming else ""),
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
    w = e.wafer
    if w is not None:
        lay = w.layout
        rows.insert(1, ("wafers", f"{lay.n_wafers} ({lay.mapping} mapping)"))
        rows.insert(
            2,
            (
                "layers per wafer",
                ", ".join(str(n) for n in lay.layers_by_wafer) if lay.layers_by_wafer else "-",
            ),
        )
        region = (
            f"{e.cores_per_layer:,} of {lay.cores_per_wafer:,} (a region of ~{lay.side_cores:,.0f}"
            f" x {lay.side_cores:,.0f} cores)"
        )
        if lay.expert_share and lay.mapping != "streaming":
            region += f"; each routed expert {int(lay.expert_share * lay.cores_per_wafer):,} more"
        rows.append(("cores per layer", region))
        rows.append(
            (
                "throughput per wafer",
                f"{w.tokens_per_s_per_wafer:,.0f} tokens/s at the largest batch; bounded by {w.batch_limit}",
            )
        )
    elif e.cores_per_layer:
        rows.append(
            (
                "cores per layer",
                f"{e.cores_per_layer:,} (a region of ~{int(e.cores_per_layer**0.5)}"
                f" x {int(e.cores_per_layer**0.5)} cores)",
            )
        )
    for k, v in rows:
        t.add_row(k, v)
    parts: list[Table] = [t]
    if w is not None:
        parts.extend(_wafer_tables(e, w))
    parts.append(_breakdown_table(f"One sequence at {e.context_tokens:,} tokens: decode step", e.single, 1))
    if e.batched is not None:
        parts.append(
            _breakdown_table(
                f"{e.batch} sequences at {e.context_tokens:,} tokens (largest batch that fits): decode step",
                e.batched,
                e.batch,
            )
        )
    return Group(*parts)
