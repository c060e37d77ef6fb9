"""Classification metrics in plain numpy: data in, data out, no IO."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[i, j]`` = number of images of class ``i`` predicted as class ``j``."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    k = min(k, probs.shape[1])
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == np.asarray(y_true)[:, None], axis=1)))


def log_loss(y_true: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(probs[np.arange(len(y_true)), y_true], eps, 1.0)
    return float(-np.mean(np.log(p)))


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class (0 where undefined, as scikit-learn does)."""
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def classification_metrics(
    y_true: Sequence[int], probs: np.ndarray, labels: Sequence[str]
) -> dict:
    """Everything ``metrics.json`` records for one split.

    Macro F1 averages over the classes present in ``y_true`` (a class with no images in the
    split says nothing about the model).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != len(y_true) or probs.shape[1] != len(labels):
        raise ValueError(
            f"probs shape {probs.shape} does not match {len(y_true)} labels x {len(labels)} classes"
        )
    if len(y_true) == 0:
        raise ValueError("cannot compute metrics on zero images")
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, len(labels))
    scores = per_class_scores(cm)
    present = scores["support"] > 0
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_pred == y_true)),
        "top5_accuracy": top_k_accuracy(y_true, probs, 5),
        "macro_f1": float(np.mean(scores["f1"][present])),
        "loss": log_loss(y_true, probs),
        "per_class": {
            label: {
                "precision": float(scores["precision"][i]),
                "recall": float(scores["recall"][i]),
                "f1": float(scores["f1"][i]),
                "support": int(scores["support"][i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": cm.tolist(),
    }


def summary(metrics: dict) -> dict:
    """The headline numbers of a metrics dict (what ``evaluate --json`` prints)."""
    return {k: metrics[k] for k in ("n", "accuracy", "top5_accuracy", "macro_f1", "loss") if k in metrics}
