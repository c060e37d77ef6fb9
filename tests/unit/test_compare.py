"""The Compare tab's data, as plain functions (no Gradio, no TensorFlow): the accuracy-vs-speed
chart and its Pareto front, the table's leading columns, the most-confused pairs, the mistakes
browser and its background cache, and the curves' stage spans.

The real bundles in models/ (ONNX, loaded in a fraction of a second) serve as the three-model
case; a folder that is not a bundle is the model that fails to load.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sports_classifier import bundle, plots
from sports_classifier.app import compare, data_view, mistakes
from sports_classifier.app.registry import ModelRegistry
from sports_classifier.classifier import Prediction
from sports_classifier.hub import parse_model_sources

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
BUNDLED = ("lite0", "lite0-distilled", "ensemble-finetuned")


def bundled(*names: str) -> list[str]:
    found = [str(MODELS / n) for n in names if (MODELS / n / bundle.CONFIG).is_file()]
    if len(found) < len(names):
        pytest.skip("the bundled models are not in models/")
    return found


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """The three bundled models and one folder that fails to load, loaded once."""
    broken = tmp_path_factory.mktemp("broken") / "broken"
    broken.mkdir()
    (broken / bundle.CONFIG).write_text("{not json")
    reg = ModelRegistry(parse_model_sources(",".join(bundled(*BUNDLED) + [str(broken)])))
    reg.warm_up(background=False)
    return reg


# -- the chart --------------------------------------------------------------------------------------


def test_pareto_front_keeps_only_points_nothing_beats():
    # (ms, accuracy): b is slower and worse than a; d ties a on speed but is less accurate
    points = [(10.0, 0.95), (20.0, 0.90), (40.0, 0.98), (10.0, 0.93), (5.0, 0.80)]
    assert plots.pareto_front(points) == [4, 0, 2]
    assert plots.pareto_front([(7.0, 0.5)]) == [0]
    assert plots.pareto_front([]) == []
    assert plots.pareto_front([(1.0, 0.9), (1.0, 0.9)]) == [0, 1]  # equal points dominate neither


def test_chart_points_for_three_models_and_one_that_failed(three, tmp_path):
    points, missing = compare.speed_points(three)
    assert [p[0] for p in points] == list(BUNDLED)
    for name, ms, accuracy in points:
        assert accuracy == pytest.approx(bundle.read_metrics(MODELS / name)["valid"]["accuracy"], abs=1e-4)
        assert ms == round(three.entry(name).latency_ms, 1) and ms > 0
    assert missing == ["broken (failed to load)"]
    chart = compare.speed_chart(three, tmp_path)
    assert Image.open(chart).format == "PNG" and Image.open(chart).width > 600
    start = time.perf_counter()
    assert compare.speed_chart(three, tmp_path) == chart  # drawn once
    assert time.perf_counter() - start < 0.5


def test_chart_with_one_model(tmp_path):
    reg = ModelRegistry(parse_model_sources(bundled("lite0")[0]))
    points, missing = compare.speed_points(reg)
    assert [p[0] for p in points] == ["lite0"] and missing == []
    assert Image.open(compare.speed_chart(reg, tmp_path)).format == "PNG"
    # no model at all still draws (an empty chart that says so), and so does one with only references
    assert plots.speed_accuracy_png([], compare.REPORTED_ELSEWHERE, failed=["x (failed to load)"])[:4] == b"\x89PNG"


def test_reference_lines_are_the_notebooks_published_test_accuracies():
    labels = dict((round(v, 3), text) for text, v in compare.REPORTED_ELSEWHERE)
    assert set(labels) == {0.97, 0.887}
    assert "EfficientNetB0" in labels[0.97] and "ResNet50" in labels[0.887]
    assert all("reported elsewhere" in text for text in labels.values())


# -- the table --------------------------------------------------------------------------------------


def test_table_leads_with_what_people_compare(three):
    frame = compare.compare_table(three)
    assert list(frame.columns[:6]) == ["model", "accuracy", "top-5 accuracy", "macro F1", "ms / image", "size MB"]
    rows = frame.set_index("model")
    assert rows.loc["ensemble-finetuned", "architecture"] == "lite0+lite2"
    assert rows.loc["lite0", "architecture"] == "lite0"
    served = MODELS / "lite0" / three.get("lite0").model_file
    assert rows.loc["lite0", "size MB"] == round(served.stat().st_size / 2**20, 2)
    assert rows.loc["broken", "status"].startswith("failed to load")
    assert pd.isna(rows.loc["broken", "accuracy"])
    full = compare.architectures_markdown(three)
    assert "`lite0+lite2`): ensemble of efficientnet_lite0 (224 px) + efficientnet_lite2" in full


def test_short_architecture_of_single_networks_and_ensembles():
    class Cfg:
        backbones = ["efficientnet_lite0", "efficientnet_lite2"]

    assert compare.short_architecture(Cfg) == "lite0+lite2"
    Cfg.backbones = ["tiny_cnn"]
    assert compare.short_architecture(Cfg) == "tiny_cnn"


# -- curves ---------------------------------------------------------------------------------------------


def test_stage_spans_merge_consecutive_epochs_only():
    stages = ["a:head"] * 3 + ["a:fine"] * 2 + ["b:head"] * 2 + ["a:head"]
    assert plots.stage_spans(stages) == [("a:head", 1, 3), ("a:fine", 4, 5), ("b:head", 6, 7), ("a:head", 8, 8)]
    assert plots.stage_spans([]) == []


def test_curves_are_drawn_from_the_history_once(three, tmp_path):
    first = compare.curves_picture(three, "ensemble-finetuned", tmp_path)
    assert Image.open(first).format == "PNG" and Path(first).parent == tmp_path
    assert compare.curves_picture(three, "ensemble-finetuned", tmp_path) == first
    assert compare.curves_picture(three, "broken", tmp_path) is None
    history = pd.DataFrame({"stage": ["head", "head", "fine_tune"], "accuracy": [0.5, 0.7, 0.8],
                            "val_accuracy": [0.4, 0.6, 0.7], "loss": [2, 1, 0.5], "val_loss": [2.1, 1.2, 0.9]})
    assert plots.curves_png(history)[:4] == b"\x89PNG"
    assert plots.curves_png(history.drop(columns="stage"))[:4] == b"\x89PNG"  # older histories


# -- where each model goes wrong ------------------------------------------------------------------------


def test_confused_pairs_are_the_largest_off_diagonal_cells():
    labels = ["a", "b", "c"]
    cm = [[5, 2, 0],
          [0, 4, 3],
          [2, 0, 6]]
    pairs = mistakes.confused_pairs(cm, labels, top=2)
    assert pairs == [{"true": "b", "predicted": "c", "count": 3, "of": 7},
                     {"true": "a", "predicted": "b", "count": 2, "of": 7}]  # tie with c -> a: label order
    assert len(mistakes.confused_pairs(cm, labels)) == 3
    assert mistakes.confused_pairs(np.eye(3, dtype=int) * 5, labels) == []  # no mistakes, no pairs
    assert mistakes.confused_pairs(cm, ["a", "b"]) == []  # a matrix that does not fit the labels
    table = mistakes.pairs_table(pairs)
    assert list(table.columns) == ["true class", "predicted as", "count", "of (images)"]


def test_confused_pairs_of_a_bundled_model_come_from_its_recorded_matrix(three):
    cm, labels = mistakes.model_confusion(three, "lite0")
    recorded = np.array(bundle.read_metrics(MODELS / "lite0")["valid"]["confusion_matrix"])
    pairs = mistakes.confused_pairs(cm, labels, top=500)
    assert sum(p["count"] for p in pairs) == recorded.sum() - np.trace(recorded)
    assert mistakes.model_confusion(three, "broken") == ([], [])


def mistake(path, true, *top):
    return mistakes.Mistake(str(path), true, tuple(top))


def test_pair_examples_show_an_image_mistaken_that_way_else_one_of_the_true_class(tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / label / "1.jpg")
    results = mistakes.ExampleResults("m", n=4, correct=3,
                                      mistakes=[mistake(tmp_path / "a" / "1.jpg", "a", ("b", 0.6), ("a", 0.3), ("c", 0.1))])
    pairs = [{"true": "a", "predicted": "b", "count": 2, "of": 5},
             {"true": "b", "predicted": "a", "count": 1, "of": 5},
             {"true": "zzz", "predicted": "a", "count": 1, "of": 5}]  # no example of that class: left out
    items = mistakes.pair_examples(pairs, results, tmp_path)
    assert items == [(str(tmp_path / "a" / "1.jpg"), "a → b: 2 of 5 (this image was mistaken so)"),
                     (str(tmp_path / "b" / "1.jpg"), "b → a: 1 of 5 (an example of the true class)")]
    assert len(mistakes.pair_examples(pairs, None, tmp_path)) == 2  # before the cache is ready


def test_mistakes_browser_filters_by_true_class_and_shows_the_top3():
    results = mistakes.ExampleResults("m", n=10, correct=8, mistakes=[
        mistake("x/a/1.jpg", "a", ("b", 0.61), ("a", 0.3), ("c", 0.05)),
        mistake("x/c/2.jpg", "c", ("a", 0.5), ("b", 0.25), ("c", 0.2))])
    items = mistakes.mistakes_gallery(results)
    assert items[0] == ("x/a/1.jpg", "true: a | top-3: b 61%, a 30%, c 5%")
    assert [p for p, _ in mistakes.mistakes_gallery(results, "c")] == ["x/c/2.jpg"]
    assert mistakes.mistakes_gallery(results, "b") == [] and mistakes.mistakes_gallery(None) == []
    table = mistakes.mistakes_table(results, "c")
    assert table.iloc[0].tolist() == ["c", "a (50%)", "b (25%)", "c (20%)"]
    assert mistakes.mistake_sports(results) == ["a", "c"]
    assert "2 of 10" in mistakes.mistakes_summary(results, "m")
    assert "background" in mistakes.mistakes_summary(None, "m")
    assert "no mistakes view" in mistakes.mistakes_summary(mistakes.ExampleResults("m", error="boom"), "m")


class FakeClassifier:
    """Predicts the class named in the file name's first letter ('a1.jpg' -> 'a'), counting calls."""

    def __init__(self, labels):
        self.labels = list(labels)
        self.calls = 0

    def predict_files(self, paths, top_k=3):
        self.calls += 1
        out = []
        for p in paths:
            guess = Path(p).name[0]
            others = [lbl for lbl in self.labels if lbl != guess]
            out.append(Prediction(str(p), [(guess, 0.7)] + [(o, 0.1) for o in others][: top_k - 1]))
        return out


