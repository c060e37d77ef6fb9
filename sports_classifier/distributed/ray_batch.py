"""Batch prediction on Ray Data: an actor pool, each actor loading the bundle once.

The pending shards' file list becomes a Ray dataset (one block per batch, in shard order);
``map_batches`` runs ``Predictor`` actors that call the same ``batch.predict_chunk`` the local
executor calls, so both write the same rows. The driver streams the results back and writes
each shard as soon as all its rows have arrived: a job killed midway keeps every finished
shard, and the rerun skips them (``batch.Shards``).

Files are read by the actors from their paths, so every node must see them under the same
path (a shared or network file system). Sizing: each actor claims ``cpus_per_worker`` CPUs and
runs ONNX Runtime on ``threads`` threads. On a small cluster an actor pool that claims whole
CPUs leaves none for Ray Data's own tasks and the job waits forever; a fractional claim (0.5
by default) avoids that.

The caller builds a ``RayExecutor`` and hands it to ``batch.predict_dataset(executor=...)``:
``batch`` never imports this module.
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


class RayExecutor:
    """The pending shards of a ``batch.predict_dataset`` job computed on a Ray cluster.

    Args:
        address: the cluster (``auto``: a running one; None: Ray's own default, which starts a
            local cluster when none runs).
        workers: actors in the pool (default: as many as the cluster's CPUs allow).
        cpus_per_worker: CPUs each actor claims; keep it fractional on small clusters so that
            Ray Data's own tasks can still run.
        threads: ONNX Runtime threads per actor (default: ``cpus_per_worker`` rounded down, at least 1).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, workers: int | None = None,
                 cpus_per_worker: float = 0.5, threads: int | None = None):
        self.address, self.workers, self.cpus_per_worker, self.threads = address, workers, cpus_per_worker, threads

    def __call__(self, shards: "batch.Shards", pending: list[int], model, *, top_k: int, batch_size: int,
                 runtime: str, progress: bool) -> dict:
        """Compute the ``pending`` shards on Ray; returns timings (start-up, compute)."""
        started, startup = connect(self.address)
        try:
            return {"ray_startup_s": startup} | self._run(shards, pending, model, top_k=top_k,
                                                          batch_size=batch_size, runtime=runtime, progress=progress)
        finally:
            if started:
                ray.shutdown()

    def _run(self, shards, pending, model, *, top_k, batch_size, runtime, progress) -> dict:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        cpus_per_worker = self.cpus_per_worker
        workers = self.workers if self.workers is not None else max(1, int(cpus // max(cpus_per_worker, 1.0)))
        if workers * cpus_per_worker > cpus:
            log.warning("%d actors x %.2f CPUs exceed the cluster's %.1f CPUs: some will wait",
                        workers, cpus_per_worker, cpus)
        threads = self.threads or max(1, math.floor(cpus_per_worker))
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
        t0 = time.perf_counter()
        _write_shards_as_they_complete(ds, shards, top_k, total=len(items), progress=progress,
                                       desc=f"predict (ray, {workers} actors)")
        return {"ray_compute_s": time.perf_counter() - t0, "workers": workers,
                "cpus_per_worker": cpus_per_worker, "threads": threads}


def _write_shards_as_they_complete(ds, shards, top_k: int, *, total: int, progress: bool, desc: str) -> None:
    """Stream the actors' rows back and write each shard once all its rows have arrived."""
    from tqdm.auto import tqdm

    waiting: dict[int, list[pd.DataFrame]] = {}
    counts: dict[int, int] = {}
    with tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
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
