"""Predict a row: build its deployment, replay its scenario, read its metric (the rows of one
benchmark run from one simulation), and for calibration record what the prediction scales with."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import replace

from megawatt.calibration.datasets import InputMeans, fitted_input_means
from megawatt.calibration.deployment import (
    MAX_BATCH,
    EffTable,
    base_deployment,
    choose_deployment,
    kv_link,
    plan_label,
    worker_deployment,
)
from megawatt.calibration.lengths import length_dataset, row_lengths, row_requests, with_input_mean
from megawatt.calibration.measurements import (
    Measurement,
    RowResult,
    Workers,
    disagg_topology,
    phase,
    row_engine,
    run_key,
)
from megawatt.calibration.runs import Probe, Replay, closed_metric, replay_on, replica_config, sensitivities
from megawatt.calibration.speculation import WAFER_DRAFT_MODEL, row_speculation, spec_label
from megawatt.errors import FitError, InputError
from megawatt.hardware import Catalog, load_catalog
from megawatt.model import load_model
from megawatt.perf import Deployment, efficiency_key, family_of
from megawatt.perf.efficiency import PRIORS
from megawatt.perf.speculative import Speculation
from megawatt.serving import closed_loop_by_symmetry

__all__ = [
    "DISAGG_PROMPTS_PER_CONCURRENCY",
    "predict_row",
    "predict_rows",
]

_LENGTH_STEP = 1.2  # the step of a prompt-length sensitivity (`_length_sensitivities`)
DISAGG_PROMPTS_PER_CONCURRENCY = 10
"""Prompts per unit of concurrency of a disaggregated run that does not state its count: the
NVIDIA (Dynamo) runs are driven by recipes outside InferenceX's repository (README: lengths and
counts ASSUMED as its AMD harness, 10 x concurrency)."""


def _skip(m: Measurement, reason: str, group: str = "", family: str = "") -> RowResult:
    return RowResult(
        m.id, m.hardware, m.model, m.scenario, m.metric, m.value, None, "", reason, group, family
    )


def _unsupported(m: Measurement) -> str:
    """Why a row's metric cannot be replayed ('' when it can)."""
    if m.scenario == "microbenchmark" or m.metric == "ratio":
        return "microbenchmark: not an end-to-end inference run"
    closed = m.scenario == "max_throughput_concurrency"
    if m.metric == "ttft_ms" and m.scenario != "single_user" and not closed:
        return "ttft_ms is supported for single_user and concurrency rows only"
    if m.metric == "output_tokens_per_s_per_user" and m.scenario != "single_user" and not closed:
        return "per-user speed is supported for single_user and concurrency rows only"
    return ""


def predict_row(
    m: Measurement,
    catalog: Catalog | None = None,
    efficiencies: EffTable | None = None,
    *,
    record: bool = False,
    input_means: InputMeans | None = None,
    length_datasets: Collection[str] | None = None,
) -> RowResult:
    """Predict one measurement: choose the deployment, replay the scenario, read the metric.

    `efficiencies` overrides the efficiencies per `efficiency_key`; `input_means` the mean input
    lengths of MLPerf datasets (default: the calibration file's estimates, else `DATASETS`);
    `record` adds the split of a probe run's time into `TERMS` and, for rows of the datasets
    `length_datasets` (default: all), the sensitivity to the dataset's mean input (for
    calibration). Rows that cannot be predicted come back with a reason.
    """
    return predict_rows(
        (m,), catalog, efficiencies, record=record, input_means=input_means,
        length_datasets=length_datasets,
    )[0]


