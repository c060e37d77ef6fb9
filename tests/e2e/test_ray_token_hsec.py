"""Issue 23, item 13: the token of a Ray cluster that ``--engine ray`` starts itself is readable
by its owner only, and docs/scale.md says where that cluster listens.

A real local cluster (one CPU) in a child process whose HOME is the test's folder, without the
test session's own RAY_AUTH_* (tests/conftest.py): Ray's default token path, as a user has it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, os, ray
from sports_classifier.distributed.cluster import connect
connect(None, num_cpus=1)
token = os.path.expanduser("~/.ray/auth_token")
print(json.dumps({"mode": os.stat(token).st_mode & 0o777, "gcs": ray.get_runtime_context().gcs_address}))
ray.shutdown()
"""


def test_a_local_cluster_keeps_its_token_private(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    ray_tmp = tempfile.mkdtemp(prefix="hsec-ray-", dir="/tmp")  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(HOME=str(home), RAY_TMPDIR=ray_tmp)
    try:
        result = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=180)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert oct(report["mode"]) == oct(0o600)  # Ray alone writes it 0644
    assert oct((home / ".ray").stat().st_mode & 0o777) == oct(0o700)
    # docs/scale.md says what is measured here: the GCS is not on 127.0.0.1
    host = report["gcs"].rsplit(":", 1)[0]
    scale = (ROOT / "docs" / "scale.md").read_text()
    assert "advertises 127.0.0.1" not in scale
    if host != "127.0.0.1":
        assert "replaces 127.0.0.1 by the machine's" in scale


def test_an_existing_world_readable_token_is_tightened(tmp_path, monkeypatch):
    from sports_classifier.distributed.cluster import private_token_file

    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(key, raising=False)
    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("abc")
    token.chmod(0o644)
    assert private_token_file(tmp_path) == token
    assert oct(token.stat().st_mode & 0o777) == oct(0o600) and token.read_text() == "abc"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-the-environment")
    assert private_token_file(tmp_path / "other") is None and not (tmp_path / "other").exists()
