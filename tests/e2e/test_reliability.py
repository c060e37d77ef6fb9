"""Issue 7: every bad input gets a clear error and nothing else breaks.

One place that drives the whole list of bad images through the three surfaces (the
``Classifier``, the CLI in a subprocess, the app's handlers and the running app), and the
other untrusted inputs: bundles from strangers, broken datasets, the Hub token, file requests
to the app. The function-level cases live in test_images / test_data / test_bundle /
test_hub; this module checks the promises end to end.
"""

from __future__ import annotations

import ast
import http.client
import io
import json
import logging
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import threading
import traceback
import zlib
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import quote, urlsplit

import numpy as np
import pytest
from PIL import Image

from helpers.bundles import copy_bundle
from helpers.source import parse
from helpers.app_server import ROOT, start_app
from helpers.datasets import make_dataset
from sports_classifier import bundle
from sports_classifier.app import batch, predict
from sports_classifier.app.registry import ModelRegistry
from sports_classifier.errors import UserInputError
from sports_classifier.hub import ModelSource
from sports_classifier.classifier import Classifier
from sports_classifier.errors import BundleError, DatasetLayoutError, HubError, ImageDecodeError

EXAMPLES = ROOT / "examples"
TOKEN = "hf_ReliabilityTestToken0123456789abcdefXYZ"

# ---------------------------------------------------------------------------------------------
# The bad images of the issue, made once with PIL

# name -> what the error must say
INVALID = {
    "zero_byte": r"is empty \(0 bytes\)",
    "text_as_jpg": r"is not a readable image",
    "truncated_jpeg": r"could not be decoded: image file is truncated",
    "bomb_50000x50000": r"decompression bomb",  # refused by PIL's own limit at open
    "bomb_8500x8500": r"8500x8500 pixels.*possible decompression bomb",  # under PIL's, over ours
    "directory": r"is a directory",
}
VALID = ("one_pixel", "png_16bit", "cmyk_jpeg", "rgba_png", "palette_png", "animated_gif", "webp",
         "exif_rotated")
# The order files are given in, valid and invalid mixed, so that one bad file in the middle of a
# call must not stop the ones after it.
ORDER = ("one_pixel", "zero_byte", "png_16bit", "text_as_jpg", "cmyk_jpeg", "truncated_jpeg", "rgba_png",
         "bomb_50000x50000", "palette_png", "bomb_8500x8500", "animated_gif", "directory", "webp",
         "exif_rotated")
UPLOADABLE = tuple(n for n in ORDER if n != "directory")  # a browser cannot upload a folder


