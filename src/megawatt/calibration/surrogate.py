"""The fit's surrogate and solvers: a row's metric as a function of the parameters between
simulations (each probe run's seconds split by what they scale with), the robust MAP fit of a
group's parameters and of a dataset's mean input length, and the joint fit across groups."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import minimize

from megawatt.calibration.measurements import RowResult
from megawatt.calibration.runs import TERMS
from megawatt.perf import Efficiencies
from megawatt.perf.efficiency import FITTED_FIELDS, WAFER_FITTED_FIELDS

__all__ = [
    "DATASET_PRIOR_SIGMA",
    "FIT_BOUNDS",
    "JOINT_ROUNDS",
    "PRIOR_SIGMA",
    "QUEUE_RESIDUAL_SIGMA",
    "RESIDUAL_SIGMA",
    "ROBUST_SCALE",
    "WAFER_FIT_BOUNDS",
    "WAFER_PRIOR_SIGMA",
    "JointFit",
    "Linearised",
    "efficiencies_at",
    "fields_of",
    "linearise",
    "log_params",
    "residual_sigma",
    "rounded",
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
around the value `datasets.DATASETS` assumes: the means are not published (validation README,
"Dataset lengths"), so calibration estimates them from the rows that replay the dataset."""
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
_SIG = 6  # significant digits of saved values: the file is regenerated bit for bit


def rounded(x: float) -> float:
    """`x` to the significant digits the calibration file saves."""
    return float(f"{x:.{_SIG}g}")


def fields_of(key: str) -> tuple[str, ...]:
    """The fitted parameters of a calibration group (by its family)."""
    return WAFER_FITTED_FIELDS if key.split("/")[0] == "wafer" else FITTED_FIELDS


def _bounds(fields: Sequence[str]) -> dict[str, tuple[float, float]]:
    return WAFER_FIT_BOUNDS if tuple(fields) == WAFER_FITTED_FIELDS else FIT_BOUNDS


def _sigmas(fields: Sequence[str]) -> dict[str, float]:
    return WAFER_PRIOR_SIGMA if tuple(fields) == WAFER_FITTED_FIELDS else PRIOR_SIGMA


def residual_sigma(r: RowResult) -> float:
    """A row's expected log error: `RESIDUAL_SIGMA`, or `QUEUE_RESIDUAL_SIGMA` for a TTFT read off
    a loaded closed loop (`QUEUE_RESIDUAL_SIGMA`)."""
    if r.metric == "ttft_ms" and r.scenario == "max_throughput_concurrency":
        return QUEUE_RESIDUAL_SIGMA
    return RESIDUAL_SIGMA


# -- the surrogate: a row's metric as a function of the parameters ------------------------------


@dataclass(frozen=True)
class Linearised:
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

    def shifted(self, offset: np.ndarray) -> Linearised:
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


def log_params(eff: Efficiencies, fields: Sequence[str] = FITTED_FIELDS) -> np.ndarray:
    """The log of each of `fields` of `eff`, raised to its lower bound (the start of a fit)."""
    bounds = _bounds(fields)
    values = [max(float(getattr(eff, p)), bounds[p][0]) for p in fields]
    return np.asarray(np.log(values), dtype=np.float64)


def _solve(
    lin: Linearised, prior_phi: np.ndarray, rows: np.ndarray, fields: Sequence[str] = FITTED_FIELDS
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


def linearise(
    results: Sequence[RowResult],
    index: Sequence[int],
    eff: Efficiencies,
    fields: Sequence[str] = FITTED_FIELDS,
) -> Linearised:
    """The rows `index` of `results` (recorded with time terms) linearised at `eff`: each row's
    seconds that scale with each of `fields`, the rest fixed (`Linearised`)."""
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
    return Linearised(
        log_params(eff, fields), terms, fixed, log_value, log_measured, sign, inverse, row_weight
    )


def efficiencies_at(
    base: Efficiencies, phi: np.ndarray, fields: Sequence[str] = FITTED_FIELDS
) -> Efficiencies:
    """`base` with `fields` at the log-parameters `phi`, rounded as saved (`rounded`)."""
    values = {p: rounded(float(math.exp(v))) for p, v in zip(fields, phi, strict=True)}
    return base.with_values(**values)


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
class JointFit:
    """The fit across groups: each group's parameters, and the mean input length of every MLPerf
    dataset, which rows of several groups share. Solved by alternating: groups given the
    datasets' means, then each dataset's mean given the groups (`JOINT_ROUNDS` times)."""

    lins: dict[str, Linearised]
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
