"""Crash safety: a training run killed with SIGKILL resumes to the same result."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sports_classifier.classifier import Classifier

from helpers.datasets import make_dataset

ARGS = ["--backbone", "tiny_cnn", "--weights", "none", "--image-size", "32", "--epochs", "12",
        "--fine-tune-stages", "1", "--fine-tune-epochs", "6", "--augment-views", "1", "--quiet"]


def _train(data, out, cache, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "sports_classifier", "train", "--data", str(data), "--out", str(out),
         "--cache-dir", str(cache), *ARGS, *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, and the data and feature cache it used."""
    root = tmp_path_factory.mktemp("resume")
    data = make_dataset(root / "data", per_class=(10, 3))
    run = _train(data, root / "ref", root / "cache")
    assert run.wait(timeout=300) == 0, run.stderr.read()
    return data, root / "cache", root / "ref"


@pytest.mark.parametrize("kill_at", [("head", 4), ("fine_tune", 2)])
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, reference, kill_at):
    data, cache, ref = reference

    stage, epochs = kill_at
    out = tmp_path / "crashed"
    history = tmp_path / "crashed.checkpoint" / f"{stage}.history.csv"
    proc = _train(data, out, cache)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) > epochs:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "config.json").exists()

    resumed = _train(data, out, cache, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert not (tmp_path / "crashed.checkpoint").exists()
    images = sorted((data / "valid").rglob("*.jpg"))
    np.testing.assert_allclose(
        Classifier.from_pretrained(out).predict_proba(images),
        Classifier.from_pretrained(ref).predict_proba(images), atol=1e-6,
    )


def test_resume_refuses_a_different_config(tmp_path, synthetic_dataset):
    from sports_classifier.config import TrainConfig
    from sports_classifier.errors import ConfigError
    from sports_classifier.training.loop import Checkpoints

    out = tmp_path / "o"
    Checkpoints(out, TrainConfig(head_epochs=3), resume=False)
    with pytest.raises(ConfigError, match="different training config"):
        Checkpoints(out, TrainConfig(head_epochs=4), resume=True)
