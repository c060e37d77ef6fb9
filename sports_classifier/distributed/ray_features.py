"""The feature cache's expensive step on Ray Data (``train --engine ray`` in cached mode).

``training.features.FeatureExtractor`` exports the frozen trunk to ONNX once; here an actor pool
runs that file over the images (each actor loads it once), and the driver puts the rows back
in order. The extractor then writes the cache entry exactly as when it computes it itself, under
the same key, so a later local run reads it (and the other way round). The clean and mirrored
views go through Ray; augmented views need the Keras augmentation layers and stay local.
"""

from __future__ import annotations

import math

import numpy as np
import ray

from .cluster import connect


class TrunkActor:
    """One Ray actor: the ONNX trunk loaded once, then batch after batch of paths."""

    def __init__(self, onnx_path: str, image_size: int, flip: bool, threads: int):
        from ..runtime import OnnxEngine

        self.engine = OnnxEngine(onnx_path, threads=threads)
        self.image_size, self.flip = image_size, flip

    def __call__(self, batch: dict) -> dict:
        from ..images import try_preprocess_many

        rows = np.asarray(batch["row"], np.int64)
        pixels, kept, failures = try_preprocess_many(list(batch["path"]), self.image_size)
        if self.flip:
            pixels = pixels[:, :, ::-1, :]
        values = self.engine(pixels).astype(np.float32) if kept else None
        shape = values.shape[1:] if values is not None else (0,)
        out = np.zeros((len(rows),) + tuple(shape), np.float32)
        errors = np.array([""] * len(rows), dtype=object)
        for j, i in enumerate(kept):
            out[i] = values[j]
        for i, reason in failures:
            errors[i] = reason
        return {"row": rows, "error": errors, "features": out}


def compute_features(paths: list[str], onnx_path: str, *, image_size: int, flip: bool, batch_size: int,
                     address: str | None, workers: int | None = None, cpus_per_worker: float = 0.5):
    """Trunk outputs for ``paths``: (values of the readable images in order, their rows,
    skipped ``[path, reason]`` pairs), as ``FeatureExtractor._compute`` returns them."""
    started, _ = connect(address)
    try:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        workers = workers or max(1, int(cpus // 1))
        ray.data.DataContext.get_current().enable_progress_bars = False
        items = [{"row": i, "path": p} for i, p in enumerate(paths)]
        ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / batch_size)))
        ds = ds.map_batches(TrunkActor, fn_constructor_kwargs={"onnx_path": str(onnx_path), "image_size": image_size,
                                                                "flip": flip, "threads": 1},
                            batch_size=batch_size, batch_format="numpy", num_cpus=cpus_per_worker,
                            compute=ray.data.ActorPoolStrategy(size=workers))
        rows, errors, values = [], [], []
        for part in ds.iter_batches(batch_size=None, batch_format="numpy"):
            rows.append(part["row"])
            errors.append(part["error"])
            values.append(part["features"])
    finally:
        if started:
            ray.shutdown()
    rows_all = np.concatenate(rows)
    order = np.argsort(rows_all, kind="stable")
    rows_all, errors_all = rows_all[order], np.concatenate(errors)[order]
    ok = errors_all == ""
    shapes = {v.shape[1:] for v in values if v.ndim > 1 and v.shape[1:] != (0,)}
    if not shapes:
        return np.zeros((0,), np.float32), np.zeros(0, np.int64), [[paths[r], e] for r, e in zip(rows_all, errors_all)]
    (shape,) = shapes
    full = np.concatenate([v if v.shape[1:] == shape else np.zeros((len(v),) + shape, np.float32) for v in values])
    full = full[order]
    skipped = [[paths[int(r)], str(e)] for r, e in zip(rows_all[~ok], errors_all[~ok])]
    return full[ok], rows_all[ok], skipped
