"""The data the served models learned from, as the notebook showed it: the class distribution
(read from what each bundle's training record holds, not from a dataset folder the server may
not have) and a grid of sample photos (the app's example images, from the same dataset's
validation split). Nothing here imports Gradio.
"""

from __future__ import annotations

from pathlib import Path
from statistics import median

from ..data_summary import recorded_counts
from .compare import chart_spec, draw_specs
from .examples import list_examples
from .registry import ModelRegistry

SAMPLES = 24


def recorded_data(registry: ModelRegistry) -> list[dict]:
    """One entry per distinct training record among the loaded models: ``dataset``,
    ``models`` (names), ``data`` (the record: image totals, description) and ``counts``
    (``{split: {class: images}}``, {} for bundles written before counts were recorded)."""
    found: list[dict] = []
    for name in registry.names:
        entry = registry.entry(name)
        if not entry.ok:
            continue
        # config.json is checked for types only down to "training is an object": what it holds
        # is the bundle writer's, so a malformed record is an empty one, not a failed tab
        training = entry.classifier.config.training
        training = training if isinstance(training, dict) else {}
        data = training.get("data")
        data = {k: v for k, v in data.items() if isinstance(v, (str, int, float))} if isinstance(data, dict) else {}
        counts = recorded_counts(training)
        key = (data.get("dataset"), data.get("train_images"), data.get("valid_images"), repr(counts))
        for item in found:
            if item["key"] == key:
                item["models"].append(name)
                break
        else:
            found.append({"key": key, "dataset": data.get("dataset") or "unknown", "models": [name],
                          "data": data, "counts": counts})
    return found


def data_markdown(records: list[dict]) -> str:
    """What each training record says, in words; notes the bundles that lack class counts."""
    if not records:
        return "_No loaded model records its training data._"
    lines = []
    for r in records:
        d = r["data"]
        parts = [f"{d['train_images']} training images" if "train_images" in d else None,
                 f"{d['valid_images']} validation images" if "valid_images" in d else None,
                 d.get("description")]
        text = ", ".join(p for p in parts if p) or "no image counts recorded"
        who = ", ".join(f"`{m}`" for m in r["models"])
        lines.append(f"- **{r['dataset']}** ({who}): {text}.")
        if "train" in r["counts"]:
            values = sorted(r["counts"]["train"].values())
            lines[-1] += (f" Training images per class: min {values[0]}, median {median(values):g}, "
                          f"max {values[-1]}.")
        else:
            lines.append("  This bundle predates per-class counts: retrain, or record them with "
                         "`sports-classifier data --data DIR --record-in BUNDLE`.")
    return "\n".join(lines)


def distribution_spec(records: list[dict], out_dir: str | Path, split: str = "train") -> dict | None:
    """The class-distribution chart of the first record with per-class counts for ``split``."""
    for r in records:
        counts = r["counts"].get(split)
        if counts:
            title = f"{r['dataset']}: {split} images per class (as recorded in {', '.join(r['models'])})"
            return chart_spec("distribution", [counts, title], out_dir)
    return None


def distribution_chart(records: list[dict], out_dir: str | Path, split: str = "train") -> str | None:
    """The class-distribution PNG (drawn once), or None when no bundle records class counts."""
    spec = distribution_spec(records, out_dir, split)
    return draw_specs([spec])[0] if spec else None


def sample_items(examples_dir: str | Path, n: int = SAMPLES) -> list[tuple[str, str]]:
    """(path, class) for ``n`` sample photos spread over the classes (one per class, every
    ``k``-th class), for a gallery."""
    first = {}
    for e in list_examples(examples_dir):
        first.setdefault(e.label, e)
    chosen = list(first.values())
    if len(chosen) > n:
        step = len(chosen) / n
        chosen = [chosen[int(i * step)] for i in range(n)]
    return [(e.path, e.label) for e in chosen]
