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

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from . import atomic
from .atomic import atomic_path
from .errors import UserInputError
from .images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

FORMATS = ("parquet", "csv")
SHARD_SIZE = 1000
# Manifest columns taken as the image path, in this order.
PATH_COLUMNS = ("path", "filepath", "file", "image")
JOB_FILE = "job.json"
# A manifest is refused beyond these, before its paths are expanded: a Parquet file stores
# repeated strings once (dictionary encoding), so 139 KB can hold 4 GB of paths.
MAX_MANIFEST_ROWS = 2_000_000
MAX_MANIFEST_PATH_BYTES = 256 * 1024**2


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
        found = _glob_files(text)
        if not found:
            raise UserInputError(f"no files match {text!r}")
        return found
    if path.is_file():
        return [text]
    raise UserInputError(f"--input {text!r} is not a folder, a glob, a file or a CSV/Parquet manifest")


def _glob_files(pattern: str) -> list[str]:
    """The files ``pattern`` matches, sorted; ``**`` spans folders. Through pathlib, whose
    ``**`` does not descend into linked folders: ``glob.glob`` follows them, so two
    ``ln -s . loop`` links in the tree made it walk 2^40 paths. Hidden names are left out, as
    ``glob.glob`` does."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
    anchor = Path(*parts[:fixed]) if fixed else Path(".")
    rest = "/".join(parts[fixed:])
    if not rest:
        return []
    found = []
    for p in anchor.glob(rest):
        relative = p.relative_to(anchor).parts
        if any(part.startswith(".") for part in relative):
            continue
        if p.is_file():
            found.append(str(p))
    return sorted(found)


def _read_manifest(path: Path) -> list[str]:
    try:
        column, values = _csv_manifest(path) if path.suffix.lower() == ".csv" else _parquet_manifest(path)
    except UserInputError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for a bad table
        raise UserInputError(f"cannot read the manifest {path}: {exc}") from None
    base = path.parent
    return [str(p) if Path(p).is_absolute() else str(base / p) for p in values]


def _path_column(path: Path, names) -> str:
    column = next((c for c in PATH_COLUMNS if c in names), None)
    if column is None:
        raise UserInputError(f"the manifest {path} has no path column (one of {', '.join(PATH_COLUMNS)}); "
                             f"its columns: {', '.join(map(str, list(names)[:10]))}")
    return column


def _csv_manifest(path: Path) -> tuple[str, list[str]]:
    import pandas as pd

    frame = pd.read_csv(path)  # a CSV holds what it says: its size bounds its expansion
    column = _path_column(path, frame.columns)
    return column, frame[column].astype(str).tolist()


def _parquet_manifest(path: Path) -> tuple[str, list[str]]:
    """The path column of a Parquet manifest, sized before it is expanded (``MAX_MANIFEST_*``)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path)
    column = _path_column(path, meta.schema_arrow.names)
    rows = meta.metadata.num_rows
    if rows > MAX_MANIFEST_ROWS:
        raise UserInputError(f"the manifest {path} has {rows:,} rows; at most {MAX_MANIFEST_ROWS:,} "
                             "are read at once: split it")
    table = pq.read_table(path, columns=[column], read_dictionary=[column])  # strings stay shared
    values = table.column(column).combine_chunks()
    if hasattr(values, "dictionary"):  # the bytes the paths take once expanded, counted unexpanded
        lengths = pc.binary_length(values.dictionary).fill_null(0)
        size = pc.sum(pc.take(lengths, values.indices.fill_null(0))).as_py() or 0
    else:
        size = values.nbytes
    if size > MAX_MANIFEST_PATH_BYTES:
        raise UserInputError(f"the paths of the manifest {path} take {size / 2**20:,.0f} MB; at most "
                             f"{MAX_MANIFEST_PATH_BYTES // 2**20} MB are read at once: split it")
    return column, [str(v) for v in values.to_pylist()]


# -- rows -----------------------------------------------------------------------------------

def columns(top_k: int) -> list[str]:
    """The output table's columns: path, label_1, prob_1, ..., label_k, prob_k, ood, error."""
    out = ["path"]
    for i in range(1, top_k + 1):
        out += [f"label_{i}", f"prob_{i}"]
    return out + ["ood", "error"]


