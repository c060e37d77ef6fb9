"""Hostile and careless inputs to the library (issue 12): crafted bundles, odd paths, heavy
images, leftovers of killed saves, tokens. The app-level attacks are in tests/e2e/test_security.py.

Each table is meant to grow: add a row for a new attack. Every hostile file and link is made
inside the test's tmp_path; nothing links to a system file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.bundles import copy_bundle
from sports_classifier import bundle
from sports_classifier.errors import BundleError, ImageDecodeError, UserInputError
from sports_classifier.images import load_rgb


def set_config(folder: Path, **changes) -> None:
    data = json.loads((folder / bundle.CONFIG).read_text())
    data.update(changes)
    (folder / bundle.CONFIG).write_text(json.dumps(data))


# -- config.json: strict types and ranges (point 6) -------------------------------------------

CONFIG_CASES = [  # (id, changes to config.json, words the BundleError must hold)
    ("image_size float", {"image_size": 224.5}, "image_size must be an integer"),
    ("image_size NaN", {"image_size": float("nan")}, "image_size must be an integer"),
    ("image_size string", {"image_size": "224"}, "image_size must be an integer"),
    ("image_size bool", {"image_size": True}, "image_size must be an integer"),
    ("image_size 12000", {"image_size": 12000}, "image_size must be in [16, 2048]"),
    ("image_size 100000 (112 GiB)", {"image_size": 100000}, "image_size must be in [16, 2048]"),
    ("labels as a dict", {"labels": {"a": 1, "b": 2}}, "labels must be a list"),
    ("labels as numbers", {"labels": [1, 2, 3]}, "labels must be a list"),
    ("files_sha256 as a list", {"files_sha256": []}, "files_sha256 must be a JSON object"),
    ("files_sha256 null", {"files_sha256": None}, "files_sha256 must be a JSON object"),
    ("files_sha256 values", {"files_sha256": {"model.onnx": 5}}, "files_sha256 must map"),
    ("training as a string", {"training": "yes"}, "training must be a JSON object or null"),
    ("dropout as a string", {"dropout": "x"}, "dropout must be a finite number"),
    ("dropout out of range", {"dropout": 7}, "dropout must be in [0, 1)"),
    ("tta_flip as a string", {"tta_flip": "no"}, "tta_flip must be true or false"),
    ("preprocessing as a list", {"preprocessing": []}, "preprocessing must be a JSON object"),
    ("members as a string", {"members": "ab"}, "members must be a list"),
    ("backbone as a list", {"backbone": ["tiny_cnn"]}, "backbone must be a string"),
]


@pytest.mark.parametrize("changes,words", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_an_ill_typed_config_is_a_bundle_error(tiny_bundle, tmp_path, changes, words):
    b = copy_bundle(tiny_bundle, tmp_path / "b")
    set_config(b, **changes)
    with pytest.raises(BundleError) as info:
        bundle.read_config(b)
    assert words in str(info.value)


@pytest.mark.parametrize("name", [bundle.CONFIG, bundle.METRICS])
def test_json_nested_200000_deep_is_a_bundle_error(tiny_bundle, tmp_path, name):
    b = copy_bundle(tiny_bundle, tmp_path / "b")
    (b / name).write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(BundleError, match="nested too deeply"):
        bundle.read_config(b) if name == bundle.CONFIG else bundle.read_metrics(b)


@pytest.mark.parametrize("content", ["[1, 2]", '{"valid": 3}'])
def test_metrics_that_are_not_objects_per_split_are_a_bundle_error(tiny_bundle, tmp_path, content):
    b = copy_bundle(tiny_bundle, tmp_path / "b")
    (b / bundle.METRICS).write_text(content)
    with pytest.raises(BundleError, match="must map each split"):
        bundle.read_metrics(b)


# -- links in bundles (point 2) -----------------------------------------------------------------

def private_file(tmp_path: Path) -> Path:
    private = tmp_path / "private"
    private.mkdir(exist_ok=True)
    secret = private / "secret.txt"
    secret.write_text("TOP-SECRET\n")
    return secret


def link_out(b: Path, name: str, target: Path) -> None:
    (b / name).unlink(missing_ok=True)
    (b / name).symlink_to(target)


READERS = [  # (id, bundle file replaced by a link out, what reads it)
    ("config.json", bundle.CONFIG, lambda b: bundle.read_config(b)),
    ("metrics.json", bundle.METRICS, lambda b: bundle.read_metrics(b)),
    ("README.md", bundle.CARD, lambda b: bundle.read_card(b)),
    ("weights", bundle.WEIGHTS, lambda b: bundle.verified_file(b, bundle.read_config(b), bundle.WEIGHTS)),
    ("curves.png via save_pretrained", bundle.CURVES,
     lambda b: __import__("sports_classifier").Classifier.from_pretrained(b).save_pretrained(b.parent / "saved")),
    ("curves.png via upload_bundle", bundle.CURVES,
     lambda b: __import__("sports_classifier.hub", fromlist=["x"]).upload_bundle(b, "someone/x", token=False)),
]


@pytest.mark.parametrize("name,read", [r[1:] for r in READERS], ids=[r[0] for r in READERS])
def test_a_link_leaving_the_bundle_is_refused_by_every_reader(tiny_bundle, tmp_path, name, read):
    b = copy_bundle(tiny_bundle, tmp_path / "b")
    link_out(b, name, private_file(tmp_path))
    with pytest.raises(BundleError, match="outside the bundle"):
        read(b)
    assert not (tmp_path / "saved").exists()


def test_links_inside_the_bundle_and_the_hub_cache_layout_are_followed(tiny_bundle, tmp_path):
    b = copy_bundle(tiny_bundle, tmp_path / "b")
    (b / "extra").mkdir()
    shutil.move(b / bundle.METRICS, b / "extra" / bundle.METRICS)
    (b / bundle.METRICS).symlink_to(Path("extra") / bundle.METRICS)
    assert "valid" in bundle.read_metrics(b)
    # huggingface_hub's cache: models--x/snapshots/<rev>/<file> -> ../../blobs/<hash>
    repo = tmp_path / "models--someone--x"
    snap, blobs = repo / "snapshots" / "abc123", repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    for f in tiny_bundle.iterdir():
        shutil.copyfile(f, blobs / f.name)
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / f.name)
    assert bundle.read_config(snap).labels == bundle.read_config(tiny_bundle).labels
    link_out(snap, bundle.CURVES, private_file(tmp_path))
    with pytest.raises(BundleError, match="outside the bundle"):
        bundle.member(snap, bundle.CURVES)


# -- images: OS errors per file, formats, memory (points 7, 9, 14) ------------------------------

def bad_paths(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    (tmp_path / "plain.txt").write_text("x")
    return {
        "symlink loop": tmp_path / "loop.jpg",
        "path through a file": tmp_path / "plain.txt" / "x.jpg",
        "300-character name": tmp_path / ("a" * 300 + ".jpg"),
    }


@pytest.mark.parametrize("case", ["symlink loop", "path through a file", "300-character name"])
def test_os_errors_are_image_decode_errors(tmp_path, case):
    path = bad_paths(tmp_path)[case]
    with pytest.raises(ImageDecodeError, match="cannot be read"):
        load_rgb(path)


def test_one_unreadable_path_does_not_end_a_cli_run(tiny_bundle, tmp_path, capsys):
    from sports_classifier.cli import main

    good = tmp_path / "good.png"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(good)
    paths = bad_paths(tmp_path)
    argv = ["predict", "--model", str(tiny_bundle), "--json", str(good), *map(str, paths.values()), str(good)]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert [p["image"] for p in json.loads(out)] == [str(good), str(good)]
    assert len([line for line in err.splitlines() if line.startswith("error: ")]) == 3, err


def test_eps_is_not_handed_to_ghostscript(tmp_path):
    eps = tmp_path / "photo.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n")
    with pytest.raises(ImageDecodeError, match="not a readable image"):
        load_rgb(eps)


def test_a_wide_mode_image_over_its_lower_cap_is_refused_before_decoding(tmp_path):
    from sports_classifier.images import MAX_WIDE_PIXELS

    path = tmp_path / "wide.png"
    Image.new("I;16", (8000, 8000)).save(path)  # 64 Mpx, 16-bit: tiny on disk
    assert 8000 * 8000 > MAX_WIDE_PIXELS
    with pytest.raises(ImageDecodeError, match="more than 8 bits per channel"):
        load_rgb(path)


PEAK = """
import re, sys
from sports_classifier.images import load_rgb
def hwm():  # this process's peak RSS in MB (ru_maxrss would carry the parent's over exec)
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024
before = hwm()
img = load_rgb(sys.argv[1])
print(img.size, img.mode, before, hwm())
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode,size", [("I;16", (6000, 6000)), ("RGBA", (8000, 8000))])
def test_converting_a_large_image_stays_in_bounded_memory(tmp_path, mode, size):
    """Peak RSS growth of a fresh process decoding one photo: strip-wise conversion keeps the
    float64 / RGBA temporaries a strip's size (on main: +890 MB for a 36 Mpx 16-bit PNG, whose
    decoded pixels are 69 MB)."""
    path = tmp_path / "big.png"
    Image.new(mode, size, 300 if mode == "I;16" else (10, 200, 30, 128)).save(path, compress_level=1)
    pixels = size[0] * size[1]
    out = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.returncode == 0, out.stderr[-2000:]
    before, peak = map(int, out.stdout.split()[-2:])
    print(f"{mode} {size}: peak RSS {before} -> {peak} MB")
    decoded_mb = pixels * (2 if mode == "I;16" else 4) / 2**20
    rgb_mb = pixels * 3 / 2**20
    assert peak - before < decoded_mb + rgb_mb + 100  # the decoded image, its RGB copy, a few strips


