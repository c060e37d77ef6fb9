"""The app's plain-Python handlers (sports_classifier.app), without Gradio or a browser.

Most tests use a tiny network trained in seconds on three real classes of
../shared/data/sports100 (archery, basketball, bowling); it is weak (that is the point: the
example grid then has wrong predictions to mark).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sports_classifier import bundle, ood
from sports_classifier.app import about, batch, compare, examples, predict
from sports_classifier.app.registry import ModelRegistry
from sports_classifier.classifier import Classifier
from sports_classifier.errors import ModelLoadError, UserInputError
from sports_classifier.hub import MODELS_ENV, bundled_models, parse_model_sources, served_models

from helpers.bundles import copy_bundle
from helpers.tiny_bundle import SPORTS_CONFIG, copy_of_committed

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CLASSES = SPORTS_CONFIG["classes"]


@pytest.fixture(scope="session")
def sports_tiny(tmp_path_factory) -> Path:
    """The committed ONNX-only bundle of the tiny CNN on 3 real sports (tests/fixtures/tiny3)."""
    return copy_of_committed("tiny3", tmp_path_factory.mktemp("ui-bundles") / "tiny3")


@pytest.fixture(scope="session")
def trained_sports_tiny(trained_bundle, shared_data) -> Path:
    """The same recipe trained here, Keras weights included (for the Keras Grad-CAM checks)."""
    return trained_bundle(SPORTS_CONFIG, shared_data, name="tiny3")


def registry_of(text: str) -> ModelRegistry:
    return ModelRegistry(parse_model_sources(text))


@pytest.fixture
def registry(sports_tiny) -> ModelRegistry:
    return registry_of(str(sports_tiny))


def example(label: str, n: int = 0) -> str:
    return examples.list_examples(EXAMPLES, label)[n].path


# -- model sources -----------------------------------------------------------------------------------


def test_parse_model_sources_local_and_hub(tmp_path):
    specs = parse_model_sources(" ./models/a , hf:me/sports@v2,,hf:me/other, /abs/b ,./models/a", root=tmp_path)
    assert [s.name for s in specs] == ["a", "me/sports@v2", "me/other", "b", "a (2)"]
    assert specs[0].location == str(tmp_path / "models" / "a") and not specs[0].hub
    assert (specs[1].hub, specs[1].location, specs[1].revision) == (True, "me/sports", "v2")
    assert specs[2].revision is None and specs[2].text == "hf:me/other"
    assert specs[3].location == "/abs/b"


@pytest.mark.parametrize("bad", ["hf:", "hf:noslash", "hf:a/b/c", "hf:/x"])
def test_parse_model_sources_rejects_bad_hub_ids(bad):
    with pytest.raises(UserInputError, match="hf:user/repo"):
        parse_model_sources(bad)


def test_bundled_models_put_models_default_first(tmp_path):
    models = tmp_path / "models"
    for name in ("alpha", "beta", "gamma"):
        (models / name).mkdir(parents=True)
        (models / name / bundle.CONFIG).write_text("{}")
    (models / "not-a-bundle").mkdir()
    (models / "DEFAULT").write_text("gamma\n")
    assert [s.name for s in bundled_models(models)] == ["gamma", "alpha", "beta"]
    # --models beats the environment variable, which beats models/
    env = {MODELS_ENV: "hf:me/env"}
    assert [s.name for s in served_models(None, root=tmp_path, env={})] == ["gamma", "alpha", "beta"]
    assert [s.name for s in served_models(None, root=tmp_path, env=env)] == ["me/env"]
    assert [s.name for s in served_models("models/beta", root=tmp_path, env=env)] == ["beta"]
    assert bundled_models(tmp_path / "missing") == []


# -- the out-of-distribution threshold ---------------------------------------------------------


def test_choose_ood_threshold_respects_the_false_flag_budget():
    rng = np.random.default_rng(0)
    ins = np.clip(rng.beta(8, 1, 500), 0, 1)
    outs = np.clip(rng.beta(2, 3, 200), 0, 1)
    for budget in (0.0, 0.02, 0.05, 0.2):
        r = ood.choose_ood_threshold(ins, outs, max_false_flag=budget)
        assert r["valid_flagged"] == pytest.approx(np.mean(ins < r["threshold"]), abs=1e-4)
        assert r["valid_flagged"] <= budget + 1e-9
        assert r["non_sport_flagged"] == pytest.approx(np.mean(outs < r["threshold"]), abs=1e-4)
        # no other threshold within the budget does better (brute force over a fine grid)
        grid = np.linspace(0, 1, 2001)
        best = max(np.mean(outs < t) - np.mean(ins < t) for t in grid if np.mean(ins < t) <= budget)
        assert r["youden_j"] >= best - 1e-3


def test_choose_ood_threshold_counts_flagged_mistakes():
    # Flagging the 0.5 non-sport image costs one validation image (0.3, a mistake): worth it.
    r = ood.choose_ood_threshold([0.3, 0.9, 0.95, 0.99], [0.1, 0.2, 0.5], max_false_flag=0.25,
                                in_correct=[False, True, True, True])
    assert r["threshold"] == pytest.approx(0.7) and r["youden_j"] == pytest.approx(0.75)
    assert r["valid_flagged_total"] == 1 and r["valid_flagged_that_were_wrong"] == 1
    with pytest.raises(ValueError):
        ood.choose_ood_threshold([], [0.1])


def test_non_sport_images_leave_out_the_sports():
    others = ood.non_sport_images()
    names = [n for _, n, _ in others]
    assert len(others) >= ood.MIN_NON_SPORT and not any("horse" in n or "motorcycle" in n for n in names)


def test_threshold_command_stores_a_threshold_in_the_bundle(sports_tiny, shared_data, tmp_path, capsys):
    from sports_classifier.cli import main

    copy = tmp_path / "tiny3"
    copy_bundle(sports_tiny, copy)
    assert main(["threshold", "--model", str(copy), "--data", str(shared_data), "--write", "--quiet"]) == 0
    assert "written to" in capsys.readouterr().out
    record = bundle.read_config(copy).out_of_distribution
    assert record["n_valid"] == 3 * 5 and record["split"] == "valid"
    assert record["valid_flagged"] <= 0.05 and "Youden" in record["method"]
    assert Classifier.from_pretrained(copy).ood_threshold == record["threshold"]


def test_bundled_models_carry_justified_thresholds():
    found = bundled_models(ROOT / "models")
    assert found, "no bundled model"
    for source in found:
        rec = bundle.read_config(source.location).out_of_distribution
        assert rec is not None, f"{source.name} has no out-of-distribution threshold"
        assert 0 < rec["threshold"] < 1
        assert rec["split"] == "valid" and rec["n_valid"] >= 100 and rec["justification"]


# -- the registry ------------------------------------------------------------------------------


def test_registry_loads_nothing_until_asked_and_each_model_once(sports_tiny, monkeypatch):
    calls = []
    real = Classifier.from_source.__func__  # what the registry loads with

    def counting(cls, *a, **k):
        calls.append(a)
        return real(cls, *a, **k)

    monkeypatch.setattr(Classifier, "from_source", classmethod(counting))
    reg = registry_of(str(sports_tiny))
    assert calls == [] and reg.status() == {"tiny3": "not loaded yet"}
    results = []
    threads = [threading.Thread(target=lambda: results.append(reg.get("tiny3"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(r) for r in results}) == 1
    assert reg.status()["tiny3"].startswith("ready (onnxruntime")
    assert reg.entry("tiny3").latency_ms > 0


def test_a_model_that_fails_is_reported_and_the_others_serve(sports_tiny, tmp_path):
    broken = tmp_path / "broken"
    copy_bundle(sports_tiny, broken)
    (broken / bundle.ONNX).write_bytes(b"not an onnx file")  # checksum mismatch
    reg = registry_of(f"{sports_tiny},{broken},{tmp_path / 'missing'}")
    results = predict.predict(reg, example("archery"))
    assert [r.name for r in results] == ["tiny3", "broken", "missing"]
    assert results[0].error is None and set(results[0].confidences) == set(CLASSES)
    assert "corrupt" in results[1].error and "not found" in results[2].error
    assert "**Error:**" in results[1].note
    with pytest.raises(ModelLoadError, match="broken"):
        reg.get("broken")
    status = reg.status()
    assert status["broken"].startswith("failed to load") and status["tiny3"].startswith("ready")
    assert "failed to load" in predict.status_markdown(reg)


# -- predict -------------------------------------------------------------------------------------


def test_predict_matches_the_classifier(registry, sports_tiny):
    clf = Classifier.from_pretrained(sports_tiny)
    path = example("bowling")
    [result] = predict.predict(registry, Image.open(path))
    expected = dict(clf.predict(path, top_k=5))
    assert list(result.confidences) == list(expected)  # same order: most likely first
    for label, p in expected.items():
        assert result.confidences[label] == pytest.approx(p, abs=1e-5)
    assert result.seconds > 0
    # Training chose this bundle's own out-of-distribution threshold; the app serves that one.
    assert result.threshold == pytest.approx(clf.ood_threshold)
    assert result.out_of_distribution == (max(expected.values()) < clf.ood_threshold)
    assert "no out-of-distribution threshold" not in result.note


def test_predict_flags_out_of_distribution_with_the_bundles_threshold(sports_tiny, tmp_path):
    copy = tmp_path / "tiny3"
    copy_bundle(sports_tiny, copy)
    top = max(Classifier.from_pretrained(copy).predict_proba(example("archery"))[0])
    bundle.update_config(copy, out_of_distribution={"threshold": float(top) + 0.01})
    [above] = predict.predict(registry_of(str(copy)), example("archery"))
    assert above.out_of_distribution is True and "may not show any of the sports" in above.note
    bundle.update_config(copy, out_of_distribution={"threshold": float(top) - 0.01})
    [below] = predict.predict(registry_of(str(copy)), example("archery"))
    assert below.out_of_distribution is False and "may not" not in below.note


def test_predict_reports_what_the_user_can_fix(registry):
    with pytest.raises(UserInputError, match="no image"):
        predict.predict(registry, None)
    with pytest.raises(UserInputError, match="at least one model"):
        predict.predict(registry, example("archery"), [])
    with pytest.raises(UserInputError, match="cannot read"):
        predict.predict(registry, b"definitely not an image")
    with pytest.raises(UserInputError, match="unknown model"):
        predict.predict(registry, example("archery"), ["nope"])


# -- Explain ------------------------------------------------------------------------------------


def test_gradcam_equals_class_activation_map_for_a_pooled_dense_head(trained_sports_tiny):
    """For GAP + dense, the channel weights of Grad-CAM are the dense weights / (H*W)."""
    from sports_classifier.models.gradcam import gradcam
    from sports_classifier.images import preprocess

    clf = Classifier.from_pretrained(trained_sports_tiny)
    heat, index, prob = gradcam(clf, example("basketball"))
    model = clf.keras_model
    fmap = model.get_layer("backbone")(preprocess(example("basketball"), clf.config.image_size)[None]).numpy()[0]
    kernel = model.get_layer("predictions").kernel.numpy()
    cam = np.maximum((fmap * kernel[:, index]).sum(-1), 0)
    np.testing.assert_allclose(heat, cam / cam.max(), atol=1e-4)
    assert heat.shape == fmap.shape[:2] and heat.max() == pytest.approx(1.0)
    assert index == int(np.argmax(clf.predict_proba(example("basketball"))[0]))
    assert prob == pytest.approx(float(clf.predict_proba(example("basketball"))[0][index]), abs=1e-4)


def test_explain_without_tensorflow_matches_keras_gradcam(trained_sports_tiny):
    """The NumPy map from the ONNX model's class maps is the Keras Grad-CAM (the oracle)."""
    from sports_classifier.models.gradcam import gradcam

    onnx = Classifier.from_pretrained(trained_sports_tiny, runtime="onnx")
    keras_clf = Classifier.from_pretrained(trained_sports_tiny, runtime="keras")
    for label in CLASSES:
        for path in (example(label, 0), example(label, 1)):
            heat, top, prob = onnx.heat_map(path)
            oracle, index, oracle_prob = gradcam(keras_clf, path)
            assert top == onnx.labels[index] and prob == pytest.approx(oracle_prob, abs=1e-4)
            assert heat.shape == oracle.shape
            if oracle.std() > 0:
                assert np.corrcoef(heat.ravel(), oracle.ravel())[0, 1] > 0.99
            else:
                np.testing.assert_allclose(heat, oracle, atol=1e-5)


