"""Fit the performance model's efficiencies to published measurements (`megawatt calibrate`),
with the estimator contract: `Calibrator(...).fit(measurements)` returns the calibrator, whose
learned attributes end in `_`; using it before `fit` raises `NotFittedError`.

Per calibration group (performance family, vendor, engine release: `gpu/nvidia-fp8/trtllm`) six
parameters are fitted - compute, attention, MoE-expert, memory and link efficiency and the
per-step overhead - by minimising a robust (soft-L1) loss of the log errors of the group's
rows plus a Gaussian penalty towards the documented prior (bounded L-BFGS-B over log-parameters,
fixed start at the prior, analytic gradient, so the result is deterministic).

Each replay is a discrete-event simulation, too slow to repeat inside an optimiser. So every
outer iteration simulates each row once and splits a probe run's duration into the seconds that
scale with each parameter (`validate.TERMS`); between simulations a row's metric is predicted as
`value x old duration / new duration`. Three outer iterations re-simulate at the new values; the
residuals reported are those of the last simulation. Cross-validation is leave-one-out by row on
the last linearisation: each row is predicted by values fitted without it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from importlib import metadata
from typing import Any

import numpy as np
from scipy.optimize import minimize

from megawatt.errors import InputError, NotFittedError
from megawatt.hardware import Catalog, load_catalog
from megawatt.perf import Efficiencies, efficiency_key
from megawatt.perf.efficiency import (
    CALIBRATION_FORMAT,
    FITTED_FIELDS,
    PRIORS,
    WAFER_FITTED_FIELDS,
    prior,
)
from megawatt.validate import (
    DATASETS,
    RANDOM_DATASET,
    SPECULATION,
    TERMS,
    Measurement,
    RowResult,
    Validation,
    assumed_input_mean,
    is_random_dataset,
    length_dataset,
    row_engine,
    validate,
)

__all__ = [
    "DATASET_PRIOR_SIGMA",
    "FIT_BOUNDS",
    "PRIOR_SIGMA",
    "Calibrator",
    "DatasetFit",
    "GroupFit",
    "Residual",
    "fit_rows",
    "newest_date",
]

FIT_BOUNDS: dict[str, tuple[float, float]] = {
    "compute": (0.05, 0.9),
    "attention": (0.05, 0.9),
    "experts": (0.05, 0.9),
    "memory": (0.05, 0.95),
    "link": (0.05, 0.95),
    "step_overhead_s": (1e-5, 0.02),
    "seq_overhead_s": (1e-8, 2e-4),
    "prefill_layer_overhead_s": (1e-6, 1e-2),
}
"""Physical bounds of each fitted parameter (fractions of peak; seconds): tensor-core GEMMs and
flash attention top out near 90% of dense peak, HBM streaming and collectives near 95%."""

WAFER_FIT_BOUNDS: dict[str, tuple[float, float]] = {
    "compute": (0.05, 0.9),
    "memory": (0.02, 0.95),
    "prefill_compute": (0.02, 0.9),
    "layer_fixed_cycles": (100.0, 30_000.0),
    "reduce_stage_cycles": (1.0, 60.0),
    "handoff_s": (1e-6, 1e-4),
}
"""Bounds of the fitted wafer parameters: fractions of the core's SIMD peak and SRAM port;
fixed cycles per layer from a few task switches to twice WaferLLM's whole layer; one cycle per
routing stage (pure pass-through) to a slow software relay; a hand-off from 1 to 100 us."""

WAFER_PRIOR_SIGMA: dict[str, float] = {
    "compute": 0.5,
    "memory": 1.0,
    "prefill_compute": 1.0,
    "layer_fixed_cycles": 1.0,
    "reduce_stage_cycles": 0.7,
    "handoff_s": 1.0,
}
"""Prior widths (natural-log units) of the wafer parameters: wide, because the prior comes from
a research engine on WSE-2 and the fitted groups are production software on WSE-3."""

WAFER_MIN_ROWS = 2
"""Wafer groups are fitted from two rows up: each group has only a handful of published
figures, and the prior (WaferLLM) holds the directions two rows cannot pin down."""

PRIOR_SIGMA: dict[str, float] = {
    "compute": 0.4,
    "attention": 0.5,
    "experts": 0.5,
    "memory": 0.3,
    "link": 0.5,
    "step_overhead_s": 1.0,
    "seq_overhead_s": 1.5,
    "prefill_layer_overhead_s": 1.5,
}
"""Standard deviation of each parameter's prior, in natural-log units (0.3 = a factor ~1.35):
how far the data must pull a parameter away from its documented prior."""

DATASET_PRIOR_SIGMA = 0.5
"""Prior width (natural-log units, a factor ~1.65) of an MLPerf dataset's mean input length
around the value `validate.DATASETS` assumes: the means are not published (validation README,
"Dataset lengths"), so calibration estimates them from the rows that replay the dataset."""

DATASET_MIN_ROWS = 3
"""Datasets with fewer fit rows keep their assumed mean input length."""

DATASET_MIN_MODELS = 2
"""Datasets replayed by fewer models keep their assumed mean input length: a dataset that only
one model's rows use would give that model a parameter of its own (the acceptance forbids
parameters per model), soaking up its modelling error."""

JOINT_ROUNDS = 4
"""Alternations between the groups' parameters and the datasets' input means per fit."""

RESIDUAL_SIGMA = 0.2
"""Expected log error of one row (~20%: published figures drift 5-10% between runs, and the
length assumptions add more); weighs the rows against the prior."""

QUEUE_RESIDUAL_SIGMA = 0.5
"""Expected log error (~65%) of a median TTFT measured at a concurrency: it is mostly time spent
queueing for the KV cache or behind other prompts, which engines' admission policies shape
(reserving room for outputs, batching prompts) beyond what efficiencies describe; such rows
weigh (0.2 / 0.5)^2 = 0.16 of a throughput row in the fit."""

ROBUST_SCALE = 0.25
"""Soft-L1 loss scale in log units: a row off by more than ~28% weighs linearly, not
quadratically, so a few rows that the model cannot represent (software drift between MLPerf
rounds, a wrong length assumption) do not drag every parameter."""

ACCEPTANCE_GRID = tuple(float(a) for a in np.round(np.linspace(0.1, 0.95, 12), 4))
"""Draft acceptance rates at which the speculative rows are simulated; between them a row's log
prediction is interpolated linearly (it is smooth in the rate)."""

ACCEPTANCE_PRIOR_SIGMA = 1.0
"""Prior width of the draft acceptance, in logit units, around `validate.SPECULATION`'s 0.8
(DeepSeek-V3 report, natural text): the random dataset's prompts are random tokens, so the
drafts may well be accepted less often."""

_SIG = 6  # significant digits of saved values: the file is regenerated bit for bit


def _round(x: float) -> float:
    return float(f"{x:.{_SIG}g}")


def fit_rows(measurements: Sequence[Measurement], results: Sequence[RowResult]) -> list[int]:
    """Indices of the rows calibration fits: GPU rows with a prediction and a published system
    size, without speculative decoding (its acceptance rate is assumed, README caveat 2), whose
    lengths are stated or sourced (not the 1k/1k stand-in for unknown lengths); and wafer rows
    (`wafer_fit_row`)."""
    out = []
    for i, (m, r) in enumerate(zip(measurements, results, strict=True)):
        if r.predicted is None or r.time_terms is None:
            continue
        if r.family == "wafer":
            if wafer_fit_row(m):
                out.append(i)
            continue
        if r.family != "gpu":
            continue
        if m.n_devices is None or m.spec_decode == "yes":
            continue
        if m.dataset == "unknown" and m.input_len is None and m.output_len is None:
            continue
        if re.search(r"vendor claim", m.notes, re.IGNORECASE):
            continue
        out.append(i)
    return out


def wafer_fit_row(m: Measurement) -> bool:
    """Whether calibration fits a wafer row: single-stream rows (per-user decode speed, nearly
    independent of the unstated lengths; TTFT with the 1,000-token prompt assumed for unstated
    lengths, the only prefill evidence for production wafers), vendor and paper figures
    included - they are all the wafers have (README caveat 7 calls them sanity bounds; here
    they are the fit, and the leave-one-out error says how far each is predicted without it) -
    and speculative rows with the stated draft and acceptance."""
    return m.scenario == "single_user" and m.metric in (
        "output_tokens_per_s_per_user",
        "ttft_ms",
    )


def fields_of(key: str) -> tuple[str, ...]:
    """The fitted parameters of a calibration group (by its family)."""
    return WAFER_FITTED_FIELDS if key.split("/")[0] == "wafer" else FITTED_FIELDS


def _bounds(fields: Sequence[str]) -> dict[str, tuple[float, float]]:
    return WAFER_FIT_BOUNDS if tuple(fields) == WAFER_FITTED_FIELDS else FIT_BOUNDS


def _sigmas(fields: Sequence[str]) -> dict[str, float]:
    return WAFER_PRIOR_SIGMA if tuple(fields) == WAFER_FITTED_FIELDS else PRIOR_SIGMA


@dataclass(frozen=True)
class Residual:
    """One fitted row: measured and predicted values, the log error of the fit, and the
    leave-one-out prediction (values fitted without this row)."""

    id: str
    group: str
    hardware: str
    metric: str
    measured: float
    predicted: float
    cv_predicted: float

    @property
    def abs_pct_error(self) -> float:
        """|predicted - measured| / measured (fraction)."""
        return abs(self.predicted - self.measured) / self.measured

    @property
    def cv_abs_pct_error(self) -> float:
        """|cross-validated prediction - measured| / measured (fraction)."""
        return abs(self.cv_predicted - self.measured) / self.measured


@dataclass(frozen=True)
class DatasetFit:
    """What calibration did for one MLPerf dataset's mean input length: `status` is `fitted` or
    `prior` (the assumption of `validate.DATASETS` kept, with `reason`)."""

    name: str
    status: str
    n_rows: int
    input_mean: float
    prior_input_mean: float
    reason: str = ""


@dataclass(frozen=True)
class SpeculationFit:
    """What calibration did for the draft acceptance of speculative rows of one dataset
    (`validate.RANDOM_DATASET`): `fitted` from `n_rows` rows, or `prior` (with `reason`)."""

    name: str
    status: str
    n_rows: int
    acceptance: float
    prior_acceptance: float
    draft_tokens: int
    draft_cost: float
    reason: str = ""
    fit_mape: float | None = None
    cv_mape: float | None = None


@dataclass(frozen=True)
class GroupFit:
    """What calibration did for one group: `status` is `fitted` or `prior` (with `reason`)."""

    key: str
    status: str
    n_rows: int
    values: dict[str, float]
    prior: dict[str, float]
    reason: str = ""
    fit_mape: float | None = None
    cv_mape: float | None = None


# -- the surrogate: a row's metric as a function of the parameters ------------------------------


@dataclass(frozen=True)
class _Linearised:
    """Rows of one group linearised at `at` (log-parameters): `terms[i, k]` seconds of row i's
    probe scale with parameter k (efficiencies inversely, costs directly), `fixed[i]` with
    nothing; `sign[i]` is -1 when the metric is a rate (1/time), +1 for a latency."""

    at: np.ndarray
    terms: np.ndarray
    fixed: np.ndarray
    log_value: np.ndarray
    log_measured: np.ndarray
    sign: np.ndarray
    inverse: np.ndarray
    row_weight: np.ndarray  # (RESIDUAL_SIGMA / the row's expected log error)^2

    def shifted(self, offset: np.ndarray) -> _Linearised:
        """The same rows with their log predictions moved by `offset` (a dataset's input mean
        changed since the simulation)."""
        return replace(self, log_value=self.log_value + offset)

    def log_predict(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Log predictions at log-parameters `phi` and their gradient (rows x parameters)."""
        d = phi - self.at
        scale = np.exp(np.where(self.inverse, -d, d))  # efficiencies: old/new; costs: new/old
        parts = self.terms * scale[None, :]
        busy = parts.sum(axis=1) + self.fixed
        base = self.terms.sum(axis=1) + self.fixed
        pred = self.log_value + self.sign * (np.log(busy) - np.log(base))
        dparts = np.where(self.inverse, -1.0, 1.0)[None, :] * parts
        grad = self.sign[:, None] * dparts / busy[:, None]
        return pred, grad


