"""The app's models: parsed up front from model sources, each loaded once on first use.

A model that fails to load, or loads but cannot predict, keeps its error message (``status`` and
``get`` report it) and is not retried; the others keep serving. Nothing here imports Gradio.

>>> registry = ModelRegistry(served_models("models/lite0"))
>>> registry.get("lite0").classify("photo.jpg").label
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import ModelLoadError, UserInputError, install_extra
from ..hub import ModelSource

log = logging.getLogger(__name__)

LATENCY_RUNS = 5
# Seconds one run of a served network may take; a model over it is stopped and taken out of
# service (a graph can loop for ever: it would hold a request slot for good).
TIME_LIMIT_ENV = "SPORTS_CLASSIFIER_MODEL_TIMEOUT"
TIME_LIMIT = 30.0


@dataclass
class LoadedModel:
    source: ModelSource
    classifier: object = None  # sports_classifier.Classifier
    error: str | None = None
    load_seconds: float | None = None
    latency_ms: float | None = None  # median single-image prediction over the rounds measured
    latency_rounds: list[float] = field(default_factory=list)  # each round's median, ms

    @property
    def latency_range(self) -> tuple[float, float] | None:
        """(fastest, slowest) round: one run on a busy machine can be off by 2x."""
        return (min(self.latency_rounds), max(self.latency_rounds)) if self.latency_rounds else None

    @property
    def ok(self) -> bool:
        return self.classifier is not None

    @property
    def name(self) -> str:
        return self.source.name


class ModelRegistry:
    """The app's models, each loaded once on first use (thread-safe)."""

    def __init__(self, sources: Iterable[ModelSource], *, runtime: str = "auto", measure_latency: bool = True,
                 time_limit: float | None = None):
        self.sources = list(sources)
        # every run of every model, its warm-up included, is stopped after this many seconds
        self.time_limit = time_limit if time_limit is not None else float(os.environ.get(TIME_LIMIT_ENV) or TIME_LIMIT)
        self._by_name = {s.name: s for s in self.sources}
        self._loaded: dict[str, LoadedModel] = {}
        self._locks = {s.name: threading.Lock() for s in self.sources}
        self._runtime = runtime
        self._measure_latency = measure_latency

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    def __len__(self) -> int:
        return len(self.sources)

    def source(self, name: str) -> ModelSource:
        try:
            return self._by_name[name]
        except KeyError:
            raise UserInputError(f"unknown model {name!r}; this app serves: {', '.join(self.names) or 'none'}") from None

    def entry(self, name: str) -> LoadedModel:
        """The load record of ``name``, loading it first if needed (never raises on a failed load)."""
        source = self.source(name)
        done = self._loaded.get(name)
        if done is not None:
            return done
        with self._locks[name]:
            done = self._loaded.get(name)
            if done is None:
                done = self._load(source)
                self._loaded[name] = done
        return done

    def get(self, name: str):
        """The loaded ``Classifier``; ``ModelLoadError`` if it could not be loaded."""
        entry = self.entry(name)
        if not entry.ok:
            raise ModelLoadError(f"model {name} could not be loaded: {entry.error}")
        return entry.classifier

    def get_or_user_error(self, name: str | None):
        """``get`` for handlers: a missing choice or a failed model is something to show the user."""
        if not name:
            raise UserInputError("choose a model")
        try:
            return self.get(name)
        except ModelLoadError as exc:
            raise UserInputError(str(exc)) from None

    def mark_failed(self, name: str, error: str) -> str:
        """Record that a loaded model failed on a decoded image: it is reported as failed from
        now on and not asked again (every later request would fail the same way). Returns the
        message kept."""
        entry = self.entry(name)
        if entry.ok:
            log.warning("model %s failed to predict and is taken out of service: %s", name, error)
            self._loaded[name] = LoadedModel(entry.source, error=f"failed to predict: {error}",
                                             load_seconds=entry.load_seconds)
        return self._loaded[name].error

    def answering(self, names: Iterable[str]) -> list[str]:
        """``names`` less the models known to have failed (to load, or to answer in time): what
        a page ticks by default, so that no request waits on a model that does not answer."""
        return [n for n in names if (entry := self._loaded.get(n)) is None or entry.ok]

    def loaded(self, name: str) -> LoadedModel | None:
        """The load record if the model was already asked for, without loading it."""
        self.source(name)
        return self._loaded.get(name)

    def serving(self) -> dict[str, str]:
        """Which engine serves each loaded model and why (``Classifier.serving_summary``)."""
        return {name: entry.classifier.serving_summary for name, entry in self._loaded.items() if entry.ok}

    def status(self) -> dict[str, str]:
        out = {}
        for name in self.names:
            entry = self._loaded.get(name)
            if entry is None:
                out[name] = "not loaded yet" if not self._locks[name].locked() else "loading"
            elif entry.ok:
                clf = entry.classifier
                out[name] = f"ready ({clf.runtime}, {clf.serving_note}; loaded in {entry.load_seconds:.1f} s)"
            else:
                out[name] = f"failed to load: {entry.error}"
        return out

    def warm_up(self, *, background: bool = True) -> threading.Thread | None:
        """Load every model (in a daemon thread by default), e.g. right after the server starts."""

        def run():  # one thread per model: a slow or hanging model holds back no other
            loaders = [threading.Thread(target=self.entry, args=(name,), name=f"load-{name}", daemon=True)
                       for name in self.names]
            for loader in loaders:
                loader.start()
            for loader in loaders:
                loader.join()

        if not background:
            run()
            return None
        thread = threading.Thread(target=run, name="model-warm-up", daemon=True)
        thread.start()
        return thread

    def _load(self, source: ModelSource) -> LoadedModel:
        from ..classifier import Classifier

        start = time.perf_counter()
        try:
            clf = Classifier.from_source(source, runtime=self._runtime)
            clf.time_limit = self.time_limit  # the warm-up below, and every request after it
            seconds = time.perf_counter() - start
            # One prediction proves the model serves (a network whose input disagrees with its
            # config, or that never finishes, fails here, once, instead of on every request).
            clf.predict_proba(_latency_image())
            with _MEASURING:  # models load side by side, but are timed one at a time
                latency = _measure_latency(clf, runs=LATENCY_RUNS if self._measure_latency else 0)
        except ModuleNotFoundError as exc:
            msg = f"{exc}: install the missing package (for Keras bundles: {install_extra('train')})"
            log.warning("model %s: %s", source.name, msg)
            return LoadedModel(source, error=msg)
        except Exception as exc:  # any failure is reported in the UI; other models keep serving
            msg = f"{type(exc).__name__}: {exc}"
            log.warning("model %s failed to load: %s", source.name, msg)
            return LoadedModel(source, error=public_message(msg, source))
        log.info("model %s ready (%s) in %.1f s", source.name, clf.runtime, seconds)
        if not self._measure_latency:
            return LoadedModel(source, clf, load_seconds=seconds)
        return LoadedModel(source, clf, load_seconds=seconds, latency_ms=latency, latency_rounds=[latency])

    def measure_again(self, rounds: int = 1, pause: float = 0.5) -> None:
        """Measure each loaded model's latency ``rounds`` more times, ``pause`` seconds apart
        (e.g. once every model is loaded and the machine is quieter): Compare then shows the
        range over the rounds and their median."""
        if not self._measure_latency:
            return
        for i in range(rounds):
            if i:
                time.sleep(pause)
            for name in self.names:
                entry = self._loaded.get(name)
                if entry is None or not entry.ok:
                    continue
                try:
                    entry.latency_rounds.append(_measure_latency(entry.classifier))
                except Exception as exc:  # it predicted at load; a failure now is reported, not raised
                    log.warning("model %s: measuring its latency again failed: %s", name, exc)
                    continue
                entry.latency_ms = float(np.median(entry.latency_rounds))


def public_message(text: str, source: ModelSource) -> str:
    """A load error as everyone may read it (the status line is public): the model's folder and
    the Hub cache are named by the model's name and ``<Hub cache>``, not by their server paths."""
    if not source.hub:
        folder = Path(source.location)
        for shown in sorted({str(folder.resolve()), str(folder)}, key=len, reverse=True):
            if "/" in shown:  # a path, not a word that also occurs in the message
                text = text.replace(shown, source.name)
    try:
        from huggingface_hub import constants

        text = text.replace(str(Path(constants.HF_HUB_CACHE).resolve()), "<Hub cache>")
        text = text.replace(str(constants.HF_HUB_CACHE), "<Hub cache>")
    except ImportError:
        pass
    return text


_MEASURING = threading.Lock()


def _latency_image():
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))


def _measure_latency(clf, runs: int = LATENCY_RUNS) -> float:
    """Median milliseconds of one single-image prediction (224x224 RGB in, preprocessing
    included), after one warm-up call (which also proves the model predicts)."""
    image = _latency_image()
    clf.predict_proba(image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        clf.predict_proba(image)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times)) if times else 0.0
