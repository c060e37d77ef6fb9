"""What the app may hand to Gradio to serve, how long its own files live, and who is admitted.

Three policies that every tab shares, kept apart from the page layout in ``app.py``:

- ``servable``: Gradio sends only files under the working folder, the temp folder or its
  ``allowed_paths``. A bundle's pictures may live elsewhere (the Hub cache), so they are copied
  into the temp folder first, under a name made from their path's hash.
- ``prune``: the grids and CSVs the app writes for a request are deleted once they are older
  than Gradio's cache lifetime (Gradio serves its own copy of a returned file).
- ``Admission``: each request that decodes a client's file first passes the per-client rate
  limit, and keeps the upload cache within its disk budget (``uploads``).

Nothing here imports Gradio: ``app.py`` passes the client's address and the folders in.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

from . import uploads

# Copies of pictures that live outside the served folders (e.g. the Hub cache).
PICTURE_COPIES = Path(tempfile.gettempdir()) / "sports-classifier-pictures"
# How old (seconds) a file the app wrote may get: Gradio's own cache lifetime (delete_cache).
MAX_AGE = 3600
# The upload cache is walked at most this often (seconds): it may hold many files.
PRUNE_EVERY = 30.0


def servable(items: Iterable[tuple[str, str]], homes: Sequence[str | Path],
             copies: Path = PICTURE_COPIES) -> list[tuple[str, str]]:
    """``(path, caption)`` pairs with every path inside ``homes`` (the folders Gradio serves);
    a file elsewhere is copied into ``copies`` once and that copy is named instead."""
    roots = [Path(h).resolve() for h in homes]
    out = []
    for path, caption in items:
        p = Path(path).resolve()
        if not any(p.is_relative_to(r) for r in roots):
            digest = hashlib.sha256(str(p).encode()).hexdigest()[:16]
            dest = copies / f"{digest}-{p.name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                shutil.copyfile(p, dest)
            p = dest
        out.append((str(p), caption))
    return out


def servable_paths(paths: Iterable[str | None], homes: Sequence[str | Path],
                   copies: Path = PICTURE_COPIES) -> list[str | None]:
    """``servable`` for single optional paths (None stays None)."""
    return [servable([(p, "")], homes, copies)[0][0] if p else None for p in paths]


def prune(folder: Path, max_age: float = MAX_AGE) -> None:
    """Delete what the app wrote into ``folder`` more than ``max_age`` seconds ago."""
    if not folder.is_dir():
        return
    cutoff = time.time() - max_age
    for path in folder.iterdir():
        try:
            if path.stat().st_mtime < cutoff:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        except OSError:  # another request pruned it first
            pass


class Admission:
    """The check before a request that decodes a client's file: the client's request rate,
    then the upload cache kept within its disk budget (walked at most every ``prune_every`` s)."""

    def __init__(self, upload_folder: str | Path, limiter: uploads.RateLimiter | None = None, *,
                 prune_every: float = PRUNE_EVERY, clock=time.time):
        self.upload_folder = Path(upload_folder)
        self.limiter = limiter or uploads.RateLimiter()
        self.prune_every, self._clock = prune_every, clock
        self._last_prune = float("-inf")
        self._lock = threading.Lock()

    def admit(self, client: str | None, cost: int = 1) -> None:
        """``UserInputError`` when ``client`` (an address) is over its rate limit; ``cost``: what
        the request counts for (``uploads.COSTS``)."""
        self.limiter.check(client, cost)
        with self._lock:
            due = self._clock() - self._last_prune > self.prune_every
            if due:
                self._last_prune = self._clock()
        if due:
            uploads.prune_cache(self.upload_folder)