def examples_folder(root: Path) -> Path:
    # a/a1.jpg right, a/b2.jpg wrong (predicted b), b/b1.jpg right, zz/a1.jpg: a class the model lacks
    for label, name in (("a", "a1.jpg"), ("a", "b2.jpg"), ("b", "b1.jpg"), ("zz", "a1.jpg")):
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(root / label / name)
    return root


def test_evaluate_examples_keeps_the_wrong_ones_with_top3(tmp_path):
    clf = FakeClassifier(["a", "b", "c"])
    res = mistakes.evaluate_examples(clf, examples_folder(tmp_path), "m")
    assert (res.n, res.correct, res.unknown_classes) == (3, 2, 1)
    assert [(Path(m.path).name, m.true, m.predicted) for m in res.mistakes] == [("b2.jpg", "a", "b")]
    assert [lbl for lbl, _ in res.mistakes[0].top] == ["b", "a", "c"]


class FakeRegistry:
    def __init__(self, classifiers: dict):
        self.names = list(classifiers)
        self._c = classifiers
        self.asked = []

    def entry(self, name):
        self.asked.append(name)
        clf = self._c[name]
        return type("Entry", (), {"ok": clf is not None, "classifier": clf,
                                  "error": None if clf else "broken bundle"})()


def test_mistakes_cache_predicts_each_model_once_in_one_background_thread(tmp_path):
    good = FakeClassifier(["a", "b", "c"])
    reg = FakeRegistry({"good": good, "bad": None})
    cache = mistakes.MistakesCache(reg, examples_folder(tmp_path))
    assert cache.get("good") is None  # never blocks
    thread = cache.start(first="bad")
    assert cache.start() is thread and thread.name == "mistakes" and thread.daemon
    thread.join(10)
    assert reg.asked == ["bad", "good"]  # the model asked for first
    assert cache.get("good").correct == 2 and good.calls == 1
    assert cache.get("bad").error == "failed to load: broken bundle"
    assert cache.compute("good") is cache.get("good") and good.calls == 1


