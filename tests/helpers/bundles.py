"""Copies of bundles for tests: as they are, or rewritten with files left out or replaced.

Tests change their copy, never the original (a committed fixture, a session's trained bundle or
models/). ``rewrite_bundle`` writes through ``bundle.write_bundle``, so config.json's checksums and
the model card match the files that are there: what a broken export, or an attacker who can
also edit config.json, would produce.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def copy_bundle(src: str | Path, dest: str | Path) -> Path:
    """A byte-for-byte copy of the bundle folder ``src`` at ``dest`` (which must not exist)."""
    shutil.copytree(src, dest)
    return Path(dest)


def rewrite_bundle(src: str | Path, dest: str | Path, *, drop=(), replace: dict | None = None) -> Path:
    """``src`` written anew at ``dest``: without the files in ``drop``, with ``replace``'s files
    (name -> writer, as ``bundle.write_bundle`` takes them: ``bundle.copy_from(path)``, or a
    function of the destination path), checksums and card recomputed."""
    from sports_classifier import bundle

    src = Path(src)
    writers = {name: bundle.copy_from(src / name) for name in bundle.FILES
               if name not in (bundle.CONFIG, bundle.CARD, *drop) and (src / name).is_file()}
    writers.update(replace or {})
    return bundle.write_bundle(dest, bundle.read_config(src), writers)
