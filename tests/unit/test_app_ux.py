"""What the page says about a photo (verdict, panels), display names, search, the frame rate and
the feedback store: plain Python, no Gradio, no model."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from sports_classifier import feedback
from sports_classifier.app import live, sport_names, verdict
from sports_classifier.app.predict import ModelResult, percent_pair
from sports_classifier.errors import UserInputError


def result(name, confidences, *, ood=False, threshold=0.5, seconds=0.084):
    return ModelResult(name, dict(confidences), seconds, ood, threshold)


def test_rounding_never_contradicts_the_comparison():
    assert percent_pair(0.7751, 0.7812) == ("77.5%", "78.1%")  # not "78% is under 78%"
    assert percent_pair(0.7801, 0.7804) == ("78.01%", "78.04%")
    assert percent_pair(0.30, 0.78) == ("30%", "78%")
    note = result("m", {"golf": 0.7751}, ood=True, threshold=0.7812).note
    assert "77.5% is under 78.1%" in note


def test_one_not_a_sport_headline_when_no_model_is_confident():
    results = [result("a", {"jai alai": 0.3, "golf": 0.2}, ood=True),
               result("b", {"shuffleboard": 0.14}, ood=True), result("c", {"jai alai": 0.4}, ood=True)]
    found = verdict.headline(results)
    assert found["kind"] == "not-a-sport" and found["title"] == verdict.NOT_A_SPORT and found["label"] is None
    assert found["detail"].endswith("best guesses: jai alai 40%, shuffleboard 14%")  # each sport once
    page = verdict.verdict_html(results) + verdict.panels_html(results)
    assert page.count("verdict-title") == 1 and page.count("panel-unsure") == 3


def test_a_confident_model_names_the_sport_and_says_who_disagrees():
    results = [result("a", {"rowing": 0.9}), result("b", {"rowing": 0.8}), result("c", {"sailboat racing": 0.7}),
               result("d", {"golf": 0.2}, ood=True)]
    found = verdict.headline(results)
    assert found == {"kind": "sport", "title": "rowing", "label": "rowing",
                     "detail": "2 of 4 models (90%); c: sailboat racing; 1 not confident"}
    assert verdict.headline([result("a", {"canoe slamon": 0.97})])["title"] == "canoe slalom"
    assert verdict.top_label([result("a", {"canoe slamon": 0.97})]) == "canoe slamon"  # the label is kept
    assert verdict.headline([ModelResult("x", error="model failed")]) is None


def test_panels_show_the_top_three_above_one_percent_with_a_labelled_time():
    r = result("m<b>", {"golf": 0.9, "polo": 0.05, "luge": 0.03, "rugby": 0.015, "judo": 0.005})
    assert verdict.shown_rows(r.confidences) == [("golf", 0.9), ("polo", 0.05), ("luge", 0.03)]
    assert verdict.shown_rows({"golf": 0.995, "polo": 0.004}) == [("golf", 0.995)]
    panel = verdict.panel_html(r)
    assert "answered in 84 ms" in panel and "judo" not in panel and "m&lt;b&gt;" in panel


def test_display_names_and_search():
    labels = ["axe throwing", "barell racing", "rowing", "rollerblade racing", "sailboat racing"]
    assert sport_names.display_name("barell racing") == "barrel racing"
    assert sport_names.display_name("rowing") == "rowing"
    assert sport_names.best_match(labels, "rowing") == "rowing"  # not axe throwing
    assert sport_names.best_match(labels, "barrel") == "barell racing"
    assert sport_names.best_match(labels, "ROLL") == "rollerblade racing"
    assert sport_names.best_match(labels, "racing") == "barell racing"  # a word start
    assert sport_names.best_match(labels, "lboat") == "sailboat racing"  # anywhere in a name
    assert sport_names.best_match(labels, "cricket") is None
    assert sport_names.matches("canoe slamon", "slalom") and not sport_names.matches("rowing", "golf")


def test_frame_rate_over_the_last_seconds():
    now = [0.0]
    meter = live.FrameRate(window=3.0, clock=lambda: now[0])
    assert meter.tick() == 0.0
    for _ in range(10):
        now[0] += 0.2
        fps = meter.tick()
    assert fps == pytest.approx(5.0)
    assert live.FrameRate.text(fps) == "5.0 frames per second"


# -- feedback -----------------------------------------------------------------------------------


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "upload.png"
    Image.new("RGB", (2000, 1000), (10, 200, 30)).save(path)
    return path


def test_feedback_records_exports_and_refuses_what_it_must(tmp_path, photo):
    store = feedback.FeedbackStore(tmp_path / "fb")
    results = [result("m", {"golf": 0.9, "polo": 0.1})]
    known = ["golf", "polo"]
    for label in ("golf", "golf", "polo", "polo", "polo"):
        record = store.record(photo, label, results, {"m": {"model.onnx": "ab" * 32}}, known_labels=known)
    meta = json.loads((tmp_path / "fb" / f"{record.id}.json").read_text())
    assert meta["label"] == "polo" and meta["predictions"] == {"m": [["golf", 0.9], ["polo", 0.1]]}
    assert meta["bundles"] == {"m": {"model.onnx": "ab" * 32}}
    assert max(Image.open(tmp_path / "fb" / f"{record.id}.jpg").size) == feedback.MAX_SIDE  # re-encoded, smaller
    assert [r.label for r in store.records()].count("polo") == 3

    for bad in ("../../etc", "cricket", "", None):
        with pytest.raises(UserInputError):
            store.record(photo, bad, results, {}, known_labels=known + ["../../etc"])
    with pytest.raises(UserInputError, match="no photo"):
        store.record(None, "golf", results, {}, known_labels=known)
    # the app passes the photo its results were made for: a new photo whose answer is still on
    # its way must not be recorded with the last photo's predictions
    with pytest.raises(UserInputError, match="answer is not in yet"):
        store.record(photo, "golf", results, {}, known_labels=known, predictions_for=tmp_path / "last.png")
    assert len(store.records()) == 5
    same = store.record(photo, "golf", results, {}, known_labels=known, predictions_for=str(photo))
    for ext in ("json", "jpg"):  # (the counts below are of the five)
        (tmp_path / "fb" / f"{same.id}.{ext}").unlink()

    counts = store.export(tmp_path / "ds")
    assert counts == {"train": {"golf": 1, "polo": 2}, "valid": {"golf": 1, "polo": 1}}
    assert sorted(p.relative_to(tmp_path / "ds").parts[:2] for p in (tmp_path / "ds").rglob("*.jpg")) == [
        ("train", "golf"), ("train", "polo"), ("train", "polo"), ("valid", "golf"), ("valid", "polo")]
    with pytest.raises(UserInputError, match="not empty"):
        store.export(tmp_path / "ds")
    lines = feedback.summary_lines(store.records())
    assert lines[-1] == "5 record(s), 2 sport(s): golf 2, polo 3"


def test_feedback_records_with_unsafe_labels_are_not_exported(tmp_path, photo):
    store = feedback.FeedbackStore(tmp_path / "fb")
    store.record(photo, "golf", [], {}, known_labels=["golf"])
    planted = tmp_path / "fb" / "0123456789abcdef"
    planted.with_suffix(".jpg").write_bytes((tmp_path / "fb").glob("*.jpg").__next__().read_bytes())
    planted.with_suffix(".json").write_text(json.dumps({"id": planted.name, "label": "../escape", "time": "t"}))
    assert [r.label for r in store.records()] == ["golf"]


# -- tables as the page shows them ------------------------------------------------------------------


def test_batch_page_view_in_percentages_with_numbered_photos():
    import pandas as pd

    from sports_classifier.app import batch

    frame = pd.DataFrame([{"#": 1, "file": "1.jpg", "model": "m", "prediction": "barell racing",
                           "probability": 0.8961, "top-5": "barell racing 90%; polo 5%; golf 3%; luge 1%; judo 1%",
                           "out of distribution": False, "error": None},
                          {"#": 2, "file": "1.jpg", "model": "m", "error": "cannot read"}], columns=batch.BATCH_COLUMNS)
    page = batch.page_view(frame).to_html()
    assert "89.6%" in page and "0.8961" not in page and "barrel racing" in page and "luge" not in page
    assert "top-3" in page and "not a sport?" in page
    assert frame["probability"].iloc[0] == 0.8961  # the values themselves are unchanged
    assert batch.page_view(frame).data["prediction"].iloc[0] == "barell racing"  # API clients get the label
    assert batch.photo_captions(["/u/1.jpg", "/v/1.jpg"], frame) == [("/u/1.jpg", "#1 barrel racing 90%"),
                                                                   ("/v/1.jpg", "#2")]


class _StandIn:
    """A loaded model's classifier; the test replaces the latency measurement itself."""

    def predict_proba(self, image):
        return None


