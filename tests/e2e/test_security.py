"""Attacks on the running app, sent the way an attacker sends them: raw HTTP to ``python app.py``
on 127.0.0.1 (free ports, of $SPORTS_CLASSIFIER_TEST_PORTS when set), no gradio_client smoothing anything over.

Extend the tables: ``FILE_READ_CASES`` (a request naming a file the app must not read),
``LINKED_FILES`` (a bundle file replaced by a link to a file outside the bundle). Every hostile
file and link lives in the test's own tmp folders; nothing links to a system file.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

from helpers.bundles import copy_bundle
from helpers.app_server import free_port, http, start_app
from sports_classifier import bundle
from sports_classifier.app.uploads import NOT_AN_UPLOAD

SECRET_TEXT = "TOP-SECRET-7f3a9c"  # written into the private files; must never come back


# -- HTTP, as a script would send it ---------------------------------------------------------

def call(base: str, api: str, data: list) -> tuple[str, str]:
    """POST /gradio_api/call/<api>, then read its event stream: ("complete" | "error", data)."""
    status, body = http(f"{base}gradio_api/call/{api}", json.dumps({"data": data}).encode(),
                        {"Content-Type": "application/json"})
    assert status == 200, (status, body[:300])
    event_id = json.loads(body)["event_id"]
    status, body = http(f"{base}gradio_api/call/{api}/{event_id}", timeout=120)
    event, payload = None, ""
    for line in body.decode("utf-8", "replace").splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and event in ("complete", "error"):
            payload = line.split(":", 1)[1].strip()
    return event, payload


def label_value(out: dict) -> dict:
    """A /predict label slot: a gr.Label update ({"value": ...}) or, as the app now returns
    plain values, the value itself."""
    return out.get("value", out) if isinstance(out, dict) else {}


def upload(base: str, name: str, content: bytes) -> str:
    """POST /gradio_api/upload (what the page does first): the server-side path of the copy."""
    boundary = "b0undary7f3a"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    status, out = http(f"{base}gradio_api/upload", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200, out[:300]
    return json.loads(out)[0]


# -- the files an attacker is after, and the app ----------------------------------------------

def png_bytes(seed: int = 0) -> bytes:
    import io

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def world(tiny_bundle, tmp_path_factory):
    """Private files outside every allowed folder, a bundle whose extras are links to them,
    and the app serving the tiny bundle and that bundle, with its upload folder in tmp."""
    root = tmp_path_factory.mktemp("security")
    private = root / "private"
    private.mkdir()
    (private / "secret.png").write_bytes(png_bytes(1))  # an image: main's /explain drew its heat map
    (private / "notes.md").write_text(f"# {SECRET_TEXT}\n")
    (private / "folder").mkdir()
    linked = root / "bundles" / "linked"
    copy_bundle(tiny_bundle, linked)
    for name, target in LINKED_FILES:
        (linked / name).unlink()
        (linked / name).symlink_to(private / target)
    uploads = root / "gradio-uploads"
    uploads.mkdir()
    (uploads / "link-to-secret.png").symlink_to(private / "secret.png")  # a link planted in the cache
    stale = uploads / "0ld" / "left-by-an-earlier-run.jpg"  # two days old: removed at start-up
    stale.parent.mkdir()
    stale.write_bytes(b"x" * 1000)
    os.utime(stale, (time.time() - 2 * 86400,) * 2)
    server = start_app(f"{tiny_bundle},{linked}", root / "app.log", port=free_port(),
                       env={"GRADIO_TEMP_DIR": str(uploads)})
    yield {"url": server.url, "private": private, "uploads": uploads, "linked": linked, "tiny": tiny_bundle,
           "stale": stale}
    server.stop()


# (case id, the image value sent, given the world). Each must end in an error that names
# nothing about the file: NOT_AN_UPLOAD from the app, or (REFUSED_BY_GRADIO) Gradio's own
# payload validation, which happens before the app sees the request and reads no file.
REFUSED_BY_GRADIO = {"private image, plain string"}
FILE_READ_CASES = [
    ("private image, bare path dict", lambda w: {"path": str(w["private"] / "secret.png")}),
    ("private image, plain string", lambda w: str(w["private"] / "secret.png")),
    ("private text file", lambda w: {"path": str(w["private"] / "notes.md")}),
    ("directory (oracle)", lambda w: {"path": str(w["private"] / "folder")}),
    ("missing file (oracle)", lambda w: {"path": str(w["private"] / "no-such-file.png")}),
    ("bundle weights", lambda w: {"path": str(w["tiny"] / bundle.WEIGHTS)}),
    ("traversal out of the upload folder", lambda w: {"path": f"{w['uploads']}/../private/secret.png"}),
    ("link planted in the upload folder", lambda w: {"path": str(w["uploads"] / "link-to-secret.png")}),
    ("the upload folder itself", lambda w: {"path": str(w["uploads"])}),
    ("relative path", lambda w: {"path": "app.py"}),
    ("NUL byte", lambda w: {"path": str(w["uploads"]) + "/x\x00.png"}),
]


@pytest.mark.parametrize("api", ["predict", "explain"])
@pytest.mark.parametrize("case,value", FILE_READ_CASES, ids=[c[0] for c in FILE_READ_CASES])
def test_a_request_cannot_make_the_app_read_a_file_it_was_not_sent(world, api, case, value):
    second = ["tiny"] if api == "predict" else "tiny"
    event, payload = call(world["url"], api, [value(world), second])
    assert event == "error", (case, payload[:300])
    # the same answer for every path: no oracle
    expected = None if case in REFUSED_BY_GRADIO else NOT_AN_UPLOAD
    assert json.loads(payload)["error"] == expected, payload[:300]
    assert SECRET_TEXT not in payload


@pytest.mark.parametrize("api", ["predict", "explain"])
def test_a_real_upload_is_still_predicted_and_explained(world, api):
    path = upload(world["url"], "photo.png", png_bytes(2))
    second = ["tiny"] if api == "predict" else "tiny"
    for value in ({"path": path, "meta": {"_type": "gradio.FileData"}}, {"path": path}):
        event, payload = call(world["url"], api, [value, second])
        assert event == "complete", payload[:300]
        out = json.loads(payload)
        if api == "predict":
            assert label_value(out[0])["label"] in ("cats", "dogs", "owls")
        else:
            assert out[0] is not None and "Class activation map" in out[1]


def test_uploads_left_by_earlier_runs_are_removed_at_start_up(world):
    deadline = time.time() + 30  # the app prunes right after it starts serving
    while world["stale"].exists() and time.time() < deadline:
        time.sleep(0.2)
    assert not world["stale"].exists() and not world["stale"].parent.exists()
    assert (world["uploads"] / "link-to-secret.png").is_symlink()  # a fresh file: kept


# (bundle file name, the private file it is linked to)
LINKED_FILES = [
    (bundle.CURVES, "secret.png"),
    (bundle.CONFUSION, "secret.png"),
    (bundle.CARD, "notes.md"),
]


@pytest.mark.parametrize("name,target", LINKED_FILES, ids=[n for n, _ in LINKED_FILES])
def test_a_link_in_a_bundle_does_not_publish_its_target(world, name, target):
    secret = (world["private"] / target).read_bytes()
    for path in (world["linked"] / name, world["private"] / target):
        status, body = http(world["url"] + "gradio_api/file=" + quote(str(path), safe="/"))
        assert status in (403, 404), (path, status)
        assert secret not in body
    status, body = http(world["url"] + "config")
    assert status == 200 and SECRET_TEXT.encode() not in body and str(world["private"]).encode() not in body
    # the model itself still serves: only its linked extras are left out
    event, payload = call(world["url"], "predict",
                          [{"path": upload(world["url"], "p.png", png_bytes(3))}, ["linked"]])
    assert event == "complete" and label_value(json.loads(payload)[1])["label"], payload[:300]  # slot 1: linked


def bad_bundles(tiny: Path, root: Path) -> dict[str, Path]:
    """Bundles that load (or not) but whose extra files are ill-typed: each must cost only its
    own row, line or card, never the app."""
    def clone(name):
        dest = root / name
        copy_bundle(tiny, dest)
        return dest

    out = {}
    b = out["stracc"] = clone("stracc")
    m = json.loads((b / bundle.METRICS).read_text())
    m["valid"]["accuracy"] = "high"
    (b / bundle.METRICS).write_text(json.dumps(m))
    b = out["latin1card"] = clone("latin1card")
    (b / bundle.CARD).write_bytes(b"# caf\xe9 \xff\xfe\n")
    b = out["listmetrics"] = clone("listmetrics")
    (b / bundle.METRICS).write_text("[1, 2]")
    b = out["notobjects"] = clone("notobjects")
    m = json.loads((b / bundle.METRICS).read_text())
    m["valid"]["per_class"] = {k: 1 for k in m["valid"]["per_class"]}
    (b / bundle.METRICS).write_text(json.dumps(m))
    b = out["trainingstr"] = clone("trainingstr")
    c = json.loads((b / bundle.CONFIG).read_text())
    c["training"] = "yes"
    (b / bundle.CONFIG).write_text(json.dumps(c))
    return out


def test_ill_typed_bundles_do_not_stop_the_app_or_the_compare_tab(tiny_bundle, tmp_path):
    bad = bad_bundles(tiny_bundle, tmp_path / "bundles")
    server = start_app(",".join([str(tiny_bundle), *map(str, bad.values())]), tmp_path / "app.log",
                       port=free_port(), env={"GRADIO_TEMP_DIR": str(tmp_path / "uploads")})
    try:
        event, payload = call(server.url, "compare", [])
        assert event == "complete", payload[:500]
        outputs = json.loads(payload)
        table = outputs[1]  # after the accuracy-against-speed chart
        rows = {r[0]: dict(zip(table["headers"], r)) for r in table["data"]}
        assert rows["tiny"]["status"] == "ready" and rows["tiny"]["accuracy"] is not None
        assert rows["stracc"]["status"] == "ready" and math.isnan(rows["stracc"]["accuracy"])  # shown empty
        assert rows["notobjects"]["status"] == "ready" and rows["latin1card"]["status"] == "ready"
        assert "cannot be read" in rows["listmetrics"]["status"]
        assert rows["trainingstr"]["status"].startswith("failed to load") and "training" in rows["trainingstr"]["status"]
        event, payload = call(server.url, "compare_details", [])
        assert event == "complete", payload[:500]
        details = json.loads(payload)
        disagreement = details[len(rows)]  # after one curves picture per model
        assert "tiny" in disagreement["headers"] and "notobjects" not in disagreement["headers"]
        event, payload = call(server.url, "predict", [{"path": upload(server.url, "p.png", png_bytes(4))},
                                                      ["tiny", "latin1card"]])
        assert event == "complete", payload[:300]
    finally:
        server.stop()
