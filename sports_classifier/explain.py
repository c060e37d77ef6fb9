"""Explanations without TensorFlow: a class-activation heat map from the ONNX model's class maps,
blended over the photo.

For this package's head (global average pooling + dense), Grad-CAM of a class is the positive
part of that class's dense weights applied at every position of the last feature map (CAM), up
to a constant factor. ONNX exports carry those per-position class scores as extra outputs (one
per member network, ``models.network.with_class_maps``), so a heat map costs one forward pass
and a few NumPy operations. ``models.gradcam`` (Keras) is the reference the tests compare with.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

MAX_SIDE = 640  # the overlay is shown, not analysed: keep it light


def heat_map(class_maps: Sequence[np.ndarray], index: int) -> np.ndarray:
    """The heat map of class ``index`` in [0, 1] from one ``(h, w, classes)`` class-map array per
    member network: each member's positive part normalised, resized to the largest member's
    resolution, averaged (as the Keras Grad-CAM does for ensembles)."""
    maps = [_normalise(np.maximum(m[..., index], 0.0)) for m in class_maps]
    side = max(m.shape[0] for m in maps)
    maps = [m if m.shape[0] == side else _resize(m, side) for m in maps]
    return _normalise(np.mean(maps, axis=0))


def _resize(heat: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(heat.astype(np.float32), mode="F").resize((side, side), Image.BILINEAR))


def _normalise(cam: np.ndarray) -> np.ndarray:
    top = float(cam.max()) if cam.size else 0.0
    return (cam / top if top > 0 else np.zeros_like(cam)).astype(np.float32)


def overlay(image: Image.Image, heatmap: np.ndarray, *, alpha: float = 0.45,
            colormap: str = "jet") -> Image.Image:
    """Blend ``heatmap`` ([0, 1], any resolution) over ``image`` in a colour map.

    The network sees the photo squashed to a square, so the square heatmap is stretched back
    to the photo's own width and height.
    """
    from matplotlib import colormaps

    image = image.convert("RGB")
    if max(image.size) > MAX_SIDE:
        scale = MAX_SIDE / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.BILINEAR)
    heat = Image.fromarray(np.clip(heatmap, 0, 1).astype(np.float32), mode="F")
    heat = np.asarray(heat.resize(image.size, Image.BILINEAR), dtype=np.float32)
    colored = (colormaps[colormap](np.clip(heat, 0, 1))[..., :3] * 255).astype(np.float32)
    base = np.asarray(image, dtype=np.float32)
    return Image.fromarray(np.clip((1 - alpha) * base + alpha * colored, 0, 255).astype(np.uint8))