def table_text(text: str | None) -> str | None:
    """A file name (or a message holding one) as the table stores it: UTF-8 text. A name that is
    not UTF-8 reaches Python with its bytes escaped as surrogates, which Parquet and CSV cannot
    store; its odd bytes are written ``\\xff`` instead, the rest as it is."""
    if text is None:
        return None
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def prediction_rows(predictions: Iterable, top_k: int) -> dict[str, list]:
    """``Prediction`` objects as columns (what both executors write). An unreadable file has
    empty labels and probabilities and its reason in ``error``."""
    cols: dict[str, list] = {name: [] for name in columns(top_k)}
    for p in predictions:
        cols["path"].append(table_text(p.source))
        for i in range(top_k):
            label, prob = p.top[i] if i < len(p.top) else (None, None)
            cols[f"label_{i + 1}"].append(label)
            cols[f"prob_{i + 1}"].append(prob)
        cols["ood"].append(bool(p.ood) if p.ok else None)
        cols["error"].append(table_text(p.error))
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

    def __init__(self, output: Path, paths: Sequence[str], *, model: str, top_k: int, shard_size: int,
                 model_digest: str | None = None):
        if shard_size < 1:
            raise UserInputError(f"shard size must be at least 1, got {shard_size}")
        self.folder = output.with_name(output.name + ".parts")
        self.paths = list(paths)
        self.shard_size = shard_size
        self.count = (len(self.paths) + shard_size - 1) // shard_size
        digest = hashlib.sha256("\n".join(self.paths).encode("utf-8", "surrogateescape")).hexdigest()
        # model_digest: the bundle's content (a bundle changed in place makes a new job)
        self.job = {"inputs_sha256": digest, "inputs": len(self.paths), "model": model, "top_k": top_k,
                    "shard_size": shard_size, "model_sha256": model_digest}
        saved = self.folder / JOB_FILE
        same = False
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
        atomic.write_json(saved, self.job, indent=None)

    def path(self, index: int) -> Path:
        return self.folder / f"part-{index:06d}.parquet"

    def rows(self, index: int) -> list[str]:
        return self.paths[index * self.shard_size : (index + 1) * self.shard_size]

    def done(self, index: int) -> bool:
        return self.path(index).is_file()

    def pending(self) -> list[int]:
        return [i for i in range(self.count) if not self.done(i)]

    def write(self, index: int, frame) -> None:
        if list(frame["path"]) != [table_text(p) for p in self.rows(index)]:
            raise RuntimeError(f"shard {index} got rows for other files (a bug)")
        with atomic_path(self.path(index)) as tmp:  # the commit point: a killed run leaves the whole shard or none
            frame.to_parquet(tmp, index=False)

    def combine(self, output: Path, fmt: str, top_k: int) -> tuple[int, int]:
        """Join the shards, in order, into ``output``; return (rows, rows with an error).

        Streamed one shard at a time (pyarrow's ``ParquetWriter``, one row group per shard; CSV
        appended shard by shard), so memory stays at about one shard's size however many rows
        the job has (a million rows: tens of MB, not the whole table; docs/scale.md)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        output.parent.mkdir(parents=True, exist_ok=True)
        # The schema every shard shares (frame_of fixes the dtypes), with pandas' metadata so the
        # table reads back with the same dtypes; also the schema of an empty job's table.
        empty = frame_of(prediction_rows([], top_k), top_k)
        schema = pa.Schema.from_pandas(empty, preserve_index=False)
        rows = errors = 0
        with atomic_path(output) as tmp:
            writer = None if fmt == "csv" else pq.ParquetWriter(tmp, schema)
            try:
                if writer is None:
                    empty.to_csv(tmp, index=False)  # the header
                for index in range(self.count):
                    table = pq.read_table(self.path(index)).select(schema.names).cast(schema)
                    rows += table.num_rows
                    errors += table.num_rows - table.column("error").null_count
                    if writer is None:
                        table.to_pandas().to_csv(tmp, mode="a", header=False, index=False)
                    else:
                        writer.write_table(table)
                    del table
            finally:
                if writer is not None:
                    writer.close()
        return rows, errors


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
                    threads: int | None = None, overwrite: bool = False) -> BatchResult:
    """Predict every image ``inputs`` names into one table at ``output``; resumable.

    Args:
        model: bundle folder or Hub id (every Ray node must reach it).
        inputs: a folder, glob, CSV/Parquet manifest (see ``collect_inputs``) or a list of paths.
        output: ``.parquet`` (default) or ``.csv``; shards go to ``<output>.parts/``.
        executor: what computes the pending shards; default ``LocalExecutor(threads=threads)``.
            For a Ray cluster pass ``distributed.ray_batch.RayExecutor(address, workers=...)``.
        shard_size: files per shard (the unit a rerun skips).
        threads: ONNX Runtime threads of the default local executor (default: all cores).
        overwrite: replace an existing ``output`` that no batch run wrote (one that a run wrote,
            its shards beside it, is replaced by the next run there).

    Raises:
        UserInputError: bad input or format.
    """
    if not isinstance(top_k, int) or top_k < 1:
        raise UserInputError(f"top_k must be a positive integer, got {top_k!r}")
    executor = executor if executor is not None else LocalExecutor(threads=threads)
    output = Path(output)
    fmt = output_format(output, fmt)
    if output.is_dir():
        raise UserInputError(f"--output {output} is a folder; give a file name (e.g. {output / 'predictions.parquet'})")
    paths = collect_inputs(inputs)
    if not paths:
        raise UserInputError(f"no image files found in {inputs}")
    # A file this tool wrote (its shards' job.json beside it) is replaced by the next run there;
    # any other existing file only with overwrite=True.
    ours = (output.with_name(output.name + ".parts") / JOB_FILE).is_file()
    if (output.exists() or output.is_symlink()) and not (overwrite or ours):
        raise UserInputError(f"--output {output} already exists and was not written by a batch run: pass "
                             "--overwrite to replace it, or choose another name")
    shards = Shards(output, paths, model=str(model), top_k=top_k, shard_size=shard_size,
                    model_digest=_model_digest(model))
    pending = shards.pending()
    start = time.perf_counter()
    extra: dict = {}
    if pending:
        extra = executor(shards, pending, model, top_k=top_k, batch_size=batch_size, runtime=runtime,
                         progress=progress) or {}
    seconds = time.perf_counter() - start
    rows, errors = shards.combine(output, fmt, top_k)
    return BatchResult(output, rows, errors, shards.count, shards.count - len(pending), seconds,
                       executor.name, extra)


def _model_digest(model) -> str | None:
    """The SHA-256 of a local bundle's config.json, which records the checksum of every model
    file: shards computed before the bundle changed in place are not reused. None for a Hub
    source (its text names the revision)."""
    from . import bundle

    folder = Path(model)
    if not folder.is_dir():
        return None
    config = bundle.member_or_none(folder, bundle.CONFIG)
    return bundle.sha256_file(config) if config is not None else None


class LocalExecutor:

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
