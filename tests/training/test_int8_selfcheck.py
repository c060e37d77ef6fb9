"""The int8 recipe that cannot saturate, and the self-check a bundle runs at load (issue 22).

The saturation-free property is checked on the weights themselves, so it holds whatever CPU runs
the test: ONNX Runtime's u8s8 kernels without VNNI add two uint8 x int8 products into an int16
(``vpmaddubsw``), so every int8 weight they multiply must satisfy 2 x 255 x |w| <= 32,767.
"""

import warnings

import numpy as np
import pytest

from helpers.bundles import copy_bundle, rewrite_bundle
from sports_classifier import bundle, selfcheck
from sports_classifier.classifier import Classifier
from sports_classifier.errors import BundleError

INT16_MAX = 32767


@pytest.fixture(scope="module")
def int8_bundle(trained_tiny_bundle, tmp_path_factory):
    """The tiny bundle exported as the bundled models are (exported once: tests only read it)."""
    from helpers.datasets import make_dataset

    from sports_classifier.training.export import export_bundle

    dest = tmp_path_factory.mktemp("int8") / "bundle"
    copy_bundle(trained_tiny_bundle, dest)
    calibration = make_dataset(tmp_path_factory.mktemp("calibration"))
    report = export_bundle(dest, formats=["onnx-fp16", "onnx-int8"], calibration=calibration,
                           calibration_images=12)
    assert any("cannot saturate" in line for line in report)
    return dest


@pytest.fixture
def jpegs(synthetic_dataset):
    return sorted(str(p) for p in (synthetic_dataset / "train").rglob("*.jpg"))


def _tampered_int8(src):
    """A writer for ``src``'s int8 model with the first convolution's weights negated."""
    import onnx
    from onnx import numpy_helper

    from sports_classifier.training.export import u8s8_gemm_weights

    model = onnx.load(str(src))
    name = next(iter(u8s8_gemm_weights(src)))
    for init in model.graph.initializer:
        if init.name == name:
            init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), name))
    return lambda dest: onnx.save(model, str(dest))


# -- the recipe ---------------------------------------------------------------------------------------


def test_int8_weights_cannot_saturate_a_u8s8_kernel(int8_bundle):
    from sports_classifier.training.export import max_pair_sum, u8s8_gemm_weights

    weights = u8s8_gemm_weights(int8_bundle / bundle.ONNX_INT8)
    assert weights, "the tiny network has convolutions quantised to int8"
    for name, w in weights.items():
        assert np.abs(w.astype(np.int32)).max() <= 64, name  # 7-bit
    assert max_pair_sum(int8_bundle / bundle.ONNX_INT8) <= INT16_MAX


def test_the_pair_sum_check_sees_8_bit_weights(tmp_path, int8_bundle):
    """The property test can fail: the same model with one weight at the full int8 range does."""
    import onnx
    from onnx import numpy_helper

    from sports_classifier.training.export import max_pair_sum, u8s8_gemm_weights

    model = onnx.load(str(int8_bundle / bundle.ONNX_INT8))
    name = next(iter(u8s8_gemm_weights(int8_bundle / bundle.ONNX_INT8)))
    for init in model.graph.initializer:
        if init.name == name:
            w = numpy_helper.to_array(init).copy()
            w.flat[0] = 127
            init.CopyFrom(numpy_helper.from_array(w, name))
    onnx.save(model, str(tmp_path / "full-range.onnx"))
    assert max_pair_sum(tmp_path / "full-range.onnx") == 2 * 255 * 127 > INT16_MAX


def test_float_onnx_stored_in_float16_computes_the_same(int8_bundle, trained_tiny_bundle, jpegs):
    halved = Classifier.from_pretrained(int8_bundle, runtime="onnx")
    float32 = Classifier.from_pretrained(trained_tiny_bundle, runtime="onnx")
    np.testing.assert_allclose(halved.predict_proba(jpegs), float32.predict_proba(jpegs), atol=2e-3)
    assert bundle.sha256_file(int8_bundle / bundle.ONNX) == bundle.read_config(int8_bundle).files_sha256[bundle.ONNX]


