"""Knowledge distillation: the teacher's probabilities per cached view, the loss, one tiny run."""

import numpy as np
import pytest

from sports_classifier import bundle
from sports_classifier.classifier import Classifier
from sports_classifier.config import TrainConfig
from sports_classifier.errors import BundleError, ConfigError
from sports_classifier.images import SkippedImages
from sports_classifier.training.features import View, view_pixels
from sports_classifier.training.loop import train

TINY = TrainConfig(backbone="tiny_cnn", weights="none", image_size=32, head_epochs=2, batch_size=8)


def test_an_augmented_view_gives_the_same_pixels_on_every_pass(synthetic_dataset):
    """The teacher's probabilities and the trunk's activations are computed in separate passes:
    they must see the same augmented images."""
    paths = [str(p) for p in sorted(synthetic_dataset.rglob("*.jpg"))]
    view = View("augment", seed=3, zoom=0.2, shift=0.2, horizontal_flip=True)

    def one_pass():
        return np.concatenate([px for px, _ in view_pixels(paths, view, 32, 4, skipped=SkippedImages(),
                                                            progress=False)])

    first, second = one_pass(), one_pass()
    np.testing.assert_array_equal(first, second)
    clean = np.concatenate([px for px, _ in view_pixels(paths, View("clean"), 32, 4, skipped=SkippedImages(),
                                                         progress=False)])
    assert np.abs(first - clean).mean() > 1.0  # the augmentation did change the images


def test_distillation_loss_against_numpy():
    from sports_classifier.training.subnetworks import distillation_loss

    rng = np.random.default_rng(0)
    n, t, w = 5, 3.0, 0.6
    p = rng.dirichlet(np.ones(n), 4).astype(np.float32)
    q = rng.dirichlet(np.ones(n), 4).astype(np.float32)
    labels = np.eye(n, dtype=np.float32)[[0, 2, 4, 1]]
    got = np.asarray(distillation_loss(n, t, w)(np.concatenate([labels, q], 1), p))

    def tempered(x):
        z = np.log(x) / t
        return np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)

    kl = (tempered(q) * np.log(tempered(q) / tempered(p))).sum(1)
    want = (1 - w) * -(labels * np.log(p)).sum(1) + w * t * t * kl
    np.testing.assert_allclose(got, want, rtol=1e-4)
    # A student that already matches its teacher pays only the label term.
    same = np.asarray(distillation_loss(n, t, 1.0)(np.concatenate([labels, p], 1), p))
    np.testing.assert_allclose(same, 0, atol=1e-5)


def test_distilled_training_records_its_teacher_and_caches_the_teacher(synthetic_dataset, tmp_path):
    teacher = train(TINY.replace(head_epochs=10, learning_rate=0.01), synthetic_dataset, tmp_path / "teacher",
                    cache_dir=tmp_path / "cache", progress=False).bundle
    config = TINY.replace(distill_from=str(teacher), augment_views=1, fine_tune_stages=1, fine_tune_epochs=1)
    result = train(config, synthetic_dataset, tmp_path / "student", cache_dir=tmp_path / "cache", progress=False)
    recorded = bundle.read_config(result.bundle).training
    assert recorded["distill_from"] == str(teacher) and recorded["distill_weight"] == 0.7
    assert list(result.history["stage"].unique()) == ["head", "fine_tune"]
    assert "accuracy" in result.history and "val_accuracy" in result.history
    Classifier.from_pretrained(result.bundle).predict_proba(sorted(synthetic_dataset.rglob("*.jpg"))[:2])
    # Train views + valid: one cache entry each, reused (not recomputed) by a second student.
    entries = sorted((tmp_path / "cache" / "teacher").glob("*.npz"))
    assert len(entries) == 3
    stamps = [e.stat().st_mtime_ns for e in entries]
    train(config.replace(seed=1), synthetic_dataset, tmp_path / "student2", cache_dir=tmp_path / "cache",
          progress=False)
    assert [e.stat().st_mtime_ns for e in entries] == stamps


def test_teacher_with_other_classes_is_refused(synthetic_dataset, tmp_path):
    from helpers.datasets import make_dataset

    other = make_dataset(tmp_path / "other", classes=("ants", "bees", "cows"))
    teacher = train(TINY, other, tmp_path / "teacher", cache_dir=tmp_path / "cache", progress=False).bundle
    with pytest.raises(BundleError, match="same classes"):
        train(TINY.replace(distill_from=str(teacher)), synthetic_dataset, tmp_path / "s",
              cache_dir=tmp_path / "cache", progress=False)


def test_distillation_needs_the_cached_mode():
    with pytest.raises(ConfigError, match="cached"):
        TrainConfig(distill_from="models/x", mode="end_to_end")
    with pytest.raises(ConfigError, match="distill_weight"):
        TrainConfig(distill_from="models/x", distill_weight=1.5)


def test_teacher_targets_keep_the_students_rows():
    """Rows the trunk decoded, in its order, even when the cached entry holds more."""
    from sports_classifier.training.features import _select

    probs = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(_select(probs, np.array([0, 1, 3, 5]), np.array([3, 0])), probs[[2, 0]])
    with pytest.raises(ValueError, match="could not read"):
        _select(probs, np.array([0, 1, 3, 5]), np.array([2]))
