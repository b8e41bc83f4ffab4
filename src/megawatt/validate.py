"""Replay published measurements through the serving simulator and say how wrong the model is.

A measurements CSV (schema: `data/validation/README.md`) becomes one prediction per row: the
deployment an expert would run on the row's hardware, the row's load pattern replayed by the
simulator, the row's metric read off the run. Assumptions are stated in `ASSUMPTIONS` and in each
row's plan; nothing is set per row or per model.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from megawatt._files import read_user_bytes
from megawatt.errors import CatalogError, FitError, InputError, MegawattError
from megawatt.hardware import Catalog, Device, System, load_catalog
from megawatt.interrupts import worker_pool
from megawatt.model import load_model
from megawatt.perf import (
    Deployment,
    Efficiencies,
    MemoryPlan,
    efficiencies_for,
    efficiency_key,
    family_of,
    plan_memory,
)
from megawatt.perf.efficiency import (
    PRIORS,
    SPECULATIVE_ENGINES,
    calibration_document,
    engine_release,
)
from megawatt.perf.image import (
    IMAGE_MEASUREMENTS,
    ImageEfficiencyFit,
    load_image_measurements,
    predict_image_row,
)
from megawatt.perf.speculative import Speculation, SpeculativeStepModel, wafer_speculation
from megawatt.plan import resolve_weight_dtype
from megawatt.serving import (
    KvLink,
    ReplicaConfig,
    RunResult,
    Slo,
    capacity,
    closed_loop_by_symmetry,
    concurrency,
    offline,
    unit_poisson,
)
from megawatt.workload import Fixed, LengthDistribution, Lognormal, Requests, Uniform

__all__ = [
    "ASSUMPTIONS",
    "CALIBRATION_DATA",
    "COLUMNS",
    "DATASETS",
    "METRICS",
    "PACKAGED_DATA",
    "SCENARIOS",
    "ImageRowResult",
    "ImageValidation",
    "Measurement",
    "RejectedRow",
    "RowResult",
    "Validation",
    "assumptions",
    "calibration_cv",
    "data_name",
    "load_measurements",
    "measurements_sha256",
    "parse_measurement_rows",
    "parse_measurements",
    "predict_row",
    "predict_rows",
    "read_measurements",
    "run_key",
    "runs_of",
    "summarize",
    "validate",
    "validate_images",
]

# -- the schema -------------------------------------------------------------------------------

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


# -- length assumptions per dataset -------------------------------------------------------------


@dataclass(frozen=True)
class DatasetLengths:
    """The length distribution assumed for a dataset: a clipped lognormal input, and an output
    with the row's mean (lognormal of spread `output_sigma`, clipped at `output_limit`)."""

    input_median: float
    input_sigma: float
    input_limit: int
    output_sigma: float
    output_limit: int
    default_output_mean: float | None
    note: str

    def input_distribution(self) -> Lognormal:
        """The assumed prompt lengths."""
        return Lognormal(self.input_median, self.input_sigma, 1, self.input_limit)

    def output_distribution(self, mean: float) -> LengthDistribution:
        """Output lengths with the given mean, clipped at the dataset's output limit."""
        return _lognormal_with_mean(mean, self.output_sigma, self.output_limit)


DATASETS: dict[str, DatasetLengths] = {
    "mlperf-openorca": DatasetLengths(
        500, 0.7, 1024, 0.8, 1024, None,
        "ASSUMED input lognormal median 500, sigma 0.7, clipped at the 1,024-token limit "
        "(mean ~560); output lognormal sigma 0.8 with the row's mean, clipped at 1,024",
    ),
    "mlperf-mixtral": DatasetLengths(
        300, 0.8, 2048, 0.8, 1024, None,
        "ASSUMED input lognormal median 300, sigma 0.8, clipped at 2,048 (limit not stated; "
        "OpenOrca, GSM8K and MBXP prompts are short); output sigma 0.8, clipped at 1,024",
    ),
    "mlperf-llama3.1-405b": DatasetLengths(
        8000, 0.7, 20000, 0.6, 2000, None,
        "ASSUMED input lognormal median 8,000, sigma 0.7, clipped at the 20,000-token limit "
        "(long-context subsets; mean ~9,400); output sigma 0.6, clipped at 2,000",
    ),
    "mlperf-cnndm": DatasetLengths(
        900, 0.45, 2540, 0.3, 128, 120.0,
        "ASSUMED input lognormal median 900, sigma 0.45, clipped at 2,540 (news articles, mean "
        "~990); output mean 120 when the row has none (most outputs hit the 128-token cap)",
    ),
    "mlperf-deepseek-r1": DatasetLengths(
        500, 0.8, 3136, 0.9, 20000, None,
        "ASSUMED input lognormal median 500, sigma 0.8, clipped at the 3,136-token limit "
        "(math, science and code questions, mean ~680); output sigma 0.9, clipped at 20,000",
    ),
}
OTHER_DATASETS = ("fixed", "unknown")
UNKNOWN_LENGTHS = (1000, 1000)
DECODE_ONLY_OUTPUT = 64

SPECULATION = Speculation(draft_tokens=3, acceptance=0.8, draft_cost=0.1)
WAFER_DRAFT_MODEL = "llama-3.1-8b"
"""The draft model assumed for speculative decoding on wafers (Cerebras has not published its
drafts; an 8B Llama is the smallest catalog model sharing Llama 3's tokenizer)."""

