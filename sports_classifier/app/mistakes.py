"""Where each model goes wrong: its most-confused class pairs and a browser of the images it
gets wrong.

Bundles record the validation confusion matrix (``metrics.json``) but not per-image
predictions, and the server does not have the training data. So the confused pairs (true ->
predicted, count) are read from the recorded matrix (all validation images), and the images
come from the example photos the app ships (``examples/``, copied from the same validation
split): each model predicts them once, in a background thread, and the result is cached for
the life of the server. Nothing here imports Gradio.
"""

from __future__ import annotations

import csv
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import bundle
from ..atomic import atomic_path
from .examples import ALL_SPORTS, list_examples
from .registry import ModelRegistry
from .sport_names import display_name

log = logging.getLogger(__name__)

TOP_K = 3


@dataclass(frozen=True)
class Mistake:
    """One wrongly predicted example image: its true class and the model's top-3."""

    path: str
    true: str
    top: tuple[tuple[str, float], ...]

    @property
    def predicted(self) -> str:
        return self.top[0][0]


@dataclass
class ExampleResults:
    """One model's predictions on the example images: how many, how many right, the mistakes."""

    model: str
    n: int = 0
    correct: int = 0
    mistakes: list[Mistake] = field(default_factory=list)
    unknown_classes: int = 0  # example images of classes the model was not trained on (not scored)
    error: str | None = None


PROGRESS_CHUNK = 25  # example images predicted between two progress reports


def evaluate_examples(classifier, examples_dir: str | Path, model: str = "", *,
                      on_progress=None) -> ExampleResults:
    """Predict every example image the model has a class for; keep the wrong ones with top-3.
    ``on_progress(done, total)`` is called as the images are predicted."""
    known = set(classifier.labels)
    found = list_examples(examples_dir)
    scored = [e for e in found if e.label in known]
    out = ExampleResults(model, unknown_classes=len(found) - len(scored))
    if not scored:
        return out
    predictions = []
    for start in range(0, len(scored), PROGRESS_CHUNK):
        chunk = scored[start:start + PROGRESS_CHUNK]
        predictions += classifier.predict_files([e.path for e in chunk], top_k=TOP_K)
        if on_progress is not None:
            on_progress(len(predictions), len(scored))
    for example, pred in zip(scored, predictions):
        if not pred.ok:
            continue
        out.n += 1
        if pred.label == example.label:
            out.correct += 1
        else:
            out.mistakes.append(Mistake(example.path, example.label, tuple((lbl, float(p)) for lbl, p in pred.top)))
    return out


class MistakesCache:
    """``evaluate_examples`` once per model, in a background thread, kept for the server's life.

    ``get`` never blocks: it returns None while a model's turn has not come yet.
    """

    def __init__(self, registry: ModelRegistry, examples_dir: str | Path):
        self.registry = registry
        self.examples_dir = Path(examples_dir)
        self._results: dict[str, ExampleResults] = {}
        self._progress: dict[str, tuple[int, int]] = {}  # model -> (images done, of)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def get(self, name: str) -> ExampleResults | None:
        return self._results.get(name)

    def progress(self, name: str) -> tuple[int, int] | None:
        """(images predicted, of) while ``name``'s turn runs; None before it starts."""
        return self._progress.get(name)

    def compute(self, name: str) -> ExampleResults:
        """The results for ``name``, computing them now if needed (loads the model)."""
        done = self._results.get(name)
        if done is not None:
            return done
        entry = self.registry.entry(name)
        if not entry.ok:
            result = ExampleResults(name, error=f"failed to load: {entry.error}")
        else:
            try:
                def report(done: int, total: int) -> None:
                    self._progress[name] = (done, total)

                result = evaluate_examples(entry.classifier, self.examples_dir, name, on_progress=report)
            except Exception as exc:  # shown in the page; the other models still get theirs
                log.warning("examples of %s could not be predicted: %s", name, exc)
                result = ExampleResults(name, error=f"{type(exc).__name__}: {exc}")
        self._results[name] = result
        return result

    def start(self, first: str | None = None) -> threading.Thread:
        """Compute every model's results in one daemon thread, ``first`` first (once; later
        calls return the same thread)."""
        with self._lock:
            if self._thread is None:
                order = sorted(self.registry.names, key=lambda n: n != first)

                def run():
                    for name in order:
                        self.compute(name)

                self._thread = threading.Thread(target=run, name="mistakes", daemon=True)
                self._thread.start()
            return self._thread


# -- pure views of the data --------------------------------------------------------------------------


