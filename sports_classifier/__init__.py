"""Recognise the sport in a photo (100 classes) with Keras 3 transfer learning.

>>> from sports_classifier import Classifier
>>> Classifier.from_pretrained("models/lite0-finetuned").predict("photo.jpg")

Importing the package is cheap: TensorFlow, Keras and Gradio load only when first needed.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"

# Quiet TensorFlow's C++ start-up chatter and pin Keras to TensorFlow, before anything imports them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__all__ = ["Classifier", "TrainConfig", "ModelConfig", "__version__"]


def __getattr__(name: str):
    if name == "Classifier":
        from .classifier import Classifier

        return Classifier
    if name in ("TrainConfig", "ModelConfig"):
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module 'sports_classifier' has no attribute {name!r}")
