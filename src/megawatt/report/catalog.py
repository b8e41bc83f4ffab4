"""The catalog tables of `megawatt hardware` and `megawatt models`: every device, system and
preset model, or one entry with every figure's source (estimates marked)."""

from __future__ import annotations

from rich.table import Table

from megawatt.fleet.power import LOAD_SHARES, PowerCurve, power_curve
from megawatt.hardware import Catalog
from megawatt.model import ModelSpec, presets
from megawatt.units import GB, KIB, TB, TERA


def _fmt(value: float | None, scale: float = 1.0, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value / scale, spec)


def hardware_tables(cat: Catalog) -> list[Table]:
    """Two tables: every device of the catalog (dense peak rates, memory per device) and every
    system (devices, power, price), each sorted by id."""
    t = Table(title="Devices (dense peak rates; memory per device)", header_style="bold")
    for col in (
        "id",
        "name",
        "kind",
        "BF16 TFLOP/s",
        "FP8",
        "FP4",
        "memory GB",
        "TB/s",
        "TDP W",
        "verification",
    ):
        t.add_column(col, justify="right" if col not in ("id", "name", "kind", "verification") else "left")
    for d in sorted(cat.devices.values(), key=lambda d: d.id):
        p = d.peak_flops_per_s
        t.add_row(
            d.id,
            d.name,
            d.kind,
            _fmt(p.get("bf16"), TERA),
            _fmt(p.get("fp8"), TERA),
            _fmt(p.get("fp4"), TERA),
            _fmt(d.mem_capacity_bytes, GB, ",.1f"),
            _fmt(d.mem_bandwidth_bytes_per_s, TB, ",.2f"),
            _fmt(d.tdp_w),
            d.verification,
        )
    s = Table(title="Systems (power and price: see `megawatt hardware show ID`)", header_style="bold")
    for col in ("id", "name", "device", "devices", "power kW", "price $M"):
        s.add_column(col)
    for x in sorted(cat.systems.values(), key=lambda x: x.id):
        s.add_row(
            x.id,
            x.name,
            x.device_id,
            str(x.n_devices),
            _fmt(x.power_w, 1e3, ",.1f"),
            _fmt(x.price_usd, 1e6, ",.2f"),
        )
    return [t, s]