def test_explain_returns_an_overlay_the_size_of_the_photo(registry):
    wide = Image.open(example("archery")).resize((300, 150))
    overlay, caption = predict.explain(registry, wide, "tiny3")
    assert isinstance(overlay, Image.Image) and overlay.size == (300, 150) and overlay.mode == "RGB"
    assert not np.array_equal(np.asarray(overlay), np.asarray(wide))  # something was drawn on it
    assert "Class activation map" in caption and "tiny3" in caption
    with pytest.raises(UserInputError):
        predict.explain(registry, None, "tiny3")


# -- examples --------------------------------------------------------------------------------------


def test_examples_folder_has_two_images_per_sport_within_budget():
    found = examples.list_examples(EXAMPLES)
    sports = examples.example_sports(EXAMPLES)
    assert len(sports) == 100 and len(found) == 200
    assert sum(Path(e.path).stat().st_size for e in found) < 8 * 2**20
    assert "CC0" in (EXAMPLES / "README.md").read_text()
    assert {e.label for e in examples.list_examples(EXAMPLES, "bowling")} == {"bowling"}
    assert examples.list_examples(EXAMPLES, examples.ALL_SPORTS) == found
    one_each = examples.gallery_items(found, one_per_class=True)
    assert len(one_each) == 100 and [c for _, c in one_each] == sports


