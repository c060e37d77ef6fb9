"""`sports-classifier data`: split sizes, images per class, skipped files and why, the class
distribution chart, and the class counts recorded in bundles (older bundles lack them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from helpers.datasets import make_dataset
from sports_classifier import bundle, data_summary
from sports_classifier.cli import main
from sports_classifier.errors import UserInputError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def messy(tmp_path) -> Path:
    """3 classes, 6 train / 3 valid each, plus what a real download holds besides images."""
    root = make_dataset(tmp_path / "data", per_class=(6, 3))
    (root / "train" / "cats" / "6.jpg").unlink()  # cats: 5, the smallest class
    (root / "train" / "owls" / "shortcut.lnk").write_bytes(b"L\0\0\0")
    (root / "train" / "notes.txt").write_text("a loose file")
    (root / "valid" / "dogs" / "empty.jpg").write_bytes(b"")
    (root / "test" / "cats").mkdir(parents=True)  # held out: never read unless asked
    Image.new("RGB", (8, 8)).save(root / "test" / "cats" / "1.jpg")
    return root


def test_summary_counts_each_split_and_says_why_files_are_skipped(messy):
    s = data_summary.summarize(messy)
    train, valid = s.splits
    assert (train.name, train.total, valid.total) == ("train", 17, 9)
    assert train.counts == {"cats": 5, "dogs": 6, "owls": 6}
    assert train.stats() == {"min": 5, "median": 6.0, "max": 6}
    assert train.smallest(1) == [("cats", 5)]
    reasons = {Path(p).name: why for p, why in s.skipped}
    assert reasons == {"shortcut.lnk": "not an image file (.lnk)", "notes.txt": "a file outside any class folder",
                       "empty.jpg": "an empty file (cannot be decoded)"}
    assert s.not_read == ["test"]
    text = "\n".join(data_summary.summary_lines(s))
    assert "train: 17 images; per class min 5 / median 6 / max 6; smallest: cats 5" in text
    assert "skipped 3 file(s)" in text and "test: not read" in text


def test_max_per_class_caps_the_training_split_only(messy):
    s = data_summary.summarize(messy, max_per_class=4)
    assert s.splits[0].counts == {"cats": 4, "dogs": 4, "owls": 4}
    assert s.splits[1].counts == {"cats": 3, "dogs": 3, "owls": 3}  # the empty file is not an image


def test_asking_for_missing_splits_is_a_user_error(messy):
    with pytest.raises(UserInputError, match="none of the splits"):
        data_summary.summarize(messy, ("nope",))


def test_data_command_prints_and_writes_the_chart(messy, tmp_path, capsys):
    chart = tmp_path / "out" / "dist.png"
    assert main(["data", "--data", str(messy), "--chart", str(chart)]) == 0
    out = capsys.readouterr().out
    assert "train: 17 images" in out and "valid: 9 images" in out and f"chart: {chart}" in out
    assert Image.open(chart).format == "PNG"


def small_bundle(tmp_path, labels, train_images, valid_images, *, counts=None) -> Path:
    """A bundle's config.json and metrics.json (taken from models/lite0, relabelled): enough for
    read_config / update_config, which is all that recording counts touches."""
    src = ROOT / "models" / "lite0"
    if not (src / bundle.CONFIG).is_file():
        pytest.skip("no bundled model to copy a config from")
    dest = tmp_path / "bundle"
    dest.mkdir()
    config = json.loads((src / bundle.CONFIG).read_text())
    config["labels"] = list(labels)
    config.pop("files_sha256", None)
    config.pop("out_of_distribution", None)
    config["training"]["data"] = {"dataset": "data", "train_images": train_images, "valid_images": valid_images}
    if counts:
        config["training"]["data"]["class_counts"] = counts
    (dest / bundle.CONFIG).write_text(json.dumps(config))
    shutil.copy(src / bundle.METRICS, dest / bundle.METRICS)
    return dest


def test_record_in_writes_counts_only_into_a_bundle_of_the_same_data(messy, tmp_path, capsys):
    right = small_bundle(tmp_path, ["cats", "dogs", "owls"], 17, 9)
    assert data_summary.recorded_counts(bundle.read_config(right).training) == {}  # an old bundle
    assert main(["data", "--data", str(messy), "--chart", str(tmp_path / "c.png"), "--record-in", str(right)]) == 0
    counts = data_summary.recorded_counts(bundle.read_config(right).training)
    assert counts == {"train": {"cats": 5, "dogs": 6, "owls": 6}, "valid": {"cats": 3, "dogs": 3, "owls": 3}}

    other = tmp_path / "other"
    other.mkdir()
    wrong = small_bundle(other, ["cats", "dogs", "owls"], 99, 9)
    with pytest.raises(UserInputError, match="records 99 train images, this folder has 17"):
        data_summary.record_counts(wrong, data_summary.summarize(messy))
    assert data_summary.recorded_counts(bundle.read_config(wrong).training) == {}


def test_recorded_counts_of_old_and_malformed_records():
    assert data_summary.recorded_counts(None) == {}
    assert data_summary.recorded_counts({"data": {"train_images": 5}}) == {}
    assert data_summary.recorded_counts({"data": {"class_counts": "many"}}) == {}
    assert data_summary.recorded_counts({"data": {"class_counts": {"train": {"a": "x"}, "valid": {"a": 2}}}}) \
        == {"valid": {"a": 2}}


def test_class_counts_cover_every_label_in_order():
    import pandas as pd

    frame = pd.DataFrame({"label": ["b", "b", "a"]})
    assert list(data_summary.class_counts(frame, ["a", "b", "c"]).items()) == [("a", 1), ("b", 2), ("c", 0)]


@pytest.mark.slow
def test_training_records_class_counts_in_the_bundle(tiny_bundle):
    """conftest's tiny bundle: 3 synthetic classes, 8 train and 4 valid images each."""
    counts = data_summary.recorded_counts(bundle.read_config(tiny_bundle).training)
    assert counts == {"train": {"cats": 8, "dogs": 8, "owls": 8}, "valid": {"cats": 4, "dogs": 4, "owls": 4}}
