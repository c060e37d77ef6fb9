"""Feedback pushed to a Hub dataset repo (issue 24), over HTTP with the real huggingface_hub client.

The app's FeedbackStore starts huggingface_hub's own CommitScheduler at the first record; here it
talks to FakeHub (tests/helpers/hub_server.py) on 127.0.0.1. What arrives is read back with
``snapshot_download`` and exported as a dataset folder, as a maintainer would do it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image

from helpers.cli import run_cli
from helpers.hub_server import FakeHub, use_hub
from sports_classifier import feedback

TOKEN = "hf_WriteTokenWriteToken0123456789abcd"
READ_ONLY = "hf_ReadOnlyReadOnly0123456789abcdefg"
REPO = "alice/sports-feedback"
KEY = f"datasets/{REPO}"  # where FakeHub keeps a dataset repo
LABELS = ["golf", "polo"]


@pytest.fixture
def hub(monkeypatch, tmp_path):
    fake = FakeHub()
    fake.add_token(TOKEN, write=True)
    fake.add_token(READ_ONLY, write=False)
    with fake:
        use_hub(monkeypatch, fake.url, tmp_path / "hf-home")
        yield fake


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "upload.png"
    Image.new("RGB", (64, 48), (30, 160, 60)).save(path)
    return path


def wait_for_files(hub: FakeHub, count: int, seconds: float = 30) -> dict[str, bytes]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if KEY in hub.repos:
            files = {k: v for k, v in hub.files(KEY).items() if k != ".gitattributes"}
            if len(files) >= count:
                return files
        time.sleep(0.1)
    raise AssertionError(f"the Hub did not receive {count} file(s) in {seconds} s")


def test_the_app_pushes_feedback_by_itself_and_the_cli_pushes_the_rest(hub, photo, tmp_path, monkeypatch):
    from huggingface_hub import snapshot_download

    monkeypatch.setenv("HF_TOKEN", TOKEN)  # how a Space holds its write token (a secret)
    folder = tmp_path / "feedback"
    store = feedback.FeedbackStore(folder, repo_id=REPO)  # as app.py makes it
    first = store.record(photo, "golf", [], {}, known_labels=LABELS)
    # The scheduler's first push runs at once, in its own thread: the photo and its record.
    pushed = wait_for_files(hub, 2)
    assert pushed == {f"{first.id}.jpg": (folder / f"{first.id}.jpg").read_bytes(),
                      f"{first.id}.json": (folder / f"{first.id}.json").read_bytes()}
    assert hub.repos[KEY].token == TOKEN  # created private: the photos are users' own
    store._scheduler.stop()  # the next scheduled push is minutes away; the CLI pushes the rest

    (folder / "notes.txt").write_text("the maintainer's own notes: not feedback")
    second = store.record(photo, "polo", [], {}, known_labels=LABELS)
    monkeypatch.delenv("HF_TOKEN")
    code, out, err = run_cli("feedback", "push", "--dir", folder, "--repo", REPO, "--token", TOKEN)
    assert (code, err) == (0, ""), err
    assert out.strip() == f"pushed 2 record(s) from {folder} to the Hub dataset repo {REPO}"
    files = {k for k in hub.files(KEY) if k != ".gitattributes"}
    assert files == {f"{r.id}.{ext}" for r in (first, second) for ext in ("jpg", "json")}  # no notes.txt

    # A maintainer reads the repo back and exports it as a dataset folder that train accepts.
    local = Path(snapshot_download(REPO, repo_type="dataset", token=TOKEN, local_dir=tmp_path / "pulled"))
    code, out, err = run_cli("feedback", "export", "--dir", local, "--out", tmp_path / "dataset")
    assert code == 0, err
    assert sorted(p.relative_to(tmp_path / "dataset").as_posix() for p in (tmp_path / "dataset").rglob("*.jpg")) == [
        f"train/golf/{first.id}.jpg", f"train/polo/{second.id}.jpg"]


def test_pushing_feedback_fails_with_one_clear_line(hub, photo, tmp_path, monkeypatch):
    folder = tmp_path / "feedback"
    code, _, err = run_cli("feedback", "push", "--dir", folder, "--repo", REPO, "--token", TOKEN)
    assert (code, err.strip()) == (1, f"error: no feedback in {folder}")
    feedback.FeedbackStore(folder).record(photo, "golf", [], {}, known_labels=LABELS)
    monkeypatch.delenv(feedback.FEEDBACK_REPO_ENV, raising=False)
    code, _, err = run_cli("feedback", "push", "--dir", folder)
    assert code == 1 and "no Hub dataset repo to push to" in err
    code, _, err = run_cli("feedback", "push", "--dir", folder, "--repo", REPO, "--token", READ_ONLY)
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: ")
    assert READ_ONLY not in err and KEY not in hub.repos
    # In the app a Hub that refuses leaves the feedback local, and the page answers.
    store = feedback.FeedbackStore(tmp_path / "app-feedback", repo_id=REPO)
    monkeypatch.setenv("HF_TOKEN", READ_ONLY)
    store.record(photo, "polo", [], {}, known_labels=LABELS)
    assert len(store.records()) == 1 and store._scheduler is False and KEY not in hub.repos
