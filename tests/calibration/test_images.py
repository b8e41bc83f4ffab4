"""Image-generation rows: one fitted efficiency, cross-validated by row and by system; a bad
images file fails before the long replay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from megawatt.calibration import validate_images
from megawatt.cli import main

from .conftest import CATALOG


def test_the_image_rows_are_predicted_with_one_fitted_efficiency_and_cross_validated() -> None:
    iv = validate_images(catalog=CATALOG)
    assert len(iv.rows) >= 6 and 0.05 < iv.compute_efficiency < 1
    assert 0 < iv.mape <= iv.loo_mape < 1 and np.isfinite(iv.loso_mape)
    assert iv.mape == pytest.approx(np.mean([r.abs_pct_error for r in iv.rows]))
    doc = iv.to_json()
    assert doc["n_recalled"] == sum(r.recalled for r in iv.rows)
    assert all(r["predicted"] > 0 and r["bound"] == "compute" for r in doc["rows"])
    json.dumps(doc)


def test_a_bad_images_file_fails_before_the_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "images.csv"
    bad.write_text("id,system\nX1,dgx-h100\n")
    assert main(["validate", "--images", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "image measurements file images.csv lacks the columns" in err and err.count("\n") == 1