def predict_rows(
    rows: Sequence[Measurement],
    catalog: Catalog | None = None,
    efficiencies: EffTable | None = None,
    *,
    record: bool = False,
    input_means: InputMeans | None = None,
    length_datasets: Collection[str] | None = None,
    acceptance: float | None = None,
) -> tuple[RowResult, ...]:
    """`predict_row` for rows of one run (`run_key`: the same run, other metrics), from one
    simulation: the first row's deployment and replay, each row's metric read off the run.
    `acceptance` overrides the draft acceptance of speculative rows of the random dataset
    (`row_speculation`)."""
    if not rows:
        return ()
    if len({run_key(m) for m in rows}) > 1:
        raise InputError("predict_rows takes rows of one run (equal run_key); got several runs.")
    catalog = catalog or load_catalog()
    dataset = length_dataset(rows[0])
    means = fitted_input_means() if input_means is None else input_means
    rows = [with_input_mean(r, means) for r in rows]
    device = catalog.device(rows[0].hardware)
    family = family_of(device.kind)
    engine = row_engine(rows[0])
    group = efficiency_key(device, engine)

    out: dict[int, RowResult] = {}
    todo: list[int] = []
    for k, r in enumerate(rows):
        reason = _unsupported(r)
        if reason:
            out[k] = _skip(r, reason, group, family)
        else:
            todo.append(k)

    def fail(reason: str) -> tuple[RowResult, ...]:
        for k in todo:
            out[k] = _skip(rows[k], reason, group, family)
        return tuple(out[k] for k in range(len(rows)))

    if not todo:
        return fail("")
    m = rows[todo[0]]
    reason = _not_modelled(m, device.kind, family, engine)
    if reason:
        return fail(reason)
    base = base_deployment(m, device, engine, catalog, efficiencies)
    spec = row_speculation(m, engine, family, acceptance)
    if spec and family == "wafer":
        base = replace(base, draft_model=load_model(WAFER_DRAFT_MODEL))
    sides = disagg_topology(m)
    if sides is not None:
        return _predict_disagg(rows, todo, out, base, spec, sides, group, family)

    try:
        choice = choose_deployment(m, base, base.system, spec)
    except (FitError, InputError) as exc:
        return fail(f"no plan fits: {exc}")
    if choice is None:
        return fail(f"no plan of {m.model} fits {m.n_devices}x {m.hardware}")
    dep, replicas, assumed = choice
    plan = plan_label(dep, replicas) + spec_label(spec) + assumed
    try:
        rep, reads = _read_rows(rows, todo, dep, replicas, spec)
        terms = _time_terms(reads, dep, spec) if record else {}
        sensitivity: dict[int, float] = {}
        if record and dataset and (length_datasets is None or dataset in length_datasets):
            sensitivity = _length_sensitivities(rows, todo, reads, dep, replicas, spec)
    except FitError as exc:
        return fail(f"no plan fits: {exc}")
    for k in todo:
        r = rows[k]
        value, kind, _ = reads[k]
        if not value > 0:
            out[k] = RowResult(
                r.id, r.hardware, r.model, r.scenario, r.metric, r.value, None, plan,
                "the run met no latency limit (" + "; ".join(rep.notes) + ")", group, family,
            )
            continue
        out[k] = RowResult(
            r.id, r.hardware, r.model, r.scenario, r.metric, r.value, value, plan, "", group,
            family, terms.get(k), kind, tuple(rep.notes), dataset, sensitivity.get(k),
        )
    return tuple(out[k] for k in range(len(rows)))


def _not_modelled(m: Measurement, kind: str, family: str, engine: str) -> str:
    """Why a run cannot be replayed at all ('' when it can): no model, no performance model for
    its engine, a prefill-only phase, or no published system size."""
    if not m.model:
        return "no model"
    if (family, engine) not in PRIORS:
        return (
            f"no performance model for engine '{engine}' on {kind} devices "
            "(no prior and no rows to fit)"
        )
    if phase(m) == "prefill-only":
        return "prefill-only rows are not supported"
    if m.n_devices is None and m.scenario != "single_user":
        return "system size not published (n_devices blank)"
    return ""


_Read = tuple[float, str, Probe]
"""A row's value read off a run, how it scales with step times, and the probe run it came from."""


def _read_rows(
    rows: Sequence[Measurement],
    todo: Sequence[int],
    dep: Deployment,
    replicas: int,
    spec: Speculation | None,
) -> tuple[Replay, dict[int, _Read]]:
    """The first row's replay and every row's reading: closed-loop rows off the same run, the
    others from a replay of their own."""
    rep = replay_on(rows[todo[0]], dep, replicas, spec=spec)
    reads: dict[int, _Read] = {todo[0]: (rep.value, rep.kind, rep.probe)}
    for k in todo[1:]:
        if rep.result is None or rows[k].scenario != "max_throughput_concurrency":
            other = replay_on(rows[k], dep, replicas, spec=spec)
            reads[k] = (other.value, other.kind, other.probe)
            continue
        value, kind, measure = closed_metric(rows[k], rep.result, rep.replicas)
        reads[k] = (value, kind, replace(rep.probe, measure=measure))
    return rep, reads


def _time_terms(
    reads: dict[int, _Read], dep: Deployment, spec: Speculation | None
) -> dict[int, tuple[float, ...]]:
    """Each row's probe measure split into `TERMS` (seconds), one set of runs per probe run."""
    terms: dict[int, tuple[float, ...]] = {}
    by_run: dict[int, list[int]] = {}  # rows read off the same probe run
    for k, (_, _, probe) in reads.items():
        by_run.setdefault(id(probe.requests), []).append(k)
    for ks in by_run.values():
        first = reads[ks[0]][2]
        split = sensitivities(dep, first, spec, [reads[k][2].measure for k in ks])
        for k in ks:
            terms[k] = split[reads[k][2].measure]
    return terms


