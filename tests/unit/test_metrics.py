import numpy as np
import pytest

from sports_classifier.metrics import classification_metrics, confusion_matrix, top_k_accuracy


def test_metrics_on_a_known_case():
    labels = ["a", "b", "c"]
    y = np.array([0, 0, 1, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.5, 0.1, 0.4]])
    m = classification_metrics(y, probs, labels)
    assert m["n"] == 4
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["top5_accuracy"] == 1.0
    # a: P=1/2 R=1/2 F1=.5 ; b: P=1/2 R=1 F1=2/3 ; c: P=0 R=0 F1=0
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert m["per_class"]["b"]["recall"] == 1.0
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.8, 0.2, 0.8, 0.4])))


def test_top_k():
    probs = np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]])
    assert top_k_accuracy(np.array([2, 1]), probs, 1) == 0.0
    assert top_k_accuracy(np.array([2, 1]), probs, 2) == 0.5


def test_confusion_counts_sum():
    cm = confusion_matrix(np.array([0, 1, 1]), np.array([1, 1, 0]), 2)
    assert cm.sum() == 3 and cm[1, 1] == 1


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="does not match"):
        classification_metrics([0, 1], np.ones((3, 2)) / 2, ["a", "b"])
