"""The app in a real browser: Debian's headless Chromium driven by Playwright.

Opens the page, uploads a photo and waits for the label, asks for a Grad-CAM heatmap, then
clicks through every tab and saves a screenshot of each into tests/artifacts/ (or
$SPORTS_CLASSIFIER_SCREENSHOTS). Needs `apt-get install chromium` and `pip install playwright`
(Playwright's own browser download is not used); skips with the reason when either is missing.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from app_server import ROOT, real_bundle, start_app
from sports_classifier import bundle

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EXAMPLES = ROOT / "examples"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--no-default-browser-check"]
TIMEOUT_MS = 60_000  # generous: the machine running the tests may be busy
sync_api.expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def shots() -> Path:
    folder = Path(os.environ.get("SPORTS_CLASSIFIER_SCREENSHOTS", ROOT / "tests" / "artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory):
    real = real_bundle()
    models = ",".join(([str(real)] if real else []) + [str(tiny_bundle)])
    app = start_app(models, tmp_path_factory.mktemp("browser-log") / "app.log")
    app.tiny = tiny_bundle
    yield app, real
    app.stop()


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        # A fresh profile per run: Playwright gives each context its own temporary one.
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server[0].url)
        page.wait_for_selector("#photo")
        yield page
        context.close()
        browser.close()


def served_bundles(server) -> dict[str, Path]:
    app, real = server
    return ({real.name: real} if real else {}) | {"tiny": app.tiny}


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_upload_predict_and_explain(page, server, shots):
    app, real = server
    sport = "basketball"
    page.locator("#photo input[type=file]").set_input_files(str(EXAMPLES / sport / "1.jpg"))
    label = page.locator("#predict-label-0")
    expected = sport if real else None
    if expected:
        sync_api.expect(label.locator("h2")).to_have_text(expected, timeout=TIMEOUT_MS)
    else:  # the tiny bundle knows other classes; any answer shows the label worked
        sync_api.expect(label.locator("h2")).not_to_be_empty(timeout=TIMEOUT_MS)
    sync_api.expect(page.locator(".result-note").first).to_contain_text("ms")
    page.screenshot(path=str(shots / "1-predict.png"), full_page=True)

    page.locator("#explain-button").click()
    sync_api.expect(page.locator("#heatmap img")).to_be_visible(timeout=120_000)
    sync_api.expect(page.get_by_text("Grad-CAM of")).to_be_visible()
    page.screenshot(path=str(shots / "2-explain.png"), full_page=True)


def test_examples_tab(page, shots):
    open_tab(page, "Examples")
    gallery = page.locator("#examples-gallery")
    thumbs = gallery.locator("button.thumbnail-item")
    sync_api.expect(thumbs.first).to_be_visible()
    assert thumbs.count() == 100  # one per sport
    thumbs.nth(8).click()  # basketball (sorted: the 9th sport)
    sync_api.expect(page.get_by_text("True sport:")).to_be_visible()
    sync_api.expect(page.locator("#examples-label-0 h2")).not_to_be_empty()
    page.get_by_role("button", name="Predict 20 examples").click()
    sync_api.expect(page.get_by_text("of 20 correct")).to_be_visible()
    sync_api.expect(page.locator("#examples-grid img")).to_be_visible()
    page.screenshot(path=str(shots / "3-examples.png"), full_page=True)


def test_compare_tab(page, server, shots):
    open_tab(page, "Compare")
    for name, path in served_bundles(server).items():
        accuracy = round(bundle.read_metrics(path)["valid"]["accuracy"], 4)
        row = page.locator("#compare-table").get_by_role("row", name=re.compile(rf"^{re.escape(name)} "))
        sync_api.expect(row).to_contain_text(f" {accuracy} ")
        sync_api.expect(row).to_contain_text("onnxruntime")
    page.screenshot(path=str(shots / "4-compare.png"), full_page=True)


def test_batch_tab(page, shots):
    open_tab(page, "Batch")
    files = [str(EXAMPLES / s / "1.jpg") for s in ("golf", "rowing", "judo")]
    page.locator("#batch-files input[type=file]").set_input_files(files)
    page.get_by_role("button", name="Predict all").click()
    sync_api.expect(page.get_by_role("button", name="Download CSV")).to_be_visible()
    page.screenshot(path=str(shots / "5-batch.png"), full_page=True)


def test_about_tab(page, shots):
    open_tab(page, "About")
    sync_api.expect(page.get_by_text("Train your own")).to_be_visible()
    page.screenshot(path=str(shots / "6-about.png"), full_page=True)
