"""Sports classifier: the Gradio app (composition only; the handlers live in sports_classifier.app).

    python app.py                                  # the bundled models in models/, offline
    python app.py --models models/a,hf:user/repo@rev --host 0.0.0.0 --port 7860
    SPORTS_CLASSIFIER_MODELS=hf:user/repo python app.py    # e.g. in a Space's settings

No model is loaded at import: each loads on first use, and all of them in a background thread
right after the server starts. With ONNX bundles nothing here imports TensorFlow; only the
Explain button (Grad-CAM) loads Keras, the first time it is pressed.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import hashlib
import html
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

from sports_classifier.app.gradio_import import skip_stub_rewrite

skip_stub_rewrite()  # before the first `import gradio`: it then takes half the time (see that module)

import gradio as gr
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware

from sports_classifier import bundle, feedback
from sports_classifier.app import (about, batch, compare, data_view, examples, live, mistakes, served_files,
                                   sport_names, sports_list, uploads, verdict)
from sports_classifier.app.client_address import ClientAddress
from sports_classifier.app import predict as predict_tab
from sports_classifier.app.registry import ModelRegistry
from sports_classifier.errors import UnreadablePhotoError, UserInputError
from sports_classifier.hub import MODELS_ENV, served_models

ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT / "examples"
MAX_FILE_SIZE = "10mb"
# ONNX Runtime already spreads one prediction over every core, so running more than two at
# once only makes each slower; further requests wait in the queue (at most QUEUE_SIZE).
CONCURRENCY = 2
QUEUE_SIZE = 64
GRID_SIZE = 20
TITLE = "Sports classifier"
CACHE_CLEANUP = (3600, served_files.MAX_AGE)  # (how often, how old) in seconds: gr.Blocks(delete_cache=...)
# What the app writes (grids, batch tables, charts, copies of pictures) goes to a folder of its
# own, made private (0700, an unpredictable name) at start: under fixed names in the shared temp
# folder, a link planted there beforehand would have been written through.
PRIVATE = Path(tempfile.mkdtemp(prefix="sports-classifier-app-"))
atexit.register(shutil.rmtree, PRIVATE, ignore_errors=True)
GRIDS = PRIVATE / "grids"
BATCHES = PRIVATE / "batches"
# Where a request may point the decoder: Gradio's upload folder (uploads, and examples once
# clicked, which Gradio copies there) and the example photos (app.uploads).
UPLOAD_FOLDER = get_upload_folder()
UPLOAD_ROOTS = (UPLOAD_FOLDER, str(EXAMPLES))
# Gradio sends files only from these folders (and allowed_paths): others are copied into the temp folder.
SERVED_HOMES = (Path.cwd(), ROOT, Path(tempfile.gettempdir()))
ADMISSION = served_files.Admission(UPLOAD_FOLDER)
# Gradio's upload route runs before any handler: uploads are counted and budgeted in front of it.
UPLOAD_BUDGET = uploads.UploadBudget(UPLOAD_FOLDER)
CHARTS = PRIVATE / "compare"  # drawn once per server, reused
# Feedback ("Was this right?"): a local folder, pushed to a Hub dataset repo when one is configured.
FEEDBACK = feedback.FeedbackStore(repo_id=os.environ.get(feedback.FEEDBACK_REPO_ENV) or None)
NOT_RIGHT = "✗ No, it is…"  # the feedback list's first line: picking a sport records it
LIVE_SECONDS = 300  # one camera stream runs at most this long; start it again for more
# A camera frame every 0.2 s: at most 5 predictions a second per viewer, which leaves the CPU to
# other users (three models answer a frame in about 25 ms on the 2-core machine).
LIVE_EVERY = 0.2
LATENCY_ROUNDS_AFTER_LOAD = 2  # with the one at load: three rounds of latency for Compare
CSS = verdict.CSS + """
#page-title h2 {margin: 0}
#page-title p {margin: 2px 0 0}
.message {padding: 8px 12px; border-radius: 8px; color: var(--error-text-color);
          background: var(--error-background-fill); border: 1px solid var(--error-border-color)}
