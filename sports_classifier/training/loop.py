"""Training: the two standard stages, with a cached fast path for CPUs.

Stage 1 trains the head on a frozen backbone; stage 2 (optional) unfreezes the last stages of
the backbone, BatchNorm kept frozen, at a lower learning rate. EarlyStopping and
ReduceLROnPlateau as in the notebook.

``mode="cached"`` (the default) computes the frozen part once per image and view and caches
it on disk (``features.FeatureExtractor``), so the head (and the last stages) train on the
cache in seconds to minutes and a re-run with the same data reuses it.
``mode="end_to_end"`` runs the whole network on every step through ``tf.data`` with the
augmentation layers: what a GPU user runs.

The final metrics are measured by running the finished network (ONNX Runtime when present,
else Keras) on the decoded validation images: the same numbers ``evaluate`` gives.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import bundle
from ..version import __version__
from ..config import ModelConfig, TrainConfig
from ..errors import BundleError
from ..data_summary import class_counts
from ..datasets import discover
from ..images import SkippedImages
from ..metrics import summary
from ..models.backbones import get_backbone
from .augmentation import augmentation, make_tf_dataset
from .checkpoints import Checkpoints
from .features import FeatureExtractor, View
from .finalize import write_trained_bundle

log = logging.getLogger(__name__)


@dataclass
class Distributed:
    """How this process takes part in data-parallel training (``--strategy mirrored`` or
    ``--executor ray``): the ``tf.distribute`` strategy whose scope builds the model, this
    worker's rank among ``workers`` processes (each decodes its slice of every global batch),
    and a ``barrier`` that all workers pass together. Only rank 0 (the chief) writes
    checkpoints and the bundle."""

    strategy: object
    rank: int = 0
    workers: int = 1
    barrier: object = None

    @property
    def chief(self) -> bool:
        return self.rank == 0


@dataclass
class TrainResult:
    bundle: Path
    metrics: dict  # per split
    history: "object"  # pandas DataFrame
    seconds: float
    cache_hits: int = 0
    cache_misses: int = 0


def _limit_per_class(frame, n: int | None):
    return frame if n is None else frame.groupby("class_index", sort=False).head(n).reset_index(drop=True)


def _one_hot(y: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[y]


def _view_batches(views: list[np.ndarray], targets: list[np.ndarray], batch_size: int, seed: int):
    """Each epoch shows every training image once, in one of its cached views chosen at
    random: augmentation without recomputing the frozen part. ``targets[v]`` are view ``v``'s
    targets (the same labels for every view, unless a teacher's probabilities ride along)."""
    y = targets[0]
    import keras

    class ViewBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.set_epoch(0)

        def __len__(self):
            return math.ceil(len(y) / batch_size)

        def set_epoch(self, epoch: int):
            # Derived from the epoch number, not from a running generator, so that a run resumed
            # at epoch k sees exactly the batches the uninterrupted run saw.
            rng = np.random.default_rng([seed, epoch])
            self.order = rng.permutation(len(y))
            self.choice = rng.integers(0, len(views), len(y))

        def __getitem__(self, i):
            idx = self.order[i * batch_size : (i + 1) * batch_size]
            picks = list(zip(self.choice[idx], idx))
            x = np.stack([views[v][j] for v, j in picks]).astype(np.float32)
            return x, np.stack([targets[v][j] for v, j in picks])

    batches = ViewBatches()
    follow = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs=None: batches.set_epoch(epoch))
    return batches, follow


def _run_stage(ckpt: Checkpoints, model, config: TrainConfig, stage: str, fit):
    """Run one training stage through ``fit(callbacks)``, or restore it if a resumed run
    already finished it. Returns the stage's per-epoch history (a DataFrame)."""
    if ckpt.done(stage):
        log.info("stage %r already finished in the checkpoint; restored", stage)
        return stage, ckpt.restore(model, stage)
    fit(ckpt.callbacks(config, stage))
    ckpt.finish(model, stage)
    return stage, ckpt.history(stage)


def _history_frame(histories: list[tuple[str, object]]):
    import pandas as pd

    frames = []
    for stage, df in histories:
        if df is None or df.empty:
            continue
        df = df.copy()
        df.insert(0, "stage", stage)
        df.insert(1, "epoch", np.arange(1, len(df) + 1))
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["stage", "epoch"])