ASSUMPTIONS: tuple[str, ...] = (
    *(f"{name}: {d.note}" for name, d in DATASETS.items()),
    "fixed: every request has exactly input_len / output_len tokens",
    "unknown: the row's mean lengths as fixed lengths; "
    f"{UNKNOWN_LENGTHS[0]:,} / {UNKNOWN_LENGTHS[1]:,} tokens when blank (as TRT-LLM's 1k/1k table)",
    "n_devices blank (cloud APIs): one system when it holds the weights, else the fewest "
    "whole systems that do; throughput rows without a system size are skipped",
    "weight_dtype blank: the published format (FP8 for 16-bit models on GPUs with an FP8 rate)",
    "KV cache: FP8 when the weights are FP8/FP4 on a device with an FP8 rate (MLPerf harnesses "
    "quantise the cache), else 16-bit; a row whose notes say 'FP16 KV' keeps 16-bit",
    "plan: a TPn/PPn/EPn (and attention-DP) stated in the notes is used as given; otherwise the throughput "
    "scenarios search power-of-two TP inside the scale-up domain (PP beyond) and keep the "
    "best output tokens/s per device; single_user spans every device with the widest TP; MoE "
    "models put experts in parallel over the replica's devices",
    "batch: up to 1,024 sequences per replica (concurrency rows: the row's concurrency), "
    "8,192 tokens per step (server/interactive: the better of 2,048 and 8,192); the KV cache "
    "bounds it further",
    f"spec_decode=yes: k={SPECULATION.draft_tokens} drafted tokens, acceptance "
    f"{SPECULATION.acceptance} per token (DeepSeek-V3 report: 85-90% for the first MTP token; "
    f"lower further out) -> {SPECULATION.tokens_per_step:.2f} tokens per verify step; each "
    f"drafted token costs {SPECULATION.draft_cost:.0%} of a decode step",
    "spec_decode on wafers: the same k and acceptance; the draft is "
    f"{WAFER_DRAFT_MODEL}, kept on the same wafers (its weights and KV take SRAM) and timed on "
    "its own core regions",
    "engine releases: a row's date picks its engine's release, each its own calibration group "
    "(README caveat 8, software drift): cerebras before 2024-10 is the launch software "
    "`cerebras-2024-08`, from 2024-10 rewritten kernels and speculative decoding; TensorRT-LLM "
    "and vLLM before 2025 (MLPerf v4.1) are `trtllm-2024` and `vllm-2024`, TensorRT-LLM from "
    "2025-11 as InferenceX runs it `trtllm-2025-11`, SGLang from 2026-01 `sglang-2026-01`, AMD's "
    "ATOM (engine other, notes ATOM) `atom`, a disaggregated run's orchestrator (Dynamo, MoRI) "
    "the engine it drives; rows of a speculative release whose spec_decode is unknown are "
    "replayed with speculative decoding",
    "closed-loop concurrency rows (InferenceX): the benchmark client replayed as it runs - "
    "n_requests (blank: 10 x concurrency) issued concurrency at a time, each completion sending "
    "the next, ramp and drain included; lengths as the notes state (the serving benchmark's "
    "random dataset: uniform in [int(0.8 L), L], outputs forced by ignore_eos); throughput over "
    "the whole run, per-user speed 1 / median TPOT and median TTFT over its requests. Warm-up "
    "requests (from 2026-01-21) only warm the server, which the simulator never needs; runs "
    "without them may include start-up costs the simulator does not model",
    "InferenceX MTP rows: k=3 drafts (SGLang's and TensorRT-LLM's DeepSeek recipes), each at "
    "10% of a decode step, accepted at the rate `megawatt calibrate` fits to those rows (the "
    "random dataset's prompts are random tokens; `validate.fitted_acceptance`)",
    "memory: GPU vendors' HBM figures are binary (an 80 GB H100 holds 80 GiB); a plan a row "
    "states that at the 90% memory fraction does not hold the weights, or not the row's "
    "concurrency of its longest requests, runs at 96 or 98% where that holds them (operators "
    "raise SGLang's --mem-fraction-static and vLLM's --gpu-memory-utilization so)",
    "disaggregated rows: prefill and decode workers as the notes state (TP, EP, attention-DP; "
    "TP beyond one scale-up domain as TP inside it and pipeline stages across), KV over the "
    "prefill worker's NICs (its scale-up links when the whole run fits one NVLink domain), "
    "round-robin routing; the closed loop is estimated by symmetry (one worker of each side "
    "on the compiled engine, iterated: serving.closed_loop_by_symmetry); records whose split "
    "into workers is not stated are skipped",
    "wafer rows whose stated wafer count cannot hold the model (WaferLLM timed a subset of "
    "layers and scaled by the layer count) are predicted on the fewest wafers that do",
    "decode-only rows: the prompt is already cached (prefill assumed unlimited), "
    f"{DECODE_ONLY_OUTPUT} output tokens per request",
    "offline rows without n_requests: the steady state between the first completion and the "
    "last admission of a short run (MLPerf runs last >= 600 s, so their ramp and drain vanish)",
    "server/interactive: the highest Poisson rate whose p99 TTFT and TPOT meet the row's "
    "limits in a short run, per replica, times the replicas",
)



def assumptions(input_means: InputMeans | None = None) -> tuple[str, ...]:
    """`ASSUMPTIONS`, with the mean input length of each MLPerf dataset that calibration
    estimated (`input_means`; default: the calibration file's) in place of the assumed one."""
    means = fitted_input_means() if input_means is None else input_means
    out = []
    for line in ASSUMPTIONS:
        name = line.split(":", 1)[0]
        if name in means:
            line = (
                f"{name}: input mean {means[name]:,.0f} tokens ESTIMATED by `megawatt calibrate` "
                "from the rows that replay the dataset (the mean is not published); its prior "
                f"and the shape: {DATASETS[name].note}"
            )
        out.append(line)
    return tuple(out)


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
        _phase(m) == "decode-only" and m.input_len is not None
    ):
        raise InputError(f"{where}: dataset fixed needs input_len and output_len.")
    return m


# -- results ------------------------------------------------------------------------------------


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


# -- deployment choice ----------------------------------------------------------------------------

EffTable = Mapping[str, Efficiencies]
"""Efficiencies by `efficiency_key` (e.g. `gpu/nvidia/trtllm`); missing keys use the defaults."""

MAX_BATCH = 1024
TOKEN_BUDGET = 8192
LATENCY_BUDGETS = (2048, 8192)
_PLAN_RE = {k: re.compile(rf"\b{k}\s*(\d+)\b", re.IGNORECASE) for k in ("TP", "PP", "EP")}


def _phase(m: Measurement) -> str:
    notes = m.notes.lower()
    if notes.startswith("decode-only"):
        return "decode-only"
    if notes.startswith("prefill-only"):
        return "prefill-only"
    return ""


_ADP_RE = re.compile(r"\b(attention[- ]DP|DP[- ]attention)\b", re.IGNORECASE)


def _stated_plan(m: Measurement) -> dict[str, int]:
    """The plan a row's notes state: `TPn`, `PPn`, `EPn`, `attention-DP` (as 1)."""
    out = {}
    for key, rx in _PLAN_RE.items():
        hit = rx.search(m.notes)
        if hit:
            out[key.lower()] = int(hit.group(1))
    if _ADP_RE.search(m.notes):
        out["adp"] = 1
    return out


def _system_for(catalog: Catalog, device: Device) -> System:
    systems = catalog.systems_for(device.id)
    if not systems:
        raise InputError(f"no system in the catalog holds device {device.id}.")
    return max(systems, key=lambda s: (s.n_devices, s.id))


def _kv_dtype(m: Measurement, weight: str, device: Device) -> str:
    if re.search(r"\b(fp16|bf16|16-bit)\s+kv", m.notes, re.IGNORECASE):
        return "bf16"
    if weight in ("fp8", "fp4") and device.has_native("fp8"):
        return "fp8"
    return "bf16"


def _eff(table: EffTable | None, device: Device, engine: str) -> Efficiencies:
    key = efficiency_key(device, engine)
    if table is not None and key in table:
        return table[key]
    return efficiencies_for(device, engine)


def _holds(dep: Deployment, tokens: float, n_seqs: int = 1) -> MemoryPlan | None:
    try:
        plan = plan_memory(dep)
    except FitError:
        return None
    return plan if plan.sequence_kv_bytes(tokens) * n_seqs <= plan.kv_bytes else None


# -- workload --------------------------------------------------------------------------------------


def _lognormal_with_mean(mean: float, sigma: float, limit: int) -> LengthDistribution:
    if mean >= limit:
        return Fixed(limit)
    if sigma == 0:
        return Fixed(max(1, round(mean)))
    lo, hi = 1e-3, float(limit) * 10
    for _ in range(80):  # bisection on the median: the clipped mean grows with it
        mid = math.sqrt(lo * hi)
        if Lognormal(mid, sigma, 1, limit).mean < mean:
            lo = mid
        else:
            hi = mid
    return Lognormal(math.sqrt(lo * hi), sigma, 1, limit)


InputMeans = Mapping[str, float]
"""Mean input tokens per MLPerf dataset (their means are not published: README, "Dataset
lengths"), as `megawatt calibrate` estimates them; a dataset not in it keeps `DATASETS`."""


def assumed_input_mean(dataset: str) -> float:
    """The mean input length `DATASETS` assumes for an MLPerf dataset (the prior of the
    estimate)."""
    return DATASETS[dataset].input_distribution().mean


