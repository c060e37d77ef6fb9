"""Peak memory of joining a batch job's shards into one table (``batch.Shards.combine``).

    python scripts/measure_combine.py --rows 1000000 --work /tmp/combine   # writes the shards once
    python scripts/measure_combine.py --rows 1000000 --work /tmp/combine --concat   # the old pd.concat way

Synthetic rows shaped like ``predict --output`` (path, top-5 labels and probabilities, ood,
error; 1 row in 50 an error), in shards of ``--shard-size`` rows. The join runs in a fresh
child process that holds the job's list of paths (as ``predict_dataset`` does) and prints its
resident memory before the join, the peak during it (sampled every 2 ms from /proc, and
``ru_maxrss``, the process's peak over its whole life) and the difference.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOP_K = 5


def make_shards(work: Path, rows: int, shard_size: int):
    """The shards of a job of ``rows`` synthetic rows (reused when already there)."""
    import numpy as np

    from sports_classifier import batch

    paths = [f"/data/photos/{i // 1000:04d}/image-{i:07d}.jpg" for i in range(rows)]
    shards = batch.Shards(work / "out.parquet", paths, model="synthetic", top_k=TOP_K, shard_size=shard_size)
    rng = np.random.default_rng(0)
    labels = [f"sport {i}" for i in range(100)]
    for index in shards.pending():
        part = shards.rows(index)
        n = len(part)
        error = rng.random(n) < 0.02
        cols = {"path": part}
        probs = np.sort(rng.dirichlet(np.ones(100), n)[:, :TOP_K], axis=1)[:, ::-1]
        for k in range(TOP_K):
            cols[f"label_{k + 1}"] = [None if e else labels[j] for e, j in zip(error, rng.integers(0, 100, n))]
            cols[f"prob_{k + 1}"] = [None if e else float(p) for e, p in zip(error, probs[:, k])]
        cols["ood"] = [None if e else bool(p < 0.3) for e, p in zip(error, probs[:, 0])]
        cols["error"] = ["cannot identify image file" if e else None for e in error]
        shards.write(index, batch.frame_of(cols, TOP_K))
    return shards


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakRSS:
    """The highest resident memory seen while the block runs (sampled every 2 ms)."""

    def __enter__(self):
        self.peak, self._stop = rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def child(work: Path, rows: int, shard_size: int, concat: bool, fmt: str) -> None:
    from sports_classifier import batch

    import pandas  # noqa: F401  (imports are not the join: loaded before the start figure)
    import pyarrow.parquet  # noqa: F401

    shards = make_shards(work, rows, shard_size)  # all present: only reads job.json
    before = rss_mb()
    output = work / f"joined.{fmt}"
    start = time.perf_counter()
    with PeakRSS() as peak:
        if concat:  # what combine did before issue 26: every row in one DataFrame
            import pandas as pd

            frame = pd.concat([pd.read_parquet(shards.path(i)) for i in range(shards.count)], ignore_index=True)
            frame.to_csv(output, index=False) if fmt == "csv" else frame.to_parquet(output, index=False)
            total = len(frame)
            del frame
        else:
            total, _ = shards.combine(output, fmt, TOP_K)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": total, "shards": shards.count, "method": "pd.concat" if concat else "ParquetWriter",
                      "format": fmt, "rss_before_mb": round(before, 1), "peak_rss_mb": round(peak.peak, 1),
                      "peak_above_start_mb": round(peak.peak - before, 1), "ru_maxrss_mb": round(maxrss, 1),
                      "seconds": round(time.perf_counter() - start, 2),
                      "output_mb": round(output.stat().st_size / 1e6, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--work", type=Path, required=True, help="folder for the shards and the joined table")
    parser.add_argument("--concat", action="store_true", help="measure the old pd.concat join instead")
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.work, args.rows, args.shard_size, args.concat, args.format)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    make_shards(args.work, args.rows, args.shard_size)
    cmd = [sys.executable, __file__, "--child", "--rows", str(args.rows), "--shard-size", str(args.shard_size),
           "--work", str(args.work), "--format", args.format] + (["--concat"] if args.concat else [])
    subprocess.run(cmd, check=True, env=os.environ | {"PYTHONPATH": str(ROOT)})


if __name__ == "__main__":
    main()
