"""Inference runtime, exports (ONNX, int8) and the benchmark, on the tiny bundle.

No timing assertions here: speed is measured by ``sports-classifier bench`` (docs/benchmark.md).
"""

import json

import numpy as np
import pytest
from PIL import Image

from helpers.bundles import copy_bundle, rewrite_bundle
from sports_classifier import bundle
from sports_classifier.classifier import Classifier
from sports_classifier.errors import BundleError, ExportError, ImageDecodeError
from sports_classifier.images import load_rgb, preprocess, preprocess_batch


@pytest.fixture
def bundle_copy(trained_tiny_bundle, tmp_path):
    return copy_bundle(trained_tiny_bundle, tmp_path / "bundle")


@pytest.fixture
def jpegs(synthetic_dataset):
    return sorted(str(p) for p in (synthetic_dataset / "train").rglob("*.jpg"))


def _without_onnx(src, dest):
    """A copy of bundle ``src`` without any ONNX file (so no ONNX checksum either)."""
    return rewrite_bundle(src, dest, drop=[bundle.ONNX, bundle.ONNX_INT8])


# -- preprocessing and the pipelined predict path ------------------------------------------------


def _reference(source, size):
    """The preprocessing as first written: decode, upright, RGB, bilinear resize, float32."""
    img = load_rgb(source)
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def test_batch_preprocessing_gives_the_same_pixels(tmp_path, jpegs):
    rng = np.random.default_rng(1)
    sources = list(jpegs)
    for k, (w, h) in enumerate([(64, 48), (31, 77), (32, 32)]):
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        exif = Image.Exif()
        exif[0x0112] = (3, 6, 8)[k]
        img.save(tmp_path / f"r{k}.jpg", exif=exif.tobytes())
        img.convert("RGBA").save(tmp_path / f"a{k}.png")
        sources += [str(tmp_path / f"r{k}.jpg"), str(tmp_path / f"a{k}.png")]
    for size in (32, 24):
        batch = preprocess_batch(sources, size)
        assert batch.dtype == np.float32
        for row, source in zip(batch, sources):
            np.testing.assert_array_equal(row, _reference(source, size))
            np.testing.assert_array_equal(preprocess(source, size), row)


def test_a_callers_pil_image_is_not_modified(tmp_path):
    img = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    mine = Image.open(tmp_path / "rot.jpg")
    assert preprocess(mine, 16).shape == (16, 16, 3)
    assert mine.size == (40, 20) and mine.getexif().get(0x0112) == 6  # turned a copy, not it


def test_pipelined_prediction_equals_one_big_batch(jpegs, tmp_path):
    from sports_classifier.runtime import predict_sources

    seen = []

    def engine(pixels):
        seen.append(len(pixels))
        return pixels.reshape(len(pixels), -1)[:, :5] * 1.0

    got = predict_sources(engine, jpegs, 32, batch_size=4)
    np.testing.assert_array_equal(got, engine(preprocess_batch(jpegs, 32)))
    assert seen[:-1] == [4] * (len(jpegs) // 4) + ([len(jpegs) % 4] if len(jpegs) % 4 else [])

    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(ImageDecodeError, match="bad.jpg"):
        predict_sources(engine, jpegs[:9] + [str(bad)], 32, batch_size=4)


def test_classifier_predicts_many_paths_in_batches(tiny_bundle, jpegs, monkeypatch):
    import sports_classifier.runtime as runtime

    monkeypatch.setattr(runtime, "BATCH", 4)
    clf = Classifier.from_pretrained(tiny_bundle)
    many = clf.predict_proba(jpegs)
    assert many.shape == (len(jpegs), len(clf.labels))
    one_by_one = np.concatenate([clf.predict_proba([p]) for p in jpegs])
    np.testing.assert_allclose(many, one_by_one, atol=1e-6)


def test_onnx_session_settings(tiny_bundle):
    import onnxruntime as ort

    from sports_classifier.runtime import physical_cores

    from sports_classifier.runtime import OnnxEngine

    assert Classifier.from_pretrained(tiny_bundle).threads == physical_cores() >= 1
    engine = OnnxEngine(tiny_bundle / bundle.ONNX)
    batch = engine.session.get_session_options()
    assert batch.intra_op_num_threads == 1  # batches: parallel over images, not operators
    assert batch.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    single = engine._single_session().get_session_options()
    assert single.intra_op_num_threads == physical_cores()  # one image: over the cores


@pytest.mark.parametrize("threads", [1, 3])
def test_onnx_engine_gives_the_same_outputs_in_groups(tiny_bundle, threads):
    from sports_classifier.runtime import OnnxEngine

    engine = OnnxEngine(tiny_bundle / bundle.ONNX, threads=threads)
    pixels = np.random.default_rng(0).uniform(0, 255, (11, 32, 32, 3)).astype(np.float32)
    whole = engine.session.run(None, {engine.input_name: pixels})[0]
    np.testing.assert_allclose(engine(pixels), whole, atol=1e-6)
    np.testing.assert_allclose(engine(pixels[3:4]), whole[3:4], atol=1e-6)
    assert engine(pixels[:0]).shape == (0,) + whole.shape[1:]


# -- ONNX export ------------------------------------------------------------------------------------


def test_export_rejects_a_mismatch_and_leaves_no_file(trained_tiny_bundle, tmp_path, monkeypatch):
    import sports_classifier.runtime as runtime

    config = bundle.read_config(trained_tiny_bundle)
    model = bundle.load_keras_model(trained_tiny_bundle, config)
    sample = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    real_run = runtime.OnnxEngine.run_all
    monkeypatch.setattr(runtime.OnnxEngine, "run_all",
                        lambda self, x: {k: v + 1e-3 for k, v in real_run(self, x).items()})
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ExportError, match="differs from Keras"):
        runtime.export_onnx(model, out / "model.onnx", sample=sample)
    assert list(out.iterdir()) == []