def test_mistakes_cache_reports_a_model_that_cannot_predict(tmp_path):
    class Broken(FakeClassifier):
        def predict_files(self, paths, top_k=3):
            raise RuntimeError("engine gone")

    cache = mistakes.MistakesCache(FakeRegistry({"m": Broken(["a", "b"])}), examples_folder(tmp_path))
    assert cache.compute("m").error == "RuntimeError: engine gone"


def test_confusion_matrix_download_is_a_csv(tmp_path):
    dest = mistakes.write_confusion_csv([[1, 2], [3, 4]], ["a", "b"], tmp_path / "sub" / "cm.csv")
    rows = list(csv.reader(open(dest)))
    assert rows == [["true \\ predicted", "a", "b"], ["a", "1", "2"], ["b", "3", "4"]]


# -- the whole tab, after the models are warm ------------------------------------------------------------


def render_compare(reg, cache, out_dir):
    """What the app's Compare handler computes (app.py's on_compare, without Gradio)."""
    records = data_view.recorded_data(reg)
    out = [compare.speed_chart(reg, out_dir), compare.compare_table(reg), compare.architectures_markdown(reg),
           [compare.curves_picture(reg, n, out_dir) for n in reg.names], compare.disagreement_table(reg),
           data_view.data_markdown(records), data_view.distribution_chart(records, out_dir)]
    name = reg.names[0]
    cm, labels = mistakes.model_confusion(reg, name)
    pairs = mistakes.confused_pairs(cm, labels)
    results = cache.get(name)
    out += [mistakes.pair_examples(pairs, results, ROOT / "examples"), mistakes.pairs_table(pairs),
            mistakes.mistakes_gallery(results), mistakes.mistakes_table(results),
            mistakes.write_confusion_csv(cm, labels, out_dir / "cm.csv")]
    return out


