"""Reading a user's input file: only a regular UTF-8 file of bounded size is read; folders,
pipes, devices, binary and oversized files are one clear error each."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from megawatt._files import read_user_bytes, read_user_text
from megawatt.errors import InputError, ScenarioError


def test_a_text_file_reads_with_its_byte_order_mark_dropped(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"\xef\xbb\xbfname: x\n")
    assert read_user_text(path, "scenario file") == "name: x\n"


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: p, "does not exist; check the path"),
        (lambda p: (p.mkdir(), p)[1], "is a folder"),
        (lambda p: (os.mkfifo(p), p)[1], "is not a regular file (a pipe or device?)"),
        (lambda p: (p.write_bytes(b"ok\n\xff\xfe"), p)[1], "is not UTF-8 text (byte 3 is 0xff)"),
        (lambda p: (p.write_bytes(b"x" * 101), p)[1], "is 101 bytes, more than the 100"),
    ],
    ids=["missing", "folder", "fifo", "binary", "too big"],
)
def test_what_is_not_a_small_text_file_is_refused(
    tmp_path: Path, make: Callable[[Path], Path], needle: str
) -> None:
    path = make(tmp_path / "input")
    with pytest.raises(ScenarioError) as caught:
        read_user_text(path, "scenario file", ScenarioError, limit=100)
    assert needle in str(caught.value) and "scenario file" in str(caught.value)


def test_a_device_is_refused_rather_than_read_forever() -> None:
    with pytest.raises(InputError, match="not a regular file"):
        read_user_bytes("/dev/zero", "hardware file")
