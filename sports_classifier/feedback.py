""""Was this right?": what users say about the app's answers, kept so that it can train the next model.

Each record is two files in the feedback folder, named by a random id:

    <folder>/<id>.jpg     the photo, re-encoded (no metadata from the upload survives)
    <folder>/<id>.json    {"id", "label", "time", "predictions": {model: [[label, p], ...]},
                           "bundles": {model: {file: sha256}}}

``export`` writes them as a dataset folder that ``sports-classifier train`` accepts
(``train/<label>/<id>.jpg`` and ``valid/<label>/<id>.jpg``). The folder is local by default
($SPORTS_CLASSIFIER_FEEDBACK, else ``feedback/`` in the working folder); with
$SPORTS_CLASSIFIER_FEEDBACK_REPO set, huggingface_hub's CommitScheduler also pushes it to that
Hub dataset repo every few minutes.

Nothing from a client names a path here: the photo is a file the app already checked is an
upload, the label must be one of the served models' classes, and the file names are ours.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .errors import UserInputError

log = logging.getLogger(__name__)

FEEDBACK_ENV = "SPORTS_CLASSIFIER_FEEDBACK"
FEEDBACK_REPO_ENV = "SPORTS_CLASSIFIER_FEEDBACK_REPO"
DEFAULT_FOLDER = "feedback"
MAX_PHOTO_BYTES = 10 * 1024**2  # the app's own upload limit
MAX_SIDE = 1024  # photos are stored at most this large (the models see 224-300 px)
MAX_RECORDS = 20_000  # then new feedback is refused: the folder must not fill the disk
PUSH_EVERY_MINUTES = 5
TOP_K = 5


@dataclass
class Record:
    id: str
    label: str
    time: str
    predictions: dict[str, list] = field(default_factory=dict)  # model -> [[label, probability], ...]
    bundles: dict[str, dict] = field(default_factory=dict)  # model -> {file: sha256}


def default_folder(env: dict | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get(FEEDBACK_ENV) or DEFAULT_FOLDER)


def safe_label(label: str) -> bool:
    """Whether ``label`` can name a folder as it is (dataset labels do; nothing else is written)."""
    return (bool(label) and label.strip() == label and label not in (".", "..")
            and not any(c in label for c in "/\\\x00") and all(c.isprintable() for c in label))


class FeedbackStore:
    """The feedback folder: ``record`` from the app, ``records`` / ``export`` from the CLI."""

    def __init__(self, folder: str | Path | None = None, *, repo_id: str | None = None):
        self.folder = Path(folder) if folder is not None else default_folder()
        self.repo_id = repo_id
        self._lock = threading.Lock()
        self._scheduler = None

    def record(self, photo: str | Path | None, label: str | None, predictions, bundles: dict[str, dict], *,
               known_labels: Iterable[str], predictions_for: str | Path | None = None) -> Record:
        """Keep one answer. ``predictions``: the app's per-model results (objects with ``name``
        and ``confidences``); ``predictions_for``, when known, the photo they were made for, which
        must be ``photo`` (in the app a new photo's answer may still be on its way). ``UserInputError``
        for no photo, predictions of another photo, an unknown label, a photo over the size cap,
        or a full folder."""
        from .images import load_rgb

        if photo is None:
            raise UserInputError("no photo: upload one, then say whether the answer was right")
        if predictions_for is not None and str(predictions_for) != str(photo):
            raise UserInputError("this photo's answer is not in yet: say whether it was right once it shows")
        if not label:
            raise UserInputError("no sport to record: pick the sport the photo shows")
        if label not in set(known_labels) or not safe_label(label):
            raise UserInputError(f"{label!r} is not one of the sports these models know")
        if Path(photo).stat().st_size > MAX_PHOTO_BYTES:
            raise UserInputError(f"the photo is over {MAX_PHOTO_BYTES // 2**20} MB")
        rgb = load_rgb(photo)
        rgb.thumbnail((MAX_SIDE, MAX_SIDE))
        top = {r.name: [[k, round(float(v), 4)] for k, v in list(r.confidences.items())[:TOP_K]]
               for r in predictions if getattr(r, "confidences", None)}
        record = Record(secrets.token_hex(8), label, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        top, bundles)
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            if sum(1 for _ in self.folder.glob("*.json")) >= MAX_RECORDS:
                raise UserInputError("the feedback folder is full; thank you all the same")
            rgb.save(self.folder / f"{record.id}.jpg", quality=92)
            (self.folder / f"{record.id}.json").write_text(json.dumps(asdict(record), indent=1) + "\n")
        self._push()
        return record

    def records(self) -> list[Record]:
        """Every record with its photo, oldest first (unreadable or unsafe ones are skipped)."""
        if not self.folder.is_dir():
            return []
        out = []
        for meta in self.folder.glob("*.json"):
            try:
                record = Record(**json.loads(meta.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("skipping %s: %s", meta, exc)
                continue
            if record.id == meta.stem and safe_label(record.label) and (self.folder / f"{record.id}.jpg").is_file():
                out.append(record)
        return sorted(out, key=lambda r: (r.time, r.id))

    def export(self, dest: str | Path, *, valid_fraction: float = 0.2) -> dict[str, dict[str, int]]:
        """Write the records as ``dest/{train,valid}/<label>/<id>.jpg``; returns the counts per
        split and label. A label's photos go to valid by a hash of their id (at least one when
        it has two or more), and never all of them: each label keeps a training photo."""
        dest = Path(dest)
        if dest.exists() and any(dest.iterdir()):
            raise UserInputError(f"{dest} is not empty: export into a new folder")
        by_label: dict[str, list[Record]] = {}
        for r in self.records():
            by_label.setdefault(r.label, []).append(r)
        if not by_label:
            raise UserInputError(f"no feedback in {self.folder}")
        counts: dict[str, dict[str, int]] = {"train": {}, "valid": {}}
        for label, records in sorted(by_label.items()):
            ranked = sorted(records, key=lambda r: hashlib.sha256(r.id.encode()).hexdigest())
            # training needs a validation split: a sport with two photos or more puts one there
            n_valid = min(max(int(len(ranked) * valid_fraction + 0.5), 1 if valid_fraction > 0 else 0),
                          len(ranked) - 1)
            for i, r in enumerate(ranked):
                split = "valid" if i < n_valid else "train"
                folder = dest / split / label
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.folder / f"{r.id}.jpg", folder / f"{r.id}.jpg")
                counts[split][label] = counts[split].get(label, 0) + 1
        return counts

    def push(self, *, token: str | None = None, timeout: float = 600) -> int:
        """Push the folder to the Hub dataset repo now, and wait (``feedback push``; the app's
        own pushes run by themselves every few minutes). Returns the number of records. Hub
        failures leave as this package's ``HubError``s, with the token scrubbed."""
        from .hub import hub_errors

        if not self.repo_id:
            raise UserInputError(f"no Hub dataset repo to push to: give --repo USER/NAME or set ${FEEDBACK_REPO_ENV}")
        records = self.records()
        if not records:
            raise UserInputError(f"no feedback in {self.folder}")
        with hub_errors(self.repo_id, token=token, action="upload", kind="dataset repo"):
            scheduler = self._start_scheduler(token)
            try:
                scheduler.trigger().result(timeout=timeout)
            finally:
                scheduler.stop()
        return len(records)

    def _push(self) -> None:
        """Start pushing the folder to the Hub dataset repo (once; huggingface_hub commits the
        changes every few minutes in its own thread)."""
        if not self.repo_id or self._scheduler is not None:
            return
        try:
            self._start_scheduler()
        except Exception as exc:  # the local copy is kept; the page must not fail for this
            log.warning("feedback is kept locally only: cannot push to %s: %s", self.repo_id, exc)
            self._scheduler = False

    def _start_scheduler(self, token: str | None = None):
        """huggingface_hub's CommitScheduler for this folder: it creates the (private) dataset
        repo if needed, pushes at once, then every PUSH_EVERY_MINUTES, and once more at exit.
        Only the records' own files are pushed: whatever else lands in the folder stays local."""
        from huggingface_hub import CommitScheduler

        if not self._scheduler:
            self._scheduler = CommitScheduler(repo_id=self.repo_id, repo_type="dataset", folder_path=self.folder,
                                              every=PUSH_EVERY_MINUTES, private=True, token=token,
                                              allow_patterns=["*.jpg", "*.json"])
        return self._scheduler


def bundle_checksums(classifiers: dict[str, object]) -> dict[str, dict]:
    """``{model: config.files_sha256}`` of loaded classifiers (which exact model answered)."""
    return {name: dict(getattr(getattr(c, "config", None), "files_sha256", None) or {})
            for name, c in classifiers.items()}


def summary_lines(records: Sequence[Record]) -> list[str]:
    """``feedback list``: one line per record, and the counts per label."""
    lines = [f"{r.time}  {r.id}  {r.label}  (models: {', '.join(r.predictions) or 'none'})" for r in records]
    counts: dict[str, int] = {}
    for r in records:
        counts[r.label] = counts.get(r.label, 0) + 1
    lines.append(f"{len(records)} record(s), {len(counts)} sport(s): "
                 + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return lines
