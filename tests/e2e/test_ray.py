"""Batch prediction on a real (local, two-node) Ray cluster that the tests start themselves:
the same rows as the local executor on real validation images and broken files, and a job
killed midway that a rerun finishes without redoing its finished shards.

Every test has a timeout: a Ray job that cannot schedule its actors waits silently forever.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("ray")

from helpers.ray_cluster import LocalRayCluster  # noqa: E402
from sports_classifier.batch import predict_dataset  # noqa: E402
from sports_classifier.distributed.ray_batch import RayExecutor  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]
LITE0 = ROOT / "models" / "lite0"


@pytest.fixture(scope="module")
def ray_address():
    """A head node and a second node, one CPU each, on 127.0.0.1."""
    with LocalRayCluster(head_cpus=1, node_cpus=1, timeout=120) as address:
        yield address


@pytest.fixture(scope="module")
def manifest(shared_data, tmp_path_factory) -> Path:
    """100 real validation images (one per class) and broken files, as a CSV manifest."""
    folder = tmp_path_factory.mktemp("ray-inputs")
    real = [sorted(d.iterdir())[0] for d in sorted((shared_data / "valid").iterdir()) if d.is_dir()][:100]
    good = real[0].read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "garbage.jpg").write_bytes(b"\x00garbage" * 10)
    (folder / "empty.png").write_bytes(b"")
    paths = [str(p) for p in real[:50]] + [str(folder / "garbage.jpg"), str(folder / "missing.jpg")]
    paths += [str(p) for p in real[50:]] + [str(folder / "truncated.jpg"), str(folder / "empty.png")]
    out = folder / "manifest.csv"
    pd.DataFrame({"path": paths}).to_csv(out, index=False)
    return out


@pytest.fixture(scope="module")
def local_table(manifest, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("local") / "local.parquet"
    predict_dataset(LITE0, manifest, out, shard_size=10, progress=False)
    return pd.read_parquet(out)


def assert_same_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert got["path"].tolist() == want["path"].tolist()
    labels = [c for c in want.columns if c.startswith("label_")]
    probs = [c for c in want.columns if c.startswith("prob_")]
    pd.testing.assert_frame_equal(got[labels + ["ood", "error"]], want[labels + ["ood", "error"]])
    np.testing.assert_allclose(got[probs].to_numpy(float, na_value=np.nan),
                               want[probs].to_numpy(float, na_value=np.nan), atol=1e-5, equal_nan=True)


def test_ray_rows_equal_the_local_executor(ray_address, manifest, local_table, tmp_path):
    assert len(local_table) == 104 and local_table["error"].notna().sum() == 4
    result = predict_dataset(LITE0, manifest, tmp_path / "ray.parquet",
                             executor=RayExecutor(ray_address, workers=2, cpus_per_worker=0.5), shard_size=10,
                             progress=False)
    assert result.executor == "ray" and result.extra["workers"] == 2 and result.shards_skipped == 0
    assert_same_rows(pd.read_parquet(result.output), local_table)


def test_killed_ray_job_resumes_without_redoing_finished_shards(ray_address, manifest, local_table, tmp_path):
    out = tmp_path / "ray.parquet"
    parts = tmp_path / "ray.parquet.parts"
    command = [sys.executable, "-m", "sports_classifier", "predict", "--model", str(LITE0), "--input",
               str(manifest), "--output", str(out), "--executor", "ray", "--ray-address", ray_address,
               "--workers", "2", "--shard-size", "4", "--batch-size", "4", "--json"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None and len(list(parts.glob("part-*"))) < 3:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # no clean-up chance, as a crashed driver
        proc.wait(timeout=30)
    finished = {p: p.stat().st_mtime_ns for p in parts.glob("part-*.parquet")}
    total = 26  # 104 rows in shards of 4
    assert 3 <= len(finished) < total, f"the job was not caught midway ({len(finished)} of {total} shards)"
    assert not out.exists()
    result = predict_dataset(LITE0, manifest, out, executor=RayExecutor(ray_address, workers=2),
                             shard_size=4, batch_size=4, progress=False)
    assert result.shards == total and result.shards_skipped == len(finished)
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # not rewritten
    assert_same_rows(pd.read_parquet(out), local_table)


# -- training ------------------------------------------------------------------------------

TRAIN_CLASSES = ("swimming", "polo", "bowling")


def tiny_config():
    from sports_classifier.config import TrainConfig

    # No dropout, no augmentation: the only randomness left is the shuffle, which every worker
    # draws alike, so that N workers compute the same global-batch gradients as one.
    return TrainConfig(backbone="tiny_cnn", weights="none", image_size=32, mode="end_to_end", head_epochs=4,
                       fine_tune_epochs=0, batch_size=8, classes=TRAIN_CLASSES, max_per_class=16,
                       learning_rate=0.05, dropout=0.0, augment=False)


TRAIN_ARGS = ["--backbone", "tiny_cnn", "--weights", "none", "--image-size", "32", "--mode", "end_to_end",
              "--epochs", "4", "--fine-tune-epochs", "0", "--batch-size", "8", "--classes", ",".join(TRAIN_CLASSES),
              "--max-per-class", "16", "--lr", "0.05", "--dropout", "0", "--no-augment", "--quiet"]


@pytest.fixture(scope="module")
def trained(ray_address, shared_data, tmp_path_factory):
    """The same training on one and on two Ray Train workers."""
    from sports_classifier.distributed.ray_train import train_on_ray

    root = tmp_path_factory.mktemp("ray-train")
    runs = {}
    for workers in (1, 2):
        runs[workers] = train_on_ray(tiny_config(), shared_data, root / f"w{workers}", workers=workers,
                                     address=ray_address, cpus_per_worker=0.5, progress=False, tf_port=8070,
                                     threads=1)
        assert not (root / f"w{workers}.checkpoint").exists()  # removed once the bundle is written
    return runs


def probabilities(bundle, shared_data):
    from sports_classifier.classifier import Classifier

    images = [sorted((shared_data / "valid" / c).iterdir())[0] for c in TRAIN_CLASSES]
    return Classifier.from_pretrained(bundle).predict_proba(images)


@pytest.mark.timeout(600)
def test_two_ray_train_workers_train_like_one(trained, shared_data):
    probs = {w: probabilities(r["bundle"], shared_data) for w, r in trained.items()}
    acc = {w: r["metrics"]["valid"]["accuracy"] for w, r in trained.items()}
    assert trained[2]["metrics"]["valid"]["n"] == 15 and trained[2]["workers"] == 2
    # Same shuffles, same global batches, gradients averaged over the workers: the same model
    # up to float rounding (a wrong split or loss scale shows at once).
    assert acc[1] == acc[2], acc
    np.testing.assert_allclose(probs[2], probs[1], atol=1e-4)
    assert probs[1].max() > 0.4  # it learned something: not the uniform 1/3


@pytest.mark.timeout(600)
def test_killed_two_worker_training_resumes_to_the_same_model(trained, ray_address, shared_data, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "sports_classifier", "train", "--data", str(shared_data), "--out", str(out),
               *TRAIN_ARGS, "--executor", "ray", "--workers", "2", "--ray-address", ray_address,
               "--cpus-per-worker", "0.5", "--tf-port", "8072"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    latest = tmp_path / "run.checkpoint" / "head" / "latest"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and not (
                latest.is_file() and latest.read_text().strip() >= "epoch-0002"):
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver dies; Ray ends its workers
        proc.wait(timeout=30)
    assert latest.is_file() and not out.exists(), "the run was not caught midway"
    time.sleep(5)  # let Ray end the dead job's workers
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "2 Ray workers" in resumed.stdout
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 4  # the epochs before the kill restored, the others trained
    np.testing.assert_allclose(probabilities(out, shared_data), probabilities(trained[2]["bundle"], shared_data),
                               atol=1e-4)


def test_feature_cache_computed_on_ray_is_the_one_the_local_path_reads(ray_address, manifest, tmp_path):
    import keras

    from sports_classifier.batch import collect_inputs
    from sports_classifier.distributed.ray_features import RayFeatureExecutor
    from sports_classifier.models.network import build_classifier
    from sports_classifier.training.features import FeatureExtractor, View
    from sports_classifier.training.subnetworks import trunk

    keras.utils.set_random_seed(0)
    net = trunk(build_classifier("tiny_cnn", 3, image_size=32, weights="none"), None)
    paths = [p for p in collect_inputs(manifest) if Path(p).exists()]  # as dataset discovery lists them
    local = FeatureExtractor(net, image_size=32, cache_dir=tmp_path / "local", progress=False)
    on_ray = FeatureExtractor(net, image_size=32, cache_dir=tmp_path / "ray", progress=False,
                              executor=RayFeatureExecutor(ray_address))
    augmented = View("augment", seed=7, zoom=0.2, shift=0.2, horizontal_flip=True)
    for view in (View("clean"), View("flip"), augmented):
        a, b = local(paths, view), on_ray(paths, view)
        assert b.skipped == a.skipped and len(a.skipped) == 3
        np.testing.assert_array_equal(b.rows, a.rows)
        np.testing.assert_allclose(b.values, a.values, atol=1e-4)
    assert sorted(p.name for p in (tmp_path / "ray" / "features").glob("*.json")) == \
        sorted(p.name for p in (tmp_path / "local" / "features").glob("*.json"))  # the same cache keys
    # A local run pointed at the cache Ray wrote reads it instead of computing.
    reader = FeatureExtractor(net, image_size=32, cache_dir=tmp_path / "ray", progress=False)
    cached = reader(paths, View("flip"))
    assert reader.hits == 1 and reader.misses == 0
    np.testing.assert_allclose(cached.values, local(paths, View("flip")).values, atol=1e-3)