def test_strip_conversion_equals_whole_image_conversion(monkeypatch):
    from sports_classifier import images

    rng = np.random.default_rng(0)
    cases = [Image.fromarray(rng.integers(0, 65535, (37, 23), dtype=np.uint16)),
             Image.fromarray(rng.integers(0, 256, (37, 23, 4), dtype=np.uint8), "RGBA"),
             Image.fromarray(rng.integers(0, 256, (37, 23), dtype=np.uint8)).convert("P")]
    whole = [np.asarray(images._to_rgb(im.copy())) for im in cases]
    monkeypatch.setattr(images, "CONVERT_STRIP_PIXELS", 50)  # two rows a strip
    assert all(np.array_equal(np.asarray(images._to_rgb(im.copy())), w) for im, w in zip(cases, whole))


# -- the app's registry: a model that fails to predict (point 4) --------------------------------

def test_a_model_that_fails_to_predict_is_marked_failed_and_not_asked_again(tiny_bundle, tmp_path):
    from sports_classifier.app import predict as predict_tab
    from sports_classifier.app.registry import ModelRegistry
    from sports_classifier.hub import parse_model_sources

    broken = copy_bundle(tiny_bundle, tmp_path / "broken")
    registry = ModelRegistry(parse_model_sources(f"{tiny_bundle},{broken}"), measure_latency=False)
    clf = registry.get("broken")
    calls = []

    def fail(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions")

    clf.classify = fail
    photo = Image.fromarray(np.full((40, 40, 3), 90, np.uint8))
    for _ in range(2):
        tiny, bad = predict_tab.predict(registry, photo, ["tiny", "broken"])
        assert tiny.error is None and tiny.confidences
        assert bad.error and "INVALID_ARGUMENT" in bad.error and not bad.confidences
    assert len(calls) == 1
    assert registry.status()["broken"].startswith("failed to load: failed to predict")


# -- About tab with ill-typed files (point 3) ---------------------------------------------------

def test_about_tab_renders_with_ill_typed_metrics_and_a_non_utf8_card(tiny_bundle, tmp_path):
    from sports_classifier.app import about
    from sports_classifier.app.registry import ModelRegistry
    from sports_classifier.hub import parse_model_sources

    b = copy_bundle(tiny_bundle, tmp_path / "b")
    metrics = json.loads((b / bundle.METRICS).read_text())
    metrics["valid"]["accuracy"] = "high"
    (b / bundle.METRICS).write_text(json.dumps(metrics))
    (b / bundle.CARD).write_bytes(b"# caf\xe9 \xff\n")
    text = about.about_markdown(ModelRegistry(parse_model_sources(f"{tiny_bundle},{b}")))
    assert "**b**: `tiny_cnn`" in text and "**tiny**: `tiny_cnn`" in text
    assert "caf" in about.model_card_markdown(b)


# -- saves killed half-way (point 12) ------------------------------------------------------------

def test_a_save_removes_temporaries_of_killed_saves_only(tiny_bundle, tmp_path):
    from sports_classifier import Classifier

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = tmp_path / f".saved.tmp-{dead.pid}-abcd"
    left.mkdir()
    (left / bundle.WEIGHTS).write_bytes(b"old bundle")
    running = tmp_path / f".saved.tmp-{os.getppid()}-efgh"  # a live process: maybe saving now
    running.mkdir()
    Classifier.from_pretrained(tiny_bundle).save_pretrained(tmp_path / "saved")
    assert not left.exists() and running.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["saved", running.name])


