"""Long jobs say how far they are (issue 26): bench, train on Ray (the workers' per-epoch lines
reach the driver), the Ray feature pass; ``--quiet`` turns them off. (push over plain HTTP:
tests/e2e/test_push_progress.py.)"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from helpers.cli import run_cli
from sports_classifier import cli

ROOT = Path(__file__).resolve().parents[2]
LITE0 = ROOT / "models" / "lite0"


@pytest.mark.skipif(not LITE0.is_dir(), reason="no bundled models/lite0")
def test_bench_shows_a_bar_on_stderr_unless_quiet():
    args = ["bench", "--models", LITE0, "--data", ROOT / "examples" / "basketball", "--repeats", "1",
            "--passes", "1", "--json"]
    code, out, err = run_cli(*args)
    assert code == 0 and out.lstrip().startswith("{")  # stdout: the JSON alone
    assert "bench" in err and "2/2" in err  # one model loaded, one pass
    code, out, err = run_cli(*args, "--quiet")
    assert code == 0 and "bench" not in err


class Stop(Exception):
    pass


@pytest.mark.parametrize("quiet", [False, True])
def test_ray_training_sends_the_workers_epoch_lines_to_the_driver(quiet, monkeypatch, tmp_path):
    """``train --engine ray``: Ray joins with ``log_to_driver`` on (the chief's Keras prints one
    line per epoch; before issue 26 it was always off, and a run printed nothing for minutes),
    off with ``--quiet``. Ray Train itself is stubbed: what is checked is what the driver asks."""
    pytest.importorskip("ray.train")
    import ray.train.tensorflow

    from sports_classifier.distributed import cluster

    asked = {}

    def connect(address, **kwargs):
        asked.update(kwargs)
        return False, 0.1

    class Trainer:
        def __init__(self, loop, train_loop_config, **kwargs):
            asked["progress_in_job"] = train_loop_config["progress"]

        def fit(self):
            raise Stop

    monkeypatch.setattr(cluster, "connect", connect)
    monkeypatch.setattr(ray.train.tensorflow, "TensorflowTrainer", Trainer)
    args = ["train", "--data", tmp_path, "--out", tmp_path / "out", "--backbone", "tiny_cnn", "--mode", "end_to_end",
            "--engine", "ray", "--workers", "1"] + (["--quiet"] if quiet else [])
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(Stop):
        cli.main([str(a) for a in args])
    assert asked["log_to_driver"] is (not quiet) and asked["progress_in_job"] is (not quiet)
    assert ("one line per epoch" in err.getvalue()) is (not quiet)


def test_connect_passes_log_to_driver_to_ray(monkeypatch):
    ray = pytest.importorskip("ray")
    from sports_classifier.distributed import cluster

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    cluster.connect(None)
    assert seen["log_to_driver"] is False
    cluster.connect(None, log_to_driver=True)
    assert seen["log_to_driver"] is True


@pytest.mark.slow
def test_the_ray_feature_pass_shows_a_bar(synthetic_dataset, tmp_path, capsys):
    """The feature cache's pass on Ray (``train --engine ray`` in cached mode): a bar on the
    driver, one step per image; none without progress."""
    pytest.importorskip("ray.data")
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from sports_classifier.distributed.ray_features import compute_features
    from sports_classifier.training.features import View

    # A stand-in trunk: global average pooling of the pixels (what is served does not matter here).
    graph = helper.make_graph([helper.make_node("GlobalAveragePool", ["x"], ["y"])], "trunk",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, 1, 1])])
    transpose = helper.make_node("Transpose", ["pixels"], ["x"], perm=[0, 3, 1, 2])
    graph = helper.make_graph([transpose, *graph.node], "trunk",
                              [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [None, 16, 16, 3])],
                              list(graph.output))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "trunk.onnx"
    onnx.save(model, path)
    images = sorted(str(p) for p in (synthetic_dataset / "train").rglob("*.jpg"))
    values, rows, skipped = compute_features(images, str(path), image_size=16, view=View("clean").key(),
                                             batch_size=4, address=None, workers=1, progress=True,
                                             desc="features train")
    err = capsys.readouterr().err
    assert len(rows) == len(images) and not skipped and values.shape[0] == len(images)
    assert "features train" in err and f"{len(images)}/{len(images)}" in err
    assert np.isfinite(values).all()