_INVERSE_FIELDS = ("compute", "attention", "experts", "memory", "link", "prefill_compute")
_TERM_NAME = {
    "step_overhead_s": "step",
    "seq_overhead_s": "seq",
    "prefill_layer_overhead_s": "prefill_overhead",
}


def _log_params(eff: Efficiencies, fields: Sequence[str] = FITTED_FIELDS) -> np.ndarray:
    bounds = _bounds(fields)
    values = [max(float(getattr(eff, p)), bounds[p][0]) for p in fields]
    return np.asarray(np.log(values), dtype=np.float64)


def _solve(
    lin: _Linearised, prior_phi: np.ndarray, rows: np.ndarray, fields: Sequence[str] = FITTED_FIELDS
) -> np.ndarray:
    """MAP log-parameters from the rows selected by `rows` (a boolean mask)."""
    bounds, sigmas = _bounds(fields), _sigmas(fields)
    sigma = np.array([sigmas[p] for p in fields])
    lo = np.log([bounds[p][0] for p in fields])
    hi = np.log([bounds[p][1] for p in fields])

    weight = (ROBUST_SCALE / RESIDUAL_SIGMA) ** 2

    def objective(phi: np.ndarray) -> tuple[float, np.ndarray]:
        pred, grad = lin.log_predict(phi)
        u = (pred - lin.log_measured)[rows] / ROBUST_SCALE
        root = np.sqrt(1.0 + u * u)
        # soft-L1: 2 (sqrt(1 + u^2) - 1), ~ u^2 near 0; scaled so small errors weigh 1/sigma^2
        w = lin.row_weight[rows] * weight
        loss = 2.0 * float((w * (root - 1.0)).sum())
        dloss = w * 2.0 * (u / root) / ROBUST_SCALE
        g = (grad[rows] * dloss[:, None]).sum(axis=0)
        z = (phi - prior_phi) / sigma
        return loss + float(z @ z), g + 2.0 * z / sigma

    start = np.clip(prior_phi, lo, hi)
    res = minimize(
        objective,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=list(zip(lo, hi, strict=True)),
        options={"maxiter": 500, "ftol": 1e-12, "gtol": 1e-9},
    )
    return np.asarray(res.x, dtype=np.float64)


