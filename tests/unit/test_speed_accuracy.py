"""Accuracy against speed of several bundles in one run (bench --models)."""

import json

import pytest

from sports_classifier.classifier import Classifier
from sports_classifier.cli import main
from sports_classifier.errors import UserInputError


def test_comparison_measures_accuracy_on_the_served_engine(tiny_bundle, synthetic_dataset, tmp_path, capsys):
    valid = synthetic_dataset / "valid"
    copy = tmp_path / "tiny-copy"
    Classifier.from_pretrained(tiny_bundle).save_pretrained(copy)
    plot = tmp_path / "chart.png"
    assert main(["bench", "--models", str(tiny_bundle), str(copy), "--data", str(valid), "--repeats", "2",
                 "--passes", "1", "--json", "--plot", str(plot)]) == 0
    result = json.loads(capsys.readouterr().out)
    want = Classifier.from_pretrained(tiny_bundle).evaluate(synthetic_dataset)["accuracy"]
    assert set(result["models"]) == {str(tiny_bundle), str(copy)}
    for row in result["models"].values():
        assert row["accuracy"] == pytest.approx(want, abs=1e-4)
        assert row["predict_paths"]["images_per_s"] > 0 and row["latency_predict"]["n"] == 2
        assert row["engine"].startswith("onnxruntime") and row["size_mb"] > 0
    assert result["images"] == len(list(valid.rglob("*.jpg")))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_comparison_refuses_repeated_models(tiny_bundle, synthetic_dataset):
    from sports_classifier.speed_accuracy import run_comparison

    with pytest.raises(UserInputError, match="distinct"):
        run_comparison([tiny_bundle, tiny_bundle], synthetic_dataset)
