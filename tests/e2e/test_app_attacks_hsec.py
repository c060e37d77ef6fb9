"""Issue 23 against the running app: raw HTTP to ``python app.py`` on 127.0.0.1 (ports
$SPORTS_CLASSIFIER_TEST_PORTS when set), as a script would send it.

Items 1 (linked bundle files served), 3 (a model that never answers), 8 (one bad bundle breaks
Compare), 9 (heavy endpoints and uploads not rate-limited), 10 (uploads over their budget),
11 (predictable temp files written through), and from "Low": a non-bundle folder's files in
the public status line, tracebacks logged for refused requests, Compare's mistakes filter
through the API. Bundles are ONNX-only (tests/helpers/onnx_bundle.py); every private file and
link lives in the test's tmp folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from helpers.app_server import free_port, http, start_app
from helpers.onnx_bundle import make_onnx_bundle
from sports_classifier import bundle

SECRET = "TOP-SECRET-hsec-41c7"
LABELS = ("archery", "bowling", "curling")  # sports the app's examples have


def port() -> int:
    return free_port()  # of $SPORTS_CLASSIFIER_TEST_PORTS when set


def call(base: str, api: str, data: list, timeout: float = 120) -> tuple[str, object]:
    """POST /gradio_api/call/<api>, then read its event stream: ("complete" | "error", data)."""
    status, body = http(f"{base}gradio_api/call/{api}", json.dumps({"data": data}).encode(),
                        {"Content-Type": "application/json"})
    assert status == 200, (status, body[:300])
    event_id = json.loads(body)["event_id"]
    status, body = http(f"{base}gradio_api/call/{api}/{event_id}", timeout=timeout)
    event, payload = None, None
    for line in body.decode("utf-8", "replace").splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and event in ("complete", "error"):
            payload = json.loads(line.split(":", 1)[1].strip() or "null")
    return event, payload


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, dict]:
    boundary = "hsecb0undary"
    body = b""
    for name, content in files:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def upload(base: str, files: list[tuple[str, bytes]]):
    body, headers = multipart(files)
    return http(f"{base}gradio_api/upload", body, headers)


def upload_announced(base: str, size: int) -> tuple[int, bytes]:
    """An upload's headers, announcing ``size`` bytes, and the answer the server gives before
    the body is sent (a server that refuses it then closes the connection)."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest("POST", "/gradio_api/upload")
        conn.putheader("Content-Type", "multipart/form-data; boundary=hsecb0undary")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def png(value: int = 120, text: str | None = None, size: int = 64) -> bytes:
    info = PngImagePlugin.PngInfo()
    if text:
        info.add_text("comment", text)
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def file_urls(payload) -> list[str]:
    """Every file URL in an answer (Gradio FileData dicts, at any depth)."""
    found = []
    if isinstance(payload, dict):
        if isinstance(payload.get("url"), str):
            found.append(payload["url"])
        for value in payload.values():
            found += file_urls(value)
    elif isinstance(payload, list):
        for value in payload:
            found += file_urls(value)
    return found


def with_metrics(folder: Path) -> Path:
    bundle.update_metrics(folder, "valid", {"n": 30, "accuracy": 0.5, "engine": "onnxruntime",
                                            "confusion_matrix": [[5, 3, 2], [1, 8, 1], [4, 0, 6]],
                                            "per_class": {l: {"recall": 0.5, "f1": 0.5} for l in LABELS}})
    return folder


# -- one app, hostile bundles ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("hsec-app")
    private = root / "private"
    private.mkdir()
    (private / "secret.png").write_bytes(png(7, SECRET))
    (private / "history.csv").write_text("stage,epoch,accuracy,loss\nhead,1,0.42,1.0\nhead,2,0.43,0.9\n")
    (private / "victim.txt").write_text("untouched")
    bundles = root / "bundles"
    good = with_metrics(make_onnx_bundle(bundles / "good", labels=LABELS))
    linked = with_metrics(make_onnx_bundle(bundles / "linked", labels=LABELS))
    (linked / bundle.CONFUSION).symlink_to(private / "secret.png")
    (linked / bundle.CURVES).symlink_to(private / "secret.png")  # and no history: the fallback picture
    linked_history = make_onnx_bundle(bundles / "linkedhistory", labels=LABELS)
    (linked_history / bundle.HISTORY).symlink_to(private / "history.csv")
    bad_data = with_metrics(make_onnx_bundle(bundles / "baddata", labels=LABELS, training={"data": "oops"}))
    bad_history = make_onnx_bundle(bundles / "badhistory", labels=LABELS)
    (bad_history / bundle.HISTORY).write_bytes(b"stage,epoch,accuracy\nhead,1,\xff\xfe\n")
    not_a_bundle = root / "notabundle"
    not_a_bundle.mkdir()
    (not_a_bundle / "secret-plans.txt").write_text(SECRET)
    # a link planted where the app used to write Compare's CSV: $TMPDIR/sports-classifier-compare/<hash>/
    tmp = root / "tmp"
    planted = tmp / "sports-classifier-compare" / hashlib.sha256(str(good).encode()).hexdigest()[:12]
    planted.mkdir(parents=True)
    (planted / "confusion_matrix.csv").symlink_to(private / "victim.txt")
    models = [good, linked, linked_history, bad_data, bad_history, not_a_bundle]
    server = start_app(",".join(map(str, models)), root / "app.log", port=port(), timeout=120,
                       env={"GRADIO_TEMP_DIR": str(root / "gradio"), "TMPDIR": str(tmp),
                            "SPORTS_CLASSIFIER_RATE_LIMIT": "0"})
    deadline = time.time() + 60
    while time.time() < deadline and "ready" not in json.dumps(call(server.url, "compare", [])[1]):
        time.sleep(1)
    yield {"url": server.url, "root": root, "private": private, "log": root / "app.log", "tmp": tmp,
           "names": [m.name for m in models]}
    server.stop()


