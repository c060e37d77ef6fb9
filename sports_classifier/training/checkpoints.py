"""Crash-safe training state: one atomic checkpoint per epoch, and per finished stage.

A run killed at any instant (SIGKILL included) continues with ``--resume`` to the same weights
as an uninterrupted run (tests/e2e/test_resume.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .. import atomic, bundle
from ..atomic import atomic_path
from ..config import TrainConfig
from ..errors import ConfigError

log = logging.getLogger(__name__)


class Checkpoints:
    """Crash-safe training state beside the output bundle (``<out>.checkpoint/``).

    Within a stage, ``_epoch_checkpoint`` saves after every epoch, as one unit, everything a
    resumed run needs to continue exactly where the killed one stopped: weights and optimizer,
    EarlyStopping / ReduceLROnPlateau counters and best weights, dropout's random state and the
    per-epoch history. A finished stage leaves the full model's weights and its history. The
    folder is removed once the bundle is written.
    """

    def __init__(self, out_dir: Path, config: TrainConfig, *, resume: bool, writer: bool = True):
        """``writer=False``: a data-parallel worker other than the chief. It reads the chief's
        checkpoints (to resume alike) but never clears them; it saves its own copy of every
        checkpoint into a scratch folder, because under ``MultiWorkerMirroredStrategy`` reading
        the weights is a collective operation that every worker must run."""
        import json
        import shutil
        import tempfile

        self.dir = out_dir.with_name(out_dir.name + ".checkpoint")
        self.out = self.dir
        saved = self.dir / bundle.CONFIG
        if not writer:
            self.out = Path(tempfile.mkdtemp(prefix="checkpoint-worker-"))
            return
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
        with atomic_path(self.out / f"{stage}.done.weights.h5") as tmp:
            model.save_weights(tmp)

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
        return [early, plateau, _epoch_checkpoint(self.dir, stage, early, plateau, write_to=self.out)]

    def remove(self) -> None:
        import shutil

        shutil.rmtree(self.out, ignore_errors=True)


def _epoch_checkpoint(folder: Path, stage: str, early, plateau, *, write_to: Path | None = None):
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
            self.read_root = folder / stage  # where a resumed run's state is read (the chief's)
            self.root = (write_to or folder) / stage  # where this worker writes its own
            self.pointer = self.root / "latest"
            self.csv = (write_to or folder) / f"{stage}.history.csv"
            self.rows: list[dict] = []

        def on_train_begin(self, logs=None):
            pointer = self.read_root / "latest"
            if not pointer.is_file():
                return
            saved = self.read_root / pointer.read_text().strip()
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)  # its slots are saved too
            self.model.load_weights(saved / bundle.WEIGHTS)
            epoch, stopped = _load_state(saved / "state.npz", early, plateau, self._seed_generators())
            # Continue after the saved epoch (as BackupAndRestore does), or not at all if
            # EarlyStopping had ended the stage there.
            self.model._initial_epoch = self.params["epochs"] if stopped else epoch
            self.rows = pd.read_csv(saved / bundle.HISTORY).to_dict("records")
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
            self.model.save_weights(tmp / bundle.WEIGHTS)
            _save_state(tmp / "state.npz", epoch + 1, bool(self.model.stop_training), early, plateau,
                        self._seed_generators())
            pd.DataFrame(self.rows).to_csv(tmp / bundle.HISTORY, index=False)
            os.replace(tmp, final)
            atomic.write_text(self.pointer, name)  # the commit point
            self._write_history()
            for old in self.root.glob("epoch-*"):
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)

        def _write_history(self):
            with atomic_path(self.csv) as tmp:
                pd.DataFrame(self.rows).to_csv(tmp, index=False)

    return EpochCheckpoint()


def _save_state(path: Path, epoch: int, stopped: bool, early, plateau, seed_generators) -> None:
    """The callbacks' counters, EarlyStopping's best weights and the dropout seeds after ``epoch``."""
    best = early.best_weights or []
    np.savez(
        path, epoch=epoch, stopped=int(stopped), early_wait=early.wait, early_best=early.best,
        early_best_epoch=early.best_epoch, plateau_wait=plateau.wait, plateau_best=plateau.best,
        plateau_cooldown=plateau.cooldown_counter, n_best=len(best),
        **{f"best_{i}": w for i, w in enumerate(best)},
        **{f"seed_{i}": np.asarray(g.state) for i, g in enumerate(seed_generators)},
    )


def _load_state(path: Path, early, plateau, seed_generators) -> tuple[int, bool]:
    """Put back what ``_save_state`` wrote; returns (the saved epoch, whether the stage had stopped)."""
    with np.load(path, allow_pickle=False) as z:
        early.wait, early.best = int(z["early_wait"]), float(z["early_best"])
        early.best_epoch = int(z["early_best_epoch"])
        plateau.wait, plateau.best = int(z["plateau_wait"]), float(z["plateau_best"])
        plateau.cooldown_counter = int(z["plateau_cooldown"])
        n = int(z["n_best"])
        if n:
            early.best_weights = [z[f"best_{i}"] for i in range(n)]
        for i, gen in enumerate(seed_generators):
            gen.state.assign(z[f"seed_{i}"])
        return int(z["epoch"]), bool(int(z["stopped"]))
