"""A disk cache of what the frozen part of a network computes.

On a CPU the frozen backbone's forward pass is the whole cost of training a head, so it is
computed once per (trunk weights, image size, view, file list) and reused by every later run.
The forward pass goes through ONNX Runtime when it is installed (exact to 1e-4, several times
faster than Keras), else Keras.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import atomic
from ..atomic import atomic_path
from ..images import SkippedImages, iter_batches

log = logging.getLogger(__name__)

CACHE_ENV = "SPORTS_CLASSIFIER_CACHE"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "sports_classifier"


@dataclass(frozen=True)
class View:
    """One way of showing the images to the trunk: as they are, mirrored, or augmented."""

    kind: str  # "clean", "flip" or "augment"
    seed: int = 0
    zoom: float = 0.0
    shift: float = 0.0
    horizontal_flip: bool = False

    def key(self) -> dict:
        return self.__dict__.copy()


@dataclass
class Features:
    values: np.ndarray  # (n_kept, ...) float16 on disk, float32 in memory
    rows: np.ndarray  # positions in the file list that decoded (unreadable files are left out)
    skipped: list


def weights_digest(model) -> str:
    digest = hashlib.sha256()
    for w in model.weights:
        digest.update(w.path.encode())
        digest.update(np.ascontiguousarray(np.asarray(w)).tobytes())
    return digest.hexdigest()


def _files_key(paths: Sequence[str]) -> list:
    """Identify the files by absolute path, size and modification time: a changed or moved
    file is a new entry, and the working folder a run starts from does not matter."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([os.path.abspath(p), st.st_size, st.st_mtime_ns])
    return out


class FeatureExtractor:
    """Computes and caches trunk outputs for lists of image files."""

    def __init__(self, trunk, *, image_size: int, cache_dir: str | Path | None = None,
                 batch_size: int = 32, progress: bool = True, use_onnx: bool | None = None,
                 executor=None):
        """``executor``: computes every view elsewhere from the trunk's ONNX export, e.g.
        ``distributed.ray_features.RayFeatureExecutor`` on a Ray cluster; called as
        ``executor(paths, onnx_path, image_size=, view=View.key(), batch_size=)`` and returns
        ``(values, rows, skipped)``. None: in this process. The cache entries are the same
        either way. The caller passes it in: this layer never imports ``distributed``."""
        self.trunk = trunk
        self.image_size = image_size
        self.batch_size = batch_size
        self.progress = progress
        self.root = cache_root(cache_dir) / "features"
        self.trunk_digest = weights_digest(trunk)
        self._engine = None
        self._use_onnx = use_onnx
        self._onnx_path: Path | None = None
        self.executor = executor
        self.hits = 0
        self.misses = 0

    def _engine_for_trunk(self):
        if self._engine is not None:
            return self._engine
        from ..runtime import KerasEngine, OnnxEngine, export_onnx, onnxruntime_available

        use_onnx = onnxruntime_available() if self._use_onnx is None else self._use_onnx
        if use_onnx:
            path = self.root / f"trunk-{self.trunk_digest[:16]}-{self.image_size}.onnx"
            try:
                if not path.is_file():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    rng = np.random.default_rng(0)
                    sample = rng.uniform(0, 255, (2, self.image_size, self.image_size, 3)).astype(np.float32)
                    export_onnx(self.trunk, path, sample=sample, atol=1e-3)
                self._engine = OnnxEngine(path)
                self._onnx_path = path
            except Exception as exc:  # any export problem: Keras computes the same, slower
                log.warning("ONNX trunk unavailable (%s); computing features with Keras", exc)
        if self._engine is None:
            self._engine = KerasEngine(self.trunk)
        return self._engine

    def __call__(self, paths: Sequence[str], view: View, *, desc: str = "features") -> Features:
        key = hashlib.sha256(
            json.dumps(
                {"trunk": self.trunk_digest, "size": self.image_size, "view": view.key(),
                 "files": _files_key(paths)}
            ).encode()
        ).hexdigest()[:32]
        npy, meta = self.root / f"{key}.npy", self.root / f"{key}.json"
        if npy.is_file() and meta.is_file():
            try:
                info = json.loads(meta.read_text())
                values = np.load(npy, allow_pickle=False).astype(np.float32)
                self.hits += 1
                SkippedImages([tuple(s) for s in info["skipped"]]).warn(desc)  # as when computed
                return Features(values, np.asarray(info["rows"], np.int64), info["skipped"])
            except (OSError, ValueError, KeyError) as exc:
                log.warning("feature cache entry %s unreadable (%s); recomputing", key, exc)
        self.misses += 1
        features = self._compute(paths, view, desc)
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(npy) as tmp:
            np.save(tmp, features.values.astype(np.float16))
        atomic.write_json(meta, {"rows": features.rows.tolist(), "skipped": features.skipped}, indent=None)
        return features

    def _compute(self, paths: Sequence[str], view: View, desc: str) -> Features:
        engine = self._engine_for_trunk()
        if self.executor is not None and self._onnx_path is not None:
            values, rows, skipped = self.executor(list(paths), str(self._onnx_path), image_size=self.image_size,
                                                  view=view.key(), batch_size=self.batch_size,
                                                  progress=self.progress, desc=f"{desc} (ray)")
            SkippedImages([tuple(s) for s in skipped]).warn(desc)
            if not len(rows):
                raise ValueError(f"no readable images among {len(paths)} file(s) for {desc}")
            return Features(values, rows, skipped)
        skipped = SkippedImages()
        chunks, rows = [], []
        for pixels, idx in view_pixels(paths, view, self.image_size, self.batch_size, skipped=skipped,
                                       desc=desc, progress=self.progress):
            chunks.append(engine(pixels).astype(np.float32))
            rows.append(idx)
        skipped.warn(desc)
        if not chunks:
            raise ValueError(f"no readable images among {len(paths)} file(s) for {desc}")
        return Features(np.concatenate(chunks), np.concatenate(rows), [list(s) for s in skipped.items])


