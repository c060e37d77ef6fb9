"""The notebook's pictures with matplotlib (Agg, no display): curves, confusion matrix,
sample grids. Each function returns PNG bytes or writes a PNG file."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, thread-safe

    return Figure(figsize=(width, height), dpi=100)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def stage_spans(stages: Sequence[str]) -> list[tuple[str, int, int]]:
    """(stage, first epoch, last epoch), 1-based, for each run of equal consecutive stage names
    (an ensemble's history repeats ``member:head``, ``member:fine-tune`` per member)."""
    spans: list[tuple[str, int, int]] = []
    for i, stage in enumerate(stages, start=1):
        if spans and spans[-1][0] == stage:
            spans[-1] = (stage, spans[-1][1], i)
        else:
            spans.append((stage, i, i))
    return spans


_STAGE_COLOURS = ("#dbe9f6", "#fde4cf", "#dcf2dc", "#eee0f5", "#fbe0e6", "#e8e8e8", "#fff5c2", "#d9f1f1")


def curves_png(history) -> bytes:
    """Accuracy and loss per epoch, train vs validation, each training stage as a shaded span;
    one legend under both panels (lines and stages), so no label sits on another."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    spans = stage_spans([str(s) for s in history["stage"].tolist()]) if "stage" in history else []
    colours: dict[str, str] = {}
    for stage, _, _ in spans:
        colours.setdefault(stage, _STAGE_COLOURS[len(colours) % len(_STAGE_COLOURS)])
    styles = {"": ("-", "C1", "train"), "val_": ("--", "C0", "validation")}
    handles = [Line2D([], [], ls=ls, color=c, label=label) for ls, c, label in styles.values()]
    handles += [Patch(color=c, label=f"stage: {s}") for s, c in colours.items()]
    rows = (len(handles) + 3) // 4
    fig = _figure(11, 4 + 0.25 * rows)
    axes = fig.subplots(1, 2)
    epochs = np.arange(1, len(history) + 1)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for stage, first, last in spans:
            ax.axvspan(first - 0.5, last + 0.5, color=colours[stage], lw=0, zorder=0)
        for prefix, (ls, colour, _) in styles.items():
            col = prefix + metric
            if col in history:
                ax.plot(epochs, history[col], ls, color=colour, zorder=2)
        ax.set_xlim(0.5, len(history) + 0.5)
        ax.set_xlabel("epoch" + (" (stages in training order)" if len(spans) > 1 else ""))
        ax.set_title(metric)
        ax.grid(alpha=0.3, zorder=1)
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)
    fig.subplots_adjust(bottom=0.12 + 0.07 * rows, wspace=0.2)
    return _png(fig)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats, as (cost, score): lower cost and higher
    score are better; a point is dominated when another is at least as good on both and
    strictly better on one. Ordered by increasing cost."""
    front = []
    for i, (c, s) in enumerate(points):
        if not any(c2 <= c and s2 >= s and (c2 < c or s2 > s) for j, (c2, s2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


FRONT_LABEL = "Pareto front: no other model is both faster and more accurate"


def speed_accuracy_png(points: Sequence[tuple[str, float, float]], references: Sequence[tuple[str, float]] = (),
                       *, failed: Sequence[str] = (), title: str = "Validation accuracy vs speed",
                       xlabel: str = "ms per image, measured on this server (lower is faster)") -> bytes:
    """(label, ms per image, accuracy) per model as labelled points, the Pareto front joined by
    a line, ``references`` (label, accuracy) as dotted horizontal lines, and the names in
    ``failed`` written under the chart (they have no point)."""
    fig = _figure(8, 4.2)
    ax = fig.subplots()
    xs = [float(p[1]) for p in points]
    ys = [float(p[2]) for p in points]
    front = pareto_front(list(zip(xs, ys)))
    if points:
        ax.scatter(xs, ys, s=45, zorder=3, color=["C3" if i in front else "C0" for i in range(len(points))])
        for i, (label, x, y) in enumerate(points):
            ax.annotate(label, (x, y), xytext=(7, 6 if i % 2 == 0 else -12), textcoords="offset points", fontsize=9)
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "-o", color="C3", lw=1.2, ms=6, zorder=2,
                label=FRONT_LABEL)
        ax.set_xlim(0, max(xs) * 1.4 + 1e-9)
    else:
        ax.text(0.5, 0.5, "no model loaded", transform=ax.transAxes, ha="center", va="center", color="grey")
    for k, (label, value) in enumerate(references):
        # named in the legend; its accuracy also written just right of the axes
        ax.axhline(value, color="grey", ls=(":", "-.", "--")[k % 3], lw=1, zorder=1, label=label)
        ax.annotate(f"{value:.1%}".replace(".0%", "%"), (1.0, value), xycoords=("axes fraction", "data"),
                    xytext=(3, 0), textcoords="offset points", ha="left", va="center", fontsize=8, color="dimgrey")
    values = ys + [float(v) for _, v in references]
    if values:
        low, high = min(values), max(values)
        pad = max(0.01, (high - low) * 0.15)
        ax.set_ylim(low - pad, high + pad)
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}" if abs(v * 100 - round(v * 100)) < 1e-6 else f"{v:.1%}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if points or references:
        ax.legend(loc="best", fontsize=8)
    if failed:
        fig.text(0.01, 0.0, "failed to load, not plotted: " + ", ".join(failed), fontsize=8, color="C3", va="bottom")
    return _png(fig)


def class_distribution_png(counts: dict[str, int], *, title: str = "Images per class") -> bytes:
    """One bar per class, fewest first, the median as a line, every class named: the class
    distribution the notebook opened with. Many classes (over 40) lie as horizontal bars in a
    tall picture, so that each name is printed level and at a readable size."""
    items = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]))
    n = len(items)
    values = [v for _, v in items]
    horizontal = n > 40
    fig = _figure(7.5, 0.15 * n + 1.4) if horizontal else _figure(max(6.0, 0.11 * n + 2), 4.2)
    ax = fig.subplots()
    if horizontal:
        ax.barh(range(n), values, color="C0", height=0.75)
        ax.set_yticks(range(n), [k for k, _ in items], fontsize=7)
        ax.set_ylim(n - 0.4, -0.6)  # fewest at the top
        ax.set_xlabel("images")
        ax.grid(axis="x", alpha=0.3)
    else:
        ax.bar(range(n), values, color="C0", width=0.8)
        ax.set_xticks(range(n), [k for k, _ in items], rotation=90, fontsize=8)
        ax.set_xlim(-0.6, n - 0.4)
        ax.set_ylabel("images")
        ax.grid(axis="y", alpha=0.3)
    if values:
        median = float(np.median(values))
        line = ax.axvline if horizontal else ax.axhline
        line(median, color="C3", ls="--", lw=1, label=f"median {median:g}")
        ax.legend(loc="upper right" if horizontal else "upper left", fontsize=8)
    ax.set_title(title, fontsize=9 if horizontal else None)
    return _png(fig)


def confusion_png(cm: np.ndarray, labels: Sequence[str], *, title: str = "Confusion matrix") -> bytes:
    """Row-normalised confusion matrix; with 100 classes the tick labels are small but legible."""
    cm = np.asarray(cm, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(labels)
    side = max(6.0, 0.16 * n)
    fig = _figure(side, side)
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=5 if n > 40 else 8)
    ax.set_yticks(range(n), labels, fontsize=5 if n > 40 else 8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.03)
    return _png(fig)


def samples_png(images: Sequence[np.ndarray], true: Sequence[str], pred: Sequence[str],
                *, columns: int = 5) -> bytes:
    """A grid of images titled with their true and predicted sports; wrong ones in red."""
    rows = max(1, int(np.ceil(len(images) / columns)))
    fig = _figure(2.4 * columns, 2.7 * rows)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, img, t, p in zip(axes, images, true, pred):
        ax.imshow(np.clip(np.asarray(img), 0, 255).astype(np.uint8))
        ok = t == p
        ax.set_title(f"true: {t}\npred: {p}", fontsize=9, color="black" if ok else "red")
    return _png(fig)


def write_png(data: bytes):
    """A bundle writer for PNG bytes."""
    return lambda dest: Path(dest).write_bytes(data)