.captioned .caption-label {white-space: normal; max-width: 100%; opacity: 0.9}
/* empty message and verdict boxes take no room (and leave no gap) */
#predict-message:not(:has(.message)), #verdict:not(:has(.verdict)) {display: none}
#feedback-row {align-items: center}
.controls-row {align-items: flex-end}
.thumbnails .grid-container {grid-template-columns: repeat(auto-fill, minmax(110px, 120px)) !important}
#model-status {text-align: right; align-self: center}
@media (max-width: 640px) {#model-status {text-align: left}}
#verdict:not(:has(.verdict)) ~ #feedback-row, #verdict:not(:has(.verdict)) ~ #feedback-thanks {display: none}
"""


def _handler(fn):
    """Show a UserInputError as a message in the page instead of a generic failure."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserInputError as exc:  # expected: the message is enough, no traceback in the log
            raise gr.Error(str(exc), print_exception=False) from None

    return wrapped


def _photo_path(image):
    """The uploaded photo's file path. The predict and explain events skip Gradio's own image
    decoding (``preprocess=False``), so every upload goes through the package's one decode
    path: its decompression-bomb guard and readable errors, and 16-bit / RGBA / CMYK photos
    converted exactly as in training. Gradio then does not check the path either: only files
    inside the upload folder are accepted (``uploads.uploaded_file``)."""
    return uploads.uploaded_file(image, UPLOAD_ROOTS)


def _admit(request: gr.Request | None, cost: int = 1) -> None:
    """The request's client passes the rate limit (``cost`` units: uploads.COSTS), and the
    upload cache is kept in budget."""
    ADMISSION.admit(CLIENT(request), cost)  # behind a known proxy: the forwarded client address


def _servable(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return served_files.servable(items, SERVED_HOMES, PRIVATE / "pictures")


def allowed_paths(registry: ModelRegistry) -> list[str]:
    """Only the example images and the local bundles' pictures (for the model cards)."""
    return ([str(EXAMPLES)] if EXAMPLES.is_dir() else []) + about.picture_files(registry)


def prepare_compare(registry: ModelRegistry) -> None:
    """Draw the Compare tab's charts once, after the models load, so that opening Compare only
    reads caches (run in a background thread). The example images are predicted only when
    Compare is first opened: at start-up that work would slow the first users' predictions.
    Latency is measured twice more first, so that Compare shows a range, not one noisy run."""
    registry.measure_again(rounds=LATENCY_ROUNDS_AFTER_LOAD)
    specs = [compare.speed_spec(registry, CHARTS), data_view.distribution_spec(data_view.recorded_data(registry), CHARTS)]
    specs += [compare.curves_spec(registry, name, CHARTS) for name in registry.names]
    try:  # a nice'd child process: matplotlib never holds this interpreter or takes the CPUs
        subprocess.run([sys.executable, "-m", "sports_classifier.app.draw"], input=json.dumps([s for s in specs if s]),
                       text=True, cwd=ROOT, timeout=600, check=True, capture_output=True)
    except (OSError, subprocess.SubprocessError) as exc:  # then each chart is drawn when first shown
        print(f"drawing the Compare charts ahead failed: {exc}", file=sys.stderr)


# -- one builder per tab (FastChat's gradio_web_server_multi.py is the pattern): each lays out its
# tab inside the caller's gr.Blocks and wires its own events; what other tabs need is returned.
# The page's own events show a UserInputError as one message by the upload and leave the outputs
# empty; the public API endpoints keep raising it (clients see an exception). --


class ApiResults:
    """The /predict endpoint's outputs, kept as they were for API clients: one gr.Label (top-k)
    and one note per served model. Hidden: the page shows ``verdict`` HTML instead."""

    def __init__(self, names: list[str]):
        self.names = names
        self.labels = [gr.Label(label=n, num_top_classes=predict_tab.TOP_K, visible=False) for n in names]
        self.notes = [gr.Markdown(visible=False) for _ in names]

    @property
    def outputs(self) -> list:
        return self.labels + self.notes

    def values(self, results: list[predict_tab.ModelResult]) -> list:
        by_name = {r.name: r for r in results}  # updates, as before: clients read each one's "value"
        labels = [gr.Label(value=(by_name[n].confidences or None) if n in by_name else None) for n in self.names]
        return labels + [gr.Markdown(value=by_name[n].note if n in by_name else "") for n in self.names]


def _message_html(text: str) -> str:
    """One error message, shown by the upload (the page's events show errors this way; API
    clients get them as exceptions)."""
    return f'<div class="message" role="alert">{html.escape(text)}</div>' if text else ""


def build_predict_tab(registry: ModelRegistry, status: gr.Markdown) -> gr.CheckboxGroup:
    """Photo in; one verdict right under it (so that it is on screen on a phone), each model's
    panel and Explain's heat map beside it. Returns the model ticks (Examples and Live use them)."""
    names = registry.names
    default_models = names if len(names) <= 3 else names[:1]
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            image = gr.Image(type="pil", sources=["upload", "clipboard", "webcam"], label="Photo", height=270,
                             elem_id="photo")
            message = gr.HTML(elem_id="predict-message")
            verdict_box = gr.HTML(elem_id="verdict")
            feedback_ui = build_feedback_row(registry)
            if EXAMPLES.is_dir():
                picks = [e.path for e in examples.list_examples(EXAMPLES)][::40][:5]
                gr.Examples(picks, inputs=image, label="Try one", cache_examples=False)
        with gr.Column(scale=3, min_width=300):
            panels = gr.HTML(elem_id="predict-panels")
            with gr.Row(equal_height=False, elem_classes="controls-row"):
                chosen = gr.CheckboxGroup(names, value=default_models, label="Models", scale=4)
                predict_btn = gr.Button("Predict again", size="sm", elem_id="predict-button", scale=1, min_width=100)
            explain_ui = build_explain_row(registry, image, message)
    build_sports_list(registry)
    api = ApiResults(names)

    @_handler
    def on_predict_api(image, selected, request: gr.Request):
        _admit(request)
        image = _photo_path(image)
        results = predict_tab.predict(registry, image, selected) if image is not None else []
        return api.values(results) + [predict_tab.status_markdown(registry)]

    def on_predict(image, selected, explain_with, request: gr.Request):
        status_now = predict_tab.status_markdown(registry)
        try:
            _admit(request)
            path = _photo_path(image)
            results = predict_tab.predict(registry, path, selected) if path is not None else []
        except UserInputError as exc:
            cleared = gr.Image(value=None) if isinstance(exc, UnreadablePhotoError) else gr.skip()
            return [cleared, _message_html(str(exc)), "", "", explain_ui.choices([]), [], None, status_now]
        if path is None:  # the photo was removed (or cleared after an error: keep that message)
            return [gr.skip(), gr.skip(), "", "", explain_ui.choices([]), [], None, status_now]
        return [gr.skip(), "", verdict.verdict_html(results), verdict.panels_html(results),
                explain_ui.choices(results, explain_with), results, str(path), status_now]

    outputs = [image, message, verdict_box, panels, explain_ui.label, feedback_ui.results, feedback_ui.answered,
               status]
    gr.on([predict_btn.click, image.change, chosen.input], on_predict, [image, chosen, explain_ui.model], outputs,
          api_visibility="private", trigger_mode="always_last", preprocess=False, show_progress="minimal")
    # The API keeps its contract (gr.Label values per model; errors as exceptions), on a trigger
    # the page never fires.
    api_trigger = gr.Button(visible=False)
    api_trigger.click(on_predict_api, [image, chosen], api.outputs + [status], api_name="predict", preprocess=False)
    feedback_ui.wire(image, message)
    return chosen


def build_explain_row(registry: ModelRegistry, image: gr.Image, message: gr.HTML) -> SimpleNamespace:
    """Explain: which model, which class (its top one by default), and the heat map."""
    names = registry.names
    first = names[0] if names else None
    top = predict_tab.TOP_CLASS
    with gr.Row(equal_height=False, elem_classes="controls-row"):
        model = gr.Dropdown(names, value=first, label="Explain with", scale=2, min_width=140)
        label = gr.Dropdown([(top, top)], value=top, label="Class to explain", scale=2, min_width=140,
                            elem_id="explain-class")
        button = gr.Button("Explain", elem_id="explain-button", scale=1, min_width=90)
    heatmap = gr.Image(label="Class activation map", interactive=False, height=240, elem_id="heatmap")
    caption = gr.Markdown(elem_id="heat-caption")

    def choices(results, model_name=None):
        return gr.Dropdown(choices=predict_tab.class_choices(registry, model_name or first, results), value=top)

    def on_explain(image, model, label, request: gr.Request):
        try:
            _admit(request)
            return [*predict_tab.explain(registry, _photo_path(image), model, label), ""]
        except UserInputError as exc:
            return [None, "", _message_html(str(exc))]

    @_handler
    def on_explain_api(image, model, request: gr.Request):
        _admit(request)
        return predict_tab.explain(registry, _photo_path(image), model)

    # a new photo makes the previous heatmap stale
    image.change(lambda: (None, ""), None, [heatmap, caption], api_visibility="private",
                 show_progress="hidden", queue=False)
    model.input(lambda m: choices([], m), model, label, api_visibility="private", show_progress="hidden")
    button.click(on_explain, [image, model, label], [heatmap, caption, message], api_visibility="private",
                 concurrency_limit=1, concurrency_id="explain", preprocess=False, scroll_to_output=True)
    api_trigger = gr.Button(visible=False)  # the API's /explain, unchanged: errors as exceptions
    api_trigger.click(on_explain_api, [image, model], [heatmap, caption], api_name="explain",
                      concurrency_limit=1, concurrency_id="explain", preprocess=False)
    return SimpleNamespace(model=model, label=label, choices=choices)


def build_feedback_row(registry: ModelRegistry) -> SimpleNamespace:
    """"Was this right?": one click to confirm the verdict, or pick the right sport. Records
    the photo, the label and every model's answer (``feedback.FeedbackStore``)."""
    results = gr.State([])
    answered = gr.State(None)  # the photo those results are for: feedback must be about the photo on screen
    with gr.Row(equal_height=False, elem_id="feedback-row"):
        yes = gr.Button("✓ Right", size="sm", scale=1, min_width=90, elem_id="feedback-yes")
        correction = gr.Dropdown([(NOT_RIGHT, "")] + [(sport_names.display_name(s), s) for s in known_labels(registry)],
                                 value="", show_label=False, container=False, scale=2, min_width=160,
                                 elem_id="feedback-correction")
    thanks = gr.Markdown(elem_id="feedback-thanks")

    def on_feedback(image, results, photo_answered, label, request: gr.Request):
        if label == "":  # the "No, it shows…" line itself
            return gr.skip(), gr.skip()
        try:
            _admit(request)
            path = _photo_path(image)
            label = label or verdict.top_label(results)
            record = FEEDBACK.record(path, label, results, bundle_checksums(registry, results),
                                     known_labels=known_labels(registry), predictions_for=photo_answered)
        except UserInputError as exc:
            return _message_html(str(exc)), ""
        return "", f"Thanks: recorded as **{sport_names.display_name(record.label)}**."

    def on_yes(image, results, photo_answered, request: gr.Request):
        return on_feedback(image, results, photo_answered, None, request)

    def on_correction(image, results, photo_answered, label, request: gr.Request):
        return *on_feedback(image, results, photo_answered, label, request), ""  # the list back to its first line

    def wire(image: gr.Image, message: gr.HTML) -> None:
        yes.click(on_yes, [image, results, answered], [message, thanks], api_visibility="private", preprocess=False)
        # .select: once per pick by the user (.input also fires while the list is typed into)
        correction.select(on_correction, [image, results, answered, correction], [message, thanks, correction],
                          api_visibility="private", preprocess=False)
        image.change(lambda: ("", ""), None, [thanks, correction], api_visibility="private",
                     show_progress="hidden", queue=False)

    return SimpleNamespace(results=results, answered=answered, wire=wire)


def known_labels(registry: ModelRegistry) -> list[str]:
    """Every class of the served models (read from local bundles' configs, or from loaded
    models), else the example sports: what "No, it shows…" offers and feedback accepts."""
    labels = set()
    for source in registry.sources:
        entry = registry.loaded(source.name)
        try:
            if entry is not None and entry.ok:
                labels.update(entry.classifier.config.labels)
            elif not source.hub:
                labels.update(bundle.read_config(source.location).labels)
        except Exception:  # an unreadable bundle is reported elsewhere; its classes are not offered
            continue
    return sorted(labels or examples.example_sports(EXAMPLES), key=sport_names.display_name)


def bundle_checksums(registry: ModelRegistry, results) -> dict[str, dict]:
    """The checksums of the bundles that gave ``results`` (which exact model answered)."""
    loaded = {r.name: registry.loaded(r.name) for r in results}
    return feedback.bundle_checksums({n: e.classifier for n, e in loaded.items() if e is not None and e.ok})


def build_sports_list(registry: ModelRegistry) -> None:
    """What it knows: a searchable list of the sports, each with a photo and its accuracy."""
    total = len(sports_list.sports_items(registry, EXAMPLES))
    with gr.Accordion(f"What it knows: the {total} sports", open=False, elem_id="sports-list") as panel:
        search = gr.Textbox(placeholder="Search a sport, e.g. rowing", show_label=False, elem_id="sports-search")
        note = gr.Markdown()
        gallery = gr.Gallery(columns=6, height=420, allow_preview=False, show_label=False,
                             elem_id="sports-gallery", elem_classes="captioned")

    def on_search(query):
        items = sports_list.sports_items(registry, EXAMPLES, query or "")
        return items, sports_list.sports_note(registry, len(items), total)

    gr.on([panel.expand, search.change], on_search, search, [gallery, note], api_visibility="private",
          show_progress="hidden")


def build_live_tab(registry: ModelRegistry, chosen: gr.CheckboxGroup) -> None:
    """The camera, classified continuously while it runs, with the frame rate."""
    gr.Markdown("Start the camera: the answer updates while it runs (the models ticked on Predict).")
    with gr.Row(equal_height=False):
        with gr.Column(min_width=300):
            camera = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Camera", height=320,
                              elem_id="live-camera")
        with gr.Column(min_width=300):
            live_verdict = gr.HTML(elem_id="live-verdict")
            rate = gr.Markdown(elem_id="live-fps")
            live_panels = gr.HTML(elem_id="live-panels")
    meter = gr.State(None)

    def on_frame(frame, selected, meter):
        meter = meter or live.FrameRate()
        if frame is None:
            return gr.skip(), gr.skip(), gr.skip(), meter
        try:
            results = predict_tab.predict(registry, frame, selected or registry.names[:1])
        except UserInputError as exc:
            return _message_html(str(exc)), "", "", meter
        return verdict.verdict_html(results), verdict.panels_html(results), live.FrameRate.text(meter.tick()), meter

    # Frames are not files (no upload cache); the stream is bounded in time and concurrency.
    camera.stream(on_frame, [camera, chosen, meter], [live_verdict, live_panels, rate, meter], stream_every=LIVE_EVERY,
                  time_limit=LIVE_SECONDS, concurrency_limit=CONCURRENCY, concurrency_id="live",
                  api_visibility="private", show_progress="hidden")


def build_examples_tab(registry: ModelRegistry, chosen: gr.CheckboxGroup) -> None:
    """The example photos by sport (click one to predict it), and a grid of predictions."""
    names, all_sports = registry.names, examples.ALL_SPORTS
    sports = examples.example_sports(EXAMPLES)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=300):
            with gr.Row(equal_height=True):
                search = gr.Textbox(label="Find a sport", placeholder="type a name, then Enter", scale=1,
                                    min_width=150, elem_id="examples-search")
                sport = gr.Dropdown([(all_sports, all_sports)] + [(sport_names.display_name(s), s) for s in sports],
                                    value=all_sports, label="Sport", scale=1, min_width=150, elem_id="examples-sport")
            gallery = gr.Gallery(_example_items(all_sports), label="Examples (click one to predict it)", columns=5,
                                 height=460, allow_preview=False, elem_id="examples-gallery", elem_classes="captioned")
        with gr.Column(scale=2, min_width=300):
            chosen_example = gr.Image(label="Selected", type="filepath", interactive=False, height=220)
            true_label = gr.Markdown()
            example_verdict = gr.HTML(elem_id="examples-verdict")
            example_panels = gr.HTML(elem_id="examples-panels")
    gr.Markdown("### Predictions on example images\nEach photo is titled with its true and "
                "predicted sport; wrong predictions are in red. Uses the sport filter above.")
    with gr.Row():
        grid_model = gr.Dropdown(names, value=names[0] if names else None, label="Model", scale=2)
        grid_btn = gr.Button(_grid_button_text(all_sports), scale=1, elem_id="grid-button")
    grid_seed = gr.State(0)
    grid_summary = gr.Markdown()
    grid = gr.Image(label="Predictions on example images", show_label=False, type="filepath",
                    interactive=False, elem_id="examples-grid", buttons=["fullscreen", "download"])

    def on_search(query, current):
        found = sport_names.best_match(sports, query or "")
        return gr.skip() if found is None or found == current else found

    def on_filter(sport):
        return gr.Gallery(value=_example_items(sport), selected_index=None), _grid_button_text(sport)

    def on_example(sport, selected, evt: gr.SelectData):
        example = _examples_shown(sport)[evt.index]
        try:
            results = predict_tab.predict(registry, example.path, selected or names[:1])
        except UserInputError as exc:
            return [example.path, _message_html(str(exc)), "", ""]
        return [example.path, f"True sport: **{sport_names.display_name(example.label)}**",
                verdict.verdict_html(results), verdict.panels_html(results)]

    @_handler
    def on_grid(model, sport, seed, request: gr.Request):
        _admit(request, uploads.COSTS["grid"])
        served_files.prune(GRIDS)
        grid = examples.example_grid(registry, model, examples.list_examples(EXAMPLES, sport), n=GRID_SIZE,
                                     seed=seed, out_dir=GRIDS)
        return grid["image"], grid["summary"], seed + 1

    search.submit(on_search, [search, sport], sport, api_visibility="private", show_progress="hidden")
    sport.change(on_filter, sport, [gallery, grid_btn], api_visibility="private")
    gallery.select(on_example, [sport, chosen], [chosen_example, true_label, example_verdict, example_panels],
                   api_visibility="private", scroll_to_output=True)  # on a phone the answer is below the gallery
    grid_btn.click(on_grid, [grid_model, sport, grid_seed], [grid, grid_summary, grid_seed], api_name="grid")


