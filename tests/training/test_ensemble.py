"""Ensemble bundles: combine trained bundles, load them like any bundle, train from a recipe."""

import json

import numpy as np
import pytest

from sports_classifier import bundle
from sports_classifier.classifier import Classifier
from sports_classifier.cli import main
from sports_classifier.config import ModelConfig, TrainConfig
from sports_classifier.training.ensemble import combine, members_folder, train_ensemble
from sports_classifier.errors import BundleError, ConfigError
from sports_classifier.training.recipes import EnsembleRecipe, load_recipe
from sports_classifier.training.loop import train

TINY = TrainConfig(backbone="tiny_cnn", weights="none", image_size=32, head_epochs=2, batch_size=8)


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two tiny bundles at different input sizes, trained on the same synthetic classes."""
    from helpers.datasets import make_dataset

    root = tmp_path_factory.mktemp("ensemble")
    data = make_dataset(root / "data", per_class=(8, 4), size=40)
    cache = root / "cache"
    a = train(TINY, data, root / "a", cache_dir=cache, progress=False).bundle
    b = train(TINY.replace(image_size=40, seed=7), data, root / "b", cache_dir=cache, progress=False).bundle
    return data, a, b


def test_ensemble_averages_its_members(members, tmp_path):
    import tensorflow as tf

    data, a, b = members
    out = combine([a, b], tmp_path / "ens", data_dir=data, progress=False)
    config = bundle.read_config(out)
    assert config.is_ensemble and config.image_size == 32  # the smallest member's size
    assert [m["image_size"] for m in config.members] == [32, 40]
    assert config.architecture.startswith("ensemble of tiny_cnn (32 px) + tiny_cnn (40 px)")
    for name in (bundle.WEIGHTS, bundle.ONNX, bundle.METRICS, bundle.CONFUSION, bundle.CARD):
        assert (out / name).is_file(), name

    images = sorted(data.rglob("*.jpg"))[:4]
    ens = Classifier.from_pretrained(out, runtime="keras")
    from sports_classifier.images import preprocess_batch

    x = preprocess_batch(images, 32)
    ma = Classifier.from_pretrained(a, runtime="keras").keras_model
    mb = Classifier.from_pretrained(b, runtime="keras").keras_model
    expected = (ma(x).numpy() + mb(tf.image.resize(x, (40, 40))).numpy()) / 2
    np.testing.assert_allclose(ens.predict_proba(images), expected, atol=1e-5)
    # The ONNX export serves the same ensemble, and the recorded metrics are what evaluate gives.
    fast = Classifier.from_pretrained(out)
    assert fast.runtime == "onnxruntime"
    np.testing.assert_allclose(fast.predict_proba(images), expected, atol=1e-4)
    assert fast.evaluate(data)["accuracy"] == bundle.read_metrics(out)["valid"]["accuracy"]
    card = (out / bundle.CARD).read_text()
    assert "An ensemble that averages the class probabilities of 2 networks" in card


def test_gradcam_of_an_ensemble_averages_its_members(members, tmp_path):
    from sports_classifier.models.gradcam import gradcam

    data, a, b = members
    ens = Classifier.from_pretrained(combine([a, b], tmp_path / "ens", data_dir=data, progress=False),
                                     runtime="keras")
    image = sorted(data.rglob("*.jpg"))[0]
    heat, index, prob = gradcam(ens, image)
    assert heat.shape == (5, 5)  # tiny_cnn maps: 4x4 at 32 px, 5x5 at 40 px -> the larger
    assert 0 <= heat.min() and heat.max() == pytest.approx(1.0)
    probs = ens.predict_proba(image)[0]
    assert index == int(np.argmax(probs)) and prob == pytest.approx(float(probs[index]), abs=1e-5)


def test_int8_ensemble_keeps_its_average_in_float(members, tmp_path):
    """Quantising the average of the members' softmax outputs would round the probabilities to
    steps of 1/255 (and zero the runners-up): everything after a softmax stays float32."""
    from sports_classifier.training.export import export_bundle

    data, a, b = members
    out = combine([a, b], tmp_path / "ens", data_dir=data, progress=False)
    export_bundle(out, formats=["onnx-int8"], calibration=data, calibration_images=8)
    probs = Classifier.from_pretrained(out, runtime="onnx-int8").predict_proba(sorted(data.rglob("*.jpg"))[:6])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(probs * 255 - np.round(probs * 255)).max() > 1e-3


def test_ensemble_rejects_mismatched_members(members, tmp_path):
    from helpers.datasets import make_dataset

    data, a, b = members
    with pytest.raises(ConfigError, match="at least two"):
        combine([a], tmp_path / "one", data_dir=data, progress=False)
    other = make_dataset(tmp_path / "other", classes=("x", "y"), per_class=(4, 2))
    c = train(TINY, other, tmp_path / "c", cache_dir=tmp_path / "cache", progress=False).bundle
    with pytest.raises(BundleError, match="do not share their labels"):
        combine([a, c], tmp_path / "bad", data_dir=data, progress=False)
    ens = combine([a, b], tmp_path / "ens", data_dir=data, progress=False)
    with pytest.raises(BundleError, match="itself an ensemble"):
        combine([ens, a], tmp_path / "nested", data_dir=data, progress=False)


def test_ensemble_config_is_validated():
    base = dict(backbone="ensemble", image_size=32, labels=("a", "b"))
    member = {"backbone": "tiny_cnn", "image_size": 32}
    ModelConfig(**base, members=(member, member))
    with pytest.raises(ConfigError, match="lists its members"):
        ModelConfig(**base)
    with pytest.raises(ConfigError, match="lists its members"):
        ModelConfig(**(base | {"backbone": "tiny_cnn"}), members=(member, member))
    with pytest.raises(ConfigError, match="at least two"):
        ModelConfig(**base, members=(member,))
    with pytest.raises(ConfigError, match="unknown key"):
        ModelConfig(**base, members=(member, member | {"code": "import os"}))
    with pytest.raises(ConfigError, match="image_size must be int"):
        ModelConfig(**base, members=(member, {"backbone": "tiny_cnn", "image_size": "32"}))


def test_tampered_member_backbone_is_refused(members, tmp_path):
    data, a, b = members
    out = combine([a, b], tmp_path / "ens", data_dir=data, progress=False)
    config = json.loads((out / bundle.CONFIG).read_text())
    config["members"][1]["backbone"] = "os.system"
    (out / bundle.CONFIG).write_text(json.dumps(config))
    with pytest.raises(BundleError, match="cannot build"):
        Classifier.from_pretrained(out)


def test_ensemble_recipe_trains_members_then_resumes_without_retraining(members, tmp_path, caplog):
    data, _, _ = members
    recipe_file = tmp_path / "recipe.json"
    recipe_file.write_text(json.dumps({"ensemble": [
        {"name": "small", **TINY.to_dict()},
        {"name": "large", **TINY.replace(image_size=40).to_dict()},
    ]}))
    recipe = load_recipe(recipe_file)
    assert isinstance(recipe, EnsembleRecipe) and list(recipe.members) == ["small", "large"]
    out = train_ensemble(recipe.members, data, tmp_path / "ens", cache_dir=tmp_path / "cache", progress=False)
    assert sorted(p.name for p in members_folder(out).iterdir()) == ["large", "small"]
    before = (out / bundle.WEIGHTS).read_bytes()
    caplog.set_level("INFO", logger="sports_classifier")
    train_ensemble(recipe.members, data, out, cache_dir=tmp_path / "cache", progress=False, resume=True)
    assert caplog.text.count("already trained with this config; reused") == 2
    assert (out / bundle.WEIGHTS).read_bytes() == before


def test_recipe_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ensemble": ["lite0-head"]}))
    with pytest.raises(ConfigError, match="at least two members"):
        load_recipe(bad)
    bad.write_text(json.dumps({"ensemble": ["lite0-head", "no-such-preset"]}))
    with pytest.raises(ConfigError, match="unknown recipe .no-such-preset."):
        load_recipe(bad)
    bad.write_text(json.dumps({"ensemble": ["lite0-head", "ensemble-lite012"]}))
    with pytest.raises(ConfigError, match="itself an ensemble"):
        load_recipe(bad)


def test_cli_ensemble_and_recipe_flags(members, tmp_path, capsys):
    data, a, b = members
    assert main(["ensemble", "--models", str(a), str(b), "--data", str(data), "--out",
                 str(tmp_path / "ens"), "--quiet"]) == 0
    assert "valid: accuracy" in capsys.readouterr().out
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "x"), "--preset",
                 "ensemble-lite012", "--epochs", "3"]) == 1
    assert "takes no training options" in capsys.readouterr().err
