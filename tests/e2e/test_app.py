"""The app as a real server: ``python app.py`` on 127.0.0.1, driven through gradio_client.

The right-sport checks need a trained 100-class model (models/ or runs/lite0) and skip
without one; the rest runs with the tiny test bundle. Time to serving and prediction latency
are printed (``-s`` or ``-rP`` shows them) and only loosely bounded: timing on a shared
machine is a measurement, not a test.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers.app_server import ROOT, real_bundle, start_app
from sports_classifier import bundle
from sports_classifier.app.examples import ALL_SPORTS
from sports_classifier.app.predict import TOP_K
from sports_classifier.hub import MODELS_ENV

gradio_client = pytest.importorskip("gradio_client")
EXAMPLES = ROOT / "examples"
REAL = real_bundle()
needs_real = pytest.mark.skipif(REAL is None, reason="no trained 100-class bundle in models/ or runs/lite0 "
                                "(train one: sports-classifier train --data ../shared/data/sports100 --out runs/lite0)")


@pytest.fixture(scope="module")
def app(tiny_bundle, tmp_path_factory):
    """One server for the module: the real model (if any), the tiny bundle and a missing one."""
    specs = ([str(REAL)] if REAL else []) + [str(tiny_bundle), str(tmp_path_factory.mktemp("x") / "missing")]
    server = start_app(",".join(specs), tmp_path_factory.mktemp("app-log") / "app.log")
    print(f"\ntime to serving: {server.seconds_to_serving:.2f} s (python app.py -> first GET / answered)")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(app):
    return gradio_client.Client(app.url, verbose=False)


def names_served():
    return ([REAL.name] if REAL else []) + ["tiny", "missing"]


def labels_of(result, n_models):
    """The /predict outputs: one gr.Label update per model, then one note per model, then status."""
    labels = [r.get("value") for r in result[:n_models]]
    notes = [r.get("value") for r in result[n_models:2 * n_models]]
    return labels, notes, result[-1]


def test_importing_app_loads_no_model(tiny_bundle):
    code = ("import json, sys, app; print(json.dumps([app.registry.names, "
            "[app.registry.loaded(n) is None for n in app.registry.names], "
            "sorted(m for m in ('tensorflow', 'keras', 'onnxruntime') if m in sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, MODELS_ENV: str(tiny_bundle)}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    names, not_loaded, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert names == ["tiny"] and all(not_loaded) and heavy == []


def test_time_to_serving(app):
    # The target is 3 s on a quiet machine (README); this only catches gross regressions (e.g. loading
    # TensorFlow or the models before serving). The figure is printed by the fixture.
    assert app.seconds_to_serving < 30


@needs_real
def test_prediction_names_the_right_sport(client):
    n = len(names_served())
    for sport in ("basketball", "archery", "formula 1 racing"):
        result = client.predict(gradio_client.handle_file(str(EXAMPLES / sport / "1.jpg")), names_served(),
                                api_name="/predict")
        labels, notes, status = labels_of(result, n)
        assert labels[0]["label"] == sport, labels[0]
        assert len(labels[0]["confidences"]) == TOP_K
        assert " ms" in notes[0] and "may not show" not in notes[0]
        # the missing model is reported, the others still answer
        assert labels[1]["label"] in ("cats", "dogs", "owls")
        assert "model failed to load" in notes[2] and "not found" in notes[2]
        assert "failed to load" in status


@needs_real
def test_prediction_latency_through_the_client(client):
    image = gradio_client.handle_file(str(EXAMPLES / "surfing" / "1.jpg"))
    client.predict(image, [REAL.name], api_name="/predict")  # warm
    times = []
    for _ in range(5):
        start = time.perf_counter()
        result = client.predict(image, [REAL.name], api_name="/predict")
        times.append(time.perf_counter() - start)
    assert labels_of(result, len(names_served()))[0][0]["label"] == "surfing"
    median = statistics.median(times)
    print(f"\nprediction round trip through gradio_client (upload + queue + ONNX + answer): "
          f"median {median * 1000:.0f} ms, max {max(times) * 1000:.0f} ms over {len(times)}")
    assert median < 1.0


@needs_real
def test_out_of_distribution_note_for_a_non_sport_picture(client, tmp_path):
    from PIL import Image

    flat = tmp_path / "grey.png"
    Image.new("RGB", (224, 224), (128, 128, 128)).save(flat)
    result = client.predict(gradio_client.handle_file(str(flat)), [REAL.name], api_name="/predict")
    labels, notes, _ = labels_of(result, len(names_served()))
    top = labels[0]["confidences"][0]["confidence"]
    record = bundle.read_config(REAL).out_of_distribution
    assert record is not None, f"{REAL} carries no out-of-distribution threshold"
    assert (top < record["threshold"]) == ("may not show any of the sports" in notes[0])


def test_user_errors_come_back_as_messages(client):
    with pytest.raises(Exception, match="choose at least one model"):
        client.predict(gradio_client.handle_file(str(EXAMPLES / "golf" / "1.jpg")), [], api_name="/predict")
    with pytest.raises(Exception, match="upload one or more images"):
        client.predict([], ["tiny"], api_name="/batch")


def test_compare_numbers_equal_the_metrics_files(client, tiny_bundle):
    n = len(names_served())
    chart, table, architectures, _ = client.predict(api_name="/compare")
    assert "tiny" in architectures
    *curves, disagreement, data_note, distribution, samples = client.predict(api_name="/compare_details")
    assert samples and "tiny" in data_note
    pairs, pairs_table, wrong, wrong_table, note, _, downloads, _ = client.predict("tiny", ALL_SPORTS,
                                                                                api_name="/mistakes")
    frame = pd.DataFrame(table["data"], columns=table["headers"]).set_index("model")
    assert table["headers"][:6] == ["model", "accuracy", "top-5 accuracy", "macro F1", "ms / image", "size MB"]
    served = {"tiny": tiny_bundle} | ({REAL.name: REAL} if REAL else {})
    for name, path in served.items():
        valid = bundle.read_metrics(path)["valid"]
        for column, key in (("accuracy", "accuracy"), ("top-5 accuracy", "top5_accuracy"),
                            ("macro F1", "macro_f1"), ("loss", "loss")):
            assert frame.loc[name, column] == round(valid[key], 4)
        assert frame.loc[name, "valid images"] == valid["n"]
    assert frame.loc["missing", "status"].startswith("failed to load")
    assert Path(chart).is_file()  # the accuracy-vs-speed chart, with the missing model named under it
    # one curves picture per model, in the order served; none for the missing one
    assert [c is not None for c in curves] == [True] * (n - 1) + [False]
    assert all(Path(p).is_file() for p in curves[:-1])
    assert disagreement["headers"][0] == "class"
    assert pairs_table["headers"][:3] == ["true class", "predicted as", "count"]
    assert "tiny" in note and downloads  # the confusion matrix stays downloadable


def test_batch_returns_a_table_and_a_csv(client):
    files = [gradio_client.handle_file(str(EXAMPLES / s / "2.jpg")) for s in ("golf", "rowing", "judo")]
    table, download = client.predict(files, ["tiny"], api_name="/batch")
    frame = pd.DataFrame(table["data"], columns=table["headers"])
    assert len(frame) == 3 and set(frame["model"]) == {"tiny"}
    csv = pd.read_csv(download["value"] if isinstance(download, dict) else download)
    assert csv["prediction"].tolist() == frame["prediction"].tolist()


def test_example_grid_endpoint(client):
    # gr.State is not part of the API: the client sends the model and the sport filter
    image, summary = client.predict("tiny", ALL_SPORTS, api_name="/grid")
    assert "of 20 correct" in summary and "wrong (in red)" in summary  # the tiny model is weak
    from PIL import Image

    width, height = Image.open(image).size
    assert width > 600 and height > 600  # 4 rows of 5 titled photos


def test_tensorflow_stays_out_of_predict_and_explain(app, client):
    """ONNX bundles serve without TensorFlow, Explain included: its heat map comes from the ONNX
    model's class-map output, computed in NumPy."""
    client.predict(gradio_client.handle_file(str(EXAMPLES / "golf" / "1.jpg")), ["tiny"], api_name="/predict")
    assert "tensorflow" not in app.loaded_libraries()
    heatmap, caption = client.predict(gradio_client.handle_file(str(EXAMPLES / "golf" / "1.jpg")), "tiny",
                                      api_name="/explain")
    assert "Class activation map of **tiny**" in caption and Path(heatmap).is_file()
    assert "tensorflow" not in app.loaded_libraries()  # its shared libraries never mapped

