"""Batch prediction on a real (local, two-node) Ray cluster that the tests start themselves:
the same rows as the local engine on real validation images and broken files, and a job
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


def test_ray_rows_equal_the_local_engine(ray_address, manifest, local_table, tmp_path):
    assert len(local_table) == 104 and local_table["error"].notna().sum() == 4
    result = predict_dataset(LITE0, manifest, tmp_path / "ray.parquet", engine="ray", ray_address=ray_address,
                             workers=2, cpus_per_worker=0.5, shard_size=10, progress=False)
    assert result.engine == "ray" and result.extra["workers"] == 2 and result.shards_skipped == 0
    assert_same_rows(pd.read_parquet(result.output), local_table)


def test_killed_ray_job_resumes_without_redoing_finished_shards(ray_address, manifest, local_table, tmp_path):
    out = tmp_path / "ray.parquet"
    parts = tmp_path / "ray.parquet.parts"
    command = [sys.executable, "-m", "sports_classifier", "predict", "--model", str(LITE0), "--input",
               str(manifest), "--output", str(out), "--engine", "ray", "--ray-address", ray_address,
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
    result = predict_dataset(LITE0, manifest, out, engine="ray", ray_address=ray_address, workers=2,
                             shard_size=4, batch_size=4, progress=False)
    assert result.shards == total and result.shards_skipped == len(finished)
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # not rewritten
    assert_same_rows(pd.read_parquet(out), local_table)
