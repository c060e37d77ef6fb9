"""Datasets in the Kaggle layout: ``<root>/<split>/<class name>/<image>``.

Discovery (splits, labels, one DataFrame per split, the class distribution), batching of
decoded images through the shared preprocessing in ``images``, the training-only augmentation
as Keras preprocessing layers, and a ``tf.data`` pipeline for end-to-end training.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import DatasetLayoutError
from .images import try_preprocess_many

log = logging.getLogger("sports_classifier")

SPLITS = ("train", "valid", "test")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
CSV_NAME = "sports.csv"


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

    def distribution(self, split: str):
        """Images per class in ``split`` (the notebook's class distribution), in label order."""
        counts = self.frame(split)["label"].value_counts()
        return counts.reindex(list(self.labels), fill_value=0).rename("images")

    def csv(self):
        """The optional ``sports.csv`` (class id, filepaths, labels, data set), or None."""
        import pandas as pd

        path = self.root / CSV_NAME
        return pd.read_csv(path) if path.is_file() else None


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


# ---------------------------------------------------------------------------------------------
# Decoded batches (numpy): the single decode path for caching, evaluation and tf.data.


@dataclass
class SkippedImages:
    """Counts unreadable images instead of crashing halfway through an epoch."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str, reason: str) -> None:
        self.items.append((path, reason))

    def warn(self, what: str) -> None:
        if self.items:
            log.warning(
                "skipped %d unreadable image(s) in %s; first: %s", len(self.items), what, self.items[0][1]
            )

    def __len__(self) -> int:
        return len(self.items)


def iter_batches(
    paths: Sequence[str], image_size: int, batch_size: int, *, skipped: SkippedImages | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(pixels, indices)``: decoded float32 batches and the positions they hold.

    Unreadable files are left out of the batch and recorded in ``skipped``.
    """
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        pixels, kept, failures = try_preprocess_many(chunk, image_size)
        for i, reason in failures:
            if skipped is not None:
                skipped.add(chunk[i], reason)
        if len(kept):
            yield pixels, np.asarray(kept, dtype=np.int64) + start


def augmentation(*, zoom: float, shift: float, horizontal_flip: bool, seed: int):
    """The notebook's training-only augmentation (zoom, flip, shift) as Keras layers."""
    import keras

    layers = []
    if horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if shift:
        layers.append(keras.layers.RandomTranslation(shift, shift, fill_mode="nearest", seed=seed + 1))
    if zoom:
        layers.append(keras.layers.RandomZoom(zoom, zoom, fill_mode="nearest", seed=seed + 2))
    return keras.Sequential(layers, name="augmentation")


def make_tf_dataset(
    frame, *, image_size: int, batch_size: int = 32, training: bool = False, seed: int = 42,
    augment_layers=None, skipped: SkippedImages | None = None,
):
    """A ``tf.data`` pipeline of ``(pixels, class_index)`` batches.

    Decoding goes through the shared preprocessing (so train and serve see the same pixels);
    in training the order is reshuffled every epoch and ``augment_layers`` are applied.
    """
    import tensorflow as tf

    paths = frame["filepath"].tolist()
    labels = frame["class_index"].to_numpy(np.int64)
    epoch = [0]

    def generate():
        order = list(range(len(paths)))
        if training:
            random.Random(seed + epoch[0]).shuffle(order)
            epoch[0] += 1
        ordered = [paths[i] for i in order]
        for pixels, idx in iter_batches(ordered, image_size, batch_size, skipped=skipped):
            yield pixels, labels[np.asarray(order)[idx]]

    ds = tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec((None, image_size, image_size, 3), tf.float32),
            tf.TensorSpec((None,), tf.int64),
        ),
    )
    if training and augment_layers is not None:
        ds = ds.map(lambda x, y: (augment_layers(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
