"""Datasets in the Kaggle layout: ``<root>/<split>/<class name>/<image>``.

Discovery: splits, labels, one DataFrame per split (images per class: ``data_summary.class_counts``). No TensorFlow:
evaluation and the app use it too (training's pipelines are in ``training.augmentation``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from .errors import DatasetLayoutError
from .images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Dataset:
    """A discovered dataset folder. ``labels`` are the class names in sorted order (class id)."""

    root: Path
    splits: dict[str, Path]
    labels: tuple[str, ...]
    skipped_files: tuple[str, ...] = field(default=())  # stray non-image files, not used

    def frame(self, split: str):
        """A DataFrame with one row per image: ``filepath``, ``label``, ``class_index``."""
        import pandas as pd

        if split not in self.splits:
            raise DatasetLayoutError(
                f"{self.root} has no {split!r} split; found: {', '.join(self.splits) or 'none'}"
            )
        index = {label: i for i, label in enumerate(self.labels)}
        rows = []
        for class_dir in sorted(p for p in self.splits[split].iterdir() if p.is_dir()):
            if class_dir.name not in index:
                continue  # a class absent from training is reported by discover()
            for path in sorted(class_dir.iterdir(), key=_natural_key):
                if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                    rows.append((str(path), class_dir.name, index[class_dir.name]))
        return pd.DataFrame(rows, columns=["filepath", "label", "class_index"])


def _natural_key(path: Path):
    # "2.jpg" before "10.jpg", as the dataset numbers its files.
    return [int(t) if t.isdigit() else t for t in _split_digits(path.name)]


def _split_digits(name: str) -> list[str]:
    import re

    return re.split(r"(\d+)", name)


def discover(root: str | Path, *, classes: Sequence[str] | None = None, train_split: str = "train") -> Dataset:
    """Find the splits and labels of a dataset folder, validating its layout.

    Raises ``DatasetLayoutError`` naming what was found and what was expected.

    >>> ds = discover("../shared/data/sports100"); len(ds.labels)
    100
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset folder not found: {root}")
    expected = (
        f"expected {root}/<split>/<class name>/<image>, with splits {', '.join(SPLITS)} "
        "(train and valid at least)"
    )
    splits = {s: root / s for s in SPLITS if (root / s).is_dir()}
    if not splits:
        found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:10]
        hint = ""
        if any((root / f).is_dir() and any(_images_in(root / f)) for f in (p.name for p in root.iterdir())):
            hint = " (it looks like a single split: point --data at its parent folder)"
        raise DatasetLayoutError(f"no split folders in {root}; found {found or 'nothing'}{hint}; {expected}")
    if train_split not in splits and classes is None:
        # Labels come from the training split; without it, use the first split present.
        train_split = next(iter(splits))

    class_sets: dict[str, set[str]] = {}
    stray: list[str] = []
    for name, folder in splits.items():
        entries = list(folder.iterdir())
        stray += [str(p) for p in entries if p.is_file()]
        dirs = [p for p in entries if p.is_dir()]
        if not dirs:
            raise DatasetLayoutError(
                f"split {folder} holds no class folders (found {len(entries)} file(s)); {expected}"
            )
        empty = sorted(p.name for p in dirs if not any(_images_in(p)))
        if empty:
            raise DatasetLayoutError(
                f"{len(empty)} class folder(s) in {folder} hold no images: {empty[:5]}; "
                "remove them or add images"
            )
        class_sets[name] = {p.name for p in dirs}
        for d in dirs:
            stray += [str(p) for p in d.iterdir() if p.is_file() and p.suffix.lower() not in IMAGE_EXTENSIONS]

    labels = sorted(class_sets[train_split])
    if classes is not None:
        missing = sorted(set(classes) - set(labels))
        if missing:
            raise DatasetLayoutError(f"requested classes not in {root}/{train_split}: {missing}")
        labels = sorted(classes)
    for name, found in class_sets.items():
        extra = sorted(found - set(class_sets[train_split]))
        if extra and classes is None:
            raise DatasetLayoutError(
                f"split {name!r} has {len(extra)} class(es) that {train_split!r} lacks: {extra[:5]}; "
                "every split must use the training split's classes"
            )
        lacking = sorted(set(labels) - found)
        if lacking and name != train_split:
            log.warning("split %r has no folder for %d class(es): %s", name, len(lacking), lacking[:5])
    if len(labels) < 2:
        raise DatasetLayoutError(f"need at least 2 classes, found {len(labels)} in {root}/{train_split}")
    if stray:
        log.warning("ignoring %d non-image file(s) in %s (first: %s)", len(stray), root, stray[0])
    return Dataset(root, splits, tuple(labels), tuple(stray))


def _images_in(folder: Path) -> Iterator[Path]:
    return (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
