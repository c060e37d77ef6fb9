"""``Classifier``: the one way to serve a model. Load a bundle (local folder or Hub repo),
classify images, explain a prediction, evaluate, save, push.

Serving goes through ONNX Runtime when the bundle carries an ONNX model and onnxruntime is
installed (no TensorFlow import at all; the int8 model first when present), else through Keras.
An int8 model first checks itself on this CPU against float references stored in the bundle
(``selfcheck``); where it fails, the float ONNX model serves instead. The app, the CLI, batch
prediction and the benchmark all call this class, so all of them get that check; none of them
touches the engine underneath.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from . import bundle
from .config import ModelConfig
from .errors import BundleError, DatasetLayoutError, ImageDecodeError, UserInputError
from .images import ImageInput
from .runtime import RUNTIMES

TopK = list[tuple[str, float]]
# int8 serving: images whose two best classes are closer than this re-run in float (CloseCallEngine).
CLOSE_CALL_MARGIN = 0.25


@dataclass(frozen=True)
class Prediction:
    """What a model says about one image.

    ``top``: the most likely ``(label, probability)`` pairs, best first; ``ood``: True when the
    top probability is under the bundle's out-of-distribution threshold (the photo probably
    shows none of the sports; False when the bundle has no threshold); ``error``: why the image
    could not be read (then ``top`` is empty).
    """

    source: str
    top: TopK
    ood: bool = False
    error: str | None = None

    @property
    def label(self) -> str | None:
        return self.top[0][0] if self.top else None

    @property
    def probability(self) -> float | None:
        return self.top[0][1] if self.top else None

    @property
    def ok(self) -> bool:
        return self.error is None


class Classifier:
    """A trained sports classifier.

    >>> clf = Classifier.from_pretrained("models/lite0")
    >>> clf.classify("photo.jpg").label
    'basketball'
    >>> clf.predict("photo.jpg", top_k=3)
    [('basketball', 0.98), ('volleyball', 0.01), ('netball', 0.004)]
    """

    def __init__(self, config: ModelConfig, path: Path, *, runtime: str = "auto", threads: int | None = None,
                 fetch=None):
        if runtime not in RUNTIMES:
            raise UserInputError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.config = config
        self.path = Path(path)
        self._keras_model = None
        self._fetch = fetch  # Hub models: fetches bundle files serving did not download
        self._threads = threads
        self.selfcheck = None  # selfcheck.SelfCheck of the int8 model, when it was run
        self.serving_note = ""  # which engine serves and why, in words (the app's About, the CLI)
        self._engine = self._make_engine(runtime)

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, source: str | Path, *, runtime: str = "auto", revision: str | None = None,
                        cache_dir: str | Path | None = None, token: str | bool | None = None,
                        local_files_only: bool = False, threads: int | None = None) -> "Classifier":
        """Load a model from a bundle folder, ``hf:user/repo[@rev]``, or a ``user/repo`` Hub id
        that is not a local folder.

        Args:
            source: where the bundle is (see ``hub.parse_model_source``).
            runtime: ``auto`` (int8 ONNX, then float ONNX, then Keras), ``onnx-int8``, ``onnx`` or ``keras``.
            revision, cache_dir, token, local_files_only: for Hub sources, as in huggingface_hub.
            threads: ONNX Runtime threads (default: the physical cores).

        Raises:
            BundleError: the folder is not a usable bundle (missing, corrupt or tampered files).
            HubError: the Hub could not be reached or refused the download.
        """
        from .hub import ModelSource, parse_model_source

        parsed = parse_model_source(str(source)) if not isinstance(source, Path) else ModelSource(str(source))
        return cls.from_source(parsed, revision=revision, cache_dir=cache_dir, token=token,
                               local_files_only=local_files_only, runtime=runtime, threads=threads)

    @classmethod
    def from_source(cls, source, *, runtime: str = "auto", revision: str | None = None,
                    cache_dir: str | Path | None = None, token: str | bool | None = None,
                    local_files_only: bool = False, threads: int | None = None) -> "Classifier":
        """Load a parsed ``hub.ModelSource`` (what the app's registry holds)."""
        from .errors import HubError

        if not source.hub:
            return cls(bundle.read_config(source.location), Path(source.location), runtime=runtime, threads=threads)
        try:
            return cls.from_hub(source.location, revision=revision or source.revision, cache_dir=cache_dir,
                                token=token, local_files_only=local_files_only, runtime=runtime, threads=threads)
        except HubError as exc:
            if not source.implicit:
                raise
            # `runs/lite0` was read as a Hub id because no such folder exists: a missing folder
            # is the likelier mistake, so it comes first (not "could not reach the Hub")
            raise type(exc)(f"model bundle not found: there is no folder {source.name} in {Path.cwd()}; "
                              f"read as the Hub repo {source.location!r}, it could not be loaded either "
                              f"({exc}). For a Hub model write hf:{source.name}") from None

    @classmethod
    def from_hub(cls, repo_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None,
                 token: str | bool | None = None, local_files_only: bool = False,
                 runtime: str = "auto", threads: int | None = None) -> "Classifier":
        """Download a bundle from the Hugging Face Hub (into its standard cache) and load it.

        Raises:
            HubError: the Hub could not be reached, the repo or revision does not exist, or access was refused.
            BundleError: the repo is not a sports_classifier bundle.
        """
        from .hub import download_bundle, download_files

        # Only what serving with this runtime reads (no Keras weights for an ONNX model).
        path = download_bundle(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                               local_files_only=local_files_only, runtime=runtime)

        def fetch(names):
            download_files(repo_id, path.name, names, cache_dir=cache_dir, token=token,
                           local_files_only=local_files_only)

        return cls(bundle.read_config(path), path, runtime=runtime, threads=threads, fetch=fetch)

    def _make_engine(self, runtime: str):
        from .runtime import KerasEngine

        self.model_file = bundle.serving_file(self.config, runtime, folder=self.path)
        if self.model_file == bundle.ONNX_INT8:
            return self._checked_int8_engine(explicit=runtime == "onnx-int8")
        if self.model_file == bundle.WEIGHTS:
            self.serving_note = "Keras (float)"
            return KerasEngine(self.keras_model)
        self.serving_note = "float ONNX model"
        return self._onnx_engine(self.model_file)

    def _checked_int8_engine(self, *, explicit: bool):
        """The int8 engine once it has passed its self-check on this CPU (``selfcheck``); the
        float ONNX model when it fails, or a ``BundleError`` when the bundle has none. An int8
        model asked for by name is served anyway, with a warning."""
        import warnings

        from . import selfcheck
        from .hardware import describe, measured_on

        engine = self._onnx_engine(bundle.ONNX_INT8)
        reference = bundle.read_selfcheck(self.path, self.config)
        if reference is None:
            self.serving_note = "int8 (the bundle records no self-check)"
            return engine
        check = self.selfcheck = selfcheck.run(engine, reference)
        if check.passed:
            self.serving_note = "int8, self-check passed on this CPU"
            return engine if explicit else self._with_close_calls(engine)
        where = describe(measured_on(engine.threads))
        problem = (f"{self.path.name}: the int8 model does not match its float network on this CPU "
                   f"({where}): {check.describe()}")
        if explicit:
            warnings.warn(problem + "; serving it anyway because runtime='onnx-int8' was asked for", stacklevel=3)
            self.serving_note = "int8 (asked for), self-check FAILED on this CPU"
            return engine
        if not bundle.has_float_companion(self.config):
            raise BundleError(problem + f". The bundle has no float {bundle.ONNX} to serve instead: "
                              "`sports-classifier export --format onnx-fp16` adds one")
        warnings.warn(problem + f"; serving the float {bundle.ONNX} instead", stacklevel=3)
        self.serving_note = "float ONNX model: the int8 model failed its self-check on this CPU"
        self.model_file = bundle.ONNX
        return self._float_companion()

    def _with_close_calls(self, int8_engine):
        """int8 with its close calls settled by the float ONNX model, when the bundle has one
        (``runtime.CloseCallEngine``)."""
        from .runtime import CloseCallEngine

        if not bundle.has_float_companion(self.config):
            return int8_engine

        self.serving_note += f"; close calls (top-2 margin < {CLOSE_CALL_MARGIN:g}) re-run in float"
        return CloseCallEngine(int8_engine, self._float_companion, margin=CLOSE_CALL_MARGIN)

    def _float_companion(self):
        """The float ONNX engine beside an int8 model (fetched first for a Hub model that lacks it)."""
        if self._fetch is not None and not (self.path / bundle.ONNX).is_file():
            self._fetch([bundle.ONNX])
        return self._onnx_engine(bundle.ONNX)

    def _onnx_engine(self, name: str):
        from .runtime import OnnxEngine

        if bundle.member(self.path, name) is None:
            hint = " --format onnx-int8" if name == bundle.ONNX_INT8 else ""
            raise BundleError(f"{self.path} has no {name}; run `sports-classifier export{hint}`")
        engine = OnnxEngine(bundle.verified_file(self.path, self.config, name), threads=self._threads)
        outputs = engine.output_shape[-1]
        if isinstance(outputs, int) and outputs != self.config.num_classes:
            raise BundleError(f"{name} has {outputs} outputs but {bundle.CONFIG} lists "
                              f"{self.config.num_classes} labels")
        size = engine.input_shape[1:3]
        if all(isinstance(s, int) for s in size) and tuple(size) != (self.config.image_size,) * 2:
            raise BundleError(f"{name} takes {size[0]}x{size[1]} images but {bundle.CONFIG} says "
                              f"{self.config.image_size}; the bundle is inconsistent")
        if name == bundle.ONNX_INT8:
            engine.name = "onnxruntime-int8"
        return engine

    @property
    def keras_model(self):
        """The Keras network (built on first use: importing TensorFlow takes seconds)."""
        if self._keras_model is None:
            if self._fetch is not None and bundle.member_or_none(self.path, bundle.WEIGHTS) is None:
                self._fetch([bundle.WEIGHTS])  # same commit, same snapshot folder
            self._keras_model = bundle.load_keras_model(self.path, self.config)
        return self._keras_model

    # -- what it is --------------------------------------------------------------------------

    @property
    def labels(self) -> list[str]:
        return list(self.config.labels)

    @property
    def serving_summary(self) -> str:
        """Which engine serves, why, and the self-check's figures (the CLI, the app's About)."""
        check = f"; {self.selfcheck.describe()}" if self.selfcheck is not None else ""
        return f"{self.runtime}: {self.serving_note}{check}"

    @property
    def runtime(self) -> str:
        """The engine serving this model: ``onnxruntime-int8``, ``onnxruntime`` or ``keras``."""
        return self._engine.name

    @property
    def time_limit(self) -> float | None:
        """Seconds one run of the network may take before it is stopped with
        ``ModelTimeoutError`` (ONNX Runtime engines; None: no limit, the default)."""
        return getattr(self._engine, "time_limit", None)

    @time_limit.setter
    def time_limit(self, seconds: float | None) -> None:
        if hasattr(self._engine, "time_limit"):
            self._engine.time_limit = seconds

    @property
    def threads(self) -> int | None:
        """ONNX Runtime threads (None for Keras)."""
        return getattr(self._engine, "threads", None)

    @property
    def ood_threshold(self) -> float | None:
        """Top probability under which a photo is called out of distribution (None: not chosen)."""
        choice = self.config.out_of_distribution
        return None if not choice else float(choice["threshold"])

    # -- inference ---------------------------------------------------------------------------

    def run_network(self, pixels: np.ndarray) -> np.ndarray:
        """The network on already preprocessed pixels (``images.preprocess_batch``): probabilities.
        For benchmarks that time the network apart from decoding."""
        return self._engine(pixels)

    def predict_proba(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """Class probabilities, shape ``(n_images, n_classes)``. Unreadable images raise
        ``ImageDecodeError`` naming the image."""
        from .runtime import predict_sources  # decodes the next batch while this one runs

        return predict_sources(self._engine, _as_list(images), self.config.image_size)

    def classify(self, images: ImageInput | Sequence[ImageInput], *, top_k: int = 5) -> Prediction | list[Prediction]:
        """One ``Prediction`` per image (a list for a list of images).

        Args:
            images: a path, bytes, PIL image or HxWx3 array, or a list of them.
            top_k: how many labels each prediction keeps.

        Raises:
            ImageDecodeError: an image cannot be read (use ``predict_files`` to skip such files).
        """
        _check_top_k(top_k)
        many = _is_many(images)
        sources = _as_list(images)
        probs = self.predict_proba(sources)
        results = [self._prediction(_describe(s), p, top_k) for s, p in zip(sources, probs)]
        return results if many else results[0]

    def predict(self, images: ImageInput | Sequence[ImageInput], top_k: int = 5):
        """Top-k ``(label, probability)`` pairs, most likely first.

        One image (path, bytes, PIL image or HxWx3 array) -> one list of pairs; a list of
        images -> a list of such lists. Unreadable images raise ``ImageDecodeError``.
        """
        results = self.classify(images, top_k=top_k)
        return [r.top for r in results] if isinstance(results, list) else results.top

    def score_files(self, paths: Sequence[str | Path], *, batch_size: int = 32, progress: bool = False,
                    desc: str = "predict", warn: bool = True) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
        """Probabilities for image files that can be read: (probabilities, their row in ``paths``,
        skipped (path, reason) pairs; one warning sums them up unless ``warn`` is False). The
        next batch is decoded while one runs."""
        from .runtime import predict_files

        return predict_files(self._engine, [str(p) for p in paths], self.config.image_size,
                             batch_size=batch_size, progress=progress, desc=desc, warn=warn)

    def predict_files(self, paths: Sequence[str | Path], *, top_k: int = 5, batch_size: int = 32,
                      skip_errors: bool = True, progress: bool = False, desc: str = "predict") -> list[Prediction]:
        """Predictions for image files, in order, decoding the next batch while one runs.

        With ``skip_errors`` an unreadable file gives a ``Prediction`` whose ``error`` says why
        and the others still run; without it the first such file raises ``ImageDecodeError``.
        """
        _check_top_k(top_k)
        paths = [str(p) for p in paths]
        # Each unreadable file is reported in its own Prediction: no summary warning on top.
        probs, rows, skipped = self.score_files(paths, batch_size=batch_size, progress=progress, desc=desc,
                                                warn=False)
        if skipped and not skip_errors:
            path, reason = skipped[0]
            raise ImageDecodeError(reason)
        out: list[Prediction | None] = [None] * len(paths)
        for row, p in zip(rows, probs):
            out[row] = self._prediction(paths[row], p, top_k)
        errors = dict(skipped)
        for i, path in enumerate(paths):
            if out[i] is None:
                out[i] = Prediction(path, [], error=errors.get(path, "not readable as an image"))
        return out  # type: ignore[return-value]

    def _prediction(self, source: str, p: np.ndarray, top_k: int) -> Prediction:
        order = np.argsort(-p, kind="stable")[: min(top_k, len(p))]
        top = [(self.config.labels[i], float(p[i])) for i in order]
        threshold = self.ood_threshold
        return Prediction(source, top, ood=threshold is not None and top[0][1] < threshold)

    def explain(self, image: ImageInput, *, label: str | None = None):
        """Where in the photo the model saw its answer: (overlay as a PIL image, label, probability).

        The ``heat_map`` of ``label`` (default: the top class) blended over the photo.

        Raises:
            ImageDecodeError: the image cannot be read.
            UserInputError: ``label`` is not one of this model's classes.
        """
        from .explain import overlay
        from .images import load_rgb

        rgb = load_rgb(image)
        heat, label, prob = self.heat_map(rgb, label=label)
        return overlay(rgb, heat), label, prob

    def heat_map(self, image: ImageInput, *, label: str | None = None) -> tuple[np.ndarray, str, float]:
        """The class-activation map of ``label`` (default: the top class): (h x w array in
        [0, 1] at the feature map's resolution, label, its probability).

        Computed in NumPy from the ONNX model's class-map outputs (no TensorFlow, one forward
        pass), or with Keras Grad-CAM for a bundle served through Keras or exported before
        class maps existed. For this head both give the same map.
        """
        from .explain import heat_map
        from .images import load_rgb, to_model_input

        if label is not None and label not in self.config.labels:
            raise UserInputError(f"{label!r} is not one of this model's {self.config.num_classes} classes")
        rgb = load_rgb(image)
        index = None if label is None else self.config.labels.index(label)
        if getattr(self._engine, "extra_outputs", None):
            outputs = list(self._engine.run_all(to_model_input(rgb, self.config.image_size)[None]).values())
            probs = outputs[0][0]
            index = int(np.argmax(probs)) if index is None else index
            heat, prob = heat_map([maps[0] for maps in outputs[1:]], index), float(probs[index])
        else:
            from .models.gradcam import gradcam  # imports TensorFlow

            heat, index, prob = gradcam(self, rgb, class_index=index)
        return heat, self.config.labels[index], prob

    def evaluate(self, data_dir: str | Path, split: str = "valid", *, progress: bool = False) -> dict:
        """Accuracy, top-5, macro F1, loss, per-class scores and confusion matrix on a split,
        with the engine that served and the machine it ran on (``hardware.measured_on``).

        Raises:
            DatasetLayoutError: the folder is not in the Kaggle layout, or names classes this model lacks.
        """
        from .datasets import discover
        from .metrics import classification_metrics

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
        probs, rows, skipped = self.score_files(frame["filepath"].tolist(), progress=progress,
                                                desc=f"evaluate {split}")
        if not len(rows):
            raise DatasetLayoutError(f"none of the {len(frame)} images of split {split!r} in {data_dir} "
                                     f"could be read (first: {skipped[0][1]})")
        metrics = classification_metrics(y[rows], probs, self.labels)
        from .hardware import measured_on

        metrics["skipped"] = len(skipped)
        metrics["engine"] = self.runtime
        metrics["measured_on"] = measured_on(self.threads)  # int8 figures hold for this kind of CPU
        if self.selfcheck is not None:
            metrics["selfcheck"] = self.selfcheck.to_dict()
        return metrics

    # -- saving ------------------------------------------------------------------------------

    def save_pretrained(self, path: str | Path) -> Path:
        """Write this model's bundle to ``path`` (atomically; config and card regenerated)."""
        if self._fetch is not None:  # a Hub model downloaded for serving: get the whole bundle first
            self._fetch(list(bundle.FILES))
        present = {name: bundle.member(self.path, name) for name in bundle.FILES}  # refuses outside links
        for name in bundle.CHECKSUMMED:
            if present[name] is not None:
                bundle.verified_file(self.path, self.config, name)
        writers = {
            name: bundle.copy_from(file)
            for name, file in present.items()
            if name not in (bundle.CONFIG, bundle.CARD) and file is not None
        }
        if Path(path).resolve() == self.path.resolve():
            return self.path  # already there, verified
        return bundle.write_bundle(path, self.config, writers)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | bool | None = None,
                    revision: str | None = None, commit_message: str | None = None,
                    existing_card: str = "refuse", progress: bool = False) -> str:
        """Upload this bundle to the Hub in one commit (creating the repo if needed).

        ``existing_card``: what to do when the repo's README.md was edited on the Hub
        (``refuse``, ``overwrite``, ``keep``; see ``hub.upload_bundle``). ``progress``: show
        the upload's progress on stderr.

        Raises:
            HubError: no token, no permission, a hand-edited card, or the Hub could not be reached.
            UserInputError: ``repo_id`` is not a valid ``user/name``.
        """
        from .hub import upload_bundle

        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "bundle")
            return upload_bundle(folder, repo_id, private=private, token=token, revision=revision,
                                 commit_message=commit_message, existing_card=existing_card, progress=progress)

    def __repr__(self) -> str:
        return (f"Classifier({self.config.architecture}, classes={self.config.num_classes}, "
                f"runtime={self.runtime!r}, path={str(self.path)!r})")


def _check_top_k(top_k) -> None:
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise UserInputError(f"top_k must be a positive integer, got {top_k!r}")


def _describe(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else f"<{type(source).__name__}>"


def _is_many(images) -> bool:
    return isinstance(images, (list, tuple))


def _as_list(images) -> list:
    if _is_many(images):
        if len(images) == 0:
            raise UserInputError("no images given")
        return list(images)
    return [images]
