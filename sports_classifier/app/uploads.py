"""Which files an app request may name, and how much the upload cache may hold.

The Predict and Explain events take the photo without Gradio's preprocessing (so the package's
own decoder sees it), and Gradio checks a file only when the payload marks it as one: a request
``{"path": "/any/file"}`` would otherwise reach the decoder, which then answers for any file on
the server (its heat map, or "no such file" / "is a directory"). ``uploaded_file`` accepts a
path only when, resolved (links and ``..`` followed), it is a regular file inside one of the
upload folders, and gives the same answer for everything else. Nothing here imports Gradio:
``app.py`` passes Gradio's upload folder in.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import threading
import time
from collections import deque
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import UserInputError

log = logging.getLogger(__name__)

NOT_AN_UPLOAD = "this file was not uploaded to this app: upload the photo, then try again"

# The upload cache's disk budget: oldest files go first beyond it (Gradio's own cleanup only
# removes, once an hour, files this process made more than an hour ago).
CACHE_BUDGET_BYTES = 2 * 1024**3
# Requests per client address in any RATE_WINDOW seconds (predict, explain and batch together);
# $SPORTS_CLASSIFIER_RATE_LIMIT overrides it (0: no limit). Loopback clients are not limited
# (local use, load tests). Behind a proxy that does not pass the client's address on, every
# user shares the proxy's address: raise the limit there.
RATE_ENV = "SPORTS_CLASSIFIER_RATE_LIMIT"
RATE_LIMIT = 300
RATE_WINDOW = 60.0


def _path_of(value) -> str | None:
    if isinstance(value, dict):  # a FileData payload, as sent by the page or by anyone
        value = value.get("path")
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    return None


def uploaded_file(value, roots: Sequence[str | Path]) -> str | None:
    """The real path of the upload ``value`` names (a path or a ``{"path": ...}`` payload);
    None for no image. ``UserInputError(NOT_AN_UPLOAD)`` for anything that is not a regular
    file inside ``roots`` after resolving, whatever the reason (no oracle for other paths)."""
    if value is None:
        return None
    text = _path_of(value)
    if not text or "\x00" in text:
        raise UserInputError(NOT_AN_UPLOAD)
    try:
        real = Path(text).resolve(strict=True)
        homes = [Path(r).resolve() for r in roots]
        ok = any(real.is_relative_to(h) and real != h for h in homes) and real.is_file()
    except (OSError, RuntimeError, ValueError):
        ok = False
    if not ok:
        raise UserInputError(NOT_AN_UPLOAD)
    return str(real)


def uploaded_files(values: Iterable | None, roots: Sequence[str | Path]) -> list[str]:
    """``uploaded_file`` for each of several (the Batch tab)."""
    return [p for p in (uploaded_file(v, roots) for v in (values or [])) if p is not None]


def prune_cache(root: str | Path, *, max_bytes: int = CACHE_BUDGET_BYTES, max_age: float | None = None) -> int:
    """Delete files under ``root`` older than ``max_age`` seconds, then the oldest ones until
    the rest fit in ``max_bytes``; return the bytes freed. Empty folders left behind go too.
    Called at start-up (files of earlier runs) and before each upload-handling request."""
    root = Path(root)
    if not root.is_dir():
        return 0
    files = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            files.append((st.st_mtime, st.st_size, path))
    files.sort()
    total = sum(size for _, size, _ in files)
    cutoff = None if max_age is None else time.time() - max_age
    freed = 0
    for mtime, size, path in files:
        if total <= max_bytes and (cutoff is None or mtime >= cutoff):
            break
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
        freed += size
    for dirpath, dirs, names in os.walk(root, topdown=False):
        if Path(dirpath) != root and not dirs and not names:
            shutil.rmtree(dirpath, ignore_errors=True)
    if freed:
        log.info("upload cache %s: freed %.1f MB", root, freed / 2**20)
    return freed


class RateLimiter:
    """At most ``limit`` calls per ``window`` seconds for each key (a client's address)."""

    def __init__(self, limit: int | None = None, window: float = RATE_WINDOW, *, clock=time.monotonic,
                 exempt_loopback: bool = True):
        if limit is None:
            limit = int(os.environ.get(RATE_ENV) or RATE_LIMIT)
        self.limit, self.window, self._clock = limit, window, clock
        self.exempt_loopback = exempt_loopback
        self._calls: dict[str, deque] = {}
        self._lock = threading.Lock()

    def check(self, key: str | None) -> None:
        """Record one call by ``key``; ``UserInputError`` when it is over the limit."""
        if self.limit <= 0 or (self.exempt_loopback and _is_loopback(key)):
            return
        now = self._clock()
        with self._lock:
            calls = self._calls.setdefault(key or "?", deque())
            while calls and calls[0] <= now - self.window:
                calls.popleft()
            if len(calls) >= self.limit:
                raise UserInputError(f"too many requests: at most {self.limit} per {self.window:.0f} s; "
                                     "wait a little and try again")
            calls.append(now)
            if len(self._calls) > 10_000:  # forget idle clients
                for k in [k for k, q in self._calls.items() if not q or q[-1] <= now - self.window]:
                    del self._calls[k]


def _is_loopback(host: str | None) -> bool:
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False
