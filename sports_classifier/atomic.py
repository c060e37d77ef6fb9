"""Atomic file writes: the one way the package replaces a file.

The new content is written to a private temporary file beside the destination, which then
takes the destination's place in one ``os.replace``: a crash leaves the old file or the new
one, never half of one, and an error leaves no temporary behind. The temporary is made by
``mkstemp`` (an unpredictable name, created exclusively), so a link planted in a shared folder
under a name the writer would use is never written through. Its name keeps the destination's
suffixes (``.tmp-<random>-model.weights.h5``): some writers insist on them (Keras' ``.weights.h5``,
NumPy's ``.npy``). Folders that are replaced whole (a bundle, a checkpoint) are ``bundle.py``'s.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# mkstemp creates files readable by the owner only; the written file gets the mode an ordinary
# write would have given it (0666 less the umask), read once: os.umask can only be read by setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def atomic_path(dest: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """A temporary path to write ``dest``'s new content to; on leaving the block it replaces
    ``dest`` (or, on an exception, is removed).

    Raises ``IsADirectoryError`` when ``dest`` is a folder and, with ``overwrite=False``,
    ``FileExistsError`` when it exists, both before anything is written.

    >>> with atomic_path("out.parquet") as tmp:
    ...     frame.to_parquet(tmp)
    """
    dest = Path(dest)
    _check_destination(dest, overwrite)
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{dest.name}", dir=dest.parent or ".")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        _check_destination(dest, overwrite)  # it may have appeared while the content was written
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_destination(dest: Path, overwrite: bool) -> None:
    if dest.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(dest))
    if not overwrite and (dest.exists() or dest.is_symlink()):
        raise FileExistsError(errno.EEXIST, "already exists", str(dest))


def write_bytes(dest: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    with atomic_path(dest, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text(dest: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    with atomic_path(dest, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def write_json(dest: str | os.PathLike, data, *, indent: int | None = 2) -> Path:
    """``data`` as UTF-8 JSON (non-ASCII kept as is), one trailing newline."""
    return write_text(dest, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")
