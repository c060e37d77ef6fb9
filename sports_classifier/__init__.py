"""Recognise the sport in a photo (100 classes) with Keras 3 transfer learning.

>>> from sports_classifier import Classifier
>>> Classifier.from_pretrained("models/lite0").classify("photo.jpg").label
'basketball'

Importing the package is cheap: TensorFlow, Keras and Gradio load only when first needed
(``train`` imports TensorFlow when called; serving never does). The layers and the one import
direction are drawn in docs/architecture.md.
"""

from __future__ import annotations

import os

from .errors import (BundleError, ConfigError, DatasetLayoutError, ExportError, HubError, ImageDecodeError,
                     ModelLoadError, SportsClassifierError, UnknownBackboneError, UserInputError,
                     WeightsUnavailableError)
from .version import __version__

# Quiet TensorFlow's C++ start-up chatter and pin Keras to TensorFlow, before anything imports them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__all__ = [
    "Classifier", "Prediction", "train", "available_backbones", "TrainConfig", "ModelConfig", "__version__",
    "SportsClassifierError", "ConfigError", "UnknownBackboneError", "WeightsUnavailableError",
    "DatasetLayoutError", "ImageDecodeError", "BundleError", "HubError", "ExportError", "UserInputError",
    "ModelLoadError",
]

# name -> (module, attribute): loaded on first access so that `import sports_classifier` stays cheap.
_LAZY = {
    "Classifier": ("classifier", "Classifier"),
    "Prediction": ("classifier", "Prediction"),
    "TrainConfig": ("config", "TrainConfig"),
    "ModelConfig": ("config", "ModelConfig"),
    "available_backbones": ("models.backbones", "available_backbones"),
    "train": ("training.loop", "train"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attribute)
    raise AttributeError(f"module 'sports_classifier' has no attribute {name!r}")
