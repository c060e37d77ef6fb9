"""Plain-Python handlers behind the Gradio app (``app.py`` only composes and wires them).

Nothing here imports Gradio, TensorFlow or Keras: handlers take and return plain data (PIL
images, numpy arrays, dicts, pandas DataFrames, file paths), so they are tested without a
browser and the app serves ONNX bundles without TensorFlow. Grad-CAM (``explain``) is the one
handler that needs Keras, imported when first asked.

Models come from *specs*: ``models/a,hf:user/repo@rev`` (comma-separated; a local bundle
folder, or ``hf:`` + a Hub repo id with an optional ``@revision``). ``ModelRegistry`` loads
each model once, lazily and thread-safely, and records a load failure per model so that the
others keep serving.

>>> registry = ModelRegistry(resolve_specs("models/lite0"))
>>> predict(registry, "photo.jpg", registry.names)[0].confidences
{'basketball': 0.97, ...}
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import bundle
from .errors import ImageDecodeError, SportsClassifierError

log = logging.getLogger("sports_classifier")

MODELS_ENV = "SPORTS_CLASSIFIER_MODELS"
DEFAULTS_FILE = Path(__file__).with_name("ui_defaults.json")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
TOP_K = 5
MAX_BATCH_FILES = 64
LATENCY_RUNS = 5
ALL_SPORTS = "All sports"


class UserInputError(SportsClassifierError, ValueError):
    """Something the person using the app can fix (no image, no model chosen...)."""


class ModelLoadError(SportsClassifierError, RuntimeError):
    """A model of the registry could not be loaded (the message says why)."""


# ---------------------------------------------------------------------------------------------
# Model specs


@dataclass(frozen=True)
class ModelSpec:
    """One entry of ``--models``: a local bundle folder or a Hub repo (``hf:user/repo@rev``)."""

    name: str  # shown in the UI; unique within a registry
    location: str  # folder path, or Hub repo id
    hub: bool = False
    revision: str | None = None

    @property
    def text(self) -> str:
        if self.hub:
            return f"hf:{self.location}" + (f"@{self.revision}" if self.revision else "")
        return self.location


_HUB_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def parse_specs(text: str, *, root: str | Path | None = None) -> list[ModelSpec]:
    """Parse ``"models/a,hf:user/repo@rev"``. Relative folders resolve against ``root``
    (default: the working folder). Raises ``UserInputError`` on a malformed Hub entry.

    >>> [s.name for s in parse_specs("models/lite0,hf:me/sports@v1")]
    ['lite0', 'me/sports@v1']
    """
    specs: list[ModelSpec] = []
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        if raw.startswith("hf:"):
            repo, _, rev = raw[3:].partition("@")
            if not _HUB_REPO.match(repo):
                raise UserInputError(f"bad Hub model {raw!r}: expected hf:user/repo or hf:user/repo@revision")
            specs.append(ModelSpec(name=repo + (f"@{rev}" if rev else ""), location=repo, hub=True,
                                   revision=rev or None))
        else:
            path = Path(raw).expanduser()
            if root is not None and not path.is_absolute():
                path = Path(root) / path
            specs.append(ModelSpec(name=path.name or raw, location=str(path)))
    return _unique_names(specs)


def _unique_names(specs: list[ModelSpec]) -> list[ModelSpec]:
    seen: dict[str, int] = {}
    out = []
    for spec in specs:
        n = seen.get(spec.name, 0)
        seen[spec.name] = n + 1
        out.append(spec if n == 0 else ModelSpec(f"{spec.name} ({n + 1})", spec.location, spec.hub, spec.revision))
    return out


def default_specs(models_dir: str | Path) -> list[ModelSpec]:
    """Every bundle folder in ``models_dir`` (a folder holding config.json), the one named by
    ``models_dir/DEFAULT`` first, the rest by name."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    folders = sorted(p for p in models_dir.iterdir() if p.is_dir() and (p / bundle.CONFIG).is_file())
    marker = models_dir / "DEFAULT"
    if marker.is_file():
        first = marker.read_text().strip()
        folders.sort(key=lambda p: p.name != first)  # stable: keeps the name order otherwise
    return [ModelSpec(p.name, str(p)) for p in folders]


