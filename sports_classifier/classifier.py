"""``Classifier``: load a bundle (local folder or Hub repo), predict, evaluate, save, push.

Serving goes through ONNX Runtime when the bundle carries ``model.onnx`` and onnxruntime is
installed (no TensorFlow import at all), else through Keras.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from . import bundle
from .config import ModelConfig
from .errors import BundleError, DatasetLayoutError
from .images import ImageInput

Prediction = list[tuple[str, float]]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
RUNTIMES = ("auto", "onnx", "keras", "onnx-int8")


class Classifier:
    """A trained sports classifier.

    >>> clf = Classifier.from_pretrained("models/lite0-finetuned")
    >>> clf.predict("photo.jpg", top_k=3)
    [('basketball', 0.98), ('volleyball', 0.01), ('netball', 0.004)]
    """

    def __init__(self, config: ModelConfig, path: Path, *, runtime: str = "auto"):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.config = config
        self.path = Path(path)
        self._keras_model = None
        self.engine = self._make_engine(runtime)

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, runtime: str = "auto",
                        revision: str | None = None, cache_dir: str | Path | None = None,
                        token: str | bool | None = None, local_files_only: bool = False) -> "Classifier":
        """Load a bundle from a local folder, or from the Hub when given a ``user/repo`` id
        that is not a local folder."""
        path = Path(name_or_path)
        if not path.exists() and _REPO_ID.match(str(name_or_path)) and not str(name_or_path).startswith((".", "/")):
            return cls.from_hub(str(name_or_path), revision=revision, cache_dir=cache_dir, token=token,
                                local_files_only=local_files_only, runtime=runtime)
        return cls(bundle.read_config(path), path, runtime=runtime)

    @classmethod
    def from_hub(cls, repo_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None,
                 token: str | bool | None = None, local_files_only: bool = False,
                 runtime: str = "auto") -> "Classifier":
        """Download a bundle from the Hugging Face Hub (into its standard cache) and load it."""
        from .hub import download_bundle

        path = download_bundle(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                               local_files_only=local_files_only)
        return cls(bundle.read_config(path), path, runtime=runtime)

    def _make_engine(self, runtime: str):
        from .runtime import KerasEngine, onnxruntime_available

        if runtime == "onnx-int8":
            return self._onnx_engine(bundle.ONNX_INT8)
        if (runtime == "auto" and bundle.ONNX_INT8 in self.config.files_sha256
                and (self.path / bundle.ONNX_INT8).is_file() and onnxruntime_available()):
            # A bundle carries an int8 model only when someone exported it on purpose (and should
            # have checked its accuracy: `evaluate --runtime onnx-int8`); it is 2x faster again.
            return self._onnx_engine(bundle.ONNX_INT8)
        onnx_ok = bundle.has_onnx(self.path, self.config)
        if runtime == "onnx" or (runtime == "auto" and onnx_ok and onnxruntime_available()):
            if not onnx_ok:
                raise BundleError(f"{self.path} has no {bundle.ONNX}; run `sports-classifier export`")
            return self._onnx_engine(bundle.ONNX)
        return KerasEngine(self.keras_model)

    def _onnx_engine(self, name: str):
        from .runtime import OnnxEngine

        if not (self.path / name).is_file():
            hint = " --format onnx-int8" if name == bundle.ONNX_INT8 else ""
            raise BundleError(f"{self.path} has no {name}; run `sports-classifier export{hint}`")
        engine = OnnxEngine(bundle.verified_file(self.path, self.config, name))
        outputs = engine.session.get_outputs()[0].shape[-1]
        if isinstance(outputs, int) and outputs != self.config.num_classes:
            raise BundleError(f"{name} has {outputs} outputs but {bundle.CONFIG} lists "
                              f"{self.config.num_classes} labels")
        if name == bundle.ONNX_INT8:
            engine.name = "onnxruntime-int8"
        return engine

    @property
    def keras_model(self):
        """The Keras network (built on first use: importing TensorFlow takes seconds)."""
        if self._keras_model is None:
            self._keras_model = bundle.load_keras_model(self.path, self.config)
        return self._keras_model

    # -- inference ---------------------------------------------------------------------------

    @property
    def labels(self) -> list[str]:
        return list(self.config.labels)

    @property
    def runtime(self) -> str:
        return self.engine.name

    def predict_proba(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """Class probabilities, shape ``(n_images, n_classes)``."""
        from .runtime import predict_sources  # decodes the next batch while this one runs

        return predict_sources(self.engine, _as_list(images), self.config.image_size)

    def predict(self, images: ImageInput | Sequence[ImageInput], top_k: int = 5):
        """Top-k ``(label, probability)`` pairs, most likely first.

        One image (path, bytes, PIL image or HxWx3 array) -> one list of pairs; a list of
        images -> a list of such lists. Unreadable images raise ``ImageDecodeError``.
        """
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        probs = self.predict_proba(images)
        results = [self._top(p, top_k) for p in probs]
        return results if _is_many(images) else results[0]

    def _top(self, p: np.ndarray, k: int) -> Prediction:
        order = np.argsort(-p, kind="stable")[: min(k, len(p))]
        return [(self.config.labels[i], float(p[i])) for i in order]

    def evaluate(self, data_dir: str | Path, split: str = "valid", *, progress: bool = False) -> dict:
        """Accuracy, top-5, macro F1, loss, per-class scores and confusion matrix on a split."""
        from .data import discover
        from .metrics import classification_metrics
        from .runtime import predict_files

        dataset = discover(data_dir)
        unknown = sorted(set(dataset.labels) - set(self.labels))
        if unknown:
            raise DatasetLayoutError(
                f"{data_dir} has {len(unknown)} class(es) this model does not know: {unknown[:5]}"
            )
        frame = dataset.frame(split)
        if frame.empty:
            raise DatasetLayoutError(f"split {split!r} of {data_dir} holds no images")
        index = {label: i for i, label in enumerate(self.labels)}
        y = frame["label"].map(index).to_numpy()
        probs, rows, skipped = predict_files(self.engine, frame["filepath"].tolist(),
                                             self.config.image_size, progress=progress, desc=f"evaluate {split}")
        metrics = classification_metrics(y[rows], probs, self.labels)
        metrics["skipped"] = len(skipped)
        metrics["engine"] = self.engine.name
        return metrics

    # -- saving ------------------------------------------------------------------------------

    def save_pretrained(self, path: str | Path) -> Path:
        """Write this model's bundle to ``path`` (atomically; config and card regenerated)."""
        for name in bundle.CHECKSUMMED:
            if (self.path / name).is_file():
                bundle.verified_file(self.path, self.config, name)
        writers = {
            name: bundle.copy_from(self.path / name)
            for name in bundle.FILES
            if name not in (bundle.CONFIG, bundle.CARD) and (self.path / name).is_file()
        }
        if Path(path).resolve() == self.path.resolve():
            return self.path  # already there, verified
        return bundle.write_bundle(path, self.config, writers)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | bool | None = None,
                    revision: str | None = None, commit_message: str | None = None) -> str:
        """Upload this bundle to the Hub in one commit (creating the repo if needed)."""
        from .hub import upload_bundle

        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "bundle")
            return upload_bundle(folder, repo_id, private=private, token=token, revision=revision,
                                 commit_message=commit_message)

    def __repr__(self) -> str:
        return (f"Classifier({self.config.architecture}, classes={self.config.num_classes}, "
                f"runtime={self.runtime!r}, path={str(self.path)!r})")


def _is_many(images) -> bool:
    return isinstance(images, (list, tuple))


def _as_list(images) -> list:
    if _is_many(images):
        if len(images) == 0:
            raise ValueError("no images given")
        return list(images)
    return [images]
