"""Reading a user's input file (scenario, hardware YAML, model config.json, measurements CSV):
a regular file of bounded size in UTF-8, or one clear error naming the file and the fix."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from megawatt.errors import InputError

__all__ = ["MAX_FILE_BYTES", "read_user_bytes", "read_user_text"]

MAX_FILE_BYTES: Final = 64 * 1024 * 1024
"""Largest input file read, in bytes (the packaged measurements CSV is 60 KB)."""


def read_user_bytes(
    path: str | os.PathLike[str],
    what: str,
    error: type[InputError] = InputError,
    limit: int = MAX_FILE_BYTES,
) -> bytes:
    """The bytes of the regular file at `path`. A missing file, a folder, a device or pipe
    (which could block or never end), an unreadable or oversized file raise `error` saying
    which `what` ('scenario file', ...) and why."""
    p = Path(path)
    try:
        info = p.stat()
    except FileNotFoundError:
        raise error(f"{what} {p} does not exist; check the path.") from None
    except OSError as exc:
        raise error(f"{what} {p} cannot be read: {exc.strerror or exc}.") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{what} {p} is a folder; give the path of a file in it.")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{what} {p} is not a regular file (a pipe or device?); save it to a file.")
    if info.st_size > limit:
        raise error(
            f"{what} {p} is {info.st_size:,} bytes, more than the {limit:,} megawatt reads; is it "
            "the right file?"
        )
    try:
        with p.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise error(f"{what} {p} cannot be read: {exc.strerror or exc}.") from None
    if len(data) > limit:
        raise error(f"{what} {p} grew past {limit:,} bytes while being read; is it the right file?")
    return data


def read_user_text(
    path: str | os.PathLike[str],
    what: str,
    error: type[InputError] = InputError,
    limit: int = MAX_FILE_BYTES,
) -> str:
    """`read_user_bytes` decoded as UTF-8 (a leading byte-order mark dropped); a binary or
    otherwise non-UTF-8 file raises `error` with the offset of the first bad byte."""
    data = read_user_bytes(path, what, error, limit)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(
            f"{what} {Path(path)} is not UTF-8 text (byte {exc.start:,} is {data[exc.start]:#04x}); "
            "is it a binary file? Save it as UTF-8 text."
        ) from None