def _photo(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """An asymmetric picture (gradients and a block in one corner): rotating or mirroring it
    changes what a network sees."""
    rng = np.random.default_rng(seed)
    a = np.zeros((height, width, 3))
    a[..., 0] = np.linspace(0, 255, width)[None, :]
    a[..., 1] = np.linspace(0, 255, height)[:, None]
    a[: height // 2, : width // 3, 2] = 230
    return Image.fromarray(np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, *, full: bool) -> bytes:
    """An 8-bit RGB PNG of black pixels. ``full``: with every row (a real, decodable image that
    compresses ~1000:1); else a header that claims the size over a few bytes of data."""
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    if full:
        packer = zlib.compressobj(1)
        row = b"\0" * (1 + 3 * width)  # filter byte + pixels
        data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    else:
        data = zlib.compress(b"\0" * 100)
    return b"\x89PNG\r\n\x1a\n" + header + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-images")
    p: dict[str, Path] = {}

    def path(name: str, filename: str) -> Path:
        p[name] = root / filename
        return p[name]

    path("zero_byte", "zero.jpg").write_bytes(b"")
    path("text_as_jpg", "notes.jpg").write_text("this is a text file, not a photo\n" * 20)
    buf = io.BytesIO()
    _photo().save(buf, "JPEG", quality=90)
    path("truncated_jpeg", "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    path("bomb_50000x50000", "bomb.png").write_bytes(_png(50_000, 50_000, full=False))
    path("bomb_8500x8500", "huge.png").write_bytes(_png(8_500, 8_500, full=True))  # 72 Mpx in a 0.9 MB file
    path("directory", "folder.jpg").mkdir()

    Image.new("RGB", (1, 1), (200, 30, 40)).save(path("one_pixel", "one.png"))
    gray = np.asarray(_photo().convert("L"), np.uint16)
    Image.fromarray(gray * 257).save(path("png_16bit", "deep.png"))  # 16-bit: same picture, x257
    _photo().convert("CMYK").save(path("cmyk_jpeg", "cmyk.jpg"), "JPEG", quality=95)
    rgba = _photo().convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))  # transparent at the top
    rgba.save(path("rgba_png", "alpha.png"))
    _photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(path("palette_png", "palette.png"))
    frames = [_photo(seed=i) for i in range(3)]
    frames[0].save(path("animated_gif", "anim.gif"), save_all=True, append_images=frames[1:], duration=80, loop=0)
    _photo().save(path("webp", "photo.webp"), "WEBP", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    _photo().save(path("exif_rotated", "rotated.jpg"), "JPEG", quality=95, exif=exif.tobytes())
    assert set(p) == set(INVALID) | set(VALID) == set(ORDER)
    return p


def upright(name: str, path: Path) -> np.ndarray:
    """The 8-bit RGB pixels a careful person would make of each valid file by hand. Pixels, not
    a PIL image: an image turned with PIL keeps the file's EXIF tag in ``.info``."""
    if name == "one_pixel":
        image = Image.new("RGB", (1, 1), (200, 30, 40))
    elif name == "png_16bit":
        image = _photo().convert("L").convert("RGB")  # the 8-bit picture it was made from
    elif name == "rgba_png":  # transparency shown on white, as a browser shows it
        rgba = Image.open(path).convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    elif name == "exif_rotated":  # the stored pixels, turned as the EXIF tag says
        image = Image.open(path).convert("RGB").transpose(Image.Transpose.ROTATE_270)
    else:  # first frame of the GIF; CMYK, palette, WebP decoded
        image = Image.open(path).convert("RGB")
    return np.array(image)


@pytest.fixture(scope="module")
def clf(tiny_bundle) -> Classifier:
    return Classifier.from_pretrained(tiny_bundle)  # ONNX Runtime, as the CLI and the app serve


# ---------------------------------------------------------------------------------------------
# Surface 1: Classifier.predict


@pytest.mark.parametrize("name", VALID)
def test_classifier_predicts_each_valid_image_as_its_upright_rgb_picture(clf, images, name):
    got = clf.predict_proba(images[name])
    expected = clf.predict_proba(upright(name, images[name]))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got.shape == (1, clf.config.num_classes) and abs(float(got.sum()) - 1) < 1e-4


@pytest.mark.parametrize("name", list(INVALID))
def test_classifier_refuses_each_invalid_image_with_a_specific_error(clf, images, name):
    with pytest.raises(ImageDecodeError, match=INVALID[name]) as exc:
        clf.predict(images[name])
    assert images[name].name in str(exc.value)
    # ImageDecodeError is also a ValueError, and the classifier keeps working afterwards
    assert isinstance(exc.value, ValueError)
    assert clf.predict(images["one_pixel"], top_k=1)[0][0] in clf.labels


def test_a_list_with_one_bad_image_names_it(clf, images):
    with pytest.raises(ImageDecodeError, match="notes.jpg"):
        clf.predict([images["one_pixel"], images["text_as_jpg"], images["webp"]])


def test_exif_rotated_photo_is_predicted_upright(clf, images):
    path = images["exif_rotated"]
    stored = np.array(Image.open(path).convert("RGB"))  # the pixels as stored, 64 wide, 48 high
    turned = np.rot90(stored, k=-1)  # turned 90 degrees clockwise, as displayed: 48 wide, 64 high
    assert stored.shape == (48, 64, 3) and turned.shape == (64, 48, 3)
    got = clf.predict_proba(path)
    assert np.array_equal(got, clf.predict_proba(turned))
    # the rotation matters to the network, so the comparison above can tell the two apart
    assert not np.allclose(got, clf.predict_proba(stored), atol=1e-4)


BOMB_PROBE = r"""
import json, sys, time
from PIL import Image
from sports_classifier.errors import ImageDecodeError
from sports_classifier.images import load_rgb

def peak_mb():  # VmHWM: this process's peak RSS (ru_maxrss would carry the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

out = {"base": peak_mb()}
for key, path in (("huge", sys.argv[1]), ("claimed", sys.argv[2])):
    start = time.perf_counter()
    try:
        load_rgb(path)
        out[key] = "decoded"
    except ImageDecodeError as exc:
        out[key] = str(exc)
    out[key + "_seconds"] = time.perf_counter() - start
out["after_refusals"] = peak_mb()
Image.MAX_IMAGE_PIXELS = None
with Image.open(sys.argv[1]) as im:  # the control: what decoding the 72 Mpx file costs
    im.load()
out["after_decoding"] = peak_mb()
print(json.dumps(out))
"""


def test_bombs_are_refused_before_decoding_in_bounded_memory(images):
    """In a fresh process (its peak RSS is a clean gauge): refusing both bombs leaves the peak
    where it was and takes well under a second; decoding the 72 Mpx one, the control, raises
    the peak by its 217 MB of pixels, so the gauge would have seen a decode."""
    out = subprocess.run([sys.executable, "-c", BOMB_PROBE, str(images["bomb_8500x8500"]),
                          str(images["bomb_50000x50000"])], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert "possible decompression bomb" in r["huge"] and "decompression bomb" in r["claimed"], r
    assert r["huge_seconds"] < 1.0 and r["claimed_seconds"] < 1.0, r
    assert r["after_refusals"] - r["base"] < 30, r
    assert r["after_decoding"] - r["base"] > 150, r


# ---------------------------------------------------------------------------------------------
# Surface 2: the CLI, as a user runs it


def test_cli_predicts_the_valid_files_and_gives_one_error_line_per_bad_one(tiny_bundle, clf, images):
    paths = [str(images[n]) for n in ORDER]
    result = subprocess.run([sys.executable, "-m", "sports_classifier", "predict", "--model", str(tiny_bundle),
                             "--top-k", "3", "--json", *paths], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert all(line.startswith("error: ") for line in lines), lines
    bad = [n for n in ORDER if n in INVALID]
    assert len(lines) == len(bad), lines
    for name, line in zip(bad, lines):  # in the order given, each naming its file and its problem
        assert str(images[name]) in line and re.search(INVALID[name], line), (name, line)
    predicted = json.loads(result.stdout)
    assert [r["image"] for r in predicted] == [str(images[n]) for n in ORDER if n in VALID]
    for r in predicted:
        expected = clf.predict(r["image"], top_k=3)
        assert [p["label"] for p in r["predictions"]] == [label for label, _ in expected]
        np.testing.assert_allclose([p["probability"] for p in r["predictions"]], [p for _, p in expected],
                                   atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Surface 3: the app's handlers in-process, and the running app through gradio_client


@pytest.fixture(scope="module")
def registry(tiny_bundle) -> ModelRegistry:
    return ModelRegistry([ModelSource(str(tiny_bundle), name="tiny")], measure_latency=False)


def test_app_handlers_answer_every_image_with_a_result_or_a_readable_message(registry, clf, images, tmp_path):
    for name in ORDER:
        path = images[name]
        if name in INVALID:
            with pytest.raises(UserInputError, match=INVALID[name]) as exc:
                predict.predict(registry, str(path), ["tiny"])
            message = str(exc.value)
            assert message.startswith(f"cannot read this image: {path.name} ")
            assert str(path.parent) not in message  # the file's name, not the server's path
        else:
            (result,) = predict.predict(registry, str(path), ["tiny"])
            assert result.error is None
            assert result.confidences == pytest.approx(dict(clf.predict(path, top_k=predict.TOP_K)), abs=1e-6)

    frame, csv_path = batch.batch_predict(registry, [str(images[n]) for n in ORDER], ["tiny"], out_dir=tmp_path)
    assert frame["file"].tolist() == [images[n].name for n in ORDER] and Path(csv_path).is_file()
    for name, row in zip(ORDER, frame.to_dict("records")):
        if name in INVALID:
            assert isinstance(row["error"], str) and re.search(INVALID[name], row["error"])
            assert str(images[name].parent) not in row["error"]
        else:
            assert row["error"] is None or row["error"] != row["error"]  # None / NaN
            assert row["prediction"] == clf.predict(images[name], top_k=1)[0][0]


@pytest.fixture(scope="module")
def app(tiny_bundle, tmp_path_factory):
    server = start_app(str(tiny_bundle), tmp_path_factory.mktemp("reliability-app") / "app.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(app):
    gradio_client = pytest.importorskip("gradio_client")
    return gradio_client.Client(app.url, verbose=False)


def test_running_app_predicts_valid_uploads_and_explains_bad_ones(app, client, clf, images):
    """Through the real server: Gradio's upload, queue and the app's handlers. Valid photos get
    exactly the library's answer (16-bit and transparent PNGs included: the app decodes with
    the package's own function); bad ones a message that names the file and the problem."""
    from gradio_client import handle_file

    for name in UPLOADABLE:
        path = images[name]
        if name in INVALID:
            with pytest.raises(Exception, match=f"cannot read this image: {path.name} .*{INVALID[name]}"):
                client.predict(handle_file(str(path)), ["tiny"], api_name="/predict")
            continue
        result = client.predict(handle_file(str(path)), ["tiny"], api_name="/predict")
        label = result[0]["value"]
        got = {c["label"]: c["confidence"] for c in label["confidences"]}
        assert got == pytest.approx(dict(clf.predict(path, top_k=predict.TOP_K)), abs=1e-6), name

    table, _ = client.predict([handle_file(str(images[n])) for n in UPLOADABLE], ["tiny"], api_name="/batch")
    rows = dict(zip((r[0] for r in table["data"]), table["data"]))
    error_col = table["headers"].index("error")
    for name in UPLOADABLE:
        assert (rows[images[name].name][error_col] is not None) == (name in INVALID), name
    # still serving, and still right
    result = client.predict(handle_file(str(images["webp"])), ["tiny"], api_name="/predict")
    assert result[0]["value"]["label"] == clf.predict(images["webp"], top_k=1)[0][0]
    assert app.proc.poll() is None


def _get(url: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (no client-side normalisation of '..')."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_app_serves_only_the_files_it_means_to(app, tiny_bundle):
    route = "/gradio_api/file="
    example = EXAMPLES / "basketball" / "1.jpg"
    if not example.is_file():
        pytest.skip("no example photos in examples/")
    status, body = _get(app.url, route + quote(str(example)))
    assert status == 200 and body == example.read_bytes()
    status, body = _get(app.url, route + quote(str(tiny_bundle / bundle.CURVES)))  # the model card's picture
    assert status == 200 and body == (tiny_bundle / bundle.CURVES).read_bytes()

    weights = tiny_bundle / bundle.WEIGHTS
    refused = [
        "/etc/passwd",
        str(weights),
        str(tiny_bundle / bundle.CONFIG),
        str(ROOT / "app.py"),  # the working folder is not served either
        f"{EXAMPLES}/../app.py",
        f"{EXAMPLES}/../../../../../../../../etc/passwd",
        f"{EXAMPLES}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        f"{tiny_bundle / bundle.CURVES}/../{bundle.WEIGHTS}",
        f"{tiny_bundle}/./{bundle.WEIGHTS}",
        "..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        "file:///etc/passwd",
    ]
    secrets = (b"root:", weights.read_bytes()[:64], b"launch(")
    for target in refused:
        status, body = _get(app.url, route + (target if "%" in target else quote(target, safe="/:")))
        assert status in (403, 404), (target, status)
        assert not any(s in body for s in secrets), target
    # the pre-4.0 route does not exist at all
    status, body = _get(app.url, "/file=/etc/passwd")
    assert status == 404 and b"root:" not in body


def test_app_refuses_uploads_over_its_size_limit(app):
    """app.MAX_FILE_SIZE (10 MB): Gradio refuses a bigger upload before it reaches a handler."""
    import uuid

    def upload(size: int) -> int:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.jpg\"\r\n"
                "Content-Type: image/jpeg\r\n\r\n").encode() + b"\xff" * size + f"\r\n--{boundary}--\r\n".encode()
        parts = urlsplit(app.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            conn.request("POST", "/gradio_api/upload", body,
                         {"Content-Type": f"multipart/form-data; boundary={boundary}"})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    assert upload(9 * 2**20) == 200
    assert upload(11 * 2**20) == 413


# ---------------------------------------------------------------------------------------------
# Untrusted bundles: loading never runs code from the bundle


class _Payload:
    """A pickle that creates a folder when it is unpickled: proof of code execution."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _tampered(tiny_bundle: Path, tmp_path: Path, name: str, write, *, record_checksum: bool) -> Path:
    """A copy of the bundle whose file ``name`` is rewritten by ``write``; with
    ``record_checksum`` the attacker also updates config.json, so the checksum matches."""
    copy = tmp_path / "bundle"
    copy_bundle(tiny_bundle, copy)
    write(copy / name)
    if record_checksum:
        config = json.loads((copy / bundle.CONFIG).read_text())
        config["files_sha256"][name] = bundle.sha256_file(copy / name)
        (copy / bundle.CONFIG).write_text(json.dumps(config))
    return copy


def _other_network(path: Path) -> None:
    from sports_classifier.models.network import build_classifier

    build_classifier("tiny_cnn", 4, image_size=32, weights=None).save_weights(path)  # 4 classes, not 3


def _foreign_hdf5(path: Path) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.zeros((3, 3), np.float32))


@pytest.mark.parametrize("name, content, record_checksum, runtime, message", [
    (bundle.WEIGHTS, "pickle", False, "keras", "corrupt or was modified"),  # the checksum comes first
    (bundle.WEIGHTS, "pickle", True, "keras", "is not a Keras weights file"),  # then the structure
    (bundle.WEIGHTS, "other network", True, "keras", "does not fit the network"),
    (bundle.WEIGHTS, "foreign hdf5", True, "keras", "does not fit the network"),
    (bundle.ONNX, "pickle", False, "onnx", "corrupt or was modified"),
    (bundle.ONNX, "pickle", True, "onnx", "is not a valid ONNX model"),
])
def test_replaced_model_files_give_a_bundle_error_and_run_nothing(tiny_bundle, tmp_path, name, content,
                                                                  record_checksum, runtime, message):
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(_Payload(marker))
    pickle.loads(payload)  # the payload is live: unpickling it does create the marker
    assert marker.is_dir()
    marker.rmdir()
    writers = {"pickle": lambda p: p.write_bytes(payload), "other network": _other_network,
               "foreign hdf5": _foreign_hdf5}
    copy = _tampered(tiny_bundle, tmp_path, name, writers[content], record_checksum=record_checksum)
    with pytest.raises(BundleError, match=message) as exc:
        clf = Classifier.from_pretrained(copy, runtime=runtime)
        clf.keras_model  # noqa: B018 (the Keras runtime builds the network lazily)
    assert name in str(exc.value) and not marker.exists()


@pytest.mark.parametrize("backbone", ["Lambda", "my_custom_net"])
@pytest.mark.parametrize("runtime", ["auto", "keras"])
def test_a_config_naming_an_unknown_backbone_is_refused(tiny_bundle, tmp_path, backbone, runtime):
    """The network is rebuilt from the package's registry by name; a config can only pick an
    entry, never bring code or layers (no Lambda) of its own, whichever runtime serves."""
    copy = tmp_path / "bundle"
    copy_bundle(tiny_bundle, copy)
    config = json.loads((copy / bundle.CONFIG).read_text())
    config["backbone"] = backbone
    (copy / bundle.CONFIG).write_text(json.dumps(config))
    with pytest.raises(BundleError, match=f"names a backbone .*{backbone}.*available: .*tiny_cnn"):
        Classifier.from_pretrained(copy, runtime=runtime)


# Static check: nothing in the code that loads files can unpickle or deserialise code.
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve", "torch"}
UNSAFE_CALLS = {"load_model", "read_pickle", "Lambda", "enable_unsafe_deserialization", "unsafe_load",
                "full_load"}
# The one exception: converting the published PyTorch weights needs torch (weights_only=True).
CONVERTER = ROOT / "scripts" / "convert_efficientnet_lite.py"


def unsafe_uses(source: str) -> list[str]:
    """Imports and calls that can execute code from a file, found in the syntax tree (not in
    comments or docstrings)."""
    found = []
    for node in ast.walk(parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            if name in UNSAFE_CALLS or (isinstance(func, ast.Name) and name in ("eval", "exec")):
                found.append(f"{name}(...)")
            if owner == "yaml" and name == "load":
                found.append("yaml.load(...)")
            keywords = {k.arg: k.value for k in node.keywords}
            for key, safe in (("allow_pickle", False), ("safe_mode", True), ("weights_only", True)):
                value = keywords.get(key)
                if value is not None and not (isinstance(value, ast.Constant) and value.value is safe):
                    found.append(f"{name}({key}={ast.unparse(value)})")
            if owner in ("np", "numpy") and name == "load" and "allow_pickle" not in keywords:
                found.append("np.load(...) without allow_pickle=False")
    return found


def test_the_unsafe_use_check_finds_what_it_looks_for():
    bad = ["import pickle", "from torch import load", "import joblib as j", "np.load(p)",
           "np.load(p, allow_pickle=True)", "keras.saving.load_model(p, safe_mode=False)",
           "keras.layers.Lambda(f)", "eval(text)", "pd.read_pickle(p)", "yaml.load(s)",
           "torch.load(p, weights_only=False)", "keras.config.enable_unsafe_deserialization()"]
    for snippet in bad:
        assert unsafe_uses(snippet), snippet
    fine = ("np.load(p, allow_pickle=False)\nmodel.load_weights(p)\nmodel.eval()\n"
            "keras.callbacks.LambdaCallback()\n'''docs may say pickle'''\n# import pickle")
    assert unsafe_uses(fine) == []
    assert unsafe_uses(CONVERTER.read_text())  # the one excluded file is excluded for a reason


def test_no_code_that_loads_files_can_unpickle_or_run_code():
    files = sorted((ROOT / "sports_classifier").rglob("*.py")) + [ROOT / "app.py"]
    files += [p for p in sorted((ROOT / "scripts").glob("*.py")) if p != CONVERTER]
    assert ROOT / "sports_classifier" / "bundle.py" in files and len(files) > 15
    problems = {str(p.relative_to(ROOT)): unsafe_uses(p.read_text()) for p in files}
    assert {k: v for k, v in problems.items() if v} == {}


# ---------------------------------------------------------------------------------------------
# Bad datasets


TINY = dict(backbone="tiny_cnn", weights="none", image_size=32, head_epochs=2, batch_size=8)


@pytest.mark.parametrize("mode", ["cached", "end_to_end"])
def test_corrupt_images_in_the_middle_of_training_are_skipped_and_counted(tmp_path, caplog, mode):
    from sports_classifier.config import TrainConfig
    from sports_classifier.training.loop import train

    data = make_dataset(tmp_path / "data", per_class=(8, 4))
    (data / "train" / "dogs" / "4.jpg").write_bytes((data / "train" / "dogs" / "4.jpg").read_bytes()[:300])
    (data / "valid" / "owls" / "2.jpg").write_text("not a jpeg")
    caplog.set_level(logging.WARNING, logger="sports_classifier")
    config = TrainConfig(**TINY, mode=mode)
    result = train(config, data, tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    assert bundle.read_config(result.bundle).num_classes == 3
    assert result.metrics["valid"]["n"] == 11  # 12 validation images, one unreadable
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    train_warnings = [w for w in warnings if " in train" in w]
    assert train_warnings and all(w.startswith("skipped 1 unreadable image(s)") and "4.jpg" in w
                                  for w in train_warnings), warnings
    assert any(" in valid" in w and "2.jpg" in w for w in warnings), warnings
    assert len(train_warnings) == 1  # once per run, not once per epoch


@pytest.mark.parametrize("missing", ["valid", "train"])
def test_a_missing_split_fails_before_any_work(tmp_path, monkeypatch, missing):
    import sports_classifier.models.network as model_module
    from sports_classifier.config import TrainConfig
    from sports_classifier.training.loop import train

    data = make_dataset(tmp_path / "data", per_class=(4, 2))
    shutil.rmtree(data / missing)

    def no_model(*args, **kwargs):
        raise AssertionError("a network was built before the dataset was checked")

    monkeypatch.setattr(model_module, "build_classifier", no_model)
    with pytest.raises(DatasetLayoutError, match=f"no '{missing}' split"):
        train(TrainConfig(**TINY), data, tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no bundle, checkpoint or cache


# ---------------------------------------------------------------------------------------------
# Crashes: a save killed at any step leaves the old bundle or the new one

SAVE_PROBE = r"""
import hashlib, json, os, shutil, signal, sys, tempfile
from pathlib import Path
from sports_classifier import bundle

new_src, old_src, work, mode = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
if mode == "two-renames":
    bundle._exchange = lambda a, b: False  # as on a system without renameat2
config = bundle.read_config(new_src)
writers = {n: bundle.copy_from(new_src / n) for n in bundle.FILES
           if n not in (bundle.CONFIG, bundle.CARD) and (new_src / n).is_file()}
dest = work / "model"

def snapshot(folder):
    if not folder.is_dir():
        return None
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}

def save_and_die_at(step_to_die):
    # SIGKILL just before the n-th call that changes the file system
    count = [0]
    def counted(fn):
        def wrapped(*args, **kwargs):
            count[0] += 1
            if count[0] == step_to_die:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return wrapped
    for owner, name in ((os, "replace"), (shutil, "copyfile"), (shutil, "rmtree"), (tempfile, "mkdtemp"),
                        (bundle, "_exchange"), (Path, "write_text"), (Path, "write_bytes")):
        setattr(owner, name, counted(getattr(owner, name)))
    bundle.write_bundle(dest, config, writers)

results = []
for step in range(1, 100):
    for p in work.iterdir():
        shutil.rmtree(p)
    shutil.copytree(old_src, dest)
    pid = os.fork()
    if pid == 0:
        try:
            save_and_die_at(step)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    try:
        bundle.read_config(dest)
        error = None
    except Exception as exc:
        error = str(exc)
    left = sorted(p for p in work.iterdir() if p.name.startswith(".model.old-"))
    results.append({"step": step, "killed": os.WIFSIGNALED(status), "dest": snapshot(dest), "error": error,
                    "old_left_beside": snapshot(left[-1]) if left else None})
    if not os.WIFSIGNALED(status):
        break
print(json.dumps(results))
"""


def _digests(folder: Path) -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("swap", ["renameat2", "two-renames"])
def test_a_save_killed_at_any_step_leaves_the_old_bundle_or_the_new_one(tiny_bundle, tmp_path, swap):
    """SIGKILL before each file-system step of a save, in turn, until one save gets through:
    with the atomic exchange (Linux) the folder always holds one whole bundle, old or new. The
    portable fallback (two renames) has one instant without a bundle at the path: the error then
    says where the old one is."""
    if swap == "renameat2":
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir(), b.mkdir()
        if not bundle._exchange(a, b):
            pytest.skip("no renameat2(RENAME_EXCHANGE) on this system")
    old = tiny_bundle
    config = bundle.read_config(old)
    writers = {n: bundle.copy_from(old / n) for n in bundle.FILES
               if n not in (bundle.CONFIG, bundle.CARD, bundle.METRICS) and (old / n).is_file()}
    metrics = bundle.read_metrics(old)
    metrics["valid"]["accuracy"] = 0.5  # the new bundle: other metrics, so another card too
    new = bundle.write_bundle(tmp_path / "new", config, writers | {bundle.METRICS: bundle.write_metrics(metrics)})
    assert _digests(new) != _digests(old)
    work = tmp_path / "work"
    work.mkdir()
    out = subprocess.run([sys.executable, "-c", SAVE_PROBE, str(new), str(old), str(work), swap],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(results) > 10 and [r["killed"] for r in results] == [True] * (len(results) - 1) + [False]
    assert results[-1]["dest"] == _digests(new)  # the save that got through wrote the new bundle
    states = []
    for r in results:
        if r["dest"] in (_digests(old), _digests(new)):
            assert r["error"] is None
            states.append("old" if r["dest"] == _digests(old) else "new")
        else:  # only the fallback, only between its two renames
            assert swap == "two-renames" and r["dest"] is None, r
            assert r["old_left_beside"] == _digests(old) and "a save was interrupted" in r["error"], r
            states.append("none")
    assert states == sorted(states, key=["old", "none", "new"].index)  # old ... old, new ... new
    assert states.count("none") == (1 if swap == "two-renames" else 0)


# ---------------------------------------------------------------------------------------------
# Secrets: the Hub token, through the real huggingface_hub client


class EchoingHub:
    """A loopback 'Hub' that rejects every request and echoes its Authorization header in the
    error body, as a misconfigured proxy might: whatever the client puts in a message or a
    log from that body would carry the token."""

    def __init__(self):
        self.authorizations: list[str | None] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self):
                hub.authorizations.append(self.headers.get("Authorization"))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                status = 401 if self.command in ("GET", "HEAD") else 400
                body = json.dumps({"error": f"rejected request with {self.headers.get('Authorization')}"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Error-Message", f"echo {self.headers.get('Authorization')}")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_HEAD = _reply

            def log_message(self, *args):
                pass

        from helpers.hub_server import _bind

        self.server = _bind(Handler)  # a free port, within $SPORTS_CLASSIFIER_TEST_PORTS when set
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _files_containing(folder: Path, secret: str) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_the_token_never_reaches_logs_or_error_messages(tiny_bundle, tmp_path, monkeypatch, caplog):
    import huggingface_hub
    from huggingface_hub import constants

    with EchoingHub() as hub:
        for key, value in (("HF_ENDPOINT", hub.url), ("HF_HOME", str(tmp_path / "hf"))):
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        caplog.set_level(logging.DEBUG)
        verbosity = huggingface_hub.utils.logging.get_verbosity()
        huggingface_hub.utils.logging.set_verbosity_debug()
        try:
            with pytest.raises(HubError) as pushed:
                Classifier.from_pretrained(tiny_bundle).push_to_hub("alice/tiny", token=TOKEN)
            monkeypatch.setenv("HF_TOKEN", TOKEN)
            with pytest.raises(HubError) as pulled:
                Classifier.from_hub("alice/tiny")
        finally:
            huggingface_hub.utils.logging.set_verbosity(verbosity)
    assert f"Bearer {TOKEN}" in hub.authorizations  # the token was sent, and echoed back
    for exc in (pushed.value, pulled.value):
        text = "".join(traceback.format_exception(exc))
        assert TOKEN not in text and "alice/tiny" in str(exc)
    # Logs: nothing at INFO or above from anyone, and nothing at any level from this package or
    # huggingface_hub. (httpcore's DEBUG trace dumps raw response headers, which this server
    # fills with the token; a transport dump the user turns on is out of the package's hands.)
    leaks = [f"{r.name}:{r.levelname}" for r in caplog.records if TOKEN in r.getMessage()
             and (r.levelno >= logging.INFO or r.name.split(".")[0] in ("sports_classifier", "huggingface_hub"))]
    assert leaks == [] and any(r.name.startswith("huggingface_hub") for r in caplog.records)
    assert _files_containing(tmp_path, TOKEN) == [] and _files_containing(tiny_bundle, TOKEN) == []


@pytest.mark.parametrize("debug", [False, True])
def test_the_cli_never_prints_the_token(tiny_bundle, tmp_path, debug):
    with EchoingHub() as hub:
        env = dict(os.environ, HF_TOKEN=TOKEN, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"),
                   TMPDIR=str(tmp_path), HF_HUB_VERBOSITY="debug")
        env.pop("HF_HUB_OFFLINE", None)
        flag = ["--debug"] if debug else []
        runs = [subprocess.run([sys.executable, "-m", "sports_classifier", *flag, *args], capture_output=True,
                               text=True, timeout=120, env=env)
                for args in (("push", "--model", str(tiny_bundle), "--repo", "alice/tiny"),
                             ("predict", "--model", "alice/tiny", str(EXAMPLES / "golf" / "1.jpg")))]
    assert f"Bearer {TOKEN}" in hub.authorizations
    # The push stops at its first request (reading the repo's README.md, answered 401), whose
    # error names the rejected token without quoting the server; test_hub.py checks that quoted
    # server messages are scrubbed.
    for run, echoed in zip(runs, (False, False)):
        assert run.returncode == 1 and TOKEN not in run.stdout + run.stderr, run.stderr[-2000:]
        if debug:  # the traceback is shown, its message scrubbed
            assert "sports_classifier.errors.Hub" in run.stderr
        else:  # one line, even where the server's message had several
            last = run.stderr.strip().splitlines()[-1]
            assert last.startswith("error: ") and "alice/tiny" in last
            assert ("Bearer ***" in last) == echoed  # the upload error quotes the server, scrubbed
    assert _files_containing(tmp_path, TOKEN) == [] and _files_containing(tiny_bundle, TOKEN) == []
