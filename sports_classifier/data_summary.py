"""What a dataset folder holds, the way the notebook opened: images per split and per class
(min / median / max, the smallest classes), the files that are not used and why, and the class
distribution chart. Also the class counts training records in a bundle, so that the app can
show the data a model learned from without the dataset folder.

No TensorFlow; reads file names and sizes only (no image is decoded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .datasets import discover
from .errors import UserInputError
from .images import IMAGE_EXTENSIONS

DEFAULT_SPLITS = ("train", "valid")  # test/ is held out: counted only when asked for


@dataclass
class SplitCounts:
    """Images per class in one split, in label order."""

    name: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return int(sum(self.counts.values()))

    def stats(self) -> dict[str, float]:
        values = np.array(list(self.counts.values()) or [0])
        return {"min": int(values.min()), "median": float(np.median(values)), "max": int(values.max())}

    def smallest(self, k: int = 5) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda kv: (kv[1], kv[0]))[:k]


@dataclass
class DataSummary:
    root: Path
    labels: tuple[str, ...]
    splits: list[SplitCounts]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why it is not used)
    not_read: list[str] = field(default_factory=list)  # split folders present but not asked for


def skip_reason(path: Path, split_folder: Path) -> str | None:
    """Why an entry of a split is not used as an image, or None if it is one."""
    if path.parent == split_folder:
        return "a file outside any class folder"
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image file ({path.suffix or 'no extension'})"
    if path.stat().st_size == 0:
        return "an empty file (cannot be decoded)"
    return None


def summarize(root: str | Path, splits: Sequence[str] = DEFAULT_SPLITS, *,
              max_per_class: int | None = None) -> DataSummary:
    """Count images per class in each of ``splits`` (those present) of a Kaggle-layout folder.
    ``max_per_class`` caps the training split's counts, as training's option of that name does
    (the first images of each class in name order)."""
    dataset = discover(root)
    wanted = [s for s in splits if s in dataset.splits]
    if not wanted:
        raise UserInputError(f"{root} has none of the splits {', '.join(splits)}; found {', '.join(dataset.splits)}")
    out = DataSummary(Path(root), dataset.labels, [],
                      not_read=[s for s in dataset.splits if s not in wanted])
    for split in wanted:
        folder = dataset.splits[split]
        counts = {label: 0 for label in dataset.labels}
        for entry in sorted(folder.iterdir()):
            if entry.is_file():
                out.skipped.append((str(entry), skip_reason(entry, folder) or "?"))
                continue
            if not entry.is_dir():
                continue
            for path in sorted(entry.iterdir()):
                if not path.is_file():
                    continue
                reason = skip_reason(path, folder)
                if reason:
                    out.skipped.append((str(path), reason))
                elif entry.name in counts:
                    counts[entry.name] += 1
        if max_per_class and split == "train":
            counts = {label: min(n, max_per_class) for label, n in counts.items()}
        out.splits.append(SplitCounts(split, counts))
    return out


def summary_lines(summary: DataSummary, *, smallest: int = 5, skipped: int = 10) -> list[str]:
    """The summary for a terminal."""
    lines = [f"dataset: {summary.root} ({len(summary.labels)} classes)"]
    for s in summary.splits:
        st = s.stats()
        small = ", ".join(f"{label} {n}" for label, n in s.smallest(smallest))
        lines.append(f"{s.name}: {s.total} images; per class min {st['min']} / median {st['median']:g} / "
                     f"max {st['max']}; smallest: {small}")
    for name in summary.not_read:
        lines.append(f"{name}: not read (held out; pass --splits to count it)")
    if summary.skipped:
        reasons: dict[str, int] = {}
        for _, why in summary.skipped:
            reasons[why] = reasons.get(why, 0) + 1
        lines.append(f"skipped {len(summary.skipped)} file(s): " +
                     "; ".join(f"{n} {why}" for why, n in sorted(reasons.items(), key=lambda kv: -kv[1])))
        lines += [f"  {path}: {why}" for path, why in summary.skipped[:skipped]]
        if len(summary.skipped) > skipped:
            lines.append(f"  ... and {len(summary.skipped) - skipped} more")
    else:
        lines.append("skipped: none")
    return lines


def class_counts(frame, labels: Sequence[str]) -> dict[str, int]:
    """Images per class of a split's DataFrame (``label`` column), every label present, in
    label order: what training records in the bundle (``training.data.class_counts``)."""
    found = frame["label"].value_counts().to_dict() if len(frame) else {}
    return {label: int(found.get(label, 0)) for label in labels}


def recorded_counts(training: Mapping | None) -> dict[str, dict[str, int]]:
    """``{split: {class: images}}`` a bundle's training record holds; {} for bundles written
    before class counts were recorded (or a malformed record)."""
    data = (training or {}).get("data") or {}
    counts = data.get("class_counts") if isinstance(data, Mapping) else None
    if not isinstance(counts, Mapping):
        return {}
    out = {}
    for split, per_class in counts.items():
        if isinstance(per_class, Mapping) and all(isinstance(v, int) for v in per_class.values()):
            out[str(split)] = {str(k): int(v) for k, v in per_class.items()}
    return out


def record_counts(bundle_path: str | Path, summary: DataSummary) -> dict:
    """Write ``summary``'s class counts into an older bundle's training record, after checking
    that this is the data it was trained on (same classes, same image totals as recorded)."""
    from . import bundle

    config = bundle.read_config(bundle_path)
    training = dict(config.training or {})
    data = dict(training.get("data") or {})
    by_split = {s.name: s for s in summary.splits}
    problems = []
    if tuple(config.labels) != tuple(summary.labels):
        problems.append("its classes differ from this dataset's")
    for split, key in (("train", "train_images"), ("valid", "valid_images")):
        if key in data and split in by_split and by_split[split].total != data[key]:
            problems.append(f"it records {data[key]} {split} images, this folder has {by_split[split].total}")
        if split not in by_split:
            problems.append(f"this summary has no {split} split")
    if problems:
        raise UserInputError(f"not recording class counts in {bundle_path}: " + "; ".join(problems))
    data["class_counts"] = {s.name: dict(s.counts) for s in summary.splits if s.name in ("train", "valid")}
    training["data"] = data
    bundle.update_config(bundle_path, training=training)
    return data["class_counts"]