def test_latency_is_measured_in_rounds_and_shown_with_its_range(monkeypatch):
    from sports_classifier.app import compare, registry as registry_module
    from sports_classifier.app.registry import LoadedModel, ModelRegistry
    from sports_classifier.hub import ModelSource

    rounds = iter([30.0, 77.5, 29.8])
    monkeypatch.setattr(registry_module, "_measure_latency", lambda clf, runs=5: next(rounds))
    source = ModelSource(name="m", location="models/m", hub=False)
    registry = ModelRegistry([source])
    registry._loaded["m"] = LoadedModel(source, _StandIn(), load_seconds=0.1, latency_ms=30.0, latency_rounds=[30.0])
    assert compare.latency_text(registry.loaded("m")) == "30"
    registry._loaded["m"].latency_rounds = []
    registry.measure_again(rounds=3, pause=0)
    entry = registry.loaded("m")
    assert entry.latency_rounds == [30.0, 77.5, 29.8] and entry.latency_ms == 30.0
    assert compare.latency_text(entry) == "30 (30–78)"


def test_feedback_is_pushed_to_the_configured_hub_dataset_repo(tmp_path, photo, monkeypatch):
    """The wiring only (the test Hub serves no dataset repos): one CommitScheduler for the
    folder, started at the first record, none without a repo."""
    import huggingface_hub

    started = []

    class Scheduler:
        def __init__(self, **kwargs):
            started.append(kwargs)

    monkeypatch.setattr(huggingface_hub, "CommitScheduler", Scheduler)
    store = feedback.FeedbackStore(tmp_path / "fb", repo_id="someone/sports-feedback")
    for _ in range(2):
        store.record(photo, "golf", [], {}, known_labels=["golf"])
    assert len(started) == 1
    assert started[0]["repo_id"] == "someone/sports-feedback" and started[0]["repo_type"] == "dataset"
    assert started[0]["folder_path"] == tmp_path / "fb"
    feedback.FeedbackStore(tmp_path / "local").record(photo, "golf", [], {}, known_labels=["golf"])
    assert len(started) == 1