# -- the CLI (points 10, 14) ---------------------------------------------------------------------

def test_labels_with_terminal_escapes_are_printed_escaped(tiny_bundle, tmp_path, capsys):
    from sports_classifier.cli import main

    b = copy_bundle(tiny_bundle, tmp_path / "b")
    set_config(b, labels=["\x1b]0;pwned\x07cats", "dogs\nerror: fake", "owls\x1b[2J"])
    photo = tmp_path / "p.png"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(photo)
    assert main(["predict", "--model", str(b), "--top-k", "3", str(photo)]) == 0
    out, _ = capsys.readouterr()
    assert "\x1b" not in out and "\x07" not in out and out.count("\n") == 1
    assert "\\x1b]0;pwned\\x07cats" in out and "dogs\\nerror: fake" in out


def test_train_into_an_existing_file_is_refused_before_training(synthetic_dataset, tmp_path, monkeypatch):
    from sports_classifier.cli import main
    from sports_classifier.training import loop

    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    monkeypatch.setattr(loop, "discover", lambda *a, **k: pytest.fail("training started"))
    assert main(["train", "--data", str(synthetic_dataset), "--out", str(target), "--backbone", "tiny_cnn",
                 "--weights", "none"]) == 1
    assert target.read_text() == "keep me"


# -- upload cache budget and request rate (point 11) ---------------------------------------------