def fetched(world, url: str) -> bytes:
    status, body = http(url)
    return body if status == 200 else b""


def test_linked_bundle_files_are_never_served(world):
    """Item 1: /compare_details (curves fallback) and /mistakes (confusion matrix) of a bundle
    whose pictures are links to a private file, and a linked history.csv: nothing of the
    private files comes back, and the linked history is not plotted."""
    event, details = call(world["url"], "compare_details", [])
    assert event == "complete", details
    event, mistakes = call(world["url"], "mistakes", ["linked", "All sports"])
    assert event == "complete", mistakes
    urls = file_urls(details) + file_urls(mistakes)
    assert urls  # the charts and pictures that may be served were
    for url in urls:
        assert SECRET.encode() not in fetched(world, url), url
    curves = dict(zip(world["names"], details))
    assert curves["linked"] is None and curves["linkedhistory"] is None


def test_one_bad_bundle_does_not_break_compare(world):
    """Item 8: a `training.data` that is not an object, a history.csv that is not UTF-8."""
    for api in ("compare", "compare_details"):
        event, payload = call(world["url"], api, [])
        assert event == "complete", (api, payload)
    event, payload = call(world["url"], "compare_details", [])
    curves = dict(zip(world["names"], payload))
    assert curves["badhistory"] is None and curves["good"] is None  # neither has a drawable history


def test_no_file_is_written_through_a_link_planted_in_the_temp_folder(world):
    """Item 11: the CSV of the confusion matrix used to go to a predictable path in $TMPDIR."""
    event, payload = call(world["url"], "mistakes", ["good", "All sports"])
    assert event == "complete", payload
    assert (world["private"] / "victim.txt").read_text() == "untouched"
    assert any(u.endswith("confusion_matrix.csv") for u in file_urls(payload))  # written, elsewhere


def test_the_public_status_names_no_server_path_nor_a_folders_files(world):
    event, payload = call(world["url"], "compare", [])
    text = json.dumps(payload)
    assert "notabundle" in text and "failed" in text  # reported, by name
    i = text.find("secret-plans")
    assert i < 0, text[max(0, i - 300):i + 100]
    assert str(world["root"] / "notabundle") not in text


def test_the_mistakes_filter_takes_any_sport_through_the_api(world):
    event, payload = call(world["url"], "mistakes", ["good", "archery"])
    assert event == "complete", payload


def test_a_refused_request_logs_no_traceback(world):
    before = world["log"].read_text().count("Traceback")
    event, payload = call(world["url"], "predict", [{"path": str(world["private"] / "secret.png")}, ["good"]])
    assert event == "error"  # refused by the app (not an upload), as every bad request is
    time.sleep(1)
    assert world["log"].read_text().count("Traceback") == before


# -- item 3: a model that never answers ---------------------------------------------------------------