def _length_sensitivities(
    rows: Sequence[Measurement],
    todo: Sequence[int],
    reads: dict[int, _Read],
    dep: Deployment,
    replicas: int,
    spec: Speculation | None,
) -> dict[int, float]:
    """d ln(prediction) / d ln(mean input) per row: the same plan with every prompt 20% longer
    (a step wide enough to rise above the 4% tolerance of the server scenarios' rate search)."""
    sensitivity: dict[int, float] = {}
    longer_rep: Replay | None = None
    for k in todo:
        if not reads[k][0] > 0:
            continue
        r = rows[k]
        longer_row = replace(r, input_len=row_lengths(r)[0].mean * _LENGTH_STEP)
        if longer_rep is not None and longer_rep.result is not None and (
            r.scenario == "max_throughput_concurrency"
        ):
            longer = closed_metric(longer_row, longer_rep.result, longer_rep.replicas)[0]
        else:
            longer_rep = replay_on(longer_row, dep, replicas, spec=spec)
            longer = longer_rep.value
        if longer > 0:
            sensitivity[k] = math.log(longer / reads[k][0]) / math.log(_LENGTH_STEP)
    return sensitivity


def _predict_disagg(
    rows: Sequence[Measurement],
    todo: Sequence[int],
    out: dict[int, RowResult],
    base: Deployment,
    spec: Speculation | None,
    sides: tuple[Workers, Workers],
    group: str,
    family: str,
) -> tuple[RowResult, ...]:
    """`predict_rows` for a disaggregated run: one replay on the P/D model, each row's metric
    read off it (no time terms: calibration fits single-node runs only)."""
    m = rows[todo[0]]
    pre, dec = sides
    reason = ""
    if not (pre.n and dec.n and pre.gpus and dec.gpus):
        reason = "the run's split into prefill and decode workers is not stated (legacy record)"
    elif m.concurrency is None:
        reason = "a disaggregated run needs its concurrency"
    if not reason:
        try:
            rep, plan = _replay_disagg(m, base, spec, sides)
        except (FitError, InputError) as exc:
            reason = f"no plan fits: {exc}"
    if reason:
        for k in todo:
            out[k] = _skip(rows[k], reason, group, family)
        return tuple(out[k] for k in range(len(rows)))
    assert rep.result is not None
    for k in todo:
        r = rows[k]
        value = closed_metric(r, rep.result, rep.replicas)[0]
        out[k] = RowResult(
            r.id, r.hardware, r.model, r.scenario, r.metric, r.value,
            value if value > 0 else None, plan, "" if value > 0 else "the run completed nothing",
            group, family,
        )
    return tuple(out[k] for k in range(len(rows)))


def _replay_disagg(
    m: Measurement,
    base: Deployment,
    spec: Speculation | None,
    sides: tuple[Workers, Workers],
) -> tuple[Replay, str]:
    """A disaggregated run replayed on the P/D model: the benchmark's closed loop over prefill
    and decode workers, KV over `kv_link`, estimated by symmetry on the compiled engine
    (`serving.closed_loop_by_symmetry`: one worker of each side, iterated; the whole pair on the
    Python engine takes minutes for the largest runs); the value is the row's metric for the
    whole run, and the plan in words."""
    pre, dec = sides
    assert m.concurrency is not None
    prefill = worker_deployment(replace(base, max_num_seqs=MAX_BATCH), pre)
    decode = worker_deployment(
        replace(base, max_num_seqs=max(1, min(MAX_BATCH, m.concurrency))), dec
    )
    n = m.n_requests or DISAGG_PROMPTS_PER_CONCURRENCY * m.concurrency
    reqs = row_requests(m, n)
    link = kv_link(base.system, prefill, pre.n * pre.gpus + dec.n * dec.gpus)
    result = closed_loop_by_symmetry(
        replica_config(prefill, None), replica_config(decode, spec), reqs, link,
        n_prefill=pre.n, n_decode=dec.n, n_in_flight=m.concurrency,
    )
    share = m.concurrency / max(1, round(m.concurrency / dec.n))
    value, kind, measure = closed_metric(m, result, share)
    plan = (
        f"prefill {pre.n}x [{plan_label(prefill, 1)[3:]}], "
        f"decode {dec.n}x [{plan_label(decode, 1)[3:]}]"
        f"{spec_label(spec)}, KV link {link.bandwidth_bytes_per_s / 1e9:.0f} GB/s"
    )
    return Replay(value, kind, Probe(reqs, decode.max_num_seqs, measure, m.concurrency),
                   result=result, replicas=share), plan
