"""One row's run on a given deployment: its scenario's driver (offline, capacity at the latency
limits, the benchmark client's closed loop, a single user), the row's metric read off the run,
and for calibration the split of a probe run's seconds into what they scale with (`TERMS`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from megawatt.calibration.lengths import row_lengths, row_requests
from megawatt.calibration.measurements import Measurement
from megawatt.perf import Deployment, plan_memory
from megawatt.perf.factory import step_model
from megawatt.perf.speculative import Speculation
from megawatt.serving import ReplicaConfig, RunResult, Slo, capacity, concurrency, offline, unit_poisson
from megawatt.workload import Requests

__all__ = [
    "MEASURES",
    "TERMS",
    "Probe",
    "Replay",
    "closed_metric",
    "replay_on",
    "replica_config",
    "sensitivities",
]

TERMS = (
    "compute",
    "attention",
    "experts",
    "memory",
    "link",
    "prefill_compute",
    "step",
    "seq",
    "layer_fixed_cycles",
    "reduce_stage_cycles",
    "handoff_s",
    "prefill_overhead",
    "fixed",
)
"""What the seconds of a run scale with: 1/compute, 1/attention, 1/experts (MoE grouped
GEMMs), 1/memory and 1/link
efficiency, (wafers) 1/prefill_compute, the per-step overhead, the per-sequence overhead,
(wafers) the fixed cycles per layer, the cycles per reduction stage and the wafer hand-off
latency, (GPUs) the eager overhead of steps with prompt chunks; the rest (`fixed`, e.g. mesh
hops) with nothing."""
_EFF_TERMS = ("compute", "attention", "experts", "memory", "link", "prefill_compute")
_OVERHEAD_TERMS = (
    "step_overhead_s",
    "seq_overhead_s",
    "layer_fixed_cycles",
    "reduce_stage_cycles",
    "handoff_s",
    "prefill_layer_overhead_s",
)
_DELTA = 1e-4


@dataclass(frozen=True)
class Probe:
    """A run whose schedule does not depend on step times (every request queued at t=0, the
    batch capped at `max_num_seqs`; or a closed loop of `n_in_flight`, whose requests arrive at
    step ends), so its duration is a sum of step times in which each operator term is linear in
    1/efficiency on its bound side, and finite differences of the duration split it exactly
    into `TERMS`."""

    requests: Requests
    max_num_seqs: int
    measure: str = "duration"  # what the metric scales with (`MEASURES`)
    n_in_flight: int = 0  # > 0: a closed loop (drivers.concurrency) instead of all at t=0


MEASURES = ("duration", "decode", "ttft", "median_ttft", "median_tpot")
"""What a probe's metric scales with: the run's duration; (wafer single-user rows) its decode
time only or its first request's TTFT; (closed loops) the median TTFT or median time per output
token over the requests (serving benchmarks report medians)."""


def replica_config(dep: Deployment, spec: Speculation | None) -> ReplicaConfig:
    """The replica a row runs on `dep`: its step model, speculating with `spec` (`None`: no
    drafts; wafers verify pipelined, at their own draft cost: `perf.factory.step_model`)."""
    cfg = ReplicaConfig.of(dep)
    if spec is not None:
        cfg = replace(cfg, step_model=step_model(dep, speculation=spec))
    return cfg


def _run_probe(dep: Deployment, probe: Probe, spec: Speculation | None) -> RunResult:
    cfg = replace(replica_config(dep, spec), max_num_seqs=probe.max_num_seqs)
    if probe.n_in_flight:
        return concurrency(cfg, probe.requests, probe.n_in_flight, stretch=True)
    return offline(cfg, probe.requests)


def _read(res: RunResult, measure: str) -> float:
    """The seconds a probe's metric scales with (`MEASURES`)."""
    if measure == "decode":
        return float((res.finish_s - res.first_token_s).sum())
    if measure == "ttft":
        return float(res.ttft_s[0])
    if measure == "median_ttft":
        return _median_ttft_s(res)
    if measure == "median_tpot":
        return _median_tpot_s(res)
    return res.duration_s


def _median_ttft_s(res: RunResult) -> float:
    """Median time to first token over the completed requests (seconds)."""
    return float(np.median(res.ttft_s[res.completed]))


