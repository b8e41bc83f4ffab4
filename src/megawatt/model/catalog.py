"""The model catalog: presets shipped with the package (Hugging Face `config.json` copies with
their sources) plus any `config.json` a user points at."""

from __future__ import annotations

import difflib
import json
import os
from functools import cache
from importlib import resources
from pathlib import Path

from megawatt.errors import CatalogError
from megawatt.model.spec import ModelSpec, load_model_file, model_from_config

_PACKAGE_DIR = "data/models"


@cache
def preset_ids() -> tuple[str, ...]:
    """Ids of the models shipped with megawatt, sorted."""
    root = resources.files("megawatt").joinpath(_PACKAGE_DIR)
    return tuple(sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".json")))


@cache
def _preset(model_id: str) -> ModelSpec:
    text = resources.files("megawatt").joinpath(f"{_PACKAGE_DIR}/{model_id}.json").read_text()
    return model_from_config(json.loads(text), model_id)


def load_model(id_or_path: str | os.PathLike[str]) -> ModelSpec:
    """A preset by id (`llama-3.1-70b`) or a model from a `config.json` path.

    Raises `CatalogError` for an unknown id, listing the known ones and the closest match.
    """
    text = str(id_or_path)
    if text in preset_ids():
        return _preset(text)
    if text.endswith(".json") or os.sep in text or Path(text).exists():
        return load_model_file(text)
    close = difflib.get_close_matches(text, preset_ids(), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise CatalogError(
        f"unknown model id '{text}'; known: {', '.join(preset_ids())}.{hint} "
        "Or pass the path to a Hugging Face config.json."
    )


def presets() -> tuple[ModelSpec, ...]:
    """Every preset model, in id order."""
    return tuple(_preset(i) for i in preset_ids())
