"""Measurement rows: the CSV schema, reading and checking a file (every error names the file,
the line, the column and the value), the packaged files, what a row's notes state (phase, plan,
disaggregated workers, engine, run), and the record of a row's prediction."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from megawatt._files import read_user_bytes
from megawatt.calibration.datasets import DATASETS, OTHER_DATASETS
from megawatt.errors import CatalogError, InputError, MegawattError
from megawatt.hardware import Catalog, load_catalog
from megawatt.model import load_model
from megawatt.perf.efficiency import engine_release

__all__ = [
    "CALIBRATION_DATA",
    "COLUMNS",
    "METRICS",
    "PACKAGED_DATA",
    "SCENARIOS",
    "SPEC_DECODE",
    "THROUGHPUT_METRICS",
    "WEIGHT_DTYPES",
    "Measurement",
    "RejectedRow",
    "RowResult",
    "Workers",
    "data_name",
    "disagg_topology",
    "load_measurements",
    "measurements_sha256",
    "parse_measurement_rows",
    "parse_measurements",
    "phase",
    "read_measurements",
    "row_engine",
    "run_key",
    "runs_of",
    "stated_plan",
]

COLUMNS = (
    "id",
    "hardware",
    "n_devices",
    "model",
    "weight_dtype",
    "engine",
    "scenario",
    "input_len",
    "output_len",
    "dataset",
    "concurrency",
    "n_requests",
    "ttft_p99_limit_ms",
    "tpot_p99_limit_ms",
    "spec_decode",
    "metric",
    "value",
)
"""Columns a measurements file must have (`source`, `date`, `notes`, `split` are optional)."""
SCENARIOS = (
    "offline",
    "server",
    "interactive",
    "single_user",
    "max_throughput_concurrency",
    "microbenchmark",
)
METRICS = (
    "output_tokens_per_s",
    "output_tokens_per_s_per_user",
    "input_tokens_per_s",
    "ttft_ms",
    "ratio",
)
WEIGHT_DTYPES = ("", "bf16", "fp8", "fp4")
SPEC_DECODE = ("yes", "no", "unknown")
THROUGHPUT_METRICS = ("output_tokens_per_s", "output_tokens_per_s_per_user", "input_tokens_per_s")


@dataclass(frozen=True)
class Measurement:
    """One row of a measurements file (units as in its README: tokens, ms, tokens/s).

    `line` is the row's line number in the file (the header is line 1). Blank optional fields
    are None (numbers) or "" (text).
    """

    line: int
    id: str
    hardware: str
    n_devices: int | None
    model: str
    weight_dtype: str
    engine: str
    scenario: str
    input_len: float | None
    output_len: float | None
    dataset: str
    concurrency: int | None
    n_requests: int | None
    ttft_p99_limit_ms: float | None
    tpot_p99_limit_ms: float | None
    spec_decode: str
    metric: str
    value: float
    date: str = ""
    notes: str = ""
    source: str = ""


@dataclass(frozen=True)
class RowResult:
    """The prediction for one measurement (or why there is none).

    `time_terms`: for calibration, a probe run's duration split by what each second scales with
    (see `TERMS`); `length_sensitivity`: how the prediction scales with the mean input length of
    `length_dataset` (an MLPerf dataset whose mean input is not published); both None unless
    asked for.
    """

    id: str
    hardware: str
    model: str
    scenario: str
    metric: str
    measured: float
    predicted: float | None
    plan: str
    skipped_reason: str
    group: str = ""
    family: str = ""
    time_terms: tuple[float, ...] | None = None
    kind: str = ""  # how the metric scales with step times: "inverse" or "ttft"
    notes: tuple[str, ...] = ()
    length_dataset: str = ""  # the dataset whose unpublished mean input length the row used
    length_sensitivity: float | None = None  # d ln(predicted) / d ln(that mean); with record

    @property
    def abs_pct_error(self) -> float | None:
        """|predicted - measured| / measured, a fraction (None when not predicted)."""
        if self.predicted is None:
            return None
        return abs(self.predicted - self.measured) / self.measured

    @property
    def log_error(self) -> float | None:
        """ln(predicted / measured) (None when not predicted)."""
        if self.predicted is None or self.predicted <= 0:
            return None
        return math.log(self.predicted / self.measured)


# -- reading a measurements file ---------------------------------------------------------------


PACKAGED_DATA: dict[str, str] = {
    "measurements": "data/validation/measurements.csv",
    "inferencex": "data/validation/inferencex/inferencex.csv",
    "inferencex-disagg": "data/validation/inferencex/inferencex_disagg.csv",
}
"""Measurement files in the package, by the name `--data` accepts in place of a path:
published (mostly MLPerf and vendor) figures, and InferenceX's open-engine benchmarks
(single-node and disaggregated runs; data/validation/inferencex/README.md)."""
CALIBRATION_DATA: tuple[str, ...] = ("measurements", "inferencex")
"""What `megawatt calibrate` fits by default: both packaged single-node files."""


def data_name(path: str | os.PathLike[str] | None) -> str:
    """How a measurements file is named in reports: its packaged path, or its file name."""
    if path is None:
        return PACKAGED_DATA["measurements"]
    if _packaged(path):
        return PACKAGED_DATA[str(path)]
    return str(Path(path).name)


def _packaged(path: str | os.PathLike[str]) -> bool:
    """Whether `path` names a packaged file (a file of that name in the working folder wins)."""
    return str(path) in PACKAGED_DATA and not Path(path).exists()


def measurements_sha256(path: str | os.PathLike[str] | None = None) -> str:
    """SHA-256 of a measurements file's bytes (the packaged file when `path` is None)."""
    return hashlib.sha256(_read_bytes(path)).hexdigest()


