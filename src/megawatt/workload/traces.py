"""Request traces: the built-in Azure 2023 and Mooncake traces and a generic CSV / JSONL schema.

Generic schema (your own traces): a CSV file whose header is
`arrival_s,prompt_tokens,output_tokens[,cached_tokens][,class]`, or a JSONL file with one object
per line and the same keys. `arrival_s` is seconds (any origin), token counts are whole numbers
(`prompt_tokens >= 1` is the whole prompt, `output_tokens >= 1`, `0 <= cached_tokens <
prompt_tokens` defaults to 0); `class` names the request class (empty or absent: the file's class,
see `load_trace`). Rows must be sorted by arrival. Unknown columns or keys are errors; a bad row
raises `TraceError` with the file and its 1-based line number (the header is line 1).

Azure traces (`TIMESTAMP,ContextTokens,GeneratedTokens`) and Mooncake traces (JSONL with
`timestamp` in ms, `input_length`, `output_length`, `hash_ids`) are read as published; other
columns or keys they carry are ignored. Every loaded trace is rebased so the first arrival is 0 s.

Mooncake `hash_ids` name 512-token prefix blocks. `cached_tokens` is 512 x the number of
*leading* block ids already seen in an earlier request of the same trace, capped at
prompt_tokens - 1: what an idealised, infinite prefix cache shared by the whole fleet would hold.
The raw ids are kept by `load_trace_with_prefixes`.
"""

from __future__ import annotations

import csv
import datetime
import functools
import json
import math
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from megawatt.errors import InputError, TraceError
from megawatt.units import SECONDS_PER_DAY
from megawatt.workload.requests import Requests

__all__ = [
    "BUILTIN_TRACES",
    "MOONCAKE_BLOCK_TOKENS",
    "TraceFormat",
    "builtin_trace",
    "builtin_trace_with_prefixes",
    "load_trace",
    "load_trace_with_prefixes",
    "time_scaled",
]

TraceFormat = Literal["auto", "azure", "mooncake", "csv", "jsonl"]

MOONCAKE_BLOCK_TOKENS = 512
"""Tokens per Mooncake prefix block (one hash id), per the Mooncake FAST'25 release README."""

_GENERIC_REQUIRED = ("arrival_s", "prompt_tokens", "output_tokens")
_GENERIC_OPTIONAL = ("cached_tokens", "class")
_GENERIC_HEADER = "arrival_s,prompt_tokens,output_tokens[,cached_tokens][,class]"
_AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_MOONCAKE_KEYS = ("timestamp", "input_length", "output_length", "hash_ids")

_BUILTIN_FILES: Mapping[str, tuple[str, str, TraceFormat]] = MappingProxyType(
    {
        "azure-code-2023": (
            "azure_llm_2023",
            "AzureLLMInferenceTrace_code.csv",
            "azure",
        ),
        "azure-conv-2023": (
            "azure_llm_2023",
            "AzureLLMInferenceTrace_conv.csv",
            "azure",
        ),
        "mooncake-conversation": ("mooncake_fast25", "conversation_trace.jsonl", "mooncake"),
        "mooncake-synthetic": ("mooncake_fast25", "synthetic_trace.jsonl", "mooncake"),
    }
)

BUILTIN_TRACES: Mapping[str, str] = MappingProxyType(
    {
        "azure-code-2023": (
            "Azure LLM coding service, 16 Nov 2023, 57 min, 8,819 requests, very bursty "
            "(Splitwise, ISCA 2024; CC-BY 4.0)"
        ),
        "azure-conv-2023": (
            "Azure LLM conversation service, 16 Nov 2023, 58 min, 19,366 requests, near-Poisson "
            "(Splitwise, ISCA 2024; CC-BY 4.0)"
        ),
        "mooncake-conversation": (
            "Kimi conversation traffic, 59 min, 12,031 requests, long inputs, 512-token prefix "
            "blocks (Mooncake, FAST 2025; Apache-2.0)"
        ),
        "mooncake-synthetic": (
            "Mooncake synthetic trace from public datasets, 17 min, 3,993 requests, Poisson "
            "arrivals, prefix blocks (Mooncake, FAST 2025; Apache-2.0)"
        ),
    }
)
"""Built-in trace name -> description (the files ship in `megawatt/data/traces/`)."""