def test_export_bundle_failure_leaves_the_bundle_as_it_was(tmp_path, trained_tiny_bundle, monkeypatch):
    import sports_classifier.runtime as runtime

    src = _without_onnx(trained_tiny_bundle, tmp_path / "b")
    before = sorted((p.name, p.read_bytes()) for p in src.iterdir())
    real_run = runtime.OnnxEngine.run_all
    monkeypatch.setattr(runtime.OnnxEngine, "run_all",
                        lambda self, x: {k: v + 1.0 for k, v in real_run(self, x).items()})
    with pytest.raises(ExportError):
        from sports_classifier.training.export import export_bundle

        export_bundle(src, formats=["onnx"])
    assert sorted((p.name, p.read_bytes()) for p in src.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temporary folders left


def test_export_bundle_adds_onnx_and_its_checksum(tmp_path, trained_tiny_bundle, jpegs):
    from sports_classifier.training.export import export_bundle

    path = _without_onnx(trained_tiny_bundle, tmp_path / "b")
    assert Classifier.from_pretrained(path).runtime == "keras"
    report = export_bundle(path, formats=["onnx"])
    assert "model.onnx" in report[0]
    config = bundle.read_config(path)
    assert config.files_sha256[bundle.ONNX] == bundle.sha256_file(path / bundle.ONNX)
    assert config.files_sha256[bundle.WEIGHTS] == bundle.sha256_file(path / bundle.WEIGHTS)
    fast = Classifier.from_pretrained(path)
    assert fast.runtime == "onnxruntime"
    keras = Classifier.from_pretrained(path, runtime="keras")
    np.testing.assert_allclose(fast.predict_proba(jpegs), keras.predict_proba(jpegs), atol=1e-4)


def test_export_argument_errors(bundle_copy):
    from sports_classifier.training.export import export_bundle

    with pytest.raises(ExportError, match="unknown export format"):
        export_bundle(bundle_copy, formats=["tflite-fp3"])
    with pytest.raises(ExportError, match="calibration"):
        export_bundle(bundle_copy, formats=["onnx-int8"])


# -- int8 ---------------------------------------------------------------------------------------------


def test_int8_export_and_runtime(bundle_copy, synthetic_dataset, jpegs):
    from sports_classifier.training.export import export_bundle

    with pytest.raises(BundleError, match="onnx-int8"):
        Classifier.from_pretrained(bundle_copy, runtime="onnx-int8")
    onnx_before = bundle.sha256_file(bundle_copy / bundle.ONNX)
    report = export_bundle(bundle_copy, formats=["onnx-int8"], calibration=synthetic_dataset,
                           calibration_images=10)
    assert bundle.ONNX_INT8 in report[-1] and "10 images" in report[-1]
    config = bundle.read_config(bundle_copy)
    assert config.files_sha256[bundle.ONNX_INT8] == bundle.sha256_file(bundle_copy / bundle.ONNX_INT8)
    assert bundle.sha256_file(bundle_copy / bundle.ONNX) == onnx_before  # float model kept as it was

    # A bundle that carries an int8 model serves through it by default; the float one on request.
    assert Classifier.from_pretrained(bundle_copy).runtime == "onnxruntime-int8"
    assert Classifier.from_pretrained(bundle_copy, runtime="onnx").runtime == "onnxruntime"
    int8 = Classifier.from_pretrained(bundle_copy, runtime="onnx-int8")
    assert int8.runtime == "onnxruntime-int8"
    probs = int8.predict_proba(jpegs)
    assert probs.shape == (len(jpegs), 3) and np.allclose(probs.sum(1), 1, atol=1e-5)  # float softmax
    assert int8.evaluate(synthetic_dataset)["engine"] == "onnxruntime-int8"

    (bundle_copy / bundle.ONNX_INT8).write_bytes(b"tampered")
    with pytest.raises(BundleError, match="corrupt or was modified"):
        Classifier.from_pretrained(bundle_copy, runtime="onnx-int8")


def test_int8_export_without_onnx_exports_float_first(tmp_path, trained_tiny_bundle, synthetic_dataset):
    from sports_classifier.training.export import export_bundle

    path = _without_onnx(trained_tiny_bundle, tmp_path / "b")
    report = export_bundle(path, formats=["onnx-int8"], calibration=synthetic_dataset / "train",
                           calibration_images=6)
    assert [line.split(":")[0] for line in report] == [bundle.ONNX, bundle.ONNX_INT8]
    config = bundle.read_config(path)
    assert {bundle.ONNX, bundle.ONNX_INT8} <= set(config.files_sha256)


def test_save_pretrained_keeps_the_int8_model(bundle_copy, synthetic_dataset, tmp_path):
    from sports_classifier.training.export import export_bundle

    export_bundle(bundle_copy, formats=["onnx-int8"], calibration=synthetic_dataset, calibration_images=6)
    saved = Classifier.from_pretrained(bundle_copy).save_pretrained(tmp_path / "saved")
    assert (saved / bundle.ONNX_INT8).is_file()
    assert Classifier.from_pretrained(saved, runtime="onnx-int8").runtime == "onnxruntime-int8"


# -- benchmark ------------------------------------------------------------------------------------------


def test_bench_runs_and_returns_every_figure(trained_tiny_bundle, synthetic_dataset, capsys):
    from sports_classifier.bench import run_benchmark

    result = run_benchmark(trained_tiny_bundle, synthetic_dataset, images=6, repeats=3, passes=1, as_json=True)
    printed = json.loads(capsys.readouterr().out)
    assert printed["images"] == result["images"] == 6
    assert set(result["engines"]) == {"keras", "onnx"}
    for name, e in result["engines"].items():
        for key in ("predict_paths", "engine_on_arrays", "decode_only"):
            assert e[key]["images_per_s"] > 0
        assert e["latency_predict"]["median_ms"] > 0 and e["latency_predict"]["p95_ms"] > 0
        assert e["peak_rss_mb"] > 0 and len(e["top1"]) == 6
    keras, onnx = result["engines"]["keras"], result["engines"]["onnx"]
    assert keras["keras_predict_arrays"]["images_per_s"] > 0 and keras["latency_keras_predict"]["median_ms"] > 0
    assert onnx["engine"] == "onnxruntime" and onnx["tensorflow_imported"] is False
    ratios = result["ratios"]["onnx"]
    for key in ("throughput_vs_keras_predict", "throughput_vs_keras_classifier", "latency_vs_keras_predict",
                "latency_vs_keras_classifier", "peak_rss_vs_keras", "top1_agreement_with_keras"):
        assert ratios[key] is not None
    assert ratios["top1_agreement_with_keras"] == 1.0
    assert len(result["targets"]) == 3 and result["machine"]["physical_cores"] >= 1


def test_bench_table_and_bad_data(tiny_bundle, synthetic_dataset, tmp_path, capsys):
    from sports_classifier.bench import run_benchmark
    from sports_classifier.errors import DatasetLayoutError

    run_benchmark(tiny_bundle, synthetic_dataset, images=2, repeats=2, passes=1, runtimes=("onnx",))
    table = capsys.readouterr().out
    assert "Classifier.predict, JPEG paths" in table and "onnx" in table
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetLayoutError, match="no JPEG"):
        run_benchmark(tiny_bundle, empty, images=2, repeats=2)


