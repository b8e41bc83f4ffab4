"""The one exception tree of megawatt. Every error names the thing, the rule, the value and a fix.

MegawattError                 base: catch this to catch everything megawatt raises on purpose
├── InputError                a user input is invalid (scenario field, CLI flag, YAML, CSV)
│   ├── ScenarioError         a scenario file or override breaks the schema
│   ├── PlanError             a plan or deal file (megawatt plan) breaks its schema or rules
│   └── TraceError            a request trace file is malformed (with its line number)
├── CatalogError              an unknown or inconsistent hardware / model catalog entry
├── FitError                  a model does not fit in memory on the chosen hardware
└── NotFittedError            a calibrated model was used before `fit()`
"""

from __future__ import annotations

__all__ = [
    "CatalogError",
    "FitError",
    "InputError",
    "MegawattError",
    "NotFittedError",
    "PlanError",
    "ScenarioError",
    "TraceError",
]


class MegawattError(Exception):
    """Base class of every error megawatt raises on purpose; its message is for the user."""


class InputError(MegawattError, ValueError):
    """A user input is invalid: the message names the field, the rule, the value and a fix."""


class ScenarioError(InputError):
    """A scenario file or a `--set` override breaks the scenario schema."""


class PlanError(InputError):
    """A plan or deal file (`megawatt plan`) or a `--set` override breaks the plan schema or
    its rules (a period outside the horizon, an unknown class, supplier or model)."""


class TraceError(InputError):
    """A request trace file is malformed; the message gives the file and line number."""


class CatalogError(MegawattError, KeyError):
    """An unknown id or an inconsistent entry in the hardware or model catalog."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class FitError(MegawattError):
    """A model does not fit in memory on the chosen hardware and parallel plan."""


class NotFittedError(MegawattError, AttributeError):
    """A calibrated estimator was used before `fit()` was called on it."""
