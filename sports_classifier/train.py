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

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__, bundle
from .backbones import get_backbone
from .config import ModelConfig, TrainConfig
from .errors import ConfigError
from .data import SkippedImages, augmentation, discover, make_tf_dataset
from .features import FeatureExtractor, View
from .metrics import classification_metrics, summary

log = logging.getLogger("sports_classifier")


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


class Checkpoints:
    """Crash-safe training state beside the output bundle (``<out>.checkpoint/``).

    Within a stage, ``_epoch_checkpoint`` saves after every epoch, as one unit, everything a
    resumed run needs to continue exactly where the killed one stopped: weights and optimizer,
    EarlyStopping / ReduceLROnPlateau counters and best weights, dropout's random state and the
    per-epoch history. A finished stage leaves the full model's weights and its history. The
    folder is removed once the bundle is written.
    """

    def __init__(self, out_dir: Path, config: TrainConfig, *, resume: bool):
        import json
        import shutil

        self.dir = out_dir.with_name(out_dir.name + ".checkpoint")
        saved = self.dir / "config.json"
        if resume and saved.is_file():
            if json.loads(saved.read_text()) != config.to_dict():
                raise ConfigError(
                    f"--resume: the checkpoint in {self.dir} was made with a different training "
                    "config; rerun with the same options, or without --resume to start afresh"
                )
            log.info("resuming from %s", self.dir)
        else:
            if self.dir.exists():
                log.info("removing the old checkpoint %s (not resuming)", self.dir)
                shutil.rmtree(self.dir)
            self.dir.mkdir(parents=True)
            saved.write_text(json.dumps(config.to_dict()))

    def done(self, stage: str) -> bool:
        return (self.dir / f"{stage}.done.weights.h5").is_file()

    def restore(self, model, stage: str):
        import pandas as pd

        model.load_weights(self.dir / f"{stage}.done.weights.h5")
        return pd.read_csv(self.dir / f"{stage}.history.csv")

    def finish(self, model, stage: str) -> None:
        tmp = self.dir / f".{stage}.done.weights.h5"
        model.save_weights(tmp)
        os.replace(tmp, self.dir / f"{stage}.done.weights.h5")

    def history(self, stage: str):
        import pandas as pd

        path = self.dir / f"{stage}.history.csv"
        return pd.read_csv(path) if path.is_file() else None

    def callbacks(self, config: TrainConfig, stage: str) -> list:
        import keras

        early = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.early_stopping_patience, restore_best_weights=True
        )
        plateau = keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=config.reduce_lr_factor, patience=config.reduce_lr_patience,
            min_lr=1e-6,
        )
        # Order matters: the checkpoint restores the counters after EarlyStopping and
        # ReduceLROnPlateau have reset them (on_train_begin), and saves after they have updated
        # them (on_epoch_end).
        return [early, plateau, _epoch_checkpoint(self.dir, stage, early, plateau)]

    def remove(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def _epoch_checkpoint(folder: Path, stage: str, early, plateau):
    """An ``EpochCheckpoint`` callback (defined here so that importing this module stays Keras-free).

    Each epoch is written to its own folder, then a one-line pointer file (``<stage>/latest``) is
    replaced atomically: a kill at any instant leaves the previous epoch's state or this one's,
    never a mix (Keras' BackupAndRestore writes weights and epoch number in two steps, and our
    counters in a third).
    """
    import shutil

    import keras
    import pandas as pd

    class EpochCheckpoint(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.root = folder / stage
            self.pointer = self.root / "latest"
            self.csv = folder / f"{stage}.history.csv"
            self.rows: list[dict] = []

        def on_train_begin(self, logs=None):
            if not self.pointer.is_file():
                return
            saved = self.root / self.pointer.read_text().strip()
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)  # its slots are saved too
            self.model.load_weights(saved / "model.weights.h5")
            with np.load(saved / "state.npz", allow_pickle=False) as z:
                early.wait, early.best = int(z["early_wait"]), float(z["early_best"])
                early.best_epoch = int(z["early_best_epoch"])
                plateau.wait, plateau.best = int(z["plateau_wait"]), float(z["plateau_best"])
                plateau.cooldown_counter = int(z["plateau_cooldown"])
                n = int(z["n_best"])
                if n:
                    early.best_weights = [z[f"best_{i}"] for i in range(n)]
                for i, gen in enumerate(self._seed_generators()):
                    gen.state.assign(z[f"seed_{i}"])
                # Continue after the saved epoch (as BackupAndRestore does), or not at all if
                # EarlyStopping had ended the stage there.
                self.model._initial_epoch = self.params["epochs"] if int(z["stopped"]) else int(z["epoch"])
            self.rows = pd.read_csv(saved / "history.csv").to_dict("records")
            self._write_history()

        def _seed_generators(self):
            # Dropout's random stream is not part of the weights; without it a resumed run
            # would drop other units than the uninterrupted one.
            return [layer.seed_generator for layer in self.model._flatten_layers(include_self=False)
                    if getattr(layer, "seed_generator", None) is not None]

        def on_epoch_end(self, epoch, logs=None):
            self.rows.append({k: float(v) for k, v in (logs or {}).items()})
            name = f"epoch-{epoch + 1:04d}"
            tmp, final = self.root / f".{name}.tmp", self.root / name
            for path in (tmp, final):  # left by a run killed mid-save
                shutil.rmtree(path, ignore_errors=True)
            tmp.mkdir(parents=True)
            self.model.save_weights(tmp / "model.weights.h5")
            best = early.best_weights or []
            np.savez(
                tmp / "state.npz", epoch=epoch + 1, stopped=int(bool(self.model.stop_training)),
                early_wait=early.wait, early_best=early.best,
                early_best_epoch=early.best_epoch, plateau_wait=plateau.wait, plateau_best=plateau.best,
                plateau_cooldown=plateau.cooldown_counter, n_best=len(best),
                **{f"best_{i}": w for i, w in enumerate(best)},
                **{f"seed_{i}": np.asarray(g.state) for i, g in enumerate(self._seed_generators())},
            )
            pd.DataFrame(self.rows).to_csv(tmp / "history.csv", index=False)
            os.replace(tmp, final)
            pointer_tmp = self.root / ".latest.tmp"
            pointer_tmp.write_text(name)
            os.replace(pointer_tmp, self.pointer)  # the commit point
            self._write_history()
            for old in self.root.glob("epoch-*"):
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)

        def _write_history(self):
            tmp = self.csv.with_name(f".{self.csv.name}")
            pd.DataFrame(self.rows).to_csv(tmp, index=False)
            os.replace(tmp, self.csv)

    return EpochCheckpoint()