def _examples_shown(sport: str | None) -> list[examples.Example]:
    """The examples the gallery shows for the filter: one per sport for all sports."""
    found = examples.list_examples(EXAMPLES, sport)
    if sport in (None, examples.ALL_SPORTS):
        found = [examples.Example(p, c) for p, c in examples.gallery_items(found, one_per_class=True)]
    return found


def _example_items(sport: str | None) -> list[tuple[str, str]]:
    return [(e.path, sport_names.display_name(e.label)) for e in _examples_shown(sport)]


def _grid_button_text(sport: str | None) -> str:
    n = min(GRID_SIZE, len(examples.list_examples(EXAMPLES, sport)))
    return f"Predict {n} examples (click again for others)"


def _compare_overview() -> list:
    """Compare's first screen: the speed/accuracy chart and the metrics table."""
    refresh_btn = gr.Button("Refresh", size="sm")
    with gr.Row(equal_height=False):
        speed = gr.Image(label="Validation accuracy vs speed on this server", type="filepath",
                         show_label=False, interactive=False, height=380, scale=3, min_width=360,
                         elem_id="compare-speed", buttons=["fullscreen", "download"])
        with gr.Column(scale=1, min_width=280):  # beside the chart, or below it on a phone
            gr.Markdown(compare.CHART_NOTE, elem_id="compare-chart-note")
    metrics = gr.Dataframe(label="Measured metrics (validation split)", interactive=False,
                           elem_id="compare-table", max_height=260)
    gr.Markdown(compare.SPEED_NOTE + "\n\n" + compare.server_note())
    with gr.Accordion("Architectures (full text)", open=False):
        arch_md = gr.Markdown()
    return [refresh_btn, speed, metrics, arch_md]


