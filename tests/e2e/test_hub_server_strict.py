"""The loopback Hub (tests/helpers/hub_server.py) is as strict as the Hub where tests depend on
it (issue 26): tags, preupload ``oid`` (no empty commits), repo / revision / entry not found,
each through the real ``huggingface_hub`` client; and where olah, an independent Hub mirror,
answers otherwise, the difference is named by a test below.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub import errors as hf

from helpers.hub_server import FakeHub, use_hub
from test_hub_olah import olah  # noqa: F401  (the fixture: olah serving the tiny bundle)
from sports_classifier.classifier import Classifier
from sports_classifier.hub import upload_bundle

TOKEN = "hf_WriteTokenWriteToken0123456789abcd"


@pytest.fixture
def hub(tiny_bundle, monkeypatch, tmp_path):
    fake = FakeHub()
    fake.add_token(TOKEN, write=True)
    fake.sha = fake.add_commit("alice/tiny", tiny_bundle, tags=["v1"])
    with fake:
        use_hub(monkeypatch, fake.url, tmp_path / "hf-home")
        yield fake


def test_the_docs_tag_step_works(hub, tmp_path):
    """docs/hub.md: `hf repos tag create user/repo v1.0`, then load at that tag."""
    hf_cli = Path(sys.executable).with_name("hf")
    env = os.environ | {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "cli-home"),
                        "HF_HUB_DISABLE_XET": "1"}
    done = subprocess.run([str(hf_cli), "repos", "tag", "create", "alice/tiny", "v1.0"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert hub.repos["alice/tiny"].refs["v1.0"] == hub.sha
    assert Classifier.from_hub("alice/tiny", revision="v1.0").path.name == hub.sha

    api = HfApi(token=TOKEN)
    with pytest.raises(hf.HfHubHTTPError) as exists:
        api.create_tag("alice/tiny", tag="v1.0")
    assert exists.value.response.status_code == 409
    api.create_tag("alice/tiny", tag="v1.0", exist_ok=True)
    with pytest.raises(hf.RevisionNotFoundError):
        api.create_tag("alice/tiny", tag="v9", revision="no-such-branch")
    with pytest.raises(hf.RepositoryNotFoundError):
        api.create_tag("alice/missing", tag="v9")


def test_pushing_identical_files_makes_no_commit(hub, tiny_bundle):
    upload_bundle(tiny_bundle, "alice/pushed", token=TOKEN)
    repo = hub.repos["alice/pushed"]
    head, commits = repo.refs["main"], len(repo.commits)
    upload_bundle(tiny_bundle, "alice/pushed", token=TOKEN)  # nothing changed
    assert repo.refs["main"] == head and len(repo.commits) == commits
    # what the client was told: the oid of each file already there
    commit_posts = [r for r in hub.hub_requests() if r.method == "POST" and "/commit/" in r.path]
    assert len(commit_posts) == 1


def test_a_changed_file_is_the_only_one_sent(hub, tiny_bundle, tmp_path):
    upload_bundle(tiny_bundle, "alice/pushed", token=TOKEN)
    api = HfApi(token=TOKEN)
    (tmp_path / "metrics.json").write_text('{"valid": {"accuracy": 1.0}}')
    (tmp_path / "history.csv").write_bytes((tiny_bundle / "history.csv").read_bytes())
    info = api.upload_folder(repo_id="alice/pushed", folder_path=tmp_path, allow_patterns=["*.json", "*.csv"])
    files = hub.files("alice/pushed")
    assert info.oid == hub.repos["alice/pushed"].refs["main"]
    assert files["metrics.json"] == b'{"valid": {"accuracy": 1.0}}'
    assert files["history.csv"] == (tiny_bundle / "history.csv").read_bytes()


@pytest.mark.parametrize("call", ["model_info", "list_repo_files", "hf_hub_download", "preupload"])
def test_repo_not_found_and_revision_not_found_are_told_apart(hub, call, tmp_path):
    api = HfApi(token=TOKEN)
    (tmp_path / "f.txt").write_text("x")

    def run(repo_id, revision):
        if call == "model_info":
            return api.model_info(repo_id, revision=revision)
        if call == "list_repo_files":
            return api.list_repo_files(repo_id, revision=revision)
        if call == "hf_hub_download":
            return hf_hub_download(repo_id, "config.json", revision=revision, cache_dir=tmp_path / "c")
        return api.upload_file(path_or_fileobj=tmp_path / "f.txt", path_in_repo="f.txt", repo_id=repo_id,
                               revision=revision)

    with pytest.raises(hf.RepositoryNotFoundError):
        run("alice/missing", "main")
    with pytest.raises(hf.RevisionNotFoundError):
        run("alice/tiny", "no-such-branch")
    with pytest.raises(hf.RevisionNotFoundError):
        run("alice/tiny", "0" * 40)


def test_entry_not_found(hub, tmp_path):
    api = HfApi(token=TOKEN)
    with pytest.raises(hf.RemoteEntryNotFoundError):
        hf_hub_download("alice/tiny", "no-such-file.onnx", cache_dir=tmp_path / "c")
    with pytest.raises(hf.RemoteEntryNotFoundError):
        list(api.list_repo_tree("alice/tiny", path_in_repo="no-such-folder"))
    assert not api.file_exists("alice/tiny", "no-such-file.onnx")
    assert api.file_exists("alice/tiny", "config.json")


# -- olah: where the independent mirror answers otherwise ----------------------------------------

def _probe(url: str, sha: str, tmp_path: Path) -> dict[str, str]:
    """What a server answers to each case above: the exception the client raises (with the
    HTTP status and ``X-Error-Code``), or ``ok``."""
    api = HfApi(endpoint=url, token=TOKEN)

    def outcome(fn) -> str:
        try:
            fn()
        except Exception as exc:  # the class name is the answer
            response = getattr(exc, "response", None)
            code = response.headers.get("X-Error-Code") if response is not None else None
            return f"{type(exc).__name__} ({getattr(response, 'status_code', None)}, {code})"
        return "ok"

    cache = tmp_path / "probe-cache"
    return {
        "repo not found": outcome(lambda: api.model_info("alice/missing")),
        "revision not found": outcome(lambda: api.model_info("alice/tiny", revision="no-such-branch")),
        "entry not found": outcome(lambda: hf_hub_download("alice/tiny", "no-such-file.onnx", cache_dir=cache,
                                                            endpoint=url, token=TOKEN)),
        "at a tag": outcome(lambda: api.model_info("alice/tiny", revision="v1")),
        "at a commit": outcome(lambda: api.model_info("alice/tiny", revision=sha)),
        "tag create": outcome(lambda: api.create_tag("alice/tiny", tag="v2")),
        "upload": outcome(lambda: api.upload_file(path_or_fileobj=b"x", path_in_repo="f.txt", repo_id="alice/tiny")),
    }


@pytest.mark.slow
def test_where_olah_differs(olah, hub, tmp_path):
    """The same probes against FakeHub and olah (0.5, serving a git repo offline). Where they
    differ, olah is the one that departs from the Hub: it answers an unknown revision and a
    missing file of a repo it serves as a missing *repo* (so the package's error then says
    "repo not found" where the Hub would let it say "revision" or "file"), and it is a read-only
    mirror: tag creation and uploads find no repo to write to (HTTP 404)."""
    url, sha = olah
    fake = _probe(hub.url, hub.sha, tmp_path / "fake")
    mirror = _probe(url, sha, tmp_path / "olah")
    print(f"\nFakeHub: {fake}\nolah:    {mirror}")
    assert fake == {
        "repo not found": "RepositoryNotFoundError (404, RepoNotFound)",
        "revision not found": "RevisionNotFoundError (404, RevisionNotFound)",
        "entry not found": "RemoteEntryNotFoundError (404, EntryNotFound)",
        "at a tag": "ok", "at a commit": "ok", "tag create": "ok", "upload": "ok",
    }
    kind = lambda answer: answer.split(" (")[0]  # noqa: E731  (the exception class, or ok)
    same = {k for k in fake if kind(fake[k]) == kind(mirror[k])}
    assert same == {"repo not found", "at a tag", "at a commit"}, mirror
    # difference 0: a missing repo is HTTP 401 even with a token (the Hub: 404 with a token, 401
    # without); the client raises the same RepositoryNotFoundError either way
    assert mirror["repo not found"] == "RepositoryNotFoundError (401, RepoNotFound)"
    assert kind(mirror["revision not found"]) == "RepositoryNotFoundError"  # difference 1
    assert kind(mirror["entry not found"]) == "RepositoryNotFoundError"  # difference 2
    assert kind(mirror["tag create"]) == "RepositoryNotFoundError"  # difference 3: read-only
    assert kind(mirror["upload"]) == "RepositoryNotFoundError"