# -- the self-check -------------------------------------------------------------------------------------


def test_a_sound_int8_model_passes_its_self_check(int8_bundle):
    clf = Classifier.from_pretrained(int8_bundle)
    assert clf.runtime == "onnxruntime-int8"
    assert clf.selfcheck is not None and clf.selfcheck.passed
    assert clf.selfcheck.images == selfcheck.REFERENCE_IMAGES
    assert clf.selfcheck.top1_kept == clf.selfcheck.top1_expected
    assert "self-check passed" in clf.serving_note and "passed" in clf.serving_summary
    reference = bundle.read_selfcheck(int8_bundle, clf.config)
    assert reference.pixels.dtype == np.uint8 and reference.measured_on["int8_kind"]


def test_a_tampered_int8_model_is_caught_and_the_float_model_serves(int8_bundle, tmp_path, jpegs):
    bad = rewrite_bundle(int8_bundle, tmp_path / "bad", replace={bundle.ONNX_INT8: _tampered_int8(int8_bundle / bundle.ONNX_INT8)})
    with pytest.warns(UserWarning, match="does not match its float network"):
        clf = Classifier.from_pretrained(bad)
    assert clf.runtime == "onnxruntime" and not clf.selfcheck.passed
    assert "failed its self-check" in clf.serving_note
    float_model = Classifier.from_pretrained(int8_bundle, runtime="onnx")
    np.testing.assert_allclose(clf.predict_proba(jpegs), float_model.predict_proba(jpegs), atol=1e-6)
    assert clf.evaluate(_dataset_of(jpegs))["selfcheck"]["passed"] is False

    # Asked for by name, the int8 model serves anyway, with the warning.
    with pytest.warns(UserWarning, match="serving it anyway"):
        assert Classifier.from_pretrained(bad, runtime="onnx-int8").runtime == "onnxruntime-int8"


def test_a_tampered_int8_model_without_a_float_model_is_refused(int8_bundle, tmp_path):
    bad = rewrite_bundle(int8_bundle, tmp_path / "bad", drop=[bundle.ONNX],
                         replace={bundle.ONNX_INT8: _tampered_int8(int8_bundle / bundle.ONNX_INT8)})
    with pytest.raises(BundleError, match="no float model.onnx to serve instead"):
        Classifier.from_pretrained(bad)


def test_a_bundle_without_a_reference_serves_int8_and_says_so(int8_bundle, tmp_path):
    old = rewrite_bundle(int8_bundle, tmp_path / "old", drop=[bundle.SELFCHECK])
    clf = Classifier.from_pretrained(old)
    assert clf.runtime == "onnxruntime-int8" and clf.selfcheck is None
    assert "no self-check" in clf.serving_note


@pytest.mark.parametrize("payload", ["not a zip", "pickle", "shapes"])
def test_a_malformed_reference_is_a_bundle_error(int8_bundle, tmp_path, payload):
    def write(dest):
        if payload == "not a zip":
            dest.write_bytes(b"\x00" * 100)
        elif payload == "pickle":  # object arrays need pickle, which the reader never allows
            np.savez(dest, pixels=np.array([{"a": 1}], dtype=object), float_probs=np.zeros((1, 3)),
                     int8_probs=np.zeros((1, 3)), measured_on=np.zeros(2, np.uint8))
        else:
            np.savez(dest, pixels=np.zeros((2, 8, 8, 3), np.uint8), float_probs=np.zeros((3, 3)),
                     int8_probs=np.zeros((2, 3)), measured_on=np.frombuffer(b"{}", np.uint8))

    bad = rewrite_bundle(int8_bundle, tmp_path / "bad", replace={bundle.SELFCHECK: write})
    with pytest.raises(BundleError, match="self-check reference|unexpected shapes"):
        Classifier.from_pretrained(bad)


def _dataset_of(jpegs):
    from pathlib import Path

    return Path(jpegs[0]).parents[2]


# -- close calls ------------------------------------------------------------------------------------------


