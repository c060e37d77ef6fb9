"""The app in a real browser: Debian's headless Chromium driven by Playwright.

Opens the page, uploads a photo and waits for the label, asks for a class-activation heat map, then
clicks through every tab and saves a screenshot of each into tests/artifacts/ (or
$SPORTS_CLASSIFIER_SCREENSHOTS). Needs `apt-get install chromium` and `pip install playwright`
(Playwright's own browser download is not used); skips with the reason when either is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from helpers.app_server import ROOT, real_bundle, start_app
from sports_classifier import bundle

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")]
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
    """The real model alone when there is one (the screenshots then show what a user sees),
    else the tiny test bundle, so that the page is still exercised."""
    real = real_bundle()
    app = start_app(str(real or tiny_bundle), tmp_path_factory.mktemp("browser-log") / "app.log")
    app.tiny = tiny_bundle
    yield app, real
    app.stop()


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module (Playwright's sync API cannot be started twice at once)."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(server, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    # Playwright starts chromium with a fresh temporary --user-data-dir on every launch.
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server[0].url)
    page.wait_for_selector("#photo")
    yield page
    context.close()


def non_sport_photo(tmp_path: Path) -> Path:
    """scikit-image's coffee cup photo (public domain) when installed, else a flat grey image."""
    import importlib.util

    from PIL import Image

    spec = importlib.util.find_spec("skimage")
    if spec and spec.submodule_search_locations:
        coffee = Path(list(spec.submodule_search_locations)[0]) / "data" / "coffee.png"
        if coffee.is_file():
            return coffee
    grey = tmp_path / "grey.png"
    Image.new("RGB", (224, 224), (128, 128, 128)).save(grey)
    return grey


def served_bundles(server) -> dict[str, Path]:
    app, real = server
    return {real.name: real} if real else {"tiny": app.tiny}


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_upload_predict_and_explain(page, server, shots):
    app, real = server
    sport = "basketball"
    page.locator("#photo input[type=file]").set_input_files(str(EXAMPLES / sport / "1.jpg"))
    verdict = page.locator("#verdict .verdict-title")  # the one headline under the photo
    expected = sport if real else None
    if expected:
        sync_api.expect(verdict).to_have_text(expected, timeout=TIMEOUT_MS)
    else:  # the tiny bundle knows other classes; any answer shows the verdict worked
        sync_api.expect(verdict).not_to_be_empty(timeout=TIMEOUT_MS)
    sync_api.expect(page.locator("#predict-panels .panel-note").first).to_contain_text("answered in")
    page.screenshot(path=str(shots / "1-predict.png"), full_page=True)

    page.locator("#explain-button").click()
    sync_api.expect(page.locator("#heatmap img")).to_be_visible(timeout=120_000)
    sync_api.expect(page.get_by_text("Class activation map of")).to_be_visible()
    page.screenshot(path=str(shots / "2-explain.png"), full_page=True)


def test_a_photo_without_sport_gets_the_not_a_sport_headline(page, server, shots, tmp_path):
    app, real = server
    if real is None:
        pytest.skip("needs a real model with an out-of-distribution threshold in its config.json")
    photo = non_sport_photo(tmp_path)
    page.locator("#photo").get_by_role("button", name="Remove Image").click()
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    sync_api.expect(page.locator("#verdict .verdict-title")).to_have_text("Probably not a sport")
    sync_api.expect(page.locator("#heatmap img")).to_have_count(0)  # the old photo's heatmap is gone
    page.screenshot(path=str(shots / "7-out-of-distribution.png"), full_page=True)


def test_examples_tab(page, server, shots):
    open_tab(page, "Examples")
    gallery = page.locator("#examples-gallery")
    thumbs = gallery.locator("button.thumbnail-item")
    sync_api.expect(thumbs.first).to_be_visible()
    assert thumbs.count() == 100  # one per sport
    thumbs.nth(8).click()  # basketball (sorted: the 9th sport)
    sync_api.expect(page.get_by_text("True sport:")).to_be_visible()
    if server[1]:  # a real model names the sport
        sync_api.expect(page.locator("#examples-verdict .verdict-title")).to_have_text("basketball")
    else:
        sync_api.expect(page.locator("#examples-verdict .verdict-title")).not_to_be_empty()
    page.get_by_role("button", name="Predict 20 examples").click()
    sync_api.expect(page.get_by_text("of 20 correct")).to_be_visible()
    sync_api.expect(page.locator("#examples-grid img")).to_be_visible()
    page.screenshot(path=str(shots / "3-examples.png"), full_page=True)


def test_compare_tab(page, server, shots):
    open_tab(page, "Compare")
    for name, path in served_bundles(server).items():
        accuracy = bundle.read_metrics(path)["valid"]["accuracy"]
        row = page.locator("#compare-table").get_by_role("row", name=re.compile(rf"^{re.escape(name)} "))
        sync_api.expect(row).to_contain_text(f" {accuracy:.1%} ")  # shown as a percentage
        sync_api.expect(row).to_contain_text("onnxruntime")
    page.get_by_role("tab", name="Training curves").click()  # Compare's sub-tabs
    sync_api.expect(page.locator("#compare-curves-0 img")).to_be_visible()
    page.screenshot(path=str(shots / "4-compare.png"), full_page=True)


