"""Issue 23, items 4-6: a hostile model source or Hub answer, sent through the real CLI (a
subprocess) to the loopback Hub (tests/helpers/hub_server.py) with the real huggingface_hub
client. Nothing may be written outside the Hub cache, and the CLI answers with one `error:`
line, never a traceback. Every file lives in the test's tmp folder.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers.hub_server import FakeHub
from helpers.onnx_bundle import make_onnx_bundle

REPO = "alice/tiny"


@pytest.fixture
def world(tmp_path):
    bundle_dir = make_onnx_bundle(tmp_path / "bundle")
    hub = FakeHub()
    sha = hub.add_commit(REPO, bundle_dir)
    photo = tmp_path / "work" / "photo.png"
    photo.parent.mkdir()
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(photo)
    with hub:
        yield {"hub": hub, "sha": sha, "root": tmp_path, "home": tmp_path / "deep" / "er" / "hf-home",
               "photo": photo}


def cli(world, *args, env_extra=None):
    home = world["home"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE", "SPORTS_CLASSIFIER_"))}
    env.update(HF_ENDPOINT=world["hub"].url, HF_HOME=str(home), HF_HUB_CACHE=str(home / "hub"),
               HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1", **(env_extra or {}))
    result = subprocess.run([sys.executable, "-m", "sports_classifier", *map(str, args)], env=env,
                            cwd=world["photo"].parent, capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout, result.stderr


def written_outside_cache(world) -> list[str]:
    """Files under the test's folder that neither the test nor the Hub cache owns."""
    cache, gradio = world["home"] / "hub", world["root"] / "gradio"  # the app's upload folder
    mine = {world["photo"]} | set((world["root"] / "bundle").rglob("*"))
    return sorted(str(p) for p in world["root"].rglob("*")
                  if p.is_file() and p not in mine and not p.is_relative_to(cache) and not p.is_relative_to(gradio))


def model_info(world) -> dict:
    files = world["hub"].files(REPO)
    return {"id": REPO, "modelId": REPO, "sha": world["sha"], "private": False,
            "siblings": [{"rfilename": name} for name in files]}


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and lines and lines[-1].startswith("error: "), err
    return lines[-1]


def test_a_dotdot_revision_is_refused_before_anything_is_written(world):
    # A hostile endpoint answers any revision with a real commit; huggingface_hub would then
    # store the revision's ref at refs/<revision>, i.e. four folders up from refs/.
    world["hub"].forge("GET", "/revision/", model_info(world))
    code, out, err = cli(world, "predict", "--model", f"hf:{REPO}@../../../../pwn", world["photo"])
    assert code == 1 and "bad revision '../../../../pwn'" in one_error_line(err)
    assert written_outside_cache(world) == []
    assert not any(p.name == "pwn" for p in world["root"].rglob("*"))
    # the same through --revision, and a plain request still works
    code, out, err = cli(world, "predict", "--model", f"hf:{REPO}", "--revision", "../../../../pwn", world["photo"])
    assert code == 1 and "bad revision" in one_error_line(err) and written_outside_cache(world) == []
    code, out, err = cli(world, "predict", "--model", f"hf:{REPO}", world["photo"])
    assert code == 0, err


