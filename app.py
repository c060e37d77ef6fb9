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
import functools
import hashlib
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from sports_classifier.app import about, batch, compare, data_view, examples, mistakes, served_files, uploads
from sports_classifier.app import predict as predict_tab
from sports_classifier.app.registry import ModelRegistry
from sports_classifier.errors import UserInputError
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
GRIDS = Path(tempfile.gettempdir()) / "sports-classifier-grids"
BATCHES = Path(tempfile.gettempdir()) / "sports-classifier-batches"
# Where a request may point the decoder: Gradio's upload folder (uploads, and examples once
# clicked, which Gradio copies there) and the example photos (app.uploads).
UPLOAD_FOLDER = get_upload_folder()
UPLOAD_ROOTS = (UPLOAD_FOLDER, str(EXAMPLES))
# Gradio sends files only from these folders (and allowed_paths): others are copied into the temp folder.
SERVED_HOMES = (Path.cwd(), ROOT, Path(tempfile.gettempdir()))
ADMISSION = served_files.Admission(UPLOAD_FOLDER)
CHARTS = Path(tempfile.gettempdir()) / "sports-classifier-compare"  # drawn once per server, reused
CSS = """
.result-note {min-height: 2.5em; font-size: 0.9em}
"""


def _handler(fn):
    """Show a UserInputError as a message in the page instead of a generic failure."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserInputError as exc:
            raise gr.Error(str(exc)) from None

    return wrapped


def _photo_path(image):
    """The uploaded photo's file path. The predict and explain events skip Gradio's own image
    decoding (``preprocess=False``), so every upload goes through the package's one decode
    path: its decompression-bomb guard and readable errors, and 16-bit / RGBA / CMYK photos
    converted exactly as in training. Gradio then does not check the path either: only files
    inside the upload folder are accepted (``uploads.uploaded_file``)."""
    return uploads.uploaded_file(image, UPLOAD_ROOTS)


def _admit(request: gr.Request | None) -> None:
    """The request's client passes the rate limit (and the upload cache is kept in budget)."""
    ADMISSION.admit(getattr(getattr(request, "client", None), "host", None))


