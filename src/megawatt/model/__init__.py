"""Models as data: Hugging Face `config.json` files parsed into architectures, with parameter
counts and KV-cache sizes computed from them."""

from megawatt.model.catalog import load_model, preset_ids, presets
from megawatt.model.image import ImageComponent, ImageModel, image_model_ids, load_image_model
from megawatt.model.spec import (
    LayerSpec,
    ModelSpec,
    ParamCounts,
    load_model_file,
    model_from_config,
)

__all__ = [
    "ImageComponent",
    "ImageModel",
    "LayerSpec",
    "ModelSpec",
    "ParamCounts",
    "image_model_ids",
    "load_image_model",
    "load_model",
    "load_model_file",
    "model_from_config",
    "preset_ids",
    "presets",
]