def _view_batches(views: list[np.ndarray], y: np.ndarray, batch_size: int, seed: int):
    """Each epoch shows every training image once, in one of its cached views chosen at
    random: augmentation without recomputing the frozen part."""
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

        def on_epoch_end(self):
            pass

        def __getitem__(self, i):
            idx = self.order[i * batch_size : (i + 1) * batch_size]
            x = np.stack([views[v][j] for v, j in zip(self.choice[idx], idx)]).astype(np.float32)
            return x, y[idx]

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
          cache_dir: str | Path | None = None, progress: bool = True, resume: bool = False) -> TrainResult:
    """Train a classifier on ``data_dir`` and write its bundle to ``out_dir``.

    >>> train(TrainConfig(backbone="efficientnet_lite0"), "../shared/data/sports100", "runs/lite0")
    """
    import keras

    from .model import build_classifier, split_layer, trunk

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

    model = build_classifier(config.backbone, n_classes, image_size=size, dropout=config.dropout,
                             weights=config.weights, tta_flip=config.tta_flip)
    # The layer after which the backbone is fine-tuned in stage 2 (None: head only).
    split = (split_layer(model, config.backbone, config.fine_tune_stages, top=config.fine_tune_top)
             if config.fine_tune_epochs > 0 else None)
    verbose = 2 if progress else 0
    ckpt = Checkpoints(Path(out_dir).resolve(), config, resume=resume)
    histories: list[tuple[str, object]] = []
    hits = misses = 0

    if config.mode == "cached":
        extractor = FeatureExtractor(trunk(model, split), image_size=size, cache_dir=cache_dir,
                                     batch_size=config.batch_size, progress=progress)
        histories = _train_cached(model, config, extractor, split, train_df, valid_df, n_classes, verbose, ckpt)
        hits, misses = extractor.hits, extractor.misses
    else:
        histories = _train_end_to_end(model, config, split, train_df, valid_df, size, n_classes, verbose, ckpt)

    history = _history_frame(histories)
    training = config.to_dict() | {
        "image_size": size,
        "parameters": int(model.count_params()),
        "data": {
            "dataset": Path(data_dir).name,
            "train_images": int(len(train_df)),
            "valid_images": int(len(valid_df)),
            "description": _describe(train_df, n_classes),
        },
    }
    model_config = ModelConfig(
        backbone=config.backbone, image_size=size, labels=tuple(labels), dropout=config.dropout,
        tta_flip=config.tta_flip, package_version=__version__, keras_version=keras.__version__,
        training=training, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    out = write_trained_bundle(model, model_config, history, valid_df, out_dir, progress=progress, start=start)
    ckpt.remove()
    metrics = bundle.read_metrics(out)
    log.info("valid: %s", summary(metrics.get("valid", {})))
    return TrainResult(out, metrics, history, time.perf_counter() - start, hits, misses)


def _describe(frame, n_classes: int) -> str:
    counts = frame["class_index"].value_counts()
    return f"{n_classes} classes, {counts.min()}-{counts.max()} images per class"


def _train_cached(model, config, extractor, split, train_df, valid_df, n_classes, verbose, ckpt):
    from .model import compile_model, head_model, set_trainable, upper_features, upper_model

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
                  weight_decay=config.weight_decay, label_smoothing=config.label_smoothing)
    if config.head_epochs:
        batches, follow = _view_batches(pooled, y_train, config.batch_size, config.seed)
        histories.append(_run_stage(ckpt, model, config, "head", lambda callbacks: head.fit(
            batches, validation_data=(pooled_valid, y_valid), epochs=config.head_epochs,
            callbacks=[follow, *callbacks], verbose=verbose,
        )))
    if split is not None:
        set_trainable(model, split)
        upper = upper_model(model, split)
        compile_model(upper, optimizer=config.optimizer, learning_rate=config.fine_tune_learning_rate,
                      weight_decay=config.weight_decay, label_smoothing=config.label_smoothing)
        batches, follow = _view_batches([f.values for f in train_feats], y_train, config.batch_size,
                                        config.seed + 1)
        histories.append(_run_stage(ckpt, model, config, "fine_tune", lambda callbacks: upper.fit(
            batches, validation_data=(valid_feats.values, y_valid), epochs=config.fine_tune_epochs,
            callbacks=[follow, *callbacks], verbose=verbose,
        )))
    return histories


