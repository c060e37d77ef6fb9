"""The command line, run as a user runs it (a real subprocess for the error paths)."""

import json
import subprocess
import sys

import pytest

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
