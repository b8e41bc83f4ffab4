"""Writing outputs atomically: a file appears whole or not at all, and a run's output folder
is filled in a temporary sibling folder and moved into place only when every file is written,
so an error leaves the old folder as it was. Files and folders get the modes the umask allows,
as any other program's would. Output paths are checked before a run starts."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from megawatt.errors import InputError
from megawatt.report.html import html_report
from megawatt.report.sessions import demand_rows, images_row, session_rows
from megawatt.report.table import option_rows
from megawatt.study import StudyResult


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _nearest_existing(path: Path) -> Path:
    here = path
    while not here.exists() and here != here.parent:
        here = here.parent
    return here


def _probe(folder: Path, what: str, path: Path) -> None:
    """Create and remove a temporary folder in `folder`: the one test of writing that permissions,
    read-only file systems and running as root all answer truthfully."""
    try:
        Path(tempfile.mkdtemp(dir=folder, prefix=".megawatt-probe.")).rmdir()
    except OSError as exc:
        raise InputError(
            f"{what} {path}: cannot write in {folder} ({exc.strerror or exc}). Choose a folder you "
            "can write to."
        ) from None


def _utf8(p: Path, what: str) -> None:
    try:
        os.fspath(p).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            f"{what} {os.fspath(p)!a}: the path has bytes that are not UTF-8; choose a UTF-8 "
            "name."
        ) from None


def check_output_file(path: str | os.PathLike[str], what: str = "output file") -> Path:
    """Raise `InputError` now, before any work, if a file cannot be written at `path`: it is a
    folder, a folder above it is a file, or its folder cannot be written. Writes nothing."""
    p = Path(path)
    _utf8(p, what)
    if p.is_dir():
        raise InputError(f"{what} {p} is a folder; give a file name, e.g. {p / 'out.json'}.")
    return _check_parent(p, what)


def check_output_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Raise `InputError` now, before any work, if `write_outputs` could not fill the folder at
    `path`: it is a file, a folder above it is a file, or it cannot be written. Writes nothing
    (a probe folder is made and removed)."""
    p = Path(path)
    _utf8(p, what)
    if p.exists() and not p.is_dir():
        raise InputError(
            f"{what} {p} is a file, not a folder; give a folder (created if missing), e.g. "
            f"{p.with_suffix('')}-out."
        )
    if p.is_dir():
        _probe(p, what, p)
    return _check_parent(p, what)


def _check_parent(p: Path, what: str) -> Path:
    parent = p.absolute().parent
    existing = _nearest_existing(parent)
    if not existing.is_dir():
        raise InputError(
            f"{what} {p} is under {existing}, which is a file, not a folder; choose another path."
        )
    _probe(existing, what, p)
    return p


def _write_new(path: Path, text: str) -> None:
    # open() creates the file with 0666 less the umask, as any program does.
    with path.open("x", encoding="utf-8") as fh:
        fh.write(text)


def write_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` to `path` via a temporary file in the same folder and a rename (mode 0666
    less the umask, as a plain open would give)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def write_folder(out_dir: str | os.PathLike[str], files: dict[str, str]) -> dict[str, Path]:
    """Write `files` (name -> text) into `out_dir` all at once: into a temporary sibling folder,
    which then becomes `out_dir` (a new or empty folder) or whose files replace their namesakes
    in it (other files there are kept). On any error nothing in `out_dir` has changed."""
    out = Path(out_dir).absolute()
    clash = sorted(name for name in files if (out / name).is_dir())
    if clash:
        raise InputError(
            f"output folder {out}: {', '.join(clash)} exist(s) there as folder(s); move them or "
            "choose another folder."
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    except OSError as exc:
        raise InputError(f"output folder {out}: cannot write in {out.parent} ({exc}).") from None
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        for name, text in files.items():
            _write_new(tmp / name, text)
        try:
            os.rename(tmp, out)  # a new folder, or replacing an empty one
        except OSError:
            if not out.is_dir():
                raise
            for name in files:
                os.replace(tmp / name, out / name)
    except OSError as exc:
        raise InputError(
            f"output folder {out}: writing failed ({exc}); it is left as it was. Free some space "
            "or choose another folder."
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {name: Path(out_dir) / name for name in files}


def write_named(out_dir: str | os.PathLike[str], named: dict[str, tuple[str, str]]) -> dict[str, Path]:
    """`write_folder` of files given as key -> (file name, text); returns key -> path."""
    paths = write_folder(out_dir, {name: text for name, text in named.values()})
    return {key: paths[name] for key, (name, _) in named.items()}


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
        "sessions": [{k: clean(v) for k, v in r.items()} for r in session_rows(study)],
        "sessions_at_demand": [{k: clean(v) for k, v in r.items()} for r in demand_rows(study)],
        "images": clean(images_row(study)),
        "assumptions": [{"name": a.name, "value": a.value, "source": a.source} for a in study.assumptions],
    }
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def write_outputs(study: StudyResult, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the resolved scenario, results JSON and HTML report under `out_dir`, all or none
    (see `write_folder`); keys `scenario`, `results`, `report`."""
    return write_named(
        out_dir,
        {
            "scenario": ("scenario.resolved.yaml", study.scenario.dump()),
            "results": ("results.json", results_json(study)),
            "report": ("report.html", html_report(study)),
        },
    )
