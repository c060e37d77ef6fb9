"""Inference engines: ONNX Runtime (fast, no TensorFlow) and Keras (always available).

Both take the output of ``images.preprocess_batch`` (float32 RGB in [0, 255]) and return the
network's outputs as numpy. ``export_onnx`` writes an ONNX copy of a Keras model and checks
that it computes the same outputs.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import ExportError

BATCH = 32


class Engine(Protocol):
    name: str

    def __call__(self, pixels: np.ndarray) -> np.ndarray: ...


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


class OnnxEngine:
    """Runs an ``.onnx`` file with ONNX Runtime on the CPU, all cores, full graph optimisation."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, *, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors on a bad file
            from .errors import BundleError

            raise BundleError(f"{path} is not a valid ONNX model: {exc}") from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        outs = [
            self.session.run(None, {self.input_name: pixels[i : i + BATCH]})[0]
            for i in range(0, len(pixels), BATCH)
        ]
        return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


class KerasEngine:
    """Runs a Keras model batch by batch (``predict_on_batch`` skips ``predict``'s overhead)."""

    name = "keras"

    def __init__(self, model):
        self.model = model

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        outs = [
            np.asarray(self.model.predict_on_batch(pixels[i : i + BATCH]))
            for i in range(0, len(pixels), BATCH)
        ]
        return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def export_onnx(model, path: str | Path, *, sample: np.ndarray, atol: float = 1e-4) -> float:
    """Export ``model`` to ONNX at ``path`` and check it against Keras on ``sample``.

    Returns the max absolute difference of outputs; raises ``ExportError`` (leaving no file)
    if it is ``atol`` or more. Written to a temporary name first, so a crash leaves no half file.
    """
    if not onnxruntime_available():
        raise ExportError("onnxruntime is not installed: pip install onnxruntime")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    expected = KerasEngine(model)(sample)  # also builds the model, which export requires
    try:
        model.export(str(tmp), format="onnx", verbose=False)
        got = OnnxEngine(tmp)(sample)
        diff = float(np.max(np.abs(got - expected))) if expected.size else 0.0
        if not diff < atol:
            raise ExportError(f"ONNX export differs from Keras by {diff:.2e} (limit {atol:.0e})")
        os.replace(tmp, path)
        return diff
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def predict_files(engine: Engine, paths, image_size: int, *, batch_size: int = BATCH,
                  progress: bool = False, desc: str = "predict"):
    """Run ``engine`` over image files: returns (outputs, kept rows, skipped (path, reason)).

    Unreadable files are skipped and reported rather than ending the run.
    """
    from tqdm.auto import tqdm

    from .data import SkippedImages, iter_batches

    skipped = SkippedImages()
    outs, rows = [], []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for pixels, idx in iter_batches(list(paths), image_size, batch_size, skipped=skipped):
            outs.append(engine(pixels))
            rows.append(idx)
            bar.update(len(idx))
    skipped.warn(desc)
    if not outs:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), skipped.items
    return np.concatenate(outs), np.concatenate(rows), skipped.items