def resolve_specs(cli_value: str | None = None, *, root: str | Path = ".",
                  env: Mapping[str, str] | None = None) -> list[ModelSpec]:
    """The models to serve: ``--models`` if given, else $SPORTS_CLASSIFIER_MODELS, else every
    bundle in ``root/models`` (models/DEFAULT first)."""
    env = os.environ if env is None else env
    text = cli_value if cli_value else env.get(MODELS_ENV, "")
    if text.strip():
        return parse_specs(text, root=root)
    return default_specs(Path(root) / "models")


# ---------------------------------------------------------------------------------------------
# Out-of-distribution threshold: chosen on valid/ by scripts/choose_threshold.py, stored in
# ui_defaults.json keyed by the bundle's weights checksum.


def choose_ood_threshold(in_scores: Sequence[float], out_scores: Sequence[float], *,
                         max_false_flag: float = 0.05,
                         in_correct: Sequence[bool] | None = None) -> dict:
    """Pick the top-probability threshold under which a photo is called "not one of the sports".

    ``in_scores``: top probabilities on the validation images (in distribution);
    ``out_scores``: top probabilities on photos that show none of the sports. A photo is
    flagged when its top probability is below the threshold. Among thresholds that flag at
    most ``max_false_flag`` of the validation images, the one with the largest Youden index
    (non-sport photos flagged minus validation images flagged) wins; ties go to the smallest
    threshold, placed midway between two observed scores so that it does not sit on one.
    Pure function: numbers in, a dict with the threshold and its justification out.

    >>> choose_ood_threshold([0.9, 0.95, 0.99, 0.6], [0.2, 0.3, 0.7], max_false_flag=0.25)["threshold"]
    0.8
    """
    ins = np.asarray(in_scores, dtype=np.float64)
    outs = np.asarray(out_scores, dtype=np.float64)
    if ins.size == 0 or outs.size == 0:
        raise ValueError("need top probabilities for both validation and non-sport images")
    if not 0.0 <= max_false_flag < 1.0:
        raise ValueError(f"max_false_flag must be in [0, 1), got {max_false_flag}")
    values = np.unique(np.concatenate([ins, outs, [0.0, 1.0]]))
    candidates = np.concatenate([[0.0], (values[:-1] + values[1:]) / 2])
    best = None
    for t in candidates:
        false_flag = float(np.mean(ins < t))
        if false_flag > max_false_flag + 1e-12:
            continue
        detect = float(np.mean(outs < t))
        score = detect - false_flag
        if best is None or score > best[0] + 1e-12:
            best = (score, float(t), false_flag, detect)
    _, t, false_flag, detect = best
    result = {
        "threshold": round(t, 6),
        "valid_flagged": round(false_flag, 4),
        "non_sport_flagged": round(detect, 4),
        "youden_j": round(detect - false_flag, 4),
        "max_false_flag": max_false_flag,
        "n_valid": int(ins.size),
        "n_non_sport": int(outs.size),
        "valid_top_prob_quantiles": {q: round(float(np.quantile(ins, float(q))), 4) for q in ("0.01", "0.05", "0.5")},
        "non_sport_top_prob_quantiles": {q: round(float(np.quantile(outs, float(q))), 4) for q in ("0.5", "0.95", "0.99")},
    }
    if in_correct is not None:
        correct = np.asarray(in_correct, dtype=bool)
        flagged = ins < t
        result["valid_flagged_that_were_wrong"] = int(np.sum(flagged & ~correct))
        result["valid_flagged_total"] = int(np.sum(flagged))
    return result


def model_key(config) -> str | None:
    """How ui_defaults.json recognises a model: the SHA-256 of its weights (else its ONNX)."""
    sums = getattr(config, "files_sha256", {}) or {}
    return sums.get(bundle.WEIGHTS) or sums.get(bundle.ONNX)


def read_defaults(path: str | Path = DEFAULTS_FILE) -> dict:
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from None


