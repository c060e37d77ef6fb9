"""Push, pull and the Space over HTTP with the real ``huggingface_hub`` client (issue 13).

``FakeHub`` (tests/helpers/hub_server.py) speaks the Hub's download and upload protocols on
127.0.0.1 (plain HTTP uploads: Xet off), so ``push_to_hub``, ``sports-classifier space --push``
and every download below run the library's own code end to end; pushed files are read back with
``snapshot_download`` and the models they make predict like the local bundle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from helpers.bundles import copy_bundle, rewrite_bundle
from helpers.cli import run_cli
from helpers.hub_server import FakeHub, use_hub
from sports_classifier import bundle
from sports_classifier.classifier import Classifier
from sports_classifier.errors import (HubAuthError, HubCardConflictError, HubError, HubNotFoundError,
                                      HubUnavailableError, UserInputError)
from sports_classifier.card import is_generated_card
from sports_classifier.hub import download_bundle, parse_model_source, upload_bundle
from sports_classifier.space import MODELS_ENV, SPACE_CONFIG, prepare_space, push_space

TOKEN = "hf_WriteTokenWriteToken0123456789abcd"
READ_ONLY = "hf_ReadOnlyReadOnly0123456789abcdefg"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [np.clip(rng.normal(100 + 40 * c, 30, (36, 44, 3)), 0, 255).astype(np.uint8) for c in range(3)]


@pytest.fixture(scope="module")
def int8_bundle(tiny_bundle, tmp_path_factory) -> Path:
    """The tiny bundle with a model.int8.onnx (a copy of the float model: what is served, not
    how it was quantised, matters here)."""
    return rewrite_bundle(tiny_bundle, tmp_path_factory.mktemp("int8") / "bundle",
                          replace={bundle.ONNX_INT8: bundle.copy_from(tiny_bundle / bundle.ONNX)})


@pytest.fixture
def hub(tiny_bundle, int8_bundle, monkeypatch, tmp_path):
    fake = FakeHub()
    fake.add_token(TOKEN, write=True)
    fake.add_token(READ_ONLY, write=False)
    fake.shas = {"tiny": fake.add_commit("alice/tiny", tiny_bundle, tags=["v1"]),
                 "int8": fake.add_commit("alice/int8", int8_bundle)}
    with fake:
        use_hub(monkeypatch, fake.url, tmp_path / "hf-home")
        yield fake


def hub_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


# ---------------------------------------------------------------------------------------------
# Uploads over HTTP


def test_push_to_hub_over_http_and_read_back(hub, tiny_bundle, images):
    from huggingface_hub import snapshot_download

    local = Classifier.from_pretrained(tiny_bundle)
    url = local.push_to_hub("alice/pushed", token=TOKEN, private=True, commit_message="first")
    sha = hub.repos["alice/pushed"].refs["main"]
    assert url == f"{hub.url}/alice/pushed/commit/{sha}"
    posted = [r.path for r in hub.requests if r.method == "POST"]
    assert "/api/validate-yaml" in posted  # the client checked the card's front matter
    assert [p for p in posted if p != "/api/validate-yaml"] == [
        "/api/repos/create", "/api/models/alice/pushed/preupload/main", "/api/models/alice/pushed/commit/main"]
    # Read back with the real client: the same bytes, and a private repo needs the token.
    folder = Path(snapshot_download("alice/pushed", token=TOKEN))
    sent = {n: d for n, d in hub_files(folder).items() if n != ".gitattributes"}
    card = sent.pop(bundle.CARD).decode()  # the card, with the repo's id in its snippets (issue 26)
    assert sent == {n: (tiny_bundle / n).read_bytes() for n in bundle.FILES
                    if (tiny_bundle / n).is_file() and n != bundle.CARD}
    assert 'Classifier.from_pretrained("alice/pushed")' in card and "user/repo" not in card
    with pytest.raises(HubNotFoundError, match="not found"):
        download_bundle("alice/pushed", cache_dir=hub_cache_other(folder))
    pulled = Classifier.from_hub("alice/pushed", token=TOKEN)
    assert np.array_equal(pulled.predict_proba(images), local.predict_proba(images))

    # A second push to a branch with a smaller bundle: stale bundle files go in the same commit.
    smaller = hub_cache_other(folder).parent / "smaller"
    copy_bundle(tiny_bundle, smaller)
    (smaller / bundle.SAMPLES).unlink()
    upload_bundle(smaller, "alice/pushed", token=TOKEN, revision="dev")
    assert bundle.SAMPLES not in hub.files("alice/pushed", "dev")
    assert bundle.SAMPLES in hub.files("alice/pushed", "main")


def hub_cache_other(folder: Path) -> Path:
    return folder.parents[4] / "other-cache"


def test_push_errors_on_the_wire(hub, tiny_bundle):
    with pytest.raises(HubAuthError, match="no write access to model repo 'alice/x' .*HTTP 403") as exc:
        upload_bundle(tiny_bundle, "alice/x", token=READ_ONLY)
    assert READ_ONLY not in str(exc.value)
    with pytest.raises(HubAuthError, match=r"rejected the token .*HTTP 401.*--token"):
        upload_bundle(tiny_bundle, "alice/x", token="hf_UnknownUnknownUnknown0123456789")
    hub.fail("POST", "/commit/", 500)
    with pytest.raises(HubUnavailableError, match="HTTP 500.*nothing was committed"):
        upload_bundle(tiny_bundle, "alice/x", token=TOKEN)
    assert list(hub.files("alice/x")) == [".gitattributes"]


def test_push_keeps_a_hand_edited_card_unless_asked(hub, tiny_bundle, tmp_path):
    upload_bundle(tiny_bundle, "alice/card", token=TOKEN)
    generated = hub.files("alice/card")[bundle.CARD]  # the bundle's card, the repo's id in it (issue 26)
    assert is_generated_card(generated.decode()) and b'from_pretrained("alice/card")' in generated
    upload_bundle(tiny_bundle, "alice/card", token=TOKEN)  # our own card is replaced freely
    edited = generated.replace(b"## Metrics", b"## Metrics\n\nMeasured by hand on my photos: 91%.\n")
    hub.commit_files("alice/card", {bundle.CARD: edited})
    before = hub.repos["alice/card"].refs["main"]

    with pytest.raises(HubCardConflictError, match="edited by hand.*--keep-card.*--overwrite-card"):
        upload_bundle(tiny_bundle, "alice/card", token=TOKEN)
    code, _, err = run_cli("push", "--model", tiny_bundle, "--repo", "alice/card", "--token", TOKEN)
    assert code == 1 and "--keep-card" in err and TOKEN not in err
    assert hub.repos["alice/card"].refs["main"] == before  # nothing was committed

    newer = tmp_path / "newer"
    copy_bundle(tiny_bundle, newer)
    (newer / bundle.SAMPLES).unlink()
    code, _, err = run_cli("push", "--model", newer, "--repo", "alice/card", "--token", TOKEN, "--keep-card")
    assert code == 0, err
    files = hub.files("alice/card")
    assert files[bundle.CARD] == edited and bundle.SAMPLES not in files
    code, _, err = run_cli("push", "--model", tiny_bundle, "--repo", "alice/card", "--token", TOKEN,
                           "--overwrite-card")
    assert code == 0, err
    assert hub.files("alice/card")[bundle.CARD] == generated


# ---------------------------------------------------------------------------------------------
# Downloads: what an HTTP error answer means


@pytest.mark.parametrize("status, error, message", [
    (403, HubAuthError, r"access to 'alice/tiny' at revision '.*' denied \(HTTP 403\)"),
    (500, HubUnavailableError, r"server error \(HTTP 500\)"),
    (503, HubUnavailableError, r"server error \(HTTP 503\)"),
    (429, HubUnavailableError, r"rate-limiting"),
    (404, HubNotFoundError, r"has no 'alice/tiny' at revision '.*' \(HTTP 404\)"),
])
def test_http_errors_behind_local_entry_not_found(hub, status, error, message, monkeypatch):
    """``snapshot_download`` wraps these answers in ``LocalEntryNotFoundError`` when nothing is
    cached; the cause decides the message, not "check the network"."""
    import huggingface_hub.utils._http as hf_http
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    monkeypatch.setattr(hf_http.time, "sleep", lambda s: None)  # the client's back-off on 429 / 5xx
    unknown = "f" * 40  # a full commit hash: the client asks for its file listing directly
    hub.fail("GET", "/tree/", status, times=10)
    with pytest.raises((LocalEntryNotFoundError, HfHubHTTPError)) as raw:
        snapshot_download("alice/tiny", revision=unknown)
    if isinstance(raw.value, LocalEntryNotFoundError):  # huggingface_hub 2.4; 2.0 raises the HTTP error itself
        assert isinstance(raw.value.__cause__, HfHubHTTPError)
        assert raw.value.__cause__.response.status_code == status
    hub.failures.clear()
    hub.fail("GET", "/tree/", status, times=10)
    with pytest.raises(error, match=message) as exc:
        download_bundle("alice/tiny", revision=unknown)
    assert "check the network" not in str(exc.value)


def test_a_hub_that_is_down(hub):
    hub.stop()
    with pytest.raises(HubUnavailableError, match="could not reach the Hub"):
        download_bundle("alice/tiny")


# ---------------------------------------------------------------------------------------------
# Serving downloads only what it serves; the Space preloads exactly that


def test_serving_downloads_only_what_it_serves(hub, int8_bundle, images, tmp_path, monkeypatch):
    clf = Classifier.from_hub("alice/int8")
    # the int8 model and the float model.onnx that settles its close calls (an int8 bundle's
    # companion, bundle.INT8_COMPANIONS; this one has no self-check reference)
    served = {bundle.CONFIG, bundle.ONNX_INT8, bundle.ONNX, bundle.METRICS, bundle.CURVES, bundle.CONFUSION}
    assert {p.name for p in clf.path.iterdir()} == served
    assert clf.runtime == "onnxruntime-int8"
    fetched = {r.path.rsplit("/", 1)[-1] for r in hub.requests if "/resolve/" in r.path}
    assert fetched == served  # no .h5, no card, history or samples
    assert np.array_equal(clf.predict_proba(images),
                          Classifier.from_pretrained(int8_bundle).predict_proba(images))

    app_file = tmp_path / "app.py"
    app_file.write_text("print('app')\n")
    out = prepare_space(tmp_path / "space", model_repos=["alice/int8"], app_file=app_file,
                        package="sports_classifier==0.1.0", sdk_version="6.0.0")
    from huggingface_hub import SpaceCard

    (entry,) = SpaceCard.load(out / "README.md").data.preload_from_hub
    repo, files = entry.split(" ")
    assert repo == "alice/int8" and set(files.split(",")) == served
    assert files.split(",") == bundle.serving_files(clf.config)  # one list, in the same order

    # What serving did not fetch comes when asked for, from the same commit: the Keras weights
    # (a Keras Grad-CAM), the whole bundle (save_pretrained, push_to_hub).
    assert clf.keras_model is not None and (clf.path / bundle.WEIGHTS).is_file()
    copy = clf.save_pretrained(tmp_path / "copy")
    assert {p.name for p in copy.iterdir()} == {p.name for p in int8_bundle.iterdir()}
    assert (copy / bundle.WEIGHTS).read_bytes() == (int8_bundle / bundle.WEIGHTS).read_bytes()

    # A Space started offline after the preload serves from the cache.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert Classifier.from_pretrained("hf:alice/int8").path == clf.path


# ---------------------------------------------------------------------------------------------
# The Space: pushed over HTTP by the CLI, read back, its models predict like the bundle


def test_space_push_end_to_end(hub, tiny_bundle, images, tmp_path):
    from huggingface_hub import SpaceCard, snapshot_download

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "cli-home"), "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONPATH": str(ROOT)}
    sha = hub.shas["tiny"]
    cmd = [sys.executable, "-m", "sports_classifier", "space", "--models", "alice/tiny", f"alice/tiny@{sha}",
           "--out", str(tmp_path / "space"), "--app-file", str(ROOT / "app.py"), "--include",
           "--push", "alice/sports-space", "--token", TOKEN]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f"{hub.url}/spaces/alice/sports-space")
    space = hub.repos["spaces/alice/sports-space"]
    assert space.sdk == "gradio" and space.variables[MODELS_ENV] == f"hf:alice/tiny,hf:alice/tiny@{sha}"

    folder = Path(snapshot_download("alice/sports-space", repo_type="space"))
    assert (folder / "app.py").read_bytes() == (ROOT / "app.py").read_bytes()
    assert (folder / "sports_classifier" / "classifier.py").is_file()
    assert not list(folder.rglob("*.h5")) and not list(folder.rglob("*.pyc"))
    card = SpaceCard.load(folder / "README.md").data
    assert card.sdk == "gradio" and card.models == ["alice/tiny"]
    assert card.preload_from_hub[1].endswith(f" {sha}")
    config = json.loads((folder / SPACE_CONFIG).read_text())
    want = Classifier.from_pretrained(tiny_bundle).predict_proba(images)
    for spec in config[MODELS_ENV].split(","):
        assert np.array_equal(Classifier.from_pretrained(spec).predict_proba(images), want)


def test_space_on_the_base_install_without_gradio(hub, tmp_path, monkeypatch):
    from importlib import metadata

    from sports_classifier import space

    real = metadata.version

    def version(name):
        if name == "gradio":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(space.metadata, "version", version)
    app_file = tmp_path / "app.py"
    app_file.write_text("print('app')\n")
    args = ["space", "--models", "alice/tiny@v1", "--out", tmp_path / "space", "--app-file", app_file, "--include"]
    code, _, err = run_cli(*args)
    assert code == 1 and "Gradio is not installed" in err and "--sdk-version" in err
    code, out, err = run_cli(*args, "--sdk-version", "6.0.0")
    assert code == 0, err
    assert "gradio==6.0.0" in (tmp_path / "space" / "requirements.txt").read_text()


# ---------------------------------------------------------------------------------------------
# Repo ids, tokens, the huggingface_hub version


BAD_IDS = ["alice", "alice/bad--name", "alice/-x", "alice/x.", "a/b/c", "alice/x@v1", "alice/na me",
           "alice/" + "x" * 100, "hf:alice/x@"]


@pytest.mark.parametrize("repo_id", BAD_IDS)
def test_bad_repo_ids_are_refused_before_any_request(hub, tiny_bundle, tmp_path, repo_id):
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    with pytest.raises(UserInputError, match="bad model repo id"):
        upload_bundle(tiny_bundle, repo_id, token=TOKEN)
    (tmp_path / "space").mkdir()
    with pytest.raises(UserInputError, match="bad Space id"):
        push_space(tmp_path / "space", repo_id, token=TOKEN)
    assert hub.requests == []
    if "/" in repo_id and "@" not in repo_id and not repo_id.startswith("hf:"):  # the library agrees
        with pytest.raises(HFValidationError):
            validate_repo_id(repo_id)


def test_one_parser_accepts_what_the_library_accepts():
    for good in ("alice/tiny", "Alice-1/sports.lite_0", "a/" + "x" * 94):
        assert parse_model_source("hf:" + good).location == good
    assert parse_model_source("hf:alice/tiny@" + "a" * 40).revision == "a" * 40


def test_cli_token_flag(hub, tiny_bundle, tmp_path):
    code, out, err = run_cli("push", "--model", tiny_bundle, "--repo", "alice/private", "--private",
                             "--token", TOKEN)
    assert code == 0, err
    assert TOKEN not in out + err
    assert {r.authorization for r in hub.requests if r.method == "POST"} == {f"Bearer {TOKEN}"}
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 30, 30)).save(image)
    code, _, err = run_cli("predict", "--model", "alice/private", image)
    assert code == 1 and "--token" in err  # the hint names the flag that exists
    code, out, err = run_cli("predict", "--model", "alice/private", "--token", TOKEN, "--json", image)
    assert code == 0, err
    assert json.loads(out)[0]["predictions"]


def test_an_old_huggingface_hub_is_named(hub, tiny_bundle, monkeypatch):
    import huggingface_hub

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "huggingface-hub>=2.0,<3" in deps
    monkeypatch.setattr(huggingface_hub, "__version__", "1.3.2")
    for call in (lambda: upload_bundle(tiny_bundle, "alice/x", token=TOKEN),
                 lambda: download_bundle("alice/tiny"),
                 lambda: push_space(tiny_bundle, "alice/space", token=TOKEN)):
        with pytest.raises(HubError, match=r"needs huggingface-hub>=2.0,<3, but huggingface_hub 1.3.2 is installed"):
            call()
    assert hub.requests == []


# ---------------------------------------------------------------------------------------------
# The Keras user's path: what the card says works


def test_the_cards_keras_snippet_works_from_a_folder_and_the_hub(hub, tiny_bundle, images):
    from sports_classifier.images import preprocess_batch

    card = " ".join((tiny_bundle / bundle.CARD).read_text().split())
    assert "declared an ONNX model, not a Keras one" in card and 'keras.saving.load_model("hf://...")' in card
    assert 'runtime="keras").keras_model' in card  # every block runs: tests/e2e/test_card_snippets.py
    config = bundle.read_config(tiny_bundle)
    pixels = preprocess_batch(images, config.image_size)
    want = Classifier.from_pretrained(tiny_bundle, runtime="keras").predict_proba(images)
    for source in (str(tiny_bundle), "alice/tiny"):
        model = Classifier.from_pretrained(source, runtime="keras").keras_model
        np.testing.assert_allclose(model.predict(pixels, verbose=0), want, atol=1e-6)