class _Rows:
    """Accumulates parsed rows and checks them, with the line each came from."""

    def __init__(self, where: str, time_column: str) -> None:
        self.where = where
        self.time_column = time_column
        self.arrival_s: list[float] = []
        self.prompt: list[int] = []
        self.output: list[int] = []
        self.cached: list[int] = []
        self.labels: list[str | None] = []

    def add(
        self,
        line: int,
        arrival_s: float,
        prompt: int,
        output: int,
        cached: int = 0,
        label: str | None = None,
        names: tuple[str, str] = ("prompt_tokens", "output_tokens"),
    ) -> None:
        at = f"{self.where} line {line}"
        if prompt < 1:
            raise TraceError(
                f"{at}: {names[0]} must be >= 1; got {prompt}. Fix the row or drop it."
            )
        if output < 1:
            raise TraceError(
                f"{at}: {names[1]} must be >= 1; got {output}. Fix the row or drop it."
            )
        if not 0 <= cached < prompt:
            raise TraceError(
                f"{at}: cached_tokens must be >= 0 and < prompt_tokens ({prompt}); got {cached}. "
                "Fix the row or drop it."
            )
        if self.arrival_s and arrival_s < self.arrival_s[-1]:
            raise TraceError(
                f"{at}: {self.time_column} must not be earlier than the previous row's "
                f"({self.arrival_s[-1]:g} s); got {arrival_s:g} s. Sort the file by arrival."
            )
        self.arrival_s.append(arrival_s)
        self.prompt.append(prompt)
        self.output.append(output)
        self.cached.append(cached)
        self.labels.append(label)

    def build(self, default_class: str) -> Requests:
        if not self.arrival_s:
            raise TraceError(f"{self.where}: the trace has no requests. Add rows after the header.")
        names: list[str] = []
        position: dict[str, int] = {}
        ids = np.empty(len(self.labels), dtype=np.int32)
        for i, label in enumerate(self.labels):
            name = default_class if label is None else label
            if name not in position:
                position[name] = len(names)
                names.append(name)
            ids[i] = position[name]
        arrival = np.asarray(self.arrival_s, dtype=np.float64)
        return Requests(
            arrival_s=arrival - arrival[0],
            prompt_tokens=np.asarray(self.prompt, dtype=np.int64),
            output_tokens=np.asarray(self.output, dtype=np.int64),
            cached_tokens=np.asarray(self.cached, dtype=np.int64),
            class_id=ids,
            class_names=tuple(names),
        )


def _whole_text(at: str, name: str, text: str) -> int:
    stripped = text.strip()
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        number = float(stripped)
    except ValueError:
        number = math.nan
    if math.isfinite(number) and number == int(number):
        return int(number)
    raise TraceError(
        f"{at}: {name} must be a whole number of tokens; got {text!r}. Fix the row or drop it."
    )


def _seconds_text(at: str, name: str, text: str) -> float:
    try:
        number = float(text.strip())
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise TraceError(
            f"{at}: {name} must be a finite number; got {text!r}. Fix the row or drop it."
        )
    return number