def _read_bytes(path: str | os.PathLike[str] | None) -> bytes:
    if path is None or _packaged(path):
        name = PACKAGED_DATA["measurements" if path is None else str(path)]
        return resources.files("megawatt").joinpath(name).read_bytes()
    return read_user_bytes(path, "measurements file")


def load_measurements(
    path: str | os.PathLike[str] | None = None, catalog: Catalog | None = None
) -> tuple[Measurement, ...]:
    """Read and check a measurements CSV: a path, a name in `PACKAGED_DATA`, or (None) the
    packaged published measurements; the first bad row is an error (`read_measurements` skips
    bad rows instead)."""
    return _strict(*read_measurements(path, catalog))


def read_measurements(
    path: str | os.PathLike[str] | None = None, catalog: Catalog | None = None
) -> tuple[tuple[Measurement, ...], tuple[RejectedRow, ...]]:
    """Read a measurements CSV (a path, a packaged name, or None: the packaged published
    measurements): the rows that pass every check, and those that do not with the reason (see
    `parse_measurement_rows`)."""
    name = data_name(path) if path is None or _packaged(path) else str(path)
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"measurements file {name} is not UTF-8 text (byte {exc.start:,} is "
            f"{data[exc.start]:#04x}); is it a binary file? Save it as a UTF-8 CSV."
        ) from None
    return parse_measurement_rows(text, name, catalog)


def _number(raw: str, column: str, where: str, *, whole: bool = False) -> float | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    kind = "a whole number >= 1" if whole else "a number > 0"
    if not math.isfinite(value) or value <= 0 or (whole and value != int(value)):
        raise InputError(f"{where}: {column} must be {kind} or blank; got {raw!r}.")
    return value


def _choice(raw: str, column: str, allowed: Iterable[str], where: str) -> str:
    value = raw.strip()
    allowed = tuple(allowed)
    if value not in allowed:
        shown = ", ".join(repr(a) if a == "" else a for a in allowed)
        raise InputError(f"{where}: {column} must be one of {shown}; got {value!r}.")
    return value