def _mistakes_section(names: list[str]) -> tuple[list, list]:
    """Where each model goes wrong: confused pairs and the mistakes browser. Returns the
    inputs (model, sport) and the outputs of ``on_mistakes``."""
    with gr.Row():
        model = gr.Dropdown(names, value=names[0] if names else None, label="Model", scale=2)
        # every sport from the start: an API call may name any (the page narrows the list)
        sport = gr.Dropdown([examples.ALL_SPORTS] + examples.example_sports(EXAMPLES), value=examples.ALL_SPORTS,
                            scale=2, label="True sport (mistakes browser filter)")
    note = gr.Markdown(elem_id="compare-mistakes-note")
    timer = gr.Timer(2.0, active=False)  # while the example images are being predicted
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            gr.Markdown("**Most-confused pairs** on the validation split: true → predicted, how many. With "
                        "5 validation photos per sport most pairs are a single photo (click one for its caption)")
            pairs_gallery = _captioned_gallery("Most-confused pairs", columns=3, height=330, elem_id="compare-pairs")
            pairs_table = gr.Dataframe(label="Most-confused pairs (validation split)",
                                       interactive=False, max_height=220)
            confusion_files = gr.File(label="Full confusion matrix (PNG, CSV)", file_count="multiple",
                                      interactive=False, elem_id="compare-confusion-files")
        with gr.Column(scale=3):
            gr.Markdown("**Mistakes browser**: the example images this model gets wrong, "
                        "with the true class and its top-3 (table below)")
            mistakes_gallery = _captioned_gallery("Mistakes browser", columns=4, height=400,
                                                  elem_id="compare-mistakes")
            mistakes_table = gr.Dataframe(label="The same mistakes, in order: true class and top-3",
                                          interactive=False, max_height=300, wrap=True,
                                          elem_id="compare-mistakes-table")
    outputs = [pairs_gallery, pairs_table, mistakes_gallery, mistakes_table, note, sport, confusion_files, timer]
    return [model, sport], outputs