def _servable(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return served_files.servable(items, SERVED_HOMES)


def allowed_paths(registry: ModelRegistry) -> list[str]:
    """Only the example images and the local bundles' pictures (for the model cards)."""
    return ([str(EXAMPLES)] if EXAMPLES.is_dir() else []) + about.picture_files(registry)


def prepare_compare(registry: ModelRegistry) -> None:
    """Draw the Compare tab's charts once, after the models load, so that opening Compare only
    reads caches (run in a background thread). The example images are predicted only when
    Compare is first opened: at start-up that work would slow the first users' predictions."""
    specs = [compare.speed_spec(registry, CHARTS), data_view.distribution_spec(data_view.recorded_data(registry), CHARTS)]
    specs += [compare.curves_spec(registry, name, CHARTS) for name in registry.names]
    try:  # a nice'd child process: matplotlib never holds this interpreter or takes the CPUs
        subprocess.run([sys.executable, "-m", "sports_classifier.app.draw"], input=json.dumps([s for s in specs if s]),
                       text=True, cwd=ROOT, timeout=600, check=True, capture_output=True)
    except (OSError, subprocess.SubprocessError) as exc:  # then each chart is drawn when first shown
        print(f"drawing the Compare charts ahead failed: {exc}", file=sys.stderr)


# -- one builder per tab (FastChat's gradio_web_server_multi.py is the pattern): each lays out its
# tab inside the caller's gr.Blocks and wires its own events; what other tabs need is returned. --


class ResultSlots:
    """One gr.Label and one note per served model, shown for the models ticked on Predict."""

    def __init__(self, names: list[str], shown: list[str], prefix: str):
        self.names = names
        self.labels, self.notes = [], []
        with gr.Row(equal_height=False):
            for i, name in enumerate(names):
                with gr.Column(min_width=220):
                    self.labels.append(gr.Label(label=name, num_top_classes=predict_tab.TOP_K,
                                                visible=name in shown, elem_id=f"{prefix}-label-{i}"))
                    self.notes.append(gr.Markdown(elem_classes="result-note", visible=name in shown))

    @property
    def outputs(self) -> list:
        return self.labels + self.notes

    def values(self, results: list[predict_tab.ModelResult], selected: list[str]) -> list:
        by_name = {r.name: r for r in results}
        labels, notes = [], []
        for name in self.names:
            r, shown = by_name.get(name), name in selected
            labels.append(gr.Label(value=(r.confidences or None) if r else None, visible=shown))
            notes.append(gr.Markdown(value=r.note if r else "", visible=shown))
        return labels + notes

    def visibility(self, selected: list[str]) -> list:
        return ([gr.Label(visible=n in selected) for n in self.names]
                + [gr.Markdown(visible=n in selected) for n in self.names])


def build_predict_tab(registry: ModelRegistry, status: gr.Markdown) -> gr.CheckboxGroup:
    """Photo in, each ticked model's top-k and Explain's heat map out. Returns the model ticks
    (the Examples tab predicts with the same models)."""
    names = registry.names
    default_models = names if len(names) <= 3 else names[:1]
    with gr.Row():
        with gr.Column(scale=2, min_width=300):
            image = gr.Image(type="pil", sources=["upload", "clipboard", "webcam"], label="Photo",
                             height=340, elem_id="photo")
            chosen = gr.CheckboxGroup(names, value=default_models, label="Models")
            with gr.Row():
                predict_btn = gr.Button("Predict", variant="primary", elem_id="predict-button")
                explain_btn = gr.Button("Explain", elem_id="explain-button")
            explain_model = gr.Dropdown(names, value=names[0] if names else None, label="Model to explain")
            if EXAMPLES.is_dir():
                picks = [e.path for e in examples.list_examples(EXAMPLES)][::40][:5]
                gr.Examples(picks, inputs=image, label="Try one", cache_examples=False)
        with gr.Column(scale=3):
            slots = ResultSlots(names, default_models, "predict")
            heatmap = gr.Image(label="Class activation map", interactive=False, height=340, elem_id="heatmap")
            heat_caption = gr.Markdown()

    @_handler
    def on_predict(image, selected, request: gr.Request):
        _admit(request)
        image = _photo_path(image)
        results = predict_tab.predict(registry, image, selected) if image is not None else []
        return slots.values(results, selected or []) + [predict_tab.status_markdown(registry)]

    @_handler
    def on_explain(image, model, request: gr.Request):
        _admit(request)
        return predict_tab.explain(registry, _photo_path(image), model)

    gr.on([predict_btn.click, image.change], on_predict, [image, chosen], slots.outputs + [status],
          api_name="predict", trigger_mode="always_last", preprocess=False)
    # a new photo makes the previous heatmap stale
    image.change(lambda: (None, ""), None, [heatmap, heat_caption], api_visibility="private",
                 show_progress="hidden", queue=False)
    chosen.change(slots.visibility, chosen, slots.outputs, api_visibility="private")
    explain_btn.click(on_explain, [image, explain_model], [heatmap, heat_caption], api_name="explain",
                      concurrency_limit=1, concurrency_id="explain", preprocess=False)
    return chosen


def build_examples_tab(registry: ModelRegistry, chosen: gr.CheckboxGroup) -> None:
    """The example photos by sport (click one to predict it), and a grid of predictions."""
    names = registry.names
    with gr.Row():
        with gr.Column(scale=3):
            sport = gr.Dropdown([examples.ALL_SPORTS] + examples.example_sports(EXAMPLES), value=examples.ALL_SPORTS,
                                label="Sport", info="All sports: one photo each; pick a sport to see all its photos")
            gallery = gr.Gallery(examples.gallery_items(examples.list_examples(EXAMPLES), one_per_class=True),
                                 label="Examples (click one to predict it)", columns=6, height=480,
                                 allow_preview=False, elem_id="examples-gallery")
        with gr.Column(scale=2):
            chosen_example = gr.Image(label="Selected", type="filepath", interactive=False, height=220)
            true_label = gr.Markdown()
            slots = ResultSlots(names, chosen.value or [], "examples")
    gr.Markdown("### Predictions on example images\nEach photo is titled with its true and "
                "predicted sport; wrong predictions are in red. Uses the sport filter above.")
    with gr.Row():
        grid_model = gr.Dropdown(names, value=names[0] if names else None, label="Model", scale=2)
        grid_btn = gr.Button(f"Predict {GRID_SIZE} examples (click again for others)", scale=1)
    grid_seed = gr.State(0)
    grid_summary = gr.Markdown()
    grid = gr.Image(label="Predictions on example images", show_label=False, type="filepath",
                    interactive=False, elem_id="examples-grid", buttons=["fullscreen", "download"])

    def on_filter(sport):
        found = examples.list_examples(EXAMPLES, sport)
        return gr.Gallery(value=examples.gallery_items(found, one_per_class=sport in (None, examples.ALL_SPORTS)),
                          selected_index=None)

    @_handler
    def on_example(sport, selected, evt: gr.SelectData):
        found = examples.list_examples(EXAMPLES, sport)
        if sport in (None, examples.ALL_SPORTS):
            found = [examples.Example(p, c) for p, c in examples.gallery_items(found, one_per_class=True)]
        example = found[evt.index]
        selected = selected or names[:1]  # the models ticked on the Predict tab
        results = predict_tab.predict(registry, example.path, selected)
        return [example.path, f"True sport: **{example.label}**"] + slots.values(results, selected)

    @_handler
    def on_grid(model, sport, seed):
        served_files.prune(GRIDS)
        grid = examples.example_grid(registry, model, examples.list_examples(EXAMPLES, sport), n=GRID_SIZE,
                                     seed=seed, out_dir=GRIDS)
        return grid["image"], grid["summary"], seed + 1

    sport.change(on_filter, sport, gallery, api_visibility="private")
    gallery.select(on_example, [sport, chosen], [chosen_example, true_label] + slots.outputs,
                   api_visibility="private")
    grid_btn.click(on_grid, [grid_model, sport, grid_seed], [grid, grid_summary, grid_seed], api_name="grid")


def _compare_overview() -> list:
    """Compare's first screen: the speed/accuracy chart and the metrics table."""
    refresh_btn = gr.Button("Refresh", size="sm")
    with gr.Row(equal_height=False):
        speed = gr.Image(label="Validation accuracy vs speed on this server", type="filepath",
                         show_label=False, interactive=False, height=380, scale=3, elem_id="compare-speed",
                         buttons=["fullscreen", "download"])
        gr.Markdown(compare.CHART_NOTE, elem_id="compare-chart-note")
    metrics = gr.Dataframe(label="Measured metrics (validation split)", interactive=False,
                           elem_id="compare-table", max_height=260)
    gr.Markdown(compare.SPEED_NOTE)
    with gr.Accordion("Architectures (full text)", open=False):
        arch_md = gr.Markdown()
    return [refresh_btn, speed, metrics, arch_md]


def _mistakes_section(names: list[str]) -> tuple[list, list]:
    """Where each model goes wrong: confused pairs and the mistakes browser. Returns the
    inputs (model, sport) and the outputs of ``on_mistakes``."""
    gr.Markdown("### Where each model goes wrong")
    with gr.Row():
        model = gr.Dropdown(names, value=names[0] if names else None, label="Model", scale=2)
        sport = gr.Dropdown([examples.ALL_SPORTS], value=examples.ALL_SPORTS, scale=2,
                            label="True sport (mistakes browser filter)")
    note = gr.Markdown(elem_id="compare-mistakes-note")
    timer = gr.Timer(2.0, active=False)  # while the example images are being predicted
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            gr.Markdown("**Most-confused pairs** on the validation split: true → predicted, "
                        "how many (click an image for its caption)")
            pairs_gallery = gr.Gallery(label="Most-confused pairs", show_label=False, columns=3,
                                       height=330, allow_preview=True, elem_id="compare-pairs")
            pairs_table = gr.Dataframe(label="Most-confused pairs (validation split)",
                                       interactive=False, max_height=220)
            confusion_files = gr.File(label="Full confusion matrix (PNG, CSV)", file_count="multiple",
                                      interactive=False, elem_id="compare-confusion-files")
        with gr.Column(scale=3):
            gr.Markdown("**Mistakes browser**: the example images this model gets wrong, "
                        "with the true class and its top-3 (table below)")
            mistakes_gallery = gr.Gallery(label="Mistakes browser", show_label=False, columns=4,
                                          height=400, allow_preview=True, elem_id="compare-mistakes")
            mistakes_table = gr.Dataframe(label="The same mistakes, in order: true class and top-3",
                                          interactive=False, max_height=300, wrap=True,
                                          elem_id="compare-mistakes-table")
    outputs = [pairs_gallery, pairs_table, mistakes_gallery, mistakes_table, note, sport, confusion_files, timer]
    return [model, sport], outputs


def _details_section(names: list[str]) -> list:
    """Training curves, where the models disagree, and the data they learned from."""
    gr.Markdown("### Training curves")
    curves = []
    for i, name in enumerate(names):
        gr.Markdown(f"**{name}**: accuracy and loss per epoch, each training stage shaded")
        curves.append(gr.Image(label=f"{name}: accuracy and loss per epoch", type="filepath", show_label=False,
                               interactive=False, buttons=["fullscreen", "download"], elem_id=f"compare-curves-{i}"))
    disagree = gr.Dataframe(label="Per-class accuracy (recall) where the models disagree most "
                            "(with one model: its weakest classes)", interactive=False)
    gr.Markdown("### The data the models learned from")
    data_md = gr.Markdown(elem_id="compare-data")
    with gr.Row(equal_height=False):
        distribution = gr.Image(label="Class distribution (from the bundles' training record)",
                                type="filepath", interactive=False, scale=3,
                                buttons=["fullscreen", "download"], elem_id="compare-distribution")
        samples = gr.Gallery(label="Sample photos (the app's examples, from the validation split)",
                             columns=4, height=420, scale=2, allow_preview=True, elem_id="compare-samples")
    return [*curves, disagree, data_md, distribution, samples]


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
        picture = Path(entry.classifier.path) / "confusion_matrix.png"
        if picture.is_file():
            downloads.append(_servable([(str(picture), model)])[0][0])
        if cm:
            safe = hashlib.sha256(f"{entry.classifier.path}".encode()).hexdigest()[:12]
            downloads.append(str(mistakes.write_confusion_csv(cm, labels, CHARTS / safe / "confusion_matrix.csv")))
    sports_with = mistakes.mistake_sports(results)
    sport = sport if sport in sports_with else examples.ALL_SPORTS
    return [_servable(mistakes.pair_examples(pairs, results, EXAMPLES)), mistakes.pairs_table(pairs),
            _servable(mistakes.mistakes_gallery(results, sport)), mistakes.mistakes_table(results, sport),
            mistakes.mistakes_summary(results, model),
            gr.Dropdown(choices=[examples.ALL_SPORTS] + sports_with, value=sport), downloads or None,
            gr.Timer(active=results is None)]


def build_compare_tab(registry: ModelRegistry, cache: mistakes.MistakesCache, status: gr.Markdown,
                      tab: gr.Tab) -> None:
    """The models side by side. Opening the tab fills it in three steps, so that the chart and
    the table show first (each step reads caches)."""
    refresh_btn, *overview = _compare_overview()
    mistake_inputs, mistake_outputs = _mistakes_section(registry.names)
    details = _details_section(registry.names)

    def on_compare():
        return [compare.speed_chart(registry, CHARTS), compare.compare_table(registry)[compare.COMPARE_COLUMNS],
                compare.architectures_markdown(registry), predict_tab.status_markdown(registry)]

    def on_compare_details():
        records = data_view.recorded_data(registry)
        curves = [compare.curves_picture(registry, name, CHARTS) for name in registry.names]
        return [*served_files.servable_paths(curves, SERVED_HOMES), compare.disagreement_table(registry),
                data_view.data_markdown(records), data_view.distribution_chart(records, CHARTS),
                data_view.sample_items(EXAMPLES)]

    def on_mistakes(model, sport):
        return _mistakes_values(registry, cache, model, sport)

    for trigger, api in ((tab.select, None), (refresh_btn.click, "compare")):
        private = {"api_visibility": "private"}
        (trigger(on_compare, None, overview + [status], **({"api_name": api} if api else private))
         .then(on_compare_details, None, details, **({"api_name": api + "_details"} if api else private))
         .then(on_mistakes, mistake_inputs, mistake_outputs, **({"api_name": "mistakes"} if api else private)))
    timer = mistake_outputs[-1]
    gr.on([mistake_inputs[0].input, mistake_inputs[1].input, timer.tick], on_mistakes, mistake_inputs,
          mistake_outputs, api_visibility="private")


def build_batch_tab(registry: ModelRegistry) -> None:
    """Many photos in, one table (and a CSV) out."""
    names = registry.names
    files = gr.File(file_count="multiple", file_types=["image"], label="Images", elem_id="batch-files")
    models = gr.CheckboxGroup(names, value=names[:1], label="Models")
    batch_btn = gr.Button("Predict all", variant="primary")
    table = gr.Dataframe(label="Predictions", interactive=False, wrap=True)
    download = gr.DownloadButton("Download CSV", visible=False)

    @_handler
    def on_batch(files, selected, request: gr.Request):
        _admit(request)
        files = uploads.uploaded_files(files, UPLOAD_ROOTS)
        served_files.prune(BATCHES)
        BATCHES.mkdir(parents=True, exist_ok=True)
        frame, csv_path = batch.batch_predict(registry, files, selected,
                                              out_dir=tempfile.mkdtemp(prefix="batch-", dir=BATCHES))
        return frame, gr.DownloadButton(value=csv_path, visible=True)

    batch_btn.click(on_batch, [files, models], [table, download], api_name="batch",
                    concurrency_limit=1, concurrency_id="batch")


def build_about_tab(registry: ModelRegistry) -> None:
    """What the app is, and each local model's card."""
    gr.Markdown(about.about_markdown(registry))
    for source in registry.sources:
        if not source.hub:
            with gr.Accordion(f"Model card: {source.name}", open=False):
                gr.Markdown(about.model_card_markdown(source.location))


def build_demo(registry: ModelRegistry, cache: mistakes.MistakesCache | None = None) -> gr.Blocks:
    """The page: a header with the models' status, then one tab per builder."""
    cache = cache or mistakes.MistakesCache(registry, EXAMPLES)
    # Uploads and returned files pile up in Gradio's cache: every hour, drop those over an hour old.
    with gr.Blocks(title=TITLE, analytics_enabled=False, fill_width=True, delete_cache=CACHE_CLEANUP) as demo:
        gr.Markdown(f"# {TITLE}\nWhich of 100 sports does a photo show? Upload, paste or take a photo.")
        status = gr.Markdown(predict_tab.status_markdown(registry), elem_id="model-status")
        timer = gr.Timer(2.0, active=bool(registry.names))
        with gr.Tabs():
            with gr.Tab("Predict", id="predict"):
                chosen = build_predict_tab(registry, status)
            with gr.Tab("Examples", id="examples"):
                build_examples_tab(registry, chosen)
            with gr.Tab("Compare", id="compare") as compare_tab:
                build_compare_tab(registry, cache, status, compare_tab)
            with gr.Tab("Batch", id="batch"):
                build_batch_tab(registry)
            with gr.Tab("About", id="about"):
                build_about_tab(registry)

        def on_status():
            pending = any(registry.loaded(n) is None for n in registry.names)
            return predict_tab.status_markdown(registry), gr.Timer(active=pending)

        timer.tick(on_status, None, [status, timer], api_visibility="private", show_progress="hidden")
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
registry = make_registry(ARGS.models if ARGS else None)
demo = build_demo(registry)

if __name__ == "__main__":
    launch(demo, registry, ARGS)