class _Fixed:
    """An engine that answers fixed probabilities (one row per image, by position)."""

    def __init__(self, probs):
        self.probs, self.calls = np.asarray(probs, np.float32), []
        self.threads, self.name = 3, "fixed"

    def __call__(self, pixels):
        self.calls.append(len(pixels))
        return self.probs[pixels[:, 0, 0, 0].astype(int)]


def test_close_calls_are_settled_by_the_float_model():
    from sports_classifier.runtime import CloseCallEngine

    int8 = _Fixed([[0.50, 0.45, 0.05], [0.90, 0.05, 0.05], [0.40, 0.20, 0.40]])
    exact = _Fixed([[0.40, 0.55, 0.05], [0.80, 0.10, 0.10], [0.30, 0.20, 0.50]])
    made = []
    engine = CloseCallEngine(int8, lambda: made.append(1) or exact, margin=0.25)
    pixels = np.zeros((3, 2, 2, 3), np.float32)
    pixels[:, 0, 0, 0] = [0, 1, 2]
    probs = engine(pixels)
    np.testing.assert_allclose(probs[0], exact.probs[0])   # margin 0.05: float decides
    np.testing.assert_allclose(probs[1], int8.probs[1])    # margin 0.85: int8 stands
    np.testing.assert_allclose(probs[2], exact.probs[2])   # a tie: float decides
    assert exact.calls == [2] and made == [1] and (engine.images, engine.close_calls) == (3, 2)
    assert engine.threads == 3  # the int8 engine's attributes show through

    confident = pixels[1:2]
    engine(confident)
    assert exact.calls == [2] and made == [1]  # no close call, no float run; the float model made once


def test_the_bundle_serves_int8_with_close_calls_and_int8_alone_on_request(int8_bundle, jpegs):
    from sports_classifier.runtime import CloseCallEngine

    served = Classifier.from_pretrained(int8_bundle)
    assert isinstance(served._engine, CloseCallEngine) and "close calls" in served.serving_note
    pure = Classifier.from_pretrained(int8_bundle, runtime="onnx-int8")
    assert not isinstance(pure._engine, CloseCallEngine)
    exact = Classifier.from_pretrained(int8_bundle, runtime="onnx")
    p_served, p_int8, p_float = (c.predict_proba(jpegs) for c in (served, pure, exact))
    top2 = np.sort(p_int8, 1)[:, -2:]
    close = top2[:, 1] - top2[:, 0] < 0.25
    np.testing.assert_allclose(p_served[close], p_float[close], atol=1e-6)
    np.testing.assert_allclose(p_served[~close], p_int8[~close], atol=1e-6)


def test_the_cli_says_when_the_float_model_serves(int8_bundle, tmp_path, jpegs, capsys):
    from sports_classifier.cli import main

    bad = rewrite_bundle(int8_bundle, tmp_path / "bad", replace={bundle.ONNX_INT8: _tampered_int8(int8_bundle / bundle.ONNX_INT8)})
    with warnings.catch_warnings():
        assert main(["predict", "--model", str(bad), "--top-k", "1", jpegs[0]]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "serving the float model.onnx instead" in err and "Traceback" not in err
    assert main(["evaluate", "--model", str(bad), "--data", str(_dataset_of(jpegs)), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"selfcheck": {"passed": false' in out and '"int8_kind"' in out


def test_a_reference_that_inflates_past_its_cap_is_refused_before_it_is_read(int8_bundle, tmp_path):
    """A checksummed selfcheck.npz of a few hundred KB that would inflate to 100 MB."""
    def write(dest):
        np.savez_compressed(dest, pixels=np.zeros((64, 1024, 512, 3), np.uint8), float_probs=np.zeros((64, 3)),
                            int8_probs=np.zeros((64, 3)), measured_on=np.frombuffer(b"{}", np.uint8))

    bad = rewrite_bundle(int8_bundle, tmp_path / "bad", replace={bundle.SELFCHECK: write})
    assert (bad / bundle.SELFCHECK).stat().st_size < selfcheck.MAX_REFERENCE_BYTES
    with pytest.raises(BundleError, match="inflates to"):
        Classifier.from_pretrained(bad)
