"""The sub-networks of a classifier that cached training needs (the frozen trunk, the head
alone, the last stages + head), freezing, and compiling.

All sub-networks share layer objects with the full model, so training one trains the model.
("View" means one thing in this package: a way of showing the images to the trunk, clean,
mirrored or augmented, ``features.View``.)
"""

from __future__ import annotations

import keras

from ..models.network import DROPOUT, POOL, PREDICTIONS, backbone_of


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
                  weight_decay: float = 0.0, label_smoothing: float = 0.0,
                  distill: tuple[int, float, float] | None = None) -> None:
    """Categorical cross-entropy on one-hot labels (so label smoothing works), accuracy, top-5.

    With ``distill = (n_classes, temperature, weight)`` the targets are the one-hot labels and
    the teacher's probabilities side by side (``n_classes * 2`` columns): see ``distillation_loss``.
    """
    if optimizer == "adam":
        opt = keras.optimizers.Adam(learning_rate)
    elif optimizer == "adamw":
        opt = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay or 1e-4)
    else:
        opt = keras.optimizers.SGD(learning_rate, momentum=0.9)
    if distill is None:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy"),
                   keras.metrics.TopKCategoricalAccuracy(5, name="top5_accuracy")]
    else:
        n = distill[0]
        loss = distillation_loss(*distill, label_smoothing=label_smoothing)

        # The metrics read the label half of the targets; the names match the plain run's.
        def accuracy(y_true, y_pred):
            return keras.metrics.categorical_accuracy(y_true[:, :n], y_pred)

        def top5_accuracy(y_true, y_pred):
            return keras.metrics.top_k_categorical_accuracy(y_true[:, :n], y_pred, k=5)

        metrics = [accuracy, top5_accuracy]
    model.compile(optimizer=opt, loss=loss, metrics=metrics)


def distillation_loss(n_classes: int, temperature: float, weight: float, *, label_smoothing: float = 0.0):
    """Hinton et al.'s knowledge-distillation loss on ``[one-hot labels | teacher probabilities]``
    targets: ``(1 - weight) * CE(labels, p) + weight * T^2 * KL(q_T || p_T)``, where ``x_T`` is
    ``softmax(log x / T)`` (for a softmax output that is the softmax of the logits over T; the T^2
    keeps the gradient scale independent of T)."""
    from keras import ops

    eps = 1e-7

    def loss(y_true, y_pred):
        labels, teacher = y_true[:, :n_classes], y_true[:, n_classes:]
        hard = keras.losses.categorical_crossentropy(labels, y_pred, label_smoothing=label_smoothing)
        log_p = ops.log_softmax(ops.log(ops.clip(y_pred, eps, 1.0)) / temperature, axis=-1)
        log_q = ops.log_softmax(ops.log(ops.clip(teacher, eps, 1.0)) / temperature, axis=-1)
        soft = ops.sum(ops.exp(log_q) * (log_q - log_p), axis=-1)
        return (1.0 - weight) * hard + weight * temperature**2 * soft

    return loss