def fitted_input_means() -> dict[str, float]:
    """The dataset input means of the packaged calibration file ({} when it has none)."""
    document = calibration_document() or {}
    return {
        name: float(d["input_mean"])
        for name, d in document.get("datasets", {}).items()
        if d.get("status") == "fitted"
    }


def length_dataset(m: Measurement) -> str:
    """The MLPerf dataset whose unpublished mean input length a row depends on ('' if none:
    fixed or stated lengths, decode-only rows)."""
    if m.dataset in DATASETS and m.input_len is None and _phase(m) != "decode-only":
        return m.dataset
    return ""


def _with_input_mean(m: Measurement, means: InputMeans) -> Measurement:
    d = length_dataset(m)
    return replace(m, input_len=means[d]) if d in means else m


_RANDOM_RE = re.compile(r"uniform in \[(\d*\.?\d+)\s*L,\s*L\]", re.IGNORECASE)
_ISL_OSL_RE = re.compile(r"\bISL/OSL\s+(\d+)/(\d+)", re.IGNORECASE)


def _nominal_length(mean: float, ratio: float) -> int:
    """The nominal length L whose draw `Uniform.of_range_ratio(L, ratio)` has mean `mean`
    (InferenceX states the means: 921.5 for 1,024, 7,372.5 for 8,192)."""
    guess = round(2.0 * mean / (1.0 + ratio))
    best = min(
        range(max(1, guess - 3), guess + 4),
        key=lambda n: abs(Uniform.of_range_ratio(n, ratio).mean - mean),
    )
    return best


def _random_lengths(m: Measurement) -> tuple[Uniform, Uniform] | None:
    """The serving benchmark's `random` dataset a row's notes state (`uniform in [0.8L, L]`):
    prompt and output lengths uniform in [int(ratio L), L] (benchmark_serving.py), L from the
    notes' `ISL/OSL` or from the stated means; None when the notes state no such draw."""
    hit = _RANDOM_RE.search(m.notes)
    if hit is None or m.input_len is None or m.output_len is None:
        return None
    ratio = float(hit.group(1))
    if not 0.0 < ratio <= 1.0:
        return None
    nominal = _ISL_OSL_RE.search(m.notes)
    lengths = []
    for k, mean in enumerate((m.input_len, m.output_len)):
        n = int(nominal.group(k + 1)) if nominal else _nominal_length(mean, ratio)
        if abs(Uniform.of_range_ratio(n, ratio).mean - mean) > 1.0:  # notes and means disagree
            n = _nominal_length(mean, ratio)
        lengths.append(Uniform.of_range_ratio(n, ratio))
    return lengths[0], lengths[1]


def _lengths(m: Measurement) -> tuple[LengthDistribution, LengthDistribution, str]:
    """Input and output length distributions for a row, and the assumption in words."""
    uniform = _random_lengths(m)
    if uniform is not None:
        u_in, u_out = uniform
        return u_in, u_out, (
            f"random lengths uniform in [{u_in.min_tokens}, {u_in.max_tokens}] / "
            f"[{u_out.min_tokens}, {u_out.max_tokens}]"
        )
    if _phase(m) == "decode-only":
        ctx = int(m.input_len or UNKNOWN_LENGTHS[0])
        return Fixed(ctx), Fixed(DECODE_ONLY_OUTPUT), f"decode-only at context {ctx}"
    if m.dataset in DATASETS:
        d = DATASETS[m.dataset]
        out_mean = m.output_len or d.default_output_mean
        if out_mean is None:
            raise InputError(f"row {m.id}: dataset {m.dataset} needs an output_len.")
        if m.input_len:
            inp: LengthDistribution = _lognormal_with_mean(m.input_len, d.input_sigma, d.input_limit)
        else:
            inp = d.input_distribution()
        return inp, d.output_distribution(out_mean), f"{m.dataset} lengths (assumed)"
    if m.input_len is None and m.output_len is None:
        i, o = UNKNOWN_LENGTHS
        return Fixed(i), Fixed(o), f"lengths not stated: {i}/{o} assumed"
    i = round(m.input_len or UNKNOWN_LENGTHS[0])
    o = round(m.output_len or UNKNOWN_LENGTHS[1])
    return Fixed(i), Fixed(o), f"fixed {i}/{o}"


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


def _seed_text(m: Measurement) -> str:
    """What seeds a row's request draws: its run for closed-loop runs (whose three metrics share
    one simulation), else its id."""
    if m.scenario == "max_throughput_concurrency":
        return repr(run_key(m))
    return m.id


def _requests(m: Measurement, n: int, seed: int = 0) -> Requests:
    inp, out, _ = _lengths(m)
    digest = hashlib.sha256(_seed_text(m).encode()).hexdigest()[:8]
    rng = np.random.default_rng([seed, int(digest, 16)])
    prompt = inp.sample(rng, n)
    output = out.sample(rng, n)
    cached = np.zeros(n, dtype=np.int64)
    if _phase(m) == "decode-only":
        cached = prompt - 1
    return Requests(np.zeros(n), prompt, output, cached, np.zeros(n, dtype=np.int32), ("row",))


# -- sensitivities for calibration ------------------------------------------------------------

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
_LENGTH_STEP = 1.2


@dataclass(frozen=True)
class _Probe:
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


def speculation_for(dep: Deployment, spec: Speculation = SPECULATION) -> Speculation:
    """The speculative-decoding settings a row's deployment is replayed with: `spec`, or on a
    wafer with a draft model its drafts and acceptance at the measured draft cost
    (`wafer_speculation`)."""
    if dep.family == "wafer" and dep.draft_model is not None:
        return wafer_speculation(dep, spec.draft_tokens, spec.acceptance)
    return spec


def _config(dep: Deployment, spec: Speculation | None) -> ReplicaConfig:
    cfg = ReplicaConfig.of(dep)
    if spec is not None:
        model = SpeculativeStepModel(
            cfg.step_model, speculation_for(dep, spec), pipelined_verify=dep.family == "wafer"
        )
        cfg = replace(cfg, step_model=model)
    return cfg


def _run_probe(dep: Deployment, probe: _Probe, spec: Speculation | None) -> RunResult:
    cfg = replace(_config(dep, spec), max_num_seqs=probe.max_num_seqs)
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


