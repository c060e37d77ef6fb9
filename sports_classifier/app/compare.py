"""Compare tab: every number read from the bundles' own files (config.json, metrics.json, file
sizes) plus the latency measured on this server when each model loaded."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import atomic, bundle
from .registry import LATENCY_RUNS, ModelRegistry


log = logging.getLogger(__name__)

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


# What people compare first (visible at 1280 px), then the details.
LEADING_COLUMNS = ["model", "accuracy", "top-5 accuracy", "macro F1", "ms / image", "size MB"]
COMPARE_COLUMNS = LEADING_COLUMNS + ["architecture", "image size", "classes", "valid images", "loss",
                                     "weights MB", "ONNX MB", "int8 ONNX MB", "parameters", "engine", "status"]


def short_architecture(config) -> str:
    """``lite0+lite1+lite2`` for an ensemble of EfficientNet-Lite0/1/2, ``lite0`` for one; the
    full text (``config.architecture``) is in About and under the table."""
    return "+".join(b.removeprefix("efficientnet_") for b in config.backbones)


def _mb(folder: Path, name: str) -> float | None:
    file = bundle.member_or_none(folder, name)
    return round(file.stat().st_size / 2**20, 2) if file else None


def _number(value):
    """A metric as shown: numbers only (a bundle's metrics.json is not trusted to hold them)."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


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
        try:
            row.update(_model_row(entry, split))
        except Exception as exc:  # one bundle's ill-typed file costs its own row, not the table
            log.warning("compare: model %s: %s", name, exc)
            row["status"] = f"ready, but its bundle files cannot be read: {exc}"
        rows.append(row)
    return rows


def _model_row(entry, split: str) -> dict:
    clf = entry.classifier
    path = Path(clf.path)
    m = bundle.read_metrics(path).get(split, {})
    training = clf.config.training if isinstance(clf.config.training, dict) else {}
    weights = bundle.member_or_none(path, bundle.WEIGHTS)
    return {
        "architecture": short_architecture(clf.config),
        "image size": clf.config.image_size,
        "classes": clf.config.num_classes,
        "valid images": _number(m.get("n")),
        "accuracy": _number(m.get("accuracy")),
        "top-5 accuracy": _number(m.get("top5_accuracy")),
        "macro F1": _number(m.get("macro_f1")),
        "loss": _number(m.get("loss")),
        "weights MB": _mb(path, bundle.WEIGHTS),
        "ONNX MB": _mb(path, bundle.ONNX),
        "int8 ONNX MB": _mb(path, bundle.ONNX_INT8),
        "parameters": _number(training.get("parameters")) or (count_parameters(weights) if weights else None),
        "ms / image": None if entry.latency_ms is None else round(entry.latency_ms, 1),
        "size MB": _mb(path, clf.model_file),  # the file its engine serves (bundle.serving_file)
        "engine": clf.runtime,
        "status": "ready",
    }


def compare_table(registry: ModelRegistry, split: str = "valid", *, digits: int = 4):
    """``compare_rows`` as a DataFrame, metric values rounded to ``digits`` for display."""
    import pandas as pd

    frame = pd.DataFrame(compare_rows(registry, split), columns=COMPARE_COLUMNS)
    for col in ("accuracy", "top-5 accuracy", "macro F1", "loss"):
        frame[col] = pd.to_numeric(frame[col]).round(digits)
    for col in ("image size", "classes", "valid images", "parameters"):
        frame[col] = pd.to_numeric(frame[col]).astype("Int64")  # stays integer beside a failed row
    return frame


SPEED_NOTE = (f"`ms / image`: the median over three rounds of {LATENCY_RUNS} single-image predictions each "
              "(a 224x224 photo in, preprocessing included, after one warm-up), measured on this server "
              "when each model loaded and twice more once all were loaded; in brackets the fastest and "
              "slowest round (a busy machine moves one round by 2x). The engine is shown; `size MB`: the "
              "model file that engine serves. Accuracy, top-5, macro F1 and loss are read from "
              "each bundle's `metrics.json` (validation split); parameters are the count recorded in "
              "`config.json` if any, else counted in `model.weights.h5` (BatchNorm statistics included).")


def bundle_pictures(registry: ModelRegistry, filename: str) -> list[tuple[str, str]]:
    """(path, model name) for one picture file (``curves.png``, ``confusion_matrix.png``,
    ``samples.png``) of every loaded model that has it."""
    out = []
    for name in registry.names:
        entry = registry.entry(name)
        file = bundle.member_or_none(entry.classifier.path, filename) if entry.ok else None
        if file is not None:  # never a link out of the bundle: the app serves this file
            out.append((str(file), name))
    return out


def disagreement_table(registry: ModelRegistry, split: str = "valid", *, top: int = 15):
    """Per-class accuracy (recall) of each model on ``split``, the classes where the models
    differ most first (``spread``: max - min across the models that know the class). With one
    model, or models that share no class, the weakest classes instead."""
    import pandas as pd

    per_model = {}
    for name in registry.names:
        entry = registry.entry(name)
        if not entry.ok:
            continue
        try:
            per_class = bundle.read_metrics(entry.classifier.path).get(split, {}).get("per_class", {})
            recalls = {label: _number(s.get("recall")) for label, s in per_class.items()
                       if isinstance(s, dict)}
        except Exception as exc:  # an ill-typed metrics.json leaves this model out, not the table
            log.warning("compare: per-class scores of %s: %s", name, exc)
            continue
        if recalls:
            per_model[name] = recalls
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


# -- the accuracy-vs-speed chart and readable curves (matplotlib PNGs, cached) -------------------

# The original notebook's test accuracies: published there, not measured here.
REPORTED_ELSEWHERE = (
    ("EfficientNetB0: 97% test accuracy (notebook; reported elsewhere, not measured here)", 0.97),
    ("ResNet50: 88.7% test accuracy (notebook; reported elsewhere, not measured here)", 0.887),
)


def speed_points(registry: ModelRegistry, split: str = "valid") -> tuple[list[tuple[str, float, float]], list[str]]:
    """(name, ms per image, accuracy) for every loaded model with both numbers, and the names
    of models that failed to load or lack one of them (with the reason), in registry order."""
    points, missing = [], []
    for row in compare_rows(registry, split):
        if row["status"] != "ready":
            missing.append(f"{row['model']} (failed to load)")
        elif row["accuracy"] is None or row["ms / image"] is None:
            missing.append(f"{row['model']} (no {'accuracy' if row['accuracy'] is None else 'speed'})")
        else:
            points.append((row["model"], float(row["ms / image"]), float(row["accuracy"])))
    return points, missing


def chart_spec(kind: str, args: list, out_dir: str | Path) -> dict:
    """A chart to draw: ``kind`` (``speed``, ``curves``, ``distribution``), its JSON-able
    arguments, and the file it goes to, named after both (the same chart, the same file)."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps([kind, args], sort_keys=True).encode()).hexdigest()[:16]
    return {"kind": kind, "args": args, "dest": str(Path(out_dir) / f"{kind}-{digest}.png")}


def draw_png(kind: str, args: list) -> bytes:
    """The PNG bytes of one chart spec (matplotlib)."""
    from .. import plots

    if kind == "speed":
        points, references, failed = args
        return plots.speed_accuracy_png([tuple(p) for p in points], [tuple(r) for r in references], failed=failed)
    if kind == "curves":  # args: the bundle folder, its history's version
        history = bundle.read_history(args[0])
        if history is None:
            raise bundle.BundleError(f"{args[0]} has no {bundle.HISTORY} any more")
        return plots.curves_png(history)
    if kind == "distribution":
        counts, title = args
        return plots.class_distribution_png(counts, title=title)
    raise ValueError(f"unknown chart kind {kind!r}")


def draw_specs(specs: list[dict]) -> list[str]:
    """Draw every spec whose file is missing (atomically); the files, in order. The app runs
    this in a low-priority child process at start-up (``python -m sports_classifier.app.draw``)
    so that drawing never competes with the first predictions."""
    out = []
    for spec in specs:
        dest = Path(spec["dest"])
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(dest, draw_png(spec["kind"], spec["args"]))
        out.append(str(dest))
    return out


def _drawn(spec: dict) -> str:
    return draw_specs([spec])[0]


def speed_spec(registry: ModelRegistry, out_dir: str | Path, split: str = "valid") -> dict:
    points, missing = speed_points(registry, split)
    return chart_spec("speed", [[list(p) for p in points], [list(r) for r in REPORTED_ELSEWHERE], missing], out_dir)


def speed_chart(registry: ModelRegistry, out_dir: str | Path, split: str = "valid") -> str:
    """The accuracy-vs-speed PNG for the loaded models (re-drawn only when a number changes)."""
    return _drawn(speed_spec(registry, out_dir, split))


def curves_spec(registry: ModelRegistry, name: str, out_dir: str | Path) -> dict | None:
    """The curves chart of a loaded model with a ``history.csv`` (None otherwise)."""
    entry = registry.entry(name)
    if not entry.ok:
        return None
    folder = Path(entry.classifier.path)
    history = bundle.member_or_none(folder, bundle.HISTORY)  # never a link out of the bundle
    if history is None:
        return None
    # the history's modification time is in the name: a retrained bundle gets a new picture
    stat = history.stat()
    return chart_spec("curves", [str(folder.resolve()), stat.st_mtime_ns, stat.st_size], out_dir)


def curves_picture(registry: ModelRegistry, name: str, out_dir: str | Path) -> str | None:
    """A loaded model's training curves drawn from its ``history.csv`` (stages as shaded spans,
    one legend); the bundle's own ``curves.png`` when it has no history; None if neither."""
    spec = curves_spec(registry, name, out_dir)
    if spec is not None:
        try:
            return _drawn(spec)
        except Exception as exc:  # one bundle's unreadable history costs its own chart, not the tab
            log.warning("compare: training curves of %s: %s", name, exc)
            return None
    entry = registry.entry(name)
    picture = bundle.member_or_none(entry.classifier.path, bundle.CURVES) if entry.ok else None
    return str(picture) if picture is not None else None


