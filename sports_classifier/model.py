"""The classifier network: backbone + global pooling + dropout + softmax (the notebook's
``create_model``), and the views of it that training needs (head only, last stages + head).

All views share layer objects with the full model, so training a view trains the model.
"""

from __future__ import annotations

import keras

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
        raise ValueError(f"{backbone} has {len(stages)} stages; cannot fine-tune {trainable_stages}")
    return stages[-trainable_stages - 1]


def trunk(model: keras.Model, split: str | None) -> keras.Model:
    """The frozen part whose outputs training caches: pooled features, or the activations at
    ``split``."""
    base = backbone_of(model)
    if split is None:
        return keras.Model(base.input, model.get_layer(POOL)(base.output), name="trunk")
    return keras.Model(base.input, base.get_layer(split).output, name="trunk")


def head_model(model: keras.Model) -> keras.Model:
    """Pooled features -> probabilities, sharing the full model's dropout and dense layers."""
    dense = model.get_layer(PREDICTIONS)
    features = keras.Input((dense.input.shape[-1],), name="features")
    return keras.Model(features, dense(model.get_layer(DROPOUT)(features)), name="head")


def upper_model(model: keras.Model, split: str) -> keras.Model:
    """Activations at ``split`` -> probabilities: the last stages plus the head."""
    base = backbone_of(model)
    upper = keras.Model(base.get_layer(split).output, base.output, name="upper_stages")
    inputs = keras.Input(upper.input.shape[1:], name="activations")
    x = model.get_layer(POOL)(upper(inputs))
    outputs = model.get_layer(PREDICTIONS)(model.get_layer(DROPOUT)(x))
    return keras.Model(inputs, outputs, name="upper")


def upper_features(model: keras.Model, split: str) -> keras.Model:
    """Activations at ``split`` -> pooled features (the frozen forward pass of the last stages)."""
    base = backbone_of(model)
    upper = keras.Model(base.get_layer(split).output, base.output)
    inputs = keras.Input(upper.input.shape[1:])
    return keras.Model(inputs, model.get_layer(POOL)(upper(inputs)))


def set_trainable(model: keras.Model, split: str | None) -> None:
    """Freeze the backbone up to and including the layer ``split`` (all of it when None);
    BatchNorm stays frozen (in inference mode) everywhere, as in keras-io's EfficientNet
    fine-tuning recipe."""
    base = backbone_of(model)
    base.trainable = split is not None
    if split is None:
        return
    after_split = False
    for layer in base.layers:
        layer.trainable = after_split and not isinstance(layer, keras.layers.BatchNormalization)
        if layer.name == split:
            after_split = True


def compile_model(model: keras.Model, *, optimizer: str, learning_rate: float,
                  weight_decay: float = 0.0, label_smoothing: float = 0.0) -> None:
    """Categorical cross-entropy on one-hot labels (so label smoothing works), accuracy, top-5."""
    if optimizer == "adam":
        opt = keras.optimizers.Adam(learning_rate)
    elif optimizer == "adamw":
        opt = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay or 1e-4)
    else:
        opt = keras.optimizers.SGD(learning_rate, momentum=0.9)
    model.compile(
        optimizer=opt,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(5, name="top5_accuracy"),
        ],
    )