def _linearise(
    results: Sequence[RowResult],
    index: Sequence[int],
    eff: Efficiencies,
    fields: Sequence[str] = FITTED_FIELDS,
) -> _Linearised:
    term_index = [TERMS.index(_TERM_NAME.get(p, p)) for p in fields]
    terms = np.zeros((len(index), len(fields)))
    fixed = np.zeros(len(index))
    log_value = np.zeros(len(index))
    log_measured = np.zeros(len(index))
    sign = np.zeros(len(index))
    row_weight = np.ones(len(index))
    for row, i in enumerate(index):
        r = results[i]
        assert r.time_terms is not None and r.predicted is not None
        t = np.array(r.time_terms)
        terms[row] = np.maximum(t[term_index], 0.0)
        total = 0.0
        for v in r.time_terms:  # in order, like numpy's sum of a short vector
            total += v
        fixed[row] = max(float(total - terms[row].sum()), 0.0)
        log_value[row] = math.log(r.predicted)
        log_measured[row] = math.log(r.measured)
        sign[row] = 1.0 if r.kind == "ttft" else -1.0
        row_weight[row] = (RESIDUAL_SIGMA / residual_sigma(r)) ** 2
    inverse = np.array([p in _INVERSE_FIELDS for p in fields])
    return _Linearised(
        _log_params(eff, fields), terms, fixed, log_value, log_measured, sign, inverse, row_weight
    )