def architectures_markdown(registry: ModelRegistry) -> str:
    """The full architecture of each model (the table shows the short form)."""
    lines = []
    for name in registry.names:
        entry = registry.entry(name)
        if entry.ok:
            cfg = entry.classifier.config
            lines.append(f"- **{name}** (`{short_architecture(cfg)}`): {cfg.architecture}, {cfg.image_size} px input")
    return "\n".join(lines)


CHART_NOTE = ("**Reading the chart.** One point per model served here: validation accuracy (from its "
              "bundle) against milliseconds per image measured on this server (the median of three "
              "rounds; the table gives their range). Red: the "
              "Pareto front, the models no other model beats on both speed and accuracy. Grey lines: "
              "the original notebook's published **test** accuracies (EfficientNetB0 97%, ResNet50 88.7%), "
              "reported elsewhere and not measured here, on another split: a landmark, not a result.")


PERCENT_COLUMNS = ("accuracy", "top-5 accuracy", "macro F1")
MB_COLUMNS = ("size MB", "weights MB", "ONNX MB", "int8 ONNX MB")


def latency_text(entry) -> str | None:
    """``30 (28-77)``: the median over the rounds measured, and the fastest and slowest round."""
    if entry is None or not entry.ok or entry.latency_ms is None:
        return None
    digits = 1 if entry.latency_ms < 10 else 0
    if len(entry.latency_rounds) < 2:
        return f"{entry.latency_ms:.{digits}f}"
    lo, hi = entry.latency_range
    return f"{entry.latency_ms:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


def page_view(frame, registry: ModelRegistry):
    """The metrics table as the page shows it: percentages, parameters in millions, and each
    model's latency with its range over the rounds measured. The values stay the numbers
    (the API and the CSV-minded get those); only their display changes."""
    import pandas as pd

    def percent(v):
        return "" if pd.isna(v) else f"{v:.1%}"

    def megabytes(v):
        return "" if pd.isna(v) else f"{v:.1f}"

    def millions(v):
        return "" if pd.isna(v) else f"{v / 1e6:.1f} M"

    styler = frame.style.hide(axis="index").format(
        {**{c: percent for c in PERCENT_COLUMNS}, **{c: megabytes for c in MB_COLUMNS}, "parameters": millions,
         "loss": lambda v: "" if pd.isna(v) else f"{v:.3f}"}, na_rep="")
    for i, name in enumerate(frame["model"]):
        text = latency_text(registry.loaded(name)) if name in registry.names else None
        if text is not None:
            styler = styler.format(lambda _, t=text: t, subset=pd.IndexSlice[[frame.index[i]], ["ms / image"]])
    return styler
