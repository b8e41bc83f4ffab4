"""Writing outputs: a run's folder is filled all at once or not at all, files get the modes the
umask allows, and a path that cannot be written is refused before any work."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from megawatt.errors import InputError
from megawatt.report import check_output_dir, check_output_file, write_atomic, write_folder

FILES = {"scenario.resolved.yaml": "name: new\n", "results.json": "{}\n", "report.html": "<html>"}


@pytest.fixture
def umask_027() -> Iterator[None]:
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_folder_appears_whole_with_the_umask_s_modes(tmp_path: Path, umask_027: None) -> None:
    out = tmp_path / "a" / "out"
    paths = write_folder(out, FILES)
    assert {p.name for p in out.iterdir()} == set(FILES) == {p.name for p in paths.values()}
    assert (out / "results.json").read_text() == "{}\n"
    assert mode(out) == 0o750 and all(mode(p) == 0o640 for p in out.iterdir())
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["out"]  # no temporary left


def test_write_atomic_honours_the_umask_too(tmp_path: Path, umask_027: None) -> None:
    path = write_atomic(tmp_path / "v.json", "{}")
    assert mode(path) == 0o640 and [p.name for p in tmp_path.iterdir()] == ["v.json"]


def test_an_existing_folder_keeps_other_files_and_gets_the_new_ones(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "results.json").write_text("old")
    write_folder(out, FILES)
    assert (out / "notes.txt").read_text() == "mine" and (out / "results.json").read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_write_leaves_the_old_folder_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("old")
    (out / "report.html").mkdir()  # a folder where a file must go
    with pytest.raises(InputError, match=r"report\.html exist"):
        write_folder(out, FILES)
    assert (out / "results.json").read_text() == "old"
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "results.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_unencodable_text_fails_before_the_folder_changes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(UnicodeEncodeError):
        write_folder(out, {"a.txt": "ok", "b.txt": "\ud800"})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("make", "needle"), [
    (lambda t: (t / "f").write_text("x") and t / "f", "is a file, not a folder"),
    (lambda t: (t / "f").write_text("x") and t / "f" / "sub" / "out", "which is a file, not a folder"),
    (lambda t: Path("/proc/megawatt-out"), "cannot write in /proc"),
], ids=["a file", "under a file", "unwritable"])
def test_an_output_folder_that_cannot_be_written_is_refused_first(tmp_path: Path, make, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError) as caught:
        check_output_dir(make(tmp_path), "--out")
    assert needle in str(caught.value) and str(caught.value).startswith("--out ")
    assert [p.name for p in tmp_path.iterdir()] in ([], ["f"])  # the probe left nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in any folder")
def test_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(InputError, match="cannot write in"):
        check_output_dir(locked / "out")


def test_an_output_file_must_not_be_a_folder_or_under_a_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a folder; give a file name"):
        check_output_file(tmp_path, "--json")
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="which is a file"):
        check_output_file(tmp_path / "f" / "v.json", "--json")
    assert check_output_file(tmp_path / "new" / "v.json") == tmp_path / "new" / "v.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
