"""The folder of stored capacity runs: what is put comes back; a missing, unreadable or
malformed file is a miss; a folder that cannot be written does not stop the run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from megawatt.report.cache import DiskCache, default_cache_dir


def test_a_record_comes_back_and_a_bad_file_is_a_miss(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    assert cache.get("k") is None
    cache.put("k", {"a": 1.5})
    assert cache.get("k") == {"a": 1.5}
    (tmp_path / "capacity" / "k.json").write_text("[1, 2")
    assert cache.get("k") is None
    (tmp_path / "capacity" / "k.json").write_text("[1, 2]")
    assert cache.get("k") is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_folder_that_cannot_be_written_is_left_alone(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        DiskCache(tmp_path).put("k", {"a": 1})
    finally:
        tmp_path.chmod(0o700)
    assert DiskCache(tmp_path).get("k") is None


def test_the_default_folder_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "megawatt"
