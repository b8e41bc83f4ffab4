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
scale with each parameter (`runs.TERMS`); between simulations a row's metric is predicted as
`value x old duration / new duration`. Three outer iterations re-simulate at the new values; the
residuals reported are those of the last simulation. Cross-validation is leave-one-out by row on
the last linearisation: each row is predicted by values fitted without it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np

from megawatt.calibration.datasets import DATASETS, RANDOM_DATASET, assumed_input_mean
from megawatt.calibration.lengths import is_random_dataset, length_dataset
from megawatt.calibration.measurements import Measurement, RowResult, row_engine
from megawatt.calibration.speculation import SPECULATION
from megawatt.calibration.surrogate import (
    DATASET_PRIOR_SIGMA,
    FIT_BOUNDS,
    JOINT_ROUNDS,
    PRIOR_SIGMA,
    RESIDUAL_SIGMA,
    ROBUST_SCALE,
    WAFER_FIT_BOUNDS,
    WAFER_PRIOR_SIGMA,
    JointFit,
    efficiencies_at,
    fields_of,
    linearise,
    log_params,
    residual_sigma,
    rounded,
)
from megawatt.calibration.validation import Validation, validate
from megawatt.errors import InputError, NotFittedError
from megawatt.hardware import Catalog, load_catalog
from megawatt.perf import Efficiencies, efficiency_key
from megawatt.perf.efficiency import CALIBRATION_FORMAT, PRIORS, prior

__all__ = [
    "ACCEPTANCE_GRID",
    "ACCEPTANCE_PRIOR_SIGMA",
    "DATASET_MIN_MODELS",
    "DATASET_MIN_ROWS",
    "WAFER_MIN_ROWS",
    "Calibrator",
    "DatasetFit",
    "GroupFit",
    "Progress",
    "Residual",
    "SpeculationFit",
    "fit_rows",
    "newest_date",
    "wafer_fit_row",
]

WAFER_MIN_ROWS = 2
"""Wafer groups are fitted from two rows up: each group has only a handful of published
figures, and the prior (WaferLLM) holds the directions two rows cannot pin down."""
DATASET_MIN_ROWS = 3
"""Datasets with fewer fit rows keep their assumed mean input length."""
DATASET_MIN_MODELS = 2
"""Datasets replayed by fewer models keep their assumed mean input length: a dataset that only
one model's rows use would give that model a parameter of its own (the acceptance forbids
parameters per model), soaking up its modelling error."""
ACCEPTANCE_GRID = tuple(float(a) for a in np.round(np.linspace(0.1, 0.95, 12), 4))
"""Draft acceptance rates at which the speculative rows are simulated; between them a row's log
prediction is interpolated linearly (it is smooth in the rate)."""
ACCEPTANCE_PRIOR_SIGMA = 1.0
"""Prior width of the draft acceptance, in logit units, around `speculation.SPECULATION`'s 0.8
(DeepSeek-V3 report, natural text): the random dataset's prompts are random tokens, so the
drafts may well be accepted less often."""


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
    `prior` (the assumption of `datasets.DATASETS` kept, with `reason`)."""

    name: str
    status: str
    n_rows: int
    input_mean: float
    prior_input_mean: float
    reason: str = ""


@dataclass(frozen=True)
class SpeculationFit:
    """What calibration did for the draft acceptance of speculative rows of one dataset
    (`datasets.RANDOM_DATASET`): `fitted` from `n_rows` rows, or `prior` (with `reason`)."""

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
                table[key] = efficiencies_at(priors[key], phi[key], fields_of(key))
            means = {name: rounded(math.exp(v)) for name, v in sorted(psi.items())}
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
                RANDOM_DATASET, "fitted", len(residuals), rounded(a_fit), **base,  # type: ignore[arg-type]
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
    ) -> JointFit:
        """The joint problem linearised at the last simulation (which used `means`): the groups
        `keys` are fitted; the rows of `fixed_keys` (groups kept at their prior) inform the
        datasets' means only."""
        lins, fields, prior_phi, datasets, slopes = {}, {}, {}, {}, {}
        counts: dict[str, int] = {}
        models: dict[str, set[str]] = {}
        for key in sorted([*keys, *fixed_keys]):
            members = by_group[key]
            fields[key] = fields_of(key)
            lins[key] = linearise(results, members, table[key], fields[key])
            prior_phi[key] = log_params(priors[key], fields[key])
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
        return JointFit(
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
                    "values": {k: rounded(v) for k, v in g.values.items()},
                    "prior": {k: rounded(v) for k, v in g.prior.items()},
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
                    "input_mean": rounded(d.input_mean),
                    "prior_input_mean": rounded(d.prior_input_mean),
                    **({"reason": d.reason} if d.reason else {}),
                }
                for name, d in self.datasets_.items()
            },
            "speculation": {
                name: {
                    "status": f.status,
                    "n_rows": f.n_rows,
                    "acceptance": rounded(f.acceptance),
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
                    "measured": rounded(x.measured),
                    "predicted": rounded(x.predicted),
                    "log_error": rounded(math.log(x.predicted / x.measured)),
                    "cv_predicted": rounded(x.cv_predicted),
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
    return None if x is None else rounded(x)


def newest_date(measurements: Sequence[Measurement]) -> str:
    """The newest `YYYY[-MM[-DD]]` date among the rows (text before any range or note)."""
    best = ""
    for m in measurements:
        hit = re.match(r"(\d{4}(?:-\d{2}(?:-\d{2})?)?)", m.date)
        if hit and hit.group(1) > best:
            best = hit.group(1)
    return best