def test_compare_renders_in_under_a_second_once_warm(three, tmp_path):
    cache = mistakes.MistakesCache(three, ROOT / "examples")
    render_compare(three, cache, tmp_path)  # the first time draws the charts (the app does it in the background)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        render_compare(three, cache, tmp_path)
        times.append(time.perf_counter() - start)
    assert min(times) < 1.0, times


def test_data_shown_for_the_bundled_models_comes_from_their_record(three, tmp_path):
    records = data_view.recorded_data(three)
    assert len(records) == 1 and records[0]["models"] == list(BUNDLED)
    counts = records[0]["counts"]["train"]
    assert sum(counts.values()) == records[0]["data"]["train_images"]
    assert Image.open(data_view.distribution_chart(records, tmp_path)).format == "PNG"
    assert "min 59, median 133.5, max 191" in data_view.data_markdown(records)  # the full split


def test_an_old_bundle_without_class_counts_is_said_so(tmp_path):
    config = json.loads((MODELS / "lite0" / bundle.CONFIG).read_text()) if (MODELS / "lite0").is_dir() else None
    if config is None:
        pytest.skip("no bundled model")
    config["training"]["data"].pop("class_counts", None)
    entry_cfg = type("Cfg", (), {"training": config["training"]})
    clf = type("Clf", (), {"config": entry_cfg})()
    reg = FakeRegistry({"old": clf})
    records = data_view.recorded_data(reg)
    assert records[0]["counts"] == {}
    assert "predates per-class counts" in data_view.data_markdown(records)
    assert data_view.distribution_chart(records, tmp_path) is None
    assert data_view.data_markdown([]).startswith("_No loaded model")


def test_sample_grid_spreads_over_the_classes(tmp_path):
    for i in range(30):
        (tmp_path / f"c{i:02d}").mkdir()
        for j in (1, 2):
            Image.new("RGB", (4, 4)).save(tmp_path / f"c{i:02d}" / f"{j}.jpg")
    items = data_view.sample_items(tmp_path, n=10)
    assert len(items) == 10 and len({c for _, c in items}) == 10
    assert all(p.endswith("1.jpg") for p, _ in items)
    assert data_view.sample_items(tmp_path / "missing") == []


def test_nothing_here_waits_on_a_lock_held_elsewhere():
    # the cache's lock only guards starting the thread; get() is a dict read
    cache = mistakes.MistakesCache(FakeRegistry({}), "/nonexistent")
    with cache._lock:
        done = []
        t = threading.Thread(target=lambda: done.append(cache.get("x")))
        t.start()
        t.join(2)
    assert done == [None]


def test_the_new_handlers_import_no_gradio_or_tensorflow():
    import subprocess
    import sys

    code = ("import sys, sports_classifier.app.mistakes, sports_classifier.app.data_view, "
            "sports_classifier.data_summary; "
            "print(sorted(m for m in ('gradio', 'tensorflow', 'keras', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_charts_drawn_ahead_in_a_child_process_are_the_ones_shown(three, tmp_path):
    import subprocess
    import sys

    specs = [compare.speed_spec(three, tmp_path)] + [compare.curves_spec(three, n, tmp_path) for n in BUNDLED]
    assert compare.curves_spec(three, "broken", tmp_path) is None
    subprocess.run([sys.executable, "-m", "sports_classifier.app.draw"], input=json.dumps(specs), text=True,
                   check=True, cwd=ROOT, timeout=300)
    drawn = {s["dest"]: Path(s["dest"]).stat().st_mtime_ns for s in specs}
    assert all(Image.open(d).format == "PNG" for d in drawn)
    shown = [compare.speed_chart(three, tmp_path)] + [compare.curves_picture(three, n, tmp_path) for n in BUNDLED]
    assert shown == [s["dest"] for s in specs]
    assert {d: Path(d).stat().st_mtime_ns for d in shown} == drawn  # found, not drawn again
    with pytest.raises(ValueError, match="unknown chart kind"):
        compare.draw_png("pie", [])