@dataclass(frozen=True)
class RejectedRow:
    """A row of a measurements file that was not read: its line, id and fields as written (blank
    when missing) and why it was refused."""

    line: int
    id: str
    hardware: str
    model: str
    scenario: str
    metric: str
    reason: str

    def result(self) -> RowResult:
        """The row as a skipped `RowResult` (nothing measured or predicted), for reports."""
        return RowResult(
            self.id or f"line {self.line}", self.hardware, self.model, self.scenario, self.metric,
            math.nan, None, "", f"not read: {self.reason}",
        )


def _strict(
    rows: tuple[Measurement, ...], rejected: tuple[RejectedRow, ...]
) -> tuple[Measurement, ...]:
    if rejected:
        raise InputError(rejected[0].reason)
    return rows


def parse_measurements(
    text: str, name: str = "<measurements>", catalog: Catalog | None = None
) -> tuple[Measurement, ...]:
    """Parse measurements CSV text; every error names the file, the line, the column, the value.

    Hardware and model ids must exist in the catalogs (a typo is an error, not a skipped row).
    The first bad row is the error; `parse_measurement_rows` skips bad rows instead.
    """
    return _strict(*parse_measurement_rows(text, name, catalog))


def parse_measurement_rows(
    text: str, name: str = "<measurements>", catalog: Catalog | None = None
) -> tuple[tuple[Measurement, ...], tuple[RejectedRow, ...]]:
    """Parse measurements CSV text into the rows that pass every check and those refused, each
    with a reason naming the file, the line, the column and the value. A file that cannot be a
    measurements file (no header, a missing column, no rows, NUL bytes) is an `InputError`."""
    catalog = catalog or load_catalog()
    reader = csv.DictReader(io.StringIO(text))
    out: list[Measurement] = []
    rejected: list[RejectedRow] = []
    seen: dict[str, int] = {}
    try:
        header = reader.fieldnames or []
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise InputError(
                f"{name}: line 1 (header): missing column(s) {', '.join(missing)}. A measurements "
                f"file needs: {', '.join(COLUMNS)} (see data/validation/README.md)."
            )
        start = 2
        for raw in reader:
            line = start
            start = reader.line_num + 1
            fields = {k: v.strip() if isinstance(v, str) else "" for k, v in raw.items() if k}
            try:
                out.append(_measurement(raw, fields, line, len(header), name, catalog, seen))
            except InputError as exc:
                rejected.append(
                    RejectedRow(
                        line, fields.get("id", ""), fields.get("hardware", ""),
                        fields.get("model", ""), fields.get("scenario", ""),
                        fields.get("metric", ""), str(exc),
                    )
                )
    except csv.Error as exc:
        raise InputError(
            f"{name}: line {reader.line_num}: not a CSV file megawatt can read ({exc}); is it a "
            "binary file? Save it as a UTF-8 CSV."
        ) from None
    if not out and not rejected:
        raise InputError(
            f"{name}: no measurement rows after the header; add at least one row (see "
            "data/validation/README.md)."
        )
    return tuple(out), tuple(rejected)


