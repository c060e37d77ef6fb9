"""Batch tab: many uploaded files at once -> one row per file and model, and the same table as CSV."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Sequence

from ..errors import UserInputError
from .predict import TOP_K
from .registry import ModelRegistry

MAX_BATCH_FILES = 64


BATCH_COLUMNS = ["file", "model", "prediction", "probability", "top-5", "out of distribution", "error"]


def batch_predict(registry: ModelRegistry, files: Sequence[str | Path] | None,
                  model_names: Sequence[str] | None = None, *, out_dir: str | Path | None = None,
                  top_k: int = TOP_K):
    """Predict many image files. Returns (DataFrame with one row per file and model, path of
    the same table as CSV). Unreadable files get a row with the error; others still run."""
    import pandas as pd

    files = [str(f) for f in (files or [])]
    if not files:
        raise UserInputError("upload one or more images first")
    if len(files) > MAX_BATCH_FILES:
        raise UserInputError(f"{len(files)} files: at most {MAX_BATCH_FILES} at a time")
    names = list(registry.names if model_names is None else model_names)
    if not names:
        raise UserInputError("choose at least one model")
    rows = []
    for name in names:
        entry = registry.entry(name)
        if not entry.ok:
            rows += [dict(file=Path(f).name, model=name, error=f"model failed to load: {entry.error}") for f in files]
            continue
        clf = entry.classifier
        has_threshold = clf.ood_threshold is not None
        for path, p in zip(files, clf.predict_files(files, top_k=top_k)):
            name_only = Path(path).name  # the upload's server path means nothing to the user
            if not p.ok:
                rows.append(dict(file=name_only, model=name, error=p.error.replace(path, name_only)))
                continue
            rows.append({"file": name_only, "model": name, "prediction": p.label,
                         "probability": round(p.probability, 4),
                         "top-5": "; ".join(f"{label} {prob:.3f}" for label, prob in p.top),
                         "out of distribution": p.ood if has_threshold else None})
    frame = pd.DataFrame(rows, columns=BATCH_COLUMNS)
    out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="sports-batch-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "predictions.csv"
    frame.to_csv(csv_path, index=False, quoting=csv.QUOTE_MINIMAL)
    return frame, str(csv_path)
