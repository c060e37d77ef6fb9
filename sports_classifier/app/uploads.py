"""Which files an app request may name, how much the upload cache may hold, and how much a
client may ask for (``RateLimiter``; ``UploadGuard`` in front of Gradio's upload route).

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
import json
import logging
import os
import shutil
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import UserInputError

log = logging.getLogger(__name__)

NOT_AN_UPLOAD = "this file was not uploaded to this app: upload the photo, then try again"

# The upload cache's disk budget, enforced when an upload arrives (``UploadGuard``): the oldest
# files go first, and an upload that still does not fit is refused. Gradio's own cleanup only
# removes, once an hour, files this process made more than an hour ago.
# $SPORTS_CLASSIFIER_UPLOAD_BUDGET_MB overrides it.
BUDGET_ENV = "SPORTS_CLASSIFIER_UPLOAD_BUDGET_MB"
CACHE_BUDGET_BYTES = 2 * 1024**3
# Files younger than this are never pruned to make room: a request may be reading them.
IN_USE_SECONDS = 60.0
# One upload request (the Batch tab sends all its files in one) carries at most this much;
# Gradio's max_file_size bounds each file, not their number.
MAX_UPLOAD_REQUEST_BYTES = 100 * 1024**2
# Cost units per client in any RATE_WINDOW seconds, every endpoint counted by what it costs
# (``COSTS``); $SPORTS_CLASSIFIER_RATE_LIMIT overrides the limit (0: no limit). Loopback is
# counted like any address: a proxy on the same host is a client too. IPv6 clients are counted
# per /64 (one host usually holds a whole /64). Behind a proxy that does not pass the client's
# address on, every user shares the proxy's address: raise the limit there.
RATE_ENV = "SPORTS_CLASSIFIER_RATE_LIMIT"
RATE_LIMIT = 300
RATE_WINDOW = 60.0
COSTS = {"predict": 1, "explain": 2, "feedback": 1, "upload": 1, "mistakes": 1, "compare": 5,
         "compare_details": 5, "grid": 20}  # grid: 20 example photos; batch: one per file


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
    return _prune(root, max_bytes, max_age)[0]


def _prune(root: str | Path, max_bytes: int, max_age: float | None, *,
           keep_newer_than: float | None = None) -> tuple[int, int]:
    """``prune_cache``'s work: (bytes freed, bytes left). Files modified after
    ``keep_newer_than`` (a time) are never deleted."""
    root = Path(root)
    if not root.is_dir():
        return 0, 0
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
        if keep_newer_than is not None and mtime > keep_newer_than:
            break  # sorted by age: every file left is newer still
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
    return freed, total


class RateLimiter:
    """At most ``limit`` cost units per ``window`` seconds for each client (``client_key``).

    The clients are kept in order of their last call, so forgetting idle ones looks at those
    only, never at every client."""

    MAX_CLIENTS = 100_000

    def __init__(self, limit: int | None = None, window: float = RATE_WINDOW, *, clock=time.monotonic):
        if limit is None:
            limit = int(os.environ.get(RATE_ENV) or RATE_LIMIT)
        self.limit, self.window, self._clock = limit, window, clock
        self._calls: OrderedDict[str, deque] = OrderedDict()  # key -> (time, cost) pairs
        self._lock = threading.Lock()

    def check(self, address: str | None, cost: int = 1) -> None:
        """Record a call costing ``cost`` units by ``address``; ``UserInputError`` when it would
        take the client over its limit (then nothing is recorded)."""
        if self.limit <= 0:
            return
        now, key = self._clock(), client_key(address)
        with self._lock:
            self._forget_idle(now)
            calls = self._calls.pop(key, None) or deque()
            self._calls[key] = calls  # now the most recent
            while calls and calls[0][0] <= now - self.window:
                calls.popleft()
            if sum(c for _, c in calls) + cost > self.limit:
                raise UserInputError(f"too many requests: at most {self.limit} per {self.window:.0f} s "
                                     "(a grid or a Compare view counts as several); wait a little and try again")
            calls.append((now, cost))

    def _forget_idle(self, now: float) -> None:
        while self._calls:
            key, calls = next(iter(self._calls.items()))
            if len(self._calls) <= self.MAX_CLIENTS and calls and calls[-1][0] > now - self.window:
                break
            del self._calls[key]


def client_key(address: str | None) -> str:
    """What the rate limit counts: an IPv4 address, an IPv6 /64 network (an IPv4-mapped IPv6
    address as its IPv4 one); anything else as it is."""
    try:
        ip = ipaddress.ip_address((address or "").split("%", 1)[0])
    except ValueError:
        return address or "?"
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class UploadBudget:
    """The upload cache's disk budget, enforced when an upload arrives: ``reserve(n)`` makes
    room for ``n`` bytes (deleting the oldest files not in use) or raises ``UserInputError``."""

    def __init__(self, root: str | Path, max_bytes: int | None = None, *, rescan_every: float = 30.0,
                 in_use_seconds: float = IN_USE_SECONDS, clock=time.time):
        if max_bytes is None:
            env = os.environ.get(BUDGET_ENV)
            max_bytes = int(float(env) * 2**20) if env else CACHE_BUDGET_BYTES
        self.root, self.max_bytes = Path(root), max_bytes
        self.rescan_every, self.in_use_seconds, self._clock = rescan_every, in_use_seconds, clock
        self._used: int | None = None  # bytes in the folder at the last scan, plus uploads since
        self._scanned = float("-inf")
        self._lock = threading.Lock()

    def reserve(self, nbytes: int) -> None:
        with self._lock:
            now = self._clock()
            if self._used is None or now - self._scanned > self.rescan_every or self._used + nbytes > self.max_bytes:
                _, self._used = _prune(self.root, max(0, self.max_bytes - nbytes), None,
                                       keep_newer_than=now - self.in_use_seconds)
                self._scanned = now
            if self._used + nbytes > self.max_bytes:
                raise UserInputError(f"the server's upload space is full ({self.max_bytes / 2**20:.0f} MB): "
                                     "try again in a minute")
            self._used += nbytes


class UploadGuard:
    """ASGI middleware in front of Gradio's upload route (``/gradio_api/upload``), which accepts
    files before any handler of the app runs: each upload request is counted by the client's
    rate limit, bounded in size (``MAX_UPLOAD_REQUEST_BYTES``) and must fit the cache budget,
    all checked from its headers, before a byte of its body is read."""

    def __init__(self, app, *, limiter: RateLimiter, budget: UploadBudget,
                 max_request_bytes: int = MAX_UPLOAD_REQUEST_BYTES, client=None):
        self.app, self.limiter, self.budget, self.max_request_bytes = app, limiter, budget, max_request_bytes
        self.client = client  # request -> the key the rate limit counts (client_address.ClientAddress)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope.get("path", "").endswith(
                "/gradio_api/upload"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"").decode("latin-1").strip()
        if not length.isdigit():
            return await _refuse(send, 411, "an upload must say its size (Content-Length)")
        if int(length) > self.max_request_bytes:  # refused unread: the connection closes
            return await _refuse(send, 413, f"one upload may carry at most {self.max_request_bytes // 2**20} MB "
                                            "in all: send fewer files at once")
        try:
            if self.client is not None:  # behind a known proxy: the forwarded client address
                from starlette.requests import Request

                key = self.client(Request(scope))
            else:
                key = (scope.get("client") or (None,))[0]
            self.limiter.check(key, COSTS["upload"])
            self.budget.reserve(int(length))
        except UserInputError as exc:
            # read (and drop) the body, at most max_request_bytes, so the client gets the answer
            await _drain(receive)
            return await _refuse(send, 429 if "too many" in str(exc) else 507, str(exc))
        return await self.app(scope, receive, send)


async def _drain(receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message, "detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
