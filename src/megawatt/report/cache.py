"""A folder of stored capacity runs for `megawatt plan` (one JSON file per key, written
atomically); a missing, unreadable or malformed file is a miss and is simulated again."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from megawatt.report.files import write_atomic


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/megawatt`, else `~/.cache/megawatt`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "megawatt"


class DiskCache:
    """Capacity records under `folder/capacity/KEY.json` (a `megawatt.deal.CapacityStore`)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder) / "capacity"

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The record stored under `key`, or None (missing or unreadable)."""
        try:
            record = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store `record` under `key`; a folder that cannot be written is left alone (the run
        goes on, uncached)."""
        try:
            write_atomic(self._path(key), json.dumps(record, indent=1, sort_keys=True) + "\n")
        except OSError:
            pass
