"""Predict tab: each chosen model's top-k for one photo, the time it took, the out-of-distribution
note, and Explain (a class-activation map, computed without TensorFlow)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import ImageDecodeError, UnreadablePhotoError, UserInputError, install_extra
from .registry import ModelRegistry
from .sport_names import display_name

TOP_K = 5
TOP_CLASS = "its top class"  # the "class to explain" choice that means: whatever the model ranks first


@dataclass
class ModelResult:
    """One model's answer for one image."""

    name: str
    confidences: dict[str, float] = field(default_factory=dict)  # top-k, for gr.Label
    seconds: float | None = None
    out_of_distribution: bool | None = None  # None: the model has no threshold
    threshold: float | None = None
    error: str | None = None

    @property
    def top(self) -> tuple[str, float] | None:
        if not self.confidences:
            return None
        label = max(self.confidences, key=self.confidences.get)
        return label, self.confidences[label]

    @property
    def note(self) -> str:
        """A short markdown line: time taken, out-of-distribution warning, or the error."""
        if self.error:
            return f"**Error:** {self.error}"
        parts = [f"{ms_text(self.seconds)}"] if self.seconds is not None else []
        if self.out_of_distribution:
            top, threshold = percent_pair(self.top[1], self.threshold)
            parts.append(
                f"⚠️ **This photo may not show any of the sports this model knows**: its top "
                f"probability {top} is under {threshold}, the threshold chosen on "
                "the validation images for this model."
            )
        elif self.out_of_distribution is None:
            parts.append("(no out-of-distribution threshold recorded for this model)")
        return " · ".join(parts)


def percent_pair(value: float, threshold: float) -> tuple[str, str]:
    """``value`` and ``threshold`` as percentages with just enough decimals that the text agrees
    with the comparison (never "78% is under 78%")."""
    for digits in (0, 1, 2):
        a, b = f"{value:.{digits}%}", f"{threshold:.{digits}%}"
        if a != b:
            return a, b
    return f"{value:.3%}", f"{threshold:.3%}"


def ms_text(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def require_image(image):
    if image is None:
        raise UserInputError("no image: upload, paste or take a photo first")
    if isinstance(image, (list, tuple)):
        raise UserInputError("give one image here; use the Batch tab for several")
    return image


def decode_message(exc: Exception, source) -> str:
    """The decode error with a file named by its name only: an upload's server-side path
    (``/tmp/gradio/<hash>/photo.jpg``) means nothing to the person who sent it."""
    text = str(exc)
    if isinstance(source, (str, os.PathLike)):
        text = text.replace(str(source), Path(source).name)
    return text


def predict(registry: ModelRegistry, image, model_names: Sequence[str] | None = None, *,
            top_k: int = TOP_K) -> list[ModelResult]:
    """Predict ``image`` (path, PIL image, array, bytes) with each named model (default: all).

    Never raises for a model that fails: its ``ModelResult.error`` says why. Raises
    ``UserInputError`` when there is no image, no model, or the image cannot be read.
    """
    from ..images import load_rgb

    image = require_image(image)
    names = list(registry.names if model_names is None else model_names)
    if not names:
        raise UserInputError("choose at least one model")
    try:
        rgb = load_rgb(image)  # decode once, share between models
    except ImageDecodeError as exc:
        raise UnreadablePhotoError(f"cannot read this image: {decode_message(exc, image)}") from None
    results = []
    for name in names:
        entry = registry.entry(name)
        if not entry.ok:
            results.append(ModelResult(name, error=f"model failed to load: {entry.error}"))
            continue
        clf = entry.classifier
        start = time.perf_counter()
        try:
            prediction = clf.classify(rgb, top_k=top_k)
        except Exception as exc:  # the image decoded, so the model is at fault: this one only
            error = registry.mark_failed(name, f"{type(exc).__name__}: {exc}")
            results.append(ModelResult(name, error=f"model failed: {error}"))
            continue
        seconds = time.perf_counter() - start
        threshold = clf.ood_threshold
        results.append(ModelResult(name, dict(prediction.top), seconds,
                                   None if threshold is None else prediction.ood, threshold))
    return results


def status_markdown(registry: ModelRegistry) -> str:
    """One line in plain words for a visitor; which engine serves each model, and load times,
    are in the About tab (``about.engine_markdown``)."""
    if not len(registry):
        return ("**No models.** Set `SPORTS_CLASSIFIER_MODELS` to the models to serve, comma-separated "
                "`hf:user/repo[@revision]` or bundle folders (on a Hugging Face Space: Settings -> "
                "Variables and secrets; or build the Space folder with `sports-classifier space --models "
                "user/repo`, whose `space_config.json` names them), start the app with "
                "`python app.py --models PATH`, or put a bundle folder in `models/`.")
    states = registry.status()
    failed = [n for n, s in states.items() if s.startswith("failed")]
    ready = [n for n, s in states.items() if s.startswith("ready")]
    waiting = len(states) - len(failed) - len(ready)
    count = f"{len(states)} model{'s' if len(states) > 1 else ''}"
    if waiting:
        text = f"Getting ready: loading {count} ({len(ready)} ready)…"
    elif ready:
        text = f"Ready: {count if not failed else f'{len(ready)} of {count}'} can name the sport in your photo."
    else:
        text = "No model could be loaded."
    if failed:
        text += " " + ", ".join(f"**{n}**" for n in failed) + " failed to load (details in About)."
    return text


def explain(registry: ModelRegistry, image, model_name: str | None = None, label: str | None = None):
    """Class-activation overlay (PIL image) and a caption for ``image`` under one model, for
    ``label`` (default: the model's top class)."""
    image = require_image(image)
    name = model_name or (registry.names[0] if len(registry) else None)
    if name is None:
        raise UserInputError("no model to explain with")
    clf = registry.get_or_user_error(name)
    label = None if label in (None, "", TOP_CLASS) else label
    try:
        overlay, label_shown, prob = clf.explain(image, label=label)
    except ImageDecodeError as exc:
        raise UnreadablePhotoError(f"cannot read this image: {decode_message(exc, image)}") from None
    except ModuleNotFoundError as exc:  # a Keras-served bundle on the serving install
        raise UserInputError(
            f"this model has no ONNX export with class maps, and explaining it with Keras needs "
            f"TensorFlow ({exc}): run `sports-classifier export --model BUNDLE`, or "
            f"{install_extra('train')}, and restart the app"
        ) from None
    which = "the class" if label else "its top class"
    shown = f"{prob:.0%}" if prob >= 0.005 else "under 1%"
    caption = (f"Class activation map of **{name}** for {which} **{display_name(label_shown)}** ({shown}): "
               "warm colours mark the regions that raised that class's score most.")
    return overlay, caption


def class_choices(registry: ModelRegistry, model_name: str | None,
                  results: Sequence[ModelResult] = ()) -> list[tuple[str, str]]:
    """(shown, label) pairs for "which class to explain": the model's top class first, then
    the classes it ranked for this photo, then the rest by name."""
    choices = [(TOP_CLASS, TOP_CLASS)]
    entry = registry.loaded(model_name) if model_name in registry.names else None
    labels = list(entry.classifier.config.labels) if entry is not None and entry.ok else []
    ranked = next((list(r.confidences) for r in results if r.name == model_name), [])
    for label in ranked + sorted(set(labels) - set(ranked), key=display_name):
        choices.append((display_name(label), label))
    return choices
