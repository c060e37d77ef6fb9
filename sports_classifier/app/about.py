"""About tab: the served models, the dataset, how to train your own (``about.md``), model cards."""

from __future__ import annotations

import re
from pathlib import Path

from .. import bundle
from .registry import ModelRegistry


HUB_URL = "https://huggingface.co/"
ABOUT_TEMPLATE = Path(__file__).with_name("about.md")  # the prose, with {models} filled in


def about_markdown(registry: ModelRegistry) -> str:
    """What the models are, the dataset, how to train your own, links to the model cards.
    Reads only config.json of local bundles (no model is loaded)."""
    lines = []
    for source in registry.sources:
        if source.hub:
            rev = f" (revision `{source.revision}`)" if source.revision else ""
            lines.append(f"- **{source.name}**: Hub model [{source.location}]({HUB_URL}{source.location}){rev}; "
                         "its model card is on that page.")
            continue
        try:
            cfg = bundle.read_config(source.location)
            metrics = bundle.read_metrics(source.location).get("valid", {})
        except Exception as exc:  # shown, not raised: the About tab must render
            lines.append(f"- **{source.name}** (`{source.location}`): cannot read the bundle: {exc}")
            continue
        acc = f", validation accuracy {metrics['accuracy']:.1%}" if "accuracy" in metrics else ""
        arch = cfg.architecture if cfg.is_ensemble else f"`{cfg.backbone}`"
        lines.append(f"- **{source.name}**: {arch} at {cfg.image_size} px, {cfg.num_classes} classes{acc}; "
                     "model card below.")
    models = "\n".join(lines) or "_No models configured._"
    return ABOUT_TEMPLATE.read_text(encoding="utf-8").replace("{models}", models)


def model_card_markdown(path: str | Path, *, file_url: str = "/gradio_api/file=") -> str:
    """A local bundle's model card without its YAML front matter, its pictures pointed at the
    app's file route (the bundle's picture files are in the app's ``allowed_paths``)."""
    path = Path(path)
    card = path / bundle.CARD
    if not card.is_file():
        return f"_{path} has no model card ({bundle.CARD})._"
    text = card.read_text()
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end != -1:
            text = text[end + 4:]
    return re.sub(r"!\[([^\]]*)\]\(([^)/]+\.png)\)",
                  lambda m: f"![{m.group(1)}]({file_url}{(path / m.group(2)).resolve()})", text).strip()


def picture_files(registry: ModelRegistry) -> list[str]:
    """The local bundles' picture files: what the app lets the browser fetch directly."""
    out = []
    for source in registry.sources:
        if not source.hub:
            for name in (bundle.CURVES, bundle.CONFUSION, bundle.SAMPLES):
                f = Path(source.location) / name
                if f.is_file():
                    out.append(str(f.resolve()))
    return out