def test_a_model_that_never_answers_does_not_take_the_app_down(tmp_path):
    hang = make_onnx_bundle(tmp_path / "hang", labels=LABELS, hang=True, int8_name=True)
    good = make_onnx_bundle(tmp_path / "good", labels=LABELS)
    server = start_app(f"{hang},{good}", tmp_path / "app.log", port=port(), timeout=120,
                       env={"GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "SPORTS_CLASSIFIER_RATE_LIMIT": "0",
                            "SPORTS_CLASSIFIER_MODEL_TIMEOUT": "5"})
    try:
        status, body = upload(server.url, [("photo.png", png())])
        assert status == 200, body
        photo = {"path": json.loads(body)[0], "meta": {"_type": "gradio.FileData"}}
        answers = {}

        def predict(i):  # the default selection: both models (two models are all ticked)
            answers[i] = (time.perf_counter(), call(server.url, "predict", [photo, ["hang", "good"]], timeout=60))

        start = time.perf_counter()
        threads = [threading.Thread(target=predict, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert len(answers) == 2, "a request is still waiting on the model that never answers"
        for done, (event, payload) in answers.values():
            assert event == "complete" and done - start < 45, payload
            text = json.dumps(payload)
            assert "did not answer within 5 s" in text and "confidences" in text  # hang stopped, good answered
        for api in ("compare", "compare_details"):
            t0 = time.perf_counter()
            event, payload = call(server.url, api, [], timeout=60)
            assert event == "complete" and time.perf_counter() - t0 < 20, payload
        t0 = time.perf_counter()
        event, payload = call(server.url, "predict", [photo, ["hang", "good"]], timeout=60)
        assert event == "complete" and time.perf_counter() - t0 < 5  # out of service now: not waited for
    finally:
        server.stop()


def test_a_model_that_never_answered_is_left_out_of_the_default_selection(tmp_path, monkeypatch):
    from sports_classifier.app.registry import ModelRegistry
    from sports_classifier.hub import served_models

    monkeypatch.setenv("SPORTS_CLASSIFIER_MODEL_TIMEOUT", "2")
    hang = make_onnx_bundle(tmp_path / "hang", labels=LABELS, hang=True)
    good = make_onnx_bundle(tmp_path / "good", labels=LABELS)
    registry = ModelRegistry(served_models(f"{hang},{good}"), measure_latency=False)
    assert registry.answering(["hang", "good"]) == ["hang", "good"]  # not known yet: kept
    start = time.perf_counter()
    registry.warm_up(background=False)
    assert time.perf_counter() - start < 20
    assert "did not answer within 2 s" in registry.status()["hang"]
    assert registry.answering(["hang", "good"]) == ["good"]


# -- items 9 and 10: rate limits and the upload budget --------------------------------------------

def test_heavy_endpoints_and_uploads_count_against_the_limit_even_from_loopback(tmp_path):
    good = with_metrics(make_onnx_bundle(tmp_path / "good", labels=LABELS))
    server = start_app(str(good), tmp_path / "app.log", port=port(), timeout=120,
                       env={"GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "SPORTS_CLASSIFIER_RATE_LIMIT": "30"})
    try:
        assert call(server.url, "grid", ["good", "All sports", 0])[0] == "complete"  # 20 units
        event, payload = call(server.url, "grid", ["good", "All sports", 1])  # 40: over
        assert event == "error"
        assert call(server.url, "compare", [])[0] == "complete"  # 25
        assert call(server.url, "compare_details", [])[0] == "complete"  # 30
        assert call(server.url, "mistakes", ["good", "All sports"])[0] == "error"  # 31
        status, body = upload(server.url, [("photo.png", png())])
        assert status == 429 and b"too many requests" in body
    finally:
        server.stop()


def test_uploads_are_held_to_their_budget_when_they_arrive(tmp_path):
    good = make_onnx_bundle(tmp_path / "good", labels=LABELS)
    folder = tmp_path / "gradio"
    server = start_app(str(good), tmp_path / "app.log", port=port(), timeout=120,
                       env={"GRADIO_TEMP_DIR": str(folder), "SPORTS_CLASSIFIER_RATE_LIMIT": "0",
                            "SPORTS_CLASSIFIER_UPLOAD_BUDGET_MB": "30"})

    def used() -> int:
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    def files() -> set[Path]:
        return {p for p in folder.rglob("*") if p.is_file()}

    try:
        nine_mb = os.urandom(9 * 2**20)
        # Gradio's copies of the example photos (2-3 MB) may still come and go while the app
        # settles (its own cache cleaning): what counts is that the refused request adds nothing.
        before = files()
        status, body = upload_announced(server.url, 20 * len(nine_mb))  # twenty 9 MB files in one request
        added = files() - before
        assert status == 413 and not any(p.stat().st_size >= 2**20 for p in added if p.exists()), (body[:200], added)
        answers = [upload(server.url, [(f"one-{i}.png", nine_mb)])[0] for i in range(5)]
        assert answers[:3] == [200, 200, 200] and set(answers[3:]) == {507}, answers
        assert used() <= 30 * 2**20
    finally:
        server.stop()


# -- the limiter itself -------------------------------------------------------------------------

def test_ipv6_clients_are_counted_per_64_and_idle_clients_are_forgotten_without_a_scan():
    from sports_classifier.app.uploads import RateLimiter, UserInputError, client_key

    now = [0.0]
    limiter = RateLimiter(3, 10.0, clock=lambda: now[0])
    for i in range(3):
        limiter.check(f"2001:db8:1:2::{i + 1}")  # three addresses of one /64
    with pytest.raises(UserInputError):
        limiter.check("2001:db8:1:2:ffff::9")
    limiter.check("2001:db8:1:3::1")  # the next /64 is another client
    assert client_key("::ffff:10.0.0.7") == "10.0.0.7" and client_key("2001:db8::1") == "2001:db8::/64"
    for i in range(1000):
        limiter.check(f"10.1.{i // 256}.{i % 256}")
    now[0] = 11.0  # every client idle
    limiter.check("10.9.9.9")
    assert list(limiter._calls) == ["10.9.9.9"]
