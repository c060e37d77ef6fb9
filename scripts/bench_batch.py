"""Measure batch prediction: images/s of the local executor and of Ray with 1 and 2 actors, Ray's
start-up time, and peak memory (docs/scale.md). Starts its own local Ray cluster on fixed ports
(the test helper) unless --ray-address is given.

    python scripts/bench_batch.py --model models/lite0 --input ../shared/data/sports100/valid --images 500
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from sports_classifier.batch import collect_inputs, predict_dataset  # noqa: E402


class PeakMemory:
    """Peak total RSS of this process and every process of the Ray cluster (sampled)."""

    def __init__(self, roots: list[int]):
        self.roots, self.peak, self._stop = roots, 0, threading.Event()

    def _sample(self) -> int:
        procs = []
        for pid in self.roots:
            try:
                root = psutil.Process(pid)
                procs += [root] + root.children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        total = 0
        for p in {p.pid: p for p in procs}.values():
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(0.2)

    def __enter__(self):
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._stop.clear()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models" / "lite0"))
    ap.add_argument("--input", required=True)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=1, help="list the images this many times (longer runs)")
    ap.add_argument("--shard-size", type=int, default=100)
    ap.add_argument("--ray-address")
    ap.add_argument("--cpus-per-worker", type=float, default=0.9)
    args = ap.parse_args()
    paths = collect_inputs(args.input)[: args.images] * args.repeat
    results = {"images": len(paths)}
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        with PeakMemory([psutil.Process().pid]) as mem:
            r = predict_dataset(args.model, paths, work / "local.parquet", shard_size=args.shard_size, progress=False)
        results["local"] = {"images_per_s": round(r.rows / r.seconds, 1), "seconds": round(r.seconds, 1),
                            "peak_rss_mb": round(mem.peak / 2**20)}
        r = predict_dataset(args.model, paths, work / "local1.parquet", shard_size=args.shard_size, progress=False,
                            threads=1)
        results["local_1_thread"] = {"images_per_s": round(r.rows / r.seconds, 1), "seconds": round(r.seconds, 1)}
        from sports_classifier.distributed.ray_batch import RayExecutor

        cluster = None
        address = args.ray_address
        if address is None:
            from helpers.ray_cluster import LocalRayCluster

            cluster = LocalRayCluster(head_cpus=2)
            address = cluster.__enter__()
            results["ray_cluster_start_s"] = round(cluster.startup_seconds, 1)
        try:
            roots = [psutil.Process().pid] + ([p.pid for p in cluster.procs] if cluster else [])
            for workers in (1, 2):
                with PeakMemory(roots) as mem:
                    t = time.perf_counter()
                    ray_executor = RayExecutor(address, workers=workers, cpus_per_worker=args.cpus_per_worker)
                    r = predict_dataset(args.model, paths, work / f"ray{workers}.parquet", executor=ray_executor,
                                        shard_size=args.shard_size, progress=False)
                    wall = time.perf_counter() - t
                results[f"ray_{workers}"] = {
                    "images_per_s": round(r.rows / wall, 1), "seconds": round(wall, 1),
                    "connect_s": round(r.extra["ray_startup_s"], 2),
                    "pipeline_s": round(r.extra["ray_compute_s"], 1),
                    "peak_rss_mb_driver_and_cluster": round(mem.peak / 2**20)}
        finally:
            if cluster is not None:
                cluster.__exit__()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
