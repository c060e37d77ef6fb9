"""Compare tab: every number read from the bundles' own files (config.json, metrics.json, file
sizes) plus the latency measured on this server when each model loaded."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import bundle
from .registry import LATENCY_RUNS, ModelRegistry


log = logging.getLogger(__name__)

_param_cache: dict[tuple[str, float], int | None] = {}


def count_parameters(weights_file: str | Path) -> int | None:
    """Number of stored weights (trainable and BatchNorm statistics) in a Keras
    ``.weights.h5`` file, read with h5py; None if h5py or the file is missing."""
    path = Path(weights_file)
    if not path.is_file():
        return None
    key = (str(path.resolve()), path.stat().st_mtime)
    if key in _param_cache:
        return _param_cache[key]
    try:
        import h5py
    except ImportError:
        return None
    total = 0

    def visit(_, obj):
        nonlocal total
        if isinstance(obj, h5py.Dataset):
            total += int(obj.size)

    with h5py.File(path, "r") as fh:
        fh.visititems(visit)
    _param_cache[key] = total
    return total


COMPARE_COLUMNS = ["model", "backbone", "image size", "classes", "valid images", "accuracy",
                   "top-5 accuracy", "macro F1", "loss", "weights MB", "ONNX MB", "int8 ONNX MB", "parameters",
                   "ms / image", "engine", "status"]


def _mb(folder: Path, name: str) -> float | None:
    file = bundle.member_or_none(folder, name)
    return round(file.stat().st_size / 2**20, 2) if file else None


def _number(value):
    """A metric as shown: numbers only (a bundle's metrics.json is not trusted to hold them)."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def compare_rows(registry: ModelRegistry, split: str = "valid") -> list[dict]:
    """One row per model from its bundle's config.json, metrics.json (``split``), file sizes,
    the parameter count stored in its weights file and the latency measured at load."""
    rows = []
    for name in registry.names:
        entry = registry.entry(name)
        row = {c: None for c in COMPARE_COLUMNS} | {"model": name}
        if not entry.ok:
            row["status"] = f"failed to load: {entry.error}"
            rows.append(row)
            continue
        try:
            row.update(_model_row(entry, split))
        except Exception as exc:  # one bundle's ill-typed file costs its own row, not the table
            log.warning("compare: model %s: %s", name, exc)
            row["status"] = f"ready, but its bundle files cannot be read: {exc}"
        rows.append(row)
    return rows


def _model_row(entry, split: str) -> dict:
    clf = entry.classifier
    path = Path(clf.path)
    m = bundle.read_metrics(path).get(split, {})
    training = clf.config.training if isinstance(clf.config.training, dict) else {}
    weights = bundle.member_or_none(path, bundle.WEIGHTS)
    return {
        "backbone": clf.config.architecture,
        "image size": clf.config.image_size,
        "classes": clf.config.num_classes,
        "valid images": _number(m.get("n")),
        "accuracy": _number(m.get("accuracy")),
        "top-5 accuracy": _number(m.get("top5_accuracy")),
        "macro F1": _number(m.get("macro_f1")),
        "loss": _number(m.get("loss")),
        "weights MB": _mb(path, bundle.WEIGHTS),
        "ONNX MB": _mb(path, bundle.ONNX),
        "int8 ONNX MB": _mb(path, bundle.ONNX_INT8),
        "parameters": _number(training.get("parameters")) or (count_parameters(weights) if weights else None),
        "ms / image": None if entry.latency_ms is None else round(entry.latency_ms, 1),
        "engine": clf.runtime,
        "status": "ready",
    }


def compare_table(registry: ModelRegistry, split: str = "valid", *, digits: int = 4):
    """``compare_rows`` as a DataFrame, metric values rounded to ``digits`` for display."""
    import pandas as pd

    frame = pd.DataFrame(compare_rows(registry, split), columns=COMPARE_COLUMNS)
    for col in ("accuracy", "top-5 accuracy", "macro F1", "loss"):
        frame[col] = pd.to_numeric(frame[col]).round(digits)
    for col in ("image size", "classes", "valid images", "parameters"):
        frame[col] = pd.to_numeric(frame[col]).astype("Int64")  # stays integer beside a failed row
    return frame


SPEED_NOTE = (f"`ms / image`: median of {LATENCY_RUNS} single-image predictions (a 224x224 photo in, "
              "preprocessing included, after one warm-up) measured on this server when each model "
              "was loaded, with the engine shown. Accuracy, top-5, macro F1 and loss are read from "
              "each bundle's `metrics.json` (validation split); parameters are the count recorded in "
              "`config.json` if any, else counted in `model.weights.h5` (BatchNorm statistics included).")


def bundle_pictures(registry: ModelRegistry, filename: str) -> list[tuple[str, str]]:
    """(path, model name) for one picture file (``curves.png``, ``confusion_matrix.png``,
    ``samples.png``) of every loaded model that has it."""
    out = []
    for name in registry.names:
        entry = registry.entry(name)
        file = bundle.member_or_none(entry.classifier.path, filename) if entry.ok else None
        if file is not None:  # never a link out of the bundle: the app serves this file
            out.append((str(file), name))
    return out


def disagreement_table(registry: ModelRegistry, split: str = "valid", *, top: int = 15):
    """Per-class accuracy (recall) of each model on ``split``, the classes where the models
    differ most first (``spread``: max - min across the models that know the class). With one
    model, or models that share no class, the weakest classes instead."""
    import pandas as pd

    per_model = {}
    for name in registry.names:
        entry = registry.entry(name)
        if not entry.ok:
            continue
        try:
            per_class = bundle.read_metrics(entry.classifier.path).get(split, {}).get("per_class", {})
            recalls = {label: _number(s.get("recall")) for label, s in per_class.items()
                       if isinstance(s, dict)}
        except Exception as exc:  # an ill-typed metrics.json leaves this model out, not the table
            log.warning("compare: per-class scores of %s: %s", name, exc)
            continue
        if recalls:
            per_model[name] = recalls
    if not per_model:
        return pd.DataFrame(columns=["class"])
    frame = pd.DataFrame(per_model)
    frame.index.name = "class"
    models = list(per_model)
    frame["mean"] = frame[models].mean(axis=1)
    shared = frame[models].notna().sum(axis=1) >= 2  # only these can be disagreed on
    if len(models) > 1 and shared.any():
        frame = frame[shared].copy()
        frame["spread"] = frame[models].max(axis=1) - frame[models].min(axis=1)
        frame = frame.sort_values(["spread", "mean"], ascending=[False, True], kind="stable")
    else:
        frame = frame.sort_values("mean", kind="stable")
    return frame.drop(columns="mean").head(top).round(4).reset_index()
