"""Batch prediction over many files: a folder, a glob or a manifest in, one Parquet (or CSV) out.

For archives too big for one sitting. The input list is cut into numbered shards of
``shard_size`` files; each finished shard is written atomically to ``<output>.parts/`` and a
rerun skips the shards already there (resumable after a crash or a kill), then the shards are
joined into ``output``. Unreadable files become rows with an ``error`` and no labels: one bad
file never ends the run.

Two engines compute the same rows with the same code (``Classifier.predict_files`` and
``prediction_rows``):

- ``local``: the ONNX Runtime ``Classifier`` in this process, with a progress bar;
- ``ray``: Ray Data over a Ray cluster, an actor pool whose actors each load the bundle once
  (``sports_classifier.distributed.ray_batch``, imported only then: Ray is an optional extra).
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

ENGINES = ("local", "ray")
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
    engine: str
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
    """``Prediction`` objects as columns (what both engines write). An unreadable file has
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
    """The rows for ``paths``: the one function both engines run on a piece of the input."""
    return prediction_rows(clf.predict_files(list(paths), top_k=top_k, batch_size=batch_size), top_k)


def frame_of(cols, top_k: int):
    """Columns (a dict of lists or a DataFrame) as a DataFrame with fixed dtypes, so every
    shard has the same schema whichever engine made it."""
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

    def combine(self, output: Path, fmt: str, top_k: int) -> tuple[int, int]:
        """Join the shards, in order, into ``output``; return (rows, rows with an error).

        Streamed one shard at a time (pyarrow's ``ParquetWriter``, one row group per shard; CSV
        appended shard by shard), so memory stays at about one shard's size however many rows
        the job has (a million rows: tens of MB, not the whole table; docs/scale.md)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
        # The schema every shard shares (frame_of fixes the dtypes), with pandas' metadata so the
        # table reads back with the same dtypes; also the schema of an empty job's table.
        schema = pa.Schema.from_pandas(frame_of(prediction_rows([], top_k), top_k), preserve_index=False)
        rows = errors = 0
        writer = None if fmt == "csv" else pq.ParquetWriter(tmp, schema)
        try:
            if writer is None:
                frame_of(prediction_rows([], top_k), top_k).to_csv(tmp, index=False)  # the header
            for index in range(self.count):
                table = pq.read_table(self.path(index)).select(schema.names).cast(schema)
                rows += table.num_rows
                errors += table.num_rows - table.column("error").null_count
                if writer is None:
                    table.to_pandas().to_csv(tmp, mode="a", header=False, index=False)
                else:
                    writer.write_table(table)
                del table
        except BaseException:
            if writer is not None:
                writer.close()
            tmp.unlink(missing_ok=True)
            raise
        if writer is not None:
            writer.close()
        os.replace(tmp, output)
        return rows, errors


# -- the job --------------------------------------------------------------------------------

def output_format(output: str | Path, fmt: str | None) -> str:
    if fmt is None:
        fmt = "csv" if str(output).lower().endswith(".csv") else "parquet"
    if fmt not in FORMATS:
        raise UserInputError(f"format must be one of {FORMATS}, got {fmt!r}")
    return fmt


def predict_dataset(model: str | os.PathLike, inputs, output: str | os.PathLike, *, top_k: int = 5,
                    engine: str = "local", fmt: str | None = None, shard_size: int = SHARD_SIZE,
                    batch_size: int = 32, runtime: str = "auto", progress: bool = True,
                    ray_address: str | None = None, workers: int | None = None,
                    cpus_per_worker: float = 0.5, threads: int | None = None) -> BatchResult:
    """Predict every image ``inputs`` names into one table at ``output``; resumable.

    Args:
        model: bundle folder or Hub id (every Ray node must reach it).
        inputs: a folder, glob, CSV/Parquet manifest (see ``collect_inputs``) or a list of paths.
        output: ``.parquet`` (default) or ``.csv``; shards go to ``<output>.parts/``.
        engine: ``local`` or ``ray``.
        shard_size: files per shard (the unit a rerun skips).
        ray_address: the cluster (``auto``: a running one; None: Ray's own default, which
            starts a local cluster when none runs).
        workers: Ray actors in the pool (default: as many as the cluster's CPUs allow).
        cpus_per_worker: CPUs each actor claims; keep it fractional on small clusters so that
            Ray Data's own tasks can still run.
        threads: ONNX Runtime threads per engine (default: all cores locally, 1 per Ray actor).

    Raises:
        UserInputError: bad input, engine or format. ``ImportError`` names the extra when Ray
        is asked for but not installed.
    """
    if engine not in ENGINES:
        raise UserInputError(f"engine must be one of {ENGINES}, got {engine!r}")
    if not isinstance(top_k, int) or top_k < 1:
        raise UserInputError(f"top_k must be a positive integer, got {top_k!r}")
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
        if engine == "local":
            _run_local(shards, pending, model, top_k=top_k, batch_size=batch_size, runtime=runtime,
                       progress=progress, threads=threads)
        else:
            try:
                from .distributed.ray_batch import run_ray
            except ImportError as exc:
                raise ImportError(f"--engine ray needs Ray: pip install 'sports_classifier[ray]' ({exc})") from None
            extra = run_ray(shards, pending, model, top_k=top_k, batch_size=batch_size, runtime=runtime,
                            progress=progress, address=ray_address, workers=workers,
                            cpus_per_worker=cpus_per_worker, threads=threads)
    seconds = time.perf_counter() - start
    rows, errors = shards.combine(output, fmt, top_k)
    return BatchResult(output, rows, errors, shards.count,
                       shards.count - len(pending), seconds, engine, extra)


def _run_local(shards: Shards, pending: list[int], model, *, top_k: int, batch_size: int, runtime: str,
               progress: bool, threads: int | None) -> None:
    from tqdm.auto import tqdm

    from .classifier import Classifier

    clf = Classifier.from_pretrained(model, runtime=runtime, threads=threads)
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