def train(config: TrainConfig, data_dir: str | Path, out_dir: str | Path, *,
          cache_dir: str | Path | None = None, progress: bool = True, resume: bool = False,
          distributed: Distributed | None = None, feature_executor=None) -> TrainResult | None:
    """Train a classifier on ``data_dir`` and write its bundle to ``out_dir``.

    With ``distributed`` (end-to-end mode only) the model trains under its strategy, the
    batch size being the global one; workers other than the chief return None.
    ``feature_executor`` (cached mode): computes the feature cache elsewhere, e.g.
    ``distributed.ray_features.RayFeatureExecutor`` on a Ray cluster (``FeatureExtractor``).

    >>> train(TrainConfig(backbone="efficientnet_lite0"), "../shared/data/sports100", "runs/lite0")
    """
    import keras

    from ..models.network import build_classifier, split_layer
    from .subnetworks import trunk

    bundle.check_destination(out_dir)  # before hours of training, not after
    start = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    dataset = discover(data_dir, classes=config.classes, train_split=config.train_split)
    train_df = _limit_per_class(dataset.frame(config.train_split), config.max_per_class)
    valid_df = _limit_per_class(dataset.frame(config.valid_split), config.max_per_class)
    labels = list(dataset.labels)
    n_classes = len(labels)
    size = config.image_size or get_backbone(config.backbone).image_size
    log.info("%d training / %d validation images, %d classes, %s at %d px",
             len(train_df), len(valid_df), n_classes, config.backbone, size)

    def build():
        return build_classifier(config.backbone, n_classes, image_size=size, dropout=config.dropout,
                                weights=config.weights, tta_flip=config.tta_flip)

    if distributed is not None and config.mode != "end_to_end":
        from ..errors import ConfigError

        raise ConfigError("distributed training (--workers, --strategy) runs --mode end_to_end only")
    def scope():
        return distributed.strategy.scope() if distributed is not None else contextlib.nullcontext()

    with scope():
        model = build()
    # The layer after which the backbone is fine-tuned in stage 2 (None: head only).
    split = (split_layer(model, config.backbone, config.fine_tune_stages, top=config.fine_tune_top)
             if config.fine_tune_epochs > 0 else None)
    verbose = 2 if progress else 0
    chief = distributed is None or distributed.chief
    ckpt = _checkpoints(out_dir, config, resume, distributed)
    histories: list[tuple[str, object]] = []
    hits = misses = 0

    if config.mode == "cached":
        extractor = FeatureExtractor(trunk(model, split), image_size=size, cache_dir=cache_dir,
                                     batch_size=config.batch_size, progress=progress,
                                     executor=feature_executor)
        histories = _train_cached(model, config, extractor, split, train_df, valid_df, labels, verbose, ckpt)
        hits, misses = extractor.hits, extractor.misses
    else:
        with scope():
            histories = _train_end_to_end(model, config, split, train_df, valid_df, size, n_classes, verbose,
                                          ckpt, distributed)
    if distributed is not None:
        weights = model.get_weights()  # every worker: reading them can be a collective operation
        if not chief:
            ckpt.remove()  # its scratch copy
            return None
        # Export and measure a plain copy: the strategy's variables stay inside its scope.
        model = build()
        model.set_weights(weights)

    history = _history_frame(histories)
    model_config = _model_config(config, size, model, data_dir, train_df, valid_df, labels)
    out, metrics = write_trained_bundle(model, model_config, history, valid_df, out_dir,
                                        progress=progress, start=start)
    ckpt.remove()
    log.info("valid: %s", summary(metrics.get("valid", {})))
    return TrainResult(out, metrics, history, time.perf_counter() - start, hits, misses)


def _checkpoints(out_dir, config: TrainConfig, resume: bool, distributed: Distributed | None) -> Checkpoints:
    """This process's checkpoints: the chief sets up (or clears) the folder and writes; the other
    workers wait for it, then only read."""
    chief = distributed is None or distributed.chief
    if chief:
        ckpt = Checkpoints(Path(out_dir).resolve(), config, resume=resume)
    if distributed is not None and distributed.barrier is not None:
        distributed.barrier()  # the chief has set up (or cleared) the checkpoint folder
    if not chief:
        ckpt = Checkpoints(Path(out_dir).resolve(), config, resume=resume, writer=False)
    return ckpt