def _captioned_gallery(label: str, *, columns: int, height: int, elem_id: str) -> gr.Gallery:
    """A gallery whose captions carry the answer: CSS ``.captioned`` wraps them instead of cutting them off."""
    return gr.Gallery(label=label, show_label=False, columns=columns, height=height, allow_preview=True,
                      elem_id=elem_id, elem_classes="captioned")


def _curves_section(names: list[str]) -> list:
    """Training curves per model, and where the models disagree."""
    curves = []
    for i, name in enumerate(names):
        gr.Markdown(f"**{name}**: accuracy and loss per epoch, each training stage shaded")
        curves.append(gr.Image(label=f"{name}: accuracy and loss per epoch", type="filepath", show_label=False,
                               interactive=False, buttons=["fullscreen", "download"], elem_id=f"compare-curves-{i}"))
    disagree = gr.Dataframe(label="Per-class accuracy (recall) where the models disagree most "
                            "(with one model: its weakest classes)", interactive=False)
    return [*curves, disagree]


def _data_section() -> list:
    """The data the models learned from."""
    data_md = gr.Markdown(elem_id="compare-data")
    with gr.Row(equal_height=False):
        distribution = gr.Image(label="Class distribution (from the bundles' training record)",
                                type="filepath", interactive=False, scale=3,
                                buttons=["fullscreen", "download"], elem_id="compare-distribution")
        samples = gr.Gallery(label="Sample photos (the app's examples, from the validation split)",
                             columns=4, height=420, scale=2, allow_preview=True, elem_id="compare-samples",
                             elem_classes="captioned")
    return [data_md, distribution, samples]


