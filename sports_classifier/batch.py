"""Batch prediction over many files: a folder, a glob or a manifest in, one Parquet (or CSV) out.

For archives too big for one sitting. The input list is cut into numbered shards of
``shard_size`` files; each finished shard is written atomically to ``<output>.parts/`` and a
rerun skips the shards already there (resumable after a crash or a kill), then the shards are
joined into ``output``. Unreadable files become rows with an ``error`` and no labels: one bad
file never ends the run.

Two executors compute the same rows with the same code (``Classifier.predict_files`` and
``prediction_rows``):

- ``LocalExecutor`` (the default): the ONNX Runtime ``Classifier`` in this process, with a
  progress bar;
- ``distributed.ray_batch.RayExecutor``: Ray Data over a Ray cluster, an actor pool whose actors
  each load the bundle once. The caller (the CLI) builds it and passes it in: this module never
  imports ``distributed`` (Ray is an optional extra, and the layers run one way).

An executor is any callable ``executor(shards, pending, model, *, top_k, batch_size, runtime,
progress) -> dict`` (its timings) with a ``name``; it writes each pending shard with
``shards.write``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .errors import UserInputError
from .images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

FORMATS = ("parquet", "csv")
SHARD_SIZE = 1000
# Manifest columns taken as the image path, in this order.
PATH_COLUMNS = ("path", "filepath", "file", "image")
JOB_FILE = "job.json"


@dataclass
class BatchResult:
    """What a batch run did: where the table is, its size, and how much a rerun reused."""

    output: Path
    rows: int
    errors: int
    shards: int
    shards_skipped: int  # already written by an earlier run
    seconds: float
    executor: str  # its name: "local" or "ray"
    extra: dict = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        done = self.rows * (self.shards - self.shards_skipped) / max(1, self.shards)
        return done / self.seconds if self.seconds > 0 else 0.0


# -- inputs ---------------------------------------------------------------------------------

def collect_inputs(source: str | os.PathLike | Sequence[str]) -> list[str]:
    """The image paths a ``--input`` names, in a stable order.

    A folder: every image file under it (recursive, sorted); a glob (``*``, ``?``, ``[``):
    its matching files (sorted); a ``.csv`` / ``.parquet`` manifest: its ``path`` column (or
    ``filepath``, ``file``, ``image``) in file order, relative paths taken from the manifest's
    folder; a list: itself. Entries of a manifest that are missing or unreadable are kept (they
    get an error row).
    """
    if isinstance(source, (list, tuple)):
        return [str(p) for p in source]
    text = str(source)
    path = Path(text)
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if path.is_file() and path.suffix.lower() in (".csv", ".parquet", ".pq"):
        return _read_manifest(path)
    if any(c in text for c in "*?["):
        found = sorted(p for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not found:
            raise UserInputError(f"no files match {text!r}")
        return found
    if path.is_file():
        return [text]
    raise UserInputError(f"--input {text!r} is not a folder, a glob, a file or a CSV/Parquet manifest")


def _read_manifest(path: Path) -> list[str]:
    import pandas as pd

    try:
        frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # pandas/pyarrow raise many types for a bad table
        raise UserInputError(f"cannot read the manifest {path}: {exc}") from None
    column = next((c for c in PATH_COLUMNS if c in frame.columns), None)
    if column is None:
        raise UserInputError(f"the manifest {path} has no path column (one of {', '.join(PATH_COLUMNS)}); "
                             f"its columns: {', '.join(map(str, frame.columns[:10]))}")
    base = path.parent
    return [str(p) if Path(p).is_absolute() else str(base / p) for p in frame[column].astype(str)]


# -- rows -----------------------------------------------------------------------------------

def columns(top_k: int) -> list[str]:
    """The output table's columns: path, label_1, prob_1, ..., label_k, prob_k, ood, error."""
    out = ["path"]
    for i in range(1, top_k + 1):
        out += [f"label_{i}", f"prob_{i}"]
    return out + ["ood", "error"]


def prediction_rows(predictions: Iterable, top_k: int) -> dict[str, list]:
    """``Prediction`` objects as columns (what both executors write). An unreadable file has
    empty labels and probabilities and its reason in ``error``."""
    cols: dict[str, list] = {name: [] for name in columns(top_k)}
    for p in predictions:
        cols["path"].append(p.source)
        for i in range(top_k):
            label, prob = p.top[i] if i < len(p.top) else (None, None)
            cols[f"label_{i + 1}"].append(label)
            cols[f"prob_{i + 1}"].append(prob)
        cols["ood"].append(bool(p.ood) if p.ok else None)
        cols["error"].append(p.error)
    return cols


def predict_chunk(clf, paths: Sequence[str], top_k: int, batch_size: int) -> dict[str, list]:
    """The rows for ``paths``: the one function both executors run on a piece of the input."""
    return prediction_rows(clf.predict_files(list(paths), top_k=top_k, batch_size=batch_size), top_k)


def frame_of(cols, top_k: int):
    """Columns (a dict of lists or a DataFrame) as a DataFrame with fixed dtypes, so every
    shard has the same schema whichever executor made it."""
    import pandas as pd

    frame = pd.DataFrame(cols, columns=columns(top_k))
    for i in range(1, top_k + 1):
        frame[f"label_{i}"] = frame[f"label_{i}"].astype("string")
        frame[f"prob_{i}"] = frame[f"prob_{i}"].astype("Float64")
    frame["path"] = frame["path"].astype("string")
    frame["ood"] = frame["ood"].astype("boolean")
    frame["error"] = frame["error"].astype("string")
    return frame


# -- shards ---------------------------------------------------------------------------------

class Shards:
    """The numbered pieces of a job in ``<output>.parts/``, each written once, atomically.

    ``job.json`` records what the shards were computed from (the input list, model, top-k,
    shard size); a rerun of the same job reuses them, a different job starts afresh.
    """

    def __init__(self, output: Path, paths: Sequence[str], *, model: str, top_k: int, shard_size: int):
        if shard_size < 1:
            raise UserInputError(f"shard size must be at least 1, got {shard_size}")
        self.folder = output.with_name(output.name + ".parts")
        self.paths = list(paths)
        self.shard_size = shard_size
        self.count = (len(self.paths) + shard_size - 1) // shard_size
        digest = hashlib.sha256("\n".join(self.paths).encode()).hexdigest()
        self.job = {"inputs_sha256": digest, "inputs": len(self.paths), "model": model, "top_k": top_k,
                    "shard_size": shard_size}
        saved = self.folder / JOB_FILE
        if self.folder.is_dir():
            try:
                same = json.loads(saved.read_text()) == self.job
            except (OSError, ValueError):
                same = False
            if not same:
                log.info("%s holds shards of another job; starting afresh", self.folder)
                for old in self.folder.glob("part-*.parquet"):
                    old.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = saved.with_name(f".{JOB_FILE}.{os.getpid()}")
        tmp.write_text(json.dumps(self.job))
        os.replace(tmp, saved)

    def path(self, index: int) -> Path:
        return self.folder / f"part-{index:06d}.parquet"

    def rows(self, index: int) -> list[str]:
        return self.paths[index * self.shard_size : (index + 1) * self.shard_size]

    def done(self, index: int) -> bool:
        return self.path(index).is_file()

    def pending(self) -> list[int]:
        return [i for i in range(self.count) if not self.done(i)]

    def write(self, index: int, frame) -> None:
        if list(frame["path"]) != self.rows(index):
            raise RuntimeError(f"shard {index} got rows for other files (a bug)")
        final = self.path(index)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, final)  # the commit point: a killed run leaves the whole shard or none

    def combine(self, output: Path, fmt: str, top_k: int):
        import pandas as pd

        frames = [pd.read_parquet(self.path(i)) for i in range(self.count)]
        frame = pd.concat(frames, ignore_index=True) if frames else frame_of(prediction_rows([], top_k), top_k)
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        os.replace(tmp, output)
        return frame


