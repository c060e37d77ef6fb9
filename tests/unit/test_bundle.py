"""The bundle format: round trip, atomic writes, validation of untrusted files."""

import json

import numpy as np
import pytest

from helpers.bundles import copy_bundle
from sports_classifier import bundle
from sports_classifier.classifier import Classifier
from sports_classifier.errors import BundleError


def test_bundle_holds_every_file(trained_tiny_bundle):
    names = {p.name for p in trained_tiny_bundle.iterdir()}
    assert set(bundle.FILES) - {bundle.ONNX_INT8, bundle.SELFCHECK} <= names  # the int8 copy (and its check) is optional
    config = bundle.read_config(trained_tiny_bundle)
    assert set(config.files_sha256) == {bundle.WEIGHTS, bundle.ONNX}
    metrics = bundle.read_metrics(trained_tiny_bundle)["valid"]
    card = (trained_tiny_bundle / bundle.CARD).read_text()
    assert f"{metrics['accuracy']:.2%}" in card and "model-index" in card
    assert config.training["backbone"] == "tiny_cnn" and config.training["seconds"] > 0


def test_save_pretrained_round_trip_keeps_predictions(trained_tiny_bundle, tmp_path, synthetic_dataset):
    images = sorted((synthetic_dataset / "valid").rglob("*.jpg"))[:4]
    clf = Classifier.from_pretrained(trained_tiny_bundle, runtime="keras")
    saved = clf.save_pretrained(tmp_path / "saved")
    again = Classifier.from_pretrained(saved, runtime="keras")
    np.testing.assert_array_equal(clf.predict_proba(images), again.predict_proba(images))
    assert again.labels == clf.labels


def test_missing_and_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        bundle.read_config(tmp_path / "nothing")
    (tmp_path / "folder").mkdir()
    with pytest.raises(BundleError, match="not a sports_classifier bundle"):
        bundle.read_config(tmp_path / "folder")


def test_tampered_weights_are_detected(trained_tiny_bundle, tmp_path):
    b = copy_bundle(trained_tiny_bundle, tmp_path / "copy")
    data = bytearray((b / bundle.WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the weights
    (b / bundle.WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="corrupt or was modified"):
        Classifier.from_pretrained(b, runtime="keras")


def test_truncated_onnx_is_detected(tiny_bundle, tmp_path):
    b = copy_bundle(tiny_bundle, tmp_path / "copy")
    data = (b / bundle.ONNX).read_bytes()
    (b / bundle.ONNX).write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="corrupt or was modified"):
        Classifier.from_pretrained(b, runtime="onnx")


def test_missing_weights(trained_tiny_bundle, tmp_path):
    b = copy_bundle(trained_tiny_bundle, tmp_path / "copy")
    (b / bundle.WEIGHTS).unlink()
    with pytest.raises(BundleError, match="lacks model.weights.h5"):
        Classifier.from_pretrained(b, runtime="keras")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.update(format_version=7), "newer than this package"),
        (lambda c: c.update(surprise=1), "unknown key"),
        (lambda c: c.update(labels=c["labels"] + ["extra"]), "does not fit|labels"),
    ],
)
def test_config_problems(trained_tiny_bundle, tmp_path, change, message):
    b = copy_bundle(trained_tiny_bundle, tmp_path / "copy")
    config = json.loads((b / bundle.CONFIG).read_text())
    change(config)
    (b / bundle.CONFIG).write_text(json.dumps(config))
    with pytest.raises(BundleError, match=message):
        Classifier.from_pretrained(b, runtime="keras").keras_model


def test_corrupt_json(tiny_bundle, tmp_path):
    b = copy_bundle(tiny_bundle, tmp_path / "copy")
    (b / bundle.CONFIG).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        bundle.read_config(b)


def test_failed_write_leaves_the_old_bundle(trained_tiny_bundle, tmp_path):
    b = copy_bundle(trained_tiny_bundle, tmp_path / "copy")
    before = sorted((p.name, p.stat().st_size) for p in b.iterdir())
    config = bundle.read_config(b)

    def crash(dest):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        bundle.write_bundle(b, config, {bundle.WEIGHTS: bundle.copy_from(b / bundle.WEIGHTS), bundle.HISTORY: crash})
    assert sorted((p.name, p.stat().st_size) for p in b.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_refuses_to_overwrite_a_folder_that_is_not_a_bundle(tiny_bundle, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    with pytest.raises(BundleError, match="not a model bundle"):
        Classifier.from_pretrained(tiny_bundle).save_pretrained(precious)
    assert (precious / "thesis.txt").is_file()
