"""Grad-CAM through Keras and TensorFlow: which regions of a photo raised a class's score.

Serving explains without TensorFlow (``sports_classifier.explain``, from the ONNX model's class
maps); this module is the reference it is tested against, and the fallback for a bundle that
serves through Keras.

Selvaraju et al. (2017): take the gradient of the class score (before softmax) with respect to
the backbone's last feature map, average it over the spatial positions to weight each channel,
sum the weighted channels and keep the positive part. For this package's head (global average
pooling + dense) the gradient is the dense weights over H*W, so Grad-CAM equals CAM here; the
gradient is computed anyway so that any head works.
"""

from __future__ import annotations

import threading

import numpy as np

from ..images import ImageInput, load_rgb, to_model_input

_build_lock = threading.Lock()


def _keras_model(classifier):
    # Classifier.keras_model builds on first use; two requests must not build it twice.
    with _build_lock:
        return classifier.keras_model


def gradcam(classifier, image: ImageInput, *, class_index: int | None = None) -> tuple[np.ndarray, int, float]:
    """Grad-CAM heatmap for ``image``: (H x W array in [0, 1] at the feature map's resolution,
    explained class index, its probability). Explains the top class unless ``class_index``.

    With test-time flip averaging, the heatmap explains the unmirrored branch; for an ensemble
    it is the average of the members' heatmaps (each at the largest member's resolution).

    >>> heat, index, prob = gradcam(Classifier.from_pretrained("models/lite0"), "photo.jpg")
    """
    import tensorflow as tf

    from .network import member_name

    model = _keras_model(classifier)
    config = classifier.config
    x = tf.convert_to_tensor(to_model_input(load_rgb(image), config.image_size)[None])
    probs = model(x, training=False).numpy()[0]
    index = int(np.argmax(probs)) if class_index is None else int(class_index)
    if not config.is_ensemble:
        return _normalise(_class_map(model, x, index)), index, float(probs[index])
    maps = []
    for i, member in enumerate(config.members):
        size = member["image_size"]
        xi = x if size == config.image_size else tf.image.resize(x, (size, size), method="bilinear")
        maps.append(_normalise(_class_map(model.get_layer(member_name(i)), xi, index)))
    side = max(m.shape[0] for m in maps)
    resized = [tf.image.resize(m[None, :, :, None], (side, side)).numpy()[0, :, :, 0] for m in maps]
    return _normalise(np.mean(resized, axis=0)), index, float(probs[index])


def _class_map(net, x, index: int) -> np.ndarray:
    """The positive part of the gradient-weighted feature map of one classifier network."""
    import tensorflow as tf

    from .network import BACKBONE, POOL, PREDICTIONS

    backbone, pool, dense = net.get_layer(BACKBONE), net.get_layer(POOL), net.get_layer(PREDICTIONS)
    with tf.GradientTape() as tape:
        fmap = backbone(x, training=False)
        tape.watch(fmap)
        logits = tf.matmul(pool(fmap), dense.kernel) + dense.bias  # the class scores before softmax
        score = logits[0, index]
    grads = tape.gradient(score, fmap)[0]  # (h, w, channels)
    weights = tf.reduce_mean(grads, axis=(0, 1))
    return tf.nn.relu(tf.reduce_sum(fmap[0] * weights, axis=-1)).numpy()


def _normalise(cam: np.ndarray) -> np.ndarray:
    top = float(cam.max())
    return (cam / top if top > 0 else np.zeros_like(cam)).astype(np.float32)