# -- the job --------------------------------------------------------------------------------

def output_format(output: str | Path, fmt: str | None) -> str:
    if fmt is None:
        fmt = "csv" if str(output).lower().endswith(".csv") else "parquet"
    if fmt not in FORMATS:
        raise UserInputError(f"format must be one of {FORMATS}, got {fmt!r}")
    return fmt


def predict_dataset(model: str | os.PathLike, inputs, output: str | os.PathLike, *, top_k: int = 5,
                    executor=None, fmt: str | None = None, shard_size: int = SHARD_SIZE,
                    batch_size: int = 32, runtime: str = "auto", progress: bool = True,
                    threads: int | None = None) -> BatchResult:
    """Predict every image ``inputs`` names into one table at ``output``; resumable.

    Args:
        model: bundle folder or Hub id (every Ray node must reach it).
        inputs: a folder, glob, CSV/Parquet manifest (see ``collect_inputs``) or a list of paths.
        output: ``.parquet`` (default) or ``.csv``; shards go to ``<output>.parts/``.
        executor: what computes the pending shards; default ``LocalExecutor(threads=threads)``.
            For a Ray cluster pass ``distributed.ray_batch.RayExecutor(address, workers=...)``.
        shard_size: files per shard (the unit a rerun skips).
        threads: ONNX Runtime threads of the default local executor (default: all cores).

    Raises:
        UserInputError: bad input or format.
    """
    if not isinstance(top_k, int) or top_k < 1:
        raise UserInputError(f"top_k must be a positive integer, got {top_k!r}")
    executor = executor if executor is not None else LocalExecutor(threads=threads)
    output = Path(output)
    fmt = output_format(output, fmt)
    paths = collect_inputs(inputs)
    if not paths:
        raise UserInputError(f"no image files found in {inputs}")
    shards = Shards(output, paths, model=str(model), top_k=top_k, shard_size=shard_size)
    pending = shards.pending()
    start = time.perf_counter()
    extra: dict = {}
    if pending:
        extra = executor(shards, pending, model, top_k=top_k, batch_size=batch_size, runtime=runtime,
                         progress=progress) or {}
    seconds = time.perf_counter() - start
    frame = shards.combine(output, fmt, top_k)
    return BatchResult(output, len(frame), int(frame["error"].notna().sum()), shards.count,
                       shards.count - len(pending), seconds, executor.name, extra)


class LocalExecutor:
    """The pending shards computed in this process by one ONNX Runtime ``Classifier``."""

    name = "local"

    def __init__(self, threads: int | None = None):
        self.threads = threads  # ONNX Runtime threads (None: all cores)

    def __call__(self, shards: Shards, pending: list[int], model, *, top_k: int, batch_size: int,
                 runtime: str, progress: bool) -> dict:
        from tqdm.auto import tqdm

        from .classifier import Classifier

        clf = Classifier.from_pretrained(model, runtime=runtime, threads=self.threads)
        total = sum(len(shards.rows(i)) for i in pending)
        step = max(batch_size, 256)  # the bar moves every few batches, not once per shard
        with tqdm(total=total, desc="predict", unit="img", disable=not progress) as bar:
            for index in pending:
                rows = shards.rows(index)
                parts: dict[str, list] = {}
                for start in range(0, len(rows), step):
                    chunk = predict_chunk(clf, rows[start : start + step], top_k, batch_size)
                    for name, values in chunk.items():
                        parts.setdefault(name, []).extend(values)
                    bar.update(len(rows[start : start + step]))
                shards.write(index, frame_of(parts, top_k))
        return {}