def _mistakes_values(registry: ModelRegistry, cache: mistakes.MistakesCache, model, sport) -> list:
    """``_mistakes_section``'s outputs for one model; the timer runs until its results are in."""
    if not model:
        return [[], None, [], None, "", gr.Dropdown(), None, gr.Timer(active=False)]
    results = cache.get(model)
    if results is None:
        cache.start(first=model)  # then the timer asks again until it is there
    cm, labels = mistakes.model_confusion(registry, model)
    pairs = mistakes.confused_pairs(cm, labels)
    downloads = []
    entry = registry.entry(model)
    if entry.ok:
        picture = bundle.member_or_none(entry.classifier.path, bundle.CONFUSION)  # never a link out of the bundle
        if picture is not None:
            downloads.append(_servable([(str(picture), model)])[0][0])
        if cm:
            safe = hashlib.sha256(f"{entry.classifier.path}".encode()).hexdigest()[:12]
            downloads.append(str(mistakes.write_confusion_csv(cm, labels, CHARTS / safe / "confusion_matrix.csv")))
    sports_with = mistakes.mistake_sports(results)
    sport = sport if sport in sports_with else examples.ALL_SPORTS
    return [_servable(mistakes.pair_examples(pairs, results, EXAMPLES)), mistakes.pairs_table(pairs),
            _servable(mistakes.mistakes_gallery(results, sport)), mistakes.mistakes_table(results, sport),
            mistakes.mistakes_summary(results, model, cache.progress(model)),
            gr.Dropdown(choices=[examples.ALL_SPORTS] + sports_with, value=sport), downloads or None,
            gr.Timer(active=results is None)]