def _train_end_to_end(model, config, split, train_df, valid_df, size, n_classes, verbose, ckpt):
    import tensorflow as tf

    from .model import backbone_of, compile_model, set_trainable

    aug = (augmentation(zoom=config.zoom, shift=config.shift, horizontal_flip=config.horizontal_flip,
                        seed=config.seed) if config.augment else None)
    one_hot = lambda x, y: (x, tf.one_hot(y, n_classes))  # noqa: E731 (tf.data map function)
    skipped = {"train": SkippedImages(), "valid": SkippedImages()}
    train_ds = make_tf_dataset(train_df, image_size=size, batch_size=config.batch_size, training=True,
                               seed=config.seed, augment_layers=aug, skipped=skipped["train"]).map(one_hot)
    valid_ds = make_tf_dataset(valid_df, image_size=size, batch_size=config.batch_size,
                               skipped=skipped["valid"]).map(one_hot)
    histories = []
    backbone_of(model).trainable = False
    compile_model(model, optimizer=config.optimizer, learning_rate=config.learning_rate,
                  weight_decay=config.weight_decay, label_smoothing=config.label_smoothing)
    if config.head_epochs:
        histories.append(_run_stage(ckpt, model, config, "head", lambda callbacks: model.fit(
            train_ds, validation_data=valid_ds, epochs=config.head_epochs, callbacks=callbacks,
            verbose=verbose)))
    if split is not None:
        set_trainable(model, split)
        compile_model(model, optimizer=config.optimizer, learning_rate=config.fine_tune_learning_rate,
                      weight_decay=config.weight_decay, label_smoothing=config.label_smoothing)
        histories.append(_run_stage(ckpt, model, config, "fine_tune", lambda callbacks: model.fit(
            train_ds, validation_data=valid_ds, epochs=config.fine_tune_epochs, callbacks=callbacks,
            verbose=verbose)))
    for split, items in skipped.items():
        # The pipelines decode every epoch: report each unreadable file once.
        SkippedImages(list(dict.fromkeys(items.items))).warn(split)
    return histories


