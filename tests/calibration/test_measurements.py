"""Reading a measurements file: the packaged one reads clean; a bad file or row is an error that
names the file, the line, the column and the value; reading skips bad rows with their reasons."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from megawatt.calibration import (
    COLUMNS,
    load_measurements,
    parse_measurement_rows,
    parse_measurements,
    read_measurements,
)
from megawatt.errors import InputError

from .conftest import CATALOG, MICRO, OFFLINE, SOLO, csv_text, rows


def test_the_packaged_file_is_the_shared_one_and_reads_clean() -> None:
    ms = load_measurements()
    assert len(ms) == 102
    assert ms[0].id == "P001" and ms[0].line == 2
    assert ms[0].n_devices == 8 and ms[0].input_len is None and ms[0].output_len == 290.3


def test_a_missing_column_names_it_and_the_header_line() -> None:
    text = csv_text(SOLO).replace(",tpot_p99_limit_ms", "", 1)
    with pytest.raises(InputError, match=r"tiny.csv: line 1 \(header\): missing column\(s\) tpot_p99"):
        parse_measurements(text, "tiny.csv", CATALOG)


def test_an_unknown_hardware_id_names_the_line_and_the_closest_id() -> None:
    bad = SOLO.replace("T1,h200-sxm", "T9,h200")
    with pytest.raises(InputError, match=r"tiny.csv: line 3 \(id T9\): hardware: .*h200") as err:
        parse_measurements(csv_text(OFFLINE, bad), "tiny.csv", CATALOG)
    assert "h200-sxm" in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("single_user,128", "single_user,many"), r"line 2 \(id T1\): input_len must be a number"),
        (("T1,h200-sxm,1", "T1,h200-sxm,1.5"), r"n_devices must be a whole number"),
        (("single_user", "burst"), r"scenario must be one of offline"),
        ((",300,", ",,"), r"value must be a number > 0; got blank"),
        (("llama-3.1-8b", "llama-9"), r"line 2 \(id T1\): model: .*llama-9"),
    ],
)
def test_bad_values_are_input_errors_with_line_and_column(
    change: tuple[str, str], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        parse_measurements(csv_text(SOLO.replace(*change, 1)), "tiny.csv", CATALOG)


def test_repeated_ids_are_an_error() -> None:
    with pytest.raises(InputError, match=r"line 3 \(id T1\): id T1 repeats line 2"):
        rows(SOLO, SOLO)


def test_reading_skips_bad_rows_with_reasons_and_strict_parsing_stops_at_the_first() -> None:
    text = csv_text(SOLO, MICRO.replace("wse2", "wse9"), SOLO)
    rows, rejected = parse_measurement_rows(text, "tiny.csv", CATALOG)
    assert [m.id for m in rows] == ["T1"]
    assert [(r.line, r.id) for r in rejected] == [(3, "T3"), (4, "T1")]
    assert "hardware" in rejected[0].reason and "repeats line 2" in rejected[1].reason
    with pytest.raises(InputError, match="line 3 \\(id T3\\): hardware"):
        parse_measurements(text, "tiny.csv", CATALOG)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (",".join(COLUMNS) + "\n", "no measurement rows after the header"),
        ("id,hardware\nT1,h100-sxm\n", "missing column(s)"),
        (",".join(COLUMNS) + "\nT1," + "x" * 200_000 + "\n", "not a CSV file megawatt can read"),
    ],
    ids=["header only", "missing columns", "a huge field"],
)
def test_a_file_that_is_not_a_measurements_file_is_refused(text: str, fragment: str) -> None:
    with pytest.raises(InputError, match=re.escape(fragment)):
        parse_measurement_rows(text, "tiny.csv", CATALOG)


def test_a_binary_file_is_refused_with_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"id,hardware\n\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="not UTF-8 text \\(byte 12 is 0xff\\)"):
        read_measurements(path)
