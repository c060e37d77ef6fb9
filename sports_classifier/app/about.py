"""About tab: the served models, the dataset, how to train your own (``about.md``), model cards."""

from __future__ import annotations

import re
from pathlib import Path

from .. import bundle
from ..errors import BundleError
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
            lines.append(_model_line(source))
        except Exception as exc:  # shown, not raised: the About tab (and the app) must render
            lines.append(f"- **{source.name}** (`{source.location}`): cannot read the bundle: {exc}")
    models = "\n".join(lines) or "_No models configured._"
    return ABOUT_TEMPLATE.read_text(encoding="utf-8").replace("{models}", models)


def _model_line(source) -> str:
    cfg = bundle.read_config(source.location)
    metrics = bundle.read_metrics(source.location).get("valid", {})
    accuracy = metrics.get("accuracy")
    acc = (f", validation accuracy {accuracy:.1%}"
           if isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool) else "")
    arch = cfg.architecture if cfg.is_ensemble else f"`{cfg.backbone}`"
    return f"- **{source.name}**: {arch} at {cfg.image_size} px, {cfg.num_classes} classes{acc}; model card below."


def model_card_markdown(path: str | Path, *, file_url: str = "/gradio_api/file=") -> str:
    """A local bundle's model card without its YAML front matter, its pictures pointed at the
    app's file route (the bundle's picture files are in the app's ``allowed_paths``)."""
    path = Path(path)
    try:
        text = bundle.read_card(path)
    except (BundleError, OSError) as exc:  # a link out of the bundle, unreadable
        return f"_The model card of {path} cannot be shown: {exc}_"
    if text is None:
        return f"_{path} has no model card ({bundle.CARD})._"
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end != -1:
            text = text[end + 4:]

    def picture(m):
        file = bundle.member_or_none(path, m.group(2))
        return f"![{m.group(1)}]({file_url}{file.resolve()})" if file else f"_({m.group(1)}: not available)_"

    return re.sub(r"!\[([^\]]*)\]\(([^)/]+\.png)\)", picture, text).strip()


def picture_files(registry: ModelRegistry) -> list[str]:
    """The local bundles' picture files: what the app lets the browser fetch directly."""
    out = []
    for source in registry.sources:
        if not source.hub:
            for name in (bundle.CURVES, bundle.CONFUSION, bundle.SAMPLES):
                f = bundle.member_or_none(source.location, name)  # never a link out of the bundle
                if f is not None:
                    out.append(str(f.resolve()))  # Gradio compares resolved paths
    return out


def engine_markdown(registry: ModelRegistry) -> str:
    """The technical status the page header leaves out, one line per model (a list reads on a
    phone; a table does not): its state, the engine that serves it, its load time and its
    single-photo latency (median of the rounds measured)."""
    if not len(registry):
        return "_No models configured._"
    lines = []
    for name, state in registry.status().items():
        entry = registry.loaded(name)
        if entry is not None and entry.ok:
            parts = ["ready", f"`{entry.classifier.runtime}`", f"loaded in {entry.load_seconds:.1f} s"]
            if entry.latency_ms is not None:
                parts.append(f"{entry.latency_ms:.1f} ms per photo")
            lines.append(f"- **{name}**: " + " · ".join(parts))
        else:
            lines.append(f"- **{name}**: {state}")
    return "\n".join(lines)