def build_compare_tab(registry: ModelRegistry, cache: mistakes.MistakesCache, status: gr.Markdown,
                      tab: gr.Tab) -> None:
    """The models side by side, one sub-tab per question (the page stays short). Opening the tab
    fills it in three steps, so that the chart and the table show first (each step reads caches)."""
    with gr.Tabs(overflow_behavior="wrap"):
        with gr.Tab("Accuracy and speed"):
            refresh_btn, *overview = _compare_overview()
        with gr.Tab("Where each model goes wrong"):
            mistake_inputs, mistake_outputs = _mistakes_section(registry.names)
        with gr.Tab("Training curves"):
            curves = _curves_section(registry.names)
        with gr.Tab("The data"):
            data = _data_section()
    details = curves + data

    @_handler
    def on_compare(request: gr.Request):
        _admit(request, uploads.COSTS["compare"])
        table = compare.compare_table(registry)[compare.COMPARE_COLUMNS]
        return [compare.speed_chart(registry, CHARTS), compare.page_view(table, registry),
                compare.architectures_markdown(registry), predict_tab.status_markdown(registry)]

    @_handler
    def on_compare_details(request: gr.Request):
        _admit(request, uploads.COSTS["compare_details"])
        records = data_view.recorded_data(registry)
        curves = [compare.curves_picture(registry, name, CHARTS) for name in registry.names]
        return [*served_files.servable_paths(curves, SERVED_HOMES, PRIVATE / "pictures"), compare.disagreement_table(registry),
                data_view.data_markdown(records), data_view.distribution_chart(records, CHARTS),
                data_view.sample_items(EXAMPLES)]

    @_handler
    def on_mistakes(model, sport, request: gr.Request):
        _admit(request, uploads.COSTS["mistakes"])
        return _mistakes_values(registry, cache, model, sport)

    for trigger, api in ((tab.select, None), (refresh_btn.click, "compare")):
        private = {"api_visibility": "private"}
        (trigger(on_compare, None, overview + [status], **({"api_name": api} if api else private))
         .then(on_compare_details, None, details, **({"api_name": api + "_details"} if api else private))
         .then(on_mistakes, mistake_inputs, mistake_outputs, **({"api_name": "mistakes"} if api else private)))
    timer = mistake_outputs[-1]
    gr.on([mistake_inputs[0].input, mistake_inputs[1].input, timer.tick], on_mistakes, mistake_inputs,
          mistake_outputs, api_visibility="private")


def build_batch_tab(registry: ModelRegistry, default_models: list[str]) -> None:
    """Many photos in: numbered thumbnails, one table (and a CSV) out."""
    files = gr.File(file_count="multiple", file_types=["image"], label="Images", elem_id="batch-files")
    with gr.Row(equal_height=True):
        models = gr.CheckboxGroup(registry.names, value=default_models, label="Models", scale=3)
        batch_btn = gr.Button("Predict all", variant="primary", scale=1, min_width=120)
    photos = gr.Gallery(label="Photos (numbered as in the table)", columns=8, height=200, object_fit="cover",
                        allow_preview=True, elem_id="batch-photos", elem_classes=["captioned", "thumbnails"])
    table = gr.Dataframe(label="Predictions", interactive=False, wrap=False, elem_id="batch-table")
    download = gr.DownloadButton("Download CSV", visible=False)

    @_handler
    def on_batch(files, selected, request: gr.Request):
        _admit(request, max(1, len(files or [])))  # one unit per photo
        files = uploads.uploaded_files(files, UPLOAD_ROOTS)
        served_files.prune(BATCHES)
        BATCHES.mkdir(parents=True, exist_ok=True)
        frame, csv_path = batch.batch_predict(registry, files, selected,
                                              out_dir=tempfile.mkdtemp(prefix="batch-", dir=BATCHES))
        return batch.page_view(frame), gr.DownloadButton(value=csv_path, visible=True)

    def on_photos(files):  # the thumbnails, numbered, once the files are in (no prediction yet)
        return [(p, f"#{i}") for i, p in enumerate(uploads.uploaded_files(files, UPLOAD_ROOTS), 1)]

    files.change(on_photos, files, photos, api_visibility="private", show_progress="hidden")
    (batch_btn.click(on_batch, [files, models], [table, download], api_name="batch",
                     concurrency_limit=1, concurrency_id="batch")
     .success(lambda f, t: batch.photo_captions(uploads.uploaded_files(f, UPLOAD_ROOTS), _frame_of(t)),
              [files, table], photos, api_visibility="private", show_progress="hidden"))


def _frame_of(table):
    """A gr.Dataframe's value as pandas (the Batch thumbnails read their captions from it)."""
    import pandas as pd

    return table if isinstance(table, pd.DataFrame) else pd.DataFrame(table["data"], columns=table["headers"])


def build_about_tab(registry: ModelRegistry) -> gr.Tab:
    """What the app is, which engine serves each model, and each local model's card."""
    gr.Markdown(about.about_markdown(registry))
    gr.Markdown("### How the models are served")
    engines = gr.Markdown(about.engine_markdown(registry), elem_id="about-engines")
    for source in registry.sources:
        if not source.hub:
            with gr.Accordion(f"Model card: {source.name}", open=False):
                gr.Markdown(about.model_card_markdown(source.location))
    return engines


