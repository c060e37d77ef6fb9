"""The app's plain-Python handlers (sports_classifier.ui, .explain), without Gradio or a browser.

Most tests use a tiny network trained in seconds on three real classes of
../shared/data/sports100 (archery, basketball, bowling); it is weak (that is the point: the
example grid then has wrong predictions to mark).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sports_classifier import bundle, ui
from sports_classifier.classifier import Classifier

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CLASSES = ("archery", "basketball", "bowling")


@pytest.fixture(scope="session")
def sports_tiny(tmp_path_factory, shared_data, cache_dir) -> Path:
    """A full bundle (weights, ONNX, metrics, pictures, card) of the tiny CNN on 3 real sports."""
    from sports_classifier.config import TrainConfig
    from sports_classifier.train import train

    out = tmp_path_factory.mktemp("ui-bundles") / "tiny3"
    train(TrainConfig(backbone="tiny_cnn", weights="none", head_epochs=2, classes=CLASSES),
          shared_data, out, cache_dir=cache_dir, progress=False)
    return out


@pytest.fixture
def defaults_file(tmp_path) -> Path:
    return tmp_path / "ui_defaults.json"


@pytest.fixture
def registry(sports_tiny, defaults_file) -> ui.ModelRegistry:
    return ui.ModelRegistry(ui.parse_specs(str(sports_tiny)), defaults_file=defaults_file)


def example(label: str, n: int = 0) -> str:
    return ui.list_examples(EXAMPLES, label)[n].path


# -- specs -----------------------------------------------------------------------------------


def test_parse_specs_local_and_hub(tmp_path):
    specs = ui.parse_specs(" models/a , hf:me/sports@v2,,hf:me/other, /abs/b ,models/a", root=tmp_path)
    assert [s.name for s in specs] == ["a", "me/sports@v2", "me/other", "b", "a (2)"]
    assert specs[0].location == str(tmp_path / "models" / "a") and not specs[0].hub
    assert (specs[1].hub, specs[1].location, specs[1].revision) == (True, "me/sports", "v2")
    assert specs[2].revision is None and specs[2].text == "hf:me/other"
    assert specs[3].location == "/abs/b"


@pytest.mark.parametrize("bad", ["hf:", "hf:noslash", "hf:a/b/c", "hf:/x"])
def test_parse_specs_rejects_bad_hub_ids(bad):
    with pytest.raises(ui.UserInputError, match="hf:user/repo"):
        ui.parse_specs(bad)


def test_default_specs_put_models_default_first(tmp_path):
    models = tmp_path / "models"
    for name in ("alpha", "beta", "gamma"):
        (models / name).mkdir(parents=True)
        (models / name / bundle.CONFIG).write_text("{}")
    (models / "not-a-bundle").mkdir()
    (models / "DEFAULT").write_text("gamma\n")
    assert [s.name for s in ui.default_specs(models)] == ["gamma", "alpha", "beta"]
    # --models beats the environment variable, which beats models/
    env = {ui.MODELS_ENV: "hf:me/env"}
    assert [s.name for s in ui.resolve_specs(None, root=tmp_path, env={})] == ["gamma", "alpha", "beta"]
    assert [s.name for s in ui.resolve_specs(None, root=tmp_path, env=env)] == ["me/env"]
    assert [s.name for s in ui.resolve_specs("models/beta", root=tmp_path, env=env)] == ["beta"]
    assert ui.default_specs(tmp_path / "missing") == []


# -- the out-of-distribution threshold ---------------------------------------------------------


def test_choose_ood_threshold_respects_the_false_flag_budget():
    rng = np.random.default_rng(0)
    ins = np.clip(rng.beta(8, 1, 500), 0, 1)
    outs = np.clip(rng.beta(2, 3, 200), 0, 1)
    for budget in (0.0, 0.02, 0.05, 0.2):
        r = ui.choose_ood_threshold(ins, outs, max_false_flag=budget)
        assert r["valid_flagged"] == pytest.approx(np.mean(ins < r["threshold"]), abs=1e-4)
        assert r["valid_flagged"] <= budget + 1e-9
        assert r["non_sport_flagged"] == pytest.approx(np.mean(outs < r["threshold"]), abs=1e-4)
        # no other threshold within the budget does better (brute force over a fine grid)
        grid = np.linspace(0, 1, 2001)
        best = max(np.mean(outs < t) - np.mean(ins < t) for t in grid if np.mean(ins < t) <= budget)
        assert r["youden_j"] >= best - 1e-3


def test_choose_ood_threshold_counts_flagged_mistakes():
    # Flagging the 0.5 non-sport image costs one validation image (0.3, a mistake): worth it.
    r = ui.choose_ood_threshold([0.3, 0.9, 0.95, 0.99], [0.1, 0.2, 0.5], max_false_flag=0.25,
                                in_correct=[False, True, True, True])
    assert r["threshold"] == pytest.approx(0.7) and r["youden_j"] == pytest.approx(0.75)
    assert r["valid_flagged_total"] == 1 and r["valid_flagged_that_were_wrong"] == 1
    with pytest.raises(ValueError):
        ui.choose_ood_threshold([], [0.1])


def test_choose_threshold_script_stores_a_threshold_the_registry_uses(sports_tiny, shared_data, defaults_file):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import choose_threshold
    finally:
        sys.path.pop(0)
    others = choose_threshold.non_sport_images()
    names = [n for _, n, _ in others]
    assert len(others) >= 50 and not any("horse" in n or "motorcycle" in n for n in names)
    assert choose_threshold.main(["--model", str(sports_tiny), "--data", str(shared_data),
                                  "--defaults", str(defaults_file), "--write"]) == 0
    stored = json.loads(defaults_file.read_text())["ood_thresholds"]
    clf = Classifier.from_pretrained(sports_tiny)
    record = stored[clf.config.files_sha256[bundle.WEIGHTS]]
    assert record["n_valid"] == 3 * 5 and record["split"] == "valid"
    assert record["valid_flagged"] <= 0.05 and "Youden" in record["method"]
    reg = ui.ModelRegistry(ui.parse_specs(str(sports_tiny)), defaults_file=defaults_file)
    assert reg.entry("tiny3").threshold["threshold"] == record["threshold"]


def test_shipped_defaults_hold_justified_thresholds():
    data = ui.read_defaults(ui.DEFAULTS_FILE)
    assert data["ood_thresholds"], "ui_defaults.json records no threshold"
    for key, rec in data["ood_thresholds"].items():
        assert len(key) == 64 and 0 < rec["threshold"] < 1
        assert rec["split"] == "valid" and rec["n_valid"] >= 100 and rec["justification"]


# -- the registry ------------------------------------------------------------------------------


def test_registry_loads_nothing_until_asked_and_each_model_once(sports_tiny, defaults_file, monkeypatch):
    calls = []
    real = Classifier.from_pretrained.__func__

    def counting(cls, *a, **k):
        calls.append(a)
        return real(cls, *a, **k)

    monkeypatch.setattr(Classifier, "from_pretrained", classmethod(counting))
    reg = ui.ModelRegistry(ui.parse_specs(str(sports_tiny)), defaults_file=defaults_file)
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


def test_a_model_that_fails_is_reported_and_the_others_serve(sports_tiny, tmp_path, defaults_file):
    broken = tmp_path / "broken"
    shutil.copytree(sports_tiny, broken)
    (broken / bundle.ONNX).write_bytes(b"not an onnx file")  # checksum mismatch
    reg = ui.ModelRegistry(ui.parse_specs(f"{sports_tiny},{broken},{tmp_path / 'missing'}"),
                           defaults_file=defaults_file)
    results = ui.predict(reg, example("archery"))
    assert [r.name for r in results] == ["tiny3", "broken", "missing"]
    assert results[0].error is None and set(results[0].confidences) == set(CLASSES)
    assert "corrupt" in results[1].error and "not found" in results[2].error
    assert "**Error:**" in results[1].note
    with pytest.raises(ui.ModelLoadError, match="broken"):
        reg.get("broken")
    status = reg.status()
    assert status["broken"].startswith("failed to load") and status["tiny3"].startswith("ready")
    assert "failed to load" in ui.status_markdown(reg)


# -- predict -------------------------------------------------------------------------------------


def test_predict_matches_the_classifier(registry, sports_tiny):
    clf = Classifier.from_pretrained(sports_tiny)
    path = example("bowling")
    [result] = ui.predict(registry, Image.open(path))
    expected = dict(clf.predict(path, top_k=5))
    assert list(result.confidences) == list(expected)  # same order: most likely first
    for label, p in expected.items():
        assert result.confidences[label] == pytest.approx(p, abs=1e-5)
    assert result.seconds > 0 and result.out_of_distribution is None
    assert "no out-of-distribution threshold" in result.note


def test_predict_flags_out_of_distribution_with_the_recorded_threshold(registry, sports_tiny, defaults_file):
    clf = Classifier.from_pretrained(sports_tiny)
    top = max(clf.predict_proba(example("archery"))[0])
    ui.record_threshold(defaults_file, clf.config, {"threshold": float(top) + 0.01}, model="tiny3")
    [above] = ui.predict(registry, example("archery"))
    assert above.out_of_distribution is True and "may not show any of the sports" in above.note
    ui.record_threshold(defaults_file, clf.config, {"threshold": float(top) - 0.01}, model="tiny3")
    fresh = ui.ModelRegistry(ui.parse_specs(str(sports_tiny)), defaults_file=defaults_file)
    [below] = ui.predict(fresh, example("archery"))
    assert below.out_of_distribution is False and "may not" not in below.note


def test_predict_reports_what_the_user_can_fix(registry):
    with pytest.raises(ui.UserInputError, match="no image"):
        ui.predict(registry, None)
    with pytest.raises(ui.UserInputError, match="at least one model"):
        ui.predict(registry, example("archery"), [])
    with pytest.raises(ui.UserInputError, match="cannot read"):
        ui.predict(registry, b"definitely not an image")
    with pytest.raises(ui.UserInputError, match="unknown model"):
        ui.predict(registry, example("archery"), ["nope"])


# -- Grad-CAM ------------------------------------------------------------------------------------


def test_gradcam_equals_class_activation_map_for_a_pooled_dense_head(sports_tiny):
    """For GAP + dense, the channel weights of Grad-CAM are the dense weights / (H*W)."""
    from sports_classifier.explain import gradcam
    from sports_classifier.images import preprocess

    clf = Classifier.from_pretrained(sports_tiny)
    heat, index, prob = gradcam(clf, example("basketball"))
    model = clf.keras_model
    fmap = model.get_layer("backbone")(preprocess(example("basketball"), clf.config.image_size)[None]).numpy()[0]
    kernel = model.get_layer("predictions").kernel.numpy()
    cam = np.maximum((fmap * kernel[:, index]).sum(-1), 0)
    np.testing.assert_allclose(heat, cam / cam.max(), atol=1e-4)
    assert heat.shape == fmap.shape[:2] and heat.max() == pytest.approx(1.0)
    assert index == int(np.argmax(clf.predict_proba(example("basketball"))[0]))
    assert prob == pytest.approx(float(clf.predict_proba(example("basketball"))[0][index]), abs=1e-4)


def test_explain_returns_an_overlay_the_size_of_the_photo(registry):
    wide = Image.open(example("archery")).resize((300, 150))
    overlay, caption = ui.explain(registry, wide, "tiny3")
    assert isinstance(overlay, Image.Image) and overlay.size == (300, 150) and overlay.mode == "RGB"
    assert not np.array_equal(np.asarray(overlay), np.asarray(wide))  # something was drawn on it
    assert "Grad-CAM" in caption and "tiny3" in caption
    with pytest.raises(ui.UserInputError):
        ui.explain(registry, None, "tiny3")


# -- examples --------------------------------------------------------------------------------------


def test_examples_folder_has_two_images_per_sport_within_budget():
    examples = ui.list_examples(EXAMPLES)
    sports = ui.example_sports(EXAMPLES)
    assert len(sports) == 100 and len(examples) == 200
    assert sum(Path(e.path).stat().st_size for e in examples) < 8 * 2**20
    assert "CC0" in (EXAMPLES / "README.md").read_text()
    assert {e.label for e in ui.list_examples(EXAMPLES, "bowling")} == {"bowling"}
    assert ui.list_examples(EXAMPLES, ui.ALL_SPORTS) == examples
    one_each = ui.gallery_items(examples, one_per_class=True)
    assert len(one_each) == 100 and [c for _, c in one_each] == sports


def test_example_grid_marks_the_wrong_predictions(registry, tmp_path):
    examples = [e for e in ui.list_examples(EXAMPLES) if e.label in CLASSES]
    grid = ui.example_grid(registry, "tiny3", examples, n=6, seed=1, out_dir=tmp_path)
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
    assert ui.example_grid(registry, "tiny3", examples, n=6, seed=1)["rows"] == grid["rows"]


# -- compare -----------------------------------------------------------------------------------


def test_compare_table_numbers_come_from_the_bundle(registry, sports_tiny):
    frame = ui.compare_table(registry)
    row = frame.iloc[0]
    valid = bundle.read_metrics(sports_tiny)["valid"]
    for column, key in (("accuracy", "accuracy"), ("top-5 accuracy", "top5_accuracy"),
                        ("macro F1", "macro_f1"), ("loss", "loss")):
        assert row[column] == round(valid[key], 4)
    assert row["valid images"] == valid["n"] == 15
    assert row["classes"] == 3 and row["backbone"] == "tiny_cnn"
    assert row["weights MB"] == round((sports_tiny / bundle.WEIGHTS).stat().st_size / 2**20, 2)
    assert row["parameters"] == Classifier.from_pretrained(sports_tiny).keras_model.count_params()
    assert row["ms / image"] > 0 and row["engine"] == "onnxruntime"


def test_disagreement_table_puts_the_biggest_differences_first(sports_tiny, tmp_path, defaults_file):
    other = tmp_path / "other"
    shutil.copytree(sports_tiny, other)
    metrics = json.loads((other / bundle.METRICS).read_text())
    per_class = metrics["valid"]["per_class"]
    recall = {label: per_class[label]["recall"] for label in CLASSES}
    per_class["bowling"]["recall"] = 1.0 - recall["bowling"]  # the one class that now differs
    (other / bundle.METRICS).write_text(json.dumps(metrics))
    reg = ui.ModelRegistry(ui.parse_specs(f"{sports_tiny},{other}"), defaults_file=defaults_file)
    table = ui.disagreement_table(reg)
    assert list(table.columns) == ["class", "tiny3", "other", "spread"]
    assert table.iloc[0]["class"] == "bowling"
    assert table.iloc[0]["spread"] == pytest.approx(abs(1 - 2 * recall["bowling"]), abs=1e-4)
    assert (table["spread"].iloc[1:] == 0).all()
    pictures = ui.bundle_pictures(reg, bundle.CURVES)
    assert [c for _, c in pictures] == ["tiny3", "other"] and all(Path(p).is_file() for p, _ in pictures)


# -- batch -----------------------------------------------------------------------------------------


def test_batch_predict_table_and_csv(registry, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    files = [example("archery"), str(bad), example("bowling", 1)]
    frame, csv_path = ui.batch_predict(registry, files, out_dir=tmp_path / "out")
    assert list(frame.columns) == ui.BATCH_COLUMNS and len(frame) == 3
    assert list(frame["file"]) == ["1.jpg", "broken.jpg", "2.jpg"]
    assert frame["error"].isna().tolist() == [True, False, True]
    assert frame["prediction"].iloc[0] in CLASSES
    clf = Classifier.from_pretrained(registry.get("tiny3").path)
    label, p = clf.predict(example("bowling", 1), top_k=1)[0]
    assert frame["prediction"].iloc[2] == label and frame["probability"].iloc[2] == pytest.approx(p, abs=1e-4)
    back = pd.read_csv(csv_path)
    assert back["file"].tolist() == frame["file"].tolist() and back["prediction"].iloc[0] == frame["prediction"].iloc[0]
    with pytest.raises(ui.UserInputError):
        ui.batch_predict(registry, [])


# -- about -----------------------------------------------------------------------------------------


def test_about_and_model_cards(sports_tiny, defaults_file):
    reg = ui.ModelRegistry(ui.parse_specs(f"{sports_tiny},hf:someone/sports@main"), defaults_file=defaults_file)
    text = ui.about_markdown(reg)
    assert "**tiny3**: `tiny_cnn`" in text and "https://huggingface.co/someone/sports" in text
    assert reg.loaded("tiny3") is None  # the About tab loads no model
    card = ui.model_card_markdown(sports_tiny)
    assert not card.startswith("---") and "library_name" not in card
    images = [m for m in card.split("(") if m.startswith("/gradio_api/file=")]
    assert images and all(Path(m.split(")")[0].removeprefix("/gradio_api/file=")).is_file() for m in images)
    assert set(ui.picture_files(reg)) == {str((sports_tiny / f).resolve())
                                         for f in (bundle.CURVES, bundle.CONFUSION, bundle.SAMPLES)}


def test_importing_the_handlers_stays_cheap():
    code = ("import sys, sports_classifier.ui; "
            "print(sorted(m for m in ('gradio', 'tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_disagreement_table_without_shared_classes_lists_the_weakest(sports_tiny, tiny_bundle, defaults_file):
    reg = ui.ModelRegistry(ui.parse_specs(f"{sports_tiny},{tiny_bundle}"), defaults_file=defaults_file)
    table = ui.disagreement_table(reg)
    assert "spread" not in table.columns and len(table) == 6  # 3 + 3 classes, none shared
    means = table[["tiny3", "tiny"]].mean(axis=1)
    assert list(means) == sorted(means)


def test_hub_entries_load_through_from_hub(sports_tiny, defaults_file, monkeypatch):
    calls = []

    def fake_from_hub(cls, repo_id, *, revision=None, runtime="auto", **kwargs):
        calls.append((repo_id, revision, runtime))
        return Classifier.from_pretrained(sports_tiny)

    monkeypatch.setattr(Classifier, "from_hub", classmethod(fake_from_hub))
    reg = ui.ModelRegistry(ui.parse_specs("hf:me/sports@v1.2,hf:me/other"), defaults_file=defaults_file)
    assert [r.top is not None for r in ui.predict(reg, example("bowling"))] == [True, True]
    assert calls == [("me/sports", "v1.2", "auto"), ("me/other", None, "auto")]
