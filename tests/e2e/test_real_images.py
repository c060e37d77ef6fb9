"""End to end on the real shared images: the converted Lite0 learns a few sports quickly."""

import pytest

from sports_classifier.classifier import Classifier
from sports_classifier.config import TrainConfig
from sports_classifier.training.loop import train

from helpers.datasets import CLASSES3

pytestmark = pytest.mark.slow


def test_lite0_head_on_three_real_sports(shared_data, tmp_path, cache_dir):
    config = TrainConfig(backbone="efficientnet_lite0", classes=CLASSES3, max_per_class=20, head_epochs=15)
    result = train(config, shared_data, tmp_path / "lite0-3", cache_dir=cache_dir, progress=False)
    assert result.metrics["valid"]["n"] == 15
    assert result.metrics["valid"]["accuracy"] >= 0.9  # frozen ImageNet features separate them easily
    clf = Classifier.from_pretrained(result.bundle)
    image = shared_data / "valid" / "basketball" / "1.jpg"
    assert clf.predict(image, top_k=1)[0][0] == "basketball"
