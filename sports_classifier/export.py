"""Add fast-inference exports to an existing bundle (``sports-classifier export``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from . import bundle
from .runtime import export_onnx


def export_bundle(path: str | Path, *, formats=("onnx",)) -> list[str]:
    """Export the bundle's Keras network to ONNX, verified against Keras (max |diff| < 1e-4),
    and rewrite the bundle with ``model.onnx`` and its checksum. Returns report lines."""
    path = Path(path)
    config = bundle.read_config(path)
    model = bundle.load_keras_model(path, config)
    rng = np.random.default_rng(0)
    sample = rng.uniform(0, 255, (8, config.image_size, config.image_size, 3)).astype(np.float32)
    report = []
    with tempfile.TemporaryDirectory() as tmp:
        writers = {
            name: bundle.copy_from(path / name) for name in bundle.FILES
            if name not in (bundle.CONFIG, bundle.CARD) and (path / name).is_file()
        }
        if "onnx" in formats:
            onnx_path = Path(tmp) / bundle.ONNX
            diff = export_onnx(model, onnx_path, sample=sample)
            writers[bundle.ONNX] = bundle.copy_from(onnx_path)
            report.append(f"{bundle.ONNX}: max |probability difference| vs Keras {diff:.1e} "
                          f"({onnx_path.stat().st_size / 2**20:.1f} MB)")
        bundle.write_bundle(path, config, writers)
    return report