def _sensitivities(
    dep: Deployment, probe: _Probe, spec: Speculation | None, measures: Sequence[str] = ()
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
class _Replay:
    value: float
    kind: str  # "inverse": the metric scales with 1/(step times); "ttft": with step times
    probe: _Probe
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


def _replay(
    m: Measurement,
    dep: Deployment,
    replicas: int,
    *,
    spec: Speculation | None,
    quick: bool = False,
) -> _Replay:
    """Replay a row's scenario on one replica of `dep`; the value is for all `replicas`."""
    cfg = _config(dep, spec)
    inp, out, _ = _lengths(m)
    mean_ctx = inp.mean + out.mean / 2.0
    plan = plan_memory(dep)
    if m.scenario == "single_user":
        # One request at a time: a closed loop of one is an offline run with a batch of one.
        measure = "duration"
        if dep.family == "wafer":
            # The metric is a decode speed or a TTFT: split only those seconds into terms, so
            # prefill-only parameters are not pulled by decode rows and the other way round.
            measure = "ttft" if m.metric == "ttft_ms" else "decode"
        probe = _Probe(_requests(m, 3), 1, measure)
        res = offline(replace(cfg, max_num_seqs=1), probe.requests)
        if m.metric == "ttft_ms":
            return _Replay(float(res.ttft_s[0]) * 1e3, "ttft", probe)
        decode_s = res.finish_s - res.first_token_s
        speed = float((res.output_tokens - 1).sum() / decode_s.sum())
        return _Replay(speed, "inverse", probe)
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
        reqs = _requests(m, n)
        res = concurrency(replace(cfg, max_num_seqs=per), reqs, per, stretch=True)
        value, kind, measure = _closed_metric(m, res, replicas)
        return _Replay(value, kind, _Probe(reqs, per, measure, per), result=res, replicas=replicas)
    batch = min(dep.max_num_seqs, max(1, plan.max_sequences(mean_ctx)))
    if m.scenario == "offline":
        if m.n_requests and m.dataset == "fixed" and not quick:
            probe = _Probe(_requests(m, max(1, math.ceil(m.n_requests / replicas))), dep.max_num_seqs)
            res = offline(cfg, probe.requests)
            return _Replay(_metric(m, res) * replicas, "inverse", probe)
        # Quick (plan-choice) runs too need a few batches: with fewer requests than the batch
        # holds, the run is all ramp and drain and favours the plan with fewer replicas.
        n = int(min(max(3 * batch, 300), 1500))
        probe = _Probe(_requests(m, n), dep.max_num_seqs)
        res = offline(cfg, probe.requests)
        value = _steady_tokens_per_s(res) if m.metric == "output_tokens_per_s" else _metric(m, res)
        return _Replay(value * replicas, "inverse", probe)
    # server / interactive: many more requests than the steady-state batch, or a short run
    # never fills the replica.
    slo = Slo(
        (m.ttft_p99_limit_ms or math.inf) / 1e3,
        (m.tpot_p99_limit_ms or math.inf) / 1e3,
    )
    n = int(min(max(4 * batch, 400), 1200 if quick else 4000))
    reqs = _requests(m, n)
    unit = unit_poisson(np.random.default_rng(1), n)
    probe = _Probe(reqs, dep.max_num_seqs)
    first = offline(cfg, reqs)
    hint = max(first.output_tokens_per_s / max(reqs.mean_output_tokens, 1.0), 1e-3)
    cap = capacity(
        cfg, reqs, unit, slo, rel_tol=0.08 if quick else 0.04, rate_hint=hint, max_evaluations=14
    )
    notes = [f"limited by {', '.join(cap.limited_by)}"] if cap.limited_by else []
    if cap.reason:
        notes.append(cap.reason)
    return _Replay(cap.output_tokens_per_s * replicas, "inverse", probe, notes)


def _closed_metric(m: Measurement, res: RunResult, replicas: float) -> tuple[float, str, str]:
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


def _label(dep: Deployment, replicas: int) -> str:
    if dep.family == "wafer":
        body = f"{dep.pp} wafer" + ("s" if dep.pp > 1 else "")
    else:
        body = f"tp{dep.tp}" + (f" pp{dep.pp}" if dep.pp > 1 else "")
        body += f" ep{dep.ep}" if dep.ep > 1 else ""
        body += " attention-dp" if dep.attention_dp else ""
    kv = "" if dep.family == "wafer" else f" kv {dep.kv_dtype}"
    return (
        f"{replicas}x {body} {dep.weight_dtype_of('experts' if dep.model.is_moe else 'mlp')}"
        f"{kv} batch<={dep.max_num_seqs} chunk {dep.max_num_batched_tokens}"
    )


def _skip(m: Measurement, reason: str, group: str = "", family: str = "") -> RowResult:
    return RowResult(
        m.id, m.hardware, m.model, m.scenario, m.metric, m.value, None, "", reason, group, family
    )


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


_PER_RUN_METRICS = ("output_tokens_per_s_per_user", "ttft_ms")


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
    (`_row_speculation`)."""
    if not rows:
        return ()
    if len({run_key(m) for m in rows}) > 1:
        raise InputError("predict_rows takes rows of one run (equal run_key); got several runs.")
    catalog = catalog or load_catalog()
    m = rows[0]
    dataset = length_dataset(m)
    means = fitted_input_means() if input_means is None else input_means
    rows = [_with_input_mean(r, means) for r in rows]
    m = rows[0]
    device = catalog.device(m.hardware)
    family = family_of(device.kind)
    engine = row_engine(m)
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
    if not m.model:
        return fail("no model")
    if (family, engine) not in PRIORS:
        return fail(
            f"no performance model for engine '{engine}' on {device.kind} devices "
            "(no prior and no rows to fit)"
        )
    if _phase(m) == "prefill-only":
        return fail("prefill-only rows are not supported")
    if m.n_devices is None and m.scenario != "single_user":
        return fail("system size not published (n_devices blank)")
    model = load_model(m.model)
    system = _system_for(catalog, device)
    eff = _eff(efficiencies, device, engine)
    weight = m.weight_dtype or resolve_weight_dtype("auto", model, device)
    if family == "wafer" and weight == "bf16":
        weight = "native" if "fp" not in "".join(model.native_weight_dtype.values()) else "bf16"
    base = Deployment(
        model=model,
        system=system,
        device=device,
        weight_dtype=weight,
        kv_dtype=_kv_dtype(m, weight, device) if family == "gpu" else "bf16",
        engine=engine,
        max_num_seqs=MAX_BATCH,
        max_num_batched_tokens=TOKEN_BUDGET,
        efficiencies=eff,
    )
    spec = _row_speculation(m, engine, family, acceptance)
    if spec and family == "wafer":
        base = replace(base, draft_model=load_model(WAFER_DRAFT_MODEL))
    sides = disagg_topology(m)
    if sides is not None:
        return _predict_disagg(rows, todo, out, base, system, spec, sides, group, family)

    try:
        choice = _choose(m, base, system, spec)
    except (FitError, InputError) as exc:
        return fail(f"no plan fits: {exc}")
    if choice is None:
        return fail(f"no plan of {m.model} fits {m.n_devices}x {m.hardware}")
    dep, replicas, assumed = choice
    plan = _label(dep, replicas) + _spec_label(spec) + assumed
    try:
        rep = _replay(m, dep, replicas, spec=spec)
        reads: dict[int, tuple[float, str, _Probe]] = {todo[0]: (rep.value, rep.kind, rep.probe)}
        for k in todo[1:]:
            if rep.result is None or rows[k].scenario != "max_throughput_concurrency":
                other = _replay(rows[k], dep, replicas, spec=spec)
                reads[k] = (other.value, other.kind, other.probe)
                continue
            value, kind, measure = _closed_metric(rows[k], rep.result, rep.replicas)
            reads[k] = (value, kind, replace(rep.probe, measure=measure))
        terms: dict[int, tuple[float, ...]] = {}
        sensitivity: dict[int, float] = {}
        if record:
            by_run: dict[int, list[int]] = {}  # rows read off the same probe run
            for k, (_, _, probe) in reads.items():
                by_run.setdefault(id(probe.requests), []).append(k)
            for ks in by_run.values():
                first = reads[ks[0]][2]
                split = _sensitivities(dep, first, spec, [reads[k][2].measure for k in ks])
                for k in ks:
                    terms[k] = split[reads[k][2].measure]
        wanted = length_datasets is None or dataset in length_datasets
        if record and dataset and wanted:
            # The same plan with every prompt 20% longer (a step wide enough to rise above the
            # 4% tolerance of the server scenarios' rate search).
            longer_rep: _Replay | None = None
            for k in todo:
                if not reads[k][0] > 0:
                    continue
                r = rows[k]
                longer_row = replace(r, input_len=_lengths(r)[0].mean * _LENGTH_STEP)
                if longer_rep is not None and longer_rep.result is not None and (
                    r.scenario == "max_throughput_concurrency"
                ):
                    longer = _closed_metric(longer_row, longer_rep.result, longer_rep.replicas)[0]
                else:
                    longer_rep = _replay(longer_row, dep, replicas, spec=spec)
                    longer = longer_rep.value
                if longer > 0:
                    sensitivity[k] = math.log(longer / reads[k][0]) / math.log(_LENGTH_STEP)
    except FitError as exc:
        return fail(f"no plan fits: {exc}")
    for k in todo:
        r = rows[k]
        value, kind, probe = reads[k]
        if not value > 0:
            out[k] = RowResult(
                r.id, r.hardware, r.model, r.scenario, r.metric, r.value, None, plan,
                "the run met no latency limit (" + "; ".join(rep.notes) + ")", group, family,
            )
            continue
        out[k] = RowResult(
            r.id,
            r.hardware,
            r.model,
            r.scenario,
            r.metric,
            r.value,
            value,
            plan,
            "",
            group,
            family,
            terms.get(k),
            kind,
            tuple(rep.notes),
            dataset,
            sensitivity.get(k),
        )
    return tuple(out[k] for k in range(len(rows)))


def _predict_disagg(
    rows: Sequence[Measurement],
    todo: Sequence[int],
    out: dict[int, RowResult],
    base: Deployment,
    system: System,
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
            rep, plan = _replay_disagg(m, base, system, spec, sides)
        except (FitError, InputError) as exc:
            reason = f"no plan fits: {exc}"
    if reason:
        for k in todo:
            out[k] = _skip(rows[k], reason, group, family)
        return tuple(out[k] for k in range(len(rows)))
    assert rep.result is not None
    for k in todo:
        r = rows[k]
        value = _closed_metric(r, rep.result, rep.replicas)[0]
        out[k] = RowResult(
            r.id, r.hardware, r.model, r.scenario, r.metric, r.value,
            value if value > 0 else None, plan, "" if value > 0 else "the run completed nothing",
            group, family,
        )
    return tuple(out[k] for k in range(len(rows)))


def _row_speculation(
    m: Measurement, engine: str, family: str, acceptance: float | None
) -> Speculation | None:
    """The speculative decoding a row is replayed with (None: none): its `spec_decode`, or an
    unknown one on an engine that speculates by default (`SPECULATIVE_ENGINES`). GPU rows of the
    serving benchmarks' random dataset (InferenceX's MTP runs) draft with the acceptance
    `acceptance`, else the one `megawatt calibrate` fitted for that dataset
    (`fitted_acceptance`), else `SPECULATION`'s."""
    if not (m.spec_decode == "yes" or (m.spec_decode == "unknown" and engine in SPECULATIVE_ENGINES)):
        return None
    if family == "gpu" and _random_lengths(m) is not None:
        a = acceptance if acceptance is not None else fitted_acceptance()
        if a is not None:
            return replace(SPECULATION, acceptance=a)
    return SPECULATION