def test_slim_bundle_fp16_weights_and_no_float_onnx(bundle_copy, synthetic_dataset, jpegs):
    from sports_classifier.training.export import export_bundle

    before = Classifier.from_pretrained(bundle_copy, runtime="keras").predict_proba(jpegs)
    size = (bundle_copy / bundle.WEIGHTS).stat().st_size
    with pytest.raises(ExportError, match="no model.int8.onnx"):
        export_bundle(bundle_copy, formats=["weights-fp16"], drop_float_onnx=True)
    report = export_bundle(bundle_copy, formats=["weights-fp16", "onnx-int8"], calibration=synthetic_dataset,
                           calibration_images=6, drop_float_onnx=True)
    assert any("float16" in line for line in report) and any("left out" in line for line in report)
    assert not (bundle_copy / bundle.ONNX).exists()
    config = bundle.read_config(bundle_copy)
    assert bundle.ONNX not in config.files_sha256
    assert (bundle_copy / bundle.WEIGHTS).stat().st_size < size  # tiny model: mostly HDF5 overhead
    import h5py

    with h5py.File(bundle_copy / bundle.WEIGHTS) as f:
        kinds = set()
        f.visititems(lambda name, item: kinds.add(str(item.dtype)) if isinstance(item, h5py.Dataset) else None)
    assert kinds == {"float16"}
    keras = Classifier.from_pretrained(bundle_copy, runtime="keras")
    assert keras.keras_model.weights[0].dtype == "float32"  # loaded back as float32
    np.testing.assert_allclose(keras.predict_proba(jpegs), before, atol=1e-2)
    assert Classifier.from_pretrained(bundle_copy).runtime == "onnxruntime-int8"
    with pytest.raises(BundleError, match="no model.onnx"):
        Classifier.from_pretrained(bundle_copy, runtime="onnx")
