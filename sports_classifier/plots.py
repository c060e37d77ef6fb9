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


def curves_png(history) -> bytes:
    """Accuracy and loss per epoch, train vs validation, one colour band per stage."""
    fig = _figure(11, 4)
    axes = fig.subplots(1, 2)
    epochs = np.arange(1, len(history) + 1)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for prefix, style in (("", "-"), ("val_", "--")):
            col = prefix + metric
            if col in history:
                ax.plot(epochs, history[col], style, label=("validation" if prefix else "train"))
        if "stage" in history:
            stages = history["stage"].tolist()
            for i in range(1, len(stages)):
                if stages[i] != stages[i - 1]:
                    ax.axvline(i + 0.5, color="grey", lw=0.8)
                    ax.text(i + 0.6, ax.get_ylim()[1], f" {stages[i]}", va="top", fontsize=8, color="grey")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
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


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (speed, accuracy) points no other point beats on both, fastest first."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def accuracy_speed_png(comparison: dict) -> bytes:
    """Validation accuracy against images per second (``speed_accuracy.run_comparison``), each
    point labelled with its model, the Pareto front drawn through the models worth choosing."""
    names = [Path(n).name for n in comparison["models"]]
    points = [(r["predict_paths"]["images_per_s"], r["accuracy"] * 100) for r in comparison["models"].values()]
    fig = _figure(7, 4.5)
    ax = fig.subplots()
    front = pareto_front(points)
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "-", color="tab:green",
            alpha=0.5, lw=2, label="Pareto front (no model beats these on both)")
    for i, ((x, y), name) in enumerate(zip(points, names)):
        ax.scatter([x], [y], s=40, color="tab:green" if i in front else "tab:grey", zorder=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=9)
    ax.set_xlabel(f"images per second (JPEG paths, batch {comparison['batch_size']}, "
                  f"{comparison['machine']['physical_cores']} CPU cores, as served)")
    ax.set_ylabel(f"top-1 accuracy on {comparison['images']} validation images (%)")
    ax.set_xscale("log")
    ax.margins(x=0.25, y=0.15)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower left", fontsize=8)
    return _png(fig)


def write_png(data: bytes):
    """A bundle writer for PNG bytes."""
    return lambda dest: Path(dest).write_bytes(data)