def _spec_label(spec: Speculation | None) -> str:
    if spec is None:
        return ""
    return f" spec-decode k={spec.draft_tokens} a={spec.acceptance:.2f}"


def fitted_acceptance() -> float | None:
    """The acceptance rate of speculative drafts on the serving benchmarks' random dataset that
    the packaged calibration file holds (None when it has none)."""
    document = calibration_document() or {}
    fit = document.get("speculation", {}).get(RANDOM_DATASET)
    return float(fit["acceptance"]) if fit and fit.get("status") == "fitted" else None


RANDOM_DATASET = "random"
"""The calibration file's name for the serving benchmarks' random dataset (uniform lengths of
random tokens, outputs forced by ignore_eos), whose draft acceptance calibration estimates."""


def is_random_dataset(m: Measurement) -> bool:
    """Whether a row's prompts are the serving benchmarks' random dataset (`_random_lengths`)."""
    return _random_lengths(m) is not None


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


def _choose(
    m: Measurement, base: Deployment, system: System, spec: Speculation | None
) -> tuple[Deployment, int, str] | None:
    """The deployment and replica count for a row (see ASSUMPTIONS), and any assumption made."""
    inp, out, _ = _lengths(m)
    longest = float(inp.sample(np.random.default_rng(0), 64).max() + out.mean)
    model = base.model
    moe = model.is_moe
    wafer = base.family == "wafer"
    scale_up = system.n_devices
    max_tp = 1 if wafer else min(scale_up, 8)
    assumed = ""
    n_dev = m.n_devices
    if n_dev is None:
        # Cloud API: one system when it holds the weights, else the fewest systems that do.
        per_sys = scale_up
        for k in range(1, 257):
            tp = min(per_sys * k, max_tp)
            pp = per_sys * k // tp
            if _holds(replace(base, tp=tp, pp=pp, max_num_seqs=16), longest):
                n_dev = per_sys * k
                break
        if n_dev is None:
            return None
        assumed = f" (n_devices assumed {n_dev})"
    elif wafer and not _holds(replace(base, pp=n_dev, max_num_seqs=16), longest):
        # WaferLLM times a subset of a large model's layers on one wafer and scales by the
        # layer count: predict the pipeline the whole model needs.
        stated_n = n_dev
        n_dev = next(
            (k for k in range(n_dev + 1, 257)
             if _holds(replace(base, pp=k, max_num_seqs=16), longest)),
            None,
        )
        if n_dev is None:
            return None
        assumed = f" ({stated_n} wafer(s) stated cannot hold the model: {n_dev} assumed)"
    stated = _stated_plan(m)
    conc_cap = MAX_BATCH
    if m.scenario == "max_throughput_concurrency" and m.concurrency:
        conc_cap = m.concurrency
    if m.scenario == "single_user":
        conc_cap = 16

    def make(tp: int, pp: int, ep: int | None = None, adp: bool = False) -> Deployment:
        size = tp * pp
        e = ep if ep is not None else (size if moe and size > 1 else 1)
        return replace(
            base, tp=tp, pp=pp, ep=min(e, size), attention_dp=adp, max_num_seqs=conc_cap
        )

    if stated and not wafer:
        ep = stated.get("ep")
        adp = bool(stated.get("adp"))
        pp = stated.get("pp", 1)
        if ep and ep > scale_up and "tp" not in stated and "pp" not in stated:
            # Expert parallelism beyond one scale-up domain, no TP or PP stated: wide EP with
            # data-parallel attention over the EP group (DeepSeek's and SGLang's multi-node
            # deployments), not a pipeline.
            tp, adp = ep, True
        else:
            # No TP stated: fill the scale-up domain before pipelining (EP spans the replica).
            tp = stated.get("tp") or (min(max_tp, ep, n_dev) if ep else 1)
            if ep and ep > tp * pp:
                # Expert parallelism over more devices than the tensor group: pipeline the rest.
                pp = max(pp, ep // tp)
            tp = min(tp, max_tp)
        dep = make(tp, pp, ep, adp and tp > 1)
        if dep.n_devices > n_dev:
            dep = replace(dep, pp=max(1, n_dev // tp), ep=min(dep.ep, n_dev))
        if m.scenario == "max_throughput_concurrency":
            dep = replace(dep, max_num_seqs=max(1, math.ceil(conc_cap / (n_dev // dep.n_devices))))
        per_replica = max(1, math.ceil(conc_cap / max(1, n_dev // dep.n_devices)))
        dep, raised = _fitting(
            dep, longest, per_replica if m.scenario == "max_throughput_concurrency" else 0
        )
        if raised:
            assumed += (
                f" (memory fraction {dep.gpu_memory_utilization:.2f} assumed: the stated plan ran; "
                f"at the default {Deployment.gpu_memory_utilization} it holds too little)"
            )
        return dep, max(1, n_dev // dep.n_devices), assumed
    if m.scenario == "single_user" or wafer:
        if wafer:
            dep = make(1, n_dev)
        elif n_dev <= scale_up:
            tp = min(max_tp, n_dev)
            dep = make(tp, max(1, n_dev // tp), 1)
        else:
            dep = make(max_tp, n_dev // max_tp, 1)
        if m.scenario != "single_user":
            dep = replace(dep, max_num_seqs=MAX_BATCH)
        plan_memory(dep)
        return dep, 1, assumed
    # Throughput scenarios: power-of-two TP within the scale-up domain, PP beyond.
    cands: list[Deployment] = []
    tp = 1
    while tp <= min(max_tp, n_dev):
        if n_dev % tp == 0 and _holds(make(tp, 1), longest, 8):
            cands.append(make(tp, 1))
        tp *= 2
    if not cands:
        tp = min(max_tp, n_dev)
        pp = 2
        while tp * pp <= n_dev:
            if n_dev % (tp * pp) == 0 and _holds(make(tp, pp), longest, 8):
                cands.append(make(tp, pp))
                break
            pp += 1
    if not cands:
        return None
    if m.scenario == "max_throughput_concurrency":
        cands = [
            replace(d, max_num_seqs=max(1, math.ceil(conc_cap / (n_dev // d.n_devices))))
            for d in cands
        ]
    if m.scenario in ("server", "interactive"):
        # Latency limits: smaller prefill chunks shorten the decode stalls a long prompt causes.
        cands = [replace(d, max_num_batched_tokens=b) for d in cands for b in LATENCY_BUDGETS]
    if len(cands) == 1:
        return cands[0], n_dev // cands[0].n_devices, assumed
    best: tuple[float, Deployment] | None = None
    for dep in cands:
        replicas = n_dev // dep.n_devices
        score = _replay(m, dep, replicas, spec=spec, quick=True).value
        if best is None or score > best[0] * (1.0 + 1e-9):
            best = (score, dep)
    assert best is not None
    return best[1], n_dev // best[1].n_devices, assumed


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


def _worker_deployment(base: Deployment, w: Workers) -> Deployment:
    """A worker's deployment: TP over its devices, or (attention-DP, or TP smaller than the
    worker: SGLang's DP attention) attention data-parallel over them; experts over EP devices
    (MoE models); the memory fraction raised if the stated worker needs it. Tensor parallelism
    over more devices than one scale-up domain (TP16 on two 8-GPU nodes) is modelled as TP over
    a domain and pipeline stages across domains."""
    g = w.gpus
    adp = w.attention_dp or w.tp < g
    ep = min(max(w.ep, g if adp else 1), g) if base.model.is_moe else 1
    domain = base.system.n_devices
    tp, pp = g, 1
    if g > domain and not (adp and ep == g) and g % domain == 0:
        tp, pp = domain, g // domain
    dep = replace(base, tp=tp, pp=pp, ep=ep, attention_dp=adp and tp > 1)
    return _fitting(dep)[0]


def _kv_link(system: System, prefill: Deployment, total_devices: int) -> KvLink:
    """The KV path from one prefill worker: its devices' scale-up links when the whole run fits
    one scale-up domain (GB200 NVL72), else their scale-out NICs in parallel; at the link
    efficiency, with the fabric's latency."""
    eff = prefill.eff.link
    dev = prefill.device
    inside = total_devices <= system.n_devices
    per_device = (
        (system.scaleup_bandwidth_bytes_per_s or dev.scaleup_bandwidth_bytes_per_s)
        if inside
        else (system.scaleout_bandwidth_bytes_per_s or dev.scaleout_bandwidth_bytes_per_s)
    )
    if not per_device:
        raise InputError(f"{system.id}: no {'scale-up' if inside else 'scale-out'} bandwidth "
                         "for the KV transfers of a disaggregated run.")
    latency = system.scaleup_latency_s if inside else system.scaleout_latency_s
    return KvLink(per_device * prefill.n_devices * eff, latency)


def _replay_disagg(
    m: Measurement,
    base: Deployment,
    system: System,
    spec: Speculation | None,
    sides: tuple[Workers, Workers],
) -> tuple[_Replay, str]:
    """A disaggregated run replayed on the P/D model: the benchmark's closed loop over prefill
    and decode workers, KV over `_kv_link`, estimated by symmetry on the compiled engine
    (`serving.closed_loop_by_symmetry`: one worker of each side, iterated; the whole pair on the
    Python engine takes minutes for the largest runs); the value is the row's metric for the
    whole run, and the plan in words."""
    pre, dec = sides
    assert m.concurrency is not None
    prefill = _worker_deployment(replace(base, max_num_seqs=MAX_BATCH), pre)
    decode = _worker_deployment(
        replace(base, max_num_seqs=max(1, min(MAX_BATCH, m.concurrency))), dec
    )
    n = m.n_requests or DISAGG_PROMPTS_PER_CONCURRENCY * m.concurrency
    reqs = _requests(m, n)
    link = _kv_link(system, prefill, pre.n * pre.gpus + dec.n * dec.gpus)
    result = closed_loop_by_symmetry(
        _config(prefill, None), _config(decode, spec), reqs, link,
        n_prefill=pre.n, n_decode=dec.n, n_in_flight=m.concurrency,
    )
    share = m.concurrency / max(1, round(m.concurrency / dec.n))
    value, kind, measure = _closed_metric(m, result, share)
    plan = (
        f"prefill {pre.n}x [{_label(prefill, 1)[3:]}], decode {dec.n}x [{_label(decode, 1)[3:]}]"
        f"{_spec_label(spec)}, KV link {link.bandwidth_bytes_per_s / 1e9:.0f} GB/s"
    )
    return _Replay(value, kind, _Probe(reqs, decode.max_num_seqs, measure, m.concurrency),
                   result=result, replicas=share), plan


DISAGG_PROMPTS_PER_CONCURRENCY = 10
"""Prompts per unit of concurrency of a disaggregated run that does not state its count: the
NVIDIA (Dynamo) runs are driven by recipes outside InferenceX's repository (README: lengths and
counts ASSUMED as its AMD harness, 10 x concurrency)."""


STATED_PLAN_MEMORY_FRACTIONS = (0.96, 0.98)
"""Fractions of device memory tried when a plan a measurement states (so it ran) does not hold
the weights at the default `Deployment.gpu_memory_utilization`: engines let users raise it
(SGLang's --mem-fraction-static, vLLM's --gpu-memory-utilization) when a model barely fits,
e.g. DeepSeek-R1 in FP8 on 4 B200 (168 GB of weights per 193 GB device); an operator who must
raise it raises it well past the default, not just enough to load the weights."""


def _fitting(
    dep: Deployment, longest: float = 0.0, n_seqs: int = 0
) -> tuple[Deployment, bool]:
    """The deployment with the lowest memory fraction (the default, else one of
    `STATED_PLAN_MEMORY_FRACTIONS`) that holds its weights and, where one can, `n_seqs`
    sequences of `longest` tokens (a benchmark's concurrency: operators size the fraction for
    it), and whether it was raised; the default's `FitError` when none holds the weights."""
    fits: list[Deployment] = []
    first: FitError | None = None
    for fraction in (dep.gpu_memory_utilization, *STATED_PLAN_MEMORY_FRACTIONS):
        if fraction < dep.gpu_memory_utilization:
            continue
        tried = replace(dep, gpu_memory_utilization=fraction)
        try:
            plan = plan_memory(tried)
        except FitError as exc:
            first = first or exc
            continue
        if plan.sequence_kv_bytes(longest) * n_seqs <= plan.kv_bytes:
            return tried, fraction != dep.gpu_memory_utilization
        fits.append(tried)
    if fits:  # none holds the concurrency: the lowest that holds the weights
        return fits[0], fits[0].gpu_memory_utilization != dep.gpu_memory_utilization
    assert first is not None
    raise first


# -- the whole file ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Validation:
    """Every row's result and the summaries (errors are fractions: 0.12 = 12%)."""

    rows: tuple[RowResult, ...]

    @property
    def predicted(self) -> tuple[RowResult, ...]:
        """Rows with a prediction."""
        return tuple(r for r in self.rows if r.predicted is not None)

    def summary(
        self, cv_predicted: Mapping[tuple[str, float], float] | None = None
    ) -> dict[str, Any]:
        """`n_rows`, `n_predicted`, `mape`, `mape_by_hardware`, `mape_by_metric` and the
        acceptance figures (see `summarize`)."""
        return summarize(self.rows, cv_predicted)

    def to_json(self) -> dict[str, Any]:
        """The `--json` document: `{"summary": {...}, "rows": [...]}`."""
        s = self.summary()
        return {
            "summary": {
                "n_rows": s["n_rows"],
                "n_predicted": s["n_predicted"],
                "mape": s["mape"],
                "mape_by_hardware": s["mape_by_hardware"],
                "mape_by_metric": s["mape_by_metric"],
            },
            "rows": [
                {
                    "id": r.id,
                    "hardware": r.hardware,
                    "metric": r.metric,
                    "measured": r.measured,
                    "predicted": r.predicted,
                    "abs_pct_error": r.abs_pct_error,
                    "plan": r.plan,
                    "skipped_reason": r.skipped_reason,
                }
                for r in self.rows
            ],
        }


def _mape(rows: Sequence[RowResult]) -> float | None:
    errs = [r.abs_pct_error for r in rows if r.abs_pct_error is not None]
    return float(np.mean(errs)) if errs else None


def summarize(
    rows: Sequence[RowResult], cv_predicted: Mapping[tuple[str, float], float] | None = None
) -> dict[str, Any]:
    """MAPE overall, per hardware and per metric (fractions), and the acceptance figures: the
    GPU `output_tokens_per_s` rows overall and per hardware, and the share of throughput/TTFT
    rows predicted (wafer rows apart). `cv_predicted` ((id, measured) -> the calibration's
    leave-one-out prediction) adds the cross-validated MAPE of the GPU rows it covers."""
    done = [r for r in rows if r.predicted is not None]
    by_hw: dict[str, list[RowResult]] = {}
    by_metric: dict[str, list[RowResult]] = {}
    for r in done:
        by_hw.setdefault(r.hardware, []).append(r)
        by_metric.setdefault(r.metric, []).append(r)
    gpu_tps = [r for r in done if r.family == "gpu" and r.metric == "output_tokens_per_s"]
    gpu_by_hw: dict[str, list[RowResult]] = {}
    for r in gpu_tps:
        gpu_by_hw.setdefault(r.hardware, []).append(r)
    countable = [
        r for r in rows
        if r.family != "wafer" and (r.metric in THROUGHPUT_METRICS or r.metric == "ttft_ms")
    ]
    return {
        "n_rows": len(rows),
        "n_predicted": len(done),
        "mape": _mape(done),
        "mape_by_hardware": {k: _mape(v) for k, v in sorted(by_hw.items())},
        "mape_by_metric": {k: _mape(v) for k, v in sorted(by_metric.items())},
        "gpu_output_tokens_per_s": {
            "n": len(gpu_tps),
            "mape": _mape(gpu_tps),
            "by_hardware": {k: (len(v), _mape(v)) for k, v in sorted(gpu_by_hw.items())},
            **_cv(gpu_tps, cv_predicted),
        },
        "throughput_ttft_predicted": (
            sum(1 for r in countable if r.predicted is not None),
            len(countable),
        ),
        "wafer": _wafer_summary(rows, cv_predicted),
        "skipped": [(r.id, r.skipped_reason) for r in rows if r.predicted is None],
        "metrics": {
            metric: _figures(mine, cv_predicted) for metric, mine in sorted(by_metric.items())
        },
        "breakdown": [
            {"hardware": hw, "engine": engine, "metric": metric, **_figures(mine, cv_predicted)}
            for (hw, engine, metric), mine in sorted(_by_hw_engine_metric(done).items())
        ],
    }


def _by_hw_engine_metric(rows: Sequence[RowResult]) -> dict[tuple[str, str, str], list[RowResult]]:
    out: dict[tuple[str, str, str], list[RowResult]] = {}
    for r in rows:
        out.setdefault((r.hardware, r.group.split("/")[-1], r.metric), []).append(r)
    return out


def _figures(
    rows: Sequence[RowResult], cv_predicted: Mapping[tuple[str, float], float] | None
) -> dict[str, Any]:
    """n, MAPE, median predicted/measured, and (where the calibration file has them) the
    leave-one-out MAPE over the rows it fitted (`cv_n`)."""
    ratios = [r.predicted / r.measured for r in rows if r.predicted is not None]
    out: dict[str, Any] = {
        "n": len(rows),
        "mape": _mape(rows),
        "median_ratio": float(np.median(ratios)) if ratios else None,
    }
    cv = _cv(rows, cv_predicted)
    if cv:
        out |= {"cv_n": cv["cv_n"], "cv_mape": cv["cv_mape"]}
    return out


def _cv(
    rows: Sequence[RowResult], cv_predicted: Mapping[tuple[str, float], float] | None
) -> dict[str, Any]:
    if not cv_predicted:
        return {}
    hit = [
        (r, cv_predicted[(r.id, _sig6(r.measured))])
        for r in rows
        if (r.id, _sig6(r.measured)) in cv_predicted
    ]
    if not hit:
        return {}
    errors = [abs(p - r.measured) / r.measured for r, p in hit]
    fit = [r.abs_pct_error or 0.0 for r, _ in hit]
    return {"cv_n": len(hit), "cv_mape": float(np.mean(errors)), "cv_fit_mape": float(np.mean(fit))}


def _wafer_summary(
    rows: Sequence[RowResult], cv_predicted: Mapping[tuple[str, float], float] | None
) -> dict[str, Any]:
    """The wafer-scale acceptance figures: per-user speed and TTFT rows of wafers, their median
    and largest absolute error (fractions), and the same for the calibration's leave-one-out
    predictions where the calibration file has them."""
    mine = [r for r in rows if r.family == "wafer" and r.metric != "ratio"]
    done = [r for r in mine if r.abs_pct_error is not None]
    out: dict[str, Any] = {"n": len(mine), "n_predicted": len(done)}
    if done:
        errors = [r.abs_pct_error or 0.0 for r in done]
        worst = max(done, key=lambda r: r.abs_pct_error or 0.0)
        out |= {
            "median": float(np.median(errors)),
            "max": float(max(errors)),
            "max_id": worst.id,
            "mape": float(np.mean(errors)),
        }
    if cv_predicted:
        cv = [
            abs(cv_predicted[key] - r.measured) / r.measured
            for r in done
            if (key := (r.id, _sig6(r.measured))) in cv_predicted
        ]
        if cv:
            out |= {"cv_n": len(cv), "cv_median": float(np.median(cv)), "cv_max": float(max(cv))}
    return out


def _sig6(x: float) -> float:
    return float(f"{x:.6g}")


def calibration_cv() -> dict[tuple[str, float], float]:
    """(id, measured to 6 digits) -> the leave-one-out prediction of the packaged calibration
    file (the calibration's cross-validation, matched to rows of any measurements file)."""
    document = calibration_document()
    if not document:
        return {}
    return {
        (str(r["id"]), _sig6(float(r["measured"]))): float(r["cv_predicted"])
        for r in document.get("residuals", [])
    }


@cache
def _worker_catalog() -> Catalog:
    return load_catalog()


def _predict_task(
    args: tuple[
        Sequence[Measurement],
        EffTable | None,
        bool,
        InputMeans | None,
        Collection[str] | None,
        float | None,
    ],
) -> tuple[RowResult, ...]:
    rows, eff, record, means, lengths, acceptance = args
    return predict_rows(
        rows, _worker_catalog(), eff, record=record, input_means=means, length_datasets=lengths,
        acceptance=acceptance,
    )


Progress = Callable[[int, int, str], None]


def runs_of(measurements: Sequence[Measurement]) -> list[list[int]]:
    """Indices of the rows of each run (`run_key`), runs in order of their first row."""
    runs: dict[tuple[Any, ...], list[int]] = {}
    for i, m in enumerate(measurements):
        runs.setdefault(run_key(m), []).append(i)
    return list(runs.values())


def validate(
    measurements: Sequence[Measurement],
    *,
    efficiencies: EffTable | None = None,
    catalog: Catalog | None = None,
    workers: int | None = None,
    record: bool = False,
    progress: Progress | None = None,
    input_means: InputMeans | None = None,
    length_datasets: Collection[str] | None = None,
    acceptance: float | None = None,
) -> Validation:
    """Predict every row, the rows of one run (`run_key`) from one simulation (in parallel
    processes when `workers` > 1; results are the same). `efficiencies`, `input_means`,
    `record` and `acceptance`: as `predict_rows`."""
    n = len(measurements)
    runs = runs_of(measurements)
    workers = min(workers or os.cpu_count() or 1, max(len(runs), 1))
    out: list[RowResult | None] = [None] * n
    if progress:
        progress(0, n, "")
    done = 0
    if workers <= 1 or catalog is not None:
        cat = catalog or load_catalog()
        for run in runs:
            got = predict_rows(
                [measurements[i] for i in run], cat, efficiencies, record=record,
                input_means=input_means, length_datasets=length_datasets, acceptance=acceptance,
            )
            for i, r in zip(run, got, strict=True):
                out[i] = r
            done += len(run)
            if progress:
                progress(done, n, measurements[run[-1]].id)
    else:
        # Slowest runs first keeps both processes busy to the end.
        order = sorted(runs, key=lambda run: _cost_rank(measurements[run[0]]))
        with worker_pool(workers) as pool:
            futures = {
                pool.submit(
                    _predict_task,
                    (
                        [measurements[i] for i in run], efficiencies, record, input_means,
                        length_datasets, acceptance,
                    ),
                ): run
                for run in order
            }
            for future in as_completed(futures):
                run = futures[future]
                for i, r in zip(run, future.result(), strict=True):
                    out[i] = r
                done += len(run)
                if progress:
                    progress(done, n, measurements[run[-1]].id)
    return Validation(tuple(r for r in out if r is not None))


def _cost_rank(m: Measurement) -> int:
    return {"server": 0, "interactive": 0, "max_throughput_concurrency": 1, "offline": 2}.get(
        m.scenario, 3
    )


# -- image generation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRowResult:
    """One image-generation row: measured and predicted images/s of its system, the prediction
    of a fit without the row (`loo_predicted`) and without any row of its system
    (`loso_predicted`), the chosen batch per device and what bounds it."""

    id: str
    system: str
    hardware: str
    n_devices: int
    image_model: str
    scenario: str
    round: str
    measured: float
    predicted: float
    loo_predicted: float
    loso_predicted: float
    batch: int
    bound: str
    batch_limit: str
    recalled: bool

    @property
    def abs_pct_error(self) -> float:
        """|predicted - measured| / measured, a fraction."""
        return abs(self.predicted - self.measured) / self.measured


@dataclass(frozen=True)
class ImageValidation:
    """The image-generation rows replayed through `megawatt.perf.image` with the compute
    efficiency fitted to them: per-row results, the fit's MAPE, leave-one-out MAPE and
    leave-one-system-out MAPE (fractions)."""

    data: str
    rows: tuple[ImageRowResult, ...]
    compute_efficiency: float
    mape: float
    loo_mape: float
    loso_mape: float
    efficiency_source: str

    def to_json(self) -> dict[str, Any]:
        """The `image_generation` part of `validate --json`."""
        return {
            "data": self.data,
            "compute_efficiency": self.compute_efficiency,
            "mape": self.mape,
            "loo_mape": self.loo_mape,
            "loso_mape": self.loso_mape,
            "n_rows": len(self.rows),
            "n_recalled": sum(r.recalled for r in self.rows),
            "efficiency_source": self.efficiency_source,
            "rows": [
                {
                    "id": r.id,
                    "system": r.system,
                    "hardware": r.hardware,
                    "n_devices": r.n_devices,
                    "image_model": r.image_model,
                    "scenario": r.scenario,
                    "round": r.round,
                    "metric": "images_per_s",
                    "measured": r.measured,
                    "predicted": r.predicted,
                    "abs_pct_error": r.abs_pct_error,
                    "loo_predicted": r.loo_predicted,
                    "loso_predicted": r.loso_predicted,
                    "batch_per_device": r.batch,
                    "bound": r.bound,
                    "batch_limit": r.batch_limit,
                    "recalled": r.recalled,
                }
                for r in self.rows
            ],
        }


def validate_images(
    path: str | os.PathLike[str] | None = None, catalog: Catalog | None = None
) -> ImageValidation:
    """Fit the image compute efficiency to the image rows at `path` (None: the packaged MLPerf
    SDXL rows, `data/validation/images.csv`) and predict every row with it; the cross-validated
    predictions refit without the row (and without its system)."""
    cat = catalog or load_catalog()
    rows = load_image_measurements(path, cat)
    fit = ImageEfficiencyFit(catalog=cat).fit(rows)
    out = []
    for i, m in enumerate(rows):
        _, t, why = predict_image_row(m, fit.efficiency_, cat)
        out.append(
            ImageRowResult(
                id=m.id, system=m.system, hardware=m.hardware, n_devices=m.n_devices,
                image_model=m.image_model, scenario=m.scenario, round=m.round,
                measured=m.value, predicted=fit.predicted_[i],
                loo_predicted=fit.loo_predicted_[i], loso_predicted=fit.loso_predicted_[i],
                batch=t.batch, bound=t.bound, batch_limit=why, recalled=m.recalled,
            )
        )
    name = IMAGE_MEASUREMENTS if path is None else Path(path).name
    return ImageValidation(
        data=name, rows=tuple(out), compute_efficiency=fit.compute_, mape=fit.mape_,
        loo_mape=fit.loo_mape_, loso_mape=fit.loso_mape_, efficiency_source=fit.efficiency_.source,
    )
