"""Writing outputs atomically: a file appears whole or not at all, so nothing already computed
is lost to an interrupted run."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from megawatt.report.html import html_report
from megawatt.report.table import option_rows
from megawatt.study import StudyResult


def write_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` to `path` via a temporary file in the same folder and a rename."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def results_json(study: StudyResult) -> str:
    """The study's figures and assumptions as JSON (SI units; NaN/inf become null)."""

    def clean(v: object) -> object:
        if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    rows = [{k: clean(v) for k, v in r.items()} for r in option_rows(study)]
    doc = {
        "scenario": study.scenario.name,
        "seed": study.scenario.seed,
        "options": rows,
        "assumptions": [{"name": a.name, "value": a.value, "source": a.source} for a in study.assumptions],
    }
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def write_outputs(study: StudyResult, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the resolved scenario, results JSON and HTML report under `out_dir`."""
    out = Path(out_dir)
    return {
        "scenario": write_atomic(out / "scenario.resolved.yaml", study.scenario.dump()),
        "results": write_atomic(out / "results.json", results_json(study)),
        "report": write_atomic(out / "report.html", html_report(study)),
    }
