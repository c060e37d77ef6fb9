"""Batch tab: many uploaded files at once -> one row per file and model, and the same table as CSV."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Sequence

from ..errors import UserInputError
from .predict import TOP_K
from .registry import ModelRegistry
from .sport_names import display_name

MAX_BATCH_FILES = 64


# "#" numbers the photos in upload order (the page's thumbnails carry the same number): several
# uploads may share a file name ("1.jpg"). "file" stays the first column for API clients and CSVs.
BATCH_COLUMNS = ["file", "#", "model", "prediction", "probability", "top-5", "out of distribution", "error"]


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
            rows += [{"#": i, "file": Path(f).name, "model": name, "error": f"model failed to load: {entry.error}"}
                     for i, f in enumerate(files, 1)]
            continue
        clf = entry.classifier
        has_threshold = clf.ood_threshold is not None
        for i, (path, p) in enumerate(zip(files, clf.predict_files(files, top_k=top_k)), 1):
            name_only = Path(path).name  # the upload's server path means nothing to the user
            if not p.ok:
                rows.append({"#": i, "file": name_only, "model": name, "error": p.error.replace(path, name_only)})
                continue
            rows.append({"#": i, "file": name_only, "model": name, "prediction": p.label,
                         "probability": round(p.probability, 4),
                         "top-5": "; ".join(f"{label} {prob:.0%}" for label, prob in p.top),
                         "out of distribution": p.ood if has_threshold else None})
    frame = pd.DataFrame(rows, columns=BATCH_COLUMNS)
    out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="sports-batch-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "predictions.csv"
    frame.to_csv(csv_path, index=False, quoting=csv.QUOTE_MINIMAL)
    return frame, str(csv_path)


def page_view(frame):
    """The table as the page shows it: probabilities as percentages (the values, and the CSV,
    keep the numbers), misspelt class names as their display names, and the columns a person
    reads first on the left, each photo's rows together. API clients get this table too: its
    columns stay in ``BATCH_COLUMNS`` order."""
    view = frame.sort_values("#", kind="stable")
    # the page's table fits a screen: the runners-up as the top 3 (the CSV keeps the top 5)
    view["top-5"] = view["top-5"].map(_top3_text)
    view = view.rename(columns={"out of distribution": "not a sport?", "top-5": "top-3"})
    # display only: the values keep the models' labels and the numbers
    return view.style.hide(axis="index").format({
        "probability": lambda v: "" if v != v else f"{v:.1%}",
        "prediction": lambda v: display_name(v) if isinstance(v, str) else "",
        "not a sport?": lambda v: "yes" if v is True else "",
    }, na_rep="")


def _top3_text(text):
    """"golf 99%; archery 0%; ..." -> "golf 99%": the top 3, without those under 1% (as on Predict)."""
    if not isinstance(text, str):
        return text
    parts = text.split("; ")[:3]
    return "; ".join(p for i, p in enumerate(parts) if i == 0 or not p.endswith(" 0%"))


def photo_captions(files: Sequence[str | Path], frame) -> list[tuple[str, str]]:
    """(photo, caption) per uploaded file, numbered as the table's "#": "#3 golf 97%"."""
    first = frame.drop_duplicates("#").set_index("#")
    out = []
    for i, path in enumerate(files, 1):
        row = first.loc[i] if i in first.index else None
        answer = ("" if row is None or not isinstance(row["prediction"], str)
                  else f" {display_name(row['prediction'])} {row['probability']:.0%}")
        out.append((str(path), f"#{i}{answer}"))
    return out
