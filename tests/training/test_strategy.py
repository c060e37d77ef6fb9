"""`train --strategy mirrored`: the same training under tf.distribute's MirroredStrategy (every
GPU of one machine; one replica on a CPU) gives the model the plain run gives."""

import numpy as np
import pytest

from sports_classifier.classifier import Classifier
from sports_classifier.config import TrainConfig
from sports_classifier.errors import ConfigError
from sports_classifier.training.loop import Distributed, train

TINY = TrainConfig(backbone="tiny_cnn", weights="none", image_size=32, mode="end_to_end", head_epochs=2,
                   fine_tune_stages=1, fine_tune_epochs=1, batch_size=4, dropout=0.0, augment=False)


def test_mirrored_strategy_trains_the_same_model(synthetic_dataset, tmp_path):
    import tensorflow as tf

    plain = train(TINY, synthetic_dataset, tmp_path / "plain", progress=False)
    mirrored = train(TINY, synthetic_dataset, tmp_path / "mirrored", progress=False,
                     distributed=Distributed(tf.distribute.MirroredStrategy()))
    images = sorted(synthetic_dataset.rglob("*.jpg"))[:6]
    a = Classifier.from_pretrained(plain.bundle).predict_proba(images)
    b = Classifier.from_pretrained(mirrored.bundle).predict_proba(images)
    np.testing.assert_allclose(b, a, atol=1e-5)
    assert list(mirrored.history["stage"].unique()) == ["head", "fine_tune"]


def test_strategies_take_the_end_to_end_mode_only(synthetic_dataset, tmp_path):
    import tensorflow as tf

    with pytest.raises(ConfigError, match="end_to_end"):
        train(TINY.replace(mode="cached"), synthetic_dataset, tmp_path / "x", progress=False,
              distributed=Distributed(tf.distribute.MirroredStrategy()))