def view_pixels(paths: Sequence[str], view: View, image_size: int, batch_size: int, *,
                skipped: SkippedImages, desc: str = "images", progress: bool = True):
    """Yield ``(pixels, rows)`` batches of ``view`` of the images: the one pipeline behind the
    trunk's cached activations and the teacher's cached probabilities. Deterministic: the
    augmentation is rebuilt from the view's seed on every call, so two passes over the same
    files give the same pixels (tests/training/test_distill.py)."""
    from tqdm.auto import tqdm

    transform = view_transform(view)
    with tqdm(total=len(paths), desc=f"{desc} [{view.kind}{view.seed or ''}]",
              unit="img", disable=not progress, leave=False) as bar:
        for pixels, idx in iter_batches(paths, image_size, batch_size, skipped=skipped):
            yield transform(pixels, int(idx[0]) // batch_size), idx
            bar.update(len(idx))


def view_transform(view: View | dict):
    """``transform(pixels, batch_number)`` for one view: the identity, a mirror, or the seeded
    augmentation of that batch (``BatchAugmentation``). Batches are the consecutive
    ``batch_size`` slices of the file list, so the local pass and Ray's actors
    (``distributed.ray_features``), which see the same slices, compute the same pixels."""
    view = view if isinstance(view, View) else View(**view)
    if view.kind == "flip":
        return lambda pixels, batch_number: pixels[:, :, ::-1, :]
    if view.kind == "augment":
        from .augmentation import BatchAugmentation

        return BatchAugmentation(zoom=view.zoom, shift=view.shift,
                                 horizontal_flip=view.horizontal_flip, seed=view.seed)
    return lambda pixels, batch_number: pixels


class TeacherTargets:
    """A teacher bundle's class probabilities on each cached view, cached on disk like the
    features: knowledge distillation needs them once per image and view, and the teacher (an
    ensemble) costs several times the student's trunk."""

    def __init__(self, teacher, *, image_size: int, cache_dir: str | Path | None = None,
                 batch_size: int = 32, progress: bool = True):
        self.teacher = teacher  # a Classifier
        self.image_size = image_size
        self.batch_size = batch_size
        self.progress = progress
        self.root = cache_root(cache_dir) / "teacher"
        self.digest = hashlib.sha256(json.dumps(teacher.config.files_sha256, sort_keys=True).encode()).hexdigest()

    def __call__(self, paths: Sequence[str], view: View, rows: np.ndarray, *, desc: str = "teacher") -> np.ndarray:
        """Probabilities for the images at ``rows`` (those the trunk could decode), in that order."""
        key = hashlib.sha256(json.dumps(
            {"teacher": self.digest, "size": self.image_size, "view": view.key(), "files": _files_key(paths)}
        ).encode()).hexdigest()[:32]
        path = self.root / f"{key}.npz"
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as cached:
                    return _select(cached["probabilities"], cached["rows"], rows)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("teacher cache entry %s unreadable (%s); recomputing", key, exc)
        probs, kept = self._compute(paths, view, desc)
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.savez(tmp, probabilities=probs, rows=kept)
        return _select(probs, kept, rows)

    def _compute(self, paths: Sequence[str], view: View, desc: str) -> tuple[np.ndarray, np.ndarray]:
        size = self.teacher.config.image_size
        chunks, kept = [], []
        for pixels, idx in view_pixels(paths, view, self.image_size, self.batch_size,
                                       skipped=SkippedImages(), desc=f"{desc} (teacher)", progress=self.progress):
            if size != self.image_size:  # the teacher sees the student's view at its own input size
                import keras

                pixels = np.asarray(keras.ops.image.resize(pixels, (size, size)))
            chunks.append(self.teacher.run_network(pixels.astype(np.float32)).astype(np.float32))
            kept.append(idx)
        return np.concatenate(chunks), np.concatenate(kept)


def _select(probabilities: np.ndarray, kept: np.ndarray, rows: np.ndarray) -> np.ndarray:
    position = {int(r): i for i, r in enumerate(kept)}
    missing = [int(r) for r in rows if int(r) not in position]
    if missing:
        raise ValueError(f"the teacher could not read {len(missing)} image(s) the student's trunk read")
    return probabilities[[position[int(r)] for r in rows]]
