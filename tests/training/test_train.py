"""Training paths on the tiny backbone: cache reuse, fine-tuning, end-to-end, seeds."""

import numpy as np
import pandas as pd

from sports_classifier import bundle
from sports_classifier.classifier import Classifier
from sports_classifier.config import TrainConfig
from sports_classifier.training.loop import train

TINY = TrainConfig(backbone="tiny_cnn", weights="none", image_size=32, head_epochs=2, batch_size=8)


def test_second_run_reuses_the_feature_cache(synthetic_dataset, tmp_path):
    first = train(TINY, synthetic_dataset, tmp_path / "a", cache_dir=tmp_path / "cache", progress=False)
    second = train(TINY, synthetic_dataset, tmp_path / "b", cache_dir=tmp_path / "cache", progress=False)
    assert first.cache_misses == 2 and second.cache_hits == 2 and second.cache_misses == 0
    # Same seed, same data: the same model.
    a = Classifier.from_pretrained(tmp_path / "a").predict_proba(sorted(synthetic_dataset.rglob("*.jpg"))[:3])
    b = Classifier.from_pretrained(tmp_path / "b").predict_proba(sorted(synthetic_dataset.rglob("*.jpg"))[:3])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_fine_tune_on_cached_activations_with_views_and_tta(synthetic_dataset, tmp_path):
    config = TINY.replace(fine_tune_stages=1, fine_tune_epochs=2, augment_views=1, tta_flip=True)
    result = train(config, synthetic_dataset, tmp_path / "ft", cache_dir=tmp_path / "cache", progress=False)
    history = pd.read_csv(result.bundle / bundle.HISTORY)
    assert list(history["stage"].unique()) == ["head", "fine_tune"]
    clf = Classifier.from_pretrained(result.bundle, runtime="keras")
    assert clf.config.tta_flip and clf.config.training["fine_tune_stages"] == 1
    # The bundle's recorded accuracy is what evaluate measures on the same split.
    assert clf.evaluate(synthetic_dataset)["accuracy"] == result.metrics["valid"]["accuracy"]


def test_end_to_end_mode(synthetic_dataset, tmp_path):
    config = TINY.replace(mode="end_to_end", head_epochs=1, fine_tune_stages=1, fine_tune_epochs=1)
    result = train(config, synthetic_dataset, tmp_path / "e2e", progress=False)
    assert len(result.history) == 2 and result.metrics["valid"]["n"] == 9


def test_tiny_backbone_learns_the_synthetic_classes(synthetic_dataset, tmp_path):
    config = TINY.replace(head_epochs=30, learning_rate=0.01, augment=False)
    result = train(config, synthetic_dataset, tmp_path / "learn", cache_dir=tmp_path / "cache", progress=False)
    assert result.metrics["valid"]["accuracy"] == 1.0


def test_fine_tune_top_trains_only_the_top_convolution(synthetic_dataset, tmp_path):
    """The default stage 2: EfficientNet's 1x1 top convolution on cached activations."""
    from sports_classifier.models.network import backbone_of, build_classifier, split_layer, stage_outputs
    from sports_classifier.training.subnetworks import set_trainable

    model = build_classifier("efficientnet_lite0", 3, image_size=64, weights="none")
    split = split_layer(model, "efficientnet_lite0", 0, top=True)
    assert split == stage_outputs(model, "efficientnet_lite0")[-1]
    set_trainable(model, split)
    trainable = {w.path.split("/")[-2] for w in backbone_of(model).trainable_weights}
    assert trainable == {"top_conv"}  # BatchNorm stays frozen, everything before the split too
    # A backbone without a top convolution has nothing to fine-tune there: head only.
    assert split_layer(build_classifier("tiny_cnn", 3, image_size=32, weights="none"), "tiny_cnn", 0, top=True) is None
    assert split_layer(model, "efficientnet_lite0", 0, top=False) is None

    config = TrainConfig(backbone="efficientnet_lite0", weights="none", image_size=64, head_epochs=1,
                         fine_tune_epochs=1, batch_size=8)
    result = train(config, synthetic_dataset, tmp_path / "top", cache_dir=tmp_path / "cache", progress=False)
    assert list(result.history["stage"].unique()) == ["head", "fine_tune"]


def test_keras_application_backbones_expose_their_stages_for_fine_tuning():
    """ResNet50 sits flat behind its caffe preprocessing layer, so its stages can be split."""
    from sports_classifier.models.network import build_classifier, split_layer, stage_outputs
    from sports_classifier.training.subnetworks import trunk

    model = build_classifier("resnet50", 3, weights="none")
    assert stage_outputs(model, "resnet50")[-2:] == ["conv4_block6_out", "conv5_block3_out"]
    assert split_layer(model, "resnet50", 0, top=True) is None  # no top convolution after conv5
    split = split_layer(model, "resnet50", 1)
    assert trunk(model, split).output.shape[1:] == (14, 14, 1024)
    x = np.full((1, 224, 224, 3), 128.0, np.float32)
    caffe = model.get_layer("backbone").get_layer("caffe_preprocess")(x).numpy()[0, 0, 0]
    np.testing.assert_allclose(caffe, [128 - 103.939, 128 - 116.779, 128 - 123.68], atol=1e-4)