def test_example_grid_marks_the_wrong_predictions(registry, tmp_path):
    chosen = [e for e in examples.list_examples(EXAMPLES) if e.label in CLASSES]
    grid = examples.example_grid(registry, "tiny3", chosen, n=6, seed=1, out_dir=tmp_path)
    assert len(grid["items"]) == len(grid["rows"]) == 6
    assert {r["true"] for r in grid["rows"]} == set(CLASSES)  # different classes first
    for (path, caption), row in zip(grid["items"], grid["rows"]):
        assert path == row["path"] and row["correct"] == (row["true"] == row["predicted"])
        if row["correct"]:
            assert caption.startswith("✓")
        else:
            assert caption.startswith("✗") and row["true"] in caption and row["predicted"] in caption
    right = sum(r["correct"] for r in grid["rows"])
    assert f"{right} of 6 correct" in grid["summary"]
    for r in grid["rows"]:
        assert (f"{r['true']} → predicted *{r['predicted']}*" in grid["summary"]) != r["correct"]
    assert Image.open(grid["image"]).format == "PNG"
    assert examples.example_grid(registry, "tiny3", chosen, n=6, seed=1)["rows"] == grid["rows"]


# -- compare -----------------------------------------------------------------------------------


def test_compare_table_numbers_come_from_the_bundle(registry, sports_tiny):
    frame = compare.compare_table(registry)
    row = frame.iloc[0]
    valid = bundle.read_metrics(sports_tiny)["valid"]
    for column, key in (("accuracy", "accuracy"), ("top-5 accuracy", "top5_accuracy"),
                        ("macro F1", "macro_f1"), ("loss", "loss")):
        assert row[column] == round(valid[key], 4)
    assert row["valid images"] == valid["n"] == 15
    assert row["classes"] == 3 and row["architecture"] == "tiny_cnn"
    assert pd.isna(row["weights MB"])  # the committed bundle is ONNX-only
    assert row["ONNX MB"] == row["size MB"] == round((sports_tiny / bundle.ONNX).stat().st_size / 2**20, 2)
    assert row["parameters"] == bundle.read_config(sports_tiny).training["parameters"] > 0
    assert row["ms / image"] > 0 and row["engine"] == "onnxruntime"


