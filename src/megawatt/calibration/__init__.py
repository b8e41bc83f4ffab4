"""Calibration: published measurements replayed through the simulator (`megawatt validate`) and
the efficiencies fitted to them (`megawatt calibrate`).

    measurements  the CSV schema, reading and checking rows, what a row's notes state
    datasets      the datasets' length assumptions      lengths      a row's requests
    speculation   the drafts a row is replayed with     runs         a row's run on a deployment
    deployment    the plan a row runs (rules over plan.search and plan.fit)
    replay        predicting a row                       validation   a whole file and its errors
    images        the image-generation rows              assumptions  all of it in words
    surrogate     the fit's linearised model and solvers calibrator   the estimator and its file
"""

from megawatt.calibration.assumptions import ASSUMPTIONS, assumptions
from megawatt.calibration.calibrator import Calibrator, DatasetFit, GroupFit, Residual, fit_rows, newest_date
from megawatt.calibration.datasets import DATASETS
from megawatt.calibration.images import ImageRowResult, ImageValidation, validate_images
from megawatt.calibration.measurements import (
    CALIBRATION_DATA,
    COLUMNS,
    METRICS,
    PACKAGED_DATA,
    SCENARIOS,
    Measurement,
    RejectedRow,
    RowResult,
    data_name,
    load_measurements,
    measurements_sha256,
    parse_measurement_rows,
    parse_measurements,
    read_measurements,
    run_key,
    runs_of,
)
from megawatt.calibration.replay import predict_row, predict_rows
from megawatt.calibration.surrogate import DATASET_PRIOR_SIGMA, FIT_BOUNDS, PRIOR_SIGMA
from megawatt.calibration.validation import Validation, calibration_cv, summarize, validate

__all__ = [
    "ASSUMPTIONS",
    "CALIBRATION_DATA",
    "COLUMNS",
    "DATASETS",
    "DATASET_PRIOR_SIGMA",
    "FIT_BOUNDS",
    "METRICS",
    "PACKAGED_DATA",
    "PRIOR_SIGMA",
    "SCENARIOS",
    "Calibrator",
    "DatasetFit",
    "GroupFit",
    "ImageRowResult",
    "ImageValidation",
    "Measurement",
    "RejectedRow",
    "Residual",
    "RowResult",
    "Validation",
    "assumptions",
    "calibration_cv",
    "data_name",
    "fit_rows",
    "load_measurements",
    "measurements_sha256",
    "newest_date",
    "parse_measurement_rows",
    "parse_measurements",
    "predict_row",
    "predict_rows",
    "read_measurements",
    "run_key",
    "runs_of",
    "summarize",
    "validate",
    "validate_images",
]
