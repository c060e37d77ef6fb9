"""Examples tab: the example photos (``examples/<sport>/<file>``), filtered by sport, and the
notebook's grid of predictions on them with the wrong ones marked."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UserInputError
from ..images import IMAGE_EXTENSIONS
from .registry import ModelRegistry

ALL_SPORTS = "All sports"


@dataclass(frozen=True)
class Example:
    path: str
    label: str


def list_examples(examples_dir: str | Path, sport: str | None = None) -> list[Example]:
    """Example images as ``examples/<label>/<file>``, sorted by label then file name;
    only ``sport`` when given (``None`` or "All sports": every one)."""
    root = Path(examples_dir)
    if not root.is_dir():
        return []
    out = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if sport not in (None, "", ALL_SPORTS) and class_dir.name != sport:
            continue
        out += [Example(str(f), class_dir.name) for f in sorted(class_dir.iterdir())
                if f.suffix.lower() in IMAGE_EXTENSIONS]
    return out


def example_sports(examples_dir: str | Path) -> list[str]:
    return sorted({e.label for e in list_examples(examples_dir)})


def gallery_items(examples: Sequence[Example], *, one_per_class: bool = False) -> list[tuple[str, str]]:
    """(path, caption) pairs for gr.Gallery."""
    if one_per_class:
        seen, kept = set(), []
        for e in examples:
            if e.label not in seen:
                seen.add(e.label)
                kept.append(e)
        examples = kept
    return [(e.path, e.label) for e in examples]


def example_grid(registry: ModelRegistry, model_name: str, examples: Sequence[Example], *,
                 n: int = 20, seed: int = 0, out_dir: str | Path | None = None) -> dict:
    """The notebook's "predictions on test images" grid: ``n`` examples drawn with ``seed``
    (different classes first), predicted by one model.

    Returns ``items`` [(path, caption)] (wrong ones captioned with ✗ and both labels),
    ``rows`` (list of dicts: path, true, predicted, probability, correct), ``summary``
    (markdown naming the wrong ones) and, with ``out_dir``, ``image``: the notebook-style
    PNG grid (titles "true / pred", wrong ones in red) written there.
    """
    if not examples:
        raise UserInputError("no example images found")
    clf = registry.get_or_user_error(model_name)
    rng = random.Random(seed)
    by_class: dict[str, list[Example]] = {}
    for e in examples:
        by_class.setdefault(e.label, []).append(e)
    classes = list(by_class)
    rng.shuffle(classes)
    picks: list[Example] = []
    for round_ in range(max(len(v) for v in by_class.values())):  # one per class, then a 2nd...
        for c in classes:
            if round_ < len(by_class[c]) and len(picks) < n:
                picks.append(by_class[c][round_])
    rows, items = [], []
    for e, prediction in zip(picks, clf.classify([e.path for e in picks], top_k=1)):
        pred, prob = prediction.label, prediction.probability
        ok = pred == e.label
        rows.append({"path": e.path, "true": e.label, "predicted": pred, "probability": prob, "correct": ok})
        caption = f"✓ {pred} ({prob:.0%})" if ok else f"✗ WRONG — true: {e.label} · predicted: {pred} ({prob:.0%})"
        items.append((e.path, caption))
    right = sum(r["correct"] for r in rows)
    wrong = [f"{r['true']} → predicted *{r['predicted']}*" for r in rows if not r["correct"]]
    summary = (f"**{model_name}**: {right} of {len(rows)} correct"
               + (f"; wrong (in red): {', '.join(wrong)}" if wrong else "")
               + ". The examples come from the validation split.")
    grid = {"items": items, "rows": rows, "summary": summary}
    if out_dir is not None:
        from ..images import load_rgb
        from ..plots import samples_png

        png = samples_png([np.asarray(load_rgb(r["path"])) for r in rows], [r["true"] for r in rows],
                          [r["predicted"] for r in rows])
        out = Path(out_dir) / f"grid-{model_name.replace('/', '_')}-{seed}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(png)
        grid["image"] = str(out)
    return grid