def test_compare_table_counts_parameters_in_the_weights_file(trained_sports_tiny):
    row = compare.compare_table(registry_of(str(trained_sports_tiny))).iloc[0]
    assert row["weights MB"] == round((trained_sports_tiny / bundle.WEIGHTS).stat().st_size / 2**20, 2)
    assert row["parameters"] == Classifier.from_pretrained(trained_sports_tiny).keras_model.count_params()


def test_disagreement_table_puts_the_biggest_differences_first(sports_tiny, tmp_path):
    other = tmp_path / "other"
    copy_bundle(sports_tiny, other)
    metrics = json.loads((other / bundle.METRICS).read_text())
    per_class = metrics["valid"]["per_class"]
    recall = {label: per_class[label]["recall"] for label in CLASSES}
    per_class["bowling"]["recall"] = 1.0 - recall["bowling"]  # the one class that now differs
    (other / bundle.METRICS).write_text(json.dumps(metrics))
    reg = registry_of(f"{sports_tiny},{other}")
    table = compare.disagreement_table(reg)
    assert list(table.columns) == ["class", "tiny3", "other", "spread"]
    assert table.iloc[0]["class"] == "bowling"
    assert table.iloc[0]["spread"] == pytest.approx(abs(1 - 2 * recall["bowling"]), abs=1e-4)
    assert (table["spread"].iloc[1:] == 0).all()


