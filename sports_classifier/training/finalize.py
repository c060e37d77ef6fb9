"""Finish a trained network into a bundle: export to ONNX (checked against Keras), measure it on
the validation images with the engine it will serve with, draw its pictures, write the bundle.
Shared by ``train`` and ``ensemble``; returns the metrics it measured.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import bundle
from ..config import ModelConfig
from ..metrics import classification_metrics

log = logging.getLogger(__name__)


def write_trained_bundle(model, model_config: ModelConfig, history, valid_df, out_dir, *,
                         progress: bool, start: float) -> tuple[Path, dict]:
    """Export, measure the finished network on the validation images, write the bundle with
    its metrics and pictures. ``start``: ``time.perf_counter()`` when the work began.

    Returns the bundle's path and the metrics written into it (per split)."""
    from .. import plots
    from ..images import preprocess
    from ..models.network import with_class_maps
    from ..runtime import KerasEngine, OnnxEngine, export_onnx, onnxruntime_available, predict_files

    labels = list(model_config.labels)
    size = model_config.image_size
    with tempfile.TemporaryDirectory() as tmp:
        writers = {}
        engine = KerasEngine(model)
        valid_paths = valid_df["filepath"].tolist()
        if onnxruntime_available():
            onnx_path = Path(tmp) / bundle.ONNX
            diff = export_onnx(with_class_maps(model, model_config), onnx_path,
                               sample=export_sample(valid_paths, size))
            log.info("ONNX export matches Keras (max |diff| %.1e)", diff)
            engine = OnnxEngine(onnx_path)
            writers[bundle.ONNX] = bundle.copy_from(onnx_path)
        probs, rows, _ = predict_files(engine, valid_paths, size, progress=progress, desc="evaluate valid")
        y_valid = valid_df["class_index"].to_numpy()[rows]
        metrics = {"valid": classification_metrics(y_valid, probs, labels)}
        metrics["valid"]["engine"] = engine.name
        model_config = model_config.replace(
            out_of_distribution=_ood_threshold(engine, probs, y_valid, size),
            training=model_config.training | {"seconds": round(time.perf_counter() - start, 1)})

        pred = probs.argmax(axis=1)
        picks = _sample_rows(y_valid, 10, model_config.training.get("seed", 0))
        images = [preprocess(valid_paths[rows[i]], size) for i in picks]
        writers.update({
            bundle.WEIGHTS: lambda dest: model.save_weights(dest),
            bundle.METRICS: bundle.write_metrics(metrics),
            bundle.HISTORY: lambda dest: history.to_csv(dest, index=False),
            bundle.CURVES: plots.write_png(plots.curves_png(history)),
            bundle.CONFUSION: plots.write_png(plots.confusion_png(
                np.asarray(metrics["valid"]["confusion_matrix"]), labels, title="Confusion matrix (valid)")),
            bundle.SAMPLES: plots.write_png(plots.samples_png(
                images, [labels[y_valid[i]] for i in picks], [labels[pred[i]] for i in picks])),
        })
        return bundle.write_bundle(out_dir, model_config, writers), metrics


def export_sample(paths: list[str], size: int, n: int = 4) -> np.ndarray:
    """Pixels to check an export on: the first readable images among ``paths`` (a corrupt file
    must not fail a finished training run), else seeded noise."""
    from ..images import try_preprocess_many

    pixels, _, _ = try_preprocess_many(paths[: n * 4], size)
    if len(pixels):
        return pixels[:n]
    return np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def _ood_threshold(engine, valid_probs: np.ndarray, y_valid: np.ndarray, size: int) -> dict | None:
    """The out-of-distribution threshold for the engine the bundle will serve with (ood.py);
    None when the non-sport photos are not installed (scikit-image)."""
    from ..errors import UserInputError
    from ..images import preprocess_batch
    from ..ood import threshold_from_probabilities

    try:
        choice = threshold_from_probabilities(valid_probs, y_valid,
                                              lambda images: engine(preprocess_batch(images, size)))
    except UserInputError as exc:
        log.warning("no out-of-distribution threshold chosen: %s", exc)
        return None
    log.info("out-of-distribution threshold: %s", choice["justification"])
    return choice


def _sample_rows(y: np.ndarray, n: int, seed: int) -> list[int]:
    """One image from each of ``n`` random classes (the notebook's sample grid)."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(y))[:n]
    return [int(np.flatnonzero(y == c)[0]) for c in classes]