def _measurement(
    raw: dict[str | Any, Any],
    row: dict[str, str],
    line: int,
    n_columns: int,
    name: str,
    catalog: Catalog,
    seen: dict[str, int],
) -> Measurement:
    """One CSV row checked and parsed; a bad one raises `InputError` saying why."""
    if None in raw or any(v is None for v in raw.values()):
        raise InputError(
            f"{name}: line {line}: expected {n_columns} fields; got a different count. "
            "Quote fields that contain commas."
        )
    rid = row["id"]
    where = f"{name}: line {line} (id {rid or '?'})"
    if not rid:
        raise InputError(f"{where}: id must not be blank.")
    if rid in seen:
        raise InputError(f"{where}: id {rid} repeats line {seen[rid]}; ids must be unique.")
    seen[rid] = line
    try:
        catalog.device(row["hardware"])
    except CatalogError as exc:
        raise InputError(f"{where}: hardware: {exc}") from None
    if row["model"]:
        try:
            load_model(row["model"])
        except MegawattError as exc:
            raise InputError(f"{where}: model: {exc}") from None
    value = _number(row["value"], "value", where)
    if value is None:
        raise InputError(f"{where}: value must be a number > 0; got blank.")
    dataset = row["dataset"]
    if dataset not in DATASETS and dataset not in OTHER_DATASETS:
        known = ", ".join([*DATASETS, *OTHER_DATASETS])
        raise InputError(f"{where}: dataset must be one of {known}; got {dataset!r}.")
    n_dev = _number(row["n_devices"], "n_devices", where, whole=True)
    conc = _number(row["concurrency"], "concurrency", where, whole=True)
    n_req = _number(row["n_requests"], "n_requests", where, whole=True)
    m = Measurement(
        line=line,
        id=rid,
        hardware=row["hardware"],
        n_devices=int(n_dev) if n_dev is not None else None,
        model=row["model"],
        weight_dtype=_choice(row["weight_dtype"], "weight_dtype", WEIGHT_DTYPES, where),
        engine=row["engine"] or "other",
        scenario=_choice(row["scenario"], "scenario", SCENARIOS, where),
        input_len=_number(row["input_len"], "input_len", where),
        output_len=_number(row["output_len"], "output_len", where),
        dataset=dataset,
        concurrency=int(conc) if conc is not None else None,
        n_requests=int(n_req) if n_req is not None else None,
        ttft_p99_limit_ms=_number(row["ttft_p99_limit_ms"], "ttft_p99_limit_ms", where),
        tpot_p99_limit_ms=_number(row["tpot_p99_limit_ms"], "tpot_p99_limit_ms", where),
        spec_decode=_choice(row["spec_decode"] or "unknown", "spec_decode", SPEC_DECODE, where),
        metric=_choice(row["metric"], "metric", METRICS, where),
        value=value,
        date=row.get("date", ""),
        notes=row.get("notes", ""),
        source=row.get("source", ""),
    )
    if m.scenario == "max_throughput_concurrency" and m.concurrency is None:
        raise InputError(f"{where}: scenario max_throughput_concurrency needs a concurrency.")
    if m.scenario in ("server", "interactive") and (
        m.ttft_p99_limit_ms is None and m.tpot_p99_limit_ms is None
    ):
        raise InputError(
            f"{where}: scenario {m.scenario} needs ttft_p99_limit_ms or tpot_p99_limit_ms."
        )
    if m.dataset == "fixed" and (m.input_len is None or m.output_len is None) and not (
        phase(m) == "decode-only" and m.input_len is not None
    ):
        raise InputError(f"{where}: dataset fixed needs input_len and output_len.")
    return m


# -- what a row's notes state ------------------------------------------------------------------


def phase(m: Measurement) -> str:
    """The phase a row's notes say it measured alone: `decode-only`, `prefill-only`, or ''."""
    notes = m.notes.lower()
    if notes.startswith("decode-only"):
        return "decode-only"
    if notes.startswith("prefill-only"):
        return "prefill-only"
    return ""


_PLAN_RE = {k: re.compile(rf"\b{k}\s*(\d+)\b", re.IGNORECASE) for k in ("TP", "PP", "EP")}
_ADP_RE = re.compile(r"\b(attention[- ]DP|DP[- ]attention)\b", re.IGNORECASE)


def stated_plan(m: Measurement) -> dict[str, int]:
    """The plan a row's notes state: `TPn`, `PPn`, `EPn`, `attention-DP` (as 1)."""
    out = {}
    for key, rx in _PLAN_RE.items():
        hit = rx.search(m.notes)
        if hit:
            out[key.lower()] = int(hit.group(1))
    if _ADP_RE.search(m.notes):
        out["adp"] = 1
    return out


_ROLE = r"(\d+) worker\(s\) x TP(\d+) EP(\d+)( attention-DP)? = (\d+) GPUs"
_DISAGG_RE = re.compile(rf"prefill {_ROLE}, decode {_ROLE}")


