"""The app's file-serving policy (sports_classifier.app.served_files), without Gradio or app.py."""

from __future__ import annotations

import os
import time

import pytest

from sports_classifier.app import served_files, uploads
from sports_classifier.errors import UserInputError


def test_files_the_app_wrote_are_pruned_after_max_age(tmp_path):
    old_file, new_file, old_dir = tmp_path / "grid-old.png", tmp_path / "grid-new.png", tmp_path / "batch-old"
    old_file.write_bytes(b"x")
    new_file.write_bytes(b"x")
    old_dir.mkdir()
    (old_dir / "predictions.csv").write_text("path\n")
    two_hours_ago = time.time() - 7200
    for path in (old_file, old_dir):
        os.utime(path, (two_hours_ago, two_hours_ago))
    served_files.prune(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid-new.png"]
    served_files.prune(tmp_path / "missing")  # nothing written yet: nothing to do


def test_servable_keeps_files_inside_homes_and_copies_the_rest(tmp_path):
    home, elsewhere, copies = tmp_path / "home", tmp_path / "hub-cache", tmp_path / "copies"
    home.mkdir()
    elsewhere.mkdir()
    inside, outside = home / "a.png", elsewhere / "b.png"
    inside.write_bytes(b"inside")
    outside.write_bytes(b"outside")

    served = served_files.servable([(str(inside), "A"), (str(outside), "B")], [home], copies)
    assert served[0] == (str(inside.resolve()), "A")
    copy, caption = served[1]
    assert caption == "B" and os.path.dirname(copy) == str(copies) and copy.endswith("-b.png")
    assert open(copy, "rb").read() == b"outside"
    # the same file again: the same copy, not a second one
    assert served_files.servable([(str(outside), "B")], [home], copies) == [served[1]]
    assert len(list(copies.iterdir())) == 1


def test_servable_paths_keeps_none(tmp_path):
    (tmp_path / "c.png").write_bytes(b"c")
    assert served_files.servable_paths([None, str(tmp_path / "c.png")], [tmp_path]) == [
        None, str((tmp_path / "c.png").resolve())]


def test_admission_applies_the_rate_limit_and_prunes_at_most_every_interval(tmp_path, monkeypatch):
    pruned = []
    monkeypatch.setattr(uploads, "prune_cache", lambda folder: pruned.append(folder))
    now = [1000.0]
    admission = served_files.Admission(tmp_path, uploads.RateLimiter(limit=2, window=60), prune_every=30,
                                       clock=lambda: now[0])
    admission.admit("203.0.113.5")
    admission.admit("203.0.113.5")
    assert pruned == [tmp_path]  # once, not on every request
    with pytest.raises(UserInputError, match="too many requests"):
        admission.admit("203.0.113.5")
    admission.admit("203.0.113.6")  # another client has its own budget
    now[0] += 31
    admission.admit("203.0.113.7")
    assert pruned == [tmp_path, tmp_path]
