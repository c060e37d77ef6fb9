"""Hub push/pull, the model card and the Space.

Downloads run the real ``huggingface_hub`` code against ``hub_server.FakeHub``, a server on
127.0.0.1 that speaks the Hub's resolve protocol. The push tests here stop at the ``HfApi``
boundary (a fake records what it is handed); ``test_hub_wire.py`` runs uploads over HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.bundles import copy_bundle
from helpers.hub_server import FakeHub, use_hub
from sports_classifier import bundle
from sports_classifier.classifier import Classifier
from sports_classifier.errors import BundleError, ConfigError, HubError
from sports_classifier.hub import download_bundle, upload_bundle
from sports_classifier.space import MODELS_ENV, SPACE_CONFIG, prepare_space, push_space

TOKEN = "hf_SecretTestToken0123456789abcdefXYZ"
REPO = "alice/tiny"


# ---------------------------------------------------------------------------------------------
# Fixtures: two versions of a bundle, a Hub serving them, huggingface_hub pointed at it


@pytest.fixture(scope="module")
def bundle_v2(tiny_bundle, tmp_path_factory) -> Path:
    """A second bundle with the same labels but other weights (a newer commit of the repo)."""
    import keras

    from sports_classifier.models.network import build_classifier
    from sports_classifier.runtime import export_onnx

    config = bundle.read_config(tiny_bundle)
    keras.utils.set_random_seed(1234)
    model = build_classifier(config.backbone, config.num_classes, image_size=config.image_size,
                             dropout=config.dropout, weights=None)
    work = tmp_path_factory.mktemp("bundle-v2")
    sample = np.random.default_rng(0).uniform(0, 255, (2, config.image_size, config.image_size, 3))
    export_onnx(model, work / bundle.ONNX, sample=sample.astype("float32"))
    return bundle.write_bundle(work / "bundle", config.replace(training=None), {
        bundle.WEIGHTS: lambda dest: model.save_weights(dest),
        bundle.ONNX: bundle.copy_from(work / bundle.ONNX),
    })


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    out = []
    for c in range(4):
        pixels = rng.normal(60, 30, (40, 48, 3))
        pixels[..., c % 3] += 140
        out.append(np.clip(pixels, 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def expected(tiny_bundle, bundle_v2, images) -> dict[str, np.ndarray]:
    """What the original bundles predict (ONNX Runtime, as a pulled bundle serves)."""
    return {name: Classifier.from_pretrained(path).predict_proba(images)
            for name, path in (("v1", tiny_bundle), ("v2", bundle_v2))}


@pytest.fixture(scope="module")
def hub(tiny_bundle, bundle_v2, tmp_path_factory):
    """alice/tiny: v1 (tag v1, branch stable), then v2 on main; and repos that fail to load."""
    fake = FakeHub()
    fake.shas = {"v1": fake.add_commit(REPO, tiny_bundle, tags=["v1"])}
    fake.add_commit(REPO, tiny_bundle, branch="stable")
    fake.shas["v2"] = fake.add_commit(REPO, bundle_v2)

    root = tmp_path_factory.mktemp("odd-repos")
    no_config = root / "no-config"
    no_config.mkdir()
    (no_config / "README.md").write_text("---\nlicense: mit\n---\n# A dataset card\n")
    (no_config / "data.bin").write_bytes(b"\0" * 64)
    fake.add_commit("alice/no-config", no_config)
    other = root / "other-library"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    (other / "README.md").write_text("# a transformers model\n")
    fake.add_commit("alice/bert", other)
    incomplete = root / "incomplete"
    copy_bundle(tiny_bundle, incomplete)
    (incomplete / bundle.ONNX).unlink()
    fake.add_commit("alice/incomplete", incomplete)
    fake.add_commit("alice/private", tiny_bundle)
    fake.set_private("alice/private", TOKEN)
    fake.add_commit("alice/gated", tiny_bundle)
    fake.set_gated("alice/gated")
    with fake:
        yield fake


def repo_requests(fake: FakeHub) -> list:
    return [r for r in fake.requests if r.server == "cdn" or "/api/models/" in r.path or "/resolve/" in r.path]


def go_offline(monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def hf_cache(hub, monkeypatch, tmp_path) -> Path:
    return use_hub(monkeypatch, hub.url, tmp_path / "hf-home")


# ---------------------------------------------------------------------------------------------
# Pull through the loopback Hub


def test_pull_predicts_exactly_like_the_original(hub, hf_cache, bundle_v2, images, expected):
    from huggingface_hub import ModelCard

    clf = Classifier.from_hub(REPO)
    # The standard cache layout, at the commit main points to.
    assert clf.path == hf_cache / "models--alice--tiny" / "snapshots" / hub.shas["v2"]
    # Only what serving reads: config.json, the ONNX model, metrics and Compare pictures (those it has).
    serving = set(bundle.serving_files(clf.config)) & {p.name for p in bundle_v2.iterdir()}
    assert {p.name for p in clf.path.iterdir()} == serving == {bundle.CONFIG, bundle.ONNX}
    assert clf.runtime == "onnxruntime"
    assert np.array_equal(clf.predict_proba(images), expected["v2"])
    keras_pulled = Classifier.from_hub(REPO, runtime="keras").predict_proba(images)
    assert (clf.path / bundle.WEIGHTS).is_file()  # fetched for the Keras engine, same snapshot
    assert np.array_equal(keras_pulled, Classifier.from_pretrained(bundle_v2, runtime="keras").predict_proba(images))
    # from_pretrained takes a repo id too; the weights came through the CDN redirect, like the Hub's LFS files.
    assert Classifier.from_pretrained(REPO).path == clf.path
    assert any(r.server == "cdn" and r.authorization is None for r in hub.requests)
    full = download_bundle(REPO)  # the whole bundle (runtime=None): the card too, same snapshot
    assert full == clf.path and ModelCard.load(full / bundle.CARD).data.pipeline_tag == "image-classification"


@pytest.mark.parametrize("revision", ["v1", "stable", "sha-v1", "main", "sha-v2"])
def test_pinned_revision_is_honoured(hub, hf_cache, images, expected, revision):
    version = "v2" if revision in ("main", "sha-v2") else "v1"
    rev = hub.shas[revision[4:]] if revision.startswith("sha-") else revision
    clf = Classifier.from_hub(REPO, revision=rev)
    assert clf.path.name == hub.shas[version]
    assert np.array_equal(clf.predict_proba(images), expected[version])
    assert not np.array_equal(expected["v1"], expected["v2"])  # the two versions are told apart


def test_offline_loads_from_the_cache_without_the_server(hub, hf_cache, monkeypatch, images, expected):
    main = download_bundle(REPO)
    v1 = download_bundle(REPO, revision="v1")
    asked = len(repo_requests(hub))
    assert download_bundle(REPO, local_files_only=True) == main
    go_offline(monkeypatch)
    clf = Classifier.from_hub(REPO)
    assert clf.path == main
    assert np.array_equal(clf.predict_proba(images), expected["v2"])
    assert Classifier.from_hub(REPO, revision="v1").path == v1
    assert download_bundle(REPO, revision=hub.shas["v1"]) == v1
    assert len(repo_requests(hub)) == asked  # the server was not asked anything


def test_offline_without_a_cached_copy(hub, hf_cache, monkeypatch):
    download_bundle(REPO)
    with pytest.raises(HubError, match="local_files_only=True") as exc:
        download_bundle(REPO, revision="v1", local_files_only=True)
    assert "'v1'" in str(exc.value)
    go_offline(monkeypatch)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE=1") as exc:
        Classifier.from_hub("alice/incomplete")
    assert "not in the local cache" in str(exc.value) and "alice/incomplete" in str(exc.value)


def test_missing_repo_and_missing_revision(hub, hf_cache):
    with pytest.raises(HubError, match="'alice/nope' not found") as exc:
        Classifier.from_hub("alice/nope")
    assert "check the id" in str(exc.value).lower() and hub.url in str(exc.value)
    with pytest.raises(HubError, match="revision 'v9' not found in 'alice/tiny'"):
        download_bundle(REPO, revision="v9")
    with pytest.raises(HubError, match="commit '0{40}' not found"):
        download_bundle(REPO, revision="0" * 40)


@pytest.mark.parametrize("repo_id", ["alice/no-config", "alice/bert"])
def test_a_repo_that_is_not_a_bundle(hf_cache, repo_id):
    with pytest.raises(BundleError, match="is not a sports_classifier bundle") as exc:
        Classifier.from_hub(repo_id)
    assert repo_id in str(exc.value) and "sports-classifier push" in str(exc.value)


def test_an_incomplete_bundle_names_the_missing_file(hf_cache):
    with pytest.raises(BundleError, match=r"incomplete: config.json records \['model.onnx'\]"):
        Classifier.from_hub("alice/incomplete")


def test_private_and_gated_repos(hub, hf_cache, monkeypatch):
    with pytest.raises(HubError, match="not found .*or it is private") as exc:
        download_bundle("alice/private")
    assert "HF_TOKEN" in str(exc.value)
    wrong = "hf_WrongTokenWrongToken0123456789"
    with pytest.raises(HubError, match="rejected the token") as exc:
        download_bundle("alice/private", token=wrong)
    assert wrong not in str(exc.value) and wrong not in "".join(traceback.format_exception(exc.value))
    with pytest.raises(HubError, match="gated repo .* request access at"):
        download_bundle("alice/gated", token=TOKEN)
    assert bundle.read_config(download_bundle("alice/private", token=TOKEN)).num_classes == 3
    assert any(r.authorization == f"Bearer {TOKEN}" for r in hub.requests)
    # The token also comes from HF_TOKEN, as huggingface_hub users expect (fresh cache).
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert download_bundle("alice/private", cache_dir=hf_cache.parent / "other").is_dir()


def test_network_down(tiny_bundle, monkeypatch, tmp_path):
    down = FakeHub()
    down.add_commit(REPO, tiny_bundle, tags=["v1"])
    with down:
        use_hub(monkeypatch, down.url, tmp_path / "hf-home")
        cached = download_bundle(REPO)
    # The port is closed now: the cached copy still loads, at once (huggingface_hub's own file
    # listing would retry the refused connection for 23 s), and anything else says what happened.
    start = time.perf_counter()
    assert download_bundle(REPO) == cached
    assert time.perf_counter() - start < 5
    with pytest.raises(HubError, match="could not reach the Hub at") as exc:
        download_bundle(REPO, revision="v1")
    assert down.url in str(exc.value) and "HF_ENDPOINT" in str(exc.value)
    assert exc.value.__cause__ is None and exc.value.__suppress_context__  # no raw HTTP traceback


def test_environment_variables_end_to_end(hub, bundle_v2, images, tmp_path):
    """The CLI in a fresh process: HF_ENDPOINT and HF_HOME pick the server and the cache,
    HF_HUB_OFFLINE=1 serves from the cache without a request, and fails cleanly when the
    model is not cached."""
    files = []
    for i, pixels in enumerate(images[:2]):
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
        files.append(str(tmp_path / f"{i}.png"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING")) and k != "SPORTS_CLASSIFIER_MODEL"}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}

    def cli(model, **extra):
        cmd = [sys.executable, "-m", "sports_classifier", "predict", "--model", model, "--json", "--top-k", "3", *files]
        return subprocess.run(cmd, env=env | extra, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    online = cli(REPO)
    assert online.returncode == 0, online.stderr
    want = Classifier.from_pretrained(bundle_v2).predict(files, top_k=3)
    got = [[(p["label"], p["probability"]) for p in r["predictions"]] for r in json.loads(online.stdout)]
    assert got == want
    asked = len(repo_requests(hub))
    offline = cli(REPO, HF_HUB_OFFLINE="1")
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout == online.stdout
    assert len(repo_requests(hub)) == asked
    missing = cli("alice/bert", HF_HUB_OFFLINE="1")
    assert missing.returncode == 1
    assert "error:" in missing.stderr and "HF_HUB_OFFLINE=1" in missing.stderr
    assert "Traceback" not in missing.stderr


# ---------------------------------------------------------------------------------------------
# Push: the network boundary is a fake HfApi that records what it is handed


@dataclass
class Recorder:
    calls: list = field(default_factory=list)  # (method, kwargs)
    tokens: list = field(default_factory=list)  # token given to HfApi(...)
    uploads: list = field(default_factory=list)  # {path in repo: bytes} per upload_folder call
    fail_on: str | None = None
    error: Exception | None = None

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def kwargs(self, name: str) -> dict:
        return next(kw for n, kw in self.calls if n == name)


@pytest.fixture
def api(monkeypatch, tmp_path) -> Recorder:
    import huggingface_hub
    from huggingface_hub import CommitInfo, RepoUrl
    from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
    from huggingface_hub.utils import filter_repo_objects

    rec = Recorder()
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))

    class FakeHfApi:
        def __init__(self, token=None, **kwargs):
            rec.tokens.append(token)

        def _record(self, name, **kwargs):
            rec.calls.append((name, kwargs))
            if rec.fail_on == name:
                raise rec.error

        def create_repo(self, repo_id, **kwargs):
            self._record("create_repo", repo_id=repo_id, **kwargs)
            prefix = "spaces/" if kwargs.get("repo_type") == "space" else ""
            return RepoUrl(f"https://huggingface.co/{prefix}{repo_id}")

        def create_branch(self, repo_id, **kwargs):
            self._record("create_branch", repo_id=repo_id, **kwargs)

        def upload_folder(self, *, repo_id, folder_path, allow_patterns=None, ignore_patterns=None, **kwargs):
            self._record("upload_folder", repo_id=repo_id, folder_path=folder_path,
                         allow_patterns=allow_patterns, ignore_patterns=ignore_patterns, **kwargs)
            # What upload_folder would commit: the library's own filter over the folder.
            folder = Path(folder_path)
            names = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
            kept = filter_repo_objects(names, allow_patterns=allow_patterns,
                                       ignore_patterns=list(ignore_patterns or []) + DEFAULT_IGNORE_PATTERNS)
            rec.uploads.append({name: (folder / name).read_bytes() for name in kept})
            return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/{'ab' * 20}",
                              commit_message=kwargs.get("commit_message") or "", commit_description="",
                              oid="ab" * 20)

        def hf_hub_download(self, repo_id, filename, **kwargs):  # the repo's README.md: none yet
            from huggingface_hub.errors import RemoteEntryNotFoundError

            raise _http_error(RemoteEntryNotFoundError, 404, f"404 {filename}")

        def add_space_variable(self, repo_id, key, value, **kwargs):
            self._record("add_space_variable", repo_id=repo_id, key=key, value=value, **kwargs)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    return rec


def bundle_files(path: Path) -> set[str]:
    return {name for name in bundle.FILES if (path / name).is_file()}


def test_push_to_hub_uploads_the_bundle_and_its_card_in_one_commit(api, tiny_bundle):
    url = Classifier.from_pretrained(tiny_bundle).push_to_hub(REPO, token=TOKEN, private=True,
                                                              commit_message="first model")
    assert url == f"https://huggingface.co/{REPO}/commit/{'ab' * 20}"
    assert api.names() == ["create_repo", "upload_folder"] and api.tokens == [TOKEN]
    assert api.kwargs("create_repo") == {"repo_id": REPO, "repo_type": "model", "private": True, "exist_ok": True}
    upload = api.kwargs("upload_folder")
    assert upload["repo_type"] == "model" and upload["commit_message"] == "first model"
    (sent,) = api.uploads
    assert set(sent) == bundle_files(tiny_bundle) and bundle.CARD in sent
    for name in (bundle.WEIGHTS, bundle.ONNX, bundle.CONFIG, bundle.METRICS):
        assert sent[name] == (tiny_bundle / name).read_bytes(), name
    assert f'Classifier.from_pretrained("{REPO}")'.encode() in sent[bundle.CARD]  # the repo's id (issue 26)
    assert not any(TOKEN.encode() in data for data in sent.values())


def test_upload_sends_exactly_the_bundle_files(api, tiny_bundle, tmp_path):
    folder = tmp_path / "bundle"
    copy_bundle(tiny_bundle, folder)
    (folder / bundle.SAMPLES).unlink()
    for junk in ("notes.txt", "sub/README.md", ".ipynb_checkpoints/config.json", ".cache/huggingface/x"):
        (folder / junk).parent.mkdir(parents=True, exist_ok=True)
        (folder / junk).write_text("not part of the bundle")
    url = upload_bundle(folder, REPO, token=TOKEN, revision="experiment")
    assert url.startswith(f"https://huggingface.co/{REPO}/commit/")
    assert api.names() == ["create_repo", "create_branch", "upload_folder"]
    assert api.kwargs("create_branch") == {"repo_id": REPO, "branch": "experiment", "repo_type": "model",
                                           "exist_ok": True}
    upload = api.kwargs("upload_folder")
    assert upload["revision"] == "experiment"
    sent = bundle_files(tiny_bundle) - {bundle.SAMPLES}
    assert set(api.uploads[0]) == sent
    # Bundle files this bundle lacks (a samples.png left on the Hub by an earlier push) go away
    # in the same commit; nothing else in the repo is touched.
    assert bundle.SAMPLES in upload["delete_patterns"]
    assert upload["delete_patterns"] == [name for name in bundle.FILES if name not in sent]


def test_upload_refuses_a_broken_bundle_before_any_network_call(api, tiny_bundle, tmp_path):
    corrupt = tmp_path / "corrupt"
    copy_bundle(tiny_bundle, corrupt)
    data = bytearray((corrupt / bundle.WEIGHTS).read_bytes())
    data[-1] ^= 0xFF
    (corrupt / bundle.WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="corrupt"):
        upload_bundle(corrupt, REPO, token=TOKEN)
    no_card = tmp_path / "no-card"
    copy_bundle(tiny_bundle, no_card)
    (no_card / bundle.CARD).unlink()
    with pytest.raises(BundleError, match="no model card"):
        upload_bundle(no_card, REPO, token=TOKEN)
    with pytest.raises(BundleError, match="not a sports_classifier bundle"):
        upload_bundle(tmp_path, REPO, token=TOKEN)
    assert api.calls == []


def test_upload_without_any_token(api, tiny_bundle, monkeypatch):
    with pytest.raises(HubError, match="needs a Hugging Face token .*HF_TOKEN.*hf auth login"):
        upload_bundle(tiny_bundle, REPO)
    assert api.calls == []
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # HfApi picks it up itself: nothing is passed along
    upload_bundle(tiny_bundle, REPO)
    assert api.tokens == [None] and api.names() == ["create_repo", "upload_folder"]


def _http_error(cls, status: int, message: str, server_message: str | None = None):
    import httpx2

    response = httpx2.Response(status, request=httpx2.Request("POST", "https://huggingface.co/api/repos/create"))
    return cls(message, response=response, server_message=server_message)


def _push_errors():
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    # Messages carry the token, as a proxy echoing the request might: it must not come through.
    leak = f"(Authorization: Bearer {TOKEN})"
    return [
        ("create_repo", _http_error(HfHubHTTPError, 401, f"401 Unauthorized {leak}"), "rejected the token"),
        ("upload_folder", _http_error(HfHubHTTPError, 403, f"403 Forbidden {leak}"), "no write access"),
        ("create_repo", _http_error(RepositoryNotFoundError, 404, f"404 {leak}"), "cannot write to model repo"),
        ("create_branch", _http_error(HfHubHTTPError, 500, "500", server_message=f"boom {leak}"),
         "refused the upload .*HTTP 500"),
        ("upload_folder", httpx2.ConnectError(f"[Errno 111] Connection refused {leak}"), "could not reach the Hub"),
        ("upload_folder", OfflineModeIsEnabled(f"offline {leak}"), "HF_HUB_OFFLINE=1"),
    ]


@pytest.mark.parametrize("fail_on, error, message", _push_errors(),
                         ids=["401", "403", "no-repo", "500", "network", "offline"])
def test_push_errors_are_clear_and_never_show_the_token(api, tiny_bundle, fail_on, error, message):
    api.fail_on, api.error = fail_on, error
    with pytest.raises(HubError, match=message) as exc:
        upload_bundle(tiny_bundle, REPO, token=TOKEN, revision="dev")
    text = str(exc.value) + "".join(traceback.format_exception(exc.value))
    assert TOKEN not in text and "Traceback" in text  # the traceback was formatted, without the token
    assert REPO in str(exc.value)


# ---------------------------------------------------------------------------------------------
# Model card


def test_model_card_reads_back_the_measured_metrics(tiny_bundle):
    from huggingface_hub import ModelCard

    card = ModelCard.load(tiny_bundle / bundle.CARD)
    measured = json.loads((tiny_bundle / bundle.METRICS).read_text())["valid"]
    results = {(r.metric_type, r.dataset_split): r.metric_value for r in card.data.eval_results}
    for key in ("accuracy", "top5_accuracy", "macro_f1"):
        assert results[(key, "valid")] == pytest.approx(measured[key], abs=5e-5), key
    assert card.data.pipeline_tag == "image-classification"
    assert card.data.library_name and card.data.license == "apache-2.0" and card.data.datasets
    assert "sports_classifier" in card.data.tags


# ---------------------------------------------------------------------------------------------
# The Space


@pytest.fixture
def app_file(tmp_path) -> Path:
    path = tmp_path / "stand_in_app.py"
    path.write_text("import gradio as gr\n\ndemo = gr.Blocks()\n\nif __name__ == '__main__':\n    demo.launch()\n")
    return path


def test_prepare_space_writes_a_gradio_space(hub, hf_cache, tiny_bundle, bundle_v2, app_file, tmp_path):
    from huggingface_hub import SpaceCard

    sha = hub.shas["v1"]
    examples = tmp_path / "examples" / "archery"
    examples.mkdir(parents=True)
    (examples / "1.jpg").write_bytes(b"jpeg")
    out = prepare_space(tmp_path / "space", model_repos=[REPO, f"{REPO}@{sha}", "hf:carol/tagged@v2"],
                        title="Sports", app_file=app_file, include=[tmp_path / "examples"])
    assert (out / "app.py").read_bytes() == app_file.read_bytes()
    assert (out / "examples" / "archery" / "1.jpg").is_file()
    card = SpaceCard.load(out / "README.md")
    data = card.data
    assert (data.sdk, data.app_file, data.python_version) == ("gradio", "app.py", "3.11")
    assert data.sdk_version == metadata.version("gradio") and data.title == "Sports"
    assert data.models == [REPO, "carol/tagged"]
    # Exactly the files serving downloads (main holds a bundle without metrics or pictures);
    # the tag pin is not preloadable (the Hub pins preloads by commit).
    v1_files = [n for n in bundle.serving_files(bundle.read_config(tiny_bundle)) if (tiny_bundle / n).is_file()]
    assert data.preload_from_hub == [f"{REPO} config.json,model.onnx", f"{REPO} {','.join(v1_files)} {sha}"]
    assert v1_files == ["config.json", "model.onnx", "metrics.json", "curves.png", "confusion_matrix.png"]
    assert data.license and data.emoji
    value = f"hf:{REPO},hf:{REPO}@{sha},hf:carol/tagged@v2"
    assert json.loads((out / SPACE_CONFIG).read_text())[MODELS_ENV] == value
    assert f"{MODELS_ENV}={value}" in card.text
    requirements = [line.lower() for line in (out / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert not [r for r in requirements if "tensorflow" in r or "keras" in r]
    assert any(r.startswith("onnxruntime") for r in requirements)
    assert f"gradio=={metadata.version('gradio')}" in requirements
    # The package travels with the Space (no published package needed), without training weights.
    assert (out / "sports_classifier" / "classifier.py").is_file()
    assert not list(out.rglob("*.h5")) and not list(out.rglob("__pycache__"))
    # Prepared again in place: replaced, not mixed.
    prepare_space(out, model_repos=[f"{REPO}@v1"], app_file=app_file, package="sports_classifier==0.1.0")
    assert not (out / "examples").exists() and not (out / "sports_classifier").exists()
    assert (out / "requirements.txt").read_text().splitlines()[1] == "sports_classifier==0.1.0"


def test_vendored_package_imports_without_tensorflow(app_file, tmp_path):
    out = prepare_space(tmp_path / "space", model_repos=[f"{REPO}@v1"], app_file=app_file)
    code = ("import sys, sports_classifier, sports_classifier.classifier, sports_classifier.hub; "
            "print(sports_classifier.__file__); assert 'tensorflow' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], cwd=out, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve().is_relative_to(out)


def test_prepare_space_rejects_bad_input(app_file, tmp_path):
    with pytest.raises(ConfigError, match="at least one model"):
        prepare_space(tmp_path / "s", model_repos=[], app_file=app_file)
    with pytest.raises(ConfigError, match="bad model repo id 'not-a-repo'"):
        prepare_space(tmp_path / "s", model_repos=["not-a-repo"], app_file=app_file)
    with pytest.raises(FileNotFoundError, match="app file not found"):
        prepare_space(tmp_path / "s", model_repos=[REPO], app_file=tmp_path / "missing.py")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        prepare_space(tmp_path / "taken", model_repos=[f"{REPO}@v1"], app_file=app_file)
    assert (tmp_path / "taken" / "precious.txt").read_text() == "keep me"
    assert not (tmp_path / "s").exists()


def test_push_space_uploads_the_folder_and_sets_the_models_variable(api, app_file, tmp_path):
    out = prepare_space(tmp_path / "space", model_repos=[f"{REPO}@v1"], app_file=app_file,
                        package="sports_classifier==0.1.0")
    url = push_space(out, "alice/sports-space", token=TOKEN, private=False)
    assert url == "https://huggingface.co/spaces/alice/sports-space"
    assert api.names() == ["create_repo", "upload_folder", "add_space_variable"]
    assert api.kwargs("create_repo") == {"repo_id": "alice/sports-space", "repo_type": "space",
                                         "space_sdk": "gradio", "private": False, "exist_ok": True}
    assert api.kwargs("upload_folder")["repo_type"] == "space"
    assert set(api.uploads[0]) == {"app.py", "requirements.txt", "README.md", SPACE_CONFIG}
    variable = api.kwargs("add_space_variable")
    assert (variable["key"], variable["value"]) == (MODELS_ENV, f"hf:{REPO}@v1")
    from huggingface_hub.errors import HfHubHTTPError

    api.calls.clear()
    api.fail_on, api.error = "upload_folder", _http_error(HfHubHTTPError, 403, f"denied {TOKEN}")
    with pytest.raises(HubError, match="no write access to Space") as exc:
        push_space(out, "alice/sports-space", token=TOKEN)
    assert TOKEN not in str(exc.value)
    with pytest.raises(ConfigError, match="not a Space folder"):
        push_space(tmp_path, "alice/sports-space", token=TOKEN)
