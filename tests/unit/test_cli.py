"""The command line, run as a user runs it (a real subprocess for the error paths)."""

import json
import subprocess
import sys

import pytest

from helpers.bundles import copy_bundle
from sports_classifier.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sports_classifier", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_help_for_every_command():
    for command in ("train", "evaluate", "predict", "export", "bench", "push", "space"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0


def test_predict_json_and_text(tiny_bundle, synthetic_dataset, capsys):
    image = next((synthetic_dataset / "valid" / "dogs").glob("*.jpg"))
    assert main(["predict", "--model", str(tiny_bundle), "--top-k", "2", "--json", str(image)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["image"] == str(image) and len(out[0]["predictions"]) == 2
    assert main(["predict", "--model", str(tiny_bundle), str(image)]) == 0
    assert str(image) in capsys.readouterr().out


def test_evaluate_json(tiny_bundle, synthetic_dataset, capsys):
    assert main(["evaluate", "--model", str(tiny_bundle), "--data", str(synthetic_dataset), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"accuracy", "top5_accuracy", "macro_f1", "n"} <= set(out) and out["n"] == 9


def test_evaluate_write_records_the_model_as_served(tiny_bundle, synthetic_dataset, tmp_path, capsys):
    """After an int8 export, `evaluate --write` makes `valid` the served model's figures and keeps
    the float ones from training beside them, in metrics.json and in the card."""
    from sports_classifier import bundle

    model = tmp_path / "tiny"
    copy_bundle(tiny_bundle, model)
    trained = bundle.read_metrics(model)["valid"]
    assert trained["engine"] == "onnxruntime"
    assert main(["export", "--model", str(model), "--format", "onnx-int8", "--calibration",
                 str(synthetic_dataset)]) == 0
    assert main(["evaluate", "--model", str(model), "--data", str(synthetic_dataset), "--json", "--write"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = bundle.read_metrics(model)
    assert metrics["valid"]["engine"] == "onnxruntime-int8" and metrics["valid"]["accuracy"] == printed["accuracy"]
    assert metrics["valid (onnxruntime)"] == trained
    card = bundle.read_card(model)
    assert "| valid (onnxruntime) |" in card and "onnxruntime-int8 |" in card
    assert "dataset_split: valid (onnxruntime)" not in card  # the Hub's metadata names real splits only
    # Measuring again with the same engine replaces the figures without stacking copies.
    assert main(["evaluate", "--model", str(model), "--data", str(synthetic_dataset), "--json", "--write"]) == 0
    assert sorted(bundle.read_metrics(model)) == ["valid", "valid (onnxruntime)"]


def test_errors_are_one_line_with_nonzero_exit(tiny_bundle, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a jpeg")
    cases = [
        ("predict", "--model", tmp_path / "missing", broken),
        ("predict", "--model", tiny_bundle, broken),
        ("predict", "--model", tiny_bundle, tmp_path / "nope.jpg"),
        ("evaluate", "--model", tiny_bundle, "--data", tmp_path / "nodata"),
        ("train", "--data", tmp_path, "--out", tmp_path / "o", "--backbone", "nonet"),
        ("train", "--data", tmp_path, "--out", tmp_path / "o", "--preset", "nopreset"),
    ]
    for args in cases:
        result = run_cli(*args)
        assert result.returncode != 0, args
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and "Traceback" not in result.stderr, (args, result.stderr)


def test_bad_argument_is_a_usage_error():
    result = run_cli("predict", "--top-k", "many", "x.jpg")
    assert result.returncode == 2 and "invalid int value" in result.stderr


def test_train_cli_tiny(synthetic_dataset, tmp_path, capsys, cache_dir):
    out = tmp_path / "bundle"
    code = main(["train", "--data", str(synthetic_dataset), "--out", str(out), "--backbone", "tiny_cnn",
                 "--weights", "none", "--image-size", "32", "--epochs", "2", "--quiet"])
    assert code == 0 and (out / "config.json").is_file()
    assert "valid: accuracy" in capsys.readouterr().out


def test_a_missing_extra_is_named_with_how_to_install_it(monkeypatch, tmp_path, capsys):
    """A command whose extra is not installed (here: TensorFlow for training) says which, and how
    to add it from a checkout or the wheel: the package is not on PyPI."""
    from sports_classifier import cli

    def needs_tensorflow(args):
        raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")

    monkeypatch.setattr(cli, "cmd_data", needs_tensorflow)
    monkeypatch.setattr(cli, "_add_data", lambda sub: sub.add_parser("data").set_defaults(func=needs_tensorflow))
    assert main(["data"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == 'error: data needs tensorflow, which this install lacks: pip install -e ".[train]" in a checkout ' \
                  "(or the wheel with [train])"