def write_trained_bundle(model, model_config: ModelConfig, history, valid_df, out_dir, *,
                         progress: bool, start: float) -> Path:
    """Export, measure the finished network on the validation images, write the bundle with
    its metrics and pictures. ``start``: ``time.perf_counter()`` when the work began."""
    from . import plots
    from .runtime import KerasEngine, OnnxEngine, export_onnx, onnxruntime_available, predict_files

    labels = list(model_config.labels)
    size = model_config.image_size
    with tempfile.TemporaryDirectory() as tmp:
        writers = {}
        engine = KerasEngine(model)
        valid_paths = valid_df["filepath"].tolist()
        if onnxruntime_available():
            from .images import preprocess_batch

            onnx_path = Path(tmp) / bundle.ONNX
            diff = export_onnx(model, onnx_path, sample=preprocess_batch(valid_paths[:4], size))
            log.info("ONNX export matches Keras (max |diff| %.1e)", diff)
            engine = OnnxEngine(onnx_path)
            writers[bundle.ONNX] = bundle.copy_from(onnx_path)
        probs, rows, _ = predict_files(engine, valid_paths, size, progress=progress, desc="evaluate valid")
        y_valid = valid_df["class_index"].to_numpy()[rows]
        metrics = {"valid": classification_metrics(y_valid, probs, labels)}
        metrics["valid"]["engine"] = engine.name
        model_config = model_config.replace(
            training=model_config.training | {"seconds": round(time.perf_counter() - start, 1)})

        pred = probs.argmax(axis=1)
        picks = _sample_rows(y_valid, 10, model_config.training.get("seed", 0))
        from .images import preprocess

        images = [preprocess(valid_paths[rows[i]], size) for i in picks]
        writers.update({
            bundle.WEIGHTS: lambda dest: model.save_weights(dest),
            bundle.METRICS: bundle.write_metrics(metrics),
            bundle.HISTORY: lambda dest: history.to_csv(dest, index=False),
            bundle.CURVES: plots.write_png(plots.curves_png(history)),
            bundle.CONFUSION: plots.write_png(plots.confusion_png(
                np.asarray(metrics["valid"]["confusion_matrix"]), labels, title="Confusion matrix (valid)")),
            bundle.SAMPLES: plots.write_png(plots.samples_png(
                images, [labels[y_valid[i]] for i in picks], [labels[pred[i]] for i in picks])),
        })
        return bundle.write_bundle(out_dir, model_config, writers)


def _sample_rows(y: np.ndarray, n: int, seed: int) -> list[int]:
    """One image from each of ``n`` random classes (the notebook's sample grid)."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(y))[:n]
    return [int(np.flatnonzero(y == c)[0]) for c in classes]