def record_threshold(path: str | Path, config, choice: dict, *, model: str) -> dict:
    """Store a threshold chosen by ``choose_ood_threshold`` for the model with ``config``."""
    path = Path(path)
    data = read_defaults(path) if path.is_file() else {}
    data.setdefault("about", "Defaults of the Gradio app. ood_thresholds: per model (keyed by the "
                    "SHA-256 of its model.weights.h5), the top-probability threshold under which "
                    "the app calls a photo out of distribution, chosen on valid/ by "
                    "scripts/choose_threshold.py; each entry says how and what it achieves.")
    data.setdefault("ood_thresholds", {})
    data["ood_thresholds"][model_key(config)] = {
        "model": model,
        "backbone": config.architecture,
        "classes": config.num_classes,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **choice,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return data


# ---------------------------------------------------------------------------------------------
# The registry


@dataclass
class LoadedModel:
    spec: ModelSpec
    classifier: Any = None  # sports_classifier.Classifier
    error: str | None = None
    load_seconds: float | None = None
    latency_ms: float | None = None  # median single-image prediction measured at load
    threshold: dict | None = None  # the ui_defaults.json record, or None

    @property
    def ok(self) -> bool:
        return self.classifier is not None


class ModelRegistry:
    """The app's models: parsed up front, each loaded once on first use (thread-safe).

    A model that fails to load keeps its error message (``status``/``get`` report it) and is
    not retried; the others still serve.
    """

    def __init__(self, specs: Iterable[ModelSpec], *, defaults_file: str | Path | None = DEFAULTS_FILE,
                 runtime: str = "auto", measure_latency: bool = True):
        self.specs = list(specs)
        self._by_name = {s.name: s for s in self.specs}
        self._loaded: dict[str, LoadedModel] = {}
        self._locks = {s.name: threading.Lock() for s in self.specs}
        self._defaults_file = defaults_file
        self._runtime = runtime
        self._measure_latency = measure_latency

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def __len__(self) -> int:
        return len(self.specs)

    def spec(self, name: str) -> ModelSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise UserInputError(f"unknown model {name!r}; this app serves: {', '.join(self.names) or 'none'}") from None

    def entry(self, name: str) -> LoadedModel:
        """The load record of ``name``, loading it first if needed (never raises on a failed load)."""
        spec = self.spec(name)
        done = self._loaded.get(name)
        if done is not None:
            return done
        with self._locks[name]:
            done = self._loaded.get(name)
            if done is None:
                done = self._load(spec)
                self._loaded[name] = done
        return done

    def get(self, name: str):
        """The loaded ``Classifier``; ``ModelLoadError`` if it could not be loaded."""
        entry = self.entry(name)
        if not entry.ok:
            raise ModelLoadError(f"model {name} could not be loaded: {entry.error}")
        return entry.classifier

    def loaded(self, name: str) -> LoadedModel | None:
        """The load record if the model was already asked for, without loading it."""
        self.spec(name)
        return self._loaded.get(name)

    def status(self) -> dict[str, str]:
        out = {}
        for name in self.names:
            entry = self._loaded.get(name)
            if entry is None:
                out[name] = "not loaded yet" if not self._locks[name].locked() else "loading"
            elif entry.ok:
                out[name] = f"ready ({entry.classifier.runtime}, loaded in {entry.load_seconds:.1f} s)"
            else:
                out[name] = f"failed to load: {entry.error}"
        return out

    def warm_up(self, *, background: bool = True) -> threading.Thread | None:
        """Load every model (in a daemon thread by default), e.g. right after the server starts."""

        def run():
            for name in self.names:
                self.entry(name)

        if not background:
            run()
            return None
        thread = threading.Thread(target=run, name="model-warm-up", daemon=True)
        thread.start()
        return thread

    def _load(self, spec: ModelSpec) -> LoadedModel:
        from .classifier import Classifier

        start = time.perf_counter()
        try:
            if spec.hub:
                clf = Classifier.from_hub(spec.location, revision=spec.revision, runtime=self._runtime)
            else:
                clf = Classifier.from_pretrained(Path(spec.location), runtime=self._runtime)
        except ModuleNotFoundError as exc:
            msg = f"{exc}: install the missing package (pip install 'sports_classifier[train]' for Keras bundles)"
            log.warning("model %s: %s", spec.name, msg)
            return LoadedModel(spec, error=msg)
        except Exception as exc:  # any failure is reported in the UI; other models keep serving
            msg = f"{type(exc).__name__}: {exc}"
            log.warning("model %s failed to load: %s", spec.name, msg)
            return LoadedModel(spec, error=msg)
        seconds = time.perf_counter() - start
        entry = LoadedModel(spec, classifier=clf, load_seconds=seconds)
        if self._measure_latency:
            entry.latency_ms = _measure_latency(clf)
        if self._defaults_file is not None:
            entry.threshold = read_defaults(self._defaults_file).get("ood_thresholds", {}).get(model_key(clf.config))
        log.info("model %s ready (%s) in %.1f s", spec.name, clf.runtime, seconds)
        return entry


def _latency_image():
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))