def _median_tpot_s(res: RunResult) -> float:
    """Median time per output token after the first, over completed requests of more than
    one output token (seconds): the benchmark's `median_tpot`."""
    keep = res.completed & (res.output_tokens > 1)
    return float(np.median(res.tpot_s[keep])) if keep.any() else math.nan


def sensitivities(
    dep: Deployment, probe: Probe, spec: Speculation | None, measures: Sequence[str] = ()
) -> dict[str, tuple[float, ...]]:
    """The probe run's measure split into `TERMS` (seconds; they sum to the measure), for its
    own measure and each of `measures` (read off the same runs)."""
    wanted = tuple(dict.fromkeys((probe.measure, *measures)))
    eff = dep.eff

    def measure(d: Deployment) -> np.ndarray:
        res = _run_probe(d, probe, spec)
        return np.array([_read(res, w) for w in wanted])

    base = measure(dep)
    out: list[np.ndarray] = []
    for name in _EFF_TERMS:
        if getattr(eff, name) <= 0:  # a parameter this family does not use
            out.append(np.zeros(len(wanted)))
            continue
        e = eff.with_values(**{name: getattr(eff, name) * (1.0 - _DELTA)})
        # d(1/e) = 1/(e(1 - d)) - 1/e: the part T that scales with 1/e grows by T d/(1 - d).
        grown = measure(replace(dep, efficiencies=e)) - base
        out.append(grown * (1.0 - _DELTA) / _DELTA)
    for name in _OVERHEAD_TERMS:
        value = getattr(eff, name)
        if value <= 0:
            out.append(np.zeros(len(wanted)))
            continue
        e = eff.with_values(**{name: value * (1.0 + _DELTA)})
        out.append((measure(replace(dep, efficiencies=e)) - base) / _DELTA)
    split = np.array(out)  # terms x measures
    result: dict[str, tuple[float, ...]] = {}
    for j, w in enumerate(wanted):
        terms = [float(v) for v in split[:, j]]
        result[w] = (*terms, float(base[j]) - sum(terms))
    return result


# -- replay ----------------------------------------------------------------------------------------


@dataclass
class Replay:
    """A row's value off one replay (for all replicas), how it scales with step times, the
    probe run that splits its seconds, and (closed loops) the run whose other metrics the rows
    of the same run read."""

    value: float
    kind: str  # "inverse": the metric scales with 1/(step times); "ttft": with step times
    probe: Probe
    notes: list[str] = field(default_factory=list)
    result: RunResult | None = None  # the run (closed loops: its other metrics are read off it)
    replicas: float = 1.0  # closed loops: what the run's output rate is multiplied by


def _steady_tokens_per_s(res: RunResult) -> float:
    """Output tokens/s between the first completion and the last first token (queue non-empty,
    batch at steady state); the whole run's rate when that window is empty."""
    first = res.first_token_s
    finish = res.finish_s
    t0 = float(np.nanmin(finish))
    t1 = float(np.nanmax(first))
    if not t1 > t0 * 1.2:
        return res.output_tokens_per_s

    def produced(t: float) -> float:
        out = res.output_tokens.astype(np.float64)
        span = np.maximum(finish - first, 1e-12)
        frac = np.clip((t - first) / span, 0.0, 1.0)
        got = np.where(first <= t, 1.0 + (out - 1.0) * frac, 0.0)
        return float(got.sum())

    return (produced(t1) - produced(t0)) / (t1 - t0)