@dataclass(frozen=True)
class Workers:
    """One side of a disaggregated run: `n` workers (replicas) of `gpus` devices each, with the
    stated TP, EP and attention data parallelism."""

    n: int
    gpus: int
    tp: int
    ep: int
    attention_dp: bool


def disagg_topology(m: Measurement) -> tuple[Workers, Workers] | None:
    """The prefill and decode workers a disaggregated row's notes state ("prefill 1 worker(s) x
    TP4 EP4 attention-DP = 4 GPUs, decode 5 worker(s) x TP8 EP8 = 40 GPUs"), None when the notes
    state none. Worker sizes are the role's GPUs over its workers."""
    hit = _DISAGG_RE.search(m.notes)
    if hit is None:
        return None
    sides = []
    for k in (0, 5):
        n, tp, ep, adp, total = (hit.group(k + j) for j in range(1, 6))
        n_workers, n_gpus = int(n), int(total)
        sides.append(
            Workers(
                n_workers, n_gpus // n_workers if n_workers else 0, int(tp), int(ep), bool(adp)
            )
        )
    return sides[0], sides[1]


_ATOM_RE = re.compile(r"\bATOM\b")
_INNER_RE = re.compile(r"\bframework (?:dynamo|mori)-(sglang|trt|vllm)\b", re.IGNORECASE)
_INNER = {"sglang": "sglang", "trt": "trtllm", "vllm": "vllm"}


def row_engine(m: Measurement) -> str:
    """The engine (release) a row ran on: its `engine`, resolved by its date for engines with
    several releases (`engine_release`); `other` whose notes name AMD's ATOM engine is `atom`,
    and a disaggregated run's orchestrator (NVIDIA Dynamo, AMD MoRI) is the engine it drives
    (`framework dynamo-trt` is TensorRT-LLM)."""
    engine = m.engine
    if engine == "other":
        inner = _INNER_RE.search(m.notes)
        if inner:
            engine = _INNER[inner.group(1).lower()]
        elif _ATOM_RE.search(m.notes):
            engine = "atom"
    return engine_release(engine, m.date)


def run_key(m: Measurement) -> tuple[Any, ...]:
    """What identifies the run a row reports on: every field but the row's id, metric and value
    (InferenceX publishes three metrics per run, one row each). Rows of one run are predicted
    from one simulation."""
    return (
        m.hardware, m.n_devices, m.model, m.weight_dtype, m.engine, m.scenario, m.input_len,
        m.output_len, m.dataset, m.concurrency, m.n_requests, m.ttft_p99_limit_ms,
        m.tpot_p99_limit_ms, m.spec_decode, m.date, _run_notes(m.notes),
    )


_RUN_URL_RE = re.compile(r"\brun (https?://\S+?);?(?:\s|$)")


def _run_notes(notes: str) -> str:
    """What a row's notes say about its run, not its metric: the benchmark run's address with
    the plan and worker layout it states (InferenceX writes each metric's own sentences), else
    the notes without the sentence that states the metric's statistic."""
    url = _RUN_URL_RE.search(notes)
    if url:
        plan = _DISAGG_RE.search(notes) or _PLAN_TEXT_RE.search(notes)
        return f"{url.group(1)} {plan.group(0) if plan else ''}"
    return re.sub(r"statistic:[^;]*;?\s*", "", notes).strip()


_PLAN_TEXT_RE = re.compile(r"\bTP\d+(?: PP\d+)?(?: EP\d+)?(?: attention-DP)?")


def runs_of(measurements: Sequence[Measurement]) -> list[list[int]]:
    """Indices of the rows of each run (`run_key`), runs in order of their first row."""
    runs: dict[tuple[Any, ...], list[int]] = {}
    for i, m in enumerate(measurements):
        runs.setdefault(run_key(m), []).append(i)
    return list(runs.values())