def _measure_latency(clf, runs: int = LATENCY_RUNS) -> float:
    """Median milliseconds of one single-image prediction (224x224 RGB in, preprocessing
    included), after one warm-up call."""
    image = _latency_image()
    clf.predict_proba(image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        clf.predict_proba(image)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


# ---------------------------------------------------------------------------------------------
# Predict tab


@dataclass
class ModelResult:
    """One model's answer for one image."""

    name: str
    confidences: dict[str, float] = field(default_factory=dict)  # top-k, for gr.Label
    seconds: float | None = None
    out_of_distribution: bool | None = None  # None: no threshold recorded for this model
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
        parts = [f"{_ms(self.seconds)}"] if self.seconds is not None else []
        if self.out_of_distribution:
            top = self.top
            parts.append(
                f"⚠️ **This photo may not show any of the sports this model knows**: its top "
                f"probability {top[1]:.0%} is under {self.threshold:.0%}, the threshold chosen on "
                "the validation images for this model."
            )
        elif self.out_of_distribution is None:
            parts.append("(no out-of-distribution threshold recorded for this model)")
        return " · ".join(parts)


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def _require_image(image):
    if image is None:
        raise UserInputError("no image: upload, paste or take a photo first")
    if isinstance(image, (list, tuple)):
        raise UserInputError("give one image here; use the Batch tab for several")
    return image


def _decode_message(exc: Exception, source) -> str:
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
    from .images import load_rgb

    image = _require_image(image)
    names = list(registry.names if model_names is None else model_names)
    if not names:
        raise UserInputError("choose at least one model")
    try:
        rgb = load_rgb(image)  # decode once, share between models
    except ImageDecodeError as exc:
        raise UserInputError(f"cannot read this image: {_decode_message(exc, image)}") from None
    results = []
    for name in names:
        entry = registry.entry(name)
        if not entry.ok:
            results.append(ModelResult(name, error=f"model failed to load: {entry.error}"))
            continue
        clf = entry.classifier
        start = time.perf_counter()
        probs = clf.predict_proba(rgb)[0]
        seconds = time.perf_counter() - start
        order = np.argsort(-probs, kind="stable")[:top_k]
        conf = {clf.labels[i]: float(probs[i]) for i in order}
        threshold = entry.threshold["threshold"] if entry.threshold else None
        ood = None if threshold is None else bool(float(probs[order[0]]) < threshold)
        results.append(ModelResult(name, conf, seconds, ood, threshold))
    return results


def status_markdown(registry: ModelRegistry) -> str:
    if not len(registry):
        return ("**No models.** Put a bundle folder in `models/`, or start the app with "
                "`python app.py --models PATH` (or set $SPORTS_CLASSIFIER_MODELS).")
    return "Models: " + " · ".join(f"**{n}**: {s}" for n, s in registry.status().items())


# ---------------------------------------------------------------------------------------------
# Grad-CAM


def explain(registry: ModelRegistry, image, model_name: str | None = None):
    """Grad-CAM overlay (PIL image) and a caption for ``image`` under one model.

    Imports Keras the first time (seconds); see ``sports_classifier.explain``.
    """
    from .explain import explain_image

    image = _require_image(image)
    name = model_name or (registry.names[0] if len(registry) else None)
    if name is None:
        raise UserInputError("no model to explain with")
    try:
        clf = registry.get(name)
    except ModelLoadError as exc:
        raise UserInputError(str(exc)) from None
    try:
        overlay, label, prob = explain_image(clf, image)
    except ImageDecodeError as exc:
        raise UserInputError(f"cannot read this image: {_decode_message(exc, image)}") from None
    except ModuleNotFoundError as exc:  # the serving install (requirements.txt) has no TensorFlow
        raise UserInputError(
            f"Explain needs TensorFlow and Keras ({exc}); install them with "
            "pip install 'sports_classifier[train]' and restart the app"
        ) from None
    caption = (f"Grad-CAM of **{name}** for its top class **{label}** ({prob:.0%}): warm colours "
               "mark the regions that raised that class's score most.")
    return overlay, caption


# ---------------------------------------------------------------------------------------------
# Examples tab


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
                if f.suffix.lower() in IMAGE_SUFFIXES]
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
    clf = _get_or_user_error(registry, model_name)
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
    probs = clf.predict_proba([e.path for e in picks])
    rows, items = [], []
    for e, p in zip(picks, probs):
        i = int(np.argmax(p))
        pred, prob = clf.labels[i], float(p[i])
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
        from .images import load_rgb
        from .plots import samples_png

        png = samples_png([np.asarray(load_rgb(r["path"])) for r in rows], [r["true"] for r in rows],
                          [r["predicted"] for r in rows])
        out = Path(out_dir) / f"grid-{model_name.replace('/', '_')}-{seed}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(png)
        grid["image"] = str(out)
    return grid