def test_feedback_command_lists_and_exports(tmp_path, photo, capsys):
    from sports_classifier.cli import main

    store = feedback.FeedbackStore(tmp_path / "fb")
    for label in ("golf", "golf", "polo"):
        store.record(photo, label, [], {}, known_labels=["golf", "polo"])
    assert main(["feedback", "list", "--dir", str(tmp_path / "fb")]) == 0
    assert "3 record(s), 2 sport(s): golf 2, polo 1" in capsys.readouterr().out
    assert main(["feedback", "export", "--dir", str(tmp_path / "fb")]) == 1
    assert capsys.readouterr().err.strip() == "error: feedback export needs --out FOLDER (a new dataset folder)"
    assert main(["feedback", "export", "--dir", str(tmp_path / "fb"), "--out", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "train: 2 photo(s) in 2 class folder(s)" in out and "valid: 1 photo(s) in 1 class folder(s)" in out
    assert main(["feedback", "list", "--dir", str(tmp_path / "none")]) == 0  # nothing yet: no error


def test_the_mistakes_browser_reports_its_progress(tmp_path):
    from sports_classifier.app import mistakes

    for sport in ("golf", "polo"):
        (tmp_path / sport).mkdir()
        for i in range(30):
            Image.new("RGB", (8, 8)).save(tmp_path / sport / f"{i}.png")

    class Answer:
        ok, label, top = True, "golf", (("golf", 0.9),)

    class Model:
        labels = ("golf", "polo")

        def predict_files(self, paths, top_k):
            return [Answer() for _ in paths]

    seen = []
    results = mistakes.evaluate_examples(Model(), tmp_path, "m", on_progress=lambda d, t: seen.append((d, t)))
    assert seen == [(25, 60), (50, 60), (60, 60)] and results.n == 60 and results.correct == 30
    assert "25 of 60" in mistakes.mistakes_summary(None, "m", (25, 60))
    assert "background" in mistakes.mistakes_summary(None, "m")