def residual_sigma(r: RowResult) -> float:
    """A row's expected log error: `RESIDUAL_SIGMA`, or `QUEUE_RESIDUAL_SIGMA` for a TTFT read off
    a loaded closed loop (`QUEUE_RESIDUAL_SIGMA`)."""
    if r.metric == "ttft_ms" and r.scenario == "max_throughput_concurrency":
        return QUEUE_RESIDUAL_SIGMA
    return RESIDUAL_SIGMA


def _efficiencies(
    base: Efficiencies, phi: np.ndarray, fields: Sequence[str] = FITTED_FIELDS
) -> Efficiencies:
    values = {p: _round(float(math.exp(v))) for p, v in zip(fields, phi, strict=True)}
    return base.with_values(**values)


def _mape(errors: Sequence[float]) -> float | None:
    return float(np.mean(errors)) if errors else None


def _estimable_datasets(rows: Sequence[Measurement]) -> frozenset[str]:
    """Datasets whose mean input length calibration may estimate: at least `DATASET_MIN_ROWS`
    rows of `DATASET_MIN_MODELS` models depend on it (a superset of those it will estimate,
    which counts only the rows it fits)."""
    models: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    for m in rows:
        name = length_dataset(m)
        if name:
            counts[name] = counts.get(name, 0) + 1
            models.setdefault(name, set()).add(m.model)
    return frozenset(
        name for name, n in counts.items()
        if n >= DATASET_MIN_ROWS and len(models[name]) >= DATASET_MIN_MODELS
    )


def _solve_log_mean(
    errors: np.ndarray, slopes: np.ndarray, at: float, prior: float, bounds: tuple[float, float]
) -> float:
    """MAP log mean input length of one dataset: rows whose log errors are `errors` at the
    log mean `at` move by `slopes` x (psi - at); same robust loss as the groups, Gaussian prior
    of width `DATASET_PRIOR_SIGMA` around `prior`."""
    weight = (ROBUST_SCALE / RESIDUAL_SIGMA) ** 2

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        psi = float(x[0])
        u = (errors + slopes * (psi - at)) / ROBUST_SCALE
        root = np.sqrt(1.0 + u * u)
        z = (psi - prior) / DATASET_PRIOR_SIGMA
        loss = weight * 2.0 * float((root - 1.0).sum()) + z * z
        grad = weight * 2.0 * float((u / root * slopes).sum()) / ROBUST_SCALE
        return loss, np.array([grad + 2.0 * z / DATASET_PRIOR_SIGMA])

    start = min(max(prior, bounds[0]), bounds[1])
    res = minimize(
        objective, np.array([start]), jac=True, method="L-BFGS-B", bounds=[bounds],
        options={"maxiter": 200, "ftol": 1e-12, "gtol": 1e-9},
    )
    return float(res.x[0])