def test_batch_tab(page, shots):
    open_tab(page, "Batch")
    files = [str(EXAMPLES / s / "1.jpg") for s in ("golf", "rowing", "judo")]
    page.locator("#batch-files input[type=file]").set_input_files(files)
    # the upload runs on after set_input_files returns: click once the files are in (numbered)
    sync_api.expect(page.locator("#batch-photos").get_by_text("#3")).to_be_visible()
    page.get_by_role("button", name="Predict all").click()
    sync_api.expect(page.get_by_role("button", name="Download CSV")).to_be_visible()
    page.screenshot(path=str(shots / "5-batch.png"), full_page=True)


def test_about_tab(page, shots):
    open_tab(page, "About")
    sync_api.expect(page.get_by_text("Train your own")).to_be_visible()
    page.get_by_text("Model card: ").first.click()
    # the card's pictures come straight from the bundle folder (allowed_paths)
    curves = page.get_by_role("img", name="Training curves").first  # the card's alt text
    sync_api.expect(curves).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=curves.element_handle())
    page.screenshot(path=str(shots / "6-about.png"), full_page=True)


# -- Compare at 1280 px, with one and with three models -------------------------------------------------

NARROW = {"width": 1280, "height": 900}
LEADING = ["model", "accuracy", "top-5 accuracy", "macro F1", "ms / image", "size MB"]


def bundled_models() -> list[Path]:
    from sports_classifier.hub import bundled_models as found

    return [Path(s.location) for s in found(ROOT / "models")]


@pytest.fixture(scope="module", params=[1, 3], ids=["one-model", "three-models"])
def compare_page(request, browser, tmp_path_factory):
    models = bundled_models()[:request.param]
    if len(models) < request.param:
        pytest.skip(f"needs {request.param} bundled models in models/")
    app = start_app(",".join(map(str, models)), tmp_path_factory.mktemp("compare-log") / "app.log")
    context = browser.new_context(viewport=NARROW)
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(app.url)
        page.wait_for_selector("#photo")
        # the models load after the page serves; Compare opens once they have answered
        sync_api.expect(page.locator("#model-status")).not_to_contain_text("loading", timeout=TIMEOUT_MS)
        sync_api.expect(page.locator("#model-status")).not_to_contain_text("not loaded", timeout=TIMEOUT_MS)
        yield page, [m.name for m in models]
    finally:
        context.close()
        app.stop()


def right_edge(locator) -> float:
    box = locator.bounding_box()
    assert box is not None, "not rendered"
    return box["x"] + box["width"]


def test_compare_reads_at_a_glance_at_1280_px(compare_page, shots):
    page, names = compare_page
    start = time.perf_counter()
    open_tab(page, "Compare")
    chart = page.locator("#compare-speed img")
    sync_api.expect(chart).to_be_visible()
    table = page.locator("#compare-table")
    for name in names:
        sync_api.expect(table.get_by_role("row", name=re.compile(rf"^{re.escape(name)} "))).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=chart.element_handle())
    seconds = time.perf_counter() - start
    print(f"\nCompare with {len(names)} model(s): chart and table shown {seconds:.2f} s after the click "
          "(browser round trip included; the charts may still have been drawing: "
          "scripts/measure_app.py --compare times Compare warm)")

    # nothing to scroll sideways: the chart and the leading columns sit inside 1280 px
    assert page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
    assert right_edge(chart) <= NARROW["width"]
    headers = table.locator("thead th")
    texts = [t.strip() for t in headers.all_inner_texts()]
    for column in LEADING:
        i = texts.index(column)
        assert right_edge(headers.nth(i)) <= NARROW["width"] - 16, f"{column} is off-screen"
    suffix = "1" if len(names) == 1 else "3"
    page.screenshot(path=str(shots / f"compare-{suffix}-models.jpg"), type="jpeg", quality=60)

    # the mistakes view: predicted in the background once Compare opens; it shows up by itself
    page.get_by_role("tab", name="Where each model goes wrong").click()  # Compare's sub-tabs
    note = page.locator("#compare-mistakes-note")
    sync_api.expect(note).to_contain_text("example images wrong", timeout=180_000)
    mistakes_gallery = page.locator("#compare-mistakes")
    mistakes_gallery.scroll_into_view_if_needed()
    sync_api.expect(mistakes_gallery.locator("img").first).to_be_visible()
    sync_api.expect(page.locator("#compare-mistakes-table")).to_contain_text("true class")
    sync_api.expect(page.locator("#compare-pairs img").first).to_be_visible()
    assert right_edge(mistakes_gallery) <= NARROW["width"]
    page.screenshot(path=str(shots / f"compare-{suffix}-models-mistakes.jpg"), type="jpeg", quality=60)

    # the filter: one true class, and only its mistakes remain
    table = page.locator("#compare-mistakes-table")

    def true_classes() -> list[str]:  # the accessible rows: the header, then one per mistake
        texts = table.get_by_role("row").all_inner_texts()[1:]
        return [re.split(r"[\t\n]", t.strip())[0] for t in texts if t.strip()]

    before = true_classes()
    chosen = before[-1]
    page.get_by_label("True sport (mistakes browser filter)").click()
    page.get_by_role("option", name=chosen, exact=True).click()
    sync_api.expect(mistakes_gallery.locator("img")).to_have_count(before.count(chosen))
    sync_api.expect(table.get_by_role("row")).to_have_count(1 + before.count(chosen))
    assert set(true_classes()) == {chosen}
    for shot in shots.glob(f"compare-{suffix}-models*.jpg"):
        assert shot.stat().st_size < 150_000, f"{shot.name} is over 150 KB"