def _get_or_user_error(registry: ModelRegistry, name: str | None):
    if not name:
        raise UserInputError("choose a model")
    try:
        return registry.get(name)
    except ModelLoadError as exc:
        raise UserInputError(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# Compare tab: everything read from the bundles' own files


_param_cache: dict[tuple[str, float], int | None] = {}


def count_parameters(weights_file: str | Path) -> int | None:
    """Number of stored weights (trainable and BatchNorm statistics) in a Keras
    ``.weights.h5`` file, read with h5py; None if h5py or the file is missing."""
    path = Path(weights_file)
    if not path.is_file():
        return None
    key = (str(path.resolve()), path.stat().st_mtime)
    if key in _param_cache:
        return _param_cache[key]
    try:
        import h5py
    except ImportError:
        return None
    total = 0

    def visit(_, obj):
        nonlocal total
        if isinstance(obj, h5py.Dataset):
            total += int(obj.size)

    with h5py.File(path, "r") as fh:
        fh.visititems(visit)
    _param_cache[key] = total
    return total


COMPARE_COLUMNS = ["model", "backbone", "image size", "classes", "valid images", "accuracy",
                   "top-5 accuracy", "macro F1", "loss", "weights MB", "ONNX MB", "int8 ONNX MB", "parameters",
                   "ms / image", "engine", "status"]


def _mb(path: Path) -> float | None:
    return round(path.stat().st_size / 2**20, 2) if path.is_file() else None


def compare_rows(registry: ModelRegistry, split: str = "valid") -> list[dict]:
    """One row per model from its bundle's config.json, metrics.json (``split``), file sizes,
    the parameter count stored in its weights file and the latency measured at load."""
    rows = []
    for name in registry.names:
        entry = registry.entry(name)
        row = {c: None for c in COMPARE_COLUMNS} | {"model": name}
        if not entry.ok:
            row["status"] = f"failed to load: {entry.error}"
            rows.append(row)
            continue
        clf = entry.classifier
        path = Path(clf.path)
        m = bundle.read_metrics(path).get(split, {})
        row.update({
            "backbone": clf.config.architecture,
            "image size": clf.config.image_size,
            "classes": clf.config.num_classes,
            "valid images": m.get("n"),
            "accuracy": m.get("accuracy"),
            "top-5 accuracy": m.get("top5_accuracy"),
            "macro F1": m.get("macro_f1"),
            "loss": m.get("loss"),
            "weights MB": _mb(path / bundle.WEIGHTS),
            "ONNX MB": _mb(path / bundle.ONNX),
            "int8 ONNX MB": _mb(path / bundle.ONNX_INT8),
            "parameters": (clf.config.training or {}).get("parameters") or count_parameters(path / bundle.WEIGHTS),
            "ms / image": None if entry.latency_ms is None else round(entry.latency_ms, 1),
            "engine": clf.runtime,
            "status": "ready",
        })
        rows.append(row)
    return rows


def compare_table(registry: ModelRegistry, split: str = "valid", *, digits: int = 4):
    """``compare_rows`` as a DataFrame, metric values rounded to ``digits`` for display."""
    import pandas as pd

    frame = pd.DataFrame(compare_rows(registry, split), columns=COMPARE_COLUMNS)
    for col in ("accuracy", "top-5 accuracy", "macro F1", "loss"):
        frame[col] = pd.to_numeric(frame[col]).round(digits)
    for col in ("image size", "classes", "valid images", "parameters"):
        frame[col] = pd.to_numeric(frame[col]).astype("Int64")  # stays integer beside a failed row
    return frame


SPEED_NOTE = (f"`ms / image`: median of {LATENCY_RUNS} single-image predictions (a 224x224 photo in, "
              "preprocessing included, after one warm-up) measured on this server when each model "
              "was loaded, with the engine shown. Accuracy, top-5, macro F1 and loss are read from "
              "each bundle's `metrics.json` (validation split); parameters are the count recorded in "
              "`config.json` if any, else counted in `model.weights.h5` (BatchNorm statistics included).")


def bundle_pictures(registry: ModelRegistry, filename: str) -> list[tuple[str, str]]:
    """(path, model name) for one picture file (``curves.png``, ``confusion_matrix.png``,
    ``samples.png``) of every loaded model that has it."""
    out = []
    for name in registry.names:
        entry = registry.entry(name)
        if entry.ok and (Path(entry.classifier.path) / filename).is_file():
            out.append((str(Path(entry.classifier.path) / filename), name))
    return out


def disagreement_table(registry: ModelRegistry, split: str = "valid", *, top: int = 15):
    """Per-class accuracy (recall) of each model on ``split``, the classes where the models
    differ most first (``spread``: max - min across the models that know the class). With one
    model, or models that share no class, the weakest classes instead."""
    import pandas as pd

    per_model = {}
    for name in registry.names:
        entry = registry.entry(name)
        if entry.ok:
            per_class = bundle.read_metrics(entry.classifier.path).get(split, {}).get("per_class", {})
            if per_class:
                per_model[name] = {label: s.get("recall") for label, s in per_class.items()}
    if not per_model:
        return pd.DataFrame(columns=["class"])
    frame = pd.DataFrame(per_model)
    frame.index.name = "class"
    models = list(per_model)
    frame["mean"] = frame[models].mean(axis=1)
    shared = frame[models].notna().sum(axis=1) >= 2  # only these can be disagreed on
    if len(models) > 1 and shared.any():
        frame = frame[shared].copy()
        frame["spread"] = frame[models].max(axis=1) - frame[models].min(axis=1)
        frame = frame.sort_values(["spread", "mean"], ascending=[False, True], kind="stable")
    else:
        frame = frame.sort_values("mean", kind="stable")
    return frame.drop(columns="mean").head(top).round(4).reset_index()


# ---------------------------------------------------------------------------------------------
# Batch tab


BATCH_COLUMNS = ["file", "model", "prediction", "probability", "top-5", "out of distribution", "error"]


def batch_predict(registry: ModelRegistry, files: Sequence[str | Path] | None,
                  model_names: Sequence[str] | None = None, *, out_dir: str | Path | None = None,
                  top_k: int = TOP_K):
    """Predict many image files. Returns (DataFrame with one row per file and model, path of
    the same table as CSV). Unreadable files get a row with the error; others still run."""
    import pandas as pd

    from .images import try_preprocess_many

    files = [str(f) for f in (files or [])]
    if not files:
        raise UserInputError("upload one or more images first")
    if len(files) > MAX_BATCH_FILES:
        raise UserInputError(f"{len(files)} files: at most {MAX_BATCH_FILES} at a time")
    names = list(registry.names if model_names is None else model_names)
    if not names:
        raise UserInputError("choose at least one model")
    rows = []
    for name in names:
        entry = registry.entry(name)
        if not entry.ok:
            rows += [dict(file=Path(f).name, model=name, error=f"model failed to load: {entry.error}") for f in files]
            continue
        clf = entry.classifier
        pixels, kept, failures = try_preprocess_many(files, clf.config.image_size)
        probs = clf.engine(pixels) if len(kept) else np.zeros((0, clf.config.num_classes))
        threshold = entry.threshold["threshold"] if entry.threshold else None
        results: dict[int, dict] = {i: dict(file=Path(files[i]).name, model=name,
                                            error=msg.replace(files[i], Path(files[i]).name))
                                    for i, msg in failures}
        for i, p in zip(kept, probs):
            order = np.argsort(-p, kind="stable")[:top_k]
            top = float(p[order[0]])
            results[i] = dict(
                file=Path(files[i]).name, model=name, prediction=clf.labels[order[0]],
                probability=round(top, 4),
                **{"top-5": "; ".join(f"{clf.labels[j]} {p[j]:.3f}" for j in order)},
                **{"out of distribution": None if threshold is None else bool(top < threshold)},
            )
        rows += [results[i] for i in range(len(files))]
    frame = pd.DataFrame(rows, columns=BATCH_COLUMNS)
    out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="sports-batch-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "predictions.csv"
    frame.to_csv(csv_path, index=False, quoting=csv.QUOTE_MINIMAL)
    return frame, str(csv_path)


# ---------------------------------------------------------------------------------------------
# About tab


HUB_URL = "https://huggingface.co/"


def about_markdown(registry: ModelRegistry) -> str:
    """What the models are, the dataset, how to train your own, links to the model cards.
    Reads only config.json of local bundles (no model is loaded)."""
    lines = []
    for spec in registry.specs:
        if spec.hub:
            rev = f" (revision `{spec.revision}`)" if spec.revision else ""
            lines.append(f"- **{spec.name}**: Hub model [{spec.location}]({HUB_URL}{spec.location}){rev}; "
                         "its model card is on that page.")
            continue
        try:
            cfg = bundle.read_config(spec.location)
            metrics = bundle.read_metrics(spec.location).get("valid", {})
        except Exception as exc:  # shown, not raised: the About tab must render
            lines.append(f"- **{spec.name}** (`{spec.location}`): cannot read the bundle: {exc}")
            continue
        acc = f", validation accuracy {metrics['accuracy']:.1%}" if "accuracy" in metrics else ""
        arch = cfg.architecture if cfg.is_ensemble else f"`{cfg.backbone}`"
        lines.append(f"- **{spec.name}**: {arch} at {cfg.image_size} px, {cfg.num_classes} classes{acc}; "
                     "model card below.")
    models = "\n".join(lines) or "_No models configured._"
    return f"""## Sports classifier

Upload a photo and the models name the sport it shows, among the 100 sports of the
**100 Sports Image Classification** dataset (Gerald Piosenka, Kaggle, CC0 1.0): 13,492
training photos, 500 validation and 500 test photos, 224x224 px.

### The models

{models}

Each model is an ImageNet backbone (EfficientNet-Lite, EfficientNet or ResNet50) with a
global-average-pooling + dropout + softmax head trained by transfer learning with Keras 3, or an
ensemble that averages several such networks inside one (different backbones make different
mistakes), saved as a self-describing bundle (config, weights, ONNX export, metrics, curves,
model card) and served here through ONNX Runtime when the bundle has an ONNX export. Every
number in the **Compare** tab is read from the bundles' own files.

A photo is flagged as probably **not one of the sports** when the model's top probability is
under a threshold chosen for that model on the validation images against a set of non-sport
photos (`scripts/choose_threshold.py`; stored in `sports_classifier/ui_defaults.json`).
**Explain** draws a Grad-CAM heatmap: the gradient of the top class's score with respect to the
backbone's last feature map, averaged per channel, weights that map (for an ensemble, the
average of its members' maps).

### Train your own

```bash
pip install "sports_classifier[train]"
sports-classifier train --data PATH/TO/sports --backbone efficientnet_lite0 --out models/mine
python app.py --models models/mine
```

or in Python: `Classifier.from_pretrained("models/mine").predict("photo.jpg")`.
"""


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
    for spec in registry.specs:
        if not spec.hub:
            for name in (bundle.CURVES, bundle.CONFUSION, bundle.SAMPLES):
                f = Path(spec.location) / name
                if f.is_file():
                    out.append(str(f.resolve()))
    return out
