"""The feature cache's expensive step on Ray Data (``train --executor ray`` in cached mode).

``training.features.FeatureExtractor`` exports the frozen trunk to ONNX once; here an actor pool
runs that file over the images (each actor loads it once), and the driver puts the rows back
in order. The extractor then writes the cache entry exactly as when it computes it itself, under
the same key, so a later local run reads it (and the other way round).

Every view goes through Ray, augmented ones included: the work is cut into the same
``batch_size`` slices of the file list as the local pass, and each slice is transformed by
``view_transform`` with its slice number, so an augmented slice gets the same random draws
on whichever actor it lands (``BatchAugmentation``).

The caller builds a ``RayFeatureExecutor`` and hands it to ``training.loop.train(feature_executor=...)``
(or ``FeatureExtractor(executor=...)``): ``training`` never imports this module.
"""

from __future__ import annotations

import numpy as np
import ray

from .cluster import connect


class TrunkActor:
    """One Ray actor: the ONNX trunk (and the view's transform) built once, then slice after slice."""

    def __init__(self, onnx_path: str, image_size: int, view: dict, threads: int):
        from ..runtime import OnnxEngine
        from ..training.features import view_transform

        self.engine = OnnxEngine(onnx_path, threads=threads)
        self.image_size = image_size
        self.transform = view_transform(view)

    def __call__(self, batch: dict) -> dict:
        from ..images import try_preprocess_many

        rows, errors, values = [], [], []
        for number, first, paths in zip(batch["slice"], batch["first_row"], batch["paths"]):
            paths = [str(p) for p in paths]
            pixels, kept, failures = try_preprocess_many(paths, self.image_size)
            out = None
            if kept:
                out = self.engine(self.transform(pixels, int(number))).astype(np.float32)
            slice_errors = [""] * len(paths)
            for i, reason in failures:
                slice_errors[i] = reason
            full = None
            if out is not None:
                full = np.zeros((len(paths),) + out.shape[1:], np.float32)
                full[np.asarray(kept)] = out
            rows.append(np.arange(len(paths), dtype=np.int64) + int(first))
            errors.append(np.asarray(slice_errors, dtype=object))
            values.append(full)
        shapes = {v.shape[1:] for v in values if v is not None}
        shape = shapes.pop() if shapes else (0,)
        values = [v if v is not None else np.zeros((len(r),) + shape, np.float32) for v, r in zip(values, rows)]
        return {"row": np.concatenate(rows), "error": np.concatenate(errors), "features": np.concatenate(values)}


class RayFeatureExecutor:
    """``FeatureExtractor``'s executor on the Ray cluster at ``address`` (``auto``: a running
    one; None: Ray's default, which starts a local cluster when none runs)."""

    name = "ray"

    def __init__(self, address: str | None = None, *, workers: int | None = None, cpus_per_worker: float = 0.5):
        self.address, self.workers, self.cpus_per_worker = address, workers, cpus_per_worker

    def __call__(self, paths: list[str], onnx_path: str, *, image_size: int, view: dict, batch_size: int,
                 progress: bool = False, desc: str = "features (ray)"):
        return compute_features(paths, onnx_path, image_size=image_size, view=view, batch_size=batch_size,
                                address=self.address, workers=self.workers, cpus_per_worker=self.cpus_per_worker,
                                progress=progress, desc=desc)


def compute_features(paths: list[str], onnx_path: str, *, image_size: int, view: dict, batch_size: int,
                     address: str | None, workers: int | None = None, cpus_per_worker: float = 0.5,
                     progress: bool = False, desc: str = "features (ray)"):
    """Trunk outputs of ``view`` (a ``View.key()``) for ``paths``: (values of the readable images
    in order, their rows, skipped ``[path, reason]`` pairs), as ``FeatureExtractor._compute``
    returns them. ``progress``: a bar on this (the driver's) terminal, one step per image."""
    from tqdm.auto import tqdm

    started, _ = connect(address)
    try:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        workers = workers or max(1, int(cpus // 1))
        ray.data.DataContext.get_current().enable_progress_bars = False
        slices = [{"slice": k, "first_row": start, "paths": paths[start:start + batch_size]}
                  for k, start in enumerate(range(0, len(paths), batch_size))]
        ds = ray.data.from_items(slices, override_num_blocks=len(slices))
        ds = ds.map_batches(TrunkActor, fn_constructor_kwargs={"onnx_path": str(onnx_path), "image_size": image_size,
                                                                "view": dict(view), "threads": 1},
                            batch_size=1, batch_format="numpy", num_cpus=cpus_per_worker,
                            compute=ray.data.ActorPoolStrategy(size=workers))
        rows, errors, values = [], [], []
        with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
            for part in ds.iter_batches(batch_size=None, batch_format="numpy"):
                rows.append(part["row"])
                errors.append(part["error"])
                values.append(part["features"])
                bar.update(len(part["row"]))
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
