"""The classifier network: backbone + global pooling + dropout + softmax (the notebook's
``create_model``), ensembles of such networks, and where each backbone's stages end.
The sub-networks training needs (trunk, head, last stages) live in ``training.subnetworks``.
"""

from __future__ import annotations

import keras

from ..errors import ConfigError
from .backbones import build_backbone, get_backbone

POOL, DROPOUT, PREDICTIONS, BACKBONE = "pool", "dropout", "predictions", "backbone"


@keras.saving.register_keras_serializable(package="sports_classifier")
class HorizontalFlip(keras.layers.Layer):
    """Mirror images left-right (deterministic; used for test-time augmentation)."""

    def call(self, inputs):
        return keras.ops.flip(inputs, axis=2)


def build_classifier(
    backbone: str, num_classes: int, *, image_size: int | None = None, dropout: float = 0.2,
    weights: str | None = "imagenet", tta_flip: bool = False,
) -> keras.Model:
    """Backbone -> GlobalAveragePooling2D -> Dropout -> Dense(softmax).

    Input: float32 RGB pixels in [0, 255], ``(N, size, size, 3)``; output: class probabilities.
    With ``tta_flip`` the output averages the prediction on the image and on its mirror image.

    >>> model = build_classifier("efficientnet_lite0", 100)
    """
    size = image_size or get_backbone(backbone).image_size
    base = build_backbone(backbone, image_size=size, weights=weights)
    pool = keras.layers.GlobalAveragePooling2D(name=POOL)
    drop = keras.layers.Dropout(dropout, name=DROPOUT)
    dense = keras.layers.Dense(num_classes, activation="softmax", name=PREDICTIONS)

    inputs = keras.Input((size, size, 3), name="pixels")
    outputs = dense(drop(pool(base(inputs))))
    if tta_flip:
        mirrored = dense(drop(pool(base(HorizontalFlip(name="mirror")(inputs)))))
        outputs = keras.layers.Average(name="tta_average")([outputs, mirrored])
    return keras.Model(inputs, outputs, name="sports_classifier")


def build_ensemble(members, num_classes: int, *, image_size: int) -> keras.Model:
    """Several classifiers averaged inside one network, so that it saves, loads and exports
    (one ONNX file) like a single model.

    Each member sees the input resized (bilinear) to its own size. ``members``: the dicts of
    ``ModelConfig.members``. The networks are built without weights: load them afterwards.
    """
    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    outputs = []
    for i, member in enumerate(members):
        size = member["image_size"]
        net = build_classifier(member["backbone"], num_classes, image_size=size, dropout=0.0,
                               weights=None, tta_flip=member.get("tta_flip", False))
        net.name = member_name(i)
        x = inputs if size == image_size else keras.layers.Resizing(
            size, size, interpolation="bilinear", name=f"resize_{i}")(inputs)
        # Inference only: no dropout, and BatchNorm fixed in inference mode (otherwise the ONNX
        # export of a model nested twice traces its training branch).
        outputs.append(net(x, training=False))
    return keras.Model(inputs, keras.layers.Average(name="ensemble_average")(outputs),
                       name="sports_classifier_ensemble")


def member_name(i: int) -> str:
    return f"member_{i}"


def build_network(config) -> keras.Model:
    """The (weightless) network a bundle's ``ModelConfig`` describes: one classifier or an
    ensemble of them."""
    if config.is_ensemble:
        return build_ensemble(config.members, config.num_classes, image_size=config.image_size)
    return build_classifier(config.backbone, config.num_classes, image_size=config.image_size,
                            dropout=config.dropout, weights=None, tta_flip=config.tta_flip)


def backbone_of(model: keras.Model) -> keras.Model:
    return model.get_layer(BACKBONE)


def stage_outputs(model: keras.Model, backbone: str) -> list[str]:
    return get_backbone(backbone).stage_outputs(backbone_of(model))


def split_layer(model: keras.Model, backbone: str, trainable_stages: int, *, top: bool = False) -> str | None:
    """The layer whose output enters the last ``trainable_stages`` stages, or with
    ``trainable_stages=0`` and ``top``, the backbone's top convolution alone (EfficientNet's 1x1
    head convolution). None: head only (also when ``top`` is asked of a backbone without one)."""
    if trainable_stages == 0:
        if not top:
            return None
        last = stage_outputs(model, backbone)[-1]
        return None if backbone_of(model).layers[-1].name == last else last
    stages = stage_outputs(model, backbone)
    if trainable_stages >= len(stages):
        raise ConfigError(f"{backbone} has {len(stages)} stages; cannot fine-tune {trainable_stages}")
    return stages[-trainable_stages - 1]


class ClassMaps(keras.layers.Layer):
    """Feature map (N, h, w, C) -> every class's score at every position (N, h, w, classes):
    the dense layer's kernel applied before pooling. For a global-average-pool + dense head
    this is CAM, and Grad-CAM of a class equals it up to a constant factor (the gradient of a
    class score with respect to the feature map is that class's dense weights over h * w)."""

    def __init__(self, dense: keras.layers.Dense, **kwargs):
        super().__init__(**kwargs)
        self.dense = dense

    def call(self, fmap):
        return keras.ops.matmul(fmap, self.dense.kernel)


def with_class_maps(model: keras.Model, config) -> keras.Model:
    """The same network (same layers, inference mode) with one more output per member network:
    its class maps (``ClassMaps``), which ``explain`` turns into a heat map without TensorFlow.
    This is what ONNX exports hold; the probabilities are unchanged."""
    if not config.is_ensemble:
        return _member_with_maps(model, config.image_size, name="sports_classifier_with_maps")
    inputs = keras.Input((config.image_size, config.image_size, 3), name="pixels")
    all_probs, all_maps = [], []
    for i, member in enumerate(config.members):
        size = member["image_size"]
        x = inputs if size == config.image_size else model.get_layer(f"resize_{i}")(inputs)
        # Each member in its own sub-model: their layers share names (backbone, pool, ...).
        member_net = _member_with_maps(model.get_layer(member_name(i)), size, name=f"{member_name(i)}_with_maps")
        probs, maps = member_net(x, training=False)  # BatchNorm in inference mode in the export too
        all_probs.append(probs)
        all_maps.append(maps)
    average = model.get_layer("ensemble_average")(all_probs)
    return keras.Model(inputs, [average, *all_maps], name="sports_classifier_ensemble_with_maps")


def _member_with_maps(net: keras.Model, size: int, *, name: str) -> keras.Model:
    """One classifier network -> a model of (probabilities, class maps), through its own layers."""
    base, pool, drop, dense = (net.get_layer(n) for n in (BACKBONE, POOL, DROPOUT, PREDICTIONS))
    x = keras.Input((size, size, 3), name="pixels")
    fmap = base(x, training=False)
    probs = dense(drop(pool(fmap), training=False))
    if any(layer.name == "tta_average" for layer in net.layers):
        mirrored = dense(drop(pool(base(net.get_layer("mirror")(x), training=False)), training=False))
        probs = net.get_layer("tta_average")([probs, mirrored])
    return keras.Model(x, [probs, ClassMaps(dense, name="class_maps")(fmap)], name=name)