def test_the_upload_cache_is_pruned_oldest_first_to_its_budget(tmp_path):
    from sports_classifier.app.uploads import prune_cache

    root = tmp_path / "gradio"
    for i in range(5):
        f = root / f"h{i}" / "photo.jpg"
        f.parent.mkdir(parents=True)
        f.write_bytes(b"x" * 1000)
        os.utime(f, (1_000_000 + i, 1_000_000 + i))
    assert prune_cache(root, max_bytes=2500) == 3000
    assert sorted(p.parent.name for p in root.rglob("*.jpg")) == ["h3", "h4"]
    assert sorted(p.name for p in root.iterdir()) == ["h3", "h4"]  # emptied folders go too
    assert prune_cache(root, max_bytes=10**9, max_age=60) == 2000  # start-up: old files of earlier runs


def test_requests_are_rate_limited_per_client(monkeypatch):
    from sports_classifier.app.uploads import RateLimiter

    now = [0.0]
    limiter = RateLimiter(3, 10.0, clock=lambda: now[0])
    for _ in range(3):
        limiter.check("10.0.0.1")
    with pytest.raises(UserInputError, match="too many requests"):
        limiter.check("10.0.0.1")
    limiter.check("10.0.0.2")  # another client is not affected
    now[0] = 10.5
    limiter.check("10.0.0.1")  # the window has moved on
    for _ in range(3):
        limiter.check("127.0.0.1")  # loopback is a client like any other (issue 23: a same-host proxy)
    with pytest.raises(UserInputError, match="too many requests"):
        limiter.check("127.0.0.1")
    monkeypatch.delenv("SPORTS_CLASSIFIER_RATE_LIMIT", raising=False)
    assert RateLimiter().limit == 300


# -- the token saved by `hf auth login` (point 13) -----------------------------------------------

def test_a_token_saved_by_hf_auth_login_is_scrubbed(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from sports_classifier.hub import _scrub

    saved = "savedTokenWithoutPrefix0123456789"
    (tmp_path / "token").write_text(saved + "\n")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "stored_tokens"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    text = _scrub(f"401 Client Error: bad token {saved} for url ...", None)
    assert saved not in text and "***" in text


# -- the ONNX export sample at the end of training (point 8) -------------------------------------

def test_the_export_sample_skips_corrupt_validation_files(tmp_path):
    """A corrupt file among the first validation images must not fail a finished training run
    (already so on main since the architecture refactor: this test guards it)."""
    from sports_classifier.training.finalize import export_sample

    paths = []
    for i in range(3):
        bad = tmp_path / f"bad{i}.jpg"
        bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
        paths.append(str(bad))
    for i in range(5):
        good = tmp_path / f"good{i}.png"
        Image.fromarray(np.full((20, 20, 3), 10 * i, np.uint8)).save(good)
        paths.append(str(good))
    sample = export_sample(paths, 32)
    assert sample.shape == (4, 32, 32, 3)
    assert [float(x[0, 0, 0]) for x in sample] == [0.0, 10.0, 20.0, 30.0]
