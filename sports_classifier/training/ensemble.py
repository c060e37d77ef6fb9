"""Ensembles: trained bundles averaged into one bundle.

Networks on different backbones make different mistakes, so the average of their class
probabilities beats each of them (docs/accuracy.md). The ensemble is one Keras network
(``model.build_ensemble``): it saves, loads, evaluates and exports to a single ONNX file like
any bundle, so the CLI, the app and the Hub take it unchanged.

* ``combine``: existing bundles -> an ensemble bundle, measured on the validation split;
* ``train_ensemble``: an ensemble recipe -> each member trained with its own config into
  ``<out>.members/<name>/`` (kept: they are bundles too), then combined.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

from .. import bundle
from ..version import __version__
from ..config import ENSEMBLE, ModelConfig, TrainConfig
from ..errors import BundleError, ConfigError, DatasetLayoutError

log = logging.getLogger(__name__)


def members_folder(out_dir: str | Path) -> Path:
    out = Path(out_dir).resolve()
    return out.with_name(f"{out.name}.members")


def combine(members: Sequence[str | Path], out_dir: str | Path, *, data_dir: str | Path,
            split: str = "valid", image_size: int | None = None, progress: bool = True) -> Path:
    """Average the bundles ``members`` into one ensemble bundle at ``out_dir``, measured on
    ``split`` of ``data_dir``. The ensemble's input size is the smallest member's unless
    ``image_size`` is given; each member resizes its input to its own size.

    >>> combine(["runs/lite0", "runs/lite1", "runs/lite2"], "runs/ensemble", data_dir="data")
    """
    import keras
    import pandas as pd

    from ..datasets import discover
    from ..models.network import build_ensemble, member_name
    from .finalize import write_trained_bundle

    start = time.perf_counter()
    paths = [Path(m) for m in members]
    if len(paths) < 2:
        raise ConfigError("an ensemble needs at least two member bundles")
    configs = [bundle.read_config(p) for p in paths]
    labels = configs[0].labels
    for path, config in zip(paths, configs):
        if config.is_ensemble:
            raise BundleError(f"{path} is itself an ensemble; combine its members instead")
        if config.labels != labels:
            raise BundleError(f"{path} and {paths[0]} do not share their labels (in the same order); "
                              "only models trained on the same classes can be averaged")
    dataset = discover(data_dir)
    if tuple(dataset.labels) != labels:
        raise DatasetLayoutError(f"{data_dir} does not hold exactly the members' {len(labels)} classes")

    specs = tuple(
        {"backbone": c.backbone, "image_size": c.image_size, "tta_flip": c.tta_flip,
         "name": p.resolve().name}
        for p, c in zip(paths, configs)
    )
    size = image_size or min(c.image_size for c in configs)
    model = build_ensemble(specs, len(labels), image_size=size)
    for i, (path, config) in enumerate(zip(paths, configs)):
        model.get_layer(member_name(i)).load_weights(bundle.verified_file(path, config, bundle.WEIGHTS))

    histories = []
    for spec, path in zip(specs, paths):
        history = bundle.member(path, bundle.HISTORY)  # refuses a link out of the member's bundle
        if history is not None:
            frame = pd.read_csv(history)
            if "stage" in frame:
                frame["stage"] = spec["name"] + ":" + frame["stage"].astype(str)
            histories.append(frame)
    history = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
    member_training = [c.training or {} for c in configs]
    training = {
        "ensemble": [s["name"] for s in specs],
        "seed": member_training[0].get("seed", 0),
        "members_seconds": round(sum(t.get("seconds", 0) for t in member_training), 1),
        "data": member_training[0].get("data"),
        "members": member_training,
    }
    config = ModelConfig(
        backbone=ENSEMBLE, image_size=size, labels=labels, dropout=0.0, members=specs,
        package_version=__version__, keras_version=keras.__version__, training=training,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    log.info("ensemble of %s at %d px", ", ".join(s["name"] for s in specs), size)
    out, _ = write_trained_bundle(model, config, history, dataset.frame(split), out_dir,
                                  progress=progress, start=start)
    return out


def train_ensemble(members: dict[str, TrainConfig], data_dir: str | Path, out_dir: str | Path, *,
                   cache_dir: str | Path | None = None, progress: bool = True, resume: bool = False) -> Path:
    """Train each member (``name -> TrainConfig``) into ``<out>.members/<name>``, then combine
    them into ``out_dir``. With ``resume``, members already trained with the same config are
    reused and an interrupted member continues from its checkpoint."""
    from .loop import train

    bundle.check_destination(out_dir)  # before training any member
    folder = members_folder(out_dir)
    paths = []
    for name, config in members.items():
        dest = folder / name
        if resume and _trained_with(dest, config):
            log.info("ensemble member %s: already trained with this config; reused", name)
        else:
            log.info("ensemble member %s: training", name)
            train(config, data_dir, dest, cache_dir=cache_dir, progress=progress, resume=resume)
        paths.append(dest)
    return combine(paths, out_dir, data_dir=data_dir, split=next(iter(members.values())).valid_split,
                   progress=progress)


def _trained_with(path: Path, config: TrainConfig) -> bool:
    """Whether ``path`` is a finished bundle trained with ``config``."""
    try:
        training = bundle.read_config(path).training or {}
    except BundleError:
        return False
    wanted = config.to_dict()
    if wanted["image_size"] is None:
        del wanted["image_size"]  # recorded as the backbone's own size
    return all(training.get(key) == value for key, value in wanted.items())
