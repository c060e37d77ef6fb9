""""What it knows": the sports the served model knows, each with an example photo and the
model's accuracy on that sport's validation photos. Nothing here imports Gradio."""

from __future__ import annotations

from pathlib import Path

from .. import bundle
from . import examples
from .registry import ModelRegistry
from .sport_names import display_name, matches


def _bundle_folder(registry: ModelRegistry, name: str) -> Path | None:
    """The bundle folder of ``name`` without loading it (a Hub model only once it is loaded)."""
    source = registry.source(name)
    if not source.hub:
        return Path(source.location)
    entry = registry.loaded(name)
    return Path(entry.classifier.path) if entry is not None and entry.ok else None


def class_accuracy(registry: ModelRegistry, name: str | None, split: str = "valid") -> dict[str, float]:
    """``{label: recall}`` of model ``name`` on ``split`` from its metrics.json ({} if unknown)."""
    folder = _bundle_folder(registry, name) if name else None
    if folder is None:
        return {}
    try:
        per_class = bundle.read_metrics(folder).get(split, {}).get("per_class", {})
    except Exception:  # no or unreadable metrics: the list still shows the sports
        return {}
    return {label: float(s["recall"]) for label, s in per_class.items()
            if isinstance(s, dict) and isinstance(s.get("recall"), (int, float))}


def sports_items(registry: ModelRegistry, examples_dir: str | Path, query: str = "") -> list[tuple[str, str]]:
    """(photo, caption) per sport matching ``query``, for a gallery: "archery · 100%" (the
    first served model's validation accuracy on that sport)."""
    name = registry.names[0] if len(registry) else None
    accuracy = class_accuracy(registry, name)
    items = []
    for path, label in examples.gallery_items(examples.list_examples(examples_dir), one_per_class=True):
        if matches(label, query):
            score = f" · {accuracy[label]:.0%}" if label in accuracy else ""
            items.append((path, f"{display_name(label)}{score}"))
    return items


def sports_note(registry: ModelRegistry, shown: int, total: int) -> str:
    name = registry.names[0] if len(registry) else None
    which = f" of **{name}** on each sport's validation photos" if name else ""
    return f"{shown} of {total} sports. The percentage is the accuracy{which}."
