"""Batch prediction on Ray Data: an actor pool, each actor loading the bundle once.

The pending shards' file list becomes a Ray dataset (one block per batch, in shard order);
``map_batches`` runs ``Predictor`` actors that call the same ``batch.predict_chunk`` the local
engine calls, so both write the same rows. The driver streams the results back and writes
each shard as soon as all its rows have arrived: a job killed midway keeps every finished
shard, and the rerun skips them (``batch.Shards``).

Files are read by the actors from their paths, so every node must see them under the same
path (a shared or network file system). Sizing: each actor claims ``cpus_per_worker`` CPUs and
runs ONNX Runtime on ``threads`` threads. On a small cluster an actor pool that claims whole
CPUs leaves none for Ray Data's own tasks and the job waits forever; a fractional claim (0.5
by default) avoids that.
"""

from __future__ import annotations

import logging
import math
import time

import pandas as pd
import ray

from .. import batch
from .cluster import connect

log = logging.getLogger(__name__)


class Predictor:
    """One Ray actor: the bundle loaded once, then batch after batch of paths."""

    def __init__(self, model: str, runtime: str, top_k: int, batch_size: int, threads: int):
        from ..classifier import Classifier

        self.clf = Classifier.from_pretrained(model, runtime=runtime, threads=threads)
        self.top_k = top_k
        self.batch_size = batch_size

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        rows = batch.predict_chunk(self.clf, frame["path"].tolist(), self.top_k, self.batch_size)
        out = batch.frame_of(rows, self.top_k)
        out.insert(0, "shard", frame["shard"].to_numpy())
        out.insert(1, "row", frame["row"].to_numpy())
        return out


def run_ray(shards: "batch.Shards", pending: list[int], model, *, top_k: int, batch_size: int,
            runtime: str, progress: bool, address: str | None, workers: int | None,
            cpus_per_worker: float, threads: int | None) -> dict:
    """Compute the ``pending`` shards on Ray; returns timings (start-up, compute)."""
    from tqdm.auto import tqdm

    started, startup = connect(address)
    try:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        if workers is None:
            workers = max(1, int(cpus // max(cpus_per_worker, 1.0)))
        if workers * cpus_per_worker > cpus:
            log.warning("%d actors x %.2f CPUs exceed the cluster's %.1f CPUs: some will wait",
                        workers, cpus_per_worker, cpus)
        threads = threads or max(1, math.floor(cpus_per_worker))
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours is below
        items = [{"shard": i, "row": r, "path": p} for i in pending for r, p in enumerate(shards.rows(i))]
        # One block per batch keeps the stream fine-grained: shards finish one after another
        # rather than all at the end.
        ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / batch_size)))
        ds = ds.map_batches(
            Predictor, fn_constructor_kwargs={"model": str(model), "runtime": runtime, "top_k": top_k,
                                              "batch_size": batch_size, "threads": threads},
            batch_size=batch_size, batch_format="pandas", num_cpus=cpus_per_worker,
            compute=ray.data.ActorPoolStrategy(size=workers),
        )
        waiting: dict[int, list[pd.DataFrame]] = {}
        counts: dict[int, int] = {}
        t0 = time.perf_counter()
        with tqdm(total=len(items), desc=f"predict (ray, {workers} actors)", unit="img",
                  disable=not progress) as bar:
            for part in ds.iter_batches(batch_size=None, batch_format="pandas"):
                for index, rows in part.groupby("shard", sort=False):
                    index = int(index)
                    waiting.setdefault(index, []).append(rows)
                    counts[index] = counts.get(index, 0) + len(rows)
                    if counts[index] == len(shards.rows(index)):
                        whole = pd.concat(waiting.pop(index)).sort_values("row")
                        whole = whole.drop(columns=["shard", "row"]).reset_index(drop=True)
                        shards.write(index, batch.frame_of(whole, top_k))
                bar.update(len(part))
        if waiting:
            raise RuntimeError(f"Ray returned incomplete shards {sorted(waiting)[:5]} (a bug)")
        return {"ray_startup_s": startup, "ray_compute_s": time.perf_counter() - t0, "workers": workers,
                "cpus_per_worker": cpus_per_worker, "threads": threads}
    finally:
        if started:
            ray.shutdown()
