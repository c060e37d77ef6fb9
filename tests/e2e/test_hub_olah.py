"""An independent Hub-compatible server: ``olah`` (PyPI, MIT; not written for this project)
serving a bundle committed into a local git repo, offline, on 127.0.0.1.

olah serves git repos found under ``mirrors-path/<models|datasets|spaces>/<org>/<repo>`` with the
Hub's API (``/api/models/.../revision/...``, ``/tree/``, ``/resolve/``); with ``offline = true``
it never contacts huggingface.co. ``Classifier.from_hub`` then runs the real ``huggingface_hub``
client against it through ``HF_ENDPOINT``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from helpers.bundles import copy_bundle
from helpers.app_server import free_port
from helpers.hub_server import use_hub
from sports_classifier import bundle
from sports_classifier.classifier import Classifier

pytestmark = pytest.mark.slow


def _olah_cli() -> str | None:
    beside = Path(sys.executable).with_name("olah-cli")
    return str(beside) if beside.is_file() else shutil.which("olah-cli")


def _git(folder: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "HOME": str(folder), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["git", *args], cwd=folder, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def olah(tiny_bundle, tmp_path):
    cli = _olah_cli()
    if cli is None or shutil.which("git") is None:
        pytest.skip("olah-cli or git not installed (pip install 'sports_classifier[dev]')")
    repo = tmp_path / "mirrors" / "models" / "alice" / "tiny"
    copy_bundle(tiny_bundle, repo)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "bundle")
    _git(repo, "tag", "v1")
    sha = _git(repo, "rev-parse", "HEAD")
    port = free_port()  # within $SPORTS_CLASSIFIER_TEST_PORTS when set
    (tmp_path / "olah.toml").write_text(f"""[basic]
host = "127.0.0.1"
port = {port}
repos-path = "{tmp_path / 'olah-cache'}"
mirror-netloc = "127.0.0.1:{port}"
mirror-lfs-netloc = "127.0.0.1:{port}"
mirrors-path = ["{tmp_path / 'mirrors'}"]

[accessibility]
offline = true
""")
    # ``timeout``: the server stops itself even if this process dies.
    proc = subprocess.Popen(["timeout", "300", cli, "-c", str(tmp_path / "olah.toml")], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/models/alice/tiny/revision/main", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"olah did not start on {url} (exit code {proc.poll()})")
            time.sleep(0.5)
        yield url, sha
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_from_hub_through_olah(olah, tiny_bundle, monkeypatch, tmp_path):
    url, sha = olah
    use_hub(monkeypatch, url, tmp_path / "hf-home")
    rng = np.random.default_rng(5)
    images = [np.clip(rng.normal(90 + 50 * c, 30, (30, 40, 3)), 0, 255).astype(np.uint8) for c in range(3)]
    want = Classifier.from_pretrained(tiny_bundle).predict_proba(images)

    clf = Classifier.from_hub("alice/tiny")
    assert clf.path.name == sha  # the git commit olah serves is the snapshot
    assert {p.name for p in clf.path.iterdir()} == {
        n for n in bundle.serving_files(clf.config) if (tiny_bundle / n).is_file()}
    assert np.array_equal(clf.predict_proba(images), want)
    for revision in ("v1", sha):
        assert Classifier.from_hub("alice/tiny", revision=revision).path == clf.path
    # The whole bundle, byte for byte (the card included).
    from sports_classifier.hub import download_bundle

    full = download_bundle("alice/tiny")
    for name in bundle.FILES:
        if (tiny_bundle / name).is_file():
            assert (full / name).read_bytes() == (tiny_bundle / name).read_bytes(), name