def device_table(cat: Catalog, id: str) -> Table:
    """One device with every figure's source, its systems and their power against load;
    estimates are marked. An unknown id raises the catalog's error."""
    d = cat.device(id)
    est = set(d.estimated_fields)

    def mark(name: str) -> str:
        return " (estimate)" if name in est else ""

    t = Table(title=f"{d.name} ({d.id})", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    rows = [
        ("vendor / kind / year", f"{d.vendor} / {d.kind} / {d.year or '-'}"),
        ("process", d.process or "-"),
    ]
    for dtype, rate in sorted(d.peak_flops_per_s.items()):
        rows.append((f"dense {dtype} peak", f"{rate / TERA:,.1f} TFLOP/s{mark('peak_flops_per_s')}"))
    rows += [
        (
            "memory",
            f"{d.mem_type}, {d.mem_capacity_bytes / GB:,.1f} GB{mark('mem_capacity_bytes')}",
        ),
        (
            "memory bandwidth",
            f"{d.mem_bandwidth_bytes_per_s / TB:,.2f} TB/s{mark('mem_bandwidth_bytes_per_s')}",
        ),
        ("on-chip SRAM", _fmt(d.sram_bytes, 1e6, ",.0f") + " MB"),
        (
            "scale-up bandwidth",
            _fmt(d.scaleup_bandwidth_bytes_per_s, GB, ",.0f")
            + f" GB/s per direction{mark('scaleup_bandwidth_bytes_per_s')}",
        ),
        ("scale-out bandwidth", _fmt(d.scaleout_bandwidth_bytes_per_s, GB, ",.1f") + " GB/s"),
        ("TDP", _fmt(d.tdp_w) + " W"),
        ("cores / clock", f"{d.cores or '-'} / {_fmt(d.clock_hz, 1e9, '.2f')} GHz"),
        ("price", _fmt(d.price_usd, 1, ",.0f") + " USD (estimate)"),
        ("verification", d.verification),
        ("source", d.source),
        ("notes", d.notes),
    ]
    if d.mesh is not None:
        m = d.mesh
        rows += [
            (
                "mesh",
                f"{m.width_cores} x {m.height_cores} cores, {m.sram_per_core_bytes / KIB:.0f} KiB SRAM "
                f"per core, {m.simd_fp16_lanes} FP16 lanes, {m.clock_hz / 1e9:.2f} GHz, "
                f"{m.cycles_per_hop:g} cycle/hop",
            ),
        ]
        rows += [(f"mesh source: {k}", v) for k, v in m.sources.items()]
    if est:
        rows.append(("estimated or derived", ", ".join(sorted(est))))
    systems = cat.systems_for(d.id)
    if systems:
        rows.append(
            (
                "systems",
                ", ".join(f"{s.id} ({s.n_devices}x, {s.power_w / 1e3:,.1f} kW)" for s in systems),
            )
        )
    curves = [power_curve(s, d) for s in systems]
    for s, curve in zip(systems, curves, strict=True):
        rows.append((f"{s.id} power against load", _curve_text(curve)))
    if curves:
        rows.append(("power curve source", " | ".join(dict.fromkeys(c.source for c in curves))))
    for k, v in rows:
        t.add_row(k, v)
    return t


def _curve_text(curve: PowerCurve) -> str:
    kw = " / ".join(f"{w / 1e3:,.1f}" for w in curve.points_w())
    shares = "/".join(f"{u:.0%}" for u in LOAD_SHARES)
    return f"{kw} kW at {shares} load ({'fitted' if curve.fitted else 'prior'})"


def system_table(cat: Catalog, id: str) -> Table:
    """One system: its device, power (peak, idle, against load), price and links, each figure with
    its source; estimates are marked."""
    s = cat.system(id)
    curve = power_curve(s, cat.device(s.device_id))
    fitted_idle = f" (the fitted curve below idles at {curve.idle_w / 1e3:,.1f} kW)" if curve.fitted else ""
    t = Table(title=f"{s.name} ({s.id})", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    est = set(s.estimated_fields)
    for name, value in [
        ("device_id", f"{s.device_id} x {s.n_devices}"),
        ("power_w", f"{s.power_w / 1e3:,.1f} kW peak"),
        ("idle_power_w", f"{s.idle_power_w / 1e3:,.1f} kW idle{fitted_idle}"),
        ("price_usd", f"${s.price_usd:,.0f}"),
        (
            "scaleup_bandwidth_bytes_per_s",
            _fmt(s.scaleup_bandwidth_bytes_per_s, GB, ",.0f") + " GB/s per device",
        ),
        ("scaleup_latency_s", f"{s.scaleup_latency_s * 1e6:g} us"),
        (
            "scaleout_bandwidth_bytes_per_s",
            _fmt(s.scaleout_bandwidth_bytes_per_s, GB, ",.1f") + " GB/s per device",
        ),
        ("scaleout_latency_s", f"{s.scaleout_latency_s * 1e6:g} us"),
        ("power against load", _curve_text(curve)),
    ]:
        source = curve.source if name == "power against load" else s.sources.get(name, "")
        t.add_row(name + (" (estimate)" if name in est else ""), f"{value}  [dim]{source}[/dim]")
    return t


def models_table() -> Table:
    """Every preset model: layers, parameters (total, active, published), KV KiB per token."""
    t = Table(title="Models (parameters computed from config.json)", header_style="bold")
    for col in (
        "id",
        "architecture",
        "layers",
        "params",
        "active",
        "published",
        "KV KiB/token (bf16)",
    ):
        t.add_column(col)
    for m in presets():
        c = m.param_counts()
        pub = m.published_params
        t.add_row(
            m.id,
            m.architecture,
            str(m.n_layers),
            f"{c.total / 1e9:,.1f}B",
            f"{c.active / 1e9:,.1f}B" if m.is_moe else "-",
            " / ".join(x for x in (pub.get("total"), pub.get("active")) if x),
            f"{m.kv_bytes_per_token() / KIB:,.1f}",
        )
    return t


def model_table(m: ModelSpec) -> Table:
    """One model: layers, attention, MLP, parameters by component, KV-cache bytes per token."""
    c = m.param_counts()
    t = Table(title=f"{m.id} ({m.architecture})", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    kinds: dict[str, int] = {}
    for layer in m.layers:
        key = f"{layer.attention}{f'({layer.window_tokens})' if layer.window_tokens else ''} + {layer.mlp}"
        kinds[key] = kinds.get(key, 0) + 1
    rows = [
        ("layers", f"{m.n_layers}: " + ", ".join(f"{n} x {k}" for k, n in kinds.items())),
        ("hidden size / vocabulary", f"{m.hidden_size:,} / {m.vocab_size:,}"),
        (
            "attention",
            f"{m.attention_type.upper()}, {m.n_heads} heads, {m.n_kv_heads} KV heads, "
            f"head dim {m.head_dim}"
            + (f", KV latent {m.kv_lora_rank}+{m.qk_rope_head_dim}" if m.attention_type == "mla" else ""),
        ),
        (
            "MLP",
            (
                f"MoE: {m.n_experts} experts, top {m.n_experts_per_token}, width "
                f"{m.expert_intermediate_size}"
                + (f", {m.n_shared_experts} shared" if m.n_shared_experts else "")
                + (
                    f"; {m.n_dense_layers} dense layers of width {m.intermediate_size}"
                    if m.n_dense_layers
                    else ""
                )
            )
            if m.is_moe
            else f"dense, width {m.intermediate_size:,}",
        ),
        ("parameters (total)", f"{c.total / 1e9:,.2f}B ({c.total:,})"),
        (
            "parameters (active per token)",
            f"{c.active / 1e9:,.2f}B (embedding table excluded; "
            f"{c.active_with_embedding / 1e9:,.2f}B with it)",
        ),
        (
            "by component",
            f"embedding {c.embedding / 1e9:.2f}B, LM head {c.lm_head / 1e9:.2f}B, "
            f"attention {c.attention / 1e9:.2f}B, dense MLP {c.dense_mlp / 1e9:.2f}B, "
            f"routed experts {c.routed_experts / 1e9:.2f}B, shared experts "
            f"{c.shared_experts / 1e9:.2f}B",
        ),
        (
            "published",
            ", ".join(f"{k} {v}" for k, v in m.published_params.items() if k != "source"),
        ),
        (
            "KV cache per token",
            f"{m.kv_bytes_per_token(2.0):,.0f} bytes at 16-bit "
            f"({m.kv_bytes_per_token(2.0) / KIB:,.1f} KiB), {m.kv_bytes_per_token(1.0):,.0f} at 8-bit"
            + (
                f"; windowed layers stop growing after {max(m.windowed_layers())} tokens, "
                f"so a long sequence costs {m.kv_bytes_per_token_full(2.0):,.0f} bytes per token"
                if m.windowed_layers()
                else ""
            ),
        ),
        ("max context", f"{m.max_context_tokens:,} tokens"),
        (
            "published weight format",
            ", ".join(f"{k} {v}" for k, v in m.native_weight_dtype.items()),
        ),
        ("source", m.source),
    ]
    for k, v in rows:
        t.add_row(k, v)
    return t
