"""End-to-end training on N Ray Train workers (``train --mode end_to_end --workers N --executor ray``).

Ray Train's ``TensorflowTrainer`` starts the workers and sets ``TF_CONFIG`` for them; each runs
the project's own ``training.loop.train`` under ``MultiWorkerMirroredStrategy``: the global
batch (``--batch-size``) is split evenly over the workers, each decoding only its slice, and
gradients are all-reduced. Rank 0 (the chief) writes the epoch checkpoints
(``OUT.checkpoint/``, so ``--resume`` works as on one machine) and, once, the bundle.

The output folder, the dataset and the package must be visible to every node under the same
paths (a shared file system, or the package installed on every node).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _fixed_ports(base: int) -> None:
    """Give worker i the TF collective port ``base + i`` instead of the one Ray chose at
    random (for clusters whose firewalls open a known range)."""
    tf_config = json.loads(os.environ["TF_CONFIG"])
    workers = tf_config["cluster"]["worker"]
    tf_config["cluster"]["worker"] = [f"{w.rsplit(':', 1)[0]}:{base + i}" for i, w in enumerate(workers)]
    os.environ["TF_CONFIG"] = json.dumps(tf_config)


def _worker(job: dict) -> None:
    """What each Ray Train worker runs."""
    import ray.train
    from ray.train.collective import barrier

    os.environ.pop("TF_USE_LEGACY_KERAS", None)  # Ray sets it for tf.keras; the project uses Keras 3
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if job["tf_port"]:
        _fixed_ports(job["tf_port"])
    import tensorflow as tf

    from ..training.loop import Distributed, train

    context = ray.train.get_context()
    if job["threads"]:
        tf.config.threading.set_intra_op_parallelism_threads(job["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(job["threads"])
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    distributed = Distributed(strategy, rank=context.get_world_rank(), workers=context.get_world_size(),
                              barrier=barrier)
    # Every worker runs it; only the chief writes the bundle (the others return None). No
    # ray.train.report: it is a collective call that the driver does not need (it reads the bundle).
    train(job["config"], job["data"], job["out"], cache_dir=job["cache_dir"],
          progress=job["progress"] and distributed.chief, resume=job["resume"], distributed=distributed)


def train_on_ray(config, data_dir, out_dir, *, workers: int, address: str | None = None,
                 cpus_per_worker: float = 1.0, use_gpu: bool = False, cache_dir=None, progress: bool = True,
                 resume: bool = False, tf_port: int | None = None, threads: int | None = None) -> dict:
    """Train ``config`` (end-to-end mode) on ``workers`` Ray Train workers; returns the bundle's
    path, the validation metrics, the seconds training took and Ray's start-up time.

    Args:
        address: the Ray cluster (see ``distributed.cluster.connect``).
        cpus_per_worker: CPUs each worker claims (fractional on a small shared machine).
        tf_port: worker i listens for TensorFlow's collectives on ``tf_port + i`` (default:
            ports Ray picks).
        threads: TensorFlow threads per worker (default: TensorFlow's choice).
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    from .cluster import connect

    if config.mode != "end_to_end":
        from ..errors import ConfigError

        raise ConfigError("--executor ray trains with --mode end_to_end (the cached mode is one process)")
    out = Path(out_dir).resolve()
    storage = out.parent / f".{out.name}.ray"
    # With progress, the workers' output reaches this terminal: the chief's per-epoch lines
    # (Keras, verbose 2), prefixed by Ray with the worker's name.
    started, startup = connect(address, log_to_driver=progress)
    import ray

    try:
        job = {"config": config, "data": str(Path(data_dir).resolve()), "out": str(out),
               "cache_dir": str(cache_dir) if cache_dir else None, "progress": progress, "resume": resume,
               "tf_port": tf_port, "threads": threads}
        env = {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "SPORTS_CLASSIFIER_CACHE")}
        trainer = TensorflowTrainer(
            _worker, train_loop_config=job,
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": cpus_per_worker}),
            run_config=RunConfig(name="train", storage_path=str(storage),
                                 worker_runtime_env={"env_vars": env} if env else None),
        )
        t0 = time.perf_counter()
        if progress:
            print(f"ray: connected in {startup:.1f} s; starting {workers} Ray Train worker(s) (each imports "
                  "TensorFlow and reads the data; the chief then prints one line per epoch)",
                  file=sys.stderr, flush=True)
        trainer.fit()
        seconds = time.perf_counter() - t0
        shutil.rmtree(storage, ignore_errors=True)
        from ..bundle import read_metrics

        return {"bundle": out, "metrics": read_metrics(out), "seconds": seconds, "ray_startup_s": startup,
                "workers": workers}
    finally:
        if started:
            ray.shutdown()
