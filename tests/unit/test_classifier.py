"""The Classifier facade on the tiny bundle: both runtimes, input kinds, evaluation."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sports_classifier.classifier import Classifier
from sports_classifier.errors import DatasetLayoutError, ImageDecodeError


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from helpers.datasets import make_dataset

    root = make_dataset(tmp_path_factory.mktemp("imgs"), per_class=(1, 2), seed=5)
    return sorted((root / "valid").rglob("*.jpg"))


def test_onnx_and_keras_agree(trained_tiny_bundle, images):
    fast = Classifier.from_pretrained(trained_tiny_bundle)
    slow = Classifier.from_pretrained(trained_tiny_bundle, runtime="keras")
    assert fast.runtime == "onnxruntime" and slow.runtime == "keras"
    np.testing.assert_allclose(fast.predict_proba(images), slow.predict_proba(images), atol=1e-4)


def test_predict_shapes_and_order(tiny_bundle, images):
    clf = Classifier.from_pretrained(tiny_bundle)
    one = clf.predict(images[0], top_k=2)
    assert len(one) == 2 and one[0][1] >= one[1][1] and one[0][0] in clf.labels
    many = clf.predict(images, top_k=10)
    assert len(many) == len(images) and len(many[0]) == 3  # top_k capped at the class count
    assert abs(sum(p for _, p in many[0]) - 1) < 1e-5
    pil, array = Image.open(images[0]), np.asarray(Image.open(images[0]))
    assert clf.predict(pil) == clf.predict(array) == clf.predict(str(images[0]))


def test_predict_errors(tiny_bundle, tmp_path):
    clf = Classifier.from_pretrained(tiny_bundle)
    with pytest.raises(ValueError, match="top_k"):
        clf.predict(np.zeros((8, 8, 3)), top_k=0)
    with pytest.raises(ValueError, match="no images"):
        clf.predict([])
    with pytest.raises(ImageDecodeError):
        clf.predict(tmp_path)


def test_evaluate(tiny_bundle):
    from helpers.datasets import make_dataset
    import tempfile, pathlib

    with tempfile.TemporaryDirectory() as tmp:
        root = make_dataset(pathlib.Path(tmp), per_class=(1, 3), seed=9)
        m = Classifier.from_pretrained(tiny_bundle).evaluate(root)
        assert m["n"] == 9 and 0 <= m["accuracy"] <= 1 and len(m["per_class"]) == 3
        with pytest.raises(DatasetLayoutError):
            Classifier.from_pretrained(tiny_bundle).evaluate(root, split="test")


def test_evaluate_rejects_unknown_classes(tiny_bundle, tmp_path):
    from helpers.datasets import make_dataset

    root = make_dataset(tmp_path, classes=("cats", "zebras"), per_class=(1, 1))
    with pytest.raises(DatasetLayoutError, match="does not know"):
        Classifier.from_pretrained(tiny_bundle).evaluate(root)


def test_onnx_bundle_loads_without_tensorflow(tiny_bundle, images):
    code = (
        "import sys; from sports_classifier import Classifier;"
        f"c = Classifier.from_pretrained({str(tiny_bundle)!r}); c.predict({str(images[0])!r});"
        "print(c.runtime, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["onnxruntime", "False", "False"]


def test_without_onnxruntime_falls_back_to_keras(trained_tiny_bundle, images, monkeypatch):
    import sports_classifier.runtime as runtime

    monkeypatch.setattr(runtime, "onnxruntime_available", lambda: False)
    clf = Classifier.from_pretrained(trained_tiny_bundle)
    assert clf.runtime == "keras" and len(clf.predict(images[0])) == 3