def build_demo(registry: ModelRegistry, cache: mistakes.MistakesCache | None = None) -> gr.Blocks:
    """The page: a header with the models' status in words, then one tab per builder."""
    cache = cache or mistakes.MistakesCache(registry, EXAMPLES)
    # Uploads and returned files pile up in Gradio's cache: every hour, drop those over an hour old.
    with gr.Blocks(title=TITLE, analytics_enabled=False, fill_width=True, delete_cache=CACHE_CLEANUP) as demo:
        with gr.Row(equal_height=False):  # on a phone the status goes below the title
            with gr.Column(scale=3, min_width=340):
                gr.Markdown(f"## {TITLE}\nWhich of 100 sports does a photo show? Upload, paste or take a photo.",
                            elem_id="page-title")
            with gr.Column(scale=2, min_width=300):
                status = gr.Markdown(predict_tab.status_markdown(registry), elem_id="model-status")
        timer = gr.Timer(2.0, active=bool(registry.names))
        # "wrap": on a phone every tab stays in sight (the default hides some behind a menu)
        with gr.Tabs(overflow_behavior="wrap"):
            with gr.Tab("Predict", id="predict"):
                chosen = build_predict_tab(registry, status)
            with gr.Tab("Live camera", id="live"):
                build_live_tab(registry, chosen)
            with gr.Tab("Examples", id="examples"):
                build_examples_tab(registry, chosen)
            with gr.Tab("Compare", id="compare") as compare_tab:
                build_compare_tab(registry, cache, status, compare_tab)
            with gr.Tab("Batch", id="batch"):
                build_batch_tab(registry, chosen.value or [])
            with gr.Tab("About", id="about") as about_tab:
                engines = build_about_tab(registry)

        def on_status():
            pending = any(registry.loaded(n) is None for n in registry.names)
            return predict_tab.status_markdown(registry), about.engine_markdown(registry), gr.Timer(active=pending)

        timer.tick(on_status, None, [status, engines, timer], api_visibility="private", show_progress="hidden")
        default_models = list(chosen.value or [])
        # each page opened leaves out of the default selection the models that failed (e.g. never
        # answered their warm-up): no request from it waits on them
        def leave_out_failed():  # unchanged: no update (a change of the ticks predicts again)
            answering = registry.answering(default_models)
            return gr.skip() if answering == default_models else gr.CheckboxGroup(value=answering)

        demo.load(leave_out_failed, None, chosen, api_visibility="private", show_progress="hidden")
        about_tab.select(lambda: about.engine_markdown(registry), None, engines, api_visibility="private")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    demo.mistakes_cache = cache
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the sports classifier app.")
    parser.add_argument("--models", help=f"comma-separated bundle folders and hf:user/repo[@rev] "
                        f"(default: ${MODELS_ENV}, else every bundle in models/, models/DEFAULT first)")
    parser.add_argument("--host", help="address to listen on (default $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--share", choices=("no", "yes"), default="no", help="a public gradio.live link")
    parser.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDRESS[/BITS]",
                        help="a reverse proxy in front of the app (repeatable): the rate limit then keys on "
                             "the client address it forwards (X-Forwarded-For), never otherwise; on a "
                             "Hugging Face Space (SYSTEM=spaces) the Space's proxy is trusted without it")
    return parser.parse_args(argv)


def make_registry(models: str | None = None) -> ModelRegistry:
    """--models (relative to the working folder), else $SPORTS_CLASSIFIER_MODELS, else models/."""
    if models:
        return ModelRegistry(served_models(models, root=Path.cwd()))
    return ModelRegistry(served_models(root=ROOT))


def launch(demo: gr.Blocks, registry: ModelRegistry, args: argparse.Namespace) -> None:
    demo.launch(
        server_name=args.host, server_port=args.port, share=args.share == "yes",
        max_file_size=MAX_FILE_SIZE, allowed_paths=allowed_paths(registry), ssr_mode=False,
        theme=gr.themes.Soft(), css=CSS, footer_links=["api"], prevent_thread_lock=True,
        app_kwargs={"middleware": [Middleware(uploads.UploadGuard, limiter=ADMISSION.limiter, budget=UPLOAD_BUDGET,
                                             client=CLIENT)]},
    )
    # uploads left by earlier runs (Gradio's own cleanup covers only this process's files)
    uploads.prune_cache(UPLOAD_FOLDER, max_age=CACHE_CLEANUP[1])
    loading = registry.warm_up()  # the page already serves; the first prediction then finds models ready
    # then the Compare tab's charts and example predictions, so that opening it reads caches
    threading.Thread(target=lambda: (loading.join(), prepare_compare(registry)),
                     name="prepare-compare", daemon=True).start()
    demo.block_thread()


# Spaces (and `gradio app.py`) look for `demo` here. Run as a script, the flags are read first
# so that the UI is built once, for the models asked for. No model loads here.
ARGS = parse_args() if __name__ == "__main__" else None
CLIENT = ClientAddress.from_environment(ARGS.trusted_proxy if ARGS else ())
registry = make_registry(ARGS.models if ARGS else None)
demo = build_demo(registry)

if __name__ == "__main__":
    launch(demo, registry, ARGS)