def replay_on(
    m: Measurement,
    dep: Deployment,
    replicas: int,
    *,
    spec: Speculation | None,
    quick: bool = False,
) -> Replay:
    """Replay a row's scenario on one replica of `dep`; the value is for all `replicas`."""
    cfg = replica_config(dep, spec)
    inp, out, _ = row_lengths(m)
    mean_ctx = inp.mean + out.mean / 2.0
    plan = plan_memory(dep)
    if m.scenario == "single_user":
        # One request at a time: a closed loop of one is an offline run with a batch of one.
        measure = "duration"
        if dep.family == "wafer":
            # The metric is a decode speed or a TTFT: split only those seconds into terms, so
            # prefill-only parameters are not pulled by decode rows and the other way round.
            measure = "ttft" if m.metric == "ttft_ms" else "decode"
        probe = Probe(row_requests(m, 3), 1, measure)
        res = offline(replace(cfg, max_num_seqs=1), probe.requests)
        if m.metric == "ttft_ms":
            return Replay(float(res.ttft_s[0]) * 1e3, "ttft", probe)
        decode_s = res.finish_s - res.first_token_s
        speed = float((res.output_tokens - 1).sum() / decode_s.sum())
        return Replay(speed, "inverse", probe)
    if m.scenario == "max_throughput_concurrency":
        # The benchmark client: C requests in flight (C / replicas per replica), each completion
        # sends the next, until n_requests are done - ramp and drain included. Without a stated
        # n_requests, two rounds (one in a plan-choice run).
        assert m.concurrency is not None
        per = max(1, math.ceil(m.concurrency / replicas))
        if m.n_requests:
            n = max(per, math.ceil(m.n_requests / replicas))
            if quick:
                n = min(n, 2 * per)
        else:
            n = per * (1 if quick else 2)
        reqs = row_requests(m, n)
        res = concurrency(replace(cfg, max_num_seqs=per), reqs, per, stretch=True)
        value, kind, measure = closed_metric(m, res, replicas)
        return Replay(value, kind, Probe(reqs, per, measure, per), result=res, replicas=replicas)
    batch = min(dep.max_num_seqs, max(1, plan.max_sequences(mean_ctx)))
    if m.scenario == "offline":
        if m.n_requests and m.dataset == "fixed" and not quick:
            probe = Probe(row_requests(m, max(1, math.ceil(m.n_requests / replicas))), dep.max_num_seqs)
            res = offline(cfg, probe.requests)
            return Replay(_metric(m, res) * replicas, "inverse", probe)
        # Quick (plan-choice) runs too need a few batches: with fewer requests than the batch
        # holds, the run is all ramp and drain and favours the plan with fewer replicas.
        n = int(min(max(3 * batch, 300), 1500))
        probe = Probe(row_requests(m, n), dep.max_num_seqs)
        res = offline(cfg, probe.requests)
        value = _steady_tokens_per_s(res) if m.metric == "output_tokens_per_s" else _metric(m, res)
        return Replay(value * replicas, "inverse", probe)
    # server / interactive: many more requests than the steady-state batch, or a short run
    # never fills the replica.
    slo = Slo(
        (m.ttft_p99_limit_ms or math.inf) / 1e3,
        (m.tpot_p99_limit_ms or math.inf) / 1e3,
    )
    n = int(min(max(4 * batch, 400), 1200 if quick else 4000))
    reqs = row_requests(m, n)
    unit = unit_poisson(np.random.default_rng(1), n)
    probe = Probe(reqs, dep.max_num_seqs)
    first = offline(cfg, reqs)
    hint = max(first.output_tokens_per_s / max(reqs.mean_output_tokens, 1.0), 1e-3)
    cap = capacity(
        cfg, reqs, unit, slo, rel_tol=0.08 if quick else 0.04, rate_hint=hint, max_evaluations=14
    )
    notes = [f"limited by {', '.join(cap.limited_by)}"] if cap.limited_by else []
    if cap.reason:
        notes.append(cap.reason)
    return Replay(cap.output_tokens_per_s * replicas, "inverse", probe, notes)


def closed_metric(m: Measurement, res: RunResult, replicas: float) -> tuple[float, str, str]:
    """A closed-loop run's figure for a row's metric (all replicas), how it scales with step
    times, and the probe measure it scales with: output or input tokens/s over the whole run
    (first request sent to last completion, as the benchmark's duration), the median per-user
    speed (1 / median TPOT) or the median TTFT."""
    if m.metric == "output_tokens_per_s_per_user":
        tpot = _median_tpot_s(res)
        return (1.0 / tpot if tpot > 0 else 0.0), "inverse", "median_tpot"
    if m.metric == "ttft_ms":
        return _median_ttft_s(res) * 1e3, "ttft", "median_ttft"
    return _metric(m, res) * replicas, "inverse", "duration"


def _metric(m: Measurement, res: RunResult) -> float:
    if m.metric == "input_tokens_per_s":
        d = res.duration_s
        return float(res.prompt_tokens[res.completed].sum() / d) if d > 0 else 0.0
    return res.output_tokens_per_s