def _whole_json(at: str, name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    raise TraceError(
        f"{at}: {name} must be a whole number of tokens; got {value!r}. Fix the line or drop it."
    )


def _seconds_json(at: str, name: str, value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise TraceError(
        f"{at}: {name} must be a finite number; got {value!r}. Fix the line or drop it."
    )


def _open_text(path: Path) -> Any:
    try:
        return path.open(newline="", encoding="utf-8-sig")  # tolerate a spreadsheet BOM
    except FileNotFoundError:
        raise TraceError(f"trace file {path} does not exist. Check the path.") from None
    except OSError as error:
        raise TraceError(f"trace file {path} cannot be read: {error.strerror}.") from None


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, fields) for every non-blank record, header included."""
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        try:
            for fields in reader:
                if fields and any(field.strip() for field in fields):
                    yield reader.line_num, fields
        except (csv.Error, UnicodeDecodeError) as error:
            raise TraceError(
                f"{path} line {reader.line_num}: not valid CSV ({error}). Fix the file."
            ) from None


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for every non-blank line."""
    with _open_text(path) as handle:
        line = 0
        try:
            for line, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    item = json.loads(text)
                except json.JSONDecodeError as error:
                    raise TraceError(
                        f"{path} line {line}: not valid JSON ({error.msg}). Fix the line or drop "
                        "it."
                    ) from None
                if not isinstance(item, dict):
                    raise TraceError(
                        f"{path} line {line}: each line must be a JSON object; got "
                        f"{type(item).__name__}. Write one {{...}} per line."
                    )
                yield line, item
        except UnicodeDecodeError:
            raise TraceError(
                f"{path} line {line + 1}: not UTF-8 text. Re-encode the file."
            ) from None


def _detect(path: Path) -> TraceFormat:
    with _open_text(path) as handle:
        try:
            first = next((text for text in handle if text.strip()), "")
        except UnicodeDecodeError:
            raise TraceError(f"{path}: not UTF-8 text. Re-encode the file.") from None
    if first.lstrip().startswith("{"):
        try:
            keys = set(json.loads(first))
        except (json.JSONDecodeError, TypeError):
            return "jsonl"
        return "mooncake" if {"input_length", "output_length"} <= keys else "jsonl"
    header = [name.strip() for name in first.strip().split(",")]
    return "azure" if header[: len(_AZURE_COLUMNS)] == list(_AZURE_COLUMNS) else "csv"


def _azure_clock(at: str, text: str) -> tuple[int, float]:
    """('YYYY-MM-DD HH:MM:SS.fffffff') -> (day ordinal, seconds into the day)."""
    date_text, _, clock = text.strip().replace("T", " ").partition(" ")
    try:
        day = datetime.date.fromisoformat(date_text).toordinal()
        hours, minutes, seconds = clock.split(":")
        into_day_s = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        raise TraceError(
            f"{at}: TIMESTAMP must read 'YYYY-MM-DD HH:MM:SS.fff'; got {text!r}. Fix the row or "
            "drop it."
        ) from None
    return day, into_day_s


def _load_azure(path: Path) -> _Rows:
    rows = _Rows(str(path), "TIMESTAMP")
    records = _csv_rows(path)
    first = next(records, None)
    if first is None:
        raise TraceError(
            f"{path}: the file is empty. Expected the header {','.join(_AZURE_COLUMNS)}."
        )
    header = [name.strip() for name in first[1]]
    missing = [name for name in _AZURE_COLUMNS if name not in header]
    if missing:
        raise TraceError(
            f"{path} line {first[0]}: missing column(s) {', '.join(missing)}; an Azure trace has "
            f"{','.join(_AZURE_COLUMNS)}; got {','.join(header)}. Fix the header."
        )
    where = [header.index(name) for name in _AZURE_COLUMNS]
    first_day: int | None = None
    for line, fields in records:
        at = f"{path} line {line}"
        if len(fields) != len(header):
            raise TraceError(
                f"{at}: expected {len(header)} fields; got {len(fields)}. Fix the row or drop it."
            )
        day, into_day_s = _azure_clock(at, fields[where[0]])
        first_day = day if first_day is None else first_day
        arrival_s = (day - first_day) * SECONDS_PER_DAY + into_day_s
        prompt = _whole_text(at, "ContextTokens", fields[where[1]])
        output = _whole_text(at, "GeneratedTokens", fields[where[2]])
        rows.add(line, arrival_s, prompt, output, names=("ContextTokens", "GeneratedTokens"))
    return rows


def _load_generic_csv(path: Path) -> _Rows:
    rows = _Rows(str(path), "arrival_s")
    records = _csv_rows(path)
    first = next(records, None)
    if first is None:
        raise TraceError(f"{path}: the file is empty. Expected the header {_GENERIC_HEADER}.")
    header_line, raw_header = first
    header = [name.strip() for name in raw_header]
    _check_keys(f"{path} line {header_line}", header, "column")
    if len(set(header)) != len(header):
        raise TraceError(
            f"{path} line {header_line}: each column may appear once; got {','.join(header)}. "
            "Remove the duplicate."
        )
    index = {name: i for i, name in enumerate(header)}
    for line, fields in records:
        at = f"{path} line {line}"
        if len(fields) != len(header):
            raise TraceError(
                f"{at}: expected {len(header)} fields ({','.join(header)}); got {len(fields)}. "
                "Fix the row or drop it."
            )
        arrival_s = _seconds_text(at, "arrival_s", fields[index["arrival_s"]])
        prompt = _whole_text(at, "prompt_tokens", fields[index["prompt_tokens"]])
        output = _whole_text(at, "output_tokens", fields[index["output_tokens"]])
        cached = 0
        if "cached_tokens" in index and fields[index["cached_tokens"]].strip():
            cached = _whole_text(at, "cached_tokens", fields[index["cached_tokens"]])
        label = fields[index["class"]].strip() if "class" in index else ""
        rows.add(line, arrival_s, prompt, output, cached, label or None)
    return rows


def _check_keys(at: str, keys: list[str], noun: str) -> None:
    missing = [name for name in _GENERIC_REQUIRED if name not in keys]
    if missing:
        raise TraceError(
            f"{at}: missing {noun}(s) {', '.join(missing)}; a trace needs {_GENERIC_HEADER}; "
            f"got {','.join(keys) or 'nothing'}. Add the {noun}(s) or pick another format."
        )
    unknown = [name for name in keys if name not in _GENERIC_REQUIRED + _GENERIC_OPTIONAL]
    if unknown:
        raise TraceError(
            f"{at}: unknown {noun}(s) {', '.join(unknown)}; a trace has {_GENERIC_HEADER}. "
            f"Remove or rename them."
        )


def _load_generic_jsonl(path: Path) -> _Rows:
    rows = _Rows(str(path), "arrival_s")
    for line, item in _json_lines(path):
        at = f"{path} line {line}"
        _check_keys(at, list(item), "key")
        arrival_s = _seconds_json(at, "arrival_s", item["arrival_s"])
        prompt = _whole_json(at, "prompt_tokens", item["prompt_tokens"])
        output = _whole_json(at, "output_tokens", item["output_tokens"])
        cached = 0
        if item.get("cached_tokens") is not None:
            cached = _whole_json(at, "cached_tokens", item["cached_tokens"])
        label = item.get("class")
        if label is not None and not isinstance(label, str):
            raise TraceError(f"{at}: class must be a string; got {label!r}. Quote the class name.")
        label_text = label.strip() if label else ""
        rows.add(line, arrival_s, prompt, output, cached, label_text or None)
    return rows


def _load_mooncake(path: Path) -> tuple[_Rows, list[np.ndarray]]:
    rows = _Rows(str(path), "timestamp")
    prefixes: list[np.ndarray] = []
    seen: set[int] = set()
    for line, item in _json_lines(path):
        at = f"{path} line {line}"
        missing = [key for key in _MOONCAKE_KEYS if key not in item]
        if missing:
            raise TraceError(
                f"{at}: missing key(s) {', '.join(missing)}; a Mooncake trace line has "
                f"{', '.join(_MOONCAKE_KEYS)}. Fix the line or pick another format."
            )
        arrival_s = _seconds_json(at, "timestamp", item["timestamp"]) / 1000.0
        prompt = _whole_json(at, "input_length", item["input_length"])
        output = _whole_json(at, "output_length", item["output_length"])
        raw = item["hash_ids"]
        if not isinstance(raw, list) or not all(
            isinstance(block, int) and not isinstance(block, bool) for block in raw
        ):
            raise TraceError(
                f"{at}: hash_ids must be a list of whole numbers; got {raw!r:.80}. Fix the line "
                "or drop it."
            )
        leading = 0
        for block in raw:
            if block not in seen:
                break
            leading += 1
        seen.update(raw)
        cached = min(MOONCAKE_BLOCK_TOKENS * leading, max(prompt - 1, 0))
        rows.add(line, arrival_s, prompt, output, cached, names=("input_length", "output_length"))
        ids = np.asarray(raw, dtype=np.int64)
        ids.setflags(write=False)
        prefixes.append(ids)
    return rows, prefixes


def _as_path(path: str | Path) -> Path:
    if not isinstance(path, str | Path):
        raise InputError(f"trace path must be a str or Path; got {path!r}. Pass a file path.")
    return Path(path)


def _default_class(path: Path, class_name: str | None) -> str:
    if class_name is None:
        return path.stem
    if not isinstance(class_name, str) or not class_name:
        raise InputError(
            f"class_name must be a non-empty string; got {class_name!r}. Name the class, e.g. "
            "'chat'."
        )
    return class_name


_LOADERS: Mapping[str, Callable[[Path], _Rows]] = MappingProxyType(
    {
        "azure": _load_azure,
        "csv": _load_generic_csv,
        "jsonl": _load_generic_jsonl,
        "mooncake": lambda path: _load_mooncake(path)[0],
    }
)


def load_trace(
    path: str | Path,
    format: TraceFormat = "auto",
    *,
    class_name: str | None = None,
) -> Requests:
    """Read a trace file into `Requests`, rebased so the first arrival is at 0 s.

    `format`: `azure`, `mooncake`, `csv` or `jsonl` (the generic schema in this module's
    docstring); `auto` tells them apart by the first line. `class_name` names the class of
    every row without its own `class` (default: the file's stem). A malformed file raises
    `TraceError` with the file and line number.
    """
    file = _as_path(path)
    default = _default_class(file, class_name)
    if format not in ("auto", *_LOADERS):
        raise InputError(
            f"format must be one of auto, {', '.join(_LOADERS)}; got {format!r}. Use 'auto' to "
            "detect it."
        )
    chosen = _detect(file) if format == "auto" else format
    return _LOADERS[chosen](file).build(default)


def load_trace_with_prefixes(
    path: str | Path, *, class_name: str | None = None
) -> tuple[Requests, list[np.ndarray]]:
    """Read a Mooncake trace: its `Requests` and, per request, its prefix-block hash ids.

    Each id names a 512-token block (`MOONCAKE_BLOCK_TOKENS`); equal ids are shareable KV
    blocks. The id arrays (int64, read-only) are in the same order as the requests.
    """
    file = _as_path(path)
    default = _default_class(file, class_name)
    rows, prefixes = _load_mooncake(file)
    return rows.build(default), prefixes


def _builtin_entry(name: str) -> tuple[str, str, TraceFormat]:
    if name not in _BUILTIN_FILES:
        raise InputError(
            f"built-in trace must be one of {', '.join(sorted(_BUILTIN_FILES))}; got {name!r}. "
            "Pick one, or load your own file with load_trace(path)."
        )
    return _BUILTIN_FILES[name]


@functools.cache
def builtin_trace(name: str) -> Requests:
    """A built-in trace by name (see `BUILTIN_TRACES`); its one class is named after it.

    Loaded once per process and shared: `Requests` is immutable.
    """
    folder, file_name, trace_format = _builtin_entry(name)
    resource = resources.files("megawatt") / "data" / "traces" / folder / file_name
    with resources.as_file(resource) as path:
        return load_trace(path, trace_format, class_name=name)


def builtin_trace_with_prefixes(name: str) -> tuple[Requests, list[np.ndarray]]:
    """A built-in Mooncake trace with its per-request prefix-block hash ids."""
    folder, file_name, trace_format = _builtin_entry(name)
    if trace_format != "mooncake":
        mooncake = sorted(key for key, entry in _BUILTIN_FILES.items() if entry[2] == "mooncake")
        raise InputError(
            f"{name!r} has no prefix-block ids; only {', '.join(mooncake)} do. Use "
            "builtin_trace() for it."
        )
    resource = resources.files("megawatt") / "data" / "traces" / folder / file_name
    with resources.as_file(resource) as path:
        return load_trace_with_prefixes(path, class_name=name)


def time_scaled(requests: Requests, speedup: float) -> Requests:
    """The same requests with every arrival time divided by `speedup` (10 => 10x the rate)."""
    if (
        isinstance(speedup, bool)
        or not isinstance(speedup, int | float | np.integer | np.floating)
        or not math.isfinite(speedup)
        or speedup <= 0
    ):
        raise InputError(
            f"time_scaled: speedup must be a finite number > 0; got {speedup!r}. Use 10 for ten "
            "times the arrival rate, 0.5 for half."
        )
    return requests.with_arrivals(requests.arrival_s / float(speedup))