# -- batch -----------------------------------------------------------------------------------------


def test_batch_predict_table_and_csv(registry, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    files = [example("archery"), str(bad), example("bowling", 1)]
    frame, csv_path = batch.batch_predict(registry, files, out_dir=tmp_path / "out")
    assert list(frame.columns) == batch.BATCH_COLUMNS and len(frame) == 3
    assert list(frame["file"]) == ["1.jpg", "broken.jpg", "2.jpg"]
    assert frame["error"].isna().tolist() == [True, False, True]
    assert frame["prediction"].iloc[0] in CLASSES
    clf = Classifier.from_pretrained(registry.get("tiny3").path)
    label, p = clf.predict(example("bowling", 1), top_k=1)[0]
    assert frame["prediction"].iloc[2] == label and frame["probability"].iloc[2] == pytest.approx(p, abs=1e-4)
    back = pd.read_csv(csv_path)
    assert back["file"].tolist() == frame["file"].tolist() and back["prediction"].iloc[0] == frame["prediction"].iloc[0]
    with pytest.raises(UserInputError):
        batch.batch_predict(registry, [])


# -- about -----------------------------------------------------------------------------------------


def test_about_and_model_cards(sports_tiny):
    reg = registry_of(f"{sports_tiny},hf:someone/sports@main")
    text = about.about_markdown(reg)
    assert "**tiny3**: `tiny_cnn`" in text and "https://huggingface.co/someone/sports" in text
    assert reg.loaded("tiny3") is None  # the About tab loads no model
    card = about.model_card_markdown(sports_tiny)
    assert not card.startswith("---") and "library_name" not in card
    images = [m for m in card.split("(") if m.startswith("/gradio_api/file=")]
    assert images and all(Path(m.split(")")[0].removeprefix("/gradio_api/file=")).is_file() for m in images)
    assert set(about.picture_files(reg)) == {str((sports_tiny / f).resolve())
                                         for f in (bundle.CURVES, bundle.CONFUSION, bundle.SAMPLES)}


def test_disagreement_table_without_shared_classes_lists_the_weakest(sports_tiny, tiny_bundle):
    reg = registry_of(f"{sports_tiny},{tiny_bundle}")
    table = compare.disagreement_table(reg)
    assert "spread" not in table.columns and len(table) == 6  # 3 + 3 classes, none shared
    means = table[["tiny3", "tiny"]].mean(axis=1)
    assert list(means) == sorted(means)


def test_hub_entries_load_through_from_hub(sports_tiny, monkeypatch):
    calls = []

    def fake_from_hub(cls, repo_id, *, revision=None, runtime="auto", **kwargs):
        calls.append((repo_id, revision, runtime))
        return Classifier.from_pretrained(sports_tiny)

    monkeypatch.setattr(Classifier, "from_hub", classmethod(fake_from_hub))
    reg = registry_of("hf:me/sports@v1.2,hf:me/other")
    assert [r.top is not None for r in predict.predict(reg, example("bowling"))] == [True, True]
    assert calls == [("me/sports", "v1.2", "auto"), ("me/other", None, "auto")]
