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


def write_png(data: bytes):
    """A bundle writer for PNG bytes."""
    return lambda dest: Path(dest).write_bytes(data)