@dataclass
class _Joint:
    """The fit across groups: each group's parameters, and the mean input length of every MLPerf
    dataset, which rows of several groups share. Solved by alternating: groups given the
    datasets' means, then each dataset's mean given the groups (`JOINT_ROUNDS` times)."""

    lins: dict[str, _Linearised]
    fields: dict[str, tuple[str, ...]]
    prior_phi: dict[str, np.ndarray]
    datasets: dict[str, np.ndarray]  # per group: each row's dataset ('' if none estimated)
    slopes: dict[str, np.ndarray]  # per group: d ln(prediction) / d ln(mean input)
    at: dict[str, float]  # log mean input of each estimated dataset in the simulations
    prior_psi: dict[str, float]
    bounds_psi: dict[str, tuple[float, float]]
    fixed: frozenset[str] = frozenset()  # groups kept at their prior (too few rows to fit)

    def offsets(self, key: str, psi: dict[str, float]) -> np.ndarray:
        """How far each row of a group moves (log) with the datasets' log means at `psi`."""
        return np.array([
            s * (psi[d] - self.at[d]) if d else 0.0
            for d, s in zip(self.datasets[key], self.slopes[key], strict=True)
        ])

    def solve(
        self, keep: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """MAP parameters per group and log mean input per dataset from the rows in `keep`."""
        psi = dict(self.at)
        phi: dict[str, np.ndarray] = {}
        for _ in range(JOINT_ROUNDS if self.at else 1):
            for key, lin in self.lins.items():
                if key in self.fixed:
                    phi[key] = lin.at
                    continue
                phi[key] = _solve(
                    lin.shifted(self.offsets(key, psi)), self.prior_phi[key], keep[key],
                    self.fields[key],
                )
            for name in self.at:
                errors, slopes = [], []
                for key, lin in self.lins.items():
                    rows = (self.datasets[key] == name) & keep[key]
                    if rows.any():
                        pred, _ = lin.log_predict(phi[key])
                        errors.append((pred - lin.log_measured)[rows])
                        slopes.append(self.slopes[key][rows])
                if errors:
                    psi[name] = _solve_log_mean(
                        np.concatenate(errors), np.concatenate(slopes), self.at[name],
                        self.prior_psi[name], self.bounds_psi[name],
                    )
        return phi, psi

    def solve_group(self, key: str, keep: np.ndarray, psi: dict[str, float]) -> np.ndarray:
        """MAP parameters of one group from its rows in `keep`, the datasets' log means fixed
        at `psi`."""
        if key in self.fixed:
            return self.lins[key].at
        return _solve(
            self.lins[key].shifted(self.offsets(key, psi)), self.prior_phi[key], keep,
            self.fields[key],
        )

    def predict(self, key: str, phi: np.ndarray, psi: dict[str, float]) -> np.ndarray:
        """Log predictions of a group's rows."""
        pred, _ = self.lins[key].shifted(self.offsets(key, psi)).log_predict(phi)
        return pred


# -- the estimator --------------------------------------------------------------------------------

Progress = Callable[[str, int, int, str], None]


class Calibrator:
    """Fits efficiencies per calibration group from measurements (see the module docstring).

    Parameters: `min_rows` (groups with fewer fit rows keep their prior), `iterations` (outer
    simulate-and-fit rounds), `workers` (processes for the replays; results do not depend on
    it), `catalog` (hardware; the packaged one by default).

    Learned attributes: `efficiencies_` (fitted values by group key), `groups_` (a `GroupFit`
    per group met in the data), `residuals_` (a `Residual` per fitted row), `fit_mape_` and
    `cv_mape_` (fractions over the fitted rows), `validation_` (every row at the fitted values).
    """

    def __init__(
        self,
        *,
        min_rows: int = 3,
        iterations: int = 3,
        workers: int | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.min_rows = min_rows
        self.iterations = iterations
        self.workers = workers
        self.catalog = catalog

    def __getattr__(self, name: str) -> Any:
        if name.endswith("_") and not name.startswith("_"):
            raise NotFittedError(
                f"Calibrator.{name} is learned by fit(): call Calibrator().fit(measurements) first."
            )
        raise AttributeError(name)

    def _check_fitted(self) -> None:
        if "efficiencies_" not in self.__dict__:
            raise NotFittedError(
                "this Calibrator is not fitted yet: call fit(measurements) before using it."
            )

    def fit(self, measurements: Sequence[Measurement], progress: Progress | None = None) -> Calibrator:
        """Fit every group's parameters to `measurements`; returns self."""
        if self.min_rows < 1 or self.iterations < 1:
            raise InputError(
                f"Calibrator needs min_rows >= 1 and iterations >= 1; got {self.min_rows} and "
                f"{self.iterations}."
            )
        catalog = self.catalog or load_catalog()
        rows = list(measurements)
        keys = sorted({efficiency_key(catalog.device(m.hardware), row_engine(m)) for m in rows})
        table: dict[str, Efficiencies] = {}
        for key in keys:
            family, engine = key.split("/")[0], key.split("/")[-1]
            if (family, engine) in PRIORS:
                table[key] = prior(family, engine)
        priors = dict(table)
        fitted_keys: list[str] = []
        means: dict[str, float] = {}  # estimated mean input lengths of MLPerf datasets
        estimable = _estimable_datasets(rows)  # the others' sensitivities would go unused
        validation: Validation | None = None
        for it in range(self.iterations + 1):
            label = f"iteration {it + 1}/{self.iterations}" if it < self.iterations else "final"

            def tick(done: int, total: int, rid: str, label: str = label) -> None:
                if progress:
                    progress(label, done, total, rid)

            validation = validate(
                rows,
                efficiencies=table,
                catalog=self.catalog,
                workers=self.workers,
                record=True,
                progress=tick,
                input_means=means,
                length_datasets=estimable,
            )
            if it == self.iterations:
                break
            by_group = self._by_group(rows, validation)
            fitted_keys = [
                key for key, members in sorted(by_group.items())
                if key in table and len(members) >= self._min_rows(key)
            ]
            fixed_keys = [k for k in by_group if k in table and k not in fitted_keys]
            joint = self._joint(
                validation.rows, by_group, fitted_keys, fixed_keys, table, priors, means
            )
            phi, psi = joint.solve(
                {key: np.ones(len(by_group[key]), dtype=bool) for key in joint.lins}
            )
            for key in fitted_keys:
                table[key] = _efficiencies(priors[key], phi[key], fields_of(key))
            means = {name: _round(math.exp(v)) for name, v in sorted(psi.items())}
        assert validation is not None
        self._finish(rows, validation, table, priors, fitted_keys, means)
        self._fit_acceptance(rows, validation, table, means, progress)
        return self

    def _fit_acceptance(
        self,
        rows: Sequence[Measurement],
        validation: Validation,
        table: dict[str, Efficiencies],
        means: dict[str, float],
        progress: Progress | None,
    ) -> None:
        """The draft acceptance of the speculative GPU rows of the random dataset (InferenceX's
        MTP runs): each row simulated at every rate of `ACCEPTANCE_GRID` with the fitted
        efficiencies, the rate that minimises the groups' robust loss plus a logit-normal prior
        around `SPECULATION`'s, and a leave-one-out rate per row."""
        index = [
            i for i, (m, r) in enumerate(zip(rows, validation.rows, strict=True))
            if m.spec_decode == "yes" and r.family == "gpu" and r.predicted is not None
            and is_random_dataset(m)
        ]
        prior_a = SPECULATION.acceptance
        base = {"prior_acceptance": prior_a, "draft_tokens": SPECULATION.draft_tokens,
                "draft_cost": SPECULATION.draft_cost}
        self.spec_residuals_: tuple[Residual, ...] = ()
        if len(index) < self.min_rows:
            self.speculation_ = {
                RANDOM_DATASET: SpeculationFit(
                    RANDOM_DATASET, "prior", len(index), prior_a, reason=(
                        f"{len(index)} speculative row(s) of the random dataset, fewer than "
                        f"{self.min_rows}: the assumed acceptance kept"
                    ), **base,  # type: ignore[arg-type]
                )
            }
            return
        subset = [rows[i] for i in index]
        grid = np.array(ACCEPTANCE_GRID)
        logs = np.full((grid.size, len(index)), np.nan)
        for g, a in enumerate(grid):

            def tick(done: int, total: int, rid: str, a: float = float(a)) -> None:
                if progress:
                    progress(f"draft acceptance {a:.2f}", done, total, rid)

            got = validate(
                subset, efficiencies=table, catalog=self.catalog,
                workers=self.workers, input_means=means, acceptance=float(a), progress=tick,
            )
            logs[g] = [math.log(r.predicted) if r.predicted else np.nan for r in got.rows]
        ok = np.isfinite(logs).all(axis=0)
        measured = np.log([m.value for m in subset])
        fine = np.round(np.arange(grid[0], grid[-1] + 1e-9, 0.001), 4)
        curves = np.array([np.interp(fine, grid, logs[:, j]) if ok[j] else fine * np.nan
                           for j in range(len(index))])  # rows x fine rates
        z = (np.log(fine / (1 - fine)) - math.log(prior_a / (1 - prior_a))) / ACCEPTANCE_PRIOR_SIGMA
        weight = (ROBUST_SCALE / RESIDUAL_SIGMA) ** 2 * np.array(
            [(RESIDUAL_SIGMA / residual_sigma(validation.rows[i])) ** 2 for i in index]
        )
        u = (curves - measured[:, None]) / ROBUST_SCALE
        loss = weight[:, None] * 2.0 * (np.sqrt(1.0 + u * u) - 1.0)  # rows x fine rates
        loss[~ok] = 0.0
        total = loss.sum(axis=0)
        best = int(np.argmin(total + z * z))
        a_fit = float(fine[best])
        residuals = []
        for j, i in enumerate(index):
            if not ok[j]:
                continue
            a_cv = int(np.argmin(total - loss[j] + z * z))
            residuals.append(Residual(
                rows[i].id, validation.rows[i].group, rows[i].hardware, rows[i].metric,
                rows[i].value, math.exp(float(curves[j, best])), math.exp(float(curves[j, a_cv])),
            ))
        self.spec_residuals_ = tuple(residuals)
        self.speculation_ = {
            RANDOM_DATASET: SpeculationFit(
                RANDOM_DATASET, "fitted", len(residuals), _round(a_fit), **base,  # type: ignore[arg-type]
                fit_mape=_mape([x.abs_pct_error for x in residuals]),
                cv_mape=_mape([x.cv_abs_pct_error for x in residuals]),
            )
        }

    @staticmethod
    def _by_group(rows: Sequence[Measurement], validation: Validation) -> dict[str, list[int]]:
        by_group: dict[str, list[int]] = {}
        for i in fit_rows(rows, validation.rows):
            by_group.setdefault(validation.rows[i].group, []).append(i)
        return by_group

    @staticmethod
    def _joint(
        results: Sequence[RowResult],
        by_group: dict[str, list[int]],
        keys: Sequence[str],
        fixed_keys: Sequence[str],
        table: dict[str, Efficiencies],
        priors: dict[str, Efficiencies],
        means: dict[str, float],
    ) -> _Joint:
        """The joint problem linearised at the last simulation (which used `means`): the groups
        `keys` are fitted; the rows of `fixed_keys` (groups kept at their prior) inform the
        datasets' means only."""
        lins, fields, prior_phi, datasets, slopes = {}, {}, {}, {}, {}
        counts: dict[str, int] = {}
        models: dict[str, set[str]] = {}
        for key in sorted([*keys, *fixed_keys]):
            members = by_group[key]
            fields[key] = fields_of(key)
            lins[key] = _linearise(results, members, table[key], fields[key])
            prior_phi[key] = _log_params(priors[key], fields[key])
            names = [
                results[i].length_dataset if results[i].length_sensitivity is not None else ""
                for i in members
            ]
            for name, i in zip(names, members, strict=True):
                if name:
                    counts[name] = counts.get(name, 0) + 1
                    models.setdefault(name, set()).add(results[i].model)
            datasets[key] = names
            slopes[key] = np.array([results[i].length_sensitivity or 0.0 for i in members])
        estimated = sorted(
            name for name, n in counts.items()
            if n >= DATASET_MIN_ROWS and len(models[name]) >= DATASET_MIN_MODELS
        )
        return _Joint(
            lins,
            fields,
            prior_phi,
            {k: np.array([d if d in estimated else "" for d in v], dtype=object)
             for k, v in datasets.items()},
            slopes,
            {d: math.log(means.get(d, assumed_input_mean(d))) for d in estimated},
            {d: math.log(assumed_input_mean(d)) for d in estimated},
            {d: (math.log(16.0), math.log(0.9 * DATASETS[d].input_limit)) for d in estimated},
            frozenset(fixed_keys),
        )

    def _min_rows(self, key: str) -> int:
        return min(self.min_rows, WAFER_MIN_ROWS) if key.startswith("wafer/") else self.min_rows

    def _finish(
        self,
        rows: list[Measurement],
        validation: Validation,
        table: dict[str, Efficiencies],
        priors: dict[str, Efficiencies],
        fitted_keys: list[str],
        means: dict[str, float],
    ) -> None:
        index = fit_rows(rows, validation.rows)
        by_group = self._by_group(rows, validation)
        keys = [key for key in fitted_keys if by_group.get(key)]
        fixed_keys = [k for k in by_group if k in table and k not in keys]
        joint = self._joint(validation.rows, by_group, keys, fixed_keys, table, priors, means)
        cv: dict[int, float] = {}
        full = {k: np.ones(len(by_group[k]), dtype=bool) for k in joint.lins}
        _, psi_all = joint.solve(full) if joint.at else ({}, {})
        for key in joint.lins:
            if key in joint.fixed and not any(d for d in joint.datasets[key]):
                continue  # nothing fitted informs these rows: the fit is out of sample
            for j, i in enumerate(by_group[key]):
                # Leave the row out of everything it informs: its group's parameters and its
                # dataset's mean input length.
                keep = {k: v.copy() for k, v in full.items()}
                keep[key][j] = False
                if joint.datasets[key][j]:
                    phi, psi = joint.solve(keep)
                    cv[i] = math.exp(float(joint.predict(key, phi[key], psi)[j]))
                    continue
                # A row of no estimated dataset informs only its group (the datasets' means
                # hardly move with it): refit the group alone, the means as fitted on all rows.
                phi_key = joint.solve_group(key, keep[key], psi_all)
                cv[i] = math.exp(float(joint.predict(key, phi_key, psi_all)[j]))
        counts: dict[str, int] = {}
        models: dict[str, set[str]] = {}
        for i in index:
            name = validation.rows[i].length_dataset
            if name and validation.rows[i].group in joint.lins:
                counts[name] = counts.get(name, 0) + 1
                models.setdefault(name, set()).add(validation.rows[i].model)
        datasets: dict[str, DatasetFit] = {}
        for name in sorted(DATASETS):
            assumed = assumed_input_mean(name)
            if name in means:
                datasets[name] = DatasetFit(
                    name, "fitted", counts.get(name, 0), means[name], assumed
                )
            else:
                n, k = counts.get(name, 0), len(models.get(name, ()))
                datasets[name] = DatasetFit(
                    name, "prior", n, assumed, assumed,
                    f"{n} fit row(s) of {k} model(s), fewer than {DATASET_MIN_ROWS} rows of "
                    f"{DATASET_MIN_MODELS} models: the assumed distribution kept",
                )
        self.datasets_ = datasets
        self.input_means_ = dict(means)
        residuals = []
        for i in index:
            r = validation.rows[i]
            assert r.predicted is not None
            residuals.append(
                Residual(
                    r.id, r.group, r.hardware, r.metric, r.measured, r.predicted,
                    cv.get(i, r.predicted),
                )
            )
        groups: dict[str, GroupFit] = {}
        all_keys = sorted({r.group for r in validation.rows if r.group})
        for key in all_keys:
            mine = [res for res in residuals if res.group == key]
            fields = fields_of(key)
            prior_values = (
                {p: getattr(priors[key], p) for p in fields} if key in priors else {}
            )
            if key in fitted_keys:
                groups[key] = GroupFit(
                    key,
                    "fitted",
                    len(mine),
                    {p: getattr(table[key], p) for p in fields},
                    prior_values,
                    fit_mape=_mape([x.abs_pct_error for x in mine]),
                    cv_mape=_mape([x.cv_abs_pct_error for x in mine]),
                )
            else:
                if key not in priors:
                    reason = "no prior for this engine: rows are not predicted"
                else:
                    reason = (
                        f"{len(mine)} fit row(s), fewer than {self._min_rows(key)}: documented "
                        "prior kept"
                    )
                groups[key] = GroupFit(
                    key, "prior", len(mine), prior_values, prior_values, reason,
                    fit_mape=_mape([x.abs_pct_error for x in mine]),
                )
        self.efficiencies_ = {k: table[k] for k in fitted_keys}
        self.groups_ = groups
        self.residuals_ = tuple(residuals)
        fitted_res = [x for x in residuals if x.group in fitted_keys]
        self.fit_mape_ = _mape([x.abs_pct_error for x in fitted_res])
        self.cv_mape_ = _mape([x.cv_abs_pct_error for x in fitted_res])
        self.validation_ = validation

    def predict(self, measurements: Sequence[Measurement]) -> Validation:
        """Predict `measurements` with the fitted efficiencies (other groups: their prior)."""
        self._check_fitted()
        return validate(
            measurements, efficiencies=self.efficiencies_, catalog=self.catalog,
            workers=self.workers, input_means=self.input_means_,
        )

    def document(
        self, *, inputs: Sequence[tuple[str, str]], data_date: str
    ) -> dict[str, Any]:
        """The calibration file's content (`data/calibration/efficiencies.json`): versioned, with
        its provenance (each input file and its hash, the newest measurement date), the fitted
        values and the residual of every fitted row. Values are rounded to 6 significant digits,
        and nothing depends on the clock, so the same input gives the same bytes."""
        self._check_fitted()
        return {
            "format": CALIBRATION_FORMAT,
            "produced_by": f"megawatt calibrate (megawatt {_version()})",
            "input": {
                "files": [{"file": name, "sha256": sha} for name, sha in inputs],
                "newest_measurement": data_date,
            },
            "method": (
                "per group (family/vendor-generation/engine release): MAP fit of compute, "
                "attention, MoE-expert, memory, link efficiency and per-step overhead "
                "(per-sequence overhead: prior); soft-L1 loss of "
                f"the log errors (scale {ROBUST_SCALE}, row sigma {RESIDUAL_SIGMA}), Gaussian "
                "prior in log space around the documented prior (sigmas below); bounded "
                "L-BFGS-B from the prior; "
                f"{self.iterations} simulate-and-fit rounds. Jointly, the mean input length "
                f"of each MLPerf dataset with at least {DATASET_MIN_ROWS} fit rows of "
                f"{DATASET_MIN_MODELS} models (not published), shared by the groups' rows, "
                f"Gaussian prior of log width {DATASET_PRIOR_SIGMA} around the assumed "
                f"distribution's mean; alternating fits ({JOINT_ROUNDS} rounds). Leave-one-out "
                "cross-validation refits groups and datasets without the row. Wafer groups "
                "(from two rows up): the same estimator over the mesh parameters "
                "compute, memory, prefill_compute, layer_fixed_cycles, reduce_stage_cycles and "
                "handoff_s (their "
                "sigmas and bounds under wafer_*), on per-user decode-speed rows"
            ),
            "prior_sigma_log": dict(PRIOR_SIGMA),
            "bounds": {k: list(v) for k, v in FIT_BOUNDS.items()},
            "wafer_prior_sigma_log": dict(WAFER_PRIOR_SIGMA),
            "wafer_bounds": {k: list(v) for k, v in WAFER_FIT_BOUNDS.items()},
            "dataset_prior_sigma_log": DATASET_PRIOR_SIGMA,
            "fit_mape": _opt(self.fit_mape_),
            "cv_mape": _opt(self.cv_mape_),
            "by_family": {
                family: {
                    "n_rows": len(rows),
                    "fit_mape": _opt(_mape([x.abs_pct_error for x in rows])),
                    "cv_mape": _opt(_mape([x.cv_abs_pct_error for x in rows])),
                }
                for family in ("gpu", "wafer")
                if (rows := [x for x in self.residuals_
                             if x.group.split("/")[0] == family
                             and self.groups_[x.group].status == "fitted"])
            },
            "groups": {
                key: {
                    "status": g.status,
                    "n_rows": g.n_rows,
                    "values": {k: _round(v) for k, v in g.values.items()},
                    "prior": {k: _round(v) for k, v in g.prior.items()},
                    **({"reason": g.reason} if g.reason else {}),
                    "fit_mape": _opt(g.fit_mape),
                    "cv_mape": _opt(g.cv_mape),
                }
                for key, g in self.groups_.items()
            },
            "datasets": {
                name: {
                    "status": d.status,
                    "n_rows": d.n_rows,
                    "input_mean": _round(d.input_mean),
                    "prior_input_mean": _round(d.prior_input_mean),
                    **({"reason": d.reason} if d.reason else {}),
                }
                for name, d in self.datasets_.items()
            },
            "speculation": {
                name: {
                    "status": f.status,
                    "n_rows": f.n_rows,
                    "acceptance": _round(f.acceptance),
                    "prior_acceptance": f.prior_acceptance,
                    "draft_tokens": f.draft_tokens,
                    "draft_cost": f.draft_cost,
                    "grid": list(ACCEPTANCE_GRID),
                    **({"reason": f.reason} if f.reason else {}),
                    "fit_mape": _opt(f.fit_mape),
                    "cv_mape": _opt(f.cv_mape),
                }
                for name, f in self.speculation_.items()
            },
            "residuals": [
                {
                    "id": x.id,
                    "group": x.group,
                    "hardware": x.hardware,
                    "metric": x.metric,
                    "measured": _round(x.measured),
                    "predicted": _round(x.predicted),
                    "log_error": _round(math.log(x.predicted / x.measured)),
                    "cv_predicted": _round(x.cv_predicted),
                    **({"fits": "draft acceptance"} if spec else {}),
                }
                for spec, rows in ((False, self.residuals_), (True, self.spec_residuals_))
                for x in rows
            ],
        }


def _version() -> str:
    try:
        return metadata.version("megawatt")
    except metadata.PackageNotFoundError:
        return "unknown"


def _opt(x: float | None) -> float | None:
    return None if x is None else _round(x)


def newest_date(measurements: Sequence[Measurement]) -> str:
    """The newest `YYYY[-MM[-DD]]` date among the rows (text before any range or note)."""
    best = ""
    for m in measurements:
        hit = re.match(r"(\d{4}(?:-\d{2}(?:-\d{2})?)?)", m.date)
        if hit and hit.group(1) > best:
            best = hit.group(1)
    return best