def confused_pairs(confusion: Sequence[Sequence[int]], labels: Sequence[str], *, top: int = 8) -> list[dict]:
    """The ``top`` largest off-diagonal cells of a confusion matrix (rows: true class), as
    ``{"true", "predicted", "count", "of"}`` (``of``: images of the true class), largest first,
    ties in label order."""
    cm = np.asarray(confusion, dtype=np.int64)
    if cm.ndim != 2 or cm.shape != (len(labels), len(labels)):
        return []
    off = cm.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off)
    order = sorted(zip(rows, cols), key=lambda rc: (-off[rc], rc[0], rc[1]))[:top]
    support = cm.sum(axis=1)
    return [{"true": labels[r], "predicted": labels[c], "count": int(off[r, c]), "of": int(support[r])}
            for r, c in order]


def pair_examples(pairs: Sequence[dict], results: ExampleResults | None,
                  examples_dir: str | Path) -> list[tuple[str, str]]:
    """(image path, caption) per confused pair: an example image the model itself mistook that
    way when there is one, else an example of the true class (said so in the caption)."""
    by_pair: dict[tuple[str, str], str] = {}
    for m in (results.mistakes if results else []):
        by_pair.setdefault((m.true, m.predicted), m.path)
    items = []
    for p in pairs:
        caption = f"{display_name(p['true'])} → {display_name(p['predicted'])}: {p['count']} of {p['of']}"
        path = by_pair.get((p["true"], p["predicted"]))
        if path is None:
            found = list_examples(examples_dir, p["true"])
            if not found:
                continue
            path = found[0].path
            caption += " (an example of the true class)"
        else:
            caption += " (this image was mistaken so)"
        items.append((path, caption))
    return items


def pairs_table(pairs: Sequence[dict]):
    """The confused pairs as a small DataFrame (true, predicted, count, of)."""
    import pandas as pd

    frame = pd.DataFrame(list(pairs), columns=["true", "predicted", "count", "of"])
    return frame.rename(columns={"true": "true class", "predicted": "predicted as", "of": "of (images)"})


def model_confusion(registry: ModelRegistry, name: str, split: str = "valid") -> tuple[list, list[str]]:
    """(confusion matrix, labels) a loaded model's bundle records for ``split``; empty if none."""
    entry = registry.entry(name)
    if not entry.ok:
        return [], []
    cm = bundle.read_metrics(entry.classifier.path).get(split, {}).get("confusion_matrix") or []
    return cm, list(entry.classifier.labels)


def mistakes_gallery(results: ExampleResults | None, sport: str | None = None) -> list[tuple[str, str]]:
    """(path, caption) of the wrong example images, of one true class when ``sport`` is given;
    the caption names the true class and the model's top-3 with probabilities."""
    if results is None:
        return []
    items = []
    for m in results.mistakes:
        if sport in (None, "", ALL_SPORTS) or m.true == sport:
            top = ", ".join(f"{display_name(label)} {p:.0%}" for label, p in m.top)
            items.append((m.path, f"true: {display_name(m.true)} | top-3: {top}"))
    return items


def mistakes_table(results: ExampleResults | None, sport: str | None = None):
    """The mistakes ``mistakes_gallery`` shows, in the same order, as a table: the true class
    and the model's top-3 with probabilities."""
    import pandas as pd

    columns = ["true class", "1st", "2nd", "3rd"]
    rows = []
    for m in (results.mistakes if results else []):
        if sport in (None, "", ALL_SPORTS) or m.true == sport:
            top = [f"{label} ({p:.0%})" for label, p in m.top] + [""] * (TOP_K - len(m.top))
            rows.append([m.true, *top[:TOP_K]])
    return pd.DataFrame(rows, columns=columns)


def mistakes_summary(results: ExampleResults | None, name: str, progress: tuple[int, int] | None = None) -> str:
    """One line on what the browser shows for ``name`` (while it is computed: how far it is)."""
    if results is None:
        if progress:
            done, total = progress
            bar = "▰" * round(10 * done / total) + "▱" * (10 - round(10 * done / total))
            return f"⏳ **{name}**: predicting the example images in the background {bar} {done} of {total}…"
        return f"⏳ **{name}**: the example images are predicted in the background, other models first…"
    if results.error:
        return f"**{name}**: no mistakes view ({results.error})."
    if results.n == 0:
        return f"**{name}**: no example image of a class this model knows."
    wrong = results.n - results.correct
    extra = (f"; {results.unknown_classes} example(s) of classes it was not trained on are left out"
             if results.unknown_classes else "")
    return (f"**{name}** gets **{wrong} of {results.n}** example images wrong (the app's examples: "
            f"validation photos, 2 per sport){extra}.")


def mistake_sports(results: ExampleResults | None) -> list[str]:
    """The true classes that have at least one mistake (for the class filter)."""
    return sorted({m.true for m in results.mistakes}) if results else []


def write_confusion_csv(confusion: Sequence[Sequence[int]], labels: Sequence[str], dest: str | Path) -> Path:
    """The confusion matrix as CSV (rows: true class, columns: predicted), for download."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["true \\ predicted", *labels])
        for label, row in zip(labels, confusion):
            writer.writerow([label, *row])
    return dest