def test_a_dotdot_revision_in_the_apps_models_variable_writes_nothing(world):
    """`python app.py` with SPORTS_CLASSIFIER_MODELS naming the revision: the app refuses the
    source at start, before its models load (which would have downloaded them)."""
    import time

    from helpers.app_server import ROOT, free_port

    world["hub"].forge("GET", "/revision/", model_info(world))
    home = world["home"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE", "SPORTS_CLASSIFIER_M"))}
    env.update(HF_ENDPOINT=world["hub"].url, HF_HOME=str(home), HF_HUB_CACHE=str(home / "hub"), HF_HUB_DISABLE_XET="1",
               SPORTS_CLASSIFIER_MODELS=f"hf:{REPO}@../../../../pwn", GRADIO_TEMP_DIR=str(world["root"] / "gradio"),
               GRADIO_ANALYTICS_ENABLED="False")
    app = os.environ.get("HSEC_APP_PY", str(ROOT / "app.py"))  # another checkout's app, to compare
    proc = subprocess.Popen([sys.executable, app, "--port", str(free_port())], env=env,
                            cwd=world["photo"].parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 90
        while proc.poll() is None and time.time() < deadline and written_outside_cache(world) == []:
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert written_outside_cache(world) == [], out[-2000:]
    assert proc.returncode not in (0, None) and "bad revision '../../../../pwn'" in out, out[-2000:]


def test_a_commit_that_is_not_a_hash_is_refused_before_anything_is_written(world):
    info = model_info(world) | {"sha": "../../../../x"}
    world["hub"].forge("GET", f"/api/models/{REPO}", info)
    code, out, err = cli(world, "predict", "--model", f"hf:{REPO}", world["photo"])
    assert code == 1 and "not a commit hash" in one_error_line(err)
    assert not any(p.name == "x.json" for p in world["root"].rglob("*"))
    assert written_outside_cache(world) == []


@pytest.mark.parametrize("headers", [{"ETag": '"../../../../../../etag-pwn"'},
                                     {"X-Repo-Commit": "../../../../commit-pwn"}], ids=["etag", "x-repo-commit"])
def test_a_file_answer_naming_a_path_is_refused_before_anything_is_written(world, headers):
    """Item 5's family: huggingface_hub also names the blob after a file's ETag and the snapshot
    after its X-Repo-Commit header (six levels up from the blobs folder is the test's folder)."""
    world["hub"].forge_headers("/resolve/", headers)
    code, out, err = cli(world, "predict", "--model", f"hf:{REPO}", world["photo"])
    assert code == 1 and "refusing to use it" in one_error_line(err)
    assert not any("pwn" in p.name for p in world["root"].rglob("*"))
    assert written_outside_cache(world) == []


@pytest.mark.parametrize("path_part, body", [
    ("/tree/", {"not": "a list"}),                   # a file listing that is not a list
    ("/tree/", [{"type": "file"}]),                  # entries without their fields
    (f"/api/models/{REPO}", ["not", "an", "object"]),  # model info that is not an object
], ids=["listing-not-a-list", "listing-entries-incomplete", "info-not-an-object"])
def test_a_malformed_hub_answer_is_one_error_line(world, path_part, body):
    world["hub"].forge("GET", path_part, body)
    code, out, err = cli(world, "predict", "--model", f"hf:{REPO}", world["photo"])
    assert code == 1 and "cannot be read" in one_error_line(err)


def test_a_missing_local_folder_is_reported_as_missing(world):
    """`--model runs/lite0` when there is no such folder: it is read as a Hub id, and the Hub
    has no such repo; the message says the folder does not exist first."""
    code, out, err = cli(world, "predict", "--model", "runs/lite0", world["photo"])
    line = one_error_line(err)
    assert code == 1 and "there is no folder runs/lite0" in line and "could not reach" not in line.split(";")[0]


@pytest.mark.parametrize("revision", ["..", "a/../b", "../x", ".hidden", "a b", "x.lock", "a\\b", "a@{1}", "",
                                      "/abs", "a//b", "a\x00", "a~1", "a:b"])
def test_revisions_that_git_would_refuse_are_refused(revision):
    from sports_classifier.errors import UserInputError
    from sports_classifier.hub import check_revision

    with pytest.raises(UserInputError, match="bad revision"):
        check_revision(revision)


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "feature/x-2", "0" * 40])
def test_ordinary_revisions_are_kept(revision):
    from sports_classifier.hub import check_revision

    assert check_revision(revision) == revision


def test_a_bundle_file_over_its_cap_is_not_even_downloaded(world, tmp_path):
    """Item 7 for a Hub repo: a 9 MB metrics.json (cap 8 MB) is refused from the repo's file
    listing, before a byte of it is fetched."""
    import json as json_

    from sports_classifier import bundle

    big = tmp_path / "big"
    big.mkdir()
    for f in (world["root"] / "bundle").iterdir():
        (big / f.name).write_bytes(f.read_bytes())
    (big / bundle.METRICS).write_text(json_.dumps({"valid": {"padding": "x" * (9 * 2**20)}}))
    world["hub"].add_commit("alice/big", big)
    code, out, err = cli(world, "predict", "--model", "hf:alice/big", world["photo"])
    assert code == 1 and "refusing to download it" in one_error_line(err)
    assert not any(p.is_file() and p.stat().st_size > 2**20 for p in (world["home"] / "hub").rglob("*"))