def _model_config(config: TrainConfig, size: int, model, data_dir, train_df, valid_df, labels) -> ModelConfig:
    """The bundle's config.json: the network, the labels, and the record of how it was trained."""
    import keras

    training = config.to_dict() | {
        "image_size": size,
        "parameters": int(model.count_params()),
        "data": {
            "dataset": Path(data_dir).name,
            "train_images": int(len(train_df)),
            "valid_images": int(len(valid_df)),
            "description": _describe(train_df, len(labels)),
            # the app draws the class distribution from this, without the dataset folder
            "class_counts": {"train": class_counts(train_df, labels), "valid": class_counts(valid_df, labels)},
        },
    }
    return ModelConfig(
        backbone=config.backbone, image_size=size, labels=tuple(labels), dropout=config.dropout,
        tta_flip=config.tta_flip, package_version=__version__, keras_version=keras.__version__,
        training=training, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def _describe(frame, n_classes: int) -> str:
    counts = frame["class_index"].value_counts()
    return f"{n_classes} classes, {counts.min()}-{counts.max()} images per class"


def _train_cached(model, config, extractor, split, train_df, valid_df, labels, verbose, ckpt):
    from .subnetworks import compile_model, head_model, set_trainable, upper_features, upper_model

    n_classes = len(labels)
    train_paths, valid_paths = train_df["filepath"].tolist(), valid_df["filepath"].tolist()
    views = [View("clean")]
    if config.augment:
        views += [
            View("augment", seed=config.seed + i, zoom=config.zoom, shift=config.shift,
                 horizontal_flip=config.horizontal_flip)
            for i in range(1, config.augment_views + 1)
        ]
    train_feats = [extractor(train_paths, v, desc="train") for v in views]
    valid_feats = extractor(valid_paths, View("clean"), desc="valid")
    rows = train_feats[0].rows  # the same files decode (or not) in every view
    y_train = _one_hot(train_df["class_index"].to_numpy()[rows], n_classes)
    y_valid = _one_hot(valid_df["class_index"].to_numpy()[valid_feats.rows], n_classes)
    y_views = [y_train] * len(views)
    distill = None
    if config.distill_from:
        soft = _teacher_targets(config, labels, extractor, train_paths, views, rows, valid_paths, valid_feats.rows)
        y_views = [np.concatenate([y_train, s], axis=1) for s in soft[:-1]]
        y_valid = np.concatenate([y_valid, soft[-1]], axis=1)
        distill = (n_classes, config.distill_temperature, config.distill_weight)

    if split is None:
        pooled = [f.values for f in train_feats]
        pooled_valid = valid_feats.values
    else:
        # The head stage trains on pooled features: run the (still frozen) last stages once.
        pool_net = upper_features(model, split)
        pooled = [pool_net.predict(f.values, batch_size=256, verbose=0) for f in train_feats]
        pooled_valid = pool_net.predict(valid_feats.values, batch_size=256, verbose=0)

    histories = []
    head = head_model(model)
    compile_model(head, optimizer=config.optimizer, learning_rate=config.learning_rate,
                  weight_decay=config.weight_decay, label_smoothing=config.label_smoothing, distill=distill)
    if config.head_epochs:
        batches, follow = _view_batches(pooled, y_views, config.batch_size, config.seed)
        histories.append(_run_stage(ckpt, model, config, "head", lambda callbacks: head.fit(
            batches, validation_data=(pooled_valid, y_valid), epochs=config.head_epochs,
            callbacks=[follow, *callbacks], verbose=verbose,
        )))
    if split is not None:
        set_trainable(model, split)
        upper = upper_model(model, split)
        compile_model(upper, optimizer=config.optimizer, learning_rate=config.fine_tune_learning_rate,
                      weight_decay=config.weight_decay, label_smoothing=config.label_smoothing, distill=distill)
        batches, follow = _view_batches([f.values for f in train_feats], y_views, config.batch_size,
                                        config.seed + 1)
        histories.append(_run_stage(ckpt, model, config, "fine_tune", lambda callbacks: upper.fit(
            batches, validation_data=(valid_feats.values, y_valid), epochs=config.fine_tune_epochs,
            callbacks=[follow, *callbacks], verbose=verbose,
        )))
    return histories


def _teacher_targets(config, labels, extractor, train_paths, views, rows, valid_paths, valid_rows) -> list[np.ndarray]:
    """The teacher's probabilities on each training view (same images, same order as the
    cached activations), then on the clean validation images."""
    from ..classifier import Classifier
    from .features import TeacherTargets

    # The teacher as it serves (int8 ONNX when the bundle has it): the targets then depend only
    # on the bundle, whether or not its float ONNX was kept.
    teacher = Classifier.from_pretrained(config.distill_from)
    if teacher.labels != labels:
        raise BundleError(f"teacher {config.distill_from} was not trained on the same classes in the "
                          f"same order ({len(teacher.labels)} labels, the dataset has {len(labels)})")
    log.info("distilling from %s (%s)", config.distill_from, teacher.runtime)
    targets = TeacherTargets(teacher, image_size=extractor.image_size, cache_dir=extractor.root.parent,
                             batch_size=config.batch_size, progress=extractor.progress)
    soft = [targets(train_paths, view, rows, desc="train") for view in views]
    return soft + [targets(valid_paths, View("clean"), valid_rows, desc="valid")]


def _build_for_multi_worker(model, size: int, n_classes: int) -> None:
    """Work around two Keras 3 (3.15) faults under ``MultiWorkerMirroredStrategy``.

    1. ``fit`` builds the compiled model's state from a first batch that it averages over the
       workers with ``strategy.reduce``, which fails ("Attempt to convert a value
       (PerReplica...)"): build it here from shapes, which is all the build needs, and skip
       that step.
    2. Each step's logs (scalars) are averaged with ``strategy.reduce("MEAN", v, axis=0)``,
       which fails on scalars: average them with ``axis=None`` instead (``_mean_over_workers``).
    """
    x = np.zeros((1, size, size, 3), np.float32)
    y = np.zeros((1, n_classes), np.float32)
    type(model)._symbolic_build(model, data_batch=(x, y))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    _mean_over_workers()


def _mean_over_workers() -> None:
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_sports_classifier", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica._sports_classifier = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def _train_end_to_end(model, config, split, train_df, valid_df, size, n_classes, verbose, ckpt,
                      distributed: Distributed | None = None):
    import tensorflow as tf

    from ..models.network import backbone_of
    from .subnetworks import compile_model, set_trainable

    aug = (augmentation(zoom=config.zoom, shift=config.shift, horizontal_flip=config.horizontal_flip,
                        seed=config.seed) if config.augment else None)
    one_hot = lambda x, y: (x, tf.one_hot(y, n_classes))  # noqa: E731 (tf.data map function)
    skipped = {"train": SkippedImages(), "valid": SkippedImages()}
    shard = None if distributed is None or distributed.workers == 1 else (distributed.rank, distributed.workers)
    # The shuffle follows Keras' epoch number (head epochs, then fine-tune epochs after them), so
    # that a resumed run sees the batches the uninterrupted run saw.
    epoch = [0]
    train_ds = make_tf_dataset(train_df, image_size=size, batch_size=config.batch_size, training=True,
                               seed=config.seed, augment_layers=aug, skipped=skipped["train"],
                               shard=shard, epoch=epoch).map(one_hot)

    def follow(offset: int):
        import keras

        return keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda e, logs=None: epoch.__setitem__(0, offset + e))

    valid_ds = make_tf_dataset(valid_df, image_size=size, batch_size=config.batch_size,
                               skipped=skipped["valid"], shard=shard).map(one_hot)
    histories = []
    backbone_of(model).trainable = False
    compile_model(model, optimizer=config.optimizer, learning_rate=config.learning_rate,
                  weight_decay=config.weight_decay, label_smoothing=config.label_smoothing)
    # Under any strategy (one worker or several alike, so that both see the same shuffles:
    # building from a first batch would draw one epoch's order too many).
    multi_worker = distributed is not None
    if multi_worker:
        _build_for_multi_worker(model, size, n_classes)
    if config.head_epochs:
        histories.append(_run_stage(ckpt, model, config, "head", lambda callbacks: model.fit(
            train_ds, validation_data=valid_ds, epochs=config.head_epochs, callbacks=[follow(0), *callbacks],
            verbose=verbose)))
    if split is not None:
        set_trainable(model, split)
        compile_model(model, optimizer=config.optimizer, learning_rate=config.fine_tune_learning_rate,
                      weight_decay=config.weight_decay, label_smoothing=config.label_smoothing)
        if multi_worker:
            _build_for_multi_worker(model, size, n_classes)
        histories.append(_run_stage(ckpt, model, config, "fine_tune", lambda callbacks: model.fit(
            train_ds, validation_data=valid_ds, epochs=config.fine_tune_epochs,
            callbacks=[follow(config.head_epochs), *callbacks], verbose=verbose)))
    for split, items in skipped.items():
        # The pipelines decode every epoch: report each unreadable file once.
        SkippedImages(list(dict.fromkeys(items.items))).warn(split)
    return histories
